-- Long-term memory and the knowledge base (issue 10): who may call what, the tables' shape, row
-- level security and indexes, and bad input refused with documented SQLSTATEs. No embedding
-- model is called here.
BEGIN;
SELECT plan(37);

-- ---------------------------------------------------------------- grants
SELECT ok(pg_catalog.has_function_privilege('pgagent_user', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_viewer', f, 'EXECUTE'),
          f || ' is for users and above')
  FROM unnest(ARRAY['pgagent.remember(text,text,text,real,bigint,text)',
                    'pgagent.recall(text,text,integer,double precision,bigint,text)',
                    'pgagent.forget(bigint)']) AS f;
SELECT ok(pg_catalog.has_table_privilege('pgagent_viewer', 'pgagent.memory', 'SELECT'), 'viewers read memory (RLS)');
SELECT ok(NOT pg_catalog.has_table_privilege('pgagent_admin', 'pgagent.memory', p), 'no admin ' || p || ' on memory')
  FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p;

-- ---------------------------------------------------------------- shape
SELECT has_pk('pgagent', 'memory', 'memory has a primary key');
SELECT col_is_pk('pgagent', 'memory', ARRAY['tenant_id', 'memory_id'], 'keyed by tenant');
SELECT ok((SELECT relforcerowsecurity FROM pg_class WHERE oid = 'pgagent.memory'::regclass), 'row level security is forced');
SELECT is((SELECT count(*)::int FROM pg_indexes WHERE schemaname = 'pgagent' AND tablename = 'memory'
            AND indexdef LIKE '%USING hnsw%halfvec_cosine_ops) WITH (m=''16'', ef_construction=''64'')%'), 4, 'four partial HNSW indexes (384, 768, 1024, 1536) of halfvec, m = 16, ef_construction = 64');
SELECT ok((SELECT obj_description('pgagent.memory'::regclass, 'pg_class')) IS NOT NULL, 'memory is commented');

-- ---------------------------------------------------------------- the knowledge base
SELECT ok(pg_catalog.has_function_privilege('pgagent_admin', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_operator', f, 'EXECUTE'), f || ' is for admins only')
  FROM unnest(ARRAY['pgagent.create_collection(text,text,text,text,integer,integer)',
                    'pgagent.drop_collection(text)']) AS f;
SELECT ok(pg_catalog.has_function_privilege('pgagent_operator', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_user', f, 'EXECUTE'), f || ' is for operators and above')
  FROM unnest(ARRAY['pgagent.add_document(text,text,text,jsonb)', 'pgagent.delete_document(bigint)']) AS f;
SELECT ok(pg_catalog.has_function_privilege('pgagent_user', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_viewer', f, 'EXECUTE'), f || ' is for users and above')
  FROM unnest(ARRAY['pgagent.search(text,text,integer,text,jsonb)', 'pgagent.embed_pending(text,integer)']) AS f;
SELECT ok((SELECT relforcerowsecurity FROM pg_class WHERE oid = ('pgagent.' || t)::regclass), t || ': RLS forced')
  FROM unnest(ARRAY['collection', 'document', 'chunk']) AS t;
SELECT ok((SELECT 'security_invoker=true' = ANY (reloptions) FROM pg_class WHERE oid = 'pgagent.documents'::regclass),
          'the documents view is security_invoker');
SELECT is((SELECT count(*)::int FROM pg_indexes WHERE schemaname = 'pgagent' AND tablename = 'chunk'
            AND (indexdef LIKE '%USING hnsw%halfvec_cosine_ops) WITH (m=''16'', ef_construction=''64'')%' OR indexdef LIKE '%USING gin (tsv)%')), 5, 'chunk: 4 HNSW indexes and a GIN index');
SELECT throws_ok($$SELECT pgagent.add_document('no such collection', 't', 'b')$$, '42704', NULL, 'an unknown collection');
SELECT ok(pg_catalog.has_function_privilege('pgagent_operator', 'pgagent.kg_add(text,text,text,text,text,jsonb,bigint)', 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_user', 'pgagent.kg_add(text,text,text,text,text,jsonb,bigint)', 'EXECUTE'),
          'kg_add is for operators and above');
SELECT ok(pg_catalog.has_function_privilege('pgagent_operator', 'pgagent.kg_extract(bigint,text,integer)', 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_user', 'pgagent.kg_extract(bigint,text,integer)', 'EXECUTE'),
          'kg_extract is for operators and above');
SELECT ok(pg_catalog.has_function_privilege('pgagent_user', 'pgagent.kg_neighbors(text,integer,text,text)', 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_viewer', 'pgagent.kg_neighbors(text,integer,text,text)', 'EXECUTE'),
          'kg_neighbors is for users and above');
SELECT ok((SELECT relforcerowsecurity FROM pg_class WHERE oid = ('pgagent.' || t)::regclass), t || ': RLS forced')
  FROM unnest(ARRAY['kg_entity', 'kg_relation', 'kg_extraction']) AS t;
SELECT throws_ok($$SELECT * FROM pgagent.kg_neighbors('nobody at all')$$, '42704', NULL, 'an unknown entity');
SELECT throws_ok($$SELECT pgagent.kg_extract(999999)$$, '42704', NULL, 'kg_extract: an unknown document');
SELECT throws_ok($$SELECT pgagent.kg_extract(1, max_chunks => 0)$$, '22023', NULL, 'kg_extract: max_chunks out of range');

-- ---------------------------------------------------------------- bad input
SELECT throws_ok($$SELECT pgagent.remember('no such agent', 'x')$$, '42704', NULL, 'an unknown agent');
SELECT throws_ok($$SELECT pgagent.forget(-1)$$, '22023', NULL, 'a bad memory id');
SELECT throws_ok($$SELECT pgagent.forget(999999)$$, '42704', NULL, 'a missing memory');

SELECT * FROM finish();
ROLLBACK;
