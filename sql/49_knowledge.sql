-- Knowledge base (issue 10; docs/memory.md#knowledge-base): the SQL API over
-- pgagent_core.knowledge_api and the documents view. Tables in 10_tables.sql. Replayable.

CREATE OR REPLACE FUNCTION pgagent.create_collection(name text, description text DEFAULT NULL, embedding_model text DEFAULT NULL, text_config text DEFAULT 'english', chunk_size integer DEFAULT 1200, chunk_overlap integer DEFAULT 200)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('create_collection', pg_catalog.jsonb_build_object('name', name, 'description', description, 'embedding_model', embedding_model, 'text_config', text_config, 'chunk_size', chunk_size, 'chunk_overlap', chunk_overlap));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.create_collection(text, text, text, text, integer, integer) IS
  'Admin: create a knowledge-base collection: documents searched together. chunk_size and chunk_overlap in characters (a chunk is at most chunk_size, paragraph-aware; each repeats about chunk_overlap characters of the one before); text_config: the full-text search configuration (english, simple, ...); embedding_model: an embedding model''s name (default: the tenant''s default embedding model, when a chunk is embedded). Returns collection_id. Audited. Raises 22023, 23505 (the name is taken), 42704.';
REVOKE ALL ON FUNCTION pgagent.create_collection(text, text, text, text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.create_collection(text, text, text, text, integer, integer) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.drop_collection(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('drop_collection', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.drop_collection(text) IS
  'Admin: delete a collection with its documents and chunks. Audited. Raises 42704.';
REVOKE ALL ON FUNCTION pgagent.drop_collection(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.drop_collection(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.add_document(collection text, title text, body text, metadata jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('add_document', pg_catalog.jsonb_build_object('collection', collection, 'title', title, 'body', body, 'metadata', metadata));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.add_document(text, text, text, jsonb) IS
  'Operator: add a document to a collection, or update the one with the same title. Its text is cut into chunks at once (searchable by full text now); chunks with new text wait for a worker to embed them (pgagent.embed_pending; see the documents view), chunks whose text did not change keep their embedding. Returns {document_id, version, changed, chunks, reused, pending}. Raises 22023 (an empty body, over 10,000,000 characters, metadata not an object), 42704 (no such collection).';
REVOKE ALL ON FUNCTION pgagent.add_document(text, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.add_document(text, text, text, jsonb) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.delete_document(document_id bigint)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('delete_document', pg_catalog.jsonb_build_object('document_id', document_id));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.delete_document(bigint) IS
  'Operator: delete a document and its chunks. Raises 22023, 42704.';
REVOKE ALL ON FUNCTION pgagent.delete_document(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.delete_document(bigint) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.search(collection text, query text, k integer DEFAULT 5, mode text DEFAULT 'hybrid', filter jsonb DEFAULT '{}')
RETURNS TABLE (chunk_id bigint, document_id bigint, title text, seq integer, content text, metadata jsonb, score double precision, vector_rank bigint, text_rank bigint, similarity double precision, text_score double precision) LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('search', pg_catalog.jsonb_build_object('collection', collection, 'query', query, 'k', k, 'mode', mode, 'filter', filter));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN QUERY SELECT x.chunk_id, x.document_id, x.title, x.seq, x.content, x.metadata, x.score, x.vector_rank,
                        x.text_rank, x.similarity, x.text_score
                   FROM pg_catalog.jsonb_to_recordset(r -> 'result')
                        AS x(chunk_id bigint, document_id bigint, title text, seq integer, content text, metadata jsonb,
                             score double precision, vector_rank bigint, text_rank bigint, similarity double precision,
                             text_score double precision);
END $$;
COMMENT ON FUNCTION pgagent.search(text, text, integer, text, jsonb) IS
  'The k (1 to 100) chunks of the collection that best answer query, best first, with their document. mode: hybrid (default: Reciprocal Rank Fusion of the vector and the full-text ranking, score = sum of 1 / (60 + rank), Cormack et al. 2009), vector (score = cosine similarity) or text (score = ts_rank_cd of websearch_to_tsquery). filter: a JSON object the document metadata must contain. Chunks not embedded yet are found by text only. A hybrid search whose query cannot be embedded ranks by text and says so in a NOTICE. Raises 22023, 42704, 58000 (vector mode: the embedding failed).';
REVOKE ALL ON FUNCTION pgagent.search(text, text, integer, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.search(text, text, integer, text, jsonb) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.embed_pending(tenant text DEFAULT NULL, batch integer DEFAULT 32)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('embed_pending', pg_catalog.jsonb_build_object('tenant', tenant, 'batch', batch));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.embed_pending(text, integer) IS
  'Worker: embed up to batch (1 to 256) knowledge-base chunks that wait for an embedding, in the first tenant the caller may act for that has some (or only tenant). The chunks are locked FOR UPDATE SKIP LOCKED while the embedding model is called, so workers share the queue; a failure is recorded on the chunks (embed_attempts, embed_error; 5 attempts at most). Returns {tenant_id, embedded, failed, collection_id}. pgagent worker calls it until there is no work. Raises 22023.';
REVOKE ALL ON FUNCTION pgagent.embed_pending(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.embed_pending(text, integer) TO pgagent_user;

CREATE OR REPLACE VIEW pgagent.documents WITH (security_invoker = true) AS
SELECT d.tenant_id, c.name AS collection, d.document_id, d.title, d.version, d.metadata,
       pg_catalog.length(d.body) AS chars, s.chunks, s.embedded, s.chunks - s.embedded - s.failed AS pending, s.failed,
       s.last_error, d.created_by, d.created_at, d.updated_at
  FROM pgagent.document d
  JOIN pgagent.collection c ON c.tenant_id = d.tenant_id AND c.collection_id = d.collection_id
  CROSS JOIN LATERAL (
       SELECT pg_catalog.count(*) AS chunks, pg_catalog.count(*) FILTER (WHERE k.embedding IS NOT NULL) AS embedded,
              pg_catalog.count(*) FILTER (WHERE k.embedding IS NULL AND k.embed_attempts >= 5) AS failed,
              (pg_catalog.array_agg(k.embed_error ORDER BY k.chunk_id DESC) FILTER (WHERE k.embed_error IS NOT NULL))[1] AS last_error
         FROM pgagent.chunk k WHERE k.tenant_id = d.tenant_id AND k.document_id = d.document_id) s;
COMMENT ON VIEW pgagent.documents IS
  'Knowledge-base documents and their embedding progress: chunks, embedded, pending (waiting for a worker), failed (gave up after 5 attempts) and the last embedding error.';
COMMENT ON COLUMN pgagent.documents.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.documents.collection IS 'The collection''s name.';
COMMENT ON COLUMN pgagent.documents.document_id IS 'The document.';
COMMENT ON COLUMN pgagent.documents.title IS 'Its title.';
COMMENT ON COLUMN pgagent.documents.version IS '1, plus one per update that changed the body.';
COMMENT ON COLUMN pgagent.documents.metadata IS 'Its metadata.';
COMMENT ON COLUMN pgagent.documents.chars IS 'Length of the body (characters).';
COMMENT ON COLUMN pgagent.documents.chunks IS 'Chunks of the current body.';
COMMENT ON COLUMN pgagent.documents.embedded IS 'Chunks with an embedding (searchable by vector).';
COMMENT ON COLUMN pgagent.documents.pending IS 'Chunks waiting for a worker to embed them.';
COMMENT ON COLUMN pgagent.documents.failed IS 'Chunks whose embedding failed 5 times (see last_error).';
COMMENT ON COLUMN pgagent.documents.last_error IS 'The latest embedding error of its chunks.';
COMMENT ON COLUMN pgagent.documents.created_by IS 'The role that added it.';
COMMENT ON COLUMN pgagent.documents.created_at IS 'When it was added.';
COMMENT ON COLUMN pgagent.documents.updated_at IS 'When it was last updated.';
GRANT SELECT ON pgagent.documents TO pgagent_viewer;

-- ---------------------------------------------------------------------------- knowledge graph
CREATE OR REPLACE FUNCTION pgagent._kg_walk(p_tenant uuid, p_start bigint, p_depth integer, p_predicate text DEFAULT NULL)
RETURNS TABLE (depth integer, entity_id bigint, entity text, type text, predicate text, direction text,
               from_entity text, path text[])
LANGUAGE sql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE walk(depth, entity_id, predicate, direction, from_id, path) AS (
        SELECT 0, p_start, NULL::text, NULL::text, NULL::bigint, ARRAY[p_start]
        UNION ALL
        SELECT w.depth + 1, e.next_id, e.predicate, e.direction, w.entity_id, w.path || e.next_id
          FROM walk w
          CROSS JOIN LATERAL (
                SELECT r.object_id AS next_id, r.predicate, 'out'::text AS direction FROM pgagent.kg_relation r
                 WHERE r.tenant_id = p_tenant AND r.subject_id = w.entity_id
                   AND (p_predicate IS NULL OR r.predicate = p_predicate)
                UNION ALL
                SELECT r.subject_id, r.predicate, 'in' FROM pgagent.kg_relation r
                 WHERE r.tenant_id = p_tenant AND r.object_id = w.entity_id
                   AND (p_predicate IS NULL OR r.predicate = p_predicate)) e
         WHERE w.depth < least(p_depth, 5) AND NOT e.next_id = ANY (w.path))
    SELECT x.depth, x.entity_id, x.entity, x.type, x.predicate, x.direction, x.from_entity, x.path
      FROM (SELECT DISTINCT ON (w.entity_id) w.depth, w.entity_id, k.name AS entity, k.type, w.predicate, w.direction,
                   f.name AS from_entity,
                   ARRAY(SELECT n.name FROM unnest(w.path) WITH ORDINALITY AS u(id, i)
                           JOIN pgagent.kg_entity n ON n.tenant_id = p_tenant AND n.entity_id = u.id ORDER BY u.i) AS path
              FROM walk w
              JOIN pgagent.kg_entity k ON k.tenant_id = p_tenant AND k.entity_id = w.entity_id
              LEFT JOIN pgagent.kg_entity f ON f.tenant_id = p_tenant AND f.entity_id = w.from_id
             WHERE w.depth > 0
             ORDER BY w.entity_id, w.depth, w.predicate) x
     ORDER BY x.depth, x.entity, x.entity_id
$$;
COMMENT ON FUNCTION pgagent._kg_walk(uuid, bigint, integer, text) IS
  'Internal: the knowledge-graph neighbourhood of an entity (a recursive CTE over kg_relation in both directions, no cycles, depth at most 5), each entity once at its shortest distance, in tenant p_tenant. Owner only: pgagent.kg_neighbors and graph tools call it for the caller''s tenant.';
REVOKE ALL ON FUNCTION pgagent._kg_walk(uuid, bigint, integer, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgagent.kg_add(subject text, predicate text, object text, subject_type text DEFAULT 'thing',
                                          object_type text DEFAULT 'thing', properties jsonb DEFAULT '{}',
                                          source_document bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('kg_add', pg_catalog.jsonb_build_object('subject', subject, 'predicate', predicate,
                       'object', object, 'subject_type', subject_type, 'object_type', object_type,
                       'properties', properties, 'source_document', source_document));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.kg_add(text, text, text, text, text, jsonb, bigint) IS
  'Operator: add the relation subject -predicate-> object to the knowledge graph, creating the entities (by type and name) that do not exist; properties are merged into an existing relation. source_document records where it came from. Types and predicates are lower-case names (person, works_for). Returns relation_id. Raises 22023, 42704 (no such document).';
REVOKE ALL ON FUNCTION pgagent.kg_add(text, text, text, text, text, jsonb, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.kg_add(text, text, text, text, text, jsonb, bigint) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.kg_extract(document bigint, model text DEFAULT NULL, max_chunks integer DEFAULT 20)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('kg_extract', pg_catalog.jsonb_build_object('document', document, 'model', model,
                       'max_chunks', max_chunks));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.kg_extract(bigint, text, integer) IS
  'Operator: have a chat model (model, default the tenant''s default chat model) read the first max_chunks (1 to 200) chunks of knowledge-base document document, one call per chunk asking for JSON entities and relations, and add what it finds to the knowledge graph citing the document. Each chunk is recorded in pgagent.kg_extraction (done, or failed with the reason: a provider error or a reply that is not the JSON asked for; a failed chunk adds nothing). Every call is made before the first write. Returns {document_id, chunks, done, failed, entities, relations, skipped, extraction_ids}. Raises 22023, 42704 (no such document or model).';
REVOKE ALL ON FUNCTION pgagent.kg_extract(bigint, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.kg_extract(bigint, text, integer) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.kg_neighbors(entity text, depth integer DEFAULT 1, entity_type text DEFAULT NULL,
                                                predicate text DEFAULT NULL)
RETURNS TABLE (hops integer, entity_id bigint, name text, type text, relation text, direction text,
               from_name text, path text[])
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('kg_neighbors', pg_catalog.jsonb_build_object('entity', entity, 'depth', depth,
                       'entity_type', entity_type, 'predicate', predicate));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN QUERY SELECT x.depth, x.entity_id, x.entity, x.type, x.predicate, x.direction, x.from_entity, x.path
                   FROM pg_catalog.jsonb_to_recordset(r -> 'result')
                        AS x(depth integer, entity_id bigint, entity text, type text, predicate text, direction text,
                             from_entity text, path text[]);
END $$;
COMMENT ON FUNCTION pgagent.kg_neighbors(text, integer, text, text) IS
  'The knowledge-graph entities within depth (1 to 5) relations of entity (its name, case-insensitive; entity_type when names repeat), following relations both ways, only along predicate if given; each entity once, at its shortest distance (hops), with the relation that reached it (direction out: from_name -relation-> name; in: name -relation-> from_name) and the path of names from entity. At most 1,000 rows. Raises 22023, 42704 (no such entity).';
REVOKE ALL ON FUNCTION pgagent.kg_neighbors(text, integer, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.kg_neighbors(text, integer, text, text) TO pgagent_user;
