-- The worker API (issue 9): who may call what, the shape of the workers view and the new turn
-- columns, bad input refused with documented SQLSTATEs, claiming (leases, SKIP LOCKED order),
-- and a schedule's due time fired once. No LLM is called here.
BEGIN;
SELECT plan(33);

-- ---------------------------------------------------------------- grants
SELECT ok(pg_catalog.has_function_privilege('pgagent_user', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_viewer', f, 'EXECUTE'),
          f || ' is for users (workers) and above')
  FROM unnest(ARRAY['pgagent.claim_turn(text,integer,text,text,jsonb)', 'pgagent.worker_heartbeat(text,boolean)',
                    'pgagent.worker_exit(text)', 'pgagent.fire_schedules(timestamp with time zone)',
                    'pgagent.housekeeping(interval,interval)']) AS f;
SELECT ok(pg_catalog.has_function_privilege('pgagent_operator', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_user', f, 'EXECUTE'),
          f || ' is for operators and above')
  FROM unnest(ARRAY['pgagent.schedule(text,text,text,text,text,jsonb)', 'pgagent.unschedule(text)']) AS f;
SELECT ok(pg_catalog.has_function_privilege('pgagent_admin', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_operator', f, 'EXECUTE'),
          f || ' is for admins only')
  FROM unnest(ARRAY['pgagent.on_insert(regclass,text,text,jsonb)', 'pgagent.off_insert(regclass,text)',
                    'pgagent.set_limits(integer,integer)']) AS f;
SELECT ok(NOT pg_catalog.has_function_privilege('pgagent_admin', f, 'EXECUTE'), f || ' is the owner''s only')
  FROM unnest(ARRAY['pgagent._enqueue_internal(uuid,bigint,text,jsonb,name,text,jsonb)', 'pgagent._on_insert_row()',
                    'pgagent._cron_py(text,text,timestamp with time zone)',
                    'pgagent._cron_next(text,text,timestamp with time zone)']) AS f;

-- ---------------------------------------------------------------- shapes
SELECT columns_are('pgagent', 'workers', ARRAY['tenant_id', 'worker_id', 'role_name', 'host', 'pid', 'concurrency',
    'started_at', 'heartbeat_at', 'alive', 'stopping', 'stopped_at', 'turns_in_flight'], 'workers columns');
SELECT has_column('pgagent', 'turn', c, 'turn.' || c) FROM unnest(ARRAY['lease_owner', 'lease_expires_at', 'run_after']) c;
SELECT has_pk('pgagent', 'schedule_firing', 'schedule_firing has a primary key (each due time fires once)');

-- ---------------------------------------------------------------- bad input
SELECT throws_ok($$SELECT * FROM pgagent.claim_turn('bad id!')$$, '22023', NULL, 'a worker id with a space is refused');
SELECT throws_ok($$SELECT * FROM pgagent.claim_turn('w', 5)$$, '22023', NULL, 'a lease under 100 ms is refused');
SELECT throws_ok($$SELECT pgagent.fire_schedules(now() + interval '1 hour')$$, '22023', NULL,
                 'fire_schedules refuses a time in the future');
SELECT throws_ok($$SELECT pgagent.set_limits(0)$$, '22023', NULL, 'a limit of 0 is refused');

-- ---------------------------------------------------------------- claiming and firing
SELECT pgagent.register_model('m', base_url => 'http://127.0.0.1:9/v1');
SELECT pgagent.create_agent('a', model => 'm');
SELECT throws_ok($$SELECT pgagent.schedule('a', '*/5 * * *', 'x')$$, '22023', NULL, 'a 4-field cron expression is refused');
SELECT throws_ok($$SELECT pgagent.schedule('nobody', '* * * * *', 'x')$$, '42704', NULL, 'an unknown agent is refused');
SELECT throws_ok($$SELECT pgagent.on_insert('pgagent.turn', 'a', 'x')$$, '42501', NULL, 'not on pgagent''s own tables');
CREATE TEMP TABLE ids AS
  SELECT pgagent.enqueue_message(pgagent.start_conversation('a'), 'first') AS t1,
         pgagent.enqueue_message(pgagent.start_conversation('a'), 'second') AS t2;
SELECT is((SELECT turn_id FROM pgagent.claim_turn('w1', 60000)), (SELECT t1 FROM ids), 'the oldest queued turn first');
SELECT is((SELECT lease_owner FROM pgagent.turn WHERE turn_id = (SELECT t1 FROM ids)), 'w1', 'leased to the worker');
SELECT is((SELECT turn_id FROM pgagent.claim_turn('w2', 60000)), (SELECT t2 FROM ids), 'a live lease is not claimed again');
SELECT is((SELECT count(*)::int FROM pgagent.claim_turn('w3', 60000)), 0, 'nothing left to claim');
SELECT is((SELECT turns_in_flight FROM pgagent.workers WHERE worker_id = 'w1'), 1::bigint, 'the workers view counts it');
SELECT pgagent.schedule('a', '* * * * *', 'tick', name => 'tick');
UPDATE pgagent.schedule SET next_fire_at = date_trunc('minute', now()) - interval '1 minute';
SELECT is(pgagent.fire_schedules(), 1, 'a due schedule fires');
SELECT is(pgagent.fire_schedules(), 0, 'and not twice');

SELECT * FROM finish();
ROLLBACK;
