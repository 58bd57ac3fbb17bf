-- Bad states are unrepresentable: constraints, keys and insert triggers refuse them with a
-- SQLSTATE. Rows are inserted directly (no API, no LLM).
BEGIN;
SELECT plan(48);

-- ---------------------------------------------------------------- fixture
-- Default tenant: a model, an agent, two conversations with one running turn each.
-- Turn 'turn one' has steps 1 user_message, 2 tool_call call_1, 3 llm_call, 4 tool_call call_2,
-- 8 tool_call call_3.
INSERT INTO pgagent.tenant (tenant_id, name) VALUES ('11111111-1111-1111-1111-111111111111', 'tap_other');
INSERT INTO pgagent.model (name, provider, base_url, model_name)
VALUES ('tap_model', 'openai', 'http://127.0.0.1:9/v1', 'tap');
INSERT INTO pgagent.agent (name, model_id) SELECT 'tap_agent', model_id FROM pgagent.model WHERE name = 'tap_model';
INSERT INTO pgagent.conversation (agent_id, title)
SELECT agent_id, c FROM pgagent.agent, unnest(ARRAY['c1', 'c2']) c WHERE name = 'tap_agent';
INSERT INTO pgagent.turn (conversation_id, seq, status, user_message, created_at, started_at)
SELECT conversation_id, 1, 'running', CASE title WHEN 'c1' THEN 'turn one' ELSE 'turn two' END,
       now() - interval '1 minute', now()
  FROM pgagent.conversation WHERE title IN ('c1', 'c2');

-- The other tenant: its own model and agent.
INSERT INTO pgagent.model (tenant_id, name, provider, base_url, model_name)
VALUES ('11111111-1111-1111-1111-111111111111', 'tap_model', 'openai', 'http://127.0.0.1:9/v1', 'tap');

CREATE FUNCTION pg_temp.turn(text) RETURNS bigint LANGUAGE sql AS
  $$ SELECT turn_id FROM pgagent.turn WHERE user_message = $1 $$;
CREATE FUNCTION pg_temp.step(text, integer) RETURNS bigint LANGUAGE sql AS
  $$ SELECT s.step_id FROM pgagent.step s JOIN pgagent.turn t USING (tenant_id, turn_id)
      WHERE t.user_message = $1 AND s.seq = $2 $$;
CREATE FUNCTION pg_temp.conv(text) RETURNS bigint LANGUAGE sql AS
  $$ SELECT conversation_id FROM pgagent.conversation WHERE title = $1 $$;

INSERT INTO pgagent.step (turn_id, seq, kind, payload) VALUES
  (pg_temp.turn('turn one'), 1, 'user_message', '{"content": "turn one"}'),
  (pg_temp.turn('turn two'), 1, 'user_message', '{"content": "turn two"}');
INSERT INTO pgagent.step (turn_id, seq, kind, payload, tool_call_id, tool_name) VALUES
  (pg_temp.turn('turn one'), 2, 'tool_call', '{"arguments": {}}', 'call_1', 'lookup');
INSERT INTO pgagent.step (turn_id, seq, kind, payload) VALUES
  (pg_temp.turn('turn one'), 3, 'llm_call', '{}');
INSERT INTO pgagent.step (turn_id, seq, kind, payload, tool_call_id, tool_name) VALUES
  (pg_temp.turn('turn one'), 4, 'tool_call', '{"arguments": {}, "requires_approval": true}', 'call_2', 'lookup'),
  (pg_temp.turn('turn one'), 8, 'tool_call', '{"arguments": {}, "requires_approval": true}', 'call_3', 'lookup');

SELECT is((SELECT count(*)::int FROM pgagent.step WHERE turn_id IN (pg_temp.turn('turn one'), pg_temp.turn('turn two'))),
          6, 'fixture: 6 steps in two running turns');

