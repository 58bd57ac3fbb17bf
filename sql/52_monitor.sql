-- Monitoring views for operators (issue 8), all security_invoker: row level security limits them
-- to the caller's tenant. Each answers in <= 50 ms over 1 M steps (bench/bench_views.py); the
-- indexes they use are in 10_tables.sql (step_created, step_tool_call, step_thinking,
-- turn_created, turn_active, flag_open). Replayable.
-- Ages and waits are measured against now() (the start of the caller's transaction; each `\watch`
-- run is one), never clock_timestamp(): a volatile function in a view's select list or WHERE
-- makes the planner give up the ordered index scan under ORDER BY ... LIMIT (1.1 s instead of
-- 8 ms for tool_call_queue at 1 M steps). They are clamped at 0 for rows the caller's own
-- transaction wrote after it started.

-- The newest steps first, for `\watch 1`. Bounded (the last hour, at most 200 rows) so it stays a
-- short backward scan of step_created however long the log is.
CREATE OR REPLACE VIEW pgagent.realtime_steps WITH (security_invoker = true) AS
SELECT tl.tenant_id, tl.created_at, round(greatest(extract(epoch FROM now() - tl.created_at), 0)::numeric, 3) AS age_s,
       tl.agent, tl.conversation_id, tl.turn_id, tl.turn_status, tl.step_id, tl.seq, tl.kind, tl.tool_name,
       left(tl.summary, 200) AS summary, tl.latency_ms, tl.created_by
  FROM pgagent.turn_timeline tl
 WHERE tl.created_at > now() - interval '1 hour'
 ORDER BY tl.created_at DESC, tl.step_id DESC
 LIMIT 200;
COMMENT ON VIEW pgagent.realtime_steps IS
  'The newest steps of the caller''s tenant, newest first: the last hour, at most 200 rows. For psql''s \watch 1.';
COMMENT ON COLUMN pgagent.realtime_steps.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.realtime_steps.created_at IS 'When the step was recorded.';
COMMENT ON COLUMN pgagent.realtime_steps.age_s IS 'Seconds since the step was recorded.';
COMMENT ON COLUMN pgagent.realtime_steps.agent IS 'The agent''s name.';
COMMENT ON COLUMN pgagent.realtime_steps.conversation_id IS 'The conversation.';
COMMENT ON COLUMN pgagent.realtime_steps.turn_id IS 'The turn.';
COMMENT ON COLUMN pgagent.realtime_steps.turn_status IS 'The turn''s status now.';
COMMENT ON COLUMN pgagent.realtime_steps.step_id IS 'The step.';
COMMENT ON COLUMN pgagent.realtime_steps.seq IS 'The step''s position in its turn.';
COMMENT ON COLUMN pgagent.realtime_steps.kind IS 'The step kind (see pgagent.step.kind).';
COMMENT ON COLUMN pgagent.realtime_steps.tool_name IS 'The tool of a tool_call, approval or tool_result step.';
COMMENT ON COLUMN pgagent.realtime_steps.summary IS 'One line about the step (turn_timeline.summary, at most 200 characters).';
COMMENT ON COLUMN pgagent.realtime_steps.latency_ms IS 'LLM call or tool run time (ms).';
COMMENT ON COLUMN pgagent.realtime_steps.created_by IS 'The role that drove the turn when the step was written.';

