-- pgagent catalog documentation: the schema, every table and view, every column of them and
-- every function and procedure in schema pgagent has a COMMENT. Written generically: a new
-- object without a comment fails here, and the failure lists the missing objects by name.
-- Also pins the documentation and view drift fixed in sql/50_views.sql and sql/90_comments.sql.
BEGIN;
SELECT plan(20);

-- ---------------------------------------------------------------- the generic checks see something
SELECT cmp_ok((SELECT count(*)::int FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'pgagent' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')), '>=', 18,
              'the comment checks see at least the 14 pgagent tables and 4 views');
SELECT cmp_ok((SELECT count(*)::int FROM pg_catalog.pg_attribute a
                 JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'pgagent' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
                  AND a.attnum > 0 AND NOT a.attisdropped), '>=', 150,
              'the column comment check sees at least 150 pgagent table and view columns');

-- ---------------------------------------------------------------- comments everywhere
SELECT is((SELECT coalesce(array_agg(n.nspname::text), '{}') FROM pg_catalog.pg_namespace n
            WHERE n.nspname = 'pgagent' AND btrim(coalesce(obj_description(n.oid, 'pg_namespace'), '')) = ''),
          '{}'::text[],
          'schema pgagent has a COMMENT');

SELECT is((SELECT coalesce(array_agg(c.relname::text || ' (' || c.relkind::text || ')' ORDER BY c.relname), '{}')
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'pgagent' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
              AND btrim(coalesce(obj_description(c.oid, 'pg_class'), '')) = ''),
          '{}'::text[],
          'every pgagent table and view has a COMMENT (lists those without)');

SELECT is((SELECT coalesce(array_agg(c.relname::text || '.' || a.attname::text ORDER BY c.relname, a.attnum), '{}')
             FROM pg_catalog.pg_attribute a
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'pgagent' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
              AND a.attnum > 0 AND NOT a.attisdropped
              AND btrim(coalesce(col_description(c.oid, a.attnum), '')) = ''),
          '{}'::text[],
          'every column of every pgagent table and view has a COMMENT (lists those without)');

SELECT is((SELECT coalesce(array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text), '{}')
             FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'pgagent'
              AND btrim(coalesce(obj_description(p.oid, 'pg_proc'), '')) = ''),
          '{}'::text[],
          'every pgagent function and procedure has a COMMENT (lists those without)');

-- ---------------------------------------------------------------- drift: views
SELECT matches(pg_catalog.pg_get_viewdef('pgagent.pending_approvals'::regclass),
               'ORDER BY\s+\w+\.created_at,\s*\w+\.step_id',
               'pending_approvals is ordered by created_at, step_id as its comment promises');

SELECT has_column('pgagent', 'agent_stats', 'cancelled', 'agent_stats counts cancelled turns');
SELECT has_column('pgagent', 'agent_stats', 'running', 'agent_stats counts running turns');
SELECT has_column('pgagent', 'agent_stats', 'queued', 'agent_stats counts queued turns');
SELECT has_column('pgagent', 'agent_stats', 'enabled', 'agent_stats shows whether the agent is enabled');

-- New columns are appended: the columns existing queries select by position keep their places.
SELECT is((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = 'pgagent.agent_stats'::regclass AND a.attnum BETWEEN 1 AND 13),
          ARRAY['tenant_id', 'agent_id', 'agent', 'model', 'turns', 'completed', 'failed', 'awaiting_approval',
                'llm_calls', 'prompt_tokens', 'completion_tokens', 'cost_usd', 'avg_turn_ms'],
          'agent_stats keeps its original columns first, in their original order');
SELECT is((SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_catalog.pg_attribute a
            WHERE a.attrelid = 'pgagent.pending_approvals'::regclass AND a.attnum BETWEEN 1 AND 10),
          ARRAY['tenant_id', 'step_id', 'turn_id', 'conversation_id', 'agent', 'tool_name', 'arguments',
                'user_message', 'created_at', 'waiting_s'],
          'pending_approvals keeps its original columns first, in their original order');

SELECT has_column('pgagent', 'turn_timeline', 'user_id', 'turn_timeline shows the conversation''s user_id');
SELECT has_column('pgagent', 'pending_approvals', 'user_id', 'pending_approvals shows the conversation''s user_id');
SELECT has_column('pgagent', 'turn_summary', 'user_id', 'turn_summary shows the conversation''s user_id');

-- An invalid tool call (arguments JSON null) is summarized from raw_arguments, not as "null".
SELECT matches(pg_catalog.pg_get_viewdef('pgagent.turn_timeline'::regclass), 'raw_arguments',
               'turn_timeline summarizes a tool call from raw_arguments when its arguments are invalid');

-- ---------------------------------------------------------------- drift: table comments
SELECT matches(obj_description('pgagent.tool'::regclass, 'pg_class'), '\mhttp\M',
               'the tool table comment lists the http kind');
SELECT matches(obj_description('pgagent.tool'::regclass, 'pg_class'), '\msql\M.*\mfunction\M.*\mhttp\M',
               'the tool table comment lists the kinds sql, function and http');
SELECT doesnt_match(obj_description('pgagent.audit_event'::regclass, 'pg_class'), 'secret_read|set/read',
                    'the audit_event comment promises no secret-read events (none are written)');

SELECT * FROM finish();
ROLLBACK;
