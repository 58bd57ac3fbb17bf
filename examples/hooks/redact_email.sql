-- Example policy hooks (pgagent.add_hook; docs/guardrails.md). Run as a pgagent admin:
--   psql -f examples/hooks/redact_email.sql
-- A hook is a function (payload jsonb) RETURNS jsonb. It runs as its run_as role (default
-- pgagent_sandbox) with search_path pg_catalog, pg_temp: qualify what it uses and grant that
-- role EXECUTE on it.

CREATE SCHEMA IF NOT EXISTS policy;
GRANT USAGE ON SCHEMA policy TO pgagent_sandbox;

-- after_response: replace e-mail addresses in the answer by [redacted email]. The model's
-- original answer stays in its llm_call step; the response step, the turn's answer and later
-- turns' history carry the redacted one; a guardrail step records the rewrite.
CREATE OR REPLACE FUNCTION policy.redact_email(payload jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN payload ->> 'content' ~ '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}'
    THEN pg_catalog.jsonb_build_object(
           'action', 'rewrite', 'reason', 'e-mail addresses redacted',
           'payload', pg_catalog.jsonb_build_object('content', pg_catalog.regexp_replace(
               payload ->> 'content', '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}',
               '[redacted email]', 'g')))
  END  -- NULL: allow
$$;
COMMENT ON FUNCTION policy.redact_email(jsonb) IS
  'pgagent after_response hook: rewrites e-mail addresses in the answer to [redacted email].';
GRANT EXECUTE ON FUNCTION policy.redact_email(jsonb) TO pgagent_sandbox;

-- before_tool_call: no calls of tools named in the argument list on Saturdays and Sundays (UTC).
CREATE OR REPLACE FUNCTION policy.no_writes_on_weekends(payload jsonb) RETURNS jsonb
LANGUAGE sql STABLE AS $$
  SELECT CASE WHEN payload ->> 'tool' = ANY (ARRAY['bump'])
               AND pg_catalog.date_part('isodow', pg_catalog.timezone('UTC', pg_catalog.now())) IN (6, 7)
    THEN '{"action": "deny", "reason": "write tools are off at weekends"}'::jsonb
  END
$$;
COMMENT ON FUNCTION policy.no_writes_on_weekends(jsonb) IS
  'pgagent before_tool_call hook: denies calls of the bump tool on Saturdays and Sundays (UTC).';
GRANT EXECUTE ON FUNCTION policy.no_writes_on_weekends(jsonb) TO pgagent_sandbox;

SELECT pgagent.add_hook('after_response', 'policy.redact_email(jsonb)');
