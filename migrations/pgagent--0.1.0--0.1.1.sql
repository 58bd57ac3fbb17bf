-- pgagent 0.1.0 -> 0.1.1: what replaying sql/*.sql (all files but 10_tables.sql, appended to this
-- file by make) cannot do by itself: change tables, backfill the new columns, and drop what the
-- replay cannot replace (a changed signature, result type or kind, a removed object, the views
-- that block column type changes, the write policies of 0.1.0). Runs before the replay, so it
-- must not rely on the replay's objects; drop with IF EXISTS.

-- ---------------------------------------------------------------------------- drops
-- Recreated by the replay (50_views.sql). They read turn and step columns whose types change
-- below, and agent_stats' token columns change type themselves (numeric -> bigint).
DROP VIEW IF EXISTS pgagent.turn_timeline, pgagent.pending_approvals, pgagent.turn_summary, pgagent.agent_stats;

-- New signature: start_conversation gained user_id (the replay creates the 4-argument one).
DROP FUNCTION IF EXISTS pgagent.start_conversation(text, text, jsonb);
-- New result type: add_member returns boolean (was void).
DROP FUNCTION IF EXISTS pgagent.add_member(text, name);

-- 0.1.0's policies that let tenant roles write; in 0.1.1 only the API writes (the replay keeps
-- the SELECT policies, and its privilege reset takes the table write grants away).
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['model','persona','tool','agent','agent_tool','conversation','turn','step',
                           'audit_event','secret'] LOOP
    EXECUTE format('DROP POLICY IF EXISTS tenant_insert ON pgagent.%I', t);
    EXECUTE format('DROP POLICY IF EXISTS tenant_update ON pgagent.%I', t);
    EXECUTE format('DROP POLICY IF EXISTS tenant_delete ON pgagent.%I', t);
  END LOOP;
END $$;
DROP POLICY IF EXISTS member_insert ON pgagent.tenant_member;
DROP POLICY IF EXISTS admin_insert ON pgagent.egress_allow;
DROP POLICY IF EXISTS admin_delete ON pgagent.egress_allow;

-- ---------------------------------------------------------------------------- tables
-- New columns are appended (a fresh install has them in other positions; nothing depends on
-- column order). Defaults that call pgagent functions are set by the replay (20_tenancy.sql).
ALTER TABLE pgagent.model ADD COLUMN enabled boolean NOT NULL DEFAULT true;
ALTER TABLE pgagent.tool ADD COLUMN enabled boolean NOT NULL DEFAULT true;
ALTER TABLE pgagent.agent ADD COLUMN enabled boolean NOT NULL DEFAULT true;

ALTER TABLE pgagent.persona ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- turn's (conversation, seq) key leads with conversation_id now (see 10_tables.sql: a generic
-- plan of step's foreign-key check could pick the old (tenant_id, ...) index and walk the tenant)
ALTER TABLE pgagent.turn DROP CONSTRAINT IF EXISTS turn_tenant_id_conversation_id_seq_key,
    ADD CONSTRAINT turn_conversation_seq UNIQUE (conversation_id, seq, tenant_id);
UPDATE pgagent.persona SET updated_at = created_at;   -- create_persona of 0.1.0 kept no update time

ALTER TABLE pgagent.conversation ADD COLUMN user_id text CHECK (length(user_id) BETWEEN 1 AND 256);
CREATE INDEX conversation_user ON pgagent.conversation (tenant_id, user_id) WHERE user_id IS NOT NULL;

ALTER TABLE pgagent.turn
  ALTER COLUMN prompt_tokens TYPE bigint,
  ALTER COLUMN completion_tokens TYPE bigint,
  ALTER COLUMN cost_usd TYPE numeric(20,8);

ALTER TABLE pgagent.step
  ALTER COLUMN prompt_tokens TYPE bigint,
  ALTER COLUMN completion_tokens TYPE bigint,
  ALTER COLUMN cost_usd TYPE numeric(20,8),
  ADD COLUMN prev_hash bytea,
  ADD COLUMN hash bytea;

-- ---------------------------------------------------------------------------- step hash chain
-- Link every existing step into its turn's chain, in seq order, exactly as the step_chain
-- trigger does for new steps, so that pgagent.verify_turn is ok for turns of 0.1.0. The same
-- definition as in 30_triggers.sql (which the replay runs again).
CREATE OR REPLACE FUNCTION pgagent._step_hash(s pgagent.step) RETURNS bytea
LANGUAGE sql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.sha256(coalesce(s.prev_hash, '\x'::bytea) || pg_catalog.convert_to(
             pg_catalog.jsonb_build_array(s.tenant_id, s.step_id, s.turn_id, s.seq, s.kind, s.payload,
                 s.parent_step_id, s.tool_call_id, s.tool_name, s.prompt_tokens, s.completion_tokens,
                 s.cost_usd, s.latency_ms, s.created_by,
                 pg_catalog.to_char(s.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text, 'UTF8'))
$$;

-- step_no_update_delete refuses every UPDATE; this one is the migration's.
ALTER TABLE pgagent.step DISABLE TRIGGER step_no_update_delete;
DO $$
DECLARE
    s      pgagent.step;
    tenant uuid;
    turn   bigint;
    prev   bytea;
BEGIN
    FOR s IN SELECT * FROM pgagent.step ORDER BY tenant_id, turn_id, seq LOOP
        IF s.tenant_id IS DISTINCT FROM tenant OR s.turn_id IS DISTINCT FROM turn THEN
            tenant := s.tenant_id;
            turn := s.turn_id;
            prev := NULL;
        END IF;
        s.prev_hash := prev;
        s.hash := pgagent._step_hash(s);
        UPDATE pgagent.step x SET prev_hash = s.prev_hash, hash = s.hash
         WHERE x.tenant_id = s.tenant_id AND x.step_id = s.step_id;
        prev := s.hash;
    END LOOP;
END $$;
ALTER TABLE pgagent.step ENABLE TRIGGER step_no_update_delete;
ALTER TABLE pgagent.step ALTER COLUMN hash SET NOT NULL;