-- ---------------------------------------------------------------- steps: tool_result / approval parents
SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, tool_call_id, tool_name)
    VALUES (pg_temp.turn('turn one'), 10, 'tool_result', '{"result": 1}', 'call_1', 'lookup')$$,
  '23514', NULL, 'a tool_result step without parent_step_id is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload)
    VALUES (pg_temp.turn('turn one'), 10, 'approval', '{"approved": true}')$$,
  '23514', NULL, 'an approval step without parent_step_id is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id)
    VALUES (pg_temp.turn('turn one'), 10, 'response', '{"content": "x"}', pg_temp.step('turn one', 2))$$,
  '23514', NULL, 'a step other than tool_result/approval with a parent_step_id is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name)
    VALUES (pg_temp.turn('turn one'), 10, 'tool_result', '{"result": 1}', pg_temp.step('turn one', 3), 'call_1', 'lookup')$$,
  '23503', NULL, 'a tool_result whose parent is an llm_call step is refused (23503)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name)
    VALUES (pg_temp.turn('turn one'), 10, 'tool_result', '{"result": 1}', pg_temp.step('turn one', 1), 'call_1', 'lookup')$$,
  '23503', NULL, 'a tool_result whose parent is a user_message step is refused (23503)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id)
    VALUES (pg_temp.turn('turn one'), 10, 'approval', '{"approved": true}', pg_temp.step('turn one', 3))$$,
  '23503', NULL, 'an approval whose parent is not a tool_call is refused (23503)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name)
    VALUES (pg_temp.turn('turn two'), 10, 'tool_result', '{"result": 1}', pg_temp.step('turn one', 2), 'call_1', 'lookup')$$,
  '23503', NULL, 'a tool_result whose parent tool_call is in another turn is refused (23503)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id)
    VALUES (pg_temp.turn('turn two'), 10, 'approval', '{"approved": true}', pg_temp.step('turn one', 4))$$,
  '23503', NULL, 'an approval whose parent tool_call is in another turn is refused (23503)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name)
    VALUES (pg_temp.turn('turn one'), 10, 'tool_result', '{"result": 1}', -1, 'call_1', 'lookup')$$,
  '23503', NULL, 'a tool_result whose parent step does not exist is refused (23503)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name)
    VALUES (pg_temp.turn('turn one'), 10, 'tool_result', '{"result": 1}', pg_temp.step('turn one', 2), 'call_other', 'lookup')$$,
  '23503', NULL, 'a tool_result with another tool_call_id than its tool_call is refused (23503)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name)
    VALUES (pg_temp.turn('turn one'), 10, 'tool_result', '{"result": 1}', pg_temp.step('turn one', 2), 'call_1', 'other_tool')$$,
  '23503', NULL, 'a tool_result with another tool name than its tool_call is refused (23503)');

SELECT lives_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name)
    VALUES (pg_temp.turn('turn one'), 5, 'tool_result', '{"result": 1}', pg_temp.step('turn one', 2), 'call_1', 'lookup')$$,
  'a matching tool_result for call_1 is accepted');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name)
    VALUES (pg_temp.turn('turn one'), 6, 'tool_result', '{"result": 2}', pg_temp.step('turn one', 2), 'call_1', 'lookup')$$,
  '23505', NULL, 'a second tool_result for the same tool_call is refused (23505)');

-- ---------------------------------------------------------------- steps: approvals
SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id)
    VALUES (pg_temp.turn('turn one'), 30, 'approval', '{"note": "ok"}', pg_temp.step('turn one', 8))$$,
  '23514', NULL, 'an approval without "approved" is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id)
    VALUES (pg_temp.turn('turn one'), 10, 'approval', '{"approved": "yes"}', pg_temp.step('turn one', 4))$$,
  '23514', NULL, 'an approval whose "approved" is not a boolean is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id)
    VALUES (pg_temp.turn('turn one'), 10, 'approval', '{"approved": null}', pg_temp.step('turn one', 4))$$,
  '23514', NULL, 'an approval with "approved": null is refused (23514)');

