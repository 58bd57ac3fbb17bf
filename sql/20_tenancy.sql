-- Which tenant the current session acts for, and who may act for which tenant.
--
-- This and every later sql/NN_*.sql file is replayable: CREATE EXTENSION runs it after
-- 10_tables.sql, and every upgrade script runs it again after its migration (see
-- migrations/README.md). So only CREATE OR REPLACE, DROP ... IF EXISTS + CREATE, and statements
-- that may run twice (GRANT, REVOKE, COMMENT, ALTER ... SET) belong in them.

-- ---------------------------------------------------------------------------- roles
-- Cluster-wide NOLOGIN group roles, created if missing (CREATE EXTENSION runs as a superuser).
-- admin > operator > user > viewer (each inherits the one below). pgagent_sandbox runs the
-- model's SQL (sql tools) and has no privilege on schema pgagent.
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['pgagent_viewer', 'pgagent_user', 'pgagent_operator', 'pgagent_admin', 'pgagent_sandbox',
                           'pgagent_gateway'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    END IF;
  END LOOP;
END $$;
GRANT pgagent_viewer TO pgagent_user;
GRANT pgagent_user TO pgagent_operator;
GRANT pgagent_operator TO pgagent_admin;

-- ---------------------------------------------------------------------------- privileges
-- Start from no privileges: take every privilege PUBLIC and the group roles hold on the
-- extension's own objects away, so that the GRANTs that follow (beside each function, and in
-- 60_security.sql and 70_egress.sql) are all they hold, also after an upgrade from a release that
-- granted more. Objects the extension does not own (pgagent._run_as_<oid>) are left alone.
DO $$
DECLARE
    o record;
    who constant text := 'PUBLIC, pgagent_viewer, pgagent_user, pgagent_operator, pgagent_admin, pgagent_gateway';
BEGIN
    FOR o IN
        SELECT CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind, c.oid::regclass::text AS name
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype = 'e'
           AND d.refclassid = 'pg_catalog.pg_extension'::regclass
           AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'pgagent')
        UNION ALL
        SELECT 'ROUTINE', p.oid::regprocedure::text
          FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_proc p ON p.oid = d.objid
         WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND d.deptype = 'e'
           AND d.refclassid = 'pg_catalog.pg_extension'::regclass
           AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'pgagent')
    LOOP
        EXECUTE format('REVOKE ALL ON %s %s FROM %s', o.kind, o.name, who);
    END LOOP;
    EXECUTE format('REVOKE ALL ON SCHEMA pgagent FROM %s', who);
END $$;

-- The tenant a row belongs to when none is given; see pgagent.current_tenant() (below).
CREATE OR REPLACE FUNCTION pgagent.default_tenant_id() RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '00000000-0000-0000-0000-000000000000'::uuid $$;
COMMENT ON FUNCTION pgagent.default_tenant_id() IS 'The uuid of the built-in tenant named ''default''.';

-- The role the caller acts as outside any SECURITY DEFINER function: SET ROLE's role, else the
-- session user (SECURITY DEFINER changes current_user but not the role setting). Every API
-- function runs as the extension owner, so this, not current_user, is "who did it".
-- These three helpers have no SET clause on purpose: they run in every API call, column default
-- and row level security check, and a SET clause (or a non-inlinable body) makes PostgreSQL plan
-- them again in every transaction. Their bodies qualify every function, operator and type, so
-- they mean the same under any search_path; _outer_user is inlined.
CREATE OR REPLACE FUNCTION pgagent._outer_user() RETURNS name
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN pg_catalog.current_setting('role') OPERATOR(pg_catalog.=) 'none' THEN session_user
                ELSE pg_catalog.current_setting('role')::pg_catalog.name END
$$;
COMMENT ON FUNCTION pgagent._outer_user() IS
  'Internal: the role the session acts as (SET ROLE''s role, else session_user), also inside SECURITY DEFINER functions. Recorded as created_by, decided_by and the audit actor.';

-- Whether the session's outer role is a member of role_name (false for unknown roles).
CREATE OR REPLACE FUNCTION pgagent._outer_is_member(role_name name) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT role_name IS NOT NULL AND EXISTS (
        SELECT 1 FROM pg_catalog.pg_roles r
         WHERE r.rolname OPERATOR(pg_catalog.=) role_name
           AND pg_catalog.pg_has_role(pgagent._outer_user(), r.oid, 'MEMBER'))
$$;
COMMENT ON FUNCTION pgagent._outer_is_member(name) IS
  'Internal: whether the session''s outer role (pgagent._outer_user) is a member, directly or through other roles, of the named role; false for unknown roles.';

-- True when the current user is a member of the role named role_name (false for a role that
-- does not exist, where pg_has_role would raise). Used by row level security on tenant tables.
CREATE OR REPLACE FUNCTION pgagent._is_member(role_name name) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT role_name IS NOT NULL AND EXISTS (
        SELECT 1 FROM pg_catalog.pg_roles r
         WHERE r.rolname OPERATOR(pg_catalog.=) role_name AND pg_catalog.pg_has_role(r.oid, 'MEMBER'))
$$;
COMMENT ON FUNCTION pgagent._is_member(name) IS
  'Internal: whether current_user is a member (directly or through other roles) of the named role; false for unknown roles.';

