-- Integrity triggers: the turn state machine and the append-only step log.

CREATE FUNCTION pgagent.turn_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.tenant_id <> OLD.tenant_id OR NEW.turn_id <> OLD.turn_id
       OR NEW.conversation_id <> OLD.conversation_id OR NEW.seq <> OLD.seq
       OR NEW.user_message <> OLD.user_message OR NEW.created_at <> OLD.created_at
       OR NEW.created_by <> OLD.created_by THEN
        RAISE EXCEPTION 'pgagent: a turn''s identity, message and creation are immutable'
          USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF OLD.status IN ('completed', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'pgagent: turn % is % and can no longer change', OLD.turn_id, OLD.status
          USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.status <> OLD.status AND NOT (
         (OLD.status = 'queued' AND NEW.status IN ('running', 'cancelled'))
      OR (OLD.status = 'running' AND NEW.status IN ('awaiting_approval', 'completed', 'failed', 'cancelled'))
      OR (OLD.status = 'awaiting_approval' AND NEW.status IN ('running', 'failed', 'cancelled'))) THEN
        RAISE EXCEPTION 'pgagent: invalid turn transition % -> %', OLD.status, NEW.status
          USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END $$;
COMMENT ON FUNCTION pgagent.turn_guard() IS
  'Trigger: enforces the turn state machine (queued -> running -> awaiting_approval -> running -> completed|failed|cancelled; terminal turns are frozen) and keeps identity columns immutable. Raises 23000.';
CREATE TRIGGER turn_guard BEFORE UPDATE ON pgagent.turn
  FOR EACH ROW EXECUTE FUNCTION pgagent.turn_guard();

CREATE FUNCTION pgagent.turn_insert_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.status NOT IN ('queued', 'running') THEN
        RAISE EXCEPTION 'pgagent: a new turn starts queued or running, not %', NEW.status
          USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION pgagent.turn_insert_guard() IS 'Trigger: a turn is born queued or running. Raises 23000.';
CREATE TRIGGER turn_insert_guard BEFORE INSERT ON pgagent.turn
  FOR EACH ROW EXECUTE FUNCTION pgagent.turn_insert_guard();

CREATE FUNCTION pgagent.step_append_only() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'pgagent: % is append-only (% refused)', TG_TABLE_NAME, TG_OP
      USING ERRCODE = 'insufficient_privilege';
END $$;
COMMENT ON FUNCTION pgagent.step_append_only() IS
  'Trigger: refuses UPDATE, DELETE and TRUNCATE on append-only logs. Raises 42501.';
CREATE TRIGGER step_no_update_delete BEFORE UPDATE OR DELETE ON pgagent.step
  FOR EACH ROW EXECUTE FUNCTION pgagent.step_append_only();
CREATE TRIGGER step_no_truncate BEFORE TRUNCATE ON pgagent.step
  FOR EACH STATEMENT EXECUTE FUNCTION pgagent.step_append_only();

CREATE FUNCTION pgagent.step_insert_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent pgagent.step;
BEGIN
    IF NEW.parent_step_id IS NOT NULL THEN
        SELECT * INTO parent FROM pgagent.step s
         WHERE s.tenant_id = NEW.tenant_id AND s.step_id = NEW.parent_step_id;
        IF parent.kind IS DISTINCT FROM 'tool_call' OR parent.turn_id <> NEW.turn_id THEN
            RAISE EXCEPTION 'pgagent: a % step must answer a tool_call step of the same turn', NEW.kind
              USING ERRCODE = 'foreign_key_violation';
        END IF;
        IF NEW.kind = 'tool_result' AND (NEW.tool_call_id <> parent.tool_call_id OR NEW.tool_name <> parent.tool_name) THEN
            RAISE EXCEPTION 'pgagent: tool_result does not match its tool_call (id/name)'
              USING ERRCODE = 'foreign_key_violation';
        END IF;
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION pgagent.step_insert_guard() IS
  'Trigger: a tool_result or approval must answer a tool_call step of the same turn, with the same tool_call_id and tool name. Raises 23503.';
CREATE TRIGGER step_insert_guard BEFORE INSERT ON pgagent.step
  FOR EACH ROW EXECUTE FUNCTION pgagent.step_insert_guard();
