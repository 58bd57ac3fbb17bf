-- Security: group roles and grants, row level security, the hash-chained audit log, encrypted
-- secrets and the SQL-tool sandbox. See docs/security.md.

-- ---------------------------------------------------------------------------- roles
-- Cluster-wide NOLOGIN group roles, created if missing (CREATE EXTENSION runs as a superuser).
-- admin > operator > user > viewer (each inherits the one below). pgagent_sandbox runs the
-- model's SQL (sql tools) and has no privilege on schema pgagent.
DO $$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['pgagent_viewer', 'pgagent_user', 'pgagent_operator', 'pgagent_admin', 'pgagent_sandbox'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    END IF;
  END LOOP;
END $$;
GRANT pgagent_viewer TO pgagent_user;
GRANT pgagent_user TO pgagent_operator;
GRANT pgagent_operator TO pgagent_admin;

-- ---------------------------------------------------------------------------- tables
CREATE TABLE pgagent.audit_event (
    tenant_id   uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE,
    event_id    bigint GENERATED ALWAYS AS IDENTITY,
    chain_seq   bigint NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor       name NOT NULL DEFAULT current_user,
    action      text NOT NULL CHECK (action ~ '^[a-z][a-z0-9_]*$'),
    object_type text,
    object_id   text,
    payload     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    prev_hash   bytea,
    hash        bytea NOT NULL,
    PRIMARY KEY (tenant_id, event_id),
    UNIQUE (tenant_id, chain_seq)
);
COMMENT ON TABLE pgagent.audit_event IS
  'Append-only, hash-chained audit log per tenant: model registered/changed, tool registered, agent created, approval decided, turn cancelled, secret set/read, tenant and member added. hash = sha256(prev_hash || canonical event); check with pgagent.verify_audit_chain(tenant). UPDATE, DELETE and TRUNCATE are refused.';
COMMENT ON COLUMN pgagent.audit_event.chain_seq IS 'Position in the tenant''s chain (1, 2, ...), assigned under a per-tenant lock.';
SELECT pg_catalog.pg_extension_config_dump('pgagent.audit_event', '');

CREATE TABLE pgagent.secret (
    tenant_id  uuid NOT NULL REFERENCES pgagent.tenant ON DELETE CASCADE DEFAULT pgagent.current_tenant(),
    name       text NOT NULL CHECK (name ~ '^[A-Za-z_][A-Za-z0-9_]{0,127}$'),
    ciphertext bytea NOT NULL,
    created_by name NOT NULL DEFAULT current_user,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
COMMENT ON TABLE pgagent.secret IS
  'API keys by name (a model''s secret_name), encrypted with pgp_sym_encrypt under the server''s key-encryption key (the file pgagent.kek in the data directory). Set with pgagent.set_secret; the loop decrypts at call time.';
SELECT pg_catalog.pg_extension_config_dump('pgagent.secret', '');

ALTER TABLE pgagent.audit_event ALTER COLUMN tenant_id SET DEFAULT pgagent.current_tenant();

CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON pgagent.audit_event
  FOR EACH ROW EXECUTE FUNCTION pgagent.step_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON pgagent.audit_event
  FOR EACH STATEMENT EXECUTE FUNCTION pgagent.step_append_only();

-- ---------------------------------------------------------------------------- audit chain
CREATE FUNCTION pgagent._audit_hash(e pgagent.audit_event) RETURNS bytea
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.sha256(coalesce(e.prev_hash, '\x'::bytea) || pg_catalog.convert_to(
             pg_catalog.jsonb_build_array(e.tenant_id, e.event_id, e.chain_seq,
                 pg_catalog.to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                 e.actor, e.action, e.object_type, e.object_id, e.payload)::text, 'UTF8'))
$$;
COMMENT ON FUNCTION pgagent._audit_hash(pgagent.audit_event) IS
  'Internal: an audit event''s hash: sha256(prev_hash || the event''s fields as a canonical JSON array).';

CREATE FUNCTION pgagent.audit_chain() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last record;
BEGIN
    -- one writer per tenant chain at a time; the next statement sees the latest committed link
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(NEW.tenant_id::text || '/audit', 0));
    SELECT a.chain_seq, a.hash INTO last FROM pgagent.audit_event a
     WHERE a.tenant_id = NEW.tenant_id ORDER BY a.chain_seq DESC LIMIT 1;
    NEW.chain_seq := coalesce(last.chain_seq, 0) + 1;
    NEW.prev_hash := last.hash;
    NEW.at := pg_catalog.clock_timestamp();
    NEW.hash := pgagent._audit_hash(NEW);
    RETURN NEW;
END $$;
COMMENT ON FUNCTION pgagent.audit_chain() IS
  'Trigger: links a new audit event into its tenant''s chain (chain_seq, prev_hash, hash) under a per-tenant advisory lock.';
CREATE TRIGGER audit_chain BEFORE INSERT ON pgagent.audit_event
  FOR EACH ROW EXECUTE FUNCTION pgagent.audit_chain();

CREATE FUNCTION pgagent._audit(action text, object_type text, object_id text, payload jsonb DEFAULT '{}')
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO pgagent.audit_event (tenant_id, action, object_type, object_id, payload)
    VALUES (pgagent.current_tenant(), action, object_type, object_id, coalesce(payload, '{}'))
$$;
COMMENT ON FUNCTION pgagent._audit(text, text, text, jsonb) IS
  'Internal: record an audit event for the current tenant, by current_user.';

CREATE FUNCTION pgagent.verify_audit_chain(tenant uuid DEFAULT NULL)
RETURNS TABLE (ok boolean, events bigint, first_broken_event_id bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e      pgagent.audit_event;
    tid    uuid := coalesce(tenant, pgagent.current_tenant());
    prev   bytea;
    n      bigint := 0;
    broken bigint;
BEGIN
    FOR e IN SELECT * FROM pgagent.audit_event a WHERE a.tenant_id = tid ORDER BY a.chain_seq LOOP
        n := n + 1;
        IF broken IS NULL AND (e.chain_seq <> n OR e.prev_hash IS DISTINCT FROM prev
                               OR e.hash IS DISTINCT FROM pgagent._audit_hash(e)) THEN
            broken := e.event_id;
        END IF;
        prev := e.hash;
    END LOOP;
    RETURN QUERY SELECT broken IS NULL, n, broken;
END $$;
COMMENT ON FUNCTION pgagent.verify_audit_chain(uuid) IS
  'Recompute a tenant''s audit chain (default: the current tenant; only tenants the caller may see): ok, the number of events, and the first event whose link or hash does not match (NULL when ok).';

-- ---------------------------------------------------------------------------- secrets
-- The key-encryption key lives in the file pgagent.kek in the data directory, readable only by
-- the server (a custom setting would be readable by every role with SHOW).
CREATE FUNCTION pgagent._kek() RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE k text;
BEGIN
    BEGIN
        k := pg_catalog.btrim(pg_catalog.pg_read_file('pgagent.kek'), E' \t\r\n');
    EXCEPTION WHEN undefined_file THEN
        k := NULL;
    END;
    IF k IS NULL OR length(k) < 16 THEN
        RAISE EXCEPTION 'pgagent: no key-encryption key (the file pgagent.kek in the data directory, at least 16 characters)'
          USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'A superuser writes it once: see docs/security.md.';
    END IF;
    RETURN k;
END $$;
COMMENT ON FUNCTION pgagent._kek() IS 'Internal (no grants): the key-encryption key from $PGDATA/pgagent.kek.';

CREATE FUNCTION pgagent._pgcrypto() RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pgcrypto'
$$;
COMMENT ON FUNCTION pgagent._pgcrypto() IS 'Internal: the schema pgcrypto is installed in (pgagent calls its functions schema-qualified).';

CREATE FUNCTION pgagent._secret_encrypt(value text) RETURNS bytea
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE ct bytea;
BEGIN
    EXECUTE format('SELECT %I.pgp_sym_encrypt($1::text, $2::text, %L)', pgagent._pgcrypto(), 'cipher-algo=aes256')
       INTO ct USING value, pgagent._kek();
    RETURN ct;
END $$;
COMMENT ON FUNCTION pgagent._secret_encrypt(text) IS 'Internal: encrypt a secret value under the key-encryption key.';

CREATE FUNCTION pgagent._secret_decrypt(ciphertext bytea) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE v text;
BEGIN
    EXECUTE format('SELECT %I.pgp_sym_decrypt($1::bytea, $2::text)', pgagent._pgcrypto())
       INTO v USING ciphertext, pgagent._kek();
    RETURN v;
END $$;
COMMENT ON FUNCTION pgagent._secret_decrypt(bytea) IS
  'Internal: decrypt a ciphertext of pgagent.secret. Callers only ever hold their own tenant''s ciphertexts (row level security on pgagent.secret).';

CREATE FUNCTION pgagent.set_secret(name text, value text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF value IS NULL OR value = '' THEN
        RAISE EXCEPTION 'pgagent: a secret value must be non-empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- UPDATE, then INSERT: admins have no SELECT on ciphertext, which ON CONFLICT DO UPDATE needs
    UPDATE pgagent.secret s SET ciphertext = pgagent._secret_encrypt(set_secret.value), updated_at = now(),
                                created_by = current_user
     WHERE s.tenant_id = pgagent.current_tenant() AND s.name = set_secret.name;
    IF NOT FOUND THEN
        INSERT INTO pgagent.secret (tenant_id, name, ciphertext)
        VALUES (pgagent.current_tenant(), set_secret.name, pgagent._secret_encrypt(set_secret.value));
    END IF;
    PERFORM pgagent._audit('secret_set', 'secret', set_secret.name, '{}');
END $$;
COMMENT ON FUNCTION pgagent.set_secret(text, text) IS
  'Store (or replace) the current tenant''s secret (an API key) under name, encrypted; models refer to it by secret_name. Admin only. Needs the key-encryption key (docs/security.md).';

-- The role the caller acts as outside any SECURITY DEFINER function: SET ROLE's role, else the
-- session user (SECURITY DEFINER changes current_user but not the role setting).
CREATE FUNCTION pgagent._outer_user() RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user
                ELSE pg_catalog.current_setting('role')::name END
$$;
COMMENT ON FUNCTION pgagent._outer_user() IS
  'Internal: the role the session acts as (SET ROLE''s role, else session_user), also inside SECURITY DEFINER functions.';

CREATE FUNCTION pgagent._may_act(tenant uuid) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM pgagent.tenant t
         WHERE t.tenant_id = tenant
           AND (coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = pgagent._outer_user()), false)
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                            WHERE r.rolname = t.role_name
                              AND pg_catalog.pg_has_role(pgagent._outer_user(), r.oid, 'MEMBER'))
                OR EXISTS (SELECT 1 FROM pgagent.tenant_member m JOIN pg_catalog.pg_roles r ON r.rolname = m.role_name
                            WHERE m.tenant_id = t.tenant_id
                              AND pg_catalog.pg_has_role(pgagent._outer_user(), r.oid, 'MEMBER'))))