-- SECURITY DEFINER: it reads the tenant and membership tables without row level security (one
-- query, no per-row policy checks) and judges membership itself, for the session's outer role
-- (pgagent._outer_user), so it gives the same answer in a query of the caller, in a row level
-- security policy and inside the API functions. It reveals only the caller's own tenant.
CREATE OR REPLACE FUNCTION pgagent.current_tenant() RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who      name := pgagent._outer_user();
    wanted   text := nullif(current_setting('pgagent.tenant', true), '');
    is_super boolean := coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = who), false);
    found    uuid;
    mine     uuid[];
BEGIN
    IF wanted IS NOT NULL THEN
        SELECT t.tenant_id INTO found FROM pgagent.tenant t
         WHERE (t.name = wanted OR t.tenant_id::text = wanted)
           AND (is_super OR EXISTS (
                SELECT 1 FROM pg_catalog.pg_roles r
                 WHERE (r.rolname = t.role_name
                        OR r.rolname IN (SELECT m.role_name FROM pgagent.tenant_member m WHERE m.tenant_id = t.tenant_id))
                   AND pg_catalog.pg_has_role(who, r.oid, 'MEMBER')));
        IF found IS NULL AND is_super THEN
            RAISE EXCEPTION 'pgagent: unknown tenant "%"', wanted
              USING ERRCODE = 'invalid_parameter_value', DETAIL = 'No tenant has that name or id.',
                    HINT = 'SET pgagent.tenant to a tenant name or id (SELECT name FROM pgagent.tenant).';
        ELSIF found IS NULL THEN
            -- the same error for "no such tenant" and "not yours": no existence oracle
            RAISE EXCEPTION 'pgagent: role "%" may not act for tenant "%"', who, wanted
              USING ERRCODE = 'insufficient_privilege',
                    DETAIL = 'The setting pgagent.tenant names a tenant this role is not a member of.',
                    HINT = 'Ask a pgagent admin of that tenant to run pgagent.add_member.';
        END IF;
        RETURN found;
    END IF;
    IF is_super THEN
        RETURN pgagent.default_tenant_id();
    END IF;
    SELECT array_agg(t.tenant_id ORDER BY t.name) INTO mine FROM pgagent.tenant t
     WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                    WHERE (r.rolname = t.role_name
                           OR r.rolname IN (SELECT m.role_name FROM pgagent.tenant_member m WHERE m.tenant_id = t.tenant_id))
                      AND pg_catalog.pg_has_role(who, r.oid, 'MEMBER'));
    IF cardinality(mine) = 1 THEN
        RETURN mine[1];
    ELSIF pgagent.default_tenant_id() = ANY (mine) THEN
        RETURN pgagent.default_tenant_id();
    END IF;
    RAISE EXCEPTION 'pgagent: role "%" %', who,
          CASE WHEN mine IS NULL THEN 'is not a member of any pgagent tenant'
               ELSE 'belongs to several tenants and pgagent.tenant is not set' END
      USING ERRCODE = 'insufficient_privilege',
            DETAIL = 'A session acts for one tenant, chosen by role membership.',
            HINT = 'SET pgagent.tenant = ''<tenant name>'' (or ask an admin to run pgagent.add_member).';
END $$;
COMMENT ON FUNCTION pgagent.current_tenant() IS
  'The tenant this session acts for, judged for the session''s outer role (SET ROLE''s role, else session_user). With the setting pgagent.tenant (a name or uuid): that tenant if the role may act for it (a member of tenant.role_name or of a pgagent.tenant_member role), else 42501. Unset: the only tenant the role belongs to, else the default tenant if it belongs to it, else 42501. Superusers may pick any tenant (22023 for an unknown one) and get the default tenant when unset.';

-- ---------------------------------------------------------------------------- column defaults
-- Defaults that call pgagent functions are set here, not in 10_tables.sql, so that the tables
-- can be created before any function and an upgrade sets them again.
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['model','persona','tool','agent','agent_tool','conversation','turn','step','tenant_member',
                           'audit_event','secret','egress_allow','egress_exception','intervention','rating','flag',
                           'budget','budget_usage','budget_hold','hook','agent_daily','worker','schedule',
                           'schedule_firing','insert_trigger','memory','collection','document','chunk',
                           'kg_entity','kg_relation','kg_extraction','eval_suite','eval_case','eval_run','eval_result',
                           'team','discussion','discussion_turn','api_key'] LOOP
    EXECUTE format('ALTER TABLE pgagent.%I ALTER COLUMN tenant_id SET DEFAULT pgagent.current_tenant()', t);
  END LOOP;
  FOREACH t IN ARRAY ARRAY['conversation','turn','step','secret','intervention','flag','budget','hook','schedule',
                           'insert_trigger','memory','collection','document',
                           'kg_entity','kg_relation','kg_extraction','eval_suite','eval_case','eval_run','team',
                           'discussion','api_key'] LOOP
    EXECUTE format('ALTER TABLE pgagent.%I ALTER COLUMN created_by SET DEFAULT pgagent._outer_user()', t);
  END LOOP;
  FOREACH t IN ARRAY ARRAY['tenant_member','egress_allow','egress_exception'] LOOP
    EXECUTE format('ALTER TABLE pgagent.%I ALTER COLUMN added_by SET DEFAULT pgagent._outer_user()', t);
  END LOOP;
  ALTER TABLE pgagent.audit_event ALTER COLUMN actor SET DEFAULT pgagent._outer_user();
  ALTER TABLE pgagent.rating ALTER COLUMN rated_by SET DEFAULT pgagent._outer_user();
END $$;
