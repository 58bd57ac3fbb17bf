-- The SQL API refuses bad arguments with documented SQLSTATEs: 42704 (unknown object),
-- 22023 (bad value), 55000 (wrong state). No LLM is ever called here: send_message is only
-- called with arguments it refuses before the loop starts.
BEGIN;
SELECT plan(69);

-- Everything runs in a fresh tenant, so nothing another file or a user left in the default
-- tenant matters (e.g. a default model).
INSERT INTO pgagent.tenant (name) VALUES ('tap_api');
SET LOCAL pgagent.tenant = 'tap_api';
SELECT is((SELECT name FROM pgagent.tenant WHERE tenant_id = pgagent.current_tenant()), 'tap_api',
          'current_tenant() follows SET pgagent.tenant (by name)');

-- ---------------------------------------------------------------- tenants
SELECT throws_ok($$SELECT set_config('pgagent.tenant', 'no_such_tenant', true), pgagent.current_tenant()$$,
                 '22023', NULL, 'current_tenant() with an unknown pgagent.tenant raises 22023');
SELECT is(pgagent.current_tenant(), (SELECT tenant_id FROM pgagent.tenant WHERE name = 'tap_api'),
          'the failed set_config was rolled back with its savepoint');

-- ---------------------------------------------------------------- register_model
SELECT throws_ok($$SELECT pgagent.create_agent('a_nodefault')$$, '42704', NULL,
                 'create_agent without a model fails with 42704 when the tenant has no default chat model');

SELECT lives_ok($$SELECT pgagent.register_model('m1', base_url => 'http://127.0.0.1:9/v1', model_name => 'tiny')$$,
                'register_model m1');
SELECT is(pgagent.register_model('m1', base_url => 'http://127.0.0.1:9/v2', model_name => 'tiny2', timeout_ms => 1234),
          (SELECT model_id FROM pgagent.model WHERE tenant_id = pgagent.current_tenant() AND name = 'm1'),
          'register_model of an existing name returns the same model_id (upsert)');
SELECT is((SELECT count(*)::int FROM pgagent.model WHERE tenant_id = pgagent.current_tenant() AND name = 'm1'), 1,
          'the upsert did not add a second row');
SELECT results_eq(
    $$SELECT base_url, model_name, timeout_ms FROM pgagent.model
       WHERE tenant_id = pgagent.current_tenant() AND name = 'm1'$$,
    $$VALUES ('http://127.0.0.1:9/v2', 'tiny2', 1234)$$,
    'the upsert updated base_url, model_name and timeout_ms');
SELECT is((SELECT model_name FROM pgagent.model WHERE tenant_id = pgagent.current_tenant() AND name = 'm1b'), NULL,
          'sanity: no model m1b yet');
SELECT lives_ok($$SELECT pgagent.register_model('m1b', base_url => 'http://127.0.0.1:9/v1')$$,
                'register_model without model_name');
SELECT is((SELECT model_name FROM pgagent.model WHERE tenant_id = pgagent.current_tenant() AND name = 'm1b'), 'm1b',
          'model_name defaults to the name');
SELECT throws_ok($$SELECT pgagent.register_model('m_bad', provider => 'azure')$$, '22023',
                 'pgagent: provider ''azure'' is not supported; valid: anthropic, gemini, ollama, openai',
                 'register_model with an unknown provider is refused (22023), naming the valid values');
SELECT throws_ok($$SELECT pgagent.register_model('m_bad', base_url => 'localhost:8080')$$, '22023', NULL,
                 'register_model with a base_url without scheme is refused (22023)');
SELECT throws_ok($$SELECT pgagent.register_model('m_bad', tool_mode => 'xml')$$, '22023',
                 'pgagent: tool_mode ''xml'' is not valid; valid: json_schema, native',
                 'register_model with an unknown tool_mode is refused (22023), naming the valid values');

-- ---------------------------------------------------------------- default model
SELECT lives_ok($$SELECT pgagent.register_model('m_default', base_url => 'http://127.0.0.1:9/v1', is_default => true)$$,
                'register_model m_default with is_default');
SELECT lives_ok($$SELECT pgagent.create_agent('a_default')$$, 'create_agent without a model now works');
SELECT is((SELECT m.name FROM pgagent.agent a JOIN pgagent.model m USING (tenant_id)
            WHERE a.tenant_id = pgagent.current_tenant() AND a.name = 'a_default' AND m.model_id = a.model_id),
          'm_default', 'create_agent without a model uses the tenant''s default chat model');