SELECT lives_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id)
    VALUES (pg_temp.turn('turn one'), 6, 'approval', '{"approved": true}', pg_temp.step('turn one', 4))$$,
  'an approval with a boolean "approved" is accepted');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, parent_step_id)
    VALUES (pg_temp.turn('turn one'), 7, 'approval', '{"approved": false}', pg_temp.step('turn one', 4))$$,
  '23505', NULL, 'a second decision on the same tool_call is refused (23505)');

-- ---------------------------------------------------------------- steps: other checks
SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, tool_name)
    VALUES (pg_temp.turn('turn one'), 10, 'tool_call', '{}', 'lookup')$$,
  '23514', NULL, 'a tool_call step without tool_call_id is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload, tool_call_id)
    VALUES (pg_temp.turn('turn one'), 10, 'tool_call', '{}', 'call_9')$$,
  '23514', NULL, 'a tool_call step without tool_name is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload)
    VALUES (pg_temp.turn('turn one'), 10, 'shell', '{}')$$,
  '23514', NULL, 'a step of unknown kind is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload)
    VALUES (pg_temp.turn('turn one'), 10, 'response', '[1, 2]')$$,
  '23514', NULL, 'a step whose payload is not an object is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload)
    VALUES (pg_temp.turn('turn one'), 3, 'response', '{}')$$,
  '23505', NULL, 'two steps with the same seq in a turn are refused (23505)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload)
    VALUES (pg_temp.turn('turn one'), 0, 'response', '{}')$$,
  '23514', NULL, 'a step seq must be positive (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (turn_id, seq, kind, payload) VALUES (-1, 10, 'response', '{}')$$,
  '23503', NULL, 'a step of a nonexistent turn is refused (23503)');

-- ---------------------------------------------------------------- turns: terminal states
SELECT throws_ok(
  $$UPDATE pgagent.turn SET status = 'completed', answer = 'done' WHERE turn_id = pg_temp.turn('turn one')$$,
  '23514', NULL, 'a completed turn without finished_at is refused (23514)');

SELECT throws_ok(
  $$UPDATE pgagent.turn SET status = 'completed', finished_at = clock_timestamp() WHERE turn_id = pg_temp.turn('turn one')$$,
  '23514', NULL, 'a completed turn without answer is refused (23514)');

SELECT throws_ok(
  $$UPDATE pgagent.turn SET status = 'failed', finished_at = clock_timestamp() WHERE turn_id = pg_temp.turn('turn one')$$,
  '23514', NULL, 'a failed turn without error is refused (23514)');

SELECT throws_ok(
  $$UPDATE pgagent.turn SET finished_at = clock_timestamp() WHERE turn_id = pg_temp.turn('turn one')$$,
  '23514', NULL, 'a running turn with finished_at is refused (23514)');

SELECT throws_ok(
  $$UPDATE pgagent.turn SET status = 'cancelled' WHERE turn_id = pg_temp.turn('turn one')$$,
  '23514', NULL, 'a cancelled turn without finished_at is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.turn (conversation_id, seq, status, user_message)
    VALUES (pg_temp.conv('c1'), 2, 'running', 'no start time')$$,
  '23514', NULL, 'a running turn without started_at is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.turn (conversation_id, seq, status, user_message, created_at, started_at)
    VALUES (pg_temp.conv('c1'), 2, 'running', 'started before created', now(), now() - interval '1 hour')$$,
  '23514', NULL, 'a turn started before it was created is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.turn (conversation_id, seq, user_message) VALUES (pg_temp.conv('c1'), 1, 'same seq')$$,
  '23505', NULL, 'two turns with the same seq in a conversation are refused (23505)');

SELECT lives_ok(
  $$UPDATE pgagent.turn SET status = 'completed', answer = 'done', finished_at = clock_timestamp()
     WHERE turn_id = pg_temp.turn('turn two')$$,
  'a completed turn with answer and finished_at is accepted');

