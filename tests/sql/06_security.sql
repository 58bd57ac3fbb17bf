-- pgagent security: row level security on every table, pinned search_path on every SECURITY
-- DEFINER function, no function executable by PUBLIC, the group roles exist.
BEGIN;
SELECT plan(8);

SELECT is_empty($$
    SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'pgagent' AND c.relkind IN ('r', 'p')
       AND NOT (c.relrowsecurity AND c.relforcerowsecurity)$$,
    'every pgagent table has row level security enabled and forced');

SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
     WHERE n.nspname = 'pgagent' AND p.prosecdef
       AND NOT 'search_path=pg_catalog, pg_temp' = ANY (coalesce(p.proconfig, '{}'))$$,
    'every SECURITY DEFINER function in pgagent pins search_path=pg_catalog, pg_temp');

SELECT is_empty($$
    SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
      JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'pgagent'
     WHERE EXISTS (SELECT 1 FROM pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
                    WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE')$$,
    'no pgagent function or procedure is executable by PUBLIC');

SELECT ok(NOT pg_catalog.has_schema_privilege('public', 'pgagent', 'USAGE'), 'PUBLIC has no USAGE on schema pgagent');
SELECT ok(NOT pg_catalog.has_schema_privilege('pgagent_sandbox', 'pgagent', 'USAGE'),
          'pgagent_sandbox has no USAGE on schema pgagent');

SELECT set_eq($$SELECT rolname::text FROM pg_catalog.pg_roles WHERE rolname LIKE 'pgagent\_%' AND NOT rolcanlogin$$,
              ARRAY['pgagent_viewer', 'pgagent_user', 'pgagent_operator', 'pgagent_admin', 'pgagent_sandbox',
                    'pgagent_gateway'],
              'the NOLOGIN group roles exist');

SELECT is_empty($$
    SELECT c.relname || ' ' || r.rolname || ' ' || p.priv FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      CROSS JOIN pg_catalog.pg_roles r
      CROSS JOIN unnest(ARRAY['UPDATE', 'DELETE', 'TRUNCATE']) p(priv)
     WHERE n.nspname = 'pgagent' AND c.relname IN ('step', 'audit_event') AND r.rolname LIKE 'pgagent\_%'
       AND pg_catalog.has_table_privilege(r.oid, c.oid, p.priv)$$,
    'no pgagent role may UPDATE, DELETE or TRUNCATE the append-only logs');

SELECT pgagent._audit('test_event', 'test', '1', '{}');
SELECT throws_ok($$UPDATE pgagent.audit_event SET payload = '{}'$$, '42501', NULL,
                 'audit_event refuses UPDATE (trigger)');

SELECT * FROM finish();
ROLLBACK;