SELECT lives_ok($$SELECT pgagent.register_model('m_default2', base_url => 'http://127.0.0.1:9/v1', is_default => true)$$,
                'registering another default model works');
SELECT results_eq(
    $$SELECT name FROM pgagent.model WHERE tenant_id = pgagent.current_tenant() AND is_default ORDER BY name$$,
    $$VALUES ('m_default2'::text)$$,
    'the new default replaces the old one (one default per tenant and kind)');
SELECT is((SELECT count(*)::int FROM pgagent.model WHERE tenant_id = pgagent.default_tenant_id()
            AND name IN ('m1', 'm1b', 'm_default', 'm_default2')), 0,
          'the models were registered for tenant tap_api, not the default tenant');

-- ---------------------------------------------------------------- register_tool
SELECT lives_ok($$SELECT pgagent.register_tool('now_tool', 'Current time', kind => 'function',
                                               config => '{"function": "pg_catalog.now"}')$$,
                'register_tool of a function tool works');
SELECT lives_ok($$SELECT pgagent.register_tool('sql_tool', 'Count things',
                    parameters => '{"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}',
                    kind => 'sql', config => '{"query": "SELECT $1::int AS n", "args": ["n"], "max_rows": 10}')$$,
                'register_tool of an sql tool works');
SELECT is(pgagent.register_tool('now_tool', 'Current time (updated)', kind => 'function',
                                config => '{"function": "pg_catalog.now"}'),
          (SELECT tool_id FROM pgagent.tool WHERE tenant_id = pgagent.current_tenant() AND name = 'now_tool'),
          'register_tool of an existing name returns the same tool_id (upsert)');
SELECT throws_ok($$SELECT pgagent.register_tool('t_bad', 'd', kind => 'shell')$$, '22023', NULL,
                 'register_tool with an unknown kind raises 22023');
SELECT throws_ok($$SELECT pgagent.register_tool('t_bad', 'd', parameters => '[]',
                                                 config => '{"function": "pg_catalog.now"}')$$, '22023', NULL,
                 'register_tool with an array as parameters raises 22023');
SELECT throws_ok($$SELECT pgagent.register_tool('t_bad', 'd', parameters => '{"type": "string"}',
                                                 config => '{"function": "pg_catalog.now"}')$$, '22023', NULL,
                 'register_tool with a schema of a non-object raises 22023');
SELECT throws_ok($$SELECT pgagent.register_tool('t_bad', 'd',
                     parameters => '{"type": "object", "properties": {"a": {"type": "nope"}}}',
                     config => '{"function": "pg_catalog.now"}')$$, '22023', NULL,
                 'register_tool with an invalid JSON Schema ("type": "nope") raises 22023');
SELECT throws_ok($$SELECT pgagent.register_tool('t_bad', 'd',
                     parameters => '{"type": "object", "required": "a"}',
                     config => '{"function": "pg_catalog.now"}')$$, '22023', NULL,
                 'register_tool with an invalid JSON Schema ("required": "a") raises 22023');
SELECT throws_ok($$SELECT pgagent.register_tool('t_bad', 'd', kind => 'sql', config => '{"max_rows": 0}')$$,
                 '22023', NULL, 'register_tool of an sql tool with max_rows 0 raises 22023');
SELECT throws_ok($$SELECT pgagent.register_tool('t_bad', 'd', kind => 'sql', config => '{"query": ""}')$$,
                 '22023', NULL, 'register_tool of an sql tool with an empty query raises 22023');
SELECT throws_ok($$SELECT pgagent.register_tool('t_bad', 'd', kind => 'sql', config => '{"args": "n"}')$$,
                 '22023', NULL, 'register_tool of an sql tool whose args is not an array raises 22023');
SELECT throws_ok($$SELECT pgagent.register_tool('t_bad', 'd', kind => 'function', config => '{}')$$,
                 '22023', NULL, 'register_tool of a function tool without config.function raises 22023');
SELECT throws_ok($$SELECT pgagent.register_tool('t_bad', 'd', kind => 'sql', config => '[]')$$,
                 '22023', NULL, 'register_tool with a non-object config raises 22023');
SELECT is((SELECT count(*)::int FROM pgagent.tool WHERE name = 't_bad'), 0, 'no refused tool was stored');

-- ---------------------------------------------------------------- create_persona / create_agent
SELECT lives_ok($$SELECT pgagent.create_persona('p1', 'You are terse.', '{"tone": "dry"}')$$, 'create_persona p1');
SELECT throws_ok($$SELECT pgagent.create_agent('a1', model => 'no_such_model')$$, '42704', NULL,
                 'create_agent with an unknown model raises 42704');
