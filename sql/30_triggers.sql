-- Integrity triggers: the turn state machine and the append-only step log.

CREATE OR REPLACE FUNCTION pgagent.turn_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.tenant_id <> OLD.tenant_id OR NEW.turn_id <> OLD.turn_id
       OR NEW.conversation_id <> OLD.conversation_id OR NEW.seq <> OLD.seq
       OR NEW.user_message <> OLD.user_message OR NEW.created_at <> OLD.created_at
       OR NEW.created_by <> OLD.created_by THEN
        RAISE EXCEPTION 'pgagent: a turn''s identity, message and creation are immutable'
          USING ERRCODE = 'integrity_constraint_violation',
                DETAIL = 'tenant_id, turn_id, conversation_id, seq, user_message, created_at and created_by never change.',
                HINT = 'Start a new turn with pgagent.send_message instead.';
    END IF;
    -- Terminal turns are frozen, except: a failed turn may be queued again (pgagent.retry_turn),
    -- and a completed turn's answer may be replaced by the content of its latest
    -- override_response intervention step, which pgagent.override_response writes first (the
    -- model's answer stays in its response step).
    IF OLD.status IN ('completed', 'failed', 'cancelled')
       AND NOT (OLD.status = 'failed' AND NEW.status = 'queued')
       AND NOT (OLD.status = 'completed' AND NEW.status = 'completed'
                AND (NEW.llm_calls, NEW.prompt_tokens, NEW.completion_tokens, NEW.cost_usd, NEW.error, NEW.finished_at)
                    IS NOT DISTINCT FROM
                    (OLD.llm_calls, OLD.prompt_tokens, OLD.completion_tokens, OLD.cost_usd, OLD.error, OLD.finished_at)
                AND (NEW.answer IS NOT DISTINCT FROM OLD.answer
                     OR NEW.answer IS NOT DISTINCT FROM (
                          SELECT s.payload ->> 'content' FROM pgagent.step s
                           WHERE s.tenant_id = OLD.tenant_id AND s.turn_id = OLD.turn_id AND s.kind = 'intervention'
                             AND s.payload ->> 'action' = 'override_response'
                           ORDER BY s.seq DESC LIMIT 1)))
    THEN
        RAISE EXCEPTION 'pgagent: turn % is % and can no longer change', OLD.turn_id, OLD.status
          USING ERRCODE = 'integrity_constraint_violation', DETAIL = 'Completed, failed and cancelled turns are frozen.',
                HINT = 'Send a new message to continue the conversation (or pgagent.retry_turn a failed turn).';
    END IF;
    IF NEW.status <> OLD.status AND NOT (
         (OLD.status = 'queued' AND NEW.status IN ('running', 'paused', 'cancelled'))
      OR (OLD.status = 'running' AND NEW.status IN ('awaiting_approval', 'paused', 'completed', 'failed', 'cancelled'))
      OR (OLD.status = 'awaiting_approval' AND NEW.status IN ('running', 'paused', 'failed', 'cancelled'))
      OR (OLD.status = 'paused' AND NEW.status IN ('queued', 'cancelled'))
      OR (OLD.status = 'failed' AND NEW.status = 'queued')) THEN
        RAISE EXCEPTION 'pgagent: invalid turn transition % -> %', OLD.status, NEW.status
          USING ERRCODE = 'integrity_constraint_violation',
                DETAIL = 'queued -> running -> awaiting_approval -> running -> completed | failed | cancelled; queued, running or awaiting_approval -> paused -> queued; failed -> queued (retry).',
                HINT = 'Turns change state through the loop only (send_message, run_turn, approve_step, cancel_turn, pause_conversation, retry_turn).';
    END IF;
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END $$;
COMMENT ON FUNCTION pgagent.turn_guard() IS
  'Trigger: enforces the turn state machine (queued -> running -> awaiting_approval -> running -> completed|failed|cancelled; queued|running|awaiting_approval -> paused -> queued|cancelled; failed -> queued by retry_turn; terminal turns are otherwise frozen, except a completed turn''s answer, to the content of its latest override_response intervention step) and keeps identity columns immutable. Raises 23000.';
CREATE OR REPLACE TRIGGER turn_guard BEFORE UPDATE ON pgagent.turn
  FOR EACH ROW EXECUTE FUNCTION pgagent.turn_guard();

CREATE OR REPLACE FUNCTION pgagent.turn_insert_guard() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.status NOT IN ('queued', 'running') THEN
        RAISE EXCEPTION 'pgagent: a new turn starts queued or running, not %', NEW.status
          USING ERRCODE = 'integrity_constraint_violation', DETAIL = 'Turns are created by send_message or enqueue_message.',
                HINT = 'Use pgagent.send_message or pgagent.enqueue_message.';
    END IF;
    RETURN NEW;
END $$;
COMMENT ON FUNCTION pgagent.turn_insert_guard() IS 'Trigger: a turn is born queued or running. Raises 23000.';
CREATE OR REPLACE TRIGGER turn_insert_guard BEFORE INSERT ON pgagent.turn
  FOR EACH ROW EXECUTE FUNCTION pgagent.turn_insert_guard();

CREATE OR REPLACE FUNCTION pgagent.step_append_only() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- pgagent.delete_conversation (an audited admin act) removes whole turns; nothing else may
    IF TG_TABLE_NAME IN ('step', 'intervention') AND TG_OP = 'DELETE' AND TG_LEVEL = 'ROW'
       AND pg_catalog.current_setting('pgagent.purging', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'pgagent: % is append-only (% refused)', TG_TABLE_NAME, TG_OP
      USING ERRCODE = 'insufficient_privilege', DETAIL = 'Steps and audit events are never changed or removed.',
            HINT = 'pgagent.delete_conversation removes a whole conversation (audited).';
END $$;
COMMENT ON FUNCTION pgagent.step_append_only() IS
  'Trigger: refuses UPDATE, DELETE and TRUNCATE on append-only logs (step, intervention, audit_event); only pgagent.delete_conversation may delete a whole conversation''s steps and interventions. Raises 42501.';
CREATE OR REPLACE TRIGGER step_no_update_delete BEFORE UPDATE OR DELETE ON pgagent.step
  FOR EACH ROW EXECUTE FUNCTION pgagent.step_append_only();
CREATE OR REPLACE TRIGGER step_no_truncate BEFORE TRUNCATE ON pgagent.step
  FOR EACH STATEMENT EXECUTE FUNCTION pgagent.step_append_only();
CREATE OR REPLACE TRIGGER intervention_no_update_delete BEFORE UPDATE OR DELETE ON pgagent.intervention
  FOR EACH ROW EXECUTE FUNCTION pgagent.step_append_only();
CREATE OR REPLACE TRIGGER intervention_no_truncate BEFORE TRUNCATE ON pgagent.intervention
  FOR EACH STATEMENT EXECUTE FUNCTION pgagent.step_append_only();

-- ---------------------------------------------------------------------------- the step hash chain
-- Inlinable on purpose (STABLE, no SET clause, every operator and type schema-qualified, so it
-- means the same under any search_path): the step_chain trigger calls it for every step.
CREATE OR REPLACE FUNCTION pgagent._step_hash(s pgagent.step) RETURNS bytea
LANGUAGE sql STABLE
AS $$
    SELECT pg_catalog.sha256(coalesce(s.prev_hash, '\x'::pg_catalog.bytea) OPERATOR(pg_catalog.||) pg_catalog.convert_to(
             pg_catalog.jsonb_build_array(s.tenant_id, s.step_id, s.turn_id, s.seq, s.kind, s.payload,
                 s.parent_step_id, s.tool_call_id, s.tool_name, s.prompt_tokens, s.completion_tokens,
                 s.cost_usd, s.latency_ms, s.created_by,
                 pg_catalog.to_char(s.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::pg_catalog.text, 'UTF8'))
$$;
COMMENT ON FUNCTION pgagent._step_hash(pgagent.step) IS
  'Internal: a step''s hash: sha256(prev_hash || every column but the hashes as a canonical JSON array). See pgagent.verify_turn.';

-- One BEFORE INSERT trigger does everything a new step needs (0.2.0; 0.1.x had step_insert_guard
-- and step_chain, and 0.2.0 first added an AFTER trigger step_event: three trigger calls and three
-- lookups per step, ~0.1 ms of every step, bench/results.md "Against the peers"):
--   1. a tool_result or approval answers a tool_call step of the same turn (same id and name);
--   2. the hash chain: prev_hash = the hash of the turn's step with the highest seq, created_at,
--      hash;
--   3. the event: a NOTIFY on the tenant's channel (sql/35_events.sql, docs/events.md). Sent from a
--      BEFORE trigger: if the INSERT then fails (a constraint, a foreign key), the statement's
--      (sub)transaction rolls back and its pending notifications with it, so only committed steps
--      are ever announced.
-- SECURITY DEFINER: it reads the turn's last step and the tenant's channel key whoever the writer is.
CREATE OR REPLACE FUNCTION pgagent.step_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parent record;
    cur record;
BEGIN
    IF NEW.parent_step_id IS NOT NULL THEN
        SELECT s.kind, s.turn_id, s.tool_call_id, s.tool_name INTO parent FROM pgagent.step s
         WHERE s.tenant_id = NEW.tenant_id AND s.step_id = NEW.parent_step_id;
        IF parent.kind IS DISTINCT FROM 'tool_call' OR parent.turn_id <> NEW.turn_id THEN
            RAISE EXCEPTION 'pgagent: a % step must answer a tool_call step of the same turn', NEW.kind
              USING ERRCODE = 'foreign_key_violation', DETAIL = 'parent_step_id must name a tool_call step of this turn.',
                    HINT = 'Steps are written by the loop only.';
        END IF;
        IF NEW.kind = 'tool_result' AND (NEW.tool_call_id <> parent.tool_call_id OR NEW.tool_name <> parent.tool_name) THEN
            RAISE EXCEPTION 'pgagent: tool_result does not match its tool_call (id/name)'
              USING ERRCODE = 'foreign_key_violation', DETAIL = 'A tool_result repeats its tool_call''s tool_call_id and tool_name.',
                    HINT = 'Steps are written by the loop only.';
        END IF;
    END IF;
    -- the turn's last step and the tenant's channel in one lookup
    SELECT l.hash, n.events_key, t.conversation_id INTO cur
      FROM pgagent.turn t JOIN pgagent.tenant n ON n.tenant_id = t.tenant_id
      LEFT JOIN LATERAL (SELECT s.hash FROM pgagent.step s
                          WHERE s.tenant_id = NEW.tenant_id AND s.turn_id = NEW.turn_id
                          ORDER BY s.seq DESC LIMIT 1) l ON true
     WHERE t.tenant_id = NEW.tenant_id AND t.turn_id = NEW.turn_id;
    IF NOT FOUND THEN   -- the foreign key to turn is checked at commit (sql/10_tables.sql); refuse at once
        RAISE EXCEPTION 'pgagent: turn % does not exist (for this tenant)', NEW.turn_id
          USING ERRCODE = 'foreign_key_violation', DETAIL = 'A step belongs to a turn of its tenant.',
                HINT = 'Steps are written by the loop only.';
    END IF;
    NEW.created_at := pg_catalog.clock_timestamp();
    NEW.prev_hash := cur.hash;
    NEW.hash := pgagent._step_hash(NEW);
    IF cur.events_key IS NOT NULL THEN
        PERFORM pg_catalog.pg_notify('pgagent_events_' || cur.events_key,
                    pg_catalog.json_build_object('type', 'step', 'tenant_id', NEW.tenant_id,
                        'conversation_id', cur.conversation_id, 'turn_id', NEW.turn_id, 'step_id', NEW.step_id,
                        'seq', NEW.seq, 'kind', NEW.kind, 'parent_step_id', NEW.parent_step_id)::text);
    END IF;
    RETURN NEW;
END $$;
REVOKE ALL ON FUNCTION pgagent.step_chain() FROM PUBLIC;
COMMENT ON FUNCTION pgagent.step_chain() IS
  'Trigger (BEFORE INSERT on step, the only one): checks that the step''s turn exists (raises 23503; the foreign key itself is checked at commit) and that a tool_result or approval answers a tool_call step of the same turn with the same tool_call_id and tool name (raises 23503); links the step into its turn''s hash chain (prev_hash = the hash of the step with the highest seq so far, hash) and stamps created_at; NOTIFYs the tenant''s channel: {"type": "step", tenant_id, conversation_id, turn_id, step_id, seq, kind, parent_step_id} (docs/events.md). A gap in seq is reported by pgagent.verify_turn.';
CREATE OR REPLACE TRIGGER step_chain BEFORE INSERT ON pgagent.step
  FOR EACH ROW EXECUTE FUNCTION pgagent.step_chain();

CREATE OR REPLACE FUNCTION pgagent.verify_turn(turn bigint)
RETURNS TABLE (ok boolean, steps bigint, first_broken_step_id bigint, problem text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s       pgagent.step;
    t       pgagent.turn;
    prev    bytea;
    n       bigint := 0;
    broken  bigint;
    why     text;
    calls   bigint := 0;
    ptok    bigint := 0;
    ctok    bigint := 0;
    cost    numeric := 0;
    answer  text;
BEGIN
    SELECT * INTO t FROM pgagent.turn x WHERE x.turn_id = verify_turn.turn;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pgagent: turn % does not exist (for this tenant)', verify_turn.turn
          USING ERRCODE = 'undefined_object', DETAIL = 'No visible turn has that id.',
                HINT = 'SELECT turn_id FROM pgagent.turn_summary lists the turns you may see.';
    END IF;
    FOR s IN SELECT * FROM pgagent.step x WHERE x.tenant_id = t.tenant_id AND x.turn_id = t.turn_id ORDER BY x.seq LOOP
        n := n + 1;
        IF broken IS NULL AND (s.seq <> n OR s.prev_hash IS DISTINCT FROM prev OR s.hash IS DISTINCT FROM pgagent._step_hash(s)) THEN
            broken := s.step_id;
            why := CASE WHEN s.seq <> n THEN format('step %s: seq %s where %s was expected', s.step_id, s.seq, n)
                        WHEN s.prev_hash IS DISTINCT FROM prev THEN format('step %s: prev_hash does not match the previous step''s hash', s.step_id)
                        ELSE format('step %s: hash does not match its contents', s.step_id) END;
        END IF;
        prev := s.hash;
        IF s.kind = 'llm_call' THEN
            calls := calls + 1;
            ptok := ptok + coalesce(s.prompt_tokens, 0);
            ctok := ctok + coalesce(s.completion_tokens, 0);
            cost := cost + coalesce(s.cost_usd, 0);
        ELSIF s.kind = 'response' THEN
            answer := s.payload ->> 'content';
        ELSIF s.kind = 'intervention' AND s.payload ->> 'action' = 'override_response' THEN
            answer := s.payload ->> 'content';
        END IF;
    END LOOP;
    IF why IS NULL AND (t.llm_calls <> calls OR t.prompt_tokens <> ptok OR t.completion_tokens <> ctok
                        OR abs(t.cost_usd - cost) > 0.000001) THEN
        why := format('turn %s: totals (llm_calls %s, tokens %s/%s, cost %s) differ from its steps (%s, %s/%s, %s)',
                      t.turn_id, t.llm_calls, t.prompt_tokens, t.completion_tokens, t.cost_usd, calls, ptok, ctok, cost);
    ELSIF why IS NULL AND t.status = 'completed' AND t.answer IS DISTINCT FROM answer THEN
        why := format('turn %s: the answer differs from its response step', t.turn_id);
    ELSIF why IS NULL AND t.status = 'completed' AND answer IS NULL THEN
        why := format('turn %s: completed without a response step', t.turn_id);
    END IF;
    RETURN QUERY SELECT why IS NULL, n, broken, why;
END $$;
COMMENT ON FUNCTION pgagent.verify_turn(bigint) IS
  'Check a turn''s integrity: recompute its steps'' hash chain (ok, the number of steps, the first step whose seq, prev_hash or hash does not match) and compare the turn''s totals (llm_calls, tokens, cost in USD) and answer with its steps (the last response step, or the last override_response intervention after it). problem says what is wrong (NULL when ok). Detects even a superuser''s edit of a step or of the turn row. Raises 42704 for a turn the caller cannot see.';

-- agent_daily (10_tables.sql): a turn counts there while its status is final (completed, failed,
-- cancelled), under its conversation's agent and the UTC day of its created_at. Every change of
-- such a turn (it becomes final, leaves a final status under retry_turn, its totals change, it is
-- deleted) takes its old contribution off and adds the new one, so the rollup always equals the
-- aggregate over the final turns (checked in tests/python/test_monitor.py).
-- SECURITY DEFINER: whoever changes a turn (the API runs as the owner; a superuser by hand), the
-- rollup, which no role may write, follows.
CREATE OR REPLACE FUNCTION pgagent.turn_rollup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r pgagent.turn;
    sign int;
    aid bigint;
BEGIN
    FOR i IN 1..2 LOOP
        IF i = 1 THEN
            CONTINUE WHEN TG_OP = 'INSERT';
            r := OLD; sign := -1;
        ELSE
            CONTINUE WHEN TG_OP = 'DELETE';
            r := NEW; sign := 1;
        END IF;
        CONTINUE WHEN r.status NOT IN ('completed', 'failed', 'cancelled');
        SELECT agent_id INTO aid FROM pgagent.conversation
         WHERE tenant_id = r.tenant_id AND conversation_id = r.conversation_id;
        CONTINUE WHEN aid IS NULL;   -- the conversation is being deleted with its agent or tenant
        INSERT INTO pgagent.agent_daily AS d (tenant_id, agent_id, day, completed, failed, cancelled, llm_calls,
                                              prompt_tokens, completion_tokens, cost_usd, timed, timed_ms)
        VALUES (r.tenant_id, aid, (r.created_at AT TIME ZONE 'UTC')::date,
                sign * (r.status = 'completed')::int, sign * (r.status = 'failed')::int,
                sign * (r.status = 'cancelled')::int, sign * r.llm_calls, sign * r.prompt_tokens,
                sign * r.completion_tokens, sign * r.cost_usd, sign * (r.finished_at IS NOT NULL)::int,
                sign * coalesce(extract(epoch FROM r.finished_at - r.created_at) * 1000, 0))
        ON CONFLICT (tenant_id, agent_id, day) DO UPDATE
           SET completed = d.completed + excluded.completed, failed = d.failed + excluded.failed,
               cancelled = d.cancelled + excluded.cancelled, llm_calls = d.llm_calls + excluded.llm_calls,
               prompt_tokens = d.prompt_tokens + excluded.prompt_tokens,
               completion_tokens = d.completion_tokens + excluded.completion_tokens,
               cost_usd = d.cost_usd + excluded.cost_usd, timed = d.timed + excluded.timed,
               timed_ms = d.timed_ms + excluded.timed_ms;
    END LOOP;
    RETURN NULL;
END $$;
REVOKE ALL ON FUNCTION pgagent.turn_rollup() FROM PUBLIC;
COMMENT ON FUNCTION pgagent.turn_rollup() IS
  'Trigger: keeps pgagent.agent_daily equal to the totals of the final (completed, failed, cancelled) turns per agent and UTC day.';
DROP TRIGGER IF EXISTS turn_rollup_insert_delete ON pgagent.turn;
CREATE TRIGGER turn_rollup_insert_delete AFTER INSERT OR DELETE ON pgagent.turn
  FOR EACH ROW EXECUTE FUNCTION pgagent.turn_rollup();
-- A turn's final UPDATE is rolled up at commit (a deferred constraint trigger, 0.2.0): the
-- agent's row of the day is one row that every finishing turn of the agent updates, so its row
-- lock is held from the rollup to the end of the transaction; taken at commit, after the
-- transaction's other work, concurrent workers of one agent wait for one another the least
-- (bench/results.md "Workers"). Inside the finishing transaction agent_daily does not show the
-- turn yet (SET CONSTRAINTS ALL IMMEDIATE rolls it up at once).
DROP TRIGGER IF EXISTS turn_rollup_update ON pgagent.turn;
CREATE CONSTRAINT TRIGGER turn_rollup_update AFTER UPDATE ON pgagent.turn DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
  WHEN ((OLD.status IN ('completed', 'failed', 'cancelled') OR NEW.status IN ('completed', 'failed', 'cancelled'))
        AND (OLD.status, OLD.llm_calls, OLD.prompt_tokens, OLD.completion_tokens, OLD.cost_usd, OLD.finished_at,
             OLD.conversation_id, OLD.created_at)
            IS DISTINCT FROM (NEW.status, NEW.llm_calls, NEW.prompt_tokens, NEW.completion_tokens, NEW.cost_usd,
                              NEW.finished_at, NEW.conversation_id, NEW.created_at))
  EXECUTE FUNCTION pgagent.turn_rollup();
