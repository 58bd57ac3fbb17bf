-- Egress policy for http tools: the per-tenant host allowlist (admins) and the networks exempted
-- from the private-address block (superusers only). See docs/security.md, "HTTP tool and egress".

-- The tables egress_allow and egress_exception are in 10_tables.sql.

-- ---------------------------------------------------------------------------- functions
CREATE OR REPLACE FUNCTION pgagent._egress_host(host text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE h text := rtrim(lower(btrim(host)), '.');
BEGIN
    IF h ~ '^\[.*\]$' THEN
        h := substr(h, 2, length(h) - 2);
    END IF;
    IF h IS NULL OR h = '' OR h ~ '[/@\s]' OR (strpos(h, ':') > 0 AND h !~ '^[0-9a-f:.]+$') THEN
        h := NULL;
    ELSIF strpos(h, ':') > 0 THEN
        BEGIN
            h := pg_catalog.host(h::inet);   -- canonical IPv6 text, as the tool normalizes URLs
        EXCEPTION WHEN invalid_text_representation THEN
            h := NULL;                       -- e.g. 203.0.113.7:8080
        END;
    END IF;
    IF h IS NULL THEN
        RAISE EXCEPTION 'pgagent: "%" is not a host', host
          USING ERRCODE = 'invalid_parameter_value', DETAIL = 'The allowlist holds host names and IP addresses only.',
                HINT = 'Give a bare host name or IP address such as api.example.com, *.example.com or 203.0.113.7, without scheme, port or path.';
    END IF;
    RETURN h;
END $$;
COMMENT ON FUNCTION pgagent._egress_host(text) IS
  'Internal: the allowlist form of a host (trimmed, lower case, no trailing dot or IPv6 brackets, canonical IPv6 text); 22023 for something that is not a bare host (scheme, port, path, user).';

CREATE OR REPLACE FUNCTION pgagent.allow_egress(host text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    h   text := pgagent._egress_host(allow_egress.host);
    added boolean;
BEGIN
    PERFORM pgagent._require('admin');
    INSERT INTO pgagent.egress_allow (tenant_id, host) VALUES (pgagent.current_tenant(), h)
    ON CONFLICT DO NOTHING;
    added := FOUND;
    PERFORM pgagent._audit('egress_allowed', 'egress_allow', h, pg_catalog.jsonb_build_object('new', added));
    RETURN added;
END $$;
COMMENT ON FUNCTION pgagent.allow_egress(text) IS
  'Admin: let the current tenant''s http tools call host (an exact host name or IP literal, or "*.suffix"; no scheme, port or path). Returns false if it was already allowed. Audited (egress_allowed). Resolved addresses must still be public unless a superuser added an egress_exception.';

CREATE OR REPLACE FUNCTION pgagent.revoke_egress(host text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    h       text := pgagent._egress_host(revoke_egress.host);
    removed boolean;
BEGIN
    PERFORM pgagent._require('admin');
    DELETE FROM pgagent.egress_allow a WHERE a.tenant_id = pgagent.current_tenant() AND a.host = h;
    removed := FOUND;
    PERFORM pgagent._audit('egress_revoked', 'egress_allow', h, pg_catalog.jsonb_build_object('removed', removed));
    RETURN removed;
END $$;
COMMENT ON FUNCTION pgagent.revoke_egress(text) IS
  'Admin: remove host from the current tenant''s egress allowlist. Returns false if it was not there. Audited (egress_revoked).';

-- ---------------------------------------------------------------------------- row level security
ALTER TABLE pgagent.egress_allow ENABLE ROW LEVEL SECURITY;
ALTER TABLE pgagent.egress_allow FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_select ON pgagent.egress_allow;
CREATE POLICY tenant_select ON pgagent.egress_allow FOR SELECT
  USING (tenant_id = (SELECT pgagent.current_tenant()));

-- Only a SELECT policy: with row level security forced, no role but a superuser (who bypasses it)
-- can write, whatever is granted.
ALTER TABLE pgagent.egress_exception ENABLE ROW LEVEL SECURITY;
ALTER TABLE pgagent.egress_exception FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_select ON pgagent.egress_exception;
CREATE POLICY tenant_select ON pgagent.egress_exception FOR SELECT
  USING (tenant_id = (SELECT pgagent.current_tenant()));

-- ---------------------------------------------------------------------------- grants
REVOKE ALL ON pgagent.egress_allow, pgagent.egress_exception FROM PUBLIC;
REVOKE ALL ON FUNCTION pgagent._egress_host(text), pgagent.allow_egress(text), pgagent.revoke_egress(text) FROM PUBLIC;

-- viewer and up read their tenant's policy
GRANT SELECT ON pgagent.egress_allow, pgagent.egress_exception TO pgagent_viewer;
-- admin: manage the allowlist through the (SECURITY DEFINER, audited) functions only; nobody but
-- a superuser writes egress_exception
GRANT EXECUTE ON FUNCTION pgagent.allow_egress(text), pgagent.revoke_egress(text) TO pgagent_admin;
