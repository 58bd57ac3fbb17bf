-- pgagent.step is an append-only log: INSERT works; UPDATE, DELETE and TRUNCATE are refused
-- with SQLSTATE 42501 by triggers, even for a superuser (the role running this test).
BEGIN;
SET LOCAL client_min_messages = warning;  -- TRUNCATE ... CASCADE notices
SELECT plan(16);

SELECT ok((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),
          'this test runs as a superuser');

-- ---------------------------------------------------------------- fixture
INSERT INTO pgagent.model (name, provider, base_url, model_name)
VALUES ('ao_model', 'openai', 'http://127.0.0.1:9/v1', 'tap');
INSERT INTO pgagent.agent (name, model_id) SELECT 'ao_agent', model_id FROM pgagent.model WHERE name = 'ao_model';
INSERT INTO pgagent.conversation (agent_id, title) SELECT agent_id, 'ao' FROM pgagent.agent WHERE name = 'ao_agent';
INSERT INTO pgagent.turn (conversation_id, seq, status, user_message, created_at, started_at)
SELECT conversation_id, 1, 'running', 'append only', now() - interval '1 minute', now()
  FROM pgagent.conversation WHERE title = 'ao';

CREATE FUNCTION pg_temp.turn() RETURNS bigint LANGUAGE sql AS
  $$ SELECT turn_id FROM pgagent.turn WHERE user_message = 'append only' $$;

-- ---------------------------------------------------------------- INSERT works
SELECT lives_ok($$INSERT INTO pgagent.step (turn_id, seq, kind, payload)
                  VALUES (pg_temp.turn(), 1, 'user_message', '{"content": "append only"}')$$,
                'INSERT of a user_message step works');
SELECT lives_ok($$INSERT INTO pgagent.step (turn_id, seq, kind, payload, tool_call_id, tool_name)
                  VALUES (pg_temp.turn(), 2, 'tool_call', '{"arguments": {"x": 1}}', 'call_1', 'lookup')$$,
                'INSERT of a tool_call step works');
SELECT lives_ok($$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name)
                  SELECT turn_id, 3, 'tool_result', '{"result": 2}', step_id, 'call_1', 'lookup'
                    FROM pgagent.step WHERE turn_id = pg_temp.turn() AND seq = 2$$,
                'INSERT of a tool_result step works');
SELECT is((SELECT count(*)::int FROM pgagent.step WHERE turn_id = pg_temp.turn()), 3, 'the turn has 3 steps');

-- ---------------------------------------------------------------- UPDATE / DELETE / TRUNCATE refused
SELECT throws_ok($$UPDATE pgagent.step SET payload = '{"content": "rewritten"}'
                    WHERE turn_id = pg_temp.turn() AND seq = 1$$,
                 '42501', NULL, 'UPDATE of a step payload is refused (42501)');
SELECT throws_ok($$UPDATE pgagent.step SET seq = seq WHERE turn_id = pg_temp.turn()$$,
                 '42501', NULL, 'even a no-op UPDATE of steps is refused (42501)');
SELECT throws_ok($$UPDATE pgagent.step SET created_by = current_user WHERE turn_id = pg_temp.turn()$$,
                 '42501', NULL, 'UPDATE of created_by is refused (42501)');
SELECT throws_ok($$DELETE FROM pgagent.step WHERE turn_id = pg_temp.turn() AND seq = 3$$,
                 '42501', NULL, 'DELETE of a step is refused (42501)');
SELECT throws_ok($$DELETE FROM pgagent.step$$,
                 '42501', NULL, 'DELETE of all steps is refused (42501)');
-- the steps inserted above have their (deferred) foreign-key checks pending, and TRUNCATE
-- refuses a table with pending trigger events (55006) before any trigger runs: fire them
SET CONSTRAINTS ALL IMMEDIATE;
SELECT throws_ok($$TRUNCATE pgagent.step, pgagent.flag$$,
                 '42501', NULL, 'TRUNCATE pgagent.step (with pgagent.flag, which references it) is refused (42501)');
SELECT throws_ok($$TRUNCATE pgagent.turn CASCADE$$,
                 '42501', NULL, 'TRUNCATE pgagent.turn CASCADE (which would empty step) is refused (42501)');
SELECT throws_ok($$WITH d AS (DELETE FROM pgagent.step WHERE turn_id = pg_temp.turn() RETURNING *)
                   INSERT INTO pgagent.step (turn_id, seq, kind, payload)
                   SELECT turn_id, seq + 100, kind, payload FROM d WHERE kind = 'user_message'$$,
                 '42501', NULL, 'a DELETE hidden in a CTE is refused (42501)');

-- ---------------------------------------------------------------- nothing changed
SELECT is((SELECT count(*)::int FROM pgagent.step WHERE turn_id = pg_temp.turn()), 3,
          'the turn still has its 3 steps');
SELECT is((SELECT payload ->> 'content' FROM pgagent.step WHERE turn_id = pg_temp.turn() AND seq = 1),
          'append only', 'the user_message payload is unchanged');
SELECT is((SELECT array_agg(tgname::text ORDER BY tgname) FROM pg_catalog.pg_trigger
            WHERE tgrelid = 'pgagent.step'::regclass AND tgenabled = 'O' AND NOT tgisinternal
              AND tgfoid = 'pgagent.step_append_only()'::regprocedure),
          ARRAY['step_no_truncate', 'step_no_update_delete'],
          'the append-only triggers are enabled on pgagent.step');

SELECT * FROM finish();
ROLLBACK;
