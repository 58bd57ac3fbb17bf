-- Durable execution at scale (issue 9): what `pgagent worker` (python/pgagent_worker) calls.
-- A worker claims a queued turn (or a worker's turn whose lease expired) with
-- pgagent.claim_turn, then runs it with CALL pgagent.run_turn under the lease
-- (python/pgagent_core/lease.py); it fires due schedules (pgagent.fire_schedules: the primary key
-- of pgagent.schedule_firing makes each due time fire once) and one worker at a time does the
-- housekeeping. pgagent.on_insert makes a table's new rows enqueue turns. docs/durability.md.
-- Replayable.

-- ---------------------------------------------------------------------------- claiming
CREATE OR REPLACE FUNCTION pgagent.claim_turn(worker text, lease_ms integer DEFAULT 60000, tenant text DEFAULT NULL,
                                              agent text DEFAULT NULL, info jsonb DEFAULT '{}')
RETURNS TABLE (tenant_id uuid, tenant_name text, turn_id bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    tn       record;
    found    bigint;
    skipped  bigint[] := '{}';
    tries    integer;
    wanted     bigint;      -- the agent asked for (agent => ...)
    blocked  bigint[];    -- agents at their max_running_turns
    filtered boolean;
    leased   boolean;
BEGIN
    -- no pgagent._require('user') (0.4 ms): EXECUTE is granted to pgagent_user only
    IF worker IS NULL OR worker !~ '^[A-Za-z0-9_.:@-]{1,128}$' THEN
        RAISE EXCEPTION 'pgagent: invalid worker id %', coalesce(quote_literal(worker), 'NULL')
          USING ERRCODE = 'invalid_parameter_value', DETAIL = 'A worker id is 1 to 128 characters of A-Z a-z 0-9 _ . : @ -.',
                HINT = 'pgagent worker makes one from the host name and process id.';
    END IF;
    IF lease_ms IS NULL OR lease_ms < 100 OR lease_ms > 86400000 THEN
        RAISE EXCEPTION 'pgagent: lease_ms must be from 100 to 86400000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Tenants this role may act for, with work, fewest turns in flight first (fairness: a tenant
    -- with a deep queue does not starve the others), then at random. Every statement here reads
    -- through a partial index (turn_claimable, turn_leased), so a claim costs the same whether
    -- or not the tables have statistics, and however many turns are queued: the EXISTS is kept a
    -- per-tenant probe (OFFSET 0: not a semi-join over every queued turn), and the in-flight
    -- counts name their statuses by exclusion (queued or running) so that only turn_leased, not
    -- turn_active with every queued turn in it, can serve them. With 2,000 turns queued, the
    -- old forms took 2.2 ms per claim.
    FOR tn IN
        SELECT n.tenant_id, n.name, n.max_running_turns,
               (SELECT count(*) FROM pgagent.turn r
                 WHERE r.tenant_id = n.tenant_id AND r.lease_owner IS NOT NULL AND r.status <> ALL ('{awaiting_approval,paused,completed,failed,cancelled}')
                   AND r.lease_expires_at > now() AND r.lease_expires_at < 'infinity') AS in_flight,
               n.max_running_turns IS NOT NULL
                 OR EXISTS (SELECT 1 FROM pgagent.agent a WHERE a.tenant_id = n.tenant_id
                               AND a.config ? 'max_running_turns') AS limited
          FROM pgagent.tenant n
         WHERE (claim_turn.tenant IS NULL OR n.name = claim_turn.tenant OR n.tenant_id::text = claim_turn.tenant)
           AND EXISTS (SELECT 1 FROM pgagent.turn q WHERE q.tenant_id = n.tenant_id
                          AND q.status IN ('queued', 'running', 'awaiting_approval') OFFSET 0)
           AND pgagent._may_act(n.tenant_id)
         ORDER BY in_flight, random()
    LOOP
        wanted := NULL;
        IF claim_turn.agent IS NOT NULL THEN
            SELECT a.agent_id INTO wanted FROM pgagent.agent a WHERE a.tenant_id = tn.tenant_id AND a.name = claim_turn.agent;
            CONTINUE WHEN wanted IS NULL;
        END IF;
        blocked := '{}';
        IF tn.limited THEN
            -- limits are counted, so the claims of one tenant take turns (each sees the leases
            -- the ones before it committed); claims are short
            PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(tn.tenant_id::text || '/claim', 0));
            CONTINUE WHEN tn.max_running_turns IS NOT NULL
                      AND (SELECT count(*) FROM pgagent.turn r
                            WHERE r.tenant_id = tn.tenant_id AND r.lease_owner IS NOT NULL
                              AND r.status <> ALL ('{awaiting_approval,paused,completed,failed,cancelled}')
                              AND r.lease_expires_at > now() AND r.lease_expires_at < 'infinity') >= tn.max_running_turns;
            SELECT coalesce(array_agg(a.agent_id), '{}') INTO blocked FROM pgagent.agent a
             WHERE a.tenant_id = tn.tenant_id AND a.config ? 'max_running_turns'
               AND (SELECT count(*) FROM pgagent.turn r
                      JOIN pgagent.conversation rc ON rc.tenant_id = r.tenant_id AND rc.conversation_id = r.conversation_id
                     WHERE r.tenant_id = tn.tenant_id AND r.lease_owner IS NOT NULL AND r.status <> ALL ('{awaiting_approval,paused,completed,failed,cancelled}')
                       AND r.lease_expires_at > now() AND r.lease_expires_at < 'infinity' AND rc.agent_id = a.agent_id)
                   >= (a.config ->> 'max_running_turns')::integer;
        END IF;
        filtered := wanted IS NOT NULL OR cardinality(blocked) > 0;
        tries := 0;
        LOOP
            found := NULL;
            -- the oldest claimable turn: queued and not leased, or a worker's turn whose lease
            -- expired or was released (a dead worker, a retry now due, an approved call)
            SELECT t.turn_id, t.lease_owner IS NOT NULL INTO found, leased
              FROM pgagent.turn t
             WHERE t.tenant_id = tn.tenant_id AND t.status IN ('queued', 'running', 'awaiting_approval')
               AND t.parent_turn_id IS NULL   -- a child turn is run by whoever runs its root
               AND (t.lease_expires_at IS NULL OR t.lease_expires_at <= now())
               AND (t.status = 'queued' OR t.lease_owner IS NOT NULL)
               AND (t.run_after IS NULL OR t.run_after <= now())
               AND t.turn_id <> ALL (skipped)
               AND (NOT filtered OR EXISTS (
                      SELECT 1 FROM pgagent.conversation c
                       WHERE c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
                         AND (wanted IS NULL OR c.agent_id = wanted) AND c.agent_id <> ALL (blocked)))
             ORDER BY t.created_at
             LIMIT 1
               FOR UPDATE OF t SKIP LOCKED;
            EXIT WHEN found IS NULL;
            -- a worker's turn whose lease expired is taken over even if a frozen backend still
            -- holds its advisory lock (the lease, not the lock, says who runs it: lease.py)
            EXIT WHEN leased;
            -- a queued turn a client started itself (CALL run_turn took its advisory lock and
            -- has not committed "running" yet) is the client's: skip it
            EXIT WHEN pg_catalog.pg_try_advisory_xact_lock(
                        pg_catalog.hashtextextended(tn.tenant_id::text || '/turn/' || found::text, 0));
            skipped := skipped || found;
            tries := tries + 1;
            IF tries >= 5 THEN found := NULL; EXIT; END IF;
        END LOOP;
        IF found IS NOT NULL THEN
            -- a queued turn becomes running here, in the claim's transaction: the worker's first
            -- unit of run_turn is then the turn's first real step (one commit fewer per turn), and
            -- queue_status counts it running from the moment a worker holds it
            UPDATE pgagent.turn t SET lease_owner = worker, lease_expires_at = now() + lease_ms * interval '1 millisecond',
                                      run_after = NULL,
                                      status = CASE WHEN t.status = 'queued' THEN 'running' ELSE t.status END,
                                      started_at = coalesce(t.started_at, pg_catalog.clock_timestamp())
             WHERE t.tenant_id = tn.tenant_id AND t.turn_id = found;
            INSERT INTO pgagent.worker AS w (tenant_id, worker_id, role_name, host, pid, concurrency)
            VALUES (tn.tenant_id, worker, pgagent._outer_user(), left(info ->> 'host', 255),
                    CASE WHEN info ->> 'pid' ~ '^[0-9]{1,9}$' THEN (info ->> 'pid')::integer END,
                    CASE WHEN info ->> 'concurrency' ~ '^[0-9]{1,6}$' THEN greatest((info ->> 'concurrency')::integer, 1) ELSE 1 END)
            ON CONFLICT ON CONSTRAINT worker_pkey DO NOTHING;   -- registered once; worker_heartbeat beats
            tenant_id := tn.tenant_id; tenant_name := tn.name; turn_id := found;
            RETURN NEXT;
            RETURN;
        END IF;
    END LOOP;