-- Every tool call and where it stands. state: pending (waits for a human), approved (decided,
-- not run yet), rejected, auto-approved (no approval needed, not run yet), run, failed.
CREATE OR REPLACE VIEW pgagent.tool_call_queue WITH (security_invoker = true) AS
SELECT s.tenant_id, s.step_id, s.turn_id, t.conversation_id, a.name AS agent, s.tool_name, s.tool_call_id,
       s.payload -> 'arguments' AS arguments,
       CASE WHEN d.step_id IS NOT NULL AND NOT (d.payload ->> 'approved')::boolean THEN 'rejected'
            WHEN r.step_id IS NOT NULL AND (r.payload ->> 'is_error')::boolean THEN 'failed'
            WHEN r.step_id IS NOT NULL THEN 'run'
            WHEN d.step_id IS NOT NULL THEN 'approved'
            WHEN (s.payload ->> 'requires_approval')::boolean THEN 'pending'
            ELSE 'auto-approved' END AS state,
       CASE WHEN NOT coalesce((s.payload ->> 'requires_approval')::boolean, false) THEN 'auto-approved'
            WHEN d.step_id IS NULL THEN 'pending'
            WHEN (d.payload ->> 'approved')::boolean THEN 'approved' ELSE 'rejected' END AS approval,
       d.payload ->> 'decided_by' AS decided_by, d.payload ->> 'note' AS note, d.created_at AS decided_at,
       r.step_id AS result_step_id, coalesce(r.payload ->> 'error', CASE WHEN s.payload ->> 'invalid' IS NOT NULL
                                                                       THEN 'invalid: ' || (s.payload ->> 'invalid') END) AS error,
       r.latency_ms AS run_ms,
       round(greatest(extract(epoch FROM coalesce(d.created_at, r.created_at, now()) - s.created_at), 0)::numeric, 3)
         AS wait_s,
       t.status AS turn_status, s.created_at
  FROM pgagent.step s
  JOIN pgagent.turn t ON t.tenant_id = s.tenant_id AND t.turn_id = s.turn_id
  JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
  JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
  LEFT JOIN pgagent.step d ON d.tenant_id = s.tenant_id AND d.parent_step_id = s.step_id AND d.kind = 'approval'
  LEFT JOIN pgagent.step r ON r.tenant_id = s.tenant_id AND r.parent_step_id = s.step_id AND r.kind = 'tool_result'
 WHERE s.kind = 'tool_call';
COMMENT ON VIEW pgagent.tool_call_queue IS
  'Every tool call with its state (pending, approved, rejected, auto-approved, run, failed), its approval, who decided, the result''s error and run time (ms), and wait_s: seconds from the call to its decision (or to its result, or to now while nothing happened). Unordered: ORDER BY created_at DESC LIMIT n uses an index.';
COMMENT ON COLUMN pgagent.tool_call_queue.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.tool_call_queue.step_id IS 'The tool_call step (what approve_step and process_tool_call take).';
COMMENT ON COLUMN pgagent.tool_call_queue.turn_id IS 'The turn.';
COMMENT ON COLUMN pgagent.tool_call_queue.conversation_id IS 'The conversation.';
COMMENT ON COLUMN pgagent.tool_call_queue.agent IS 'The agent''s name.';
COMMENT ON COLUMN pgagent.tool_call_queue.tool_name IS 'The tool the model called.';
COMMENT ON COLUMN pgagent.tool_call_queue.tool_call_id IS 'The call''s id (OpenAI tool_call_id).';
COMMENT ON COLUMN pgagent.tool_call_queue.arguments IS 'The validated arguments (JSON null for an invalid call).';
COMMENT ON COLUMN pgagent.tool_call_queue.state IS 'pending, approved (not run yet), rejected, auto-approved (not run yet), run or failed.';
COMMENT ON COLUMN pgagent.tool_call_queue.approval IS 'auto-approved (the call needed no approval), pending, approved or rejected.';
COMMENT ON COLUMN pgagent.tool_call_queue.decided_by IS 'Who approved or rejected it.';
COMMENT ON COLUMN pgagent.tool_call_queue.note IS 'The decision''s note.';
COMMENT ON COLUMN pgagent.tool_call_queue.decided_at IS 'When it was decided.';
COMMENT ON COLUMN pgagent.tool_call_queue.result_step_id IS 'The tool_result step, once there is one.';
COMMENT ON COLUMN pgagent.tool_call_queue.error IS 'Why it failed (the tool''s error, a rejection, a policy hook''s denial, or an invalid call).';
COMMENT ON COLUMN pgagent.tool_call_queue.run_ms IS 'How long the tool ran (ms).';
COMMENT ON COLUMN pgagent.tool_call_queue.wait_s IS 'Seconds from the call to its decision, else to its result, else to now.';
COMMENT ON COLUMN pgagent.tool_call_queue.turn_status IS 'The turn''s status now.';
COMMENT ON COLUMN pgagent.tool_call_queue.created_at IS 'When the model made the call.';

