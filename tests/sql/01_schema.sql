-- pgagent schema: the extension's objects exist, and catalog-wide rules hold for every
-- table, foreign key, view and function in schema pgagent (written generically, so a new
-- object that breaks a rule fails here without editing this file).
BEGIN;
SELECT plan(77);

-- ---------------------------------------------------------------- extension
SELECT has_extension('pgagent', 'extension pgagent is installed');
SELECT has_schema('pgagent', 'schema pgagent exists');
SELECT is((SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pgagent'), '0.2.0',
          'pgagent is at version 0.2.0');
SELECT is((SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
            WHERE e.extname = 'pgagent'), 'pgagent'::name, 'the extension lives in schema pgagent');

-- The control file requires exactly these, and the installed extension depends on them.
SELECT set_eq(
    $$SELECT unnest(requires) FROM pg_catalog.pg_available_extension_versions
       WHERE name = 'pgagent' AND version = '0.2.0'$$,
    ARRAY['plpython3u', 'vector', 'pgcrypto']::name[],
    'pgagent.control requires plpython3u, vector, pgcrypto');
SELECT set_eq(
    $$SELECT r.extname FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_extension e ON e.oid = d.objid
        JOIN pg_catalog.pg_extension r ON r.oid = d.refobjid
       WHERE d.classid = 'pg_catalog.pg_extension'::regclass
         AND d.refclassid = 'pg_catalog.pg_extension'::regclass
         AND e.extname = 'pgagent'$$,
    ARRAY['plpython3u', 'vector', 'pgcrypto']::name[],
    'installed pgagent depends on the extensions plpython3u, vector, pgcrypto');

-- ---------------------------------------------------------------- tables
SELECT has_table('pgagent', 'tenant', 'table pgagent.tenant exists');
SELECT has_table('pgagent', 'model', 'table pgagent.model exists');
SELECT has_table('pgagent', 'persona', 'table pgagent.persona exists');
SELECT has_table('pgagent', 'tool', 'table pgagent.tool exists');
SELECT has_table('pgagent', 'agent', 'table pgagent.agent exists');
SELECT has_table('pgagent', 'agent_tool', 'table pgagent.agent_tool exists');
SELECT has_table('pgagent', 'conversation', 'table pgagent.conversation exists');
SELECT has_table('pgagent', 'turn', 'table pgagent.turn exists');
SELECT has_table('pgagent', 'step', 'table pgagent.step exists');

SELECT is((SELECT name FROM pgagent.tenant WHERE tenant_id = '00000000-0000-0000-0000-000000000000'),
          'default', 'the default tenant (all-zero uuid) is created by the extension');
SELECT is(pgagent.default_tenant_id(), '00000000-0000-0000-0000-000000000000'::uuid,
          'default_tenant_id() is the all-zero uuid');
SELECT is(pgagent.current_tenant(), pgagent.default_tenant_id(),
          'current_tenant() is the default tenant when pgagent.tenant is not set');

-- ---------------------------------------------------------------- views
SELECT has_view('pgagent', 'turn_timeline', 'view pgagent.turn_timeline exists');
SELECT has_view('pgagent', 'pending_approvals', 'view pgagent.pending_approvals exists');
SELECT has_view('pgagent', 'turn_summary', 'view pgagent.turn_summary exists');
SELECT has_view('pgagent', 'agent_stats', 'view pgagent.agent_stats exists');

-- ---------------------------------------------------------------- functions (with signatures)
SELECT has_function('pgagent', 'default_tenant_id', ARRAY[]::name[], 'pgagent.default_tenant_id()');
SELECT has_function('pgagent', 'current_tenant', ARRAY[]::name[], 'pgagent.current_tenant()');
SELECT has_function('pgagent', '_load', ARRAY[]::name[], 'pgagent._load()');
SELECT has_function('pgagent', 'register_model',
    ARRAY['text', 'text', 'text', 'text', 'text', 'jsonb', 'text', 'numeric', 'numeric',
          'integer', 'integer', 'integer', 'boolean', 'text', 'text'],
    'pgagent.register_model(name, base_url, model_name, provider, secret_name, params, tool_mode, input_usd_per_mtok, output_usd_per_mtok, context_window, timeout_ms, max_retries, is_default, kind, preset)');
SELECT has_function('pgagent', 'create_persona', ARRAY['text', 'text', 'jsonb', 'jsonb'],
    'pgagent.create_persona(text, text, jsonb, jsonb)');
SELECT has_function('pgagent', 'register_tool',
    ARRAY['text', 'text', 'jsonb', 'text', 'jsonb', 'boolean', 'integer'],
    'pgagent.register_tool(text, text, jsonb, text, jsonb, boolean, integer)');
SELECT has_function('pgagent', 'create_agent', ARRAY['text', 'text', 'text[]', 'text', 'text', 'jsonb'],
    'pgagent.create_agent(text, text, text[], text, text, jsonb)');
SELECT has_function('pgagent', 'start_conversation', ARRAY['text', 'text', 'jsonb', 'text'],
    'pgagent.start_conversation(text, text, jsonb, text)');
SELECT has_function('pgagent', 'send_message', ARRAY['bigint', 'text', 'jsonb'],
    'pgagent.send_message(bigint, text, jsonb)');
SELECT has_function('pgagent', 'enqueue_message', ARRAY['bigint', 'text', 'jsonb'],
    'pgagent.enqueue_message(bigint, text, jsonb)');
SELECT has_function('pgagent', 'run_turn', ARRAY['bigint', 'jsonb'], 'pgagent.run_turn(bigint, INOUT jsonb)');
SELECT is_procedure('pgagent', 'run_turn', ARRAY['bigint', 'jsonb'], 'pgagent.run_turn is a procedure');
SELECT has_function('pgagent', 'approve_step', ARRAY['bigint', 'boolean', 'text'],
    'pgagent.approve_step(bigint, boolean, text)');
SELECT has_function('pgagent', 'process_tool_call', ARRAY['bigint', 'boolean'],
    'pgagent.process_tool_call(bigint, boolean)');
SELECT has_function('pgagent', 'cancel_turn', ARRAY['bigint', 'text'], 'pgagent.cancel_turn(bigint, text)');
SELECT has_function('pgagent', 'turn_guard', ARRAY[]::name[], 'pgagent.turn_guard()');
SELECT has_function('pgagent', 'turn_insert_guard', ARRAY[]::name[], 'pgagent.turn_insert_guard()');
SELECT has_function('pgagent', 'step_append_only', ARRAY[]::name[], 'pgagent.step_append_only()');
SELECT has_function('pgagent', 'step_chain', ARRAY[]::name[], 'pgagent.step_chain()');
SELECT hasnt_function('pgagent', 'step_insert_guard', ARRAY[]::name[], 'step_insert_guard is merged into step_chain (0.2.0)');

SELECT function_returns('pgagent', 'register_model',
    ARRAY['text', 'text', 'text', 'text', 'text', 'jsonb', 'text', 'numeric', 'numeric',
          'integer', 'integer', 'integer', 'boolean', 'text', 'text'], 'bigint', 'register_model returns bigint');
SELECT function_returns('pgagent', 'create_agent', ARRAY['text', 'text', 'text[]', 'text', 'text', 'jsonb'],
    'bigint', 'create_agent returns bigint');
SELECT function_returns('pgagent', 'send_message', ARRAY['bigint', 'text', 'jsonb'], 'jsonb',
    'send_message returns jsonb');
SELECT function_returns('pgagent', 'approve_step', ARRAY['bigint', 'boolean', 'text'], 'jsonb',
    'approve_step returns jsonb');
SELECT function_returns('pgagent', 'current_tenant', ARRAY[]::name[], 'uuid', 'current_tenant returns uuid');
SELECT volatility_is('pgagent', 'current_tenant', ARRAY[]::name[], 'stable', 'current_tenant() is STABLE');

-- ---------------------------------------------------------------- triggers
SELECT has_trigger('pgagent', 'turn', 'turn_guard', 'trigger turn_guard on pgagent.turn');
SELECT has_trigger('pgagent', 'turn', 'turn_insert_guard', 'trigger turn_insert_guard on pgagent.turn');
SELECT has_trigger('pgagent', 'step', 'step_no_update_delete', 'trigger step_no_update_delete on pgagent.step');
SELECT has_trigger('pgagent', 'step', 'step_no_truncate', 'trigger step_no_truncate on pgagent.step');
SELECT has_trigger('pgagent', 'step', 'step_chain', 'trigger step_chain on pgagent.step');
SELECT is((SELECT count(*)::int FROM pg_catalog.pg_trigger WHERE tgrelid = 'pgagent.step'::regclass AND NOT tgisinternal
             AND (tgtype & 2) = 2 AND (tgtype & 4) = 4), 1, 'one BEFORE INSERT trigger on pgagent.step');
SELECT is_empty($$
    SELECT c.relname || '.' || t.tgname FROM pg_catalog.pg_trigger t
      JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'pgagent' AND NOT t.tgisinternal AND t.tgenabled <> 'O'$$,
    'every pgagent trigger is enabled (origin)');

-- ---------------------------------------------------------------- generic: tables and keys
SELECT cmp_ok((SELECT count(*)::int FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'pgagent' AND c.relkind IN ('r', 'p')), '>=', 9,
              'the generic checks below see at least the 9 pgagent tables');

SELECT is_empty($$
    SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'pgagent' AND c.relkind IN ('r', 'p')
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)$$,
    'every pgagent table has a tenant_id column');

