-- Evaluation suites (issue 11): who may call what, the tables' shape, row level security, the
-- views, and bad input refused with documented SQLSTATEs. No model is called here.
BEGIN;
SELECT plan(21);

-- ---------------------------------------------------------------- grants
SELECT ok(pg_catalog.has_function_privilege('pgagent_operator', f, 'EXECUTE')
          AND NOT pg_catalog.has_function_privilege('pgagent_user', f, 'EXECUTE'), f || ' is for operators and above')
  FROM unnest(ARRAY['pgagent.create_eval_suite(text,text,jsonb)', 'pgagent.drop_eval_suite(text)',
                    'pgagent.add_eval_case(text,text,text,text,text,double precision,integer,text,boolean,text,text[])',
                    'pgagent.run_eval(text,text,text,boolean)', 'pgagent.score_eval(bigint)']) AS f;
SELECT ok(pg_catalog.has_function_privilege('pgagent_viewer', 'pgagent.eval_compare(bigint,bigint)', 'EXECUTE'),
          'viewers compare runs');
SELECT ok(pg_catalog.has_table_privilege('pgagent_viewer', 'pgagent.' || v, 'SELECT')
          AND (SELECT 'security_invoker=true' = ANY (reloptions) FROM pg_class WHERE oid = ('pgagent.' || v)::regclass),
          v || ': viewers read it, as themselves')
  FROM unnest(ARRAY['eval_runs', 'eval_results', 'eval_changes']) AS v;
SELECT ok(NOT pg_catalog.has_table_privilege('pgagent_admin', 'pgagent.eval_result', p), 'no admin ' || p || ' on eval_result')
  FROM unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p;

-- ---------------------------------------------------------------- shape
SELECT ok((SELECT relforcerowsecurity FROM pg_class WHERE oid = ('pgagent.' || t)::regclass), t || ': RLS forced')
  FROM unnest(ARRAY['eval_suite', 'eval_case', 'eval_run', 'eval_result']) AS t;
SELECT col_is_pk('pgagent', 'eval_result', ARRAY['tenant_id', 'run_id', 'case_id'], 'a result per run and case, keyed by tenant');

-- ---------------------------------------------------------------- bad input
SELECT throws_ok($$SELECT pgagent.add_eval_case('no such suite', 'q', expected => 'x')$$, '42704', NULL, 'an unknown suite');
SELECT throws_ok($$SELECT pgagent.create_eval_suite('bad name!')$$, '22023', NULL, 'a bad suite name');
SELECT throws_ok($$SELECT pgagent.score_eval(-5)$$, '42704', NULL, 'an unknown run');

SELECT * FROM finish();
ROLLBACK;