-- The model's reasoning: thinking steps (the provider's reasoning_content or Anthropic thinking
-- blocks, source 'reasoning'; or text written beside tool calls, source 'content').
CREATE OR REPLACE VIEW pgagent.thinking_trace WITH (security_invoker = true) AS
SELECT s.tenant_id, s.turn_id, t.conversation_id, a.name AS agent, s.step_id, s.seq,
       coalesce(s.payload ->> 'source', 'content') AS source, s.payload ->> 'content' AS content,
       length(s.payload ->> 'content') AS chars,
       (SELECT l.payload ->> 'model' FROM pgagent.step l
         WHERE l.tenant_id = s.tenant_id AND l.turn_id = s.turn_id AND l.seq < s.seq AND l.kind = 'llm_call'
         ORDER BY l.seq DESC LIMIT 1) AS model,
       s.created_at
  FROM pgagent.step s
  JOIN pgagent.turn t ON t.tenant_id = s.tenant_id AND t.turn_id = s.turn_id
  JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
  JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
 WHERE s.kind = 'thinking';
COMMENT ON VIEW pgagent.thinking_trace IS
  'The model''s reasoning per turn: each thinking step with its source (reasoning: what the provider returned as reasoning, e.g. OpenAI-compatible reasoning_content or Anthropic thinking blocks; content: text the model wrote beside its tool calls) and the model that produced it. Unordered: order by turn_id, seq.';
COMMENT ON COLUMN pgagent.thinking_trace.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.thinking_trace.turn_id IS 'The turn.';
COMMENT ON COLUMN pgagent.thinking_trace.conversation_id IS 'The conversation.';
COMMENT ON COLUMN pgagent.thinking_trace.agent IS 'The agent''s name.';
COMMENT ON COLUMN pgagent.thinking_trace.step_id IS 'The thinking step.';
COMMENT ON COLUMN pgagent.thinking_trace.seq IS 'Its position in the turn (right after its llm_call step).';
COMMENT ON COLUMN pgagent.thinking_trace.source IS 'reasoning (the provider''s reasoning output) or content (text beside tool calls).';
COMMENT ON COLUMN pgagent.thinking_trace.content IS 'The reasoning text.';
COMMENT ON COLUMN pgagent.thinking_trace.chars IS 'Its length in characters.';
COMMENT ON COLUMN pgagent.thinking_trace.model IS 'The model that produced it (from the llm_call step before it).';
COMMENT ON COLUMN pgagent.thinking_trace.created_at IS 'When it was recorded.';

-- A conversation's history in order: every step of its turns and every operator act on it
-- (the pgagent.intervention rows, including those no turn recorded as a step: an injection
-- before a turn, a pause with no turn to park).
CREATE OR REPLACE VIEW pgagent.conversation_timeline WITH (security_invoker = true) AS
SELECT tl.tenant_id, tl.conversation_id, tl.agent, tl.created_at, 'step'::text AS source, tl.turn_id, tl.turn_seq,
       tl.turn_status, tl.step_id, tl.seq, NULL::bigint AS intervention_id, tl.kind, tl.tool_name, tl.summary,
       tl.prompt_tokens, tl.completion_tokens, tl.cost_usd, tl.latency_ms, tl.created_by
  FROM pgagent.turn_timeline tl
UNION ALL
SELECT i.tenant_id, i.conversation_id, a.name, i.created_at, 'intervention', i.turn_id, t.seq, t.status, NULL, NULL,
       i.intervention_id, i.action,  NULL,
       coalesce(i.payload ->> 'content', i.payload ->> 'reason', i.payload ->> 'note'), NULL, NULL, NULL, NULL,
       i.created_by
  FROM pgagent.intervention i
  JOIN pgagent.conversation c ON c.tenant_id = i.tenant_id AND c.conversation_id = i.conversation_id
  JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
  LEFT JOIN pgagent.turn t ON t.tenant_id = i.tenant_id AND t.turn_id = i.turn_id;
