-- Long-term memory (issue 10): who may call what, the table's shape, its row level security and
-- indexes, and bad input refused with documented SQLSTATEs. No embedding model is called here.
BEGIN;
SELECT plan(16);

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
            AND indexdef LIKE '%USING hnsw%vector_cosine_ops%'), 4, 'four partial HNSW indexes (384, 768, 1024, 1536)');
SELECT ok((SELECT obj_description('pgagent.memory'::regclass, 'pg_class')) IS NOT NULL, 'memory is commented');

-- ---------------------------------------------------------------- bad input
SELECT throws_ok($$SELECT pgagent.remember('no such agent', 'x')$$, '42704', NULL, 'an unknown agent');
SELECT throws_ok($$SELECT pgagent.forget(-1)$$, '22023', NULL, 'a bad memory id');
SELECT throws_ok($$SELECT pgagent.forget(999999)$$, '42704', NULL, 'a missing memory');

SELECT * FROM finish();
ROLLBACK;