SELECT is_empty($$
    SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
     WHERE n.nspname = 'pgagent' AND c.relkind IN ('r', 'p')
       AND (NOT a.attnotnull OR a.atttypid <> 'uuid'::regtype)$$,
    'every pgagent table''s tenant_id is uuid NOT NULL');

SELECT is_empty($$
    SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'pgagent' AND c.relkind IN ('r', 'p')
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k
                         JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attname = 'tenant_id'
                        WHERE k.conrelid = c.oid AND k.contype = 'p' AND a.attnum = ANY (k.conkey))$$,
    'every pgagent table has a primary key that includes tenant_id');

SELECT is_empty($$
    SELECT c.relname || ' (' || ic.relname || ')'
      FROM pg_catalog.pg_index i
      JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
     WHERE n.nspname = 'pgagent' AND i.indisunique AND c.oid <> 'pgagent.tenant'::regclass
       AND NOT a.attnum = ANY (i.indkey::int2[])$$,
    'every unique index on a tenant-owned pgagent table includes tenant_id');

SELECT cmp_ok((SELECT count(*)::int FROM pg_catalog.pg_constraint k
                 JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'pgagent' AND k.contype = 'f'), '>=', 10,
              'the foreign key check below sees the pgagent foreign keys');

-- Every FK from a pgagent table to a pgagent table maps tenant_id to the referenced tenant_id.
SELECT is_empty($$
    SELECT k.conrelid::regclass::text || ' ' || k.conname
      FROM pg_catalog.pg_constraint k
      JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_catalog.pg_class rc ON rc.oid = k.confrelid
      JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
     WHERE k.contype = 'f' AND n.nspname = 'pgagent' AND rn.nspname = 'pgagent'
       AND NOT EXISTS (
           SELECT 1 FROM unnest(k.conkey, k.confkey) AS m(src, dst)
             JOIN pg_catalog.pg_attribute sa ON sa.attrelid = k.conrelid AND sa.attnum = m.src
             JOIN pg_catalog.pg_attribute da ON da.attrelid = k.confrelid AND da.attnum = m.dst
            WHERE sa.attname = 'tenant_id' AND da.attname = 'tenant_id')$$,
    'every foreign key between pgagent tables includes tenant_id = tenant_id');