SELECT throws_ok($$SELECT pgagent.create_agent('a1', model => 'm1', tools => ARRAY['now_tool', 'no_such_tool'])$$,
                 '42704', NULL, 'create_agent with an unknown tool raises 42704');
SELECT throws_ok($$SELECT pgagent.create_agent('a1', model => 'm1', persona => 'no_such_persona')$$, '42704', NULL,
                 'create_agent with an unknown persona raises 42704');
SELECT throws_ok($$SELECT pgagent.create_agent('a1', model => 'm1', config => '{"max_steps": 0}')$$, '22023', NULL,
                 'create_agent with max_steps 0 raises 22023');
SELECT throws_ok($$SELECT pgagent.create_agent('a1', model => 'm1', config => '{"max_steps": 101}')$$, '22023', NULL,
                 'create_agent with max_steps 101 raises 22023');
SELECT throws_ok($$SELECT pgagent.create_agent('a1', model => 'm1', config => '{"max_steps": "ten"}')$$, '22023', NULL,
                 'create_agent with a non-numeric max_steps raises 22023');
SELECT throws_ok($$SELECT pgagent.create_agent('a1', model => 'm1', config => '[]')$$, '22023', NULL,
                 'create_agent with a non-object config raises 22023');
SELECT is((SELECT count(*)::int FROM pgagent.agent WHERE tenant_id = pgagent.current_tenant() AND name = 'a1'), 0,
          'no refused agent was stored');
SELECT lives_ok($$SELECT pgagent.create_agent('a1', model => 'm1', tools => ARRAY['now_tool', 'sql_tool'],
                                              persona => 'p1', config => '{"max_steps": 3}')$$,
                'create_agent with a known model, tools and persona works');
SELECT results_eq(
    $$SELECT t.name FROM pgagent.agent_tool x JOIN pgagent.agent a USING (tenant_id, agent_id)
        JOIN pgagent.tool t USING (tenant_id, tool_id)
       WHERE a.tenant_id = pgagent.current_tenant() AND a.name = 'a1' ORDER BY t.name$$,
    $$VALUES ('now_tool'::text), ('sql_tool')$$,
    'the agent got its two tools');

-- ---------------------------------------------------------------- conversations and messages
SELECT throws_ok($$SELECT pgagent.start_conversation('no_such_agent')$$, '42704', NULL,
                 'start_conversation with an unknown agent raises 42704');
SELECT lives_ok($$SELECT pgagent.start_conversation('a1', title => 'api conv')$$, 'start_conversation a1');

CREATE FUNCTION pg_temp.conv() RETURNS bigint LANGUAGE sql AS
  $$ SELECT conversation_id FROM pgagent.conversation WHERE tenant_id = pgagent.current_tenant() AND title = 'api conv' $$;

SELECT throws_ok($$SELECT pgagent.send_message(-1, 'hello')$$, '42704', NULL,
                 'send_message to an unknown conversation raises 42704');
SELECT throws_ok($$SELECT pgagent.send_message(pg_temp.conv(), '')$$, '22023', NULL,
                 'send_message with empty content raises 22023');
SELECT throws_ok($$SELECT pgagent.send_message(pg_temp.conv(), '   ')$$, '22023', NULL,
                 'send_message with blank content raises 22023');
SELECT throws_ok($$SELECT pgagent.send_message(pg_temp.conv(), 'hello', '[1]')$$, '22023', NULL,
                 'send_message with non-object params raises 22023');

-- A queued turn (no LLM involved) blocks new messages in its conversation.
SELECT lives_ok($$SELECT pgagent.enqueue_message(pg_temp.conv(), 'first')$$, 'enqueue_message records a queued turn');
CREATE FUNCTION pg_temp.turn() RETURNS bigint LANGUAGE sql AS
  $$ SELECT turn_id FROM pgagent.turn WHERE tenant_id = pgagent.current_tenant() AND conversation_id = pg_temp.conv()
      AND seq = 1 $$;
SELECT results_eq(
    $$SELECT t.status, s.kind, s.payload ->> 'content' FROM pgagent.turn t
        JOIN pgagent.step s USING (tenant_id, turn_id) WHERE t.turn_id = pg_temp.turn()$$,
    $$VALUES ('queued'::text, 'user_message'::text, 'first'::text)$$,
    'the queued turn has its user_message step');
