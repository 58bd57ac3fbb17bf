-- The HTTP gateway's API keys (issue 13): who may issue, revoke and check keys, that no tenant
-- role reads a hash, the table's shape, and bad input. tests/python/test_gateway.py runs the
-- gateway itself.
BEGIN;
SELECT plan(16);

SELECT ok(pg_catalog.has_function_privilege('pgagent_admin', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_operator', f, 'EXECUTE'), f || ' is for admins')
  FROM unnest(ARRAY['pgagent.create_api_key(text,name,integer)', 'pgagent.revoke_api_key(text)']) AS f;
SELECT ok(pg_catalog.has_function_privilege('pgagent_gateway', 'pgagent.authenticate_api_key(text)', 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_admin', 'pgagent.authenticate_api_key(text)', 'EXECUTE'),
          'only the gateway checks keys');
SELECT ok(NOT pg_catalog.has_function_privilege(g, 'pgagent._api_key_matches(text,text)', 'EXECUTE'),
          g || ' cannot test keys against hashes')
  FROM unnest(ARRAY['pgagent_admin', 'pgagent_gateway']) AS g;
SELECT ok(NOT pg_catalog.has_column_privilege(g, 'pgagent.api_key', 'hash', 'SELECT'), g || ' never reads a hash')
  FROM unnest(ARRAY['pgagent_viewer', 'pgagent_admin', 'pgagent_gateway']) AS g;
SELECT ok(pg_catalog.has_table_privilege('pgagent_admin', 'pgagent.api_keys', 'SELECT')
          AND NOT pg_catalog.has_table_privilege('pgagent_operator', 'pgagent.api_keys', 'SELECT'),
          'admins list the keys');
SELECT ok((SELECT relforcerowsecurity FROM pg_class WHERE oid = 'pgagent.api_key'::regclass), 'api_key: RLS forced');
SELECT ok(NOT (SELECT rolcanlogin OR rolsuper FROM pg_roles WHERE rolname = 'pgagent_gateway'),
          'pgagent_gateway is a group role without login');

-- keys for the superuser running these tests are refused; bad names and rates too
SELECT throws_ok($$SELECT pgagent.create_api_key('k')$$, '42501', NULL, 'no key acts as a superuser');
SELECT throws_ok($$SELECT pgagent.create_api_key('bad name!', 'pgagent_viewer')$$, '22023', NULL, 'a bad key name');
SELECT throws_ok($$SELECT pgagent.create_api_key('k', 'no_such_role_xyz')$$, '42704', NULL, 'an unknown role');
SELECT throws_ok($$SELECT pgagent.revoke_api_key('nope')$$, '42704', NULL, 'revoking an unknown key');
SELECT is((SELECT count(*)::int FROM pgagent.authenticate_api_key('pga_' || repeat('0', 48))), 0,
          'an unknown key authenticates nothing');

SELECT * FROM finish();
ROLLBACK;