-- ---------------------------------------------------------------- cross-tenant references
SELECT throws_ok(
  $$INSERT INTO pgagent.turn (tenant_id, conversation_id, seq, user_message)
    VALUES ('11111111-1111-1111-1111-111111111111', pg_temp.conv('c1'), 5, 'cross-tenant turn')$$,
  '23503', NULL, 'a turn of tenant B pointing at a conversation of tenant A is refused (23503)');

SELECT throws_ok(
  $$INSERT INTO pgagent.conversation (tenant_id, agent_id)
    SELECT '11111111-1111-1111-1111-111111111111', agent_id FROM pgagent.agent WHERE name = 'tap_agent'$$,
  '23503', NULL, 'a conversation of tenant B pointing at an agent of tenant A is refused (23503)');

SELECT throws_ok(
  $$INSERT INTO pgagent.agent (tenant_id, name, model_id)
    SELECT '11111111-1111-1111-1111-111111111111', 'cross', model_id
      FROM pgagent.model WHERE name = 'tap_model' AND tenant_id = pgagent.default_tenant_id()$$,
  '23503', NULL, 'an agent of tenant B using a model of tenant A is refused (23503)');

SELECT throws_ok(
  $$INSERT INTO pgagent.step (tenant_id, turn_id, seq, kind, payload)
    VALUES ('11111111-1111-1111-1111-111111111111', pg_temp.turn('turn one'), 20, 'response', '{}')$$,
  '23503', NULL, 'a step of tenant B pointing at a turn of tenant A is refused (23503)');

SELECT throws_ok(
  $$INSERT INTO pgagent.model (tenant_id, name, provider, base_url, model_name)
    VALUES ('22222222-2222-2222-2222-222222222222', 'orphan', 'openai', 'http://127.0.0.1:9/v1', 'x')$$,
  '23503', NULL, 'a model of a nonexistent tenant is refused (23503)');

-- ---------------------------------------------------------------- model and tool registry
SELECT throws_ok(
  $$INSERT INTO pgagent.model (name, provider, base_url, model_name) VALUES ('m_bad', 'azure', 'https://x.example/v1', 'x')$$,
  '23514', NULL, 'a model with an unknown provider is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.model (name, provider, base_url, model_name) VALUES ('m_bad', 'openai', 'ftp://x.example/v1', 'x')$$,
  '23514', NULL, 'a model with a non-http(s) base_url is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.model (name, provider, base_url, model_name) VALUES ('m_bad', 'openai', 'http://has space/v1', 'x')$$,
  '23514', NULL, 'a model with whitespace in base_url is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.model (name, provider, base_url, model_name, is_default)
    VALUES ('m_def1', 'openai', 'http://127.0.0.1:9/v1', 'x', true),
           ('m_def2', 'openai', 'http://127.0.0.1:9/v1', 'x', true)$$,
  '23505', NULL, 'two default chat models for one tenant are refused (23505)');

SELECT throws_ok(
  $$INSERT INTO pgagent.tool (name, description, kind) VALUES ('bad name!', 'd', 'function')$$,
  '23514', NULL, 'a tool whose name has spaces/punctuation is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.tool (name, description, kind) VALUES (repeat('a', 65), 'd', 'function')$$,
  '23514', NULL, 'a tool name longer than 64 characters is refused (23514)');

SELECT throws_ok(
  $$INSERT INTO pgagent.tool (name, description, kind, parameters) VALUES ('t_arr', 'd', 'function', '[]')$$,
  '23514', NULL, 'a tool whose parameters are not an object is refused (23514)');

SELECT lives_ok(
  $$INSERT INTO pgagent.tool (name, description, kind) VALUES ('good-name_1', 'd', 'function')$$,
  'a tool named with letters, digits, - and _ is accepted');

SELECT * FROM finish();
ROLLBACK;