$$;
COMMENT ON FUNCTION pgagent._may_act(uuid) IS
  'Internal (used inside SECURITY DEFINER code): whether the session''s outer role (pgagent._outer_user) may act for the tenant.';

-- The only code that ever holds a decrypted key: it makes the LLM request itself and returns the
-- normalized reply (or error) with the key redacted, so no tenant role can obtain a key.
CREATE FUNCTION pgagent._llm_call(model bigint, request jsonb) RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return GD['pgagent'].llm_call(plpy, GD, model, request)
$$;
COMMENT ON FUNCTION pgagent._llm_call(bigint, jsonb) IS
  'Internal (the agent loop, for models with a secret_name): check that the caller may act for the model''s tenant (42501), decrypt the key, call the provider and return {"reply": ...} or {"error": ...} with the key redacted. request: {messages, tools, params, response_format}. The key never leaves this function.';

-- ---------------------------------------------------------------------------- tenants
CREATE FUNCTION pgagent.add_tenant(name text, role_name name DEFAULT NULL, display_name text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE tid uuid;
BEGIN
    IF role_name IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = add_tenant.role_name) THEN
        RAISE EXCEPTION 'pgagent: role "%" does not exist', add_tenant.role_name USING ERRCODE = 'undefined_object';
    END IF;
    INSERT INTO pgagent.tenant (name, display_name, role_name)
    VALUES (add_tenant.name, add_tenant.display_name, add_tenant.role_name) RETURNING tenant_id INTO tid;
    INSERT INTO pgagent.audit_event (tenant_id, actor, action, object_type, object_id, payload)
    VALUES (tid, session_user, 'tenant_added', 'tenant', add_tenant.name,
            pg_catalog.jsonb_build_object('role_name', add_tenant.role_name));
    RETURN tid;