COMMENT ON VIEW pgagent.conversation_timeline IS
  'A conversation''s turns and steps and its operators'' interventions (source step or intervention), for one conversation at a time: WHERE conversation_id = ... ORDER BY created_at, source, seq. Intervention rows have kind = the action (inject_message, override_response, pause, resume, retry, fork, bulk_approve); a turn that acted on one also has an intervention step.';
COMMENT ON COLUMN pgagent.conversation_timeline.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.conversation_timeline.conversation_id IS 'The conversation.';
COMMENT ON COLUMN pgagent.conversation_timeline.agent IS 'The agent''s name.';
COMMENT ON COLUMN pgagent.conversation_timeline.created_at IS 'When the step or intervention was recorded.';
COMMENT ON COLUMN pgagent.conversation_timeline.source IS 'step (a step of a turn) or intervention (a pgagent.intervention row).';
COMMENT ON COLUMN pgagent.conversation_timeline.turn_id IS 'The turn (NULL for an intervention on the conversation only).';
COMMENT ON COLUMN pgagent.conversation_timeline.turn_seq IS 'The turn''s position in the conversation.';
COMMENT ON COLUMN pgagent.conversation_timeline.turn_status IS 'The turn''s status now.';
COMMENT ON COLUMN pgagent.conversation_timeline.step_id IS 'The step (source step).';
COMMENT ON COLUMN pgagent.conversation_timeline.seq IS 'The step''s position in its turn (source step).';
COMMENT ON COLUMN pgagent.conversation_timeline.intervention_id IS 'The intervention (source intervention).';
COMMENT ON COLUMN pgagent.conversation_timeline.kind IS 'The step kind, or the intervention''s action.';
COMMENT ON COLUMN pgagent.conversation_timeline.tool_name IS 'The tool of a tool step.';
COMMENT ON COLUMN pgagent.conversation_timeline.summary IS 'One line about it (turn_timeline.summary; an intervention''s content or reason).';
COMMENT ON COLUMN pgagent.conversation_timeline.prompt_tokens IS 'Prompt tokens of an llm_call step.';
COMMENT ON COLUMN pgagent.conversation_timeline.completion_tokens IS 'Completion tokens of an llm_call step.';
COMMENT ON COLUMN pgagent.conversation_timeline.cost_usd IS 'Cost of an llm_call step (USD).';
COMMENT ON COLUMN pgagent.conversation_timeline.latency_ms IS 'LLM call or tool run time (ms).';
COMMENT ON COLUMN pgagent.conversation_timeline.created_by IS 'The role that wrote it.';

