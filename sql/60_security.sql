-- Security: group roles and grants, row level security, the hash-chained audit log, encrypted
-- secrets and the SQL-tool sandbox. See docs/security.md.

-- ---------------------------------------------------------------------------- audit log (tables: 10_tables.sql)
CREATE OR REPLACE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON pgagent.audit_event
  FOR EACH ROW EXECUTE FUNCTION pgagent.step_append_only();
CREATE OR REPLACE TRIGGER audit_no_truncate BEFORE TRUNCATE ON pgagent.audit_event
  FOR EACH STATEMENT EXECUTE FUNCTION pgagent.step_append_only();

-- ---------------------------------------------------------------------------- audit chain
-- Inlinable on purpose, like pgagent._step_hash (STABLE, no SET clause, everything qualified).
CREATE OR REPLACE FUNCTION pgagent._audit_hash(e pgagent.audit_event) RETURNS bytea
LANGUAGE sql STABLE
AS $$
    SELECT pg_catalog.sha256(coalesce(e.prev_hash, '\x'::pg_catalog.bytea) OPERATOR(pg_catalog.||) pg_catalog.convert_to(
             pg_catalog.jsonb_build_array(e.tenant_id, e.event_id, e.chain_seq,
                 pg_catalog.to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                 e.actor, e.action, e.object_type, e.object_id, e.payload)::pg_catalog.text, 'UTF8'))
$$;
COMMENT ON FUNCTION pgagent._audit_hash(pgagent.audit_event) IS
  'Internal: an audit event''s hash: sha256(prev_hash || the event''s fields as a canonical JSON array).';

CREATE OR REPLACE FUNCTION pgagent.audit_chain() RETURNS trigger
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
CREATE OR REPLACE TRIGGER audit_chain BEFORE INSERT ON pgagent.audit_event
  FOR EACH ROW EXECUTE FUNCTION pgagent.audit_chain();

CREATE OR REPLACE FUNCTION pgagent._audit(action text, object_type text, object_id text, payload jsonb DEFAULT '{}')
RETURNS void
LANGUAGE sql
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO pgagent.audit_event (tenant_id, actor, action, object_type, object_id, payload)
    VALUES (pgagent.current_tenant(), pgagent._outer_user(), action, object_type, object_id, coalesce(payload, '{}'))
$$;
COMMENT ON FUNCTION pgagent._audit(text, text, text, jsonb) IS
  'Internal (owner only): record an audit event for the current tenant; actor is the calling role (pgagent._outer_user), not current_user.';

CREATE OR REPLACE FUNCTION pgagent.verify_audit_chain(tenant uuid DEFAULT NULL)
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
CREATE OR REPLACE FUNCTION pgagent._kek() RETURNS text
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
                DETAIL = 'Secrets are encrypted under a key read from $PGDATA/pgagent.kek, which is missing or too short.',
                HINT = 'A superuser writes it once: see docs/security.md.';
    END IF;
    RETURN k;
END $$;
COMMENT ON FUNCTION pgagent._kek() IS 'Internal (no grants): the key-encryption key from $PGDATA/pgagent.kek.';

CREATE OR REPLACE FUNCTION pgagent._pgcrypto() RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT n.nspname FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
     WHERE e.extname = 'pgcrypto'
$$;
COMMENT ON FUNCTION pgagent._pgcrypto() IS 'Internal: the schema pgcrypto is installed in (pgagent calls its functions schema-qualified).';

CREATE OR REPLACE FUNCTION pgagent._secret_encrypt(value text) RETURNS bytea
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

CREATE OR REPLACE FUNCTION pgagent._secret_decrypt(ciphertext bytea) RETURNS text
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

-- PL/pgSQL, not SQL: a SQL function with a SET clause (and a sub-select, which prevents inlining
-- anyway) is parsed and planned again in every statement that calls it (1.3 ms), which
-- pgagent.claim_turn would pay for every tenant at every claim; PL/pgSQL keeps its plan for the
-- session.
CREATE OR REPLACE FUNCTION pgagent._may_act(tenant uuid) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1 FROM pgagent.tenant t
         WHERE t.tenant_id = tenant
           AND (coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = pgagent._outer_user()), false)
                OR EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                            WHERE r.rolname = t.role_name
                              AND pg_catalog.pg_has_role(pgagent._outer_user(), r.oid, 'MEMBER'))
                OR EXISTS (SELECT 1 FROM pgagent.tenant_member m JOIN pg_catalog.pg_roles r ON r.rolname = m.role_name
                            WHERE m.tenant_id = t.tenant_id
                              AND pg_catalog.pg_has_role(pgagent._outer_user(), r.oid, 'MEMBER'))));
