-- pgagent quick start for psql, as a superuser, with the offline local model
-- (.venv/bin/python scripts/local_models.py start) or another model: see docs/providers.md.
--   psql -v ON_ERROR_STOP=1 -f examples/quickstart.sql
-- The README's "Using it from psql" adds roles, approvals and a hosted model with a stored key.
-- tests/python/test_docs.py runs this file against a scripted server.
CREATE EXTENSION IF NOT EXISTS pgagent CASCADE;

SELECT pgagent.register_model('local-qwen', base_url => 'http://127.0.0.1:8765/v1',
         model_name => 'qwen2.5-coder-1.5b-instruct', tool_mode => 'json_schema',
         params => '{"temperature": 0, "max_tokens": 256}', timeout_ms => 120000, is_default => true);

CREATE TABLE IF NOT EXISTS public.city (name text PRIMARY KEY, country text, population bigint);
INSERT INTO public.city VALUES ('Oslo', 'Norway', 709000), ('Bergen', 'Norway', 291000),
                               ('Lyon', 'France', 522000) ON CONFLICT DO NOTHING;
GRANT SELECT ON public.city TO pgagent_sandbox;   -- sql tools run as this low-privilege role

SELECT pgagent.register_tool('run_sql',
         'Run one read-only SELECT. Table city(name text, country text, population bigint).',
         '{"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}',
         kind => 'sql', config => '{"search_path": "public", "max_rows": 20}');
SELECT pgagent.create_agent('geo', tools => '{run_sql}',
         instructions => 'Look facts up with run_sql; never guess. Answer in one sentence.');

SELECT pgagent.start_conversation('geo') AS conversation \gset
SELECT pgagent.send_message(:conversation, 'Which Norwegian city in the table is the largest?') ->> 'answer' AS answer;
SELECT turn_id AS turn FROM pgagent.turn_summary WHERE conversation_id = :conversation ORDER BY turn_id DESC LIMIT 1 \gset
SELECT seq, kind, tool_name, left(summary, 80) AS summary, latency_ms
  FROM pgagent.turn_timeline WHERE turn_id = :turn ORDER BY seq;
SELECT * FROM pgagent.verify_turn(:turn);
