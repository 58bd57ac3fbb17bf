-- The turn state machine (trigger pgagent.turn_guard / turn_insert_guard):
-- queued -> running -> awaiting_approval -> running -> completed | failed | cancelled.
-- Terminal turns are frozen; identity columns never change. Refusals are SQLSTATE 23000.
BEGIN;
SELECT plan(39);

-- ---------------------------------------------------------------- fixture
INSERT INTO pgagent.model (name, provider, base_url, model_name)
VALUES ('sm_model', 'openai', 'http://127.0.0.1:9/v1', 'tap');
INSERT INTO pgagent.agent (name, model_id) SELECT 'sm_agent', model_id FROM pgagent.model WHERE name = 'sm_model';
INSERT INTO pgagent.conversation (agent_id, title)
SELECT agent_id, t FROM pgagent.agent, unnest(ARRAY['sm', 'sm_other']) t WHERE name = 'sm_agent';

CREATE FUNCTION pg_temp.conv() RETURNS bigint LANGUAGE sql AS
  $$ SELECT conversation_id FROM pgagent.conversation WHERE title = 'sm' $$;
CREATE FUNCTION pg_temp.turn(text) RETURNS bigint LANGUAGE sql AS
  $$ SELECT turn_id FROM pgagent.turn WHERE conversation_id = pg_temp.conv() AND user_message = $1 $$;
CREATE FUNCTION pg_temp.status(text) RETURNS text LANGUAGE sql AS
  $$ SELECT status FROM pgagent.turn WHERE conversation_id = pg_temp.conv() AND user_message = $1 $$;

-- created_at in the past so that started_at/finished_at = now()/clock_timestamp() are ordered.
INSERT INTO pgagent.turn (conversation_id, seq, user_message, created_at)
SELECT pg_temp.conv(), i, m, now() - interval '1 minute'
  FROM unnest(ARRAY['happy', 'q2c', 'done', 'fail', 'cancel', 'ident', 'rq', 'aa']) WITH ORDINALITY AS x(m, i);

-- ---------------------------------------------------------------- the happy path
SELECT is(pg_temp.status('happy'), 'queued', 'a new turn is queued by default');
SELECT lives_ok($$UPDATE pgagent.turn SET status = 'running', started_at = now()
                   WHERE turn_id = pg_temp.turn('happy')$$, 'queued -> running');
SELECT is(pg_temp.status('happy'), 'running', 'the turn is running');
SELECT lives_ok($$UPDATE pgagent.turn SET status = 'awaiting_approval' WHERE turn_id = pg_temp.turn('happy')$$,
                'running -> awaiting_approval');
SELECT is(pg_temp.status('happy'), 'awaiting_approval', 'the turn awaits approval');
SELECT lives_ok($$UPDATE pgagent.turn SET status = 'running' WHERE turn_id = pg_temp.turn('happy')$$,
                'awaiting_approval -> running');
SELECT lives_ok($$UPDATE pgagent.turn SET llm_calls = 2, prompt_tokens = 10, completion_tokens = 5, cost_usd = 0.001
                   WHERE turn_id = pg_temp.turn('happy')$$, 'a running turn''s totals can be updated');
SELECT lives_ok($$UPDATE pgagent.turn SET status = 'completed', answer = '42', finished_at = clock_timestamp()
                   WHERE turn_id = pg_temp.turn('happy')$$, 'running -> completed (with answer and finished_at)');
SELECT is(pg_temp.status('happy'), 'completed', 'the turn is completed');
SELECT ok((SELECT updated_at > created_at FROM pgagent.turn WHERE turn_id = pg_temp.turn('happy')),
          'turn_guard maintains updated_at');

-- ---------------------------------------------------------------- invalid transitions
SELECT throws_ok($$UPDATE pgagent.turn SET status = 'completed', answer = 'x', started_at = now(),
                      finished_at = clock_timestamp() WHERE turn_id = pg_temp.turn('q2c')$$,
                 '23000', NULL, 'queued -> completed is refused (23000), even with all columns set');
SELECT throws_ok($$UPDATE pgagent.turn SET status = 'awaiting_approval', started_at = now()
                    WHERE turn_id = pg_temp.turn('q2c')$$,
                 '23000', NULL, 'queued -> awaiting_approval is refused (23000)');
SELECT throws_ok($$UPDATE pgagent.turn SET status = 'failed', error = 'x', started_at = now(),
                      finished_at = clock_timestamp() WHERE turn_id = pg_temp.turn('q2c')$$,
                 '23000', NULL, 'queued -> failed is refused (23000)');
SELECT is(pg_temp.status('q2c'), 'queued', 'the refused turn is still queued');

SELECT lives_ok($$UPDATE pgagent.turn SET status = 'running', started_at = now() WHERE turn_id = pg_temp.turn('rq')$$,
                'setup: rq is running');
SELECT throws_ok($$UPDATE pgagent.turn SET status = 'queued' WHERE turn_id = pg_temp.turn('rq')$$,
                 '23000', NULL, 'running -> queued is refused (23000)');

SELECT lives_ok($$UPDATE pgagent.turn SET status = 'running', started_at = now() WHERE turn_id = pg_temp.turn('aa')$$,
                'setup: aa is running');
SELECT lives_ok($$UPDATE pgagent.turn SET status = 'awaiting_approval' WHERE turn_id = pg_temp.turn('aa')$$,
                'setup: aa awaits approval');
