-- Analytics functions (issue 8): SECURITY INVOKER (row level security applies) over the current
-- tenant (pgagent.current_tenant()), search_path pinned. Replayable.

CREATE OR REPLACE FUNCTION pgagent._check_days(days integer) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF days IS NULL OR days < 1 OR days > 3660 THEN
        RAISE EXCEPTION 'pgagent: days must be from 1 to 3660, not %', coalesce(days::text, 'NULL')
          USING ERRCODE = 'invalid_parameter_value', DETAIL = 'days is the window: the last N days up to now.',
                HINT = 'Pass e.g. days => 7.';
    END IF;
END $$;
COMMENT ON FUNCTION pgagent._check_days(integer) IS
  'Internal (the analytics functions): raise 22023 unless days is from 1 to 3660.';

CREATE OR REPLACE FUNCTION pgagent.agent_analytics(agent text, days integer DEFAULT 7) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tid   uuid := pgagent.current_tenant();
    aid   bigint;
    since timestamptz;
    out   jsonb;
BEGIN
    IF agent IS NULL THEN
        RAISE EXCEPTION 'pgagent: agent must be an agent''s name, not NULL' USING ERRCODE = 'invalid_parameter_value',
              HINT = 'SELECT name FROM pgagent.agent lists them.';
    END IF;
    PERFORM pgagent._check_days(days);
    SELECT a.agent_id INTO aid FROM pgagent.agent a WHERE a.tenant_id = tid AND a.name = agent;
    IF aid IS NULL THEN
        RAISE EXCEPTION 'pgagent: agent % does not exist (for this tenant)', quote_literal(agent)
          USING ERRCODE = 'undefined_object', HINT = 'Check the name; objects of other tenants are not visible.';
    END IF;
    since := now() - make_interval(days => days);
    WITH t AS (
        SELECT t.* FROM pgagent.conversation c
          JOIN pgagent.turn t ON t.tenant_id = c.tenant_id AND t.conversation_id = c.conversation_id
         WHERE c.tenant_id = tid AND c.agent_id = aid AND t.created_at >= since),
    turns AS (
        SELECT count(*) AS turns, count(DISTINCT t.conversation_id) AS conversations,
               count(*) FILTER (WHERE t.status = 'completed') AS completed,
               count(*) FILTER (WHERE t.status = 'failed') AS failed,
               count(*) FILTER (WHERE t.status = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE t.finished_at IS NULL) AS active,
               coalesce(sum(t.llm_calls), 0) AS llm_calls,
               coalesce(sum(t.prompt_tokens), 0) AS prompt_tokens,
               coalesce(sum(t.completion_tokens), 0) AS completion_tokens,
               coalesce(sum(t.cost_usd), 0) AS cost_usd,
               round(avg(extract(epoch FROM t.finished_at - t.created_at) * 1000)
                     FILTER (WHERE t.status = 'completed')::numeric, 3) AS avg_turn_ms,
               round((percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM t.finished_at - t.created_at))
                      FILTER (WHERE t.status = 'completed') * 1000)::numeric, 3) AS p95_turn_ms
          FROM t),
    calls AS (
        SELECT s.tool_name, count(*) AS calls,
               count(*) FILTER (WHERE (r.payload ->> 'is_error')::boolean) AS errors,
               count(*) FILTER (WHERE (d.payload ->> 'approved')::boolean) AS approvals,
               count(*) FILTER (WHERE NOT (d.payload ->> 'approved')::boolean) AS rejections
          FROM t JOIN pgagent.step s ON s.tenant_id = t.tenant_id AND s.turn_id = t.turn_id AND s.kind = 'tool_call'
          LEFT JOIN pgagent.step r ON r.tenant_id = s.tenant_id AND r.parent_step_id = s.step_id AND r.kind = 'tool_result'
          LEFT JOIN pgagent.step d ON d.tenant_id = s.tenant_id AND d.parent_step_id = s.step_id AND d.kind = 'approval'
         GROUP BY s.tool_name),
    ratings AS (
        SELECT count(*) AS ratings, round(avg(r.rating), 2) AS mean_rating,
               count(*) FILTER (WHERE r.thumbs_up) AS thumbs_up, count(*) FILTER (WHERE NOT r.thumbs_up) AS thumbs_down
          FROM t JOIN pgagent.rating r ON r.tenant_id = t.tenant_id AND r.turn_id = t.turn_id)
    SELECT jsonb_build_object(
             'agent', agent, 'days', days, 'since', since,
             'conversations', turns.conversations, 'turns', turns.turns, 'completed', turns.completed,
             'failed', turns.failed, 'cancelled', turns.cancelled, 'active', turns.active,
             'success_rate_pct', round(100.0 * turns.completed / nullif(turns.completed + turns.failed + turns.cancelled, 0), 1),
             'llm_calls', turns.llm_calls, 'prompt_tokens', turns.prompt_tokens,
             'completion_tokens', turns.completion_tokens, 'total_tokens', turns.prompt_tokens + turns.completion_tokens,
             'cost_usd', turns.cost_usd, 'avg_turn_ms', turns.avg_turn_ms, 'p95_turn_ms', turns.p95_turn_ms,
             'tools', coalesce((SELECT jsonb_object_agg(c.tool_name, jsonb_build_object(
                                  'calls', c.calls, 'errors', c.errors, 'approvals', c.approvals,
                                  'rejections', c.rejections)) FROM calls c), '{}'),
             'tool_calls', coalesce((SELECT sum(c.calls) FROM calls c), 0),
             'approvals', coalesce((SELECT sum(c.approvals) FROM calls c), 0),
             'rejections', coalesce((SELECT sum(c.rejections) FROM calls c), 0),
             'ratings', ratings.ratings, 'mean_rating', ratings.mean_rating,
             'thumbs_up', ratings.thumbs_up, 'thumbs_down', ratings.thumbs_down)
      INTO out
      FROM turns, ratings;
    RETURN out;