END $$;
COMMENT ON FUNCTION pgagent.add_tenant(text, name, text) IS
  'Admin: create a tenant; members of role_name (optional) may act for it. Returns tenant_id. Add more roles with pgagent.add_member.';

CREATE FUNCTION pgagent.add_member(tenant text, role_name name) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE tid uuid;
BEGIN
    -- runs as the caller: only tenants the caller belongs to are visible, and row level security
    -- checks the new row against the tenant the caller acts for
    SELECT t.tenant_id INTO tid FROM pgagent.tenant t WHERE t.name = add_member.tenant OR t.tenant_id::text = add_member.tenant;
    IF tid IS NULL OR tid <> pgagent.current_tenant() THEN
        RAISE EXCEPTION 'pgagent: role "%" may not manage members of tenant "%"', current_user, add_member.tenant
          USING ERRCODE = 'insufficient_privilege', HINT = 'SET pgagent.tenant to that tenant first (you must belong to it).';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = add_member.role_name) THEN
        RAISE EXCEPTION 'pgagent: role "%" does not exist', add_member.role_name USING ERRCODE = 'undefined_object';
    END IF;
    INSERT INTO pgagent.tenant_member (tenant_id, role_name) VALUES (tid, add_member.role_name)
    ON CONFLICT DO NOTHING;
    PERFORM pgagent._audit('member_added', 'tenant_member', add_member.role_name, '{}');