SELECT is_empty($$
    SELECT k.conrelid::regclass::text || ' ' || k.conname
      FROM pg_catalog.pg_constraint k
      JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      JOIN pg_catalog.pg_class rc ON rc.oid = k.confrelid
      JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
     WHERE k.contype = 'f' AND n.nspname = 'pgagent' AND rn.nspname <> 'pgagent'$$,
    'no pgagent table has a foreign key to a table outside schema pgagent');

-- ---------------------------------------------------------------- generic: views
SELECT cmp_ok((SELECT count(*)::int FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'pgagent' AND c.relkind = 'v'), '>=', 4,
              'the view check below sees at least the 4 pgagent views');
SELECT is_empty($$
    SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'pgagent' AND c.relkind IN ('v', 'm')
       AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(c.reloptions, '{}')) o
                        WHERE lower(split_part(o, '=', 1)) = 'security_invoker'
                          AND lower(split_part(o, '=', 2)) IN ('true', 'on', 'yes', '1'))$$,
    'every pgagent view is security_invoker');

-- ---------------------------------------------------------------- generic: comments
SELECT is_empty($$
    SELECT c.relname || ' (' || c.relkind::text || ')' FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'pgagent' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
       AND coalesce(obj_description(c.oid, 'pg_class'), '') = ''$$,
    'every pgagent table and view has a COMMENT');

