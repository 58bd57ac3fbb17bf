-- Long-term memory (issue 10; docs/memory.md): the SQL API over pgagent_core.memory_api. The
-- table pgagent.memory and its indexes are in 10_tables.sql; its row level security in
-- 60_security.sql. Replayable.

CREATE OR REPLACE FUNCTION pgagent.remember(agent text, content text, scope text DEFAULT 'user',
                                            importance real DEFAULT 0.5, conversation bigint DEFAULT NULL,
                                            model text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('remember', pg_catalog.jsonb_build_object('agent', agent, 'content', content,
                       'scope', scope, 'importance', importance, 'conversation', conversation, 'model', model));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.remember(text, text, text, real, bigint, text) IS
  'Store a memory of the agent for the calling role: scope user (default: recalled in every conversation of the caller with the agent), conversation (in that conversation only; give conversation) or agent (shared by every user of the agent; pgagent_admin only). The content (1 to 20,000 characters) is embedded now by model (default: the tenant''s default embedding model); importance 0 to 1. Returns memory_id. Raises 22023, 42501, 42704, 58000 (the embedding provider failed).';
REVOKE ALL ON FUNCTION pgagent.remember(text, text, text, real, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.remember(text, text, text, real, bigint, text) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.recall(agent text, query text, k integer DEFAULT 5,
                                          min_similarity double precision DEFAULT 0,
                                          conversation bigint DEFAULT NULL, model text DEFAULT NULL)
RETURNS TABLE (memory_id bigint, scope text, content text, importance double precision,
               similarity double precision, score double precision, created_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('recall', pg_catalog.jsonb_build_object('agent', agent, 'query', query, 'k', k,
                       'min_similarity', min_similarity, 'conversation', conversation, 'model', model));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN QUERY SELECT x.memory_id, x.scope, x.content, x.importance, x.similarity, x.score, x.created_at
                   FROM pg_catalog.jsonb_to_recordset(r -> 'result')
                        AS x(memory_id bigint, scope text, content text, importance double precision,
                             similarity double precision, score double precision, created_at timestamptz);
END $$;
COMMENT ON FUNCTION pgagent.recall(text, text, integer, double precision, bigint, text) IS
  'The k (1 to 100) memories of the agent most relevant to query that the caller''s turns would recall (its own scope user memories, the agent''s shared ones, and with conversation that conversation''s), best first. similarity = 1 - cosine distance (at least min_similarity); score = (similarity + importance + 0.995 ^ hours since last recalled) / 3, after Park et al. 2023 (docs/memory.md). Stamps last_recalled_at. Raises 22023, 42704, 58000.';
REVOKE ALL ON FUNCTION pgagent.recall(text, text, integer, double precision, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.recall(text, text, integer, double precision, bigint, text) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.forget(memory_id bigint)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('forget', pg_catalog.jsonb_build_object('memory_id', memory_id));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.forget(bigint) IS
  'Delete a memory: one of the caller''s own, or any of the tenant''s for a pgagent_admin (audited as memory_forgotten when it is another role''s or shared). Returns true. Raises 22023, 42501 (a shared memory, for a non-admin), 42704 (no such memory the caller may see).';
REVOKE ALL ON FUNCTION pgagent.forget(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.forget(bigint) TO pgagent_user;