-- One row per tenant the caller sees. Windows are the last hour and the last 24 hours by turn
-- creation (turn_created); active turns come from turn_active.
CREATE OR REPLACE VIEW pgagent.dashboard_overview WITH (security_invoker = true) AS
SELECT tn.tenant_id, tn.name AS tenant,
       act.queued, act.running, act.awaiting_approval, act.paused,
       appr.approvals_waiting, appr.oldest_wait_s,
       h.turns AS turns_1h, h.failed AS errors_1h, h.prompt_tokens + h.completion_tokens AS tokens_1h, h.cost_usd AS cost_usd_1h,
       d.turns AS turns_24h, d.failed AS errors_24h, d.prompt_tokens + d.completion_tokens AS tokens_24h,
       d.cost_usd AS cost_usd_24h,
       round(100.0 * d.failed / nullif(d.finished, 0), 1) AS error_rate_pct_24h,
       d.p50_ms AS p50_turn_ms_24h, d.p95_ms AS p95_turn_ms_24h,
       (SELECT count(*) FROM pgagent.flag f WHERE f.tenant_id = tn.tenant_id AND f.status = 'open') AS open_flags
  FROM pgagent.tenant tn
  CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE t.status = 'queued') AS queued,
               count(*) FILTER (WHERE t.status = 'running') AS running,
               count(*) FILTER (WHERE t.status = 'awaiting_approval') AS awaiting_approval,
               count(*) FILTER (WHERE t.status = 'paused') AS paused
          FROM pgagent.turn t
         WHERE t.tenant_id = tn.tenant_id AND t.status IN ('queued', 'running', 'awaiting_approval', 'paused')) act
  CROSS JOIN LATERAL (
        SELECT count(*) AS approvals_waiting,
               round(greatest(extract(epoch FROM now() - min(s.created_at)), 0)::numeric, 3) AS oldest_wait_s
          FROM pgagent.turn t
          JOIN pgagent.step s ON s.tenant_id = t.tenant_id AND s.turn_id = t.turn_id AND s.kind = 'tool_call'
         WHERE t.tenant_id = tn.tenant_id AND t.status = 'awaiting_approval'
           AND (s.payload ->> 'requires_approval')::boolean
           AND NOT EXISTS (SELECT 1 FROM pgagent.step x WHERE x.tenant_id = s.tenant_id AND x.parent_step_id = s.step_id
                                                         AND x.kind = 'approval')
           AND NOT EXISTS (SELECT 1 FROM pgagent.step x WHERE x.tenant_id = s.tenant_id AND x.parent_step_id = s.step_id
                                                         AND x.kind = 'tool_result')) appr
  CROSS JOIN LATERAL (
        SELECT count(*) AS turns, count(*) FILTER (WHERE t.status = 'failed') AS failed,
               coalesce(sum(t.prompt_tokens), 0)::bigint AS prompt_tokens,
               coalesce(sum(t.completion_tokens), 0)::bigint AS completion_tokens,
               coalesce(sum(t.cost_usd), 0) AS cost_usd
          FROM pgagent.turn t
         WHERE t.tenant_id = tn.tenant_id AND t.created_at > now() - interval '1 hour') h
  CROSS JOIN LATERAL (
        SELECT count(*) AS turns, count(*) FILTER (WHERE t.status = 'failed') AS failed,
               count(*) FILTER (WHERE t.finished_at IS NOT NULL) AS finished,
               coalesce(sum(t.prompt_tokens), 0)::bigint AS prompt_tokens,
               coalesce(sum(t.completion_tokens), 0)::bigint AS completion_tokens,
               coalesce(sum(t.cost_usd), 0) AS cost_usd,
               round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM t.finished_at - t.created_at))
                      FILTER (WHERE t.status = 'completed') * 1000)::numeric, 3) AS p50_ms,
               round((percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM t.finished_at - t.created_at))
                      FILTER (WHERE t.status = 'completed') * 1000)::numeric, 3) AS p95_ms
          FROM pgagent.turn t
         WHERE t.tenant_id = tn.tenant_id AND t.created_at > now() - interval '24 hours') d;
COMMENT ON VIEW pgagent.dashboard_overview IS
  'One row per tenant the caller sees: active turns by status, tool calls waiting for approval and the oldest wait (s), and over the last hour and 24 hours (turns created then): turns, errors (failed turns), tokens, cost (USD); the error rate (% of finished turns that failed) and p50/p95 latency (ms, created to finished) of completed turns over 24 hours; open flags.';
