-- The HTTP gateway (issue 13, python/pgagent_gateway/, docs/http.md): API keys. A key is
-- 'pga_' and 48 hex digits (24 random bytes); it is shown once, when it is created, and stored as
-- a bcrypt hash (pgcrypto's crypt with gen_salt('bf', 10)). Each key names the database role
-- its requests run as: the gateway authenticates the key (pgagent.authenticate_api_key, for
-- members of pgagent_gateway only), then SET ROLE to that role and SET pgagent.tenant to the
-- key's tenant, so row level security, budgets, hooks and the audit log apply to every request
-- exactly as they do in psql. Replayable.

-- the gateway's login role checks keys and warms its connections up; everything else it does as
-- the keys' roles
GRANT USAGE ON SCHEMA pgagent TO pgagent_gateway;

CREATE OR REPLACE FUNCTION pgagent.create_api_key(name text, role name DEFAULT NULL, rate_per_min integer DEFAULT 600)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    who    name := pgagent._outer_user();
    tid    uuid := pgagent.current_tenant();
    target name := coalesce(role, pgagent._outer_user());
    r      pg_catalog.pg_roles;
    secret text;
    id     bigint;
BEGIN
    IF name IS NULL OR name !~ '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'pgagent: key name % is not valid', coalesce(pg_catalog.quote_literal(name), 'NULL')
          USING ERRCODE = '22023', HINT = 'A key name is 1 to 63 letters, digits, _ . or -, e.g. ''billing-app''.';
    END IF;
    IF rate_per_min IS NULL OR rate_per_min NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'pgagent: rate_per_min must be from 1 to 1000000, got %', rate_per_min USING ERRCODE = '22023';
    END IF;
    SELECT * INTO r FROM pg_catalog.pg_roles x WHERE x.rolname = target;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgagent: role "%" does not exist', target USING ERRCODE = '42704';
    END IF;
    IF r.rolsuper THEN
        RAISE EXCEPTION 'pgagent: an API key may not act as the superuser "%"', target USING ERRCODE = '42501';
    END IF;
    -- a key lends the role to whoever holds it: only a role the issuing admin may itself become
    IF NOT pg_catalog.pg_has_role(who, r.oid, 'MEMBER') THEN
        RAISE EXCEPTION 'pgagent: role "%" may not issue keys for role "%"', who, target
          USING ERRCODE = '42501', DETAIL = 'An admin issues keys only for roles it is a member of (itself included).';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pgagent.tenant t
                    WHERE t.tenant_id = tid
                      AND EXISTS (SELECT 1 FROM pg_catalog.pg_roles g
                                   WHERE (g.rolname = t.role_name
                                          OR g.rolname IN (SELECT m.role_name FROM pgagent.tenant_member m
                                                            WHERE m.tenant_id = t.tenant_id))
                                     AND pg_catalog.pg_has_role(r.oid, g.oid, 'MEMBER'))) THEN
        RAISE EXCEPTION 'pgagent: role "%" does not belong to this tenant', target
          USING ERRCODE = '22023', HINT = 'Grant it the tenant''s role, or pgagent.add_member it first.';
    END IF;
    EXECUTE format('SELECT ''pga_'' || pg_catalog.encode(%I.gen_random_bytes(24), ''hex'')', pgagent._pgcrypto())
       INTO secret;
    EXECUTE format('INSERT INTO pgagent.api_key (tenant_id, name, prefix, hash, role_name, rate_per_min, created_by)
                    VALUES ($1, $2, pg_catalog.left($3, 12), %I.crypt($3, %I.gen_salt(''bf'', 10)), $4, $5, $6)
                    RETURNING key_id', pgagent._pgcrypto(), pgagent._pgcrypto())
       INTO id USING tid, name, secret, target, rate_per_min, who;
    PERFORM pgagent._audit('api_key_created', 'api_key', id::text,
                           pg_catalog.jsonb_build_object('name', name, 'role', target, 'prefix', pg_catalog.left(secret, 12),
                                                         'rate_per_min', rate_per_min));
    RETURN secret;
EXCEPTION WHEN unique_violation THEN
    RAISE EXCEPTION 'pgagent: an API key named "%" exists already', name
      USING ERRCODE = '23505', HINT = 'Revoke it (pgagent.revoke_api_key) or choose another name.';
END $$;
COMMENT ON FUNCTION pgagent.create_api_key(text, name, integer) IS
  'Admin: create an API key for the HTTP gateway (pgagent serve) and return it; it is shown only now (stored as a bcrypt hash). Requests with it run as role (default: the caller), which must belong to the current tenant, must not be a superuser, and must be a role the caller is a member of. rate_per_min: requests per minute the gateway allows the key. Audited (api_key_created). Raises 22023, 42704, 42501, 23505. See docs/http.md.';
REVOKE ALL ON FUNCTION pgagent.create_api_key(text, name, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.create_api_key(text, name, integer) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.revoke_api_key(name text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE id bigint;
BEGIN
    UPDATE pgagent.api_key k SET revoked_at = pg_catalog.now(), revoked_by = pgagent._outer_user()
     WHERE k.tenant_id = pgagent.current_tenant() AND k.name = revoke_api_key.name AND k.revoked_at IS NULL
    RETURNING k.key_id INTO id;
    IF id IS NULL THEN
        RAISE EXCEPTION 'pgagent: no live API key named "%" (for this tenant)', name USING ERRCODE = '42704';
    END IF;
    PERFORM pgagent._audit('api_key_revoked', 'api_key', id::text, pg_catalog.jsonb_build_object('name', name));
    RETURN true;
END $$;
COMMENT ON FUNCTION pgagent.revoke_api_key(text) IS
  'Admin: revoke the current tenant''s API key of that name; the gateway refuses it from its next authentication (at most its cache time, 60 s, later). Audited (api_key_revoked). Raises 42704.';
REVOKE ALL ON FUNCTION pgagent.revoke_api_key(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.revoke_api_key(text) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.authenticate_api_key(key text)
RETURNS TABLE (key_id bigint, tenant_id uuid, tenant text, role_name name, rate_per_min integer)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE k record;
BEGIN
    IF key IS NULL OR key !~ '^pga_[0-9a-f]{48}$' THEN
        RETURN;
    END IF;
    FOR k IN SELECT a.tenant_id, a.key_id, a.hash, a.role_name, a.rate_per_min, a.last_used_at, t.name
               FROM pgagent.api_key a JOIN pgagent.tenant t ON t.tenant_id = a.tenant_id
              WHERE a.prefix = pg_catalog.left(key, 12) AND a.revoked_at IS NULL LOOP
        IF pgagent._api_key_matches(key, k.hash) THEN
            IF k.last_used_at IS NULL OR k.last_used_at < pg_catalog.now() - interval '1 minute' THEN
                UPDATE pgagent.api_key a SET last_used_at = pg_catalog.now()
                 WHERE a.tenant_id = k.tenant_id AND a.key_id = k.key_id;
            END IF;
            key_id := k.key_id; tenant_id := k.tenant_id; tenant := k.name; role_name := k.role_name;
            rate_per_min := k.rate_per_min;
            RETURN NEXT;
            RETURN;
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION pgagent.authenticate_api_key(text) IS
  'Gateway (members of pgagent_gateway): the live API key that key is, as (key_id, tenant_id, tenant, role_name, rate_per_min), or no row (an unknown, malformed or revoked key: the same answer). Checks the bcrypt hash (about 50 ms, on purpose) and records last_used_at at most once a minute. The gateway then runs the request as role_name in tenant.';
REVOKE ALL ON FUNCTION pgagent.authenticate_api_key(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.authenticate_api_key(text) TO pgagent_gateway;

CREATE OR REPLACE FUNCTION pgagent._api_key_matches(key text, hash text) RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE ok boolean;
BEGIN
    EXECUTE format('SELECT %I.crypt($1, $2) = $2', pgagent._pgcrypto()) INTO ok USING key, hash;
    RETURN ok;
END $$;
COMMENT ON FUNCTION pgagent._api_key_matches(text, text) IS 'Internal (no grants): whether key matches a bcrypt hash of pgagent.api_key.';
REVOKE ALL ON FUNCTION pgagent._api_key_matches(text, text) FROM PUBLIC;

CREATE OR REPLACE VIEW pgagent.api_keys WITH (security_invoker = true) AS
SELECT k.tenant_id, k.key_id, k.name, k.prefix, k.role_name, k.rate_per_min, k.created_by, k.created_at,
       k.last_used_at, k.revoked_at, k.revoked_by, k.revoked_at IS NULL AS live
  FROM pgagent.api_key k;
COMMENT ON VIEW pgagent.api_keys IS
  'Admins: the tenant''s API keys for the HTTP gateway (never the key or its hash: prefix is its first 12 characters, to recognise it).';
COMMENT ON COLUMN pgagent.api_keys.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.api_keys.key_id IS 'The key.';
COMMENT ON COLUMN pgagent.api_keys.name IS 'Its name, unique in the tenant.';
COMMENT ON COLUMN pgagent.api_keys.prefix IS 'The key''s first 12 characters (pga_ and 8 hex digits).';
COMMENT ON COLUMN pgagent.api_keys.role_name IS 'The database role its requests run as.';
COMMENT ON COLUMN pgagent.api_keys.rate_per_min IS 'Requests per minute the gateway allows it.';
COMMENT ON COLUMN pgagent.api_keys.created_by IS 'The admin who created it.';
COMMENT ON COLUMN pgagent.api_keys.created_at IS 'When it was created.';
COMMENT ON COLUMN pgagent.api_keys.last_used_at IS 'When the gateway last authenticated it (to the minute).';
COMMENT ON COLUMN pgagent.api_keys.revoked_at IS 'When it was revoked (NULL: live).';
COMMENT ON COLUMN pgagent.api_keys.revoked_by IS 'Who revoked it.';
COMMENT ON COLUMN pgagent.api_keys.live IS 'Whether it is still accepted.';
GRANT SELECT ON pgagent.api_keys TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent._warm_up() RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN pgagent._load();
END $$;
COMMENT ON FUNCTION pgagent._warm_up() IS
  'Gateway (members of pgagent_gateway): import the pgagent_core package into this session now (about 200 ms), so that the first request a pooled connection serves does not wait for it. Reads and changes nothing; returns the package version.';
REVOKE ALL ON FUNCTION pgagent._warm_up() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent._warm_up() TO pgagent_gateway;