END $$;
COMMENT ON FUNCTION pgagent._may_act(uuid) IS
  'Internal (used inside SECURITY DEFINER code): whether the session''s outer role (pgagent._outer_user) may act for the tenant.';

-- The only code that ever holds a decrypted key: it makes the LLM request itself and returns the
-- normalized reply (or error) with the key redacted, so no tenant role can obtain a key.
CREATE OR REPLACE FUNCTION pgagent._llm_call(model bigint, request jsonb) RETURNS jsonb
LANGUAGE plpython3u SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return GD['pgagent'].llm_call(plpy, GD, model, request)
$$;
COMMENT ON FUNCTION pgagent._llm_call(bigint, jsonb) IS
  'Internal (the agent loop, for models with a secret_name): check that the caller may act for the model''s tenant (42501), decrypt the key, call the provider and return {"reply": ...} or {"error": ...} with the key redacted. request: {messages, tools, params, response_format}. The key never leaves this function.';

-- ---------------------------------------------------------------------------- tenants
CREATE OR REPLACE FUNCTION pgagent.add_tenant(name text, role_name name DEFAULT NULL, display_name text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE tid uuid;
BEGIN
    PERFORM pgagent._require('admin');
    IF name IS NULL OR name !~ '^[a-z0-9_][a-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'pgagent: "%" is not a valid tenant name', name USING ERRCODE = 'invalid_parameter_value',
              DETAIL = 'A tenant name is 1 to 63 characters of a-z, 0-9, _, . and - (not starting with . or -).',
              HINT = 'e.g. pgagent.add_tenant(''acme'', ''acme_team'')';
    END IF;
    IF role_name IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = add_tenant.role_name) THEN
        RAISE EXCEPTION 'pgagent: role "%" does not exist', add_tenant.role_name USING ERRCODE = 'undefined_object',
              DETAIL = 'role_name must name an existing role whose members will act for the tenant.',
              HINT = 'CREATE ROLE it first (NOLOGIN is enough), then GRANT it to the login roles.';
    END IF;
    -- a tenant admin may bind a new tenant only to a role it belongs to itself: otherwise it
    -- could drop another team into a second tenant (their sessions would then need pgagent.tenant)
    IF NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = pgagent._outer_user()), false)
       AND (role_name IS NULL OR NOT pgagent._outer_is_member(role_name)) THEN
        RAISE EXCEPTION 'pgagent: role "%" may create a tenant only for a role it belongs to', pgagent._outer_user()
          USING ERRCODE = 'insufficient_privilege',
                DETAIL = format('role_name %s is not a role of %s.', coalesce(quote_ident(role_name), 'NULL'), pgagent._outer_user()),
                HINT = 'Pass role_name => a role you are a member of, or ask a superuser.';
    END IF;
    IF EXISTS (SELECT 1 FROM pgagent.tenant t WHERE t.name = add_tenant.name) THEN
        RAISE EXCEPTION 'pgagent: tenant "%" already exists', name USING ERRCODE = 'duplicate_object',
              DETAIL = 'Tenant names are unique in the database.', HINT = 'Pick another name.';
    END IF;
    INSERT INTO pgagent.tenant (name, display_name, role_name)
    VALUES (add_tenant.name, add_tenant.display_name, add_tenant.role_name) RETURNING tenant_id INTO tid;
    INSERT INTO pgagent.audit_event (tenant_id, actor, action, object_type, object_id, payload)
    VALUES (tid, pgagent._outer_user(), 'tenant_added', 'tenant', add_tenant.name,
            pg_catalog.jsonb_build_object('role_name', add_tenant.role_name));
    RETURN tid;
