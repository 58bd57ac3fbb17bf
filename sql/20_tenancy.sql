-- Which tenant the current session acts for, and who may act for which tenant.

CREATE TABLE pgagent.tenant_member (
    tenant_id  uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    role_name  name NOT NULL,
    added_by   name NOT NULL DEFAULT current_user,
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, role_name)
);
COMMENT ON TABLE pgagent.tenant_member IS
  'Who may act for a tenant: every role that is a member (pg_has_role MEMBER, so also through group roles) of role_name. Managed with pgagent.add_member; a session sees only its own memberships.';
SELECT pg_catalog.pg_extension_config_dump('pgagent.tenant_member', '');

-- True when the current user is a member of the role named role_name (false for a role that
-- does not exist, where pg_has_role would raise).
CREATE FUNCTION pgagent._is_member(role_name name) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT role_name IS NOT NULL AND EXISTS (
        SELECT 1 FROM pg_catalog.pg_roles r
         WHERE r.rolname = role_name AND pg_catalog.pg_has_role(r.oid, 'MEMBER'))
$$;
COMMENT ON FUNCTION pgagent._is_member(name) IS
  'Internal: whether current_user is a member (directly or through other roles) of the named role; false for unknown roles.';

-- Runs as the caller (not SECURITY DEFINER: inside a SECURITY DEFINER function current_user is
-- the owner, so membership could not be checked). It sees only the tenants the caller belongs to
-- because row level security on pgagent.tenant and pgagent.tenant_member limits it to them.
CREATE FUNCTION pgagent.current_tenant() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wanted   text := nullif(current_setting('pgagent.tenant', true), '');
    is_super boolean := coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user), false);
    found    uuid;
    mine     uuid[];
BEGIN
    IF wanted IS NOT NULL THEN
        SELECT t.tenant_id INTO found FROM pgagent.tenant t
         WHERE (t.name = wanted OR t.tenant_id::text = wanted)
           AND (is_super OR pgagent._is_member(t.role_name)
                OR EXISTS (SELECT 1 FROM pgagent.tenant_member m
                            WHERE m.tenant_id = t.tenant_id AND pgagent._is_member(m.role_name)));
        IF found IS NULL AND is_super THEN
            RAISE EXCEPTION 'pgagent: unknown tenant "%"', wanted
              USING ERRCODE = 'invalid_parameter_value', HINT = 'SET pgagent.tenant to a tenant name or id.';
        ELSIF found IS NULL THEN
            -- the same error for "no such tenant" and "not yours": no existence oracle
            RAISE EXCEPTION 'pgagent: role "%" may not act for tenant "%"', current_user, wanted
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Ask a pgagent admin of that tenant to run pgagent.add_member.';
        END IF;
        RETURN found;
    END IF;
    IF is_super THEN
        RETURN pgagent.default_tenant_id();
    END IF;
    SELECT array_agg(t.tenant_id ORDER BY t.name) INTO mine FROM pgagent.tenant t
     WHERE pgagent._is_member(t.role_name)
        OR EXISTS (SELECT 1 FROM pgagent.tenant_member m
                    WHERE m.tenant_id = t.tenant_id AND pgagent._is_member(m.role_name));
    IF cardinality(mine) = 1 THEN
        RETURN mine[1];
    ELSIF pgagent.default_tenant_id() = ANY (mine) THEN
        RETURN pgagent.default_tenant_id();
    END IF;
    RAISE EXCEPTION 'pgagent: role "%" %', current_user,
          CASE WHEN mine IS NULL THEN 'is not a member of any pgagent tenant'
               ELSE 'belongs to several tenants and pgagent.tenant is not set' END
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'SET pgagent.tenant = ''<tenant name>'' (or ask an admin to run pgagent.add_member).';
END $$;
COMMENT ON FUNCTION pgagent.current_tenant() IS
  'The tenant this session acts for. With the setting pgagent.tenant (a name or uuid): that tenant if current_user may act for it (a member of tenant.role_name or of a pgagent.tenant_member role), else 42501. Unset: the only tenant the user belongs to, else the default tenant if the user belongs to it, else 42501. Superusers may pick any tenant (22023 for an unknown one) and get the default tenant when unset.';

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['model','persona','tool','agent','agent_tool','conversation','turn','step','tenant_member'] LOOP
    EXECUTE format('ALTER TABLE pgagent.%I ALTER COLUMN tenant_id SET DEFAULT pgagent.current_tenant()', t);
  END LOOP;
END $$;