END $$;
COMMENT ON FUNCTION pgagent.add_member(text, name) IS
  'Admin: let the members of role_name act for tenant (which must be the tenant the caller acts for).';

-- ---------------------------------------------------------------------------- sql tool sandbox
-- Owned by pgagent_sandbox and SECURITY DEFINER: the query runs with the sandbox's privileges
-- only, and SET ROLE / SET SESSION AUTHORIZATION are refused inside it, so it cannot switch back.
CREATE FUNCTION pgagent._sandbox_query(query text, args text[], path text, max_rows integer) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rows jsonb;
    a    text[] := coalesce(args, '{}');
BEGIN
    IF cardinality(a) > 20 THEN
        RAISE EXCEPTION 'pgagent: at most 20 query arguments' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_catalog.set_config('search_path', coalesce(path, 'public'), true);
    EXECUTE 'SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(t)), ''[]''::jsonb) FROM (SELECT * FROM ('
            || E'\n' || query || E'\n' || ') AS q LIMIT ' || (max_rows + 1)::text || ') AS t'
       INTO rows
      USING a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10],
            a[11], a[12], a[13], a[14], a[15], a[16], a[17], a[18], a[19], a[20];
    RETURN rows;
END $$;
COMMENT ON FUNCTION pgagent._sandbox_query(text, text[], text, integer) IS
  'Internal (sql tools): run one read query as the role pgagent_sandbox (owner, SECURITY DEFINER) with $1..$20 as text arguments; returns up to max_rows + 1 rows as a jsonb array.';
ALTER FUNCTION pgagent._sandbox_query(text, text[], text, integer) OWNER TO pgagent_sandbox;

-- ---------------------------------------------------------------------------- row level security
ALTER TABLE pgagent.tenant ENABLE ROW LEVEL SECURITY;
ALTER TABLE pgagent.tenant FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_select ON pgagent.tenant FOR SELECT
  USING (pgagent._is_member(role_name)
         OR EXISTS (SELECT 1 FROM pgagent.tenant_member m WHERE m.tenant_id = tenant.tenant_id));

ALTER TABLE pgagent.tenant_member ENABLE ROW LEVEL SECURITY;
ALTER TABLE pgagent.tenant_member FORCE ROW LEVEL SECURITY;
CREATE POLICY member_select ON pgagent.tenant_member FOR SELECT USING (pgagent._is_member(role_name));
CREATE POLICY member_insert ON pgagent.tenant_member FOR INSERT
  WITH CHECK (tenant_id = (SELECT pgagent.current_tenant()));

DO $$
DECLARE
    t text;
    same constant text := 'tenant_id = (SELECT pgagent.current_tenant())';