COMMENT ON COLUMN pgagent.dashboard_overview.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.dashboard_overview.tenant IS 'The tenant''s name.';
COMMENT ON COLUMN pgagent.dashboard_overview.queued IS 'Turns queued now.';
COMMENT ON COLUMN pgagent.dashboard_overview.running IS 'Turns running now.';
COMMENT ON COLUMN pgagent.dashboard_overview.awaiting_approval IS 'Turns waiting for an approval now.';
COMMENT ON COLUMN pgagent.dashboard_overview.paused IS 'Turns paused now (their conversation is paused).';
COMMENT ON COLUMN pgagent.dashboard_overview.approvals_waiting IS 'Tool calls waiting for a decision.';
COMMENT ON COLUMN pgagent.dashboard_overview.oldest_wait_s IS 'Seconds the oldest of them has waited.';
COMMENT ON COLUMN pgagent.dashboard_overview.turns_1h IS 'Turns created in the last hour.';
COMMENT ON COLUMN pgagent.dashboard_overview.errors_1h IS 'Of those, the failed ones.';
COMMENT ON COLUMN pgagent.dashboard_overview.tokens_1h IS 'Their tokens (prompt + completion).';
COMMENT ON COLUMN pgagent.dashboard_overview.cost_usd_1h IS 'Their cost (USD).';
COMMENT ON COLUMN pgagent.dashboard_overview.turns_24h IS 'Turns created in the last 24 hours.';
COMMENT ON COLUMN pgagent.dashboard_overview.errors_24h IS 'Of those, the failed ones.';
COMMENT ON COLUMN pgagent.dashboard_overview.tokens_24h IS 'Their tokens (prompt + completion).';
COMMENT ON COLUMN pgagent.dashboard_overview.cost_usd_24h IS 'Their cost (USD).';
COMMENT ON COLUMN pgagent.dashboard_overview.error_rate_pct_24h IS 'Failed turns as % of the finished ones (24 hours).';
COMMENT ON COLUMN pgagent.dashboard_overview.p50_turn_ms_24h IS 'Median time from created to finished of completed turns (ms, 24 hours).';
COMMENT ON COLUMN pgagent.dashboard_overview.p95_turn_ms_24h IS '95th percentile of the same (ms).';
COMMENT ON COLUMN pgagent.dashboard_overview.open_flags IS 'Flagged issues still open.';

CREATE OR REPLACE VIEW pgagent.flagged_issues WITH (security_invoker = true) AS
SELECT f.tenant_id, f.flag_id, f.status, f.category, f.note, f.turn_id, f.step_id, t.conversation_id,
       a.name AS agent, t.status AS turn_status, left(t.user_message, 200) AS user_message,
       left(t.answer, 200) AS answer, f.created_by, f.created_at,
       round(greatest(extract(epoch FROM coalesce(f.resolved_at, now()) - f.created_at), 0)::numeric, 3) AS open_s,
       f.resolved_by, f.resolved_at, f.resolution
  FROM pgagent.flag f
  JOIN pgagent.turn t ON t.tenant_id = f.tenant_id AND t.turn_id = f.turn_id
  JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
  JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
 ORDER BY f.status = 'resolved', f.created_at DESC, f.flag_id DESC;
COMMENT ON VIEW pgagent.flagged_issues IS
  'Flagged issues (pgagent.flag_issue) with their turn''s context, open ones first, newest first; open_s: seconds open (until resolved).';
COMMENT ON COLUMN pgagent.flagged_issues.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.flagged_issues.flag_id IS 'The flag (what resolve_issue takes).';
COMMENT ON COLUMN pgagent.flagged_issues.status IS 'open or resolved.';
COMMENT ON COLUMN pgagent.flagged_issues.category IS 'The category given (wrong_answer, unsafe, slow, ...).';
COMMENT ON COLUMN pgagent.flagged_issues.note IS 'The flagger''s note.';
COMMENT ON COLUMN pgagent.flagged_issues.turn_id IS 'The turn flagged.';
COMMENT ON COLUMN pgagent.flagged_issues.step_id IS 'The step flagged, if one was.';
COMMENT ON COLUMN pgagent.flagged_issues.conversation_id IS 'The conversation.';
COMMENT ON COLUMN pgagent.flagged_issues.agent IS 'The agent''s name.';
COMMENT ON COLUMN pgagent.flagged_issues.turn_status IS 'The turn''s status now.';
COMMENT ON COLUMN pgagent.flagged_issues.user_message IS 'The turn''s user message (first 200 characters).';
COMMENT ON COLUMN pgagent.flagged_issues.answer IS 'The turn''s answer (first 200 characters).';
COMMENT ON COLUMN pgagent.flagged_issues.created_by IS 'Who flagged it.';
COMMENT ON COLUMN pgagent.flagged_issues.created_at IS 'When.';
COMMENT ON COLUMN pgagent.flagged_issues.open_s IS 'Seconds from flagging to resolution (or to now while open).';
COMMENT ON COLUMN pgagent.flagged_issues.resolved_by IS 'Who resolved it.';
COMMENT ON COLUMN pgagent.flagged_issues.resolved_at IS 'When.';
COMMENT ON COLUMN pgagent.flagged_issues.resolution IS 'How.';

