-- The operating API (issue 8): who may call each function (grants), and bad input refused
-- with documented SQLSTATEs (NULLs, unknown ids, other tenants' ids). No LLM is called here.
BEGIN;
SELECT plan(60);

-- ---------------------------------------------------------------- grants
-- operator functions: operator and admin (who inherits operator) may execute; user and viewer not
SELECT ok(pg_catalog.has_function_privilege('pgagent_operator', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_user', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_viewer', f, 'EXECUTE')
          AND pg_catalog.has_function_privilege('pgagent_admin', f, 'EXECUTE'),
          f || ' is for operators (and admins) only')
  FROM unnest(ARRAY['pgagent.bulk_approve(bigint[],text,text,boolean,text,boolean)',
                    'pgagent.inject_message(bigint,text,text)', 'pgagent.override_response(bigint,text,text)',
                    'pgagent.pause_conversation(bigint,text)', 'pgagent.resume_conversation(bigint)',
                    'pgagent.retry_turn(bigint,boolean)', 'pgagent.fork_conversation(bigint,bigint,text,text)',
                    'pgagent.resolve_issue(bigint,text)']) AS f;
-- users rate and flag (their own turns; checked by the function)
SELECT ok(pg_catalog.has_function_privilege('pgagent_user', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_viewer', f, 'EXECUTE'),
          f || ' is for users and up')
  FROM unnest(ARRAY['pgagent.rate_turn(bigint,integer,text,boolean)',
                    'pgagent.flag_issue(bigint,bigint,text,text)']) AS f;
-- budgets and hooks: admins only
SELECT ok(pg_catalog.has_function_privilege('pgagent_admin', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_operator', f, 'EXECUTE'),
          f || ' is for admins only')
  FROM unnest(ARRAY['pgagent.set_budget(text,text,numeric,bigint,integer,text,name)',
                    'pgagent.delete_budget(bigint)', 'pgagent.add_hook(text,regprocedure,text,name,integer)',
                    'pgagent.delete_hook(bigint)']) AS f;
SELECT ok(pg_catalog.has_table_privilege('pgagent_viewer', 'pgagent.budget_status', 'SELECT'),
          'viewers read budget_status');
SELECT ok(NOT pg_catalog.has_table_privilege('pgagent_admin', 'pgagent.' || t, p),
          'no role writes pgagent.' || t || ' directly (' || p || ')')
  FROM unnest(ARRAY['budget', 'budget_usage', 'budget_hold', 'hook', 'intervention', 'rating', 'flag',
                    'agent_daily']) AS t,
       unnest(ARRAY['INSERT', 'UPDATE', 'DELETE']) AS p
 WHERE t IN ('budget', 'hook', 'agent_daily') OR p = 'INSERT';
SELECT is((SELECT array_agg(DISTINCT x) FROM (
             SELECT (SELECT option_value FROM pg_catalog.pg_options_to_table(c.reloptions)
                      WHERE option_name = 'security_invoker') AS x
               FROM pg_catalog.pg_class c WHERE c.oid = 'pgagent.budget_status'::regclass) s),
          ARRAY['true'], 'budget_status is security_invoker');

-- ---------------------------------------------------------------- a tenant with one turn
INSERT INTO pgagent.tenant (name) VALUES ('tap_ops'), ('tap_ops_other');
SET LOCAL pgagent.tenant = 'tap_ops_other';
SELECT pgagent.register_model('m', base_url => 'http://127.0.0.1:9/v1', is_default => true);
SELECT pgagent.create_agent('other_agent');
CREATE TEMP TABLE other_ids AS
SELECT pgagent.start_conversation('other_agent') AS conversation;
ALTER TABLE other_ids ADD COLUMN turn bigint;
UPDATE other_ids SET turn = pgagent.enqueue_message(conversation, 'theirs');
SET LOCAL pgagent.tenant = 'tap_ops';
SELECT pgagent.register_model('m', base_url => 'http://127.0.0.1:9/v1', is_default => true);
SELECT pgagent.create_agent('a');
CREATE TEMP TABLE ids AS SELECT pgagent.start_conversation('a') AS conversation;
ALTER TABLE ids ADD COLUMN turn bigint;
UPDATE ids SET turn = pgagent.enqueue_message(conversation, 'mine');

-- ---------------------------------------------------------------- bad input
SELECT throws_ok($$SELECT pgagent.inject_message(NULL, 'x')$$, '22023', NULL, 'inject_message: NULL conversation');
SELECT throws_ok($$SELECT pgagent.inject_message((SELECT conversation FROM ids), NULL)$$, '22023', NULL,
                 'inject_message: NULL content');
SELECT throws_ok($$SELECT pgagent.inject_message((SELECT conversation FROM ids), 'x', role => 'tool')$$, '22023',
                 NULL, 'inject_message: role tool');
SELECT throws_ok($$SELECT pgagent.inject_message((SELECT conversation FROM other_ids), 'x')$$, '42704', NULL,
                 'inject_message: another tenant''s conversation looks unknown');
SELECT throws_ok($$SELECT pgagent.override_response((SELECT turn FROM ids), 'x', 'y')$$, '55000', NULL,
                 'override_response: a queued turn has no answer to override');
SELECT throws_ok($$SELECT pgagent.override_response((SELECT turn FROM other_ids), 'x', 'y')$$, '42704', NULL,
                 'override_response: another tenant''s turn');
SELECT throws_ok($$SELECT pgagent.override_response(NULL, 'x', 'y')$$, '22023', NULL, 'override_response: NULL turn');
SELECT throws_ok($$SELECT pgagent.pause_conversation(424242)$$, '42704', NULL, 'pause_conversation: unknown id');
SELECT throws_ok($$SELECT pgagent.resume_conversation((SELECT conversation FROM ids))$$, '55000', NULL,
                 'resume_conversation: not paused');
SELECT throws_ok($$SELECT pgagent.retry_turn((SELECT turn FROM ids))$$, '55000', NULL, 'retry_turn: not failed');
SELECT throws_ok($$SELECT pgagent.retry_turn((SELECT turn FROM other_ids))$$, '42704', NULL,
                 'retry_turn: another tenant''s turn');
SELECT throws_ok($$SELECT pgagent.fork_conversation((SELECT conversation FROM other_ids), 1)$$, '42704', NULL,
                 'fork_conversation: another tenant''s conversation');
SELECT throws_ok($$SELECT pgagent.rate_turn((SELECT turn FROM ids), 6)$$, '22023', NULL, 'rate_turn: rating 6');
SELECT throws_ok($$SELECT pgagent.rate_turn((SELECT turn FROM ids))$$, '22023', NULL, 'rate_turn: neither rating nor thumbs');
SELECT throws_ok($$SELECT pgagent.rate_turn((SELECT turn FROM other_ids), 5)$$, '42704', NULL,
                 'rate_turn: another tenant''s turn');
SELECT throws_ok($$SELECT pgagent.flag_issue((SELECT turn FROM ids), category => 'Bad Category!')$$, '22023', NULL,
                 'flag_issue: a category that is not a slug');
SELECT throws_ok($$SELECT pgagent.resolve_issue(NULL, 'x')$$, '22023', NULL, 'resolve_issue: NULL flag');
SELECT throws_ok($$SELECT pgagent.bulk_approve()$$, '22023', NULL, 'bulk_approve: neither ids nor a filter');
SELECT throws_ok($$SELECT pgagent.bulk_approve(ARRAY[424242]::bigint[])$$, '42704', NULL, 'bulk_approve: unknown step');
SELECT throws_ok($$SELECT pgagent.set_budget()$$, '22023', NULL, 'set_budget: no limit');
SELECT throws_ok($$SELECT pgagent.set_budget(scope => 'agent', agent => 'other_agent', max_turns => 1)$$, '42704', NULL,
                 'set_budget: another tenant''s agent');
SELECT throws_ok($$SELECT pgagent.set_budget(max_tokens => -5)$$, '22023', NULL, 'set_budget: negative limit');
SELECT throws_ok($$SELECT pgagent.delete_budget(424242)$$, '42704', NULL, 'delete_budget: unknown id');
SELECT throws_ok($$SELECT pgagent.add_hook('sometime', 'pg_catalog.jsonb_typeof(jsonb)')$$, '22023', NULL,
                 'add_hook: unknown event');
SELECT throws_ok($$SELECT pgagent.add_hook('after_response', 'pg_catalog.jsonb_typeof(jsonb)')$$, '22023', NULL,
                 'add_hook: a function that does not return jsonb');
SELECT throws_ok($$SELECT pgagent.delete_hook(424242)$$, '42704', NULL, 'delete_hook: unknown id');

-- ---------------------------------------------------------------- and what works
CREATE TEMP TABLE b AS SELECT pgagent.set_budget(max_turns => 10, period => 'day') AS budget_id;
SELECT is((SELECT budget_id FROM b),
          (SELECT budget_id FROM pgagent.budget WHERE tenant_id = pgagent.current_tenant() AND period = 'day'),
          'set_budget returns the budget_id');
SELECT results_eq($$SELECT scope, period, max_turns, turns, remaining_turns, exhausted FROM pgagent.budget_status$$,
                   $$VALUES ('tenant', 'day', 10, 0, 10::bigint, false)$$,
                   'budget_status shows the new budget with nothing spent');
SELECT is(pgagent.pause_conversation((SELECT conversation FROM ids), 'maintenance') -> 'paused_turns',
          pg_catalog.jsonb_build_array((SELECT turn FROM ids)),
          'pause_conversation parks the queued turn');
SELECT is((SELECT status FROM pgagent.turn WHERE turn_id = (SELECT turn FROM ids)), 'paused', 'the turn is paused');

SELECT * FROM finish();
ROLLBACK;