SELECT throws_ok($$UPDATE pgagent.turn SET status = 'completed', answer = 'x', finished_at = clock_timestamp()
                    WHERE turn_id = pg_temp.turn('aa')$$,
                 '23000', NULL, 'awaiting_approval -> completed is refused (23000)');
SELECT throws_ok($$UPDATE pgagent.turn SET status = 'queued' WHERE turn_id = pg_temp.turn('aa')$$,
                 '23000', NULL, 'awaiting_approval -> queued is refused (23000)');

-- completed is terminal
SELECT throws_ok($$UPDATE pgagent.turn SET status = 'running' WHERE turn_id = pg_temp.turn('happy')$$,
                 '23000', NULL, 'completed -> running is refused (23000)');
SELECT throws_ok($$UPDATE pgagent.turn SET answer = 'changed' WHERE turn_id = pg_temp.turn('happy')$$,
                 '23000', NULL, 'a completed turn''s answer cannot change without an override_response step (23000)');
SELECT is((SELECT answer FROM pgagent.turn WHERE turn_id = pg_temp.turn('happy')), '42',
          'the completed turn keeps its answer');

-- failed is terminal
SELECT lives_ok($$UPDATE pgagent.turn SET status = 'running', started_at = now() WHERE turn_id = pg_temp.turn('fail')$$,
                'setup: fail is running');
SELECT lives_ok($$UPDATE pgagent.turn SET status = 'failed', error = 'boom', finished_at = clock_timestamp()
                   WHERE turn_id = pg_temp.turn('fail')$$, 'running -> failed (with error and finished_at)');
SELECT throws_ok($$UPDATE pgagent.turn SET status = 'running', finished_at = NULL WHERE turn_id = pg_temp.turn('fail')$$,
                 '23000', NULL, 'failed -> running is refused (23000)');
SELECT throws_ok($$UPDATE pgagent.turn SET status = 'completed', answer = 'x' WHERE turn_id = pg_temp.turn('fail')$$,
                 '23000', NULL, 'failed -> completed is refused (23000)');
SELECT throws_ok($$UPDATE pgagent.turn SET status = 'cancelled' WHERE turn_id = pg_temp.turn('fail')$$,
                 '23000', NULL, 'failed -> cancelled is refused (23000)');
SELECT throws_ok($$UPDATE pgagent.turn SET status = 'awaiting_approval', finished_at = NULL
                    WHERE turn_id = pg_temp.turn('fail')$$,
                 '23000', NULL, 'failed -> awaiting_approval is refused (23000)');
SELECT throws_ok($$UPDATE pgagent.turn SET error = 'other' WHERE turn_id = pg_temp.turn('fail')$$,
                 '23000', NULL, 'a failed turn''s error cannot change (23000)');

-- cancelled is terminal (queued -> cancelled is allowed)
SELECT lives_ok($$UPDATE pgagent.turn SET status = 'cancelled', error = 'stop', finished_at = clock_timestamp()
                   WHERE turn_id = pg_temp.turn('cancel')$$, 'queued -> cancelled');
SELECT throws_ok($$UPDATE pgagent.turn SET status = 'running', started_at = now(), finished_at = NULL
                    WHERE turn_id = pg_temp.turn('cancel')$$,
                 '23000', NULL, 'cancelled -> running is refused (23000)');

-- ---------------------------------------------------------------- born queued or running only
SELECT throws_ok($$INSERT INTO pgagent.turn (conversation_id, seq, status, user_message, answer, created_at,
                                             started_at, finished_at)
                   VALUES (pg_temp.conv(), 100, 'completed', 'born done', 'x', now() - interval '1 minute',
                           now(), clock_timestamp())$$,
                 '23000', NULL, 'a new turn inserted as completed is refused (23000)');
SELECT throws_ok($$INSERT INTO pgagent.turn (conversation_id, seq, status, user_message, created_at, started_at)
                   VALUES (pg_temp.conv(), 101, 'awaiting_approval', 'born waiting', now() - interval '1 minute', now())$$,
                 '23000', NULL, 'a new turn inserted as awaiting_approval is refused (23000)');

-- ---------------------------------------------------------------- identity columns are immutable
SELECT throws_ok($$UPDATE pgagent.turn SET user_message = 'rewritten' WHERE turn_id = pg_temp.turn('ident')$$,
                 '23000', NULL, 'a turn''s user_message is immutable (23000)');
SELECT throws_ok($$UPDATE pgagent.turn SET seq = 99 WHERE turn_id = pg_temp.turn('ident')$$,
                 '23000', NULL, 'a turn''s seq is immutable (23000)');
SELECT throws_ok($$UPDATE pgagent.turn SET conversation_id = (SELECT conversation_id FROM pgagent.conversation
                                                                WHERE title = 'sm_other')
                    WHERE turn_id = pg_temp.turn('ident')$$,
                 '23000', NULL, 'a turn cannot move to another conversation (23000)');
SELECT throws_ok($$UPDATE pgagent.turn SET created_at = created_at - interval '1 day' WHERE turn_id = pg_temp.turn('ident')$$,
                 '23000', NULL, 'a turn''s created_at is immutable (23000)');
SELECT throws_ok($$UPDATE pgagent.turn SET created_by = 'someone_else' WHERE turn_id = pg_temp.turn('ident')$$,
                 '23000', NULL, 'a turn''s created_by is immutable (23000)');

SELECT * FROM finish();
ROLLBACK;