-- The work waiting and in progress, per tenant and agent: what a worker pool drains. Reads only
-- the turns that are not final (the partial index turn_active), however long the log is.
CREATE OR REPLACE VIEW pgagent.queue_status WITH (security_invoker = true) AS
SELECT t.tenant_id, a.name AS agent,
       count(*) FILTER (WHERE t.status = 'queued') AS queued,
       count(*) FILTER (WHERE t.status = 'running') AS running,
       count(*) FILTER (WHERE t.status IN ('queued', 'running') AND (last.kind = 'error' OR t.run_after > now())) AS retrying,
       count(*) FILTER (WHERE t.status = 'awaiting_approval') AS awaiting_approval,
       count(*) FILTER (WHERE t.status = 'paused') AS paused,
       min(t.created_at) FILTER (WHERE t.status = 'queued') AS oldest_queued_at,
       round(greatest(extract(epoch FROM now() - min(t.created_at) FILTER (WHERE t.status = 'queued')), 0)::numeric, 3)
         AS oldest_wait_s,
       count(*) FILTER (WHERE t.status IN ('queued', 'running') AND t.lease_expires_at > now()
                          AND t.lease_expires_at < 'infinity') AS leased
  FROM pgagent.turn t
  JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
  JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
  LEFT JOIN LATERAL (SELECT s.kind FROM pgagent.step s WHERE s.turn_id = t.turn_id AND s.tenant_id = t.tenant_id
                      ORDER BY s.seq DESC LIMIT 1) last ON true
 WHERE t.status IN ('queued', 'running', 'awaiting_approval', 'paused')
 GROUP BY t.tenant_id, a.name;
COMMENT ON VIEW pgagent.queue_status IS
  'Turns not final yet, per tenant and agent: queued, running, retrying (queued or running with a failed LLM attempt as their last step, waiting for the next one), awaiting_approval, paused, and the oldest queued turn with its wait (s). Agents with none do not appear.';
COMMENT ON COLUMN pgagent.queue_status.tenant_id IS 'The tenant.';
COMMENT ON COLUMN pgagent.queue_status.agent IS 'The agent''s name.';
COMMENT ON COLUMN pgagent.queue_status.queued IS 'Turns queued (enqueue_message, resumed or retried) and not started.';
COMMENT ON COLUMN pgagent.queue_status.running IS 'Turns running now.';
COMMENT ON COLUMN pgagent.queue_status.retrying IS 'Of the queued and running ones, those whose last step is an error (a failed LLM attempt to be retried) or that wait for a deferred retry (run_after).';
COMMENT ON COLUMN pgagent.queue_status.awaiting_approval IS 'Turns waiting for a tool call''s approval.';
COMMENT ON COLUMN pgagent.queue_status.paused IS 'Turns parked by pause_conversation.';
COMMENT ON COLUMN pgagent.queue_status.oldest_queued_at IS 'When the oldest queued turn was created.';
COMMENT ON COLUMN pgagent.queue_status.oldest_wait_s IS 'Seconds it has waited.';
COMMENT ON COLUMN pgagent.queue_status.leased IS 'Of the queued and running ones, those a worker holds a live lease on (pgagent.claim_turn).';

GRANT SELECT ON pgagent.realtime_steps, pgagent.tool_call_queue, pgagent.thinking_trace, pgagent.conversation_timeline,
                pgagent.dashboard_overview, pgagent.flagged_issues, pgagent.queue_status
   TO pgagent_viewer;
