-- Events (issue 8): a NOTIFY on the tenant's channel for every step, every turn status change and
-- every operator intervention, sent by the writing transaction and so delivered when it commits
-- (under CALL run_turn: as each step commits; under send_message: all at the end), in commit
-- order. The payload holds ids and kinds only, never content: NOTIFY is not covered by row level
-- security, so a listener reads content through the views, as itself. The channel name is
-- 'pgagent_events_' || tenant.events_key, an unguessable key only the tenant's members can read
-- (pgagent.event_channel()). See docs/events.md. Replayable.

CREATE OR REPLACE FUNCTION pgagent.event_channel(tenant text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ch text;
BEGIN
    SELECT 'pgagent_events_' || t.events_key INTO ch
      FROM pgagent.tenant t
     WHERE t.tenant_id = CASE WHEN tenant IS NULL THEN pgagent.current_tenant()
                              WHEN tenant ~* '^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$' THEN tenant::uuid END
        OR (tenant IS NOT NULL AND t.name = tenant);
    IF ch IS NULL THEN
        RAISE EXCEPTION 'unknown tenant %', tenant USING ERRCODE = '42704',
              HINT = 'Give the name or id of a tenant you belong to, or nothing for the current tenant.';
    END IF;
    RETURN ch;
END $$;
COMMENT ON FUNCTION pgagent.event_channel(text) IS
  'The NOTIFY channel of a tenant (its name or id; default: the current tenant): LISTEN to it for step, turn and intervention events (JSON payloads of ids and kinds, no content; docs/events.md). Runs as the caller: row level security on pgagent.tenant limits it to tenants the caller belongs to. Raises 42704 for a tenant the caller cannot see.';
REVOKE ALL ON FUNCTION pgagent.event_channel(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.event_channel(text) TO pgagent_viewer;

-- The triggers below look the channel up with one cached query each (a SQL function with a
-- pinned search_path would not be inlined and would be planned again in every transaction). They
-- are SECURITY DEFINER: they read the tenant and turn rows whoever the writer is.

-- A step's event is sent by the step's BEFORE INSERT trigger, pgagent.step_chain (sql/30_triggers.sql).

CREATE OR REPLACE FUNCTION pgagent.turn_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text := (SELECT n.events_key FROM pgagent.tenant n WHERE n.tenant_id = NEW.tenant_id);
BEGIN
    PERFORM pg_notify('pgagent_events_' || k,
                      json_build_object('type', 'turn', 'tenant_id', NEW.tenant_id,
                                        'conversation_id', NEW.conversation_id, 'turn_id', NEW.turn_id,
                                        'status', NEW.status,
                                        'previous_status', CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END)::text);
    -- workers (pgagent worker) listen to the queue channel only: one wake-up per queued turn,
    -- not one per step
    IF NEW.status = 'queued' THEN
        PERFORM pg_notify('pgagent_queue_' || k, NEW.turn_id::text);
    END IF;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION pgagent.turn_event() FROM PUBLIC;
COMMENT ON FUNCTION pgagent.turn_event() IS
  'Trigger: NOTIFY the tenant''s channel when a turn is created or its status changes: {"type": "turn", tenant_id, conversation_id, turn_id, status, previous_status}; when it becomes queued, also the tenant''s queue channel pgagent_queue_<events_key> (payload: the turn_id), which workers listen to.';
DROP TRIGGER IF EXISTS turn_event_insert ON pgagent.turn;
CREATE TRIGGER turn_event_insert AFTER INSERT ON pgagent.turn FOR EACH ROW EXECUTE FUNCTION pgagent.turn_event();
DROP TRIGGER IF EXISTS turn_event_update ON pgagent.turn;
CREATE TRIGGER turn_event_update AFTER UPDATE OF status ON pgagent.turn FOR EACH ROW
  WHEN (OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION pgagent.turn_event();

CREATE OR REPLACE FUNCTION pgagent.intervention_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_notify((SELECT 'pgagent_events_' || n.events_key FROM pgagent.tenant n
                         WHERE n.tenant_id = NEW.tenant_id),
                      json_build_object('type', 'intervention', 'tenant_id', NEW.tenant_id,
                                        'conversation_id', NEW.conversation_id, 'turn_id', NEW.turn_id,
                                        'intervention_id', NEW.intervention_id, 'action', NEW.action)::text);
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION pgagent.intervention_event() FROM PUBLIC;
COMMENT ON FUNCTION pgagent.intervention_event() IS
  'Trigger: NOTIFY the tenant''s channel of an operator intervention: {"type": "intervention", tenant_id, conversation_id, turn_id, intervention_id, action}.';
DROP TRIGGER IF EXISTS intervention_event ON pgagent.intervention;
CREATE TRIGGER intervention_event AFTER INSERT ON pgagent.intervention FOR EACH ROW
  EXECUTE FUNCTION pgagent.intervention_event();