BEGIN
  FOREACH t IN ARRAY ARRAY['model','persona','tool','agent','agent_tool','conversation','turn','step',
                           'audit_event','secret'] LOOP
    EXECUTE format('ALTER TABLE pgagent.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE pgagent.%I FORCE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_select ON pgagent.%I FOR SELECT USING (%s)', t, same);
    IF t = 'audit_event' THEN
      EXECUTE format('CREATE POLICY tenant_insert ON pgagent.%I FOR INSERT WITH CHECK (%s AND actor = current_user)', t, same);
    ELSE
      EXECUTE format('CREATE POLICY tenant_insert ON pgagent.%I FOR INSERT WITH CHECK (%s)', t, same);
    END IF;
    IF t NOT IN ('step', 'audit_event') THEN
      EXECUTE format('CREATE POLICY tenant_update ON pgagent.%I FOR UPDATE USING (%s) WITH CHECK (%s)', t, same, same);
      EXECUTE format('CREATE POLICY tenant_delete ON pgagent.%I FOR DELETE USING (%s)', t, same);
    END IF;
  END LOOP;
END $$;

-- ---------------------------------------------------------------------------- grants
REVOKE ALL ON ALL TABLES IN SCHEMA pgagent FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgagent FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA pgagent FROM PUBLIC;
REVOKE ALL ON SCHEMA pgagent FROM PUBLIC;

GRANT USAGE ON SCHEMA pgagent TO pgagent_viewer;

-- viewer: read its tenants' rows (views are security_invoker, so the tables they read too)
GRANT SELECT ON pgagent.turn_timeline, pgagent.pending_approvals, pgagent.turn_summary, pgagent.agent_stats
   TO pgagent_viewer;
GRANT SELECT ON pgagent.tenant, pgagent.tenant_member, pgagent.model, pgagent.persona, pgagent.tool,
                pgagent.agent, pgagent.agent_tool, pgagent.conversation, pgagent.turn, pgagent.step,
                pgagent.audit_event
   TO pgagent_viewer;
GRANT EXECUTE ON FUNCTION pgagent.current_tenant(), pgagent.default_tenant_id(), pgagent._is_member(name),
                          pgagent.verify_audit_chain(uuid)
   TO pgagent_viewer;

-- user: talk to agents (the loop runs as the caller)
GRANT EXECUTE ON FUNCTION pgagent._load(), pgagent.start_conversation(text, text, jsonb),
                          pgagent.send_message(bigint, text, jsonb), pgagent.enqueue_message(bigint, text, jsonb),
                          pgagent._audit(text, text, text, jsonb), pgagent._audit_hash(pgagent.audit_event),
                          pgagent._llm_call(bigint, jsonb), pgagent._sandbox_query(text, text[], text, integer)
   TO pgagent_user;
GRANT EXECUTE ON PROCEDURE pgagent.run_turn(bigint, jsonb) TO pgagent_user;
GRANT EXECUTE ON FUNCTION pgagent.embed(text, text, jsonb), pgagent.embed(text[], text, jsonb) TO pgagent_user;
GRANT INSERT ON pgagent.conversation, pgagent.turn, pgagent.step, pgagent.audit_event TO pgagent_user;
GRANT UPDATE ON pgagent.turn TO pgagent_user;

-- operator: decide approvals, run approved calls, cancel turns
GRANT EXECUTE ON FUNCTION pgagent.approve_step(bigint, boolean, text), pgagent.process_tool_call(bigint, boolean),
                          pgagent.cancel_turn(bigint, text)
   TO pgagent_operator;

-- admin: configure models, tools, personas, agents, secrets and tenant membership
GRANT EXECUTE ON FUNCTION pgagent.register_model(text, text, text, text, text, jsonb, text, numeric, numeric, integer, integer, integer, boolean, text),
                          pgagent.register_tool(text, text, jsonb, text, jsonb, boolean, integer),
                          pgagent.create_persona(text, text, jsonb, jsonb),
                          pgagent.create_agent(text, text, text[], text, text, jsonb),
                          pgagent.set_secret(text, text), pgagent._secret_encrypt(text),
                          pgagent.add_tenant(text, name, text), pgagent.add_member(text, name)
   TO pgagent_admin;
GRANT INSERT, UPDATE ON pgagent.model, pgagent.persona, pgagent.tool, pgagent.agent, pgagent.secret TO pgagent_admin;
-- admins see which secrets exist, never the ciphertext (set_secret's upsert needs these columns)
GRANT SELECT (tenant_id, name, created_by, created_at, updated_at) ON pgagent.secret TO pgagent_admin;
GRANT INSERT, DELETE ON pgagent.agent_tool TO pgagent_admin;
GRANT INSERT ON pgagent.tenant_member TO pgagent_admin;