END $$;
COMMENT ON FUNCTION pgagent.agent_analytics(text, integer) IS
  'One agent of the current tenant over the turns created in the last days days: conversations, turns (completed, failed, cancelled, active), success_rate_pct (completed as % of finished), llm_calls, prompt/completion/total tokens, cost_usd (USD), avg_turn_ms and p95_turn_ms (ms, created to finished, completed turns), tools {name: {calls, errors, approvals, rejections}}, tool_calls, approvals, rejections, ratings, mean_rating (1..5), thumbs_up, thumbs_down. Runs as the caller (row level security). Raises 22023 (NULL agent, days outside 1..3660), 42704 (unknown agent).';

CREATE OR REPLACE FUNCTION pgagent.hourly_activity(days integer DEFAULT 1)
RETURNS TABLE (hour timestamptz, turns bigint, steps bigint, llm_calls bigint, prompt_tokens bigint,
               completion_tokens bigint, cost_usd numeric, errors bigint, failed_turns bigint)
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tid   uuid := pgagent.current_tenant();
    since timestamptz;
BEGIN
    PERFORM pgagent._check_days(days);
    since := date_trunc('hour', now() - make_interval(days => days));
    RETURN QUERY
    WITH s AS (
        SELECT date_trunc('hour', x.created_at) AS h, count(*) AS steps,
               count(*) FILTER (WHERE x.kind = 'llm_call') AS llm_calls,
               coalesce(sum(x.prompt_tokens), 0)::bigint AS prompt_tokens,
               coalesce(sum(x.completion_tokens), 0)::bigint AS completion_tokens,
               coalesce(sum(x.cost_usd), 0) AS cost_usd,
               count(*) FILTER (WHERE x.kind = 'error') AS errors
          FROM pgagent.step x WHERE x.tenant_id = tid AND x.created_at >= since GROUP BY 1),
    t AS (
        SELECT date_trunc('hour', x.created_at) AS h, count(*) AS turns,
               count(*) FILTER (WHERE x.status = 'failed') AS failed
          FROM pgagent.turn x WHERE x.tenant_id = tid AND x.created_at >= since GROUP BY 1)
    SELECT g.h, coalesce(t.turns, 0), coalesce(s.steps, 0), coalesce(s.llm_calls, 0), coalesce(s.prompt_tokens, 0),
           coalesce(s.completion_tokens, 0), coalesce(s.cost_usd, 0), coalesce(s.errors, 0), coalesce(t.failed, 0)
      FROM generate_series(since, date_trunc('hour', now()), interval '1 hour') AS g(h)
      LEFT JOIN s ON s.h = g.h LEFT JOIN t ON t.h = g.h
     ORDER BY g.h;
END $$;
COMMENT ON FUNCTION pgagent.hourly_activity(integer) IS
  'The current tenant per hour over the last days days (one row per hour, empty hours included, oldest first): turns created, steps recorded, llm_calls, prompt/completion tokens and cost (USD) of those LLM calls, errors (error steps: failed LLM attempts, budget and hook stops, failed turns) and failed_turns (of the turns created that hour). Runs as the caller. Raises 22023 (days outside 1..3660).';

CREATE OR REPLACE FUNCTION pgagent.tool_usage(days integer DEFAULT 7)
RETURNS TABLE (tool text, calls bigint, errors bigint, mean_ms numeric, p95_ms numeric, approvals bigint,
               rejections bigint, pending bigint)
LANGUAGE plpgsql STABLE SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tid uuid := pgagent.current_tenant();
BEGIN
    PERFORM pgagent._check_days(days);
    RETURN QUERY
    SELECT s.tool_name, count(*),
           count(*) FILTER (WHERE (r.payload ->> 'is_error')::boolean),
           round(avg(r.latency_ms), 3),
           round((percentile_cont(0.95) WITHIN GROUP (ORDER BY r.latency_ms))::numeric, 3),
           count(*) FILTER (WHERE (d.payload ->> 'approved')::boolean),
           count(*) FILTER (WHERE NOT (d.payload ->> 'approved')::boolean),
           count(*) FILTER (WHERE (s.payload ->> 'requires_approval')::boolean AND d.step_id IS NULL
                              AND r.step_id IS NULL)
      FROM pgagent.step s
      LEFT JOIN pgagent.step r ON r.tenant_id = s.tenant_id AND r.parent_step_id = s.step_id AND r.kind = 'tool_result'
      LEFT JOIN pgagent.step d ON d.tenant_id = s.tenant_id AND d.parent_step_id = s.step_id AND d.kind = 'approval'
     WHERE s.tenant_id = tid AND s.kind = 'tool_call' AND s.created_at >= now() - make_interval(days => days)
     GROUP BY s.tool_name
     ORDER BY count(*) DESC, s.tool_name;
END $$;
COMMENT ON FUNCTION pgagent.tool_usage(integer) IS
  'The current tenant''s tool calls of the last days days, per tool (most called first): calls, errors (results with is_error: tool failures, rejections, hook denials, invalid calls), mean_ms and p95_ms (ms, run time of the calls that ran), approvals, rejections and pending (waiting for a decision). Runs as the caller. Raises 22023 (days outside 1..3660).';

REVOKE ALL ON FUNCTION pgagent._check_days(integer), pgagent.agent_analytics(text, integer),
                       pgagent.hourly_activity(integer), pgagent.tool_usage(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent._check_days(integer), pgagent.agent_analytics(text, integer),
                          pgagent.hourly_activity(integer), pgagent.tool_usage(integer) TO pgagent_viewer;
