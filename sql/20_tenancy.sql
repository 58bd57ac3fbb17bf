-- Which tenant the current session acts for.

CREATE FUNCTION pgagent.current_tenant() RETURNS uuid
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    wanted text := nullif(current_setting('pgagent.tenant', true), '');
    found  uuid;
BEGIN
    IF wanted IS NULL THEN
        RETURN pgagent.default_tenant_id();
    END IF;
    SELECT t.tenant_id INTO found FROM pgagent.tenant t
     WHERE t.name = wanted OR t.tenant_id::text = wanted;
    IF found IS NULL THEN
        RAISE EXCEPTION 'pgagent: unknown tenant "%"', wanted
          USING ERRCODE = 'invalid_parameter_value', HINT = 'SET pgagent.tenant to a tenant name or id.';
    END IF;
    RETURN found;
END $$;
COMMENT ON FUNCTION pgagent.current_tenant() IS
  'The tenant this session acts for: the one named (or with the uuid) in the pgagent.tenant setting, else the default tenant. Raises 22023 for an unknown tenant.';

DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['model','persona','tool','agent','agent_tool','conversation','turn','step'] LOOP
    EXECUTE format('ALTER TABLE pgagent.%I ALTER COLUMN tenant_id SET DEFAULT pgagent.current_tenant()', t);
  END LOOP;
END $$;
