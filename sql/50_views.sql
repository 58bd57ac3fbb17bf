-- Monitoring views (security_invoker: they show only what the caller may see). New columns are
-- appended at the end of each view, so existing column positions never move.

CREATE OR REPLACE VIEW pgagent.turn_timeline WITH (security_invoker = true) AS
SELECT s.tenant_id, c.conversation_id, a.name AS agent, t.turn_id, t.seq AS turn_seq, t.status AS turn_status,
       s.step_id, s.seq, s.kind, s.tool_name, s.tool_call_id, s.parent_step_id,
       CASE s.kind
         WHEN 'user_message' THEN s.payload ->> 'content'
         WHEN 'llm_call' THEN coalesce(
              (SELECT string_agg((tc -> 'function' ->> 'name')
                                 || '(' || coalesce(tc -> 'function' ->> 'arguments', '') || ')', ', ')
                 FROM jsonb_array_elements(s.payload -> 'message' -> 'tool_calls') tc),
              s.payload -> 'message' ->> 'content')
         WHEN 'thinking' THEN s.payload ->> 'content'
         -- an invalid call has arguments JSON null: show why, and what the model actually sent
         WHEN 'tool_call' THEN
              CASE WHEN coalesce(jsonb_typeof(s.payload -> 'arguments'), 'null') <> 'null'
                        AND s.payload ->> 'invalid' IS NULL
                     THEN (s.payload -> 'arguments')::text
                   ELSE 'invalid: ' || coalesce(s.payload ->> 'invalid', 'no arguments')
                        || ' (raw: ' || coalesce(s.payload ->> 'raw_arguments', '') || ')'
              END
         WHEN 'approval' THEN CASE WHEN (s.payload ->> 'approved')::boolean THEN 'approved' ELSE 'rejected' END
                              || coalesce(' by ' || (s.payload ->> 'decided_by'), '')
                              || coalesce(': ' || (s.payload ->> 'note'), '')
         WHEN 'tool_result' THEN CASE WHEN (s.payload ->> 'is_error')::boolean
                                      THEN 'error: ' || coalesce(s.payload ->> 'error', 'unknown')
                                      ELSE (s.payload -> 'result')::text END
              || coalesce(' (child turn ' || (s.payload ->> 'child_turn_id') || ')', '')
         WHEN 'response' THEN s.payload ->> 'content'
         WHEN 'error' THEN s.payload ->> 'message'
         WHEN 'intervention' THEN (s.payload ->> 'action')
              || coalesce(' by ' || coalesce(s.payload ->> 'injected_by', s.payload ->> 'paused_by',
                                             s.payload ->> 'resumed_by', s.payload ->> 'by'), '')
              || coalesce(': ' || coalesce(s.payload ->> 'content', s.payload ->> 'reason'), '')
         WHEN 'guardrail' THEN (s.payload ->> 'action')
              || coalesce(' by hook ' || (s.payload ->> 'hook'), ' by guard ' || (s.payload ->> 'guard'), '')
              || ' at ' || coalesce(s.payload ->> 'event', '?') || coalesce(': ' || (s.payload ->> 'reason'), '')
         WHEN 'compaction' THEN (s.payload ->> 'stage') || ': ' || coalesce(s.payload ->> 'tokens_before', '?')
              || ' -> ' || coalesce(s.payload ->> 'tokens_after', '?') || ' tokens (estimated)'
              || coalesce(' (' || (s.payload ->> 'error') || ')', '')
       END AS summary,
       s.prompt_tokens, s.completion_tokens, s.cost_usd, s.latency_ms,
       round(extract(epoch FROM s.created_at - t.created_at)::numeric * 1000, 3) AS at_ms,
       s.created_by, s.created_at, s.payload,
       c.user_id, t.parent_turn_id, t.depth
  FROM pgagent.step s
  JOIN pgagent.turn t ON t.tenant_id = s.tenant_id AND t.turn_id = s.turn_id
  JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
  JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id;
COMMENT ON VIEW pgagent.turn_timeline IS
  'Every step of every turn with a one-line summary, tokens, cost (USD), latency_ms and at_ms (ms since the turn was created), and the conversation''s user_id. Unordered: order by turn_id, seq.';

-- Two NOT EXISTS (not one with kind IN (...)) so each can use its partial unique index on step.
CREATE OR REPLACE VIEW pgagent.pending_approvals WITH (security_invoker = true) AS
SELECT s.tenant_id, s.step_id, s.turn_id, t.conversation_id, a.name AS agent, s.tool_name,
       s.payload -> 'arguments' AS arguments, t.user_message, s.created_at,
       round(greatest(extract(epoch FROM now() - s.created_at), 0)::numeric, 3) AS waiting_s,
       c.user_id
  FROM pgagent.step s
  JOIN pgagent.turn t ON t.tenant_id = s.tenant_id AND t.turn_id = s.turn_id
  JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
  JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
 WHERE s.kind = 'tool_call' AND (s.payload ->> 'requires_approval')::boolean
   AND t.status = 'awaiting_approval'
   AND NOT EXISTS (SELECT 1 FROM pgagent.step d
                    WHERE d.tenant_id = s.tenant_id AND d.parent_step_id = s.step_id AND d.kind = 'approval')
   AND NOT EXISTS (SELECT 1 FROM pgagent.step d
                    WHERE d.tenant_id = s.tenant_id AND d.parent_step_id = s.step_id AND d.kind = 'tool_result')
 ORDER BY s.created_at, s.step_id;