END $$;
COMMENT ON FUNCTION pgagent.add_tenant(text, name, text) IS
  'Admin: create a tenant; members of role_name may act for it. A non-superuser must name a role it is a member of. Returns tenant_id. Add more roles with pgagent.add_member. Audited (tenant_added, in the new tenant''s chain). Raises 22023 (bad name), 42704 (no such role), 42501, 42710 (name taken).';

-- ---------------------------------------------------------------------------- sql tool sandbox
-- Owned by pgagent_sandbox and SECURITY DEFINER: the query runs with the sandbox's privileges
-- only, and SET ROLE / SET SESSION AUTHORIZATION are refused inside it, so it cannot switch back.
CREATE OR REPLACE FUNCTION pgagent._sandbox_query(query text, args text[], path text, max_rows integer) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    rows jsonb;
    a    text[] := coalesce(args, '{}');
BEGIN
    IF cardinality(a) > 20 THEN
        RAISE EXCEPTION 'pgagent: at most 20 query arguments' USING ERRCODE = 'invalid_parameter_value',
              DETAIL = format('The query has %s arguments.', cardinality(a)), HINT = 'Pass fewer arguments ($1 .. $20).';
    END IF;
    PERFORM pg_catalog.set_config('search_path', coalesce(path, 'public'), true);
    -- the rows (up to max_rows + 1) and how many the query returns in all (counted up to 100,000)
    EXECUTE 'SELECT pg_catalog.jsonb_build_object(''rows'', coalesce(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(t) - ''pgagent.total'' - ''pgagent.n'' ORDER BY t."pgagent.n") '
            || 'FILTER (WHERE t."pgagent.n" <= ' || (max_rows + 1)::text || '), ''[]''::jsonb), ''total'', coalesce(max(t."pgagent.total"), 0)) '
            || 'FROM (SELECT c.*, pg_catalog.count(*) OVER () AS "pgagent.total", pg_catalog.row_number() OVER () AS "pgagent.n" '
            || 'FROM (SELECT * FROM (' || E'\n' || query || E'\n' || ') AS q LIMIT 100001) AS c) AS t'
       INTO rows
      USING a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10],
            a[11], a[12], a[13], a[14], a[15], a[16], a[17], a[18], a[19], a[20];
    RETURN rows;
END $$;
COMMENT ON FUNCTION pgagent._sandbox_query(text, text[], text, integer) IS
  'Internal (sql tools, eval reference queries): run one read query as the role pgagent_sandbox (owner, SECURITY DEFINER) with $1..$20 as text arguments; returns {"rows": up to max_rows + 1 rows as a jsonb array, "total": how many rows the query returns, counted up to 100001}.';
ALTER FUNCTION pgagent._sandbox_query(text, text[], text, integer) OWNER TO pgagent_sandbox;