END $$;
COMMENT ON FUNCTION pgagent.claim_turn(text, integer, text, text, jsonb) IS
  'Worker: take the next turn to run, lease it to worker for lease_ms and, if it was queued, set it running (then SET pgagent.worker_id = worker and CALL pgagent.run_turn(turn_id), which renews the lease after every step). Candidates: queued turns, and turns of workers whose lease expired or was released (a killed worker, a deferred retry now due, an approved call), in the tenants the caller may act for (optionally one tenant and one agent), within the tenant''s max_running_turns (pgagent.set_limits) and the agent''s config max_running_turns; the tenant with the fewest turns in flight first, then the oldest turn (FOR UPDATE SKIP LOCKED: concurrent workers never get the same turn). Registers the worker in that tenant (info: {host, pid, concurrency}). Returns one row (tenant_id, tenant_name, turn_id) or none. Needs pgagent_user. Raises 22023, 42501.';
REVOKE ALL ON FUNCTION pgagent.claim_turn(text, integer, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.claim_turn(text, integer, text, text, jsonb) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.worker_heartbeat(worker text, stopping boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE n integer;
BEGIN
    PERFORM pgagent._require('user');
    UPDATE pgagent.worker w SET heartbeat_at = now(), stopping = w.stopping OR worker_heartbeat.stopping
     WHERE w.worker_id = worker AND w.role_name = pgagent._outer_user() AND w.stopped_at IS NULL
       AND pgagent._may_act(w.tenant_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
COMMENT ON FUNCTION pgagent.worker_heartbeat(text, boolean) IS
  'Worker: record that the worker (registered by the caller''s role) is alive; with stopping => true, ask its CALLs of run_turn to stop after the step in flight and release their turns (what SIGTERM does). Returns the number of tenant registrations updated. Needs pgagent_user.';
REVOKE ALL ON FUNCTION pgagent.worker_heartbeat(text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.worker_heartbeat(text, boolean) TO pgagent_user;

CREATE OR REPLACE FUNCTION pgagent.worker_exit(worker text)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE n integer;
BEGIN
    PERFORM pgagent._require('user');
    -- give back what it still holds (a turn whose CALL it abandoned): claimable at once
    UPDATE pgagent.turn t SET lease_expires_at = now()
      FROM pgagent.worker w
     WHERE w.worker_id = worker AND w.role_name = pgagent._outer_user() AND t.tenant_id = w.tenant_id
       AND t.lease_owner = worker AND t.lease_expires_at > now() AND t.lease_expires_at < 'infinity'
       AND t.status IN ('queued', 'running') AND pgagent._may_act(w.tenant_id);
    UPDATE pgagent.worker w SET stopped_at = now(), stopping = true, heartbeat_at = now()
     WHERE w.worker_id = worker AND w.role_name = pgagent._outer_user() AND w.stopped_at IS NULL
       AND pgagent._may_act(w.tenant_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
COMMENT ON FUNCTION pgagent.worker_exit(text) IS
  'Worker: the worker (registered by the caller''s role) exits: mark it stopped and release the leases it still holds (their turns are claimable at once). Returns the number of tenant registrations updated. Needs pgagent_user.';
REVOKE ALL ON FUNCTION pgagent.worker_exit(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.worker_exit(text) TO pgagent_user;

-- ---------------------------------------------------------------------------- turns made by the database
-- A new conversation with one queued turn, written for a role (created_by) by a schedule or an
-- insert trigger: what start_conversation + enqueue_message write, in SQL, so that it runs in
-- a trigger of any role's transaction.
CREATE OR REPLACE FUNCTION pgagent._enqueue_internal(tenant uuid, agent bigint, content text, params jsonb,
                                                     created_by name, title text, metadata jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    conv bigint;
    tid  bigint;
    ts   timestamptz := clock_timestamp();
BEGIN
    INSERT INTO pgagent.conversation (tenant_id, agent_id, title, metadata, created_by)
    VALUES (tenant, agent, left(title, 200), coalesce(metadata, '{}'), created_by)
    RETURNING conversation_id INTO conv;
    INSERT INTO pgagent.turn (tenant_id, conversation_id, seq, status, user_message, params, created_by, created_at)
    VALUES (tenant, conv, 1, 'queued', content, coalesce(params, '{}'), created_by, ts)
    RETURNING turn_id INTO tid;
    INSERT INTO pgagent.step (tenant_id, turn_id, seq, kind, payload, created_by)
    VALUES (tenant, tid, 1, 'user_message', jsonb_build_object('content', content), created_by);
    RETURN tid;
END $$;
COMMENT ON FUNCTION pgagent._enqueue_internal(uuid, bigint, text, jsonb, name, text, jsonb) IS
  'Internal (owner only; schedules and insert triggers): a new conversation of the agent with one queued turn whose user message is content, created by created_by. Returns turn_id.';
REVOKE ALL ON FUNCTION pgagent._enqueue_internal(uuid, bigint, text, jsonb, name, text, jsonb) FROM PUBLIC;

-- ---------------------------------------------------------------------------- schedules
CREATE OR REPLACE FUNCTION pgagent._cron_py(cron text, tz text, after timestamptz) RETURNS jsonb
LANGUAGE plpython3u STABLE
SET search_path = pg_catalog, pg_temp
AS $$
if 'pgagent' not in GD: plpy.execute('SELECT pgagent._load()')
return GD['pgagent'].cron_next(cron, tz, after)
$$;
COMMENT ON FUNCTION pgagent._cron_py(text, text, timestamptz) IS
  'Internal (pgagent._cron_next): {"next": due time} or {"error": {message, sqlstate, detail, hint}}.';
REVOKE ALL ON FUNCTION pgagent._cron_py(text, text, timestamptz) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgagent._cron_next(cron text, tz text, after timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE r jsonb := pgagent._cron_py(cron, tz, after);
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = coalesce(r #>> '{error,detail}', ''), HINT = coalesce(r #>> '{error,hint}', '');
    END IF;
    RETURN (r ->> 'next')::timestamptz;
END $$;
COMMENT ON FUNCTION pgagent._cron_next(text, text, timestamptz) IS
  'Internal: the first due time of a 5-field cron expression (or @hourly, @daily, @weekly, @monthly, @yearly) in the IANA time zone tz strictly after after (croniter, over local wall-clock time). Raises 22023.';
REVOKE ALL ON FUNCTION pgagent._cron_next(text, text, timestamptz) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgagent.schedule(agent text, cron text, message text, timezone text DEFAULT 'UTC',
                                            name text DEFAULT NULL, params jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    tid   uuid;
    aid   bigint;
    nm    text;
    sid   bigint;
    first timestamptz;
BEGIN
    PERFORM pgagent._require('operator');
    tid := pgagent.current_tenant();
    SELECT a.agent_id INTO aid FROM pgagent.agent a WHERE a.tenant_id = tid AND a.name = schedule.agent;
    IF aid IS NULL THEN
        RAISE EXCEPTION 'pgagent: agent "%" does not exist (for this tenant)', agent USING ERRCODE = 'undefined_object',
              HINT = 'List them with SELECT name FROM pgagent.agent;';
    END IF;
    IF message IS NULL OR btrim(message) = '' THEN
        RAISE EXCEPTION 'pgagent: message must be a non-empty text' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION 'pgagent: params must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    first := pgagent._cron_next(cron, coalesce(timezone, 'UTC'), now());
    nm := coalesce(name, agent || '-' || substr(md5(cron || message || clock_timestamp()::text), 1, 8));
    IF nm !~ '^[A-Za-z0-9_.-]{1,63}$' THEN
        RAISE EXCEPTION 'pgagent: invalid schedule name "%"', nm USING ERRCODE = 'invalid_parameter_value',
              DETAIL = 'A schedule name is 1 to 63 characters of A-Z a-z 0-9 _ . -.';
    END IF;
    INSERT INTO pgagent.schedule AS s (tenant_id, name, agent_id, cron, timezone, message, params, next_fire_at, created_by)
    VALUES (tid, nm, aid, cron, coalesce(timezone, 'UTC'), message, params, first, pgagent._outer_user())
    ON CONFLICT ON CONSTRAINT schedule_name DO UPDATE
       SET agent_id = EXCLUDED.agent_id, cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, message = EXCLUDED.message,
           params = EXCLUDED.params, next_fire_at = EXCLUDED.next_fire_at, enabled = true, created_by = EXCLUDED.created_by
    RETURNING schedule_id INTO sid;
    PERFORM pgagent._audit('schedule_set', 'schedule', sid::text,
                           jsonb_build_object('name', nm, 'agent', agent, 'cron', cron, 'timezone', coalesce(timezone, 'UTC'),
                                              'next_fire_at', first));
    RETURN sid;
END $$;
COMMENT ON FUNCTION pgagent.schedule(text, text, text, text, text, jsonb) IS
  'Operator: run the agent on a cron schedule: at each due time of cron (5 fields, or @hourly, @daily, @weekly, @monthly, @yearly; evaluated in the IANA timezone) a worker enqueues message as a new conversation''s turn, created by the calling role. name (default: agent-<hash>) replaces a schedule of that name. Each due time fires once however many workers run (the primary key of pgagent.schedule_firing); due times missed while no worker ran are skipped but the latest. Returns schedule_id. Audited (schedule_set). Raises 42704, 22023 (a bad cron expression or time zone).';
REVOKE ALL ON FUNCTION pgagent.schedule(text, text, text, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.schedule(text, text, text, text, text, jsonb) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.unschedule(name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE sid bigint;
BEGIN
    PERFORM pgagent._require('operator');
    DELETE FROM pgagent.schedule s WHERE s.tenant_id = pgagent.current_tenant() AND s.name = unschedule.name
    RETURNING s.schedule_id INTO sid;
    IF sid IS NULL THEN
        RETURN false;
    END IF;
    PERFORM pgagent._audit('schedule_removed', 'schedule', sid::text, jsonb_build_object('name', name));
    RETURN true;
END $$;
COMMENT ON FUNCTION pgagent.unschedule(text) IS
  'Operator: remove the schedule of that name (and its firing history; the turns it made stay). Returns whether one existed. Audited (schedule_removed).';
REVOKE ALL ON FUNCTION pgagent.unschedule(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.unschedule(text) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.fire_schedules(at timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s     record;
    tid   bigint;
    due   timestamptz;
    n     integer := 0;
    fired boolean;
BEGIN
    PERFORM pgagent._require('user');
    IF at IS NULL OR at > now() + interval '1 minute' THEN
        RAISE EXCEPTION 'pgagent: at must not be in the future' USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Workers call it with now(); a test may pass a past time.';
    END IF;
    FOR s IN
        SELECT sc.* FROM pgagent.schedule sc
         WHERE sc.enabled AND sc.next_fire_at <= at AND pgagent._may_act(sc.tenant_id)
         ORDER BY sc.next_fire_at
           FOR UPDATE SKIP LOCKED
    LOOP
        -- the latest due time not after "at" (earlier ones missed while no worker ran are skipped)
        due := s.next_fire_at;
        LOOP
            EXIT WHEN pgagent._cron_next(s.cron, s.timezone, due) > at;
            due := pgagent._cron_next(s.cron, s.timezone, due);
        END LOOP;
        INSERT INTO pgagent.schedule_firing (tenant_id, schedule_id, due_at)
        VALUES (s.tenant_id, s.schedule_id, due)
        ON CONFLICT DO NOTHING
        RETURNING true INTO fired;
        IF fired THEN
            tid := pgagent._enqueue_internal(s.tenant_id, s.agent_id, s.message, s.params, s.created_by,
                                             'schedule ' || s.name || ' at ' || to_char(due AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') || ' UTC',
                                             jsonb_build_object('source', 'schedule', 'schedule', s.name, 'due_at', due));
            UPDATE pgagent.schedule_firing f SET turn_id = tid
             WHERE f.tenant_id = s.tenant_id AND f.schedule_id = s.schedule_id AND f.due_at = due;
            n := n + 1;
        END IF;
        UPDATE pgagent.schedule sc SET next_fire_at = pgagent._cron_next(s.cron, s.timezone, due)
         WHERE sc.tenant_id = s.tenant_id AND sc.schedule_id = s.schedule_id;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION pgagent.fire_schedules(timestamptz) IS
  'Worker: fire the schedules due at at (default now(); not in the future) of the tenants the caller may act for: for each, record the firing of its latest due time (at most once: the primary key of pgagent.schedule_firing), enqueue its message as a new conversation''s turn and move next_fire_at on. Concurrent callers skip each other''s schedules (FOR UPDATE SKIP LOCKED). Returns the number of turns enqueued. Needs pgagent_user. Raises 22023.';
REVOKE ALL ON FUNCTION pgagent.fire_schedules(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.fire_schedules(timestamptz) TO pgagent_user;

-- ---------------------------------------------------------------------------- agents that react to data
CREATE OR REPLACE FUNCTION pgagent._on_insert_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r    pgagent.insert_trigger;
    row  jsonb := to_jsonb(NEW);
    msg  text;
    kv   record;
BEGIN
    SELECT * INTO r FROM pgagent.insert_trigger i
     WHERE i.tenant_id = TG_ARGV[0]::uuid AND i.insert_trigger_id = TG_ARGV[1]::bigint AND i.table_oid = TG_RELID;
    IF r.insert_trigger_id IS NULL THEN
        RETURN NULL;   -- a trigger left behind (or copied) without its registration does nothing
    END IF;
    msg := r.message_template;
    FOR kv IN SELECT key, value FROM jsonb_each_text(row) LOOP
        msg := replace(msg, '{' || kv.key || '}', coalesce(kv.value, ''));
    END LOOP;
    IF position('{row}' IN msg) > 0 THEN
        msg := replace(msg, '{row}', row::text);
    ELSE
        msg := msg || E'\n\nThe new row of ' || r.table_name || ': ' || row::text;
    END IF;
    PERFORM pgagent._enqueue_internal(r.tenant_id, r.agent_id, msg, r.params, r.created_by,
                                      'new row in ' || r.table_name,
                                      jsonb_build_object('source', 'on_insert', 'table', r.table_name,
                                                         'insert_trigger_id', r.insert_trigger_id));
    RETURN NULL;
END $$;
COMMENT ON FUNCTION pgagent._on_insert_row() IS
  'Trigger (made by pgagent.on_insert; arguments: tenant_id, insert_trigger_id): enqueue a turn of the registered agent for the new row, in the inserting transaction (a rolled-back insert enqueues nothing). The message is the template with {column} replaced by the row''s values and {row} by the row as JSON (appended when the template has no {row}).';
REVOKE ALL ON FUNCTION pgagent._on_insert_row() FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgagent.on_insert(tbl regclass, agent text, message_template text, params jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    tid uuid;
    aid bigint;
    rid bigint;
    kind "char";
BEGIN
    PERFORM pgagent._require('admin');
    tid := pgagent.current_tenant();
    SELECT c.relkind INTO kind FROM pg_catalog.pg_class c WHERE c.oid = tbl;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'pgagent: % is not a table', tbl USING ERRCODE = 'wrong_object_type';
    END IF;
    IF (SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = tbl) IN ('pgagent', 'pg_catalog', 'information_schema') THEN
        RAISE EXCEPTION 'pgagent: not on a system or pgagent table (%)', tbl USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NOT pg_catalog.has_table_privilege(pgagent._outer_user(), tbl, 'TRIGGER') THEN
        RAISE EXCEPTION 'pgagent: role "%" may not create triggers on %', pgagent._outer_user(), tbl
          USING ERRCODE = 'insufficient_privilege', DETAIL = 'on_insert needs the TRIGGER privilege on the table.',
                HINT = format('The table''s owner can GRANT TRIGGER ON %s TO %I.', tbl, pgagent._outer_user());
    END IF;
    SELECT a.agent_id INTO aid FROM pgagent.agent a WHERE a.tenant_id = tid AND a.name = on_insert.agent;
    IF aid IS NULL THEN
        RAISE EXCEPTION 'pgagent: agent "%" does not exist (for this tenant)', agent USING ERRCODE = 'undefined_object';
    END IF;
    IF message_template IS NULL OR btrim(message_template) = '' THEN
        RAISE EXCEPTION 'pgagent: message_template must be a non-empty text' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RAISE EXCEPTION 'pgagent: params must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pgagent.insert_trigger AS i (tenant_id, table_oid, table_name, agent_id, message_template, params, created_by)
    VALUES (tid, tbl, tbl::text, aid, message_template, params, pgagent._outer_user())
    ON CONFLICT ON CONSTRAINT insert_trigger_table_agent DO UPDATE
       SET message_template = EXCLUDED.message_template, params = EXCLUDED.params, created_by = EXCLUDED.created_by,
           table_name = EXCLUDED.table_name
    RETURNING insert_trigger_id INTO rid;
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'pgagent_on_insert_' || rid, tbl);
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s FOR EACH ROW EXECUTE FUNCTION pgagent._on_insert_row(%L, %L)',
                   'pgagent_on_insert_' || rid, tbl, tid, rid);
    PERFORM pgagent._audit('on_insert_set', 'insert_trigger', rid::text,
                           jsonb_build_object('table', tbl::text, 'agent', agent, 'message_template', message_template));
    RETURN rid;
END $$;
COMMENT ON FUNCTION pgagent.on_insert(regclass, text, text, jsonb) IS
  'Admin: make every row inserted into tbl enqueue a turn of the agent (a new conversation per row, created by the calling role), in the inserting transaction: a rolled-back insert enqueues nothing. message_template: {column} is replaced by the row''s value, {row} by the row as JSON (appended when absent). Installs the trigger pgagent_on_insert_<id> (needs the TRIGGER privilege on the table). Calling it again for the same table and agent replaces the template. Returns the insert_trigger_id. Audited (on_insert_set). Raises 42501, 42704, 42809, 22023.';
REVOKE ALL ON FUNCTION pgagent.on_insert(regclass, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.on_insert(regclass, text, text, jsonb) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.off_insert(tbl regclass, agent text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE rid bigint;
BEGIN
    PERFORM pgagent._require('admin');
    IF NOT pg_catalog.has_table_privilege(pgagent._outer_user(), tbl, 'TRIGGER') THEN
        RAISE EXCEPTION 'pgagent: role "%" may not drop triggers on %', pgagent._outer_user(), tbl
          USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM pgagent.insert_trigger i
     USING pgagent.agent a
     WHERE i.tenant_id = pgagent.current_tenant() AND i.table_oid = tbl
       AND a.tenant_id = i.tenant_id AND a.agent_id = i.agent_id AND a.name = off_insert.agent
    RETURNING i.insert_trigger_id INTO rid;
    IF rid IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'pgagent_on_insert_' || rid, tbl);
    PERFORM pgagent._audit('on_insert_removed', 'insert_trigger', rid::text,
                           jsonb_build_object('table', tbl::text, 'agent', agent));
    RETURN true;
END $$;
COMMENT ON FUNCTION pgagent.off_insert(regclass, text) IS
  'Admin: remove what pgagent.on_insert installed for the table and agent (the trigger and its registration; the turns it made stay). Returns whether there was one. Audited (on_insert_removed). Raises 42501.';
REVOKE ALL ON FUNCTION pgagent.off_insert(regclass, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.off_insert(regclass, text) TO pgagent_admin;

-- ---------------------------------------------------------------------------- limits and housekeeping
CREATE OR REPLACE FUNCTION pgagent.set_limits(max_running_turns integer, retention_days integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM pgagent._require('admin');
    IF max_running_turns < 1 OR retention_days < 1 THEN
        RAISE EXCEPTION 'pgagent: limits must be positive (or NULL for none)' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE pgagent.tenant t SET max_running_turns = set_limits.max_running_turns, retention_days = set_limits.retention_days
     WHERE t.tenant_id = pgagent.current_tenant();
    PERFORM pgagent._audit('limits_set', 'tenant', pgagent.current_tenant()::text,
                           jsonb_build_object('max_running_turns', max_running_turns, 'retention_days', retention_days));
END $$;
COMMENT ON FUNCTION pgagent.set_limits(integer, integer) IS
  'Admin: the current tenant''s limits: max_running_turns (turns workers run at once; NULL: no limit) and retention_days (housekeeping deletes conversations whose turns all finished more than that many days ago, each an audited delete_conversation; NULL: keep everything). Audited (limits_set). Raises 22023.';
REVOKE ALL ON FUNCTION pgagent.set_limits(integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.set_limits(integer, integer) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.housekeeping(stuck_after interval DEFAULT '1 hour', dead_after interval DEFAULT '1 minute')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    stopped  integer := 0;
    released integer := 0;
    failed   integer := 0;
    deleted  integer := 0;
    t        record;
    c        record;
    last_seq integer;
    msg      text;
    admin    boolean := pg_catalog.pg_has_role(pgagent._outer_user(), 'pgagent_admin', 'MEMBER')
                        OR coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = pgagent._outer_user()), false);
BEGIN
    PERFORM pgagent._require('user');
    -- one caller at a time (the worker that holds the housekeeping lock calls it; this makes sure)
    IF NOT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended('pgagent/housekeeping', 0)) THEN
        RETURN jsonb_build_object('skipped', true);
    END IF;
    -- workers silent for dead_after: stopped; their unexpired leases released
    UPDATE pgagent.worker w SET stopped_at = now()
     WHERE w.stopped_at IS NULL AND w.heartbeat_at < now() - dead_after AND pgagent._may_act(w.tenant_id);
    GET DIAGNOSTICS stopped = ROW_COUNT;
    UPDATE pgagent.turn tu SET lease_expires_at = now()
      FROM pgagent.worker w
     WHERE w.tenant_id = tu.tenant_id AND w.worker_id = tu.lease_owner AND w.stopped_at IS NOT NULL
       AND tu.status IN ('queued', 'running') AND tu.lease_expires_at > now() AND tu.lease_expires_at < 'infinity'
       AND pgagent._may_act(tu.tenant_id);
    GET DIAGNOSTICS released = ROW_COUNT;
    -- turns running without progress for stuck_after and run by nobody: failed, with an error step
    FOR t IN
        SELECT tu.tenant_id, tu.turn_id FROM pgagent.turn tu
         WHERE tu.status = 'running' AND tu.updated_at < now() - stuck_after
           AND (tu.lease_expires_at IS NULL OR tu.lease_expires_at <= now())
           AND pgagent._may_act(tu.tenant_id)
           AND pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtextextended(tu.tenant_id::text || '/turn/' || tu.turn_id::text, 0))
         LIMIT 1000
           FOR UPDATE OF tu SKIP LOCKED
    LOOP
        SELECT max(s.seq) INTO last_seq FROM pgagent.step s WHERE s.tenant_id = t.tenant_id AND s.turn_id = t.turn_id;
        msg := format('stuck: running without a step for more than %s and run by no worker (housekeeping)', stuck_after);
        INSERT INTO pgagent.step (tenant_id, turn_id, seq, kind, payload, created_by)
        VALUES (t.tenant_id, t.turn_id, coalesce(last_seq, 0) + 1, 'error',
                jsonb_build_object('message', msg, 'error_kind', 'stuck', 'source', 'housekeeping'), pgagent._outer_user());
        UPDATE pgagent.turn tu SET status = 'failed', error = msg, finished_at = clock_timestamp(),
                                   lease_owner = NULL, lease_expires_at = NULL, run_after = NULL
         WHERE tu.tenant_id = t.tenant_id AND tu.turn_id = t.turn_id;
        failed := failed + 1;
    END LOOP;
    -- retention: only for tenants the caller is an admin of (delete_conversation is audited)
    IF admin THEN
        FOR c IN
            SELECT cv.tenant_id, cv.conversation_id, n.retention_days FROM pgagent.tenant n
              JOIN pgagent.conversation cv ON cv.tenant_id = n.tenant_id
             WHERE n.retention_days IS NOT NULL AND pgagent._may_act(n.tenant_id)
               AND cv.created_at < now() - n.retention_days * interval '1 day'
               AND NOT EXISTS (SELECT 1 FROM pgagent.turn tu WHERE tu.tenant_id = cv.tenant_id
                                  AND tu.conversation_id = cv.conversation_id
                                  AND (tu.finished_at IS NULL OR tu.finished_at >= now() - n.retention_days * interval '1 day'))
             LIMIT 100
        LOOP
            PERFORM set_config('pgagent.tenant', c.tenant_id::text, true);
            PERFORM pgagent.delete_conversation(c.conversation_id, format('retention: finished more than %s days ago', c.retention_days));
            deleted := deleted + 1;
        END LOOP;
    END IF;
    RETURN jsonb_build_object('workers_stopped', stopped, 'leases_released', released, 'turns_failed', failed,
                              'conversations_deleted', deleted);
END $$;
COMMENT ON FUNCTION pgagent.housekeeping(interval, interval) IS
  'Worker (one at a time: the worker holding the housekeeping advisory lock calls it; concurrent calls return {"skipped": true}): in the tenants the caller may act for, mark workers silent for dead_after stopped and release their leases; fail turns running without progress for stuck_after that no worker or session runs (an error step, error_kind stuck); if the caller is an admin, delete up to 100 conversations past their tenant''s retention_days (pgagent.set_limits) with pgagent.delete_conversation (audited). Returns {workers_stopped, leases_released, turns_failed, conversations_deleted}. Needs pgagent_user.';
REVOKE ALL ON FUNCTION pgagent.housekeeping(interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.housekeeping(interval, interval) TO pgagent_user;

-- ---------------------------------------------------------------------------- views
CREATE OR REPLACE VIEW pgagent.workers WITH (security_invoker = true) AS
SELECT w.tenant_id, w.worker_id, w.role_name, w.host, w.pid, w.concurrency, w.started_at, w.heartbeat_at,
       w.stopped_at IS NULL AND w.heartbeat_at > now() - interval '1 minute' AS alive,
       w.stopping, w.stopped_at,
       (SELECT count(*) FROM pgagent.turn t
         WHERE t.tenant_id = w.tenant_id AND t.status IN ('queued', 'running') AND t.lease_owner = w.worker_id
           AND t.lease_expires_at > now() AND t.lease_expires_at < 'infinity') AS turns_in_flight
  FROM pgagent.worker w;
COMMENT ON VIEW pgagent.workers IS
  'The workers (pgagent worker processes) that have claimed turns of the tenant: alive (a heartbeat within the last minute and not stopped), stopping (asked to stop: SIGTERM), and the turns they run now.';
COMMENT ON COLUMN pgagent.workers.tenant_id IS 'The tenant it claimed turns of.';
COMMENT ON COLUMN pgagent.workers.worker_id IS 'The worker''s id (host:pid:random unless --worker-id was given).';
COMMENT ON COLUMN pgagent.workers.role_name IS 'The database role it connects as.';
COMMENT ON COLUMN pgagent.workers.host IS 'The host it runs on (as it says).';
COMMENT ON COLUMN pgagent.workers.pid IS 'Its operating-system process id (on its host).';
COMMENT ON COLUMN pgagent.workers.concurrency IS 'How many turns it runs at once at most (--concurrency).';
COMMENT ON COLUMN pgagent.workers.started_at IS 'When it first claimed a turn of the tenant.';
COMMENT ON COLUMN pgagent.workers.heartbeat_at IS 'Its last heartbeat (every few seconds while it runs).';
COMMENT ON COLUMN pgagent.workers.alive IS 'Not stopped and a heartbeat within the last minute.';
COMMENT ON COLUMN pgagent.workers.stopping IS 'Asked to stop (SIGTERM): it finishes the steps in flight and exits.';
COMMENT ON COLUMN pgagent.workers.stopped_at IS 'When it exited (or housekeeping found it silent).';
COMMENT ON COLUMN pgagent.workers.turns_in_flight IS 'Turns of the tenant it holds a live lease on now.';
GRANT SELECT ON pgagent.workers TO pgagent_viewer;