COMMENT ON VIEW pgagent.pending_approvals IS
  'Tool calls waiting for a human decision (pgagent.approve_step), oldest first (created_at, then step_id); waiting_s in seconds.';

CREATE OR REPLACE VIEW pgagent.turn_summary WITH (security_invoker = true) AS
SELECT t.tenant_id, t.turn_id, t.conversation_id, a.name AS agent, t.seq, t.status, t.user_message, t.answer, t.error,
       (SELECT count(*) FROM pgagent.step s WHERE s.tenant_id = t.tenant_id AND s.turn_id = t.turn_id) AS steps,
       t.llm_calls, t.prompt_tokens, t.completion_tokens, t.cost_usd,
       round(greatest(extract(epoch FROM coalesce(t.finished_at, now()) - t.created_at), 0)::numeric * 1000, 3) AS duration_ms,
       t.created_by, t.created_at, t.started_at, t.finished_at,
       c.user_id
  FROM pgagent.turn t
  JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
  JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id;
COMMENT ON VIEW pgagent.turn_summary IS
  'One row per turn: status, answer or error, step count, LLM calls, tokens, cost (USD), duration_ms (ms, to now for open turns) and the conversation''s user_id.';

-- Token sums are cast back to bigint (a sum of bigint is numeric) so the columns stay integers.
CREATE OR REPLACE VIEW pgagent.agent_stats WITH (security_invoker = true) AS
SELECT a.tenant_id, a.agent_id, a.name AS agent, m.name AS model,
       fin.completed + fin.failed + fin.cancelled + act.turns AS turns,
       fin.completed, fin.failed, act.awaiting_approval,
       fin.llm_calls + act.llm_calls AS llm_calls,
       (fin.prompt_tokens + act.prompt_tokens)::bigint AS prompt_tokens,
       (fin.completion_tokens + act.completion_tokens)::bigint AS completion_tokens,
       fin.cost_usd + act.cost_usd AS cost_usd,
       round((fin.timed_ms + act.timed_ms) / nullif(fin.timed + act.timed, 0), 3) AS avg_turn_ms,
       fin.cancelled, act.running, act.queued,
       a.enabled
  FROM pgagent.agent a
  JOIN pgagent.model m ON m.tenant_id = a.tenant_id AND m.model_id = a.model_id
  -- final turns: the rollup kept by the trigger turn_rollup (a few rows per agent and day)
  CROSS JOIN LATERAL (
        SELECT coalesce(sum(d.completed), 0)::bigint AS completed, coalesce(sum(d.failed), 0)::bigint AS failed,
               coalesce(sum(d.cancelled), 0)::bigint AS cancelled, coalesce(sum(d.llm_calls), 0)::bigint AS llm_calls,
               coalesce(sum(d.prompt_tokens), 0) AS prompt_tokens,
               coalesce(sum(d.completion_tokens), 0) AS completion_tokens,
               coalesce(sum(d.cost_usd), 0) AS cost_usd, coalesce(sum(d.timed), 0) AS timed,
               coalesce(sum(d.timed_ms), 0) AS timed_ms
          FROM pgagent.agent_daily d
         WHERE d.tenant_id = a.tenant_id AND d.agent_id = a.agent_id) fin
  -- turns not final yet: few, found through the partial index turn_active
  CROSS JOIN LATERAL (
        SELECT count(*) AS turns, count(*) FILTER (WHERE t.status = 'awaiting_approval') AS awaiting_approval,
               count(*) FILTER (WHERE t.status = 'running') AS running,
               count(*) FILTER (WHERE t.status = 'queued') AS queued,
               coalesce(sum(t.llm_calls), 0)::bigint AS llm_calls, coalesce(sum(t.prompt_tokens), 0) AS prompt_tokens,
               coalesce(sum(t.completion_tokens), 0) AS completion_tokens, coalesce(sum(t.cost_usd), 0) AS cost_usd,
               count(t.finished_at) AS timed,
               coalesce(sum(extract(epoch FROM t.finished_at - t.created_at) * 1000), 0) AS timed_ms
          FROM pgagent.turn t
          JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
         WHERE t.tenant_id = a.tenant_id AND c.agent_id = a.agent_id
           AND t.status IN ('queued', 'running', 'awaiting_approval', 'paused')) act;
COMMENT ON VIEW pgagent.agent_stats IS
  'Per agent: turns by status (completed, failed, awaiting_approval, cancelled, running, queued), LLM calls, tokens, cost (USD), average time of finished turns (avg_turn_ms, ms) and whether the agent is enabled.';
