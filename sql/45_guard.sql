-- Budgets and policy hooks (issue 8): the admin API (same wrapper pattern as 40_api.sql:
-- SECURITY DEFINER PL/pgSQL around pgagent._py, search_path pinned) and the budget_status view.
-- The Python side is python/pgagent_core/budget.py and hooks.py. Replayable.

CREATE OR REPLACE FUNCTION pgagent.set_budget(scope text DEFAULT 'tenant', period text DEFAULT 'month', max_usd numeric DEFAULT NULL, max_tokens bigint DEFAULT NULL, max_turns integer DEFAULT NULL, agent text DEFAULT NULL, role name DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('set_budget', pg_catalog.jsonb_build_object('scope', scope, 'period', period, 'max_usd', max_usd, 'max_tokens', max_tokens, 'max_turns', max_turns, 'agent', agent, 'role', role));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.set_budget(text, text, numeric, bigint, integer, text, name) IS
  'Admin: create or replace (by scope, agent or role, and period) a spending limit: scope tenant (every turn), agent (turns of agent, a name) or role (turns started by role); period day or month (UTC calendar); max_usd (USD), max_tokens (prompt + completion tokens), max_turns (turns that call the LLM), at least one. Enforced before every LLM call: an exhausted budget fails the turn with an error step (error_kind budget_exceeded, SQLSTATE 53400) and no HTTP request. Returns budget_id. Audited (budget_set, with the previous limits). Raises 22023, 42704.';
REVOKE ALL ON FUNCTION pgagent.set_budget(text, text, numeric, bigint, integer, text, name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.set_budget(text, text, numeric, bigint, integer, text, name) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.delete_budget(budget bigint)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('delete_budget', pg_catalog.jsonb_build_object('budget', budget));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.delete_budget(bigint) IS
  'Admin: remove a budget with its usage and reservations. Returns true. Audited (budget_deleted). Raises 22023, 42704.';
REVOKE ALL ON FUNCTION pgagent.delete_budget(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.delete_budget(bigint) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.add_hook(event text, "function" regprocedure, agent text DEFAULT NULL, run_as name DEFAULT 'pgagent_sandbox', priority integer DEFAULT 100)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('add_hook', pg_catalog.jsonb_build_object('event', event, 'function', "function"::oid::bigint, 'agent', agent, 'run_as', run_as, 'priority', priority));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::bigint;
END $$;
COMMENT ON FUNCTION pgagent.add_hook(text, regprocedure, text, name, integer) IS
  'Admin: add a policy hook: the loop calls "function" (payload jsonb) RETURNS jsonb at event before_llm_call {messages, params, tools}, before_tool_call {tool, tool_call_id, arguments} or after_response {content} of the turns of agent (NULL: every agent), as role run_as, in priority order (lower first). It returns NULL or {"action": "allow"}, {"action": "deny", "reason": ...} or {"action": "rewrite", "payload": {...}}; denials and rewrites are guardrail steps; a failing hook denies (fail closed). See docs/guardrails.md. Returns hook_id. Audited (hook_added). Raises 22023, 42704, 42501.';
REVOKE ALL ON FUNCTION pgagent.add_hook(text, regprocedure, text, name, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.add_hook(text, regprocedure, text, name, integer) TO pgagent_admin;

CREATE OR REPLACE FUNCTION pgagent.delete_hook(hook bigint)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE r jsonb := pgagent._py('delete_hook', pg_catalog.jsonb_build_object('hook', hook));
BEGIN
    IF r ? 'error' THEN
        RAISE EXCEPTION USING MESSAGE = r #>> '{error,message}', ERRCODE = r #>> '{error,sqlstate}',
              DETAIL = r #>> '{error,detail}', HINT = r #>> '{error,hint}';
    END IF;
    RETURN (r -> 'result')::boolean;
END $$;
COMMENT ON FUNCTION pgagent.delete_hook(bigint) IS
  'Admin: remove a policy hook. Returns true. Audited (hook_deleted). Raises 22023, 42704.';
REVOKE ALL ON FUNCTION pgagent.delete_hook(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgagent.delete_hook(bigint) TO pgagent_admin;

-- Spend against limits in each budget's current period; in-flight reservations of turns that
-- still run count as held.
CREATE OR REPLACE VIEW pgagent.budget_status WITH (security_invoker = true) AS
SELECT b.tenant_id, b.budget_id, b.scope, a.name AS agent, b.role_name, b.period,
       pg_catalog.date_trunc(b.period, pg_catalog.now(), 'UTC') AS period_start,
       b.max_usd, b.max_tokens, b.max_turns,
       coalesce(u.spent_usd, 0) AS spent_usd, coalesce(u.spent_tokens, 0) AS spent_tokens,
       coalesce(u.turns, 0) AS turns,
       coalesce(h.usd, 0) AS held_usd, coalesce(h.tokens, 0) AS held_tokens, coalesce(h.turns, 0) AS held_turns,
       b.max_usd - coalesce(u.spent_usd, 0) - coalesce(h.usd, 0) AS remaining_usd,
       b.max_tokens - coalesce(u.spent_tokens, 0) - coalesce(h.tokens, 0) AS remaining_tokens,
       b.max_turns - coalesce(u.turns, 0) - coalesce(h.turns, 0) AS remaining_turns,
       round(100 * GREATEST(coalesce(u.spent_usd, 0) / NULLIF(b.max_usd, 0),
                            coalesce(u.spent_tokens, 0)::numeric / NULLIF(b.max_tokens, 0),
                            coalesce(u.turns, 0)::numeric / NULLIF(b.max_turns, 0)), 1) AS used_pct,
       (coalesce(u.spent_usd, 0) >= b.max_usd OR coalesce(u.spent_tokens, 0) >= b.max_tokens
        OR coalesce(u.turns, 0) >= b.max_turns) IS TRUE AS exhausted,
       b.created_by, b.updated_at
  FROM pgagent.budget b
  LEFT JOIN pgagent.agent a ON a.tenant_id = b.tenant_id AND a.agent_id = b.agent_id
  LEFT JOIN pgagent.budget_usage u ON u.tenant_id = b.tenant_id AND u.budget_id = b.budget_id
        AND u.period_start = pg_catalog.date_trunc(b.period, pg_catalog.now(), 'UTC')
  LEFT JOIN LATERAL (
        SELECT pg_catalog.sum(x.usd) AS usd, pg_catalog.sum(x.tokens) AS tokens, pg_catalog.sum(x.turns) AS turns
          FROM pgagent.budget_hold x
          JOIN pgagent.turn t ON t.tenant_id = x.tenant_id AND t.turn_id = x.turn_id AND t.status = 'running'
         WHERE x.tenant_id = b.tenant_id AND x.budget_id = b.budget_id AND x.period_start = u.period_start) h ON true;
COMMENT ON VIEW pgagent.budget_status IS
  'Each budget (pgagent.set_budget) against its current UTC period: limits, spent (USD, tokens, turns), held by LLM calls in flight, remaining (limit - spent - held; NULL without that limit), used_pct (the highest share of a limit spent, %) and exhausted.';
COMMENT ON COLUMN pgagent.budget_status.tenant_id IS 'The budget''s tenant.';
COMMENT ON COLUMN pgagent.budget_status.budget_id IS 'The budget.';
COMMENT ON COLUMN pgagent.budget_status.scope IS 'tenant, agent or role.';
COMMENT ON COLUMN pgagent.budget_status.agent IS 'scope agent: the agent''s name.';
COMMENT ON COLUMN pgagent.budget_status.role_name IS 'scope role: the role whose turns count.';
COMMENT ON COLUMN pgagent.budget_status.period IS 'day or month (UTC).';
COMMENT ON COLUMN pgagent.budget_status.period_start IS 'Start of the current period (UTC midnight or first of the month).';
COMMENT ON COLUMN pgagent.budget_status.max_usd IS 'Limit in USD (NULL: none).';
COMMENT ON COLUMN pgagent.budget_status.max_tokens IS 'Limit in tokens, prompt + completion (NULL: none).';
COMMENT ON COLUMN pgagent.budget_status.max_turns IS 'Limit in turns that call the LLM (NULL: none).';
COMMENT ON COLUMN pgagent.budget_status.spent_usd IS 'USD spent by recorded LLM calls this period.';
COMMENT ON COLUMN pgagent.budget_status.spent_tokens IS 'Tokens spent by recorded LLM calls this period.';
COMMENT ON COLUMN pgagent.budget_status.turns IS 'Turns that called the LLM this period.';
COMMENT ON COLUMN pgagent.budget_status.held_usd IS 'USD reserved by LLM calls in flight (estimates).';
COMMENT ON COLUMN pgagent.budget_status.held_tokens IS 'Tokens reserved by LLM calls in flight (estimates).';
COMMENT ON COLUMN pgagent.budget_status.held_turns IS 'Turns reserved by first LLM calls in flight.';
COMMENT ON COLUMN pgagent.budget_status.remaining_usd IS 'max_usd - spent - held (USD); NULL without a USD limit.';
COMMENT ON COLUMN pgagent.budget_status.remaining_tokens IS 'max_tokens - spent - held (tokens); NULL without a token limit.';
COMMENT ON COLUMN pgagent.budget_status.remaining_turns IS 'max_turns - spent - held (turns); NULL without a turn limit.';
COMMENT ON COLUMN pgagent.budget_status.used_pct IS 'The highest share of a limit spent (%, one decimal).';
COMMENT ON COLUMN pgagent.budget_status.exhausted IS 'Whether a limit is fully spent (the next LLM call under it fails).';
COMMENT ON COLUMN pgagent.budget_status.created_by IS 'The admin that set it.';
COMMENT ON COLUMN pgagent.budget_status.updated_at IS 'When it was last set.';
GRANT SELECT ON pgagent.budget_status TO pgagent_viewer;