-- ---------------------------------------------------------------------------- function tool runners
-- A function tool runs as the role in its config.run_as through pgagent._run_as_<role oid>: a
-- SECURITY DEFINER function owned by that role (so the call has that role's rights, not the
-- owner's, and SET ROLE is refused inside it). EXECUTE for nobody but its owner and superusers
-- (the loop runs as the extension owner). Created on first use (by register_tool or the first
-- call) as ordinary objects: pg_dump keeps them, DROP OWNED BY <role> removes a role's runner,
-- and DROP EXTENSION pgagent needs CASCADE once one exists.
CREATE OR REPLACE FUNCTION pgagent._runner(role_name name) RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r   pg_catalog.pg_roles;
    fn  text;
BEGIN
    SELECT * INTO r FROM pg_catalog.pg_roles x WHERE x.rolname = role_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgagent: role "%" does not exist', role_name USING ERRCODE = 'undefined_object',
              DETAIL = 'A function tool''s config.run_as names a role that is gone.', HINT = 'CREATE ROLE it, or pgagent.update_tool the run_as.';
    END IF;
    IF r.rolsuper OR r.rolbypassrls THEN
        RAISE EXCEPTION 'pgagent: tools may not run as "%" (a superuser or BYPASSRLS role)', role_name
          USING ERRCODE = 'insufficient_privilege', DETAIL = 'Tools run with the least rights they need.',
                HINT = 'Make a NOLOGIN role for the tool and grant it only what the function uses.';
    END IF;
    SELECT format('pgagent.%I', p.proname) INTO fn FROM pg_catalog.pg_proc p
     WHERE p.pronamespace = 'pgagent'::regnamespace AND p.proowner = r.oid AND p.proname LIKE '\_run\_as\_%'
     LIMIT 1;
    IF fn IS NOT NULL THEN
        RETURN fn;
    END IF;
    fn := format('pgagent.%I', '_run_as_' || r.oid::text);
    EXECUTE format($f$CREATE FUNCTION %s(call text, args jsonb) RETURNS jsonb
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $b$
        DECLARE result jsonb;
        BEGIN
            EXECUTE call INTO result USING args;
            RETURN result;
        END $b$ $f$, fn);
    EXECUTE format('REVOKE ALL ON FUNCTION %s(text, jsonb) FROM PUBLIC', fn);
    EXECUTE format('ALTER FUNCTION %s(text, jsonb) OWNER TO %I', fn, role_name);
    EXECUTE format('COMMENT ON FUNCTION %s(text, jsonb) IS %L', fn,
                   'Internal (pgagent function tools that run as ' || role_name || '): run one built call as that role.');
    RETURN fn;
END $$;
COMMENT ON FUNCTION pgagent._runner(name) IS
  'Internal (owner only): the SECURITY DEFINER function, owned by role_name, through which function tools run as that role; created on first use. Refuses superuser and BYPASSRLS roles (42501).';

-- The sandbox's runner ships with the extension (function tools run as pgagent_sandbox by default).
CREATE OR REPLACE FUNCTION pgagent._run_as_sandbox(call text, args jsonb) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE result jsonb;
BEGIN
    EXECUTE call INTO result USING args;
    RETURN result;
END $$;
COMMENT ON FUNCTION pgagent._run_as_sandbox(text, jsonb) IS
  'Internal (function tools that run as pgagent_sandbox, the default): run one built call as that role.';
ALTER FUNCTION pgagent._run_as_sandbox(text, jsonb) OWNER TO pgagent_sandbox;

CREATE OR REPLACE FUNCTION pgagent._require(grp text) RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT (coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = pgagent._outer_user()), false)
            OR pg_catalog.pg_has_role(pgagent._outer_user(), 'pgagent_' || grp, 'MEMBER')) THEN
        RAISE EXCEPTION 'pgagent: role "%" is not a member of pgagent_%', pgagent._outer_user(), grp
          USING ERRCODE = 'insufficient_privilege', DETAIL = format('This function needs the pgagent_%s role.', grp),
                HINT = format('Ask an admin to GRANT pgagent_%s TO %I.', grp, pgagent._outer_user());
    END IF;
END $$;
COMMENT ON FUNCTION pgagent._require(text) IS
  'Internal: raise 42501 unless the session''s outer role is a superuser or a member of pgagent_<grp>.';

-- ---------------------------------------------------------------------------- row level security
ALTER TABLE pgagent.tenant ENABLE ROW LEVEL SECURITY;
ALTER TABLE pgagent.tenant FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_select ON pgagent.tenant;
CREATE POLICY tenant_select ON pgagent.tenant FOR SELECT
  USING (pgagent._is_member(role_name)
         OR EXISTS (SELECT 1 FROM pgagent.tenant_member m WHERE m.tenant_id = tenant.tenant_id));

ALTER TABLE pgagent.tenant_member ENABLE ROW LEVEL SECURITY;
ALTER TABLE pgagent.tenant_member FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS member_select ON pgagent.tenant_member;
CREATE POLICY member_select ON pgagent.tenant_member FOR SELECT USING (pgagent._is_member(role_name));

DO $$
DECLARE
    t text;
    same constant text := 'tenant_id = (SELECT pgagent.current_tenant())';
BEGIN
  FOREACH t IN ARRAY ARRAY['model','persona','tool','agent','agent_tool','conversation','turn','step',
                           'audit_event','secret','intervention','rating','flag','budget','budget_usage',
                           'budget_hold','hook','agent_daily','worker','schedule','schedule_firing',
                           'insert_trigger','collection','document','chunk','kg_entity','kg_relation',
                           'kg_extraction','eval_suite','eval_case','eval_run','eval_result','team','discussion',
                           'discussion_turn','api_key'] LOOP
    EXECUTE format('ALTER TABLE pgagent.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE pgagent.%I FORCE ROW LEVEL SECURITY', t);
    -- reads only: no tenant role may write (no grants, no policies); the API functions run
    -- as the extension owner, a superuser, who bypasses row level security and names the
    -- tenant in every statement
    EXECUTE format('DROP POLICY IF EXISTS tenant_select ON pgagent.%I', t);
    EXECUTE format('CREATE POLICY tenant_select ON pgagent.%I FOR SELECT USING (%s)', t, same);
  END LOOP;
