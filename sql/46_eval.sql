-- Evaluation suites (issue 11; docs/evals.md): the SQL API over pgagent_core.evals_api and the
-- views that compare runs. Tables in 10_tables.sql. Replayable.

CREATE OR REPLACE FUNCTION pgagent.create_eval_suite(name text, description text DEFAULT NULL, config jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('create_eval_suite', pg_catalog.jsonb_build_object('name', name, 'description', description, 'config', config));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.create_eval_suite(text, text, jsonb) IS
  'Operator: create an evaluation suite (questions with reference answers, pgagent.add_eval_case). config: search_path (the schemas reference queries see, default public), judge_model (the chat model that grades scoring llm cases; default the tenant''s default). Returns suite_id. Audited. Raises 22023, 23505 (the name is taken).';
REVOKE ALL ON FUNCTION pgagent.create_eval_suite(text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.create_eval_suite(text, text, jsonb) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.drop_eval_suite(name text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('drop_eval_suite', pg_catalog.jsonb_build_object('name', name));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.drop_eval_suite(text) IS
  'Operator: delete a suite with its cases, runs and results (the conversations of its runs stay). Audited. Raises 42704.';
REVOKE ALL ON FUNCTION pgagent.drop_eval_suite(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.drop_eval_suite(text) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.add_eval_case(suite text, question text, expected text DEFAULT NULL, reference_sql text DEFAULT NULL, scoring text DEFAULT 'contains', tolerance double precision DEFAULT NULL, decimals integer DEFAULT NULL, rubric text DEFAULT NULL, needs_tool boolean DEFAULT true, name text DEFAULT NULL, tags text[] DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('add_eval_case', pg_catalog.jsonb_build_object('suite', suite, 'question', question, 'expected', expected, 'reference_sql', reference_sql, 'scoring', scoring, 'tolerance', tolerance, 'decimals', decimals, 'rubric', rubric, 'needs_tool', needs_tool, 'name', name, 'tags', tags));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.add_eval_case(text, text, text, text, text, double precision, integer, text, boolean, text, text[]) IS
  'Operator: add a case to a suite: the question, its reference answer (expected; or reference_sql, one column run as pgagent_sandbox with the suite''s search_path when the case is scored, checked once now) and the scoring rule: exact, contains (every expected value in the answer as whole words), numeric (every expected number among the answer''s numbers, within tolerance, or rounded to decimals, else exactly) or llm (a judge model and the rubric). needs_tool false: a question to answer without a tool (not graded for grounding). Returns case_id. Raises 22023, 23505, 42704.';
REVOKE ALL ON FUNCTION pgagent.add_eval_case(text, text, text, text, text, double precision, integer, text, boolean, text, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.add_eval_case(text, text, text, text, text, double precision, integer, text, boolean, text, text[]) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.run_eval(suite text, agent text, label text DEFAULT NULL, queue boolean DEFAULT false)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('run_eval', pg_catalog.jsonb_build_object('suite', suite, 'agent', agent, 'label', label, 'queue', queue));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.run_eval(text, text, text, boolean) IS
  'Operator: run every case of a suite against an agent, one new conversation per case (as the caller). queue false: answered and scored now in this transaction; queue true: enqueued for pgagent worker processes, then scored by pgagent.score_eval. Keeps the agent''s model and a prompt version (a hash of its persona prompt, config and tools). Returns run_id. Raises 22023, 42704.';
REVOKE ALL ON FUNCTION pgagent.run_eval(text, text, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.run_eval(text, text, text, boolean) TO pgagent_operator;

CREATE OR REPLACE FUNCTION pgagent.score_eval(run bigint)
RETURNS jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('score_eval', pg_catalog.jsonb_build_object('run', run));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN r -> 'result';
END $$;
COMMENT ON FUNCTION pgagent.score_eval(bigint) IS
  'Operator: score the cases of a run whose turns have finished (a turn that did not complete is wrong) and mark the run scored when none is left; safe to call again. Returns {run_id, status, cases, scored, pending, correct}. Raises 42704.';
REVOKE ALL ON FUNCTION pgagent.score_eval(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.score_eval(bigint) TO pgagent_operator;


CREATE OR REPLACE VIEW pgagent.eval_runs WITH (security_invoker = true) AS
SELECT r.tenant_id, r.run_id, s.name AS suite, r.agent_name AS agent, r.model_name AS model, r.prompt_version, r.label,
       r.status, r.queued,
       count(x.case_id) AS cases,
       count(x.case_id) FILTER (WHERE x.status = 'scored') AS scored,
       count(x.case_id) FILTER (WHERE x.correct) AS correct,
       round(count(x.case_id) FILTER (WHERE x.correct)::numeric
             / nullif(count(x.case_id) FILTER (WHERE x.status = 'scored'), 0), 4) AS score,
       round(count(x.case_id) FILTER (WHERE x.correct AND x.grounded)::numeric
             / nullif(count(x.case_id) FILTER (WHERE x.correct AND k.needs_tool), 0), 4) AS grounded_share,
       round(avg(x.latency_ms), 1) AS mean_latency_ms,
       sum(x.llm_calls) AS llm_calls,
       sum(x.prompt_tokens) AS prompt_tokens,
       sum(x.completion_tokens) AS completion_tokens,
       sum(x.cost_usd) AS cost_usd,
       r.started_at, r.finished_at, r.created_by
  FROM pgagent.eval_run r
  JOIN pgagent.eval_suite s ON s.tenant_id = r.tenant_id AND s.suite_id = r.suite_id
  LEFT JOIN pgagent.eval_result x ON x.tenant_id = r.tenant_id AND x.run_id = r.run_id
  LEFT JOIN pgagent.eval_case k ON k.tenant_id = x.tenant_id AND k.case_id = x.case_id
 GROUP BY r.tenant_id, r.run_id, s.name;
COMMENT ON VIEW pgagent.eval_runs IS
  'One row per evaluation run: the suite, the agent, its model and prompt version, the label; cases, scored, correct, score (correct / scored), grounded_share (grounded / correct among cases that need a tool), mean latency (ms, a turn''s start to finish), LLM calls, tokens and cost (USD). Compare runs by agent, model or prompt_version.';

CREATE OR REPLACE VIEW pgagent.eval_results WITH (security_invoker = true) AS
SELECT x.tenant_id, x.run_id, s.name AS suite, k.name AS case_name, k.question, k.scoring, k.needs_tool, k.tags,
       x.status, x.expected, x.answer, x.correct, x.grounded, x.steps, x.llm_calls, x.tool_calls, x.prompt_tokens,
       x.completion_tokens, x.cost_usd, x.latency_ms, x.conversation_id, x.turn_id, x.detail, x.scored_at
  FROM pgagent.eval_result x
  JOIN pgagent.eval_case k ON k.tenant_id = x.tenant_id AND k.case_id = x.case_id
  JOIN pgagent.eval_suite s ON s.tenant_id = k.tenant_id AND s.suite_id = k.suite_id;
COMMENT ON VIEW pgagent.eval_results IS
  'One row per case of a run: the question, the reference answer as scored (expected), the agent''s answer, correct, grounded (the answer came from a tool result; NULL for cases that need no tool), steps, LLM and tool calls, tokens, cost (USD), latency (ms), the turn that answered it and the scoring detail.';

CREATE OR REPLACE VIEW pgagent.eval_changes WITH (security_invoker = true) AS
WITH runs AS (
  SELECT r.tenant_id, r.run_id, r.suite_id,
         lag(r.run_id) OVER (PARTITION BY r.tenant_id, r.suite_id ORDER BY r.run_id) AS previous_run_id
    FROM pgagent.eval_run r)
SELECT r.tenant_id, r.run_id, r.previous_run_id, k.name AS case_name, k.question,
       p.correct AS was_correct, x.correct AS is_correct, p.answer AS previous_answer, x.answer
  FROM runs r
  JOIN pgagent.eval_result x ON x.tenant_id = r.tenant_id AND x.run_id = r.run_id AND x.status = 'scored'
  JOIN pgagent.eval_result p ON p.tenant_id = r.tenant_id AND p.run_id = r.previous_run_id AND p.case_id = x.case_id
                            AND p.status = 'scored'
  JOIN pgagent.eval_case k ON k.tenant_id = x.tenant_id AND k.case_id = x.case_id
 WHERE x.correct IS DISTINCT FROM p.correct;
COMMENT ON VIEW pgagent.eval_changes IS
  'Cases whose result changed between a run and the previous run of the same suite (was_correct, is_correct, both answers). For any two runs use pgagent.eval_compare(a, b).';

CREATE OR REPLACE FUNCTION pgagent.eval_compare(a bigint, b bigint)
RETURNS TABLE (case_name text, question text, a_correct boolean, b_correct boolean, changed boolean,
               a_answer text, b_answer text, a_latency_ms numeric, b_latency_ms numeric)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
  SELECT k.name, k.question, x.correct, y.correct, x.correct IS DISTINCT FROM y.correct, x.answer, y.answer,
         x.latency_ms, y.latency_ms
    FROM pgagent.eval_result x
    JOIN pgagent.eval_result y ON y.tenant_id = x.tenant_id AND y.run_id = b AND y.case_id = x.case_id
    JOIN pgagent.eval_case k ON k.tenant_id = x.tenant_id AND k.case_id = x.case_id
   WHERE x.run_id = a AND x.tenant_id = (SELECT pgagent.current_tenant())
   ORDER BY x.correct IS NOT DISTINCT FROM y.correct, k.case_id
$$;
COMMENT ON FUNCTION pgagent.eval_compare(bigint, bigint) IS
  'Viewer: the cases two runs of one suite share, side by side (correct, answers, latency in ms), changed cases first. Runs with the caller''s rights (row level security applies).';
REVOKE ALL ON FUNCTION pgagent.eval_compare(bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.eval_compare(bigint, bigint) TO pgagent_viewer;

GRANT SELECT ON pgagent.eval_runs, pgagent.eval_results, pgagent.eval_changes TO pgagent_viewer;
