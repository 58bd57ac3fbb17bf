-- Monitoring views and analytics functions (issue 8): their columns, security_invoker, grants,
-- and bad input refused with documented SQLSTATEs.
BEGIN;
SELECT plan(32);

SELECT is_empty($$
    SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'pgagent' AND c.relkind = 'v'
       AND NOT coalesce('security_invoker=true' = ANY (c.reloptions), false)$$,
    'every pgagent view is security_invoker (row level security applies to the caller)');

SELECT columns_are('pgagent', 'realtime_steps', ARRAY['tenant_id', 'created_at', 'age_s', 'agent', 'conversation_id',
    'turn_id', 'turn_status', 'step_id', 'seq', 'kind', 'tool_name', 'summary', 'latency_ms', 'created_by'],
    'realtime_steps columns');
SELECT columns_are('pgagent', 'tool_call_queue', ARRAY['tenant_id', 'step_id', 'turn_id', 'conversation_id', 'agent',
    'tool_name', 'tool_call_id', 'arguments', 'state', 'approval', 'decided_by', 'note', 'decided_at', 'result_step_id',
    'error', 'run_ms', 'wait_s', 'turn_status', 'created_at'], 'tool_call_queue columns');
SELECT columns_are('pgagent', 'thinking_trace', ARRAY['tenant_id', 'turn_id', 'conversation_id', 'agent', 'step_id',
    'seq', 'source', 'content', 'chars', 'model', 'created_at'], 'thinking_trace columns');
SELECT columns_are('pgagent', 'conversation_timeline', ARRAY['tenant_id', 'conversation_id', 'agent', 'created_at',
    'source', 'turn_id', 'turn_seq', 'turn_status', 'step_id', 'seq', 'intervention_id', 'kind', 'tool_name', 'summary',
    'prompt_tokens', 'completion_tokens', 'cost_usd', 'latency_ms', 'created_by'], 'conversation_timeline columns');
SELECT columns_are('pgagent', 'dashboard_overview', ARRAY['tenant_id', 'tenant', 'queued', 'running',
    'awaiting_approval', 'paused', 'approvals_waiting', 'oldest_wait_s', 'turns_1h', 'errors_1h', 'tokens_1h',
    'cost_usd_1h', 'turns_24h', 'errors_24h', 'tokens_24h', 'cost_usd_24h', 'error_rate_pct_24h', 'p50_turn_ms_24h',
    'p95_turn_ms_24h', 'open_flags'], 'dashboard_overview columns');
SELECT columns_are('pgagent', 'flagged_issues', ARRAY['tenant_id', 'flag_id', 'status', 'category', 'note', 'turn_id',
    'step_id', 'conversation_id', 'agent', 'turn_status', 'user_message', 'answer', 'created_by', 'created_at',
    'open_s', 'resolved_by', 'resolved_at', 'resolution'], 'flagged_issues columns');

SELECT columns_are('pgagent', 'queue_status', ARRAY['tenant_id', 'agent', 'queued', 'running', 'retrying',
    'awaiting_approval', 'paused', 'oldest_queued_at', 'oldest_wait_s', 'leased'], 'queue_status columns');

SELECT ok(pg_catalog.has_table_privilege('pgagent_viewer', 'pgagent.' || v, 'SELECT')
          AND NOT pg_catalog.has_table_privilege('public', 'pgagent.' || v, 'SELECT'),
          'viewers (not PUBLIC) read pgagent.' || v)
  FROM unnest(ARRAY['realtime_steps', 'tool_call_queue', 'thinking_trace', 'conversation_timeline',
                    'dashboard_overview', 'flagged_issues', 'queue_status']) AS v;

SELECT ok(NOT p.prosecdef AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)
          AND pg_catalog.has_function_privilege('pgagent_viewer', p.oid, 'EXECUTE'),
          p.oid::regprocedure || ' runs as the caller, with search_path pinned, for viewers')
  FROM pg_catalog.pg_proc p
 WHERE p.oid IN ('pgagent.agent_analytics(text,integer)'::regprocedure, 'pgagent.hourly_activity(integer)'::regprocedure,
                 'pgagent.tool_usage(integer)'::regprocedure);

INSERT INTO pgagent.tenant (name) VALUES ('tap_monitor');
SET LOCAL pgagent.tenant = 'tap_monitor';
SELECT pgagent.register_model('m', base_url => 'http://127.0.0.1:9/v1', is_default => true);
SELECT pgagent.create_agent('watched');

SELECT throws_ok($$SELECT pgagent.agent_analytics(NULL)$$, '22023', NULL, 'agent_analytics(NULL) raises 22023');
SELECT throws_ok($$SELECT pgagent.agent_analytics('no_such_agent')$$, '42704', NULL,
                 'agent_analytics of an unknown agent raises 42704');
SELECT throws_ok($$SELECT pgagent.agent_analytics('watched', days => 0)$$, '22023', NULL, 'days => 0 raises 22023');
SELECT throws_ok($$SELECT * FROM pgagent.hourly_activity(NULL)$$, '22023', NULL, 'hourly_activity(NULL) raises 22023');
SELECT throws_ok($$SELECT * FROM pgagent.tool_usage(3661)$$, '22023', NULL, 'tool_usage(3661) raises 22023');
SELECT is((pgagent.agent_analytics('watched') ->> 'turns')::int, 0, 'agent_analytics of an idle agent: 0 turns');
SELECT is((SELECT count(*)::int FROM pgagent.hourly_activity(2)), 49, 'hourly_activity(2): one row per hour, 49 hours');

-- Only the primary key (and partial or unique indexes) may lead with tenant_id on turn,
-- conversation and step: a generic plan made before statistics exist would otherwise pick such an
-- index for the loop's (tenant_id, turn_id) and foreign-key lookups and scan every row of the tenant.
SELECT is_empty($$
    SELECT i.indexrelid::regclass::text FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
     WHERE i.indrelid IN ('pgagent.turn'::regclass, 'pgagent.conversation'::regclass, 'pgagent.step'::regclass)
       AND a.attname = 'tenant_id' AND NOT i.indisprimary AND i.indpred IS NULL$$,
    'no index of turn, conversation or step but the primary key and partial ones leads with tenant_id');

-- events (35_events.sql)
SELECT ok(NOT p.prosecdef AND 'search_path=pg_catalog, pg_temp' = ANY (p.proconfig)
          AND pg_catalog.has_function_privilege('pgagent_viewer', p.oid, 'EXECUTE'),
          'event_channel runs as the caller (row level security on tenant decides), for viewers')
  FROM pg_catalog.pg_proc p WHERE p.oid = 'pgagent.event_channel(text)'::regprocedure;
SELECT ok(NOT pg_catalog.has_function_privilege('pgagent_admin', f, 'EXECUTE'), f || ' is internal')
  FROM unnest(ARRAY['pgagent.turn_event()', 'pgagent.step_chain()', 'pgagent.turn_rollup()']) AS f;
SELECT matches(pgagent.event_channel(), '^pgagent_events_[0-9a-f]{32}$', 'the channel names the unguessable key');
SELECT throws_ok($$SELECT pgagent.event_channel('no_such_tenant')$$, '42704', NULL,
                 'event_channel of an unknown tenant raises 42704');

SELECT * FROM finish();
ROLLBACK;