END $$;

-- Memories: a user's (scope user or conversation) are read by that user and the tenant's
-- admins only; an agent's (scope agent, no owner) by every member of the tenant.
ALTER TABLE pgagent.memory ENABLE ROW LEVEL SECURITY;
ALTER TABLE pgagent.memory FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS memory_select ON pgagent.memory;
CREATE POLICY memory_select ON pgagent.memory FOR SELECT
  USING (tenant_id = (SELECT pgagent.current_tenant())
         AND (owner IS NULL OR owner = pgagent._outer_user() OR pgagent._outer_is_member('pgagent_admin')));

-- ---------------------------------------------------------------------------- grants
-- Tenant roles read (row level security limits them to their tenant) and call API functions;
-- they hold no INSERT, UPDATE, DELETE or TRUNCATE on any pgagent table.
REVOKE ALL ON ALL TABLES IN SCHEMA pgagent FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA pgagent FROM PUBLIC;
REVOKE ALL ON ALL ROUTINES IN SCHEMA pgagent FROM PUBLIC;
REVOKE ALL ON SCHEMA pgagent FROM PUBLIC;

GRANT USAGE ON SCHEMA pgagent TO pgagent_viewer;

-- viewer: read its tenants' rows (views are security_invoker, so the tables they read too).
-- The functions row level security and the verifiers call run as the reader, so it needs them.
GRANT SELECT ON pgagent.turn_timeline, pgagent.pending_approvals, pgagent.turn_summary, pgagent.agent_stats
   TO pgagent_viewer;
GRANT SELECT ON pgagent.tenant, pgagent.tenant_member, pgagent.model, pgagent.persona, pgagent.tool,
                pgagent.agent, pgagent.agent_tool, pgagent.conversation, pgagent.turn, pgagent.step,
                pgagent.audit_event, pgagent.intervention, pgagent.rating, pgagent.flag, pgagent.budget,
                pgagent.budget_usage, pgagent.budget_hold, pgagent.hook, pgagent.agent_daily, pgagent.worker,
                pgagent.schedule, pgagent.schedule_firing, pgagent.insert_trigger, pgagent.memory,
                pgagent.collection, pgagent.document, pgagent.chunk, pgagent.kg_entity,
                pgagent.kg_relation, pgagent.kg_extraction, pgagent.eval_suite, pgagent.eval_case, pgagent.eval_run,
                pgagent.eval_result, pgagent.team, pgagent.discussion, pgagent.discussion_turn
   TO pgagent_viewer;
GRANT EXECUTE ON FUNCTION pgagent.current_tenant(), pgagent.default_tenant_id(), pgagent._is_member(name),
                          pgagent._outer_user(), pgagent._outer_is_member(name),
                          pgagent.verify_audit_chain(uuid), pgagent._audit_hash(pgagent.audit_event),
                          pgagent.verify_turn(bigint), pgagent._step_hash(pgagent.step)
   TO pgagent_viewer;
-- admins see which secrets exist, never the ciphertext
GRANT SELECT (tenant_id, name, created_by, created_at, updated_at) ON pgagent.secret TO pgagent_admin;
-- ... and their API keys, never the hashes
GRANT SELECT (tenant_id, key_id, name, prefix, role_name, rate_per_min, created_by, created_at, last_used_at,
              revoked_at, revoked_by) ON pgagent.api_key TO pgagent_admin;
GRANT EXECUTE ON FUNCTION pgagent.add_tenant(text, name, text) TO pgagent_admin;
-- Every other grant of an API function stands beside the function (sql/40_api.sql). Internal
-- functions (_py, _load, _audit, _llm_call, _secret_*, _kek, _runner, _run_as_*, _sandbox_query,
-- _require) are the owner's only.