SELECT cmp_ok((SELECT count(*)::int FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = 'pgagent'), '>=', 18,
              'the function comment check sees at least the 18 pgagent functions and procedures');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'pgagent'
       AND coalesce(obj_description(p.oid, 'pg_proc'), '') = ''$$,
    'every pgagent function and procedure has a COMMENT');

-- ---------------------------------------------------------------- generic: extension membership
SELECT is_empty($$
    SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'pgagent' AND c.relkind IN ('r', 'p', 'v', 'm')
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                          AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
                          AND e.extname = 'pgagent')$$,
    'every pgagent table and view belongs to the extension');
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'pgagent'
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                        WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
                          AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
                          AND e.extname = 'pgagent')$$,
    'every pgagent function belongs to the extension');

-- Tables hold user data, so pg_dump must dump them (pg_extension_config_dump).
SELECT is_empty($$
    SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'pgagent' AND c.relkind IN ('r', 'p')
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e
                        WHERE e.extname = 'pgagent' AND c.oid = ANY (e.extconfig))$$,
    'every pgagent table is registered with pg_extension_config_dump');

-- ---------------------------------------------------------------- generic: search_path of functions
-- Functions of a superuser-only extension must not resolve names through the caller's
-- search_path (except the procedure run_turn, which cannot SET search_path while it commits).
-- The exceptions are hot helpers without a SET clause so that they can be inlined or at least
-- not planned again in every transaction; their bodies qualify every name, operator and type.
SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'pgagent' AND p.prokind = 'f'
       AND NOT EXISTS (SELECT 1 FROM unnest(coalesce(p.proconfig, '{}')) o WHERE o LIKE 'search_path=%')
       AND p.oid::regprocedure::text NOT IN ('pgagent.default_tenant_id()', 'pgagent._outer_user()',
             'pgagent._outer_is_member(name)', 'pgagent._is_member(name)', 'pgagent._step_hash(pgagent.step)',
             'pgagent._audit_hash(pgagent.audit_event)')$$,
    'every pgagent function (except a few fully qualified hot helpers) pins its search_path');
SELECT is_empty($$
    SELECT p.proname FROM pg_catalog.pg_proc p
     WHERE p.pronamespace = 'pgagent'::regnamespace AND p.proconfig IS NULL
       AND p.proname IN ('_outer_user', '_outer_is_member', '_is_member', '_step_hash', '_audit_hash')
       AND p.prosrc ~ '\s(=|\|\||<>|::(text|name|bytea))\s'$$,
    'the helpers without a pinned search_path use only schema-qualified operators and types');

-- Spot-check a few columns the other test files rely on.
SELECT col_is_pk('pgagent', 'step', ARRAY['tenant_id', 'step_id'], 'pgagent.step PK is (tenant_id, step_id)');
SELECT col_is_pk('pgagent', 'turn', ARRAY['tenant_id', 'turn_id'], 'pgagent.turn PK is (tenant_id, turn_id)');
SELECT col_default_is('pgagent', 'turn', 'status', 'queued', 'a turn starts queued by default');
SELECT col_type_is('pgagent', 'step', 'payload', 'jsonb', 'pgagent.step.payload is jsonb');

SELECT * FROM finish();
ROLLBACK;