SELECT throws_ok($$SELECT pgagent.send_message(pg_temp.conv(), 'second')$$, '55000', NULL,
                 'send_message while a turn of the conversation is open raises 55000');
SELECT throws_ok($$SELECT pgagent.enqueue_message(pg_temp.conv(), 'second')$$, '55000', NULL,
                 'enqueue_message while a turn of the conversation is open raises 55000');

-- Error details: the hint of a refused call reaches the client; no bogus hint otherwise.
CREATE FUNCTION pg_temp.error_hint(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE h text;
BEGIN
    EXECUTE sql;
    RETURN '<no error>';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    RETURN h;
END $$;
SELECT matches(pg_temp.error_hint($$SELECT pgagent.send_message(pg_temp.conv(), 'second')$$), 'cancel_turn',
               'the 55000 error of send_message carries its hint (approve, run or cancel the open turn)');
SELECT ok(pg_temp.error_hint($$SELECT pgagent.register_tool('t_bad', 'd', kind => 'shell')$$) NOT IN ('', 'None'),
          'every API error carries a HINT (not empty, not "None")');

-- A conversation of another tenant is unknown here.
SET LOCAL pgagent.tenant = 'default';
SELECT throws_ok(format('SELECT pgagent.send_message(%s, %L)',
                        (SELECT c.conversation_id FROM pgagent.conversation c
                           JOIN pgagent.tenant t USING (tenant_id)
                          WHERE t.name = 'tap_api' AND c.title = 'api conv'), 'hi'),
                 '42704', NULL, 'send_message to a conversation of another tenant raises 42704');
SELECT throws_ok(format('SELECT pgagent.cancel_turn(%s)',
                        (SELECT tr.turn_id FROM pgagent.turn tr JOIN pgagent.tenant t USING (tenant_id)
                          WHERE t.name = 'tap_api')),
                 '42704', NULL, 'cancel_turn of a turn of another tenant raises 42704');
SET LOCAL pgagent.tenant = 'tap_api';

-- ---------------------------------------------------------------- approve_step / process_tool_call / cancel_turn
INSERT INTO pgagent.step (turn_id, seq, kind, payload, tool_call_id, tool_name)
VALUES (pg_temp.turn(), 2, 'tool_call', '{"arguments": {}}', 'call_1', 'now_tool');
CREATE FUNCTION pg_temp.step(integer) RETURNS bigint LANGUAGE sql AS
  $$ SELECT step_id FROM pgagent.step WHERE tenant_id = pgagent.current_tenant() AND turn_id = pg_temp.turn()
      AND seq = $1 $$;

SELECT throws_ok($$SELECT pgagent.approve_step(-1, true)$$, '42704', NULL,
                 'approve_step on a nonexistent step raises 42704');
SELECT throws_ok($$SELECT pgagent.approve_step(pg_temp.step(1), true)$$, '22023', NULL,
                 'approve_step on a user_message step raises 22023');
SELECT throws_ok($$SELECT pgagent.approve_step(pg_temp.step(2), NULL)$$, '22023', NULL,
                 'approve_step with approved NULL raises 22023');
SELECT throws_ok($$SELECT pgagent.approve_step(pg_temp.step(2), true)$$, '55000', NULL,
                 'approve_step on a tool call that needs no approval raises 55000');
SELECT throws_ok($$SELECT pgagent.process_tool_call(-1)$$, '42704', NULL,
                 'process_tool_call on a nonexistent step raises 42704');
SELECT throws_ok($$SELECT pgagent.cancel_turn(-1)$$, '42704', NULL,
                 'cancel_turn of a nonexistent turn raises 42704');
SELECT is((pgagent.cancel_turn(pg_temp.turn(), 'test over')) ->> 'status', 'cancelled',
          'cancel_turn of the queued turn returns status cancelled');
SELECT results_eq(
    $$SELECT status, error, finished_at IS NOT NULL FROM pgagent.turn WHERE turn_id = pg_temp.turn()$$,
    $$VALUES ('cancelled'::text, 'test over'::text, true)$$,
    'the turn is cancelled with the reason as error and a finished_at');
SELECT throws_ok($$SELECT pgagent.cancel_turn(pg_temp.turn())$$, '55000', NULL,
                 'cancel_turn of a finished turn raises 55000');
SELECT throws_ok($$SELECT pgagent.process_tool_call(pg_temp.step(2))$$, '55000', NULL,
                 'process_tool_call in a finished turn raises 55000');

SELECT * FROM finish();
ROLLBACK;
