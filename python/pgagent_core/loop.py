"""The agent loop: run (or resume) one turn, step by step, recording every step.

A turn's whole state is its row in pgagent.turn plus its steps in pgagent.step, so the loop
rebuilds it from the database each time it starts: the same code runs a fresh turn, resumes
one after a crash (a tool_call whose tool_result was committed is never run again) and
continues one after an approval. Each iteration:

  build messages -> call the provider (timeout, bounded retries, every failure an error step)
  -> parse tool calls (native tool_calls, calls written as text, or json_schema actions)
  -> validate arguments (JSON Schema) -> run, or park for approval -> record -> repeat,
  until the model answers, max_steps is reached, or a call waits for a human.

The loop advances a turn one *unit* at a time (:func:`advance`): set it running, run one tool
call, record one LLM reply or one failed attempt. ``pgagent.send_message`` runs every unit in
the caller's transaction (:func:`drive`); ``CALL pgagent.run_turn`` commits after each unit
(:func:`step`, called once per transaction by the procedure), and no lock other than the turn's
own advisory lock is held during an LLM call. The loop runs with the extension owner's rights
(inside SECURITY DEFINER entry points), so every query names the turn's tenant explicitly.
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass
from typing import Any, Callable

import requests

from . import (budget, compaction, delegation, grounding, hooks, knowledge, lease, memory, providers, toolcalls, tools,
               validation)
from .db import Db, one
from .limits import MAX_TOKENS_PER_CALL, clean_json, clean_text
from .errors import Busy, InvalidArgument, InvalidState, NotFound, ProviderFailed
from .providers import ProviderError, Reply, ToolCall, chat, dumps

TERMINAL = ("completed", "failed", "cancelled")
DEFAULTS = {"max_steps": 8, "max_tool_errors": 3, "history_turns": 20, "retry_backoff_ms": 500,
            "max_result_chars": 8000, "auto_approve": False, "allow_self_approval": False}

CONFIG_SQL = """
SELECT t.tenant_id::text AS tenant_id, t.turn_id, t.conversation_id, t.seq, t.status, t.user_message,
       t.answer, t.error, t.created_by::text AS created_by, t.depth, t.parent_turn_id, t.lease_owner, pg_catalog.date_part('epoch', t.lease_expires_at)::float8 AS lease_expires_epoch,
       coalesce((SELECT w.stopping FROM pgagent.worker w WHERE w.tenant_id = t.tenant_id AND w.worker_id = t.lease_owner),
                false) AS worker_stopping,
       t.created_at::text AS turn_created_at,
       t.params AS turn_params, c.agent_id, a.name AS agent_name, a.instructions, a.config AS agent_config,
       a.enabled AS agent_enabled,
       p.system_prompt, coalesce(p.traits, '{}') AS traits, coalesce(p.params, '{}') AS persona_params,
       pg_catalog.to_jsonb(m) AS model,
       coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.to_jsonb(tl) ORDER BY tl.name)
                   FROM pgagent.agent_tool at
                   JOIN pgagent.tool tl ON tl.tenant_id = at.tenant_id AND tl.tool_id = at.tool_id
                  WHERE at.tenant_id = t.tenant_id AND at.agent_id = c.agent_id AND tl.enabled), '[]') AS tools,
       coalesce((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                          'hook_id', h.hook_id, 'event', h.event, 'fn', h.fn::pg_catalog.text, 'fn_oid', h.fn::pg_catalog.oid,
                          'run_as', h.run_as) ORDER BY h.priority, h.hook_id)
                   FROM pgagent.hook h
                  WHERE h.tenant_id = t.tenant_id AND h.enabled AND (h.agent_id IS NULL OR h.agent_id = c.agent_id)),
                '[]') AS hooks
  FROM pgagent.turn t
  JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
  JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
  JOIN pgagent.model m ON m.tenant_id = a.tenant_id AND m.model_id = a.model_id
  LEFT JOIN pgagent.persona p ON p.tenant_id = a.tenant_id AND p.persona_id = a.persona_id
 WHERE t.tenant_id = $1::uuid AND t.turn_id = $2"""

STEPS_SQL = """
SELECT step_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name,
       prompt_tokens, completion_tokens, cost_usd
  FROM pgagent.step WHERE tenant_id = $1::uuid AND turn_id = $2 ORDER BY seq"""

# Earlier completed turns (the last history_turns of them) and the messages operators injected
# (pgagent.inject_message) before this turn was created, in time order. An injection made while
# a turn runs becomes an 'intervention' step of that turn instead (see GATE_SQL).
HISTORY_SQL = """
WITH h AS (
  SELECT created_at, seq, user_message, answer FROM pgagent.turn
   WHERE tenant_id = $1::uuid AND conversation_id = $2 AND seq < $3 AND seq > $6 AND status = 'completed'
   ORDER BY seq DESC LIMIT $4)
SELECT user_message, answer, NULL AS role, NULL AS content, created_at, 0::bigint AS id, seq FROM h
UNION ALL
SELECT NULL, NULL, i.payload ->> 'role', i.payload ->> 'content', i.created_at, i.intervention_id, NULL
  FROM pgagent.intervention i
 WHERE i.conversation_id = $2 AND i.tenant_id = $1::uuid AND i.action = 'inject_message'
   AND i.created_at < $5::timestamptz
   AND i.created_at >= coalesce((SELECT pg_catalog.min(h.created_at) FROM h),
                                CASE WHEN $6 > 0 THEN $5::timestamptz ELSE '-infinity' END)
 ORDER BY 5, 6"""

# the conversation's latest compaction summary (docs/memory.md#context-compaction)
SUMMARY_SQL = """
SELECT s.payload ->> 'summary' AS summary, (s.payload ->> 'through_seq')::int AS through_seq
  FROM pgagent.turn t
  JOIN pgagent.step s ON s.tenant_id = t.tenant_id AND s.turn_id = t.turn_id AND s.kind = 'compaction'
 WHERE t.tenant_id = $1::uuid AND t.conversation_id = $2 AND t.seq <= $3
   AND s.payload ->> 'stage' = 'summary' AND s.payload ? 'summary'
 ORDER BY t.seq DESC, s.seq DESC LIMIT 1"""

# the provider's usage report of the conversation's latest LLM call before this turn
CALIBRATION_SQL = """
SELECT s.prompt_tokens, (s.payload ->> 'prompt_chars')::int AS prompt_chars
  FROM pgagent.step s
 WHERE s.tenant_id = $1::uuid AND s.kind = 'llm_call' AND s.payload ? 'prompt_chars' AND s.prompt_tokens > 0
   AND s.turn_id = (SELECT t.turn_id FROM pgagent.turn t WHERE t.tenant_id = $1::uuid AND t.conversation_id = $2
                       AND t.seq < $3 AND t.status = 'completed' ORDER BY t.seq DESC LIMIT 1)
 ORDER BY s.seq DESC LIMIT 1"""

# At every step boundary that starts work (a tool call, an LLM call): is the conversation paused
# (pgagent.pause_conversation), and which messages were injected since the turn was created
# that it has not recorded yet?
GATE_SQL = """
SELECT c.paused_at IS NOT NULL AS paused, c.paused_by::text AS paused_by, c.pause_reason,
       (SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                 'intervention_id', i.intervention_id, 'role', i.payload ->> 'role',
                 'content', i.payload ->> 'content', 'injected_by', i.created_by) ORDER BY i.intervention_id)
          FROM pgagent.intervention i
         WHERE i.conversation_id = c.conversation_id AND i.tenant_id = c.tenant_id
           AND i.action = 'inject_message' AND i.intervention_id > $3 AND i.created_at >= $4::timestamptz)
         AS injections
  FROM pgagent.conversation c WHERE c.tenant_id = $1::uuid AND c.conversation_id = $2"""

INSERT_STEP_SQL = """
INSERT INTO pgagent.step (tenant_id, turn_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name,
                          prompt_tokens, completion_tokens, cost_usd, latency_ms, created_by)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, pgagent._outer_user()))
RETURNING step_id"""
INSERT_STEP_TYPES = ["text", "int8", "int4", "text", "jsonb", "int8", "text", "text",
                     "int8", "int8", "numeric", "numeric", "name"]

UPDATE_TURN_SQL = """
UPDATE pgagent.turn
   SET status = $3, answer = $4, error = $5, llm_calls = $6, prompt_tokens = $7, completion_tokens = $8,
       cost_usd = $9, started_at = coalesce(started_at, pg_catalog.clock_timestamp()),
       finished_at = CASE WHEN $3 IN ('completed', 'failed', 'cancelled') THEN pg_catalog.clock_timestamp() END,
       lease_owner = CASE WHEN $3 IN ('completed', 'failed', 'cancelled') THEN NULL ELSE lease_owner END,
       lease_expires_at = CASE WHEN $3 IN ('completed', 'failed', 'cancelled') THEN NULL ELSE lease_expires_at END,
       run_after = CASE WHEN $3 IN ('completed', 'failed', 'cancelled') THEN NULL ELSE run_after END
 WHERE tenant_id = $1::uuid AND turn_id = $2"""
UPDATE_TURN_TYPES = ["text", "int8", "text", "text", "text", "int4", "int4", "int4", "numeric"]

LOCK_KEY_SQL = "pg_catalog.hashtextextended($1 || '/turn/' || $2::text, 0)"


@dataclass
class Turn:
    """In-memory view of one turn, rebuilt from the database by :func:`load`."""

    cfg: dict[str, Any]
    steps: list[dict[str, Any]]
    status: str
    answer: str | None = None
    error: str | None = None
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    tool_errors: int = 0
    since_retry_llm_calls: int = 0  # LLM calls and invalid tool calls since the last retry_turn:
    since_retry_tool_errors: int = 0  # what max_steps and max_tool_errors limit
    held: bool = False  # this process reserved budget for the next LLM call (budget.reserve)
    next_request: dict[str, Any] | None = None  # the request for the external runtime (NEEDS_LLM)
    actor: str | None = None  # the role that drives the turn now: the created_by of the steps it writes
    history: list[dict[str, Any]] | None = None  # earlier completed turns of the conversation, loaded once
    can_defer: bool = False  # under a worker's lease: a retry waits in the queue (run_after), not in a sleep
    defer_until: str | None = None  # set by llm_attempt when it deferred the retry (ISO 8601 UTC)
    memories: list[dict[str, Any]] | None = None  # recalled for this turn (agent config memory), see recall_for
    memory_error: str | None = None  # why the recall failed (the turn goes on without memories)
    passages: list[dict[str, Any]] | None = None  # retrieved from the knowledge base (agent config knowledge)
    knowledge_error: str | None = None  # why the retrieval failed (the turn goes on without passages)
    summary: str | None = None  # the conversation's compaction summary that stands in for earlier turns
    summary_through: int = 0  # the seq of the last turn the summary covers
    prompt_chars: int | None = None  # characters of the request being sent (compaction's calibration)
    tool_notes: dict[str, str] | None = None  # what tool kinds added to their descriptions (describe_for)
    tool_notes_error: str | None = None  # why describing a tool failed (the turn goes on without it)
    running_children: dict[int, dict[str, Any]] | None = None  # agent calls in flight: call step -> child

    @property
    def tenant_id(self) -> str:
        """The turn's tenant (uuid as text)."""
        return self.cfg["tenant_id"]

    @property
    def turn_id(self) -> int:
        """The turn's id."""
        return int(self.cfg["turn_id"])

    @property
    def settings(self) -> dict[str, Any]:
        """The agent's config over :data:`DEFAULTS` (max_steps, auto_approve, ...)."""
        return {**DEFAULTS, **(self.cfg.get("agent_config") or {})}

    @property
    def next_seq(self) -> int:
        """The seq the next step of this turn gets."""
        return (self.steps[-1]["seq"] + 1) if self.steps else 1

    def tool(self, name: str) -> dict[str, Any] | None:
        """The agent's tool (a pgagent.tool row) of that name, or None."""
        return next((t for t in self.cfg["tools"] if t["name"] == name), None)


# ---------------------------------------------------------------------------- loading and writing

def load(db: Db, tenant_id: str, turn_id: int, actor: str | None = None) -> Turn:
    """Rebuild a :class:`Turn` of ``tenant_id`` from its row and steps; ``actor`` is the role
    driving it now (recorded as the new steps' created_by). Raises NotFound (42704)."""
    cfg = one(db, CONFIG_SQL, ["text", "int8"], [tenant_id, turn_id])
    if cfg is None:
        raise NotFound(f"turn {turn_id} does not exist (for this tenant)")
    steps = db.all(STEPS_SQL, ["text", "int8"], [cfg["tenant_id"], turn_id])
    turn = Turn(cfg=cfg, steps=steps, status=cfg["status"], answer=cfg["answer"], error=cfg["error"], actor=actor)
    for s in steps:
        if s["kind"] == "llm_call":
            turn.llm_calls += 1
            turn.since_retry_llm_calls += 1
            turn.prompt_tokens += s["prompt_tokens"] or 0
            turn.completion_tokens += s["completion_tokens"] or 0
            turn.cost_usd += float(s["cost_usd"] or 0)
        elif s["kind"] == "tool_result" and s["payload"].get("is_error") and s["payload"].get("invalid_call"):
            turn.tool_errors += 1
            turn.since_retry_tool_errors += 1
        elif s["kind"] == "intervention" and s["payload"].get("action") == "retry":
            turn.since_retry_llm_calls = turn.since_retry_tool_errors = 0
    return turn


def add_step(db: Db, turn: Turn, kind: str, payload: dict[str, Any], *, parent: int | None = None,
             tool_call_id: str | None = None, tool_name: str | None = None, prompt_tokens: int | None = None,
             completion_tokens: int | None = None, cost_usd: float | None = None,
             latency_ms: float | None = None) -> dict[str, Any]:
    """Append one step and return it as loaded rows are. Text is cleaned of NUL characters and
    lone surrogates first (:func:`pgagent_core.limits.clean_json`), which PostgreSQL refuses."""
    seq = turn.next_seq
    payload = clean_json(payload)
    tool_call_id, tool_name = clean_text(tool_call_id), clean_text(tool_name)
    row = one(db, INSERT_STEP_SQL, INSERT_STEP_TYPES,
              [turn.tenant_id, turn.turn_id, seq, kind, payload, parent, tool_call_id, tool_name,
               prompt_tokens, completion_tokens, cost_usd, None if latency_ms is None else round(latency_ms, 3),
               turn.actor])
    step = {"step_id": row["step_id"], "seq": seq, "kind": kind, "payload": payload, "parent_step_id": parent,
            "tool_call_id": tool_call_id, "tool_name": tool_name}
    turn.steps.append(step)
    return step


def set_status(db: Db, turn: Turn, status: str) -> None:
    """Write the turn's status and totals (usage in tokens, cost in USD). A turn that stops
    (terminal, paused, awaiting a human) gives up its budget reservation."""
    if turn.held and status != "running":
        budget.release(db, turn)
        turn.held = False
    turn.status = status
    db.all(UPDATE_TURN_SQL, UPDATE_TURN_TYPES,
           [turn.tenant_id, turn.turn_id, status, turn.answer,
            turn.error, turn.llm_calls, turn.prompt_tokens,
            turn.completion_tokens, round(turn.cost_usd, 8)])


def fail(db: Db, turn: Turn, message: str, payload: dict[str, Any] | None = None) -> None:
    """Record an error step and end the turn as failed."""
    message = clean_text(message) or "failed"
    add_step(db, turn, "error", {"message": message, **(payload or {})})
    turn.error = message
    set_status(db, turn, "failed")


def summary(turn: Turn) -> dict[str, Any]:
    """What send_message / run_turn / process_tool_call return (usage in tokens, cost in USD)."""
    results = {s["parent_step_id"] for s in turn.steps if s["kind"] == "tool_result"}
    pending = [{"step_id": s["step_id"], "tool": s["tool_name"], "arguments": s["payload"].get("arguments")}
               for s in turn.steps if s["kind"] == "tool_call" and s["step_id"] not in results
               and s["payload"].get("requires_approval")]
    return {"turn_id": turn.turn_id, "conversation_id": int(turn.cfg["conversation_id"]), "status": turn.status,
            "answer": turn.answer, "error": turn.error,
            "usage": {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens,
                      "total_tokens": turn.prompt_tokens + turn.completion_tokens},
            "cost_usd": round(turn.cost_usd, 8), "llm_calls": turn.llm_calls, "steps": len(turn.steps),
            "pending_approvals": pending if turn.status == "awaiting_approval" else [],
            "citations": citations(turn), **delegated(turn)}


def delegated(turn: Turn) -> dict[str, Any]:
    """For a turn that called other agents (agent tools): ``children`` (the child turns:
    turn_id, agent, status) and ``total`` usage of the turn and every turn below it (tokens,
    cost_usd in USD, llm_calls), from the usage its agent tool results recorded. {} otherwise."""
    kids = [st["payload"] for st in turn.steps if st["kind"] == "tool_result" and st["payload"].get("child_turn_id")]
    done = {k["child_turn_id"] for k in kids}
    running = [c for c in (turn.running_children or {}).values() if c["turn_id"] not in done]
    if not kids and not running:
        return {}
    total = {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens,
             "cost_usd": turn.cost_usd, "llm_calls": turn.llm_calls}
    for k in kids:
        for key in total:
            total[key] += (k.get("usage") or {}).get(key) or 0
    total["cost_usd"] = round(total["cost_usd"], 8)
    return {"children": [{"turn_id": k["child_turn_id"], "agent": k.get("agent"), "status": k.get("child_status")}
                         for k in kids] + running, "total": total}


def citations(turn: Turn) -> list[dict[str, Any]]:
    """The knowledge-base chunks the turn was shown, in the order first seen: those retrieved
    automatically (agent config knowledge) and those its knowledge tools returned:
    ``[{cite, document_id, chunk_id, title}]``."""
    seen: dict[str, dict[str, Any]] = {}
    for s in turn.steps:
        if s["kind"] == "llm_call" and isinstance(s["payload"].get("passages"), list):
            found = s["payload"]["passages"]
        elif s["kind"] == "tool_result" and not s["payload"].get("is_error") \
                and isinstance(s["payload"].get("result"), dict) and isinstance(s["payload"]["result"].get("results"), list):
            found = s["payload"]["result"]["results"]
        else:
            continue
        for r in found:
            if isinstance(r, dict) and isinstance(r.get("cite"), str) and r["cite"] not in seen:
                seen[r["cite"]] = {k: r.get(k) for k in ("cite", "document_id", "chunk_id", "title")}
    return list(seen.values())


# ---------------------------------------------------------------------------- locking

def lock_turn(db: Db, gd: dict, tenant_id: str, turn_id: int, *, session: bool = False) -> None:
    """Take the turn's advisory lock: session-level for ``CALL run_turn`` (held across its
    commits, freed by :func:`unlock_turn` or when the backend dies; taken once per session and
    remembered in ``gd``), transaction-level otherwise (a no-op when this session already holds
    the session lock). Raises Busy (55P03) when another session is running the turn."""
    held = gd.setdefault("pgagent_session_locks", set())
    if (tenant_id, turn_id) in held:
        return
    fn = "pg_try_advisory_lock" if session else "pg_try_advisory_xact_lock"
    row = one(db, f"SELECT pg_catalog.{fn}({LOCK_KEY_SQL}) AS ok", ["text", "int8"], [tenant_id, turn_id])
    if not row["ok"]:
        raise Busy(f"turn {turn_id} is being run by another session",
                   detail=f"Another backend holds turn {turn_id}'s advisory lock.")
    if session:
        held.add((tenant_id, turn_id))


def unlock_turn(db: Db, gd: dict, tenant_id: str, turn_id: int) -> None:
    """Release the session-level lock taken by :func:`lock_turn`. A transaction-level lock on
    the same key is taken first, so no other session can take the turn before this
    transaction's last unit is committed (or rolled back)."""
    held = gd.setdefault("pgagent_session_locks", set())
    if (tenant_id, turn_id) in held:
        held.discard((tenant_id, turn_id))
        db.all(f"SELECT pg_catalog.pg_try_advisory_xact_lock({LOCK_KEY_SQL}), "
               f"pg_catalog.pg_advisory_unlock({LOCK_KEY_SQL})", ["text", "int8"], [tenant_id, turn_id])


# ---------------------------------------------------------------------------- messages

def load_history(db: Db, turn: Turn) -> None:
    """Set ``turn.history`` (the earlier completed turns and injected messages sent as context)
    and, from the conversation's second turn on, its latest compaction summary, which stands in
    for the turns it covers."""
    cfg, s = turn.cfg, turn.settings
    if int(cfg["seq"]) > 1:
        row = one(db, SUMMARY_SQL, ["text", "int8", "int4"], [turn.tenant_id, cfg["conversation_id"], cfg["seq"]])
        if row is not None:
            turn.summary, turn.summary_through = row["summary"], int(row["through_seq"])
    turn.history = db.all(HISTORY_SQL, ["text", "int8", "int4", "int4", "text", "int4"],
                          [turn.tenant_id, cfg["conversation_id"], cfg["seq"], int(s["history_turns"]),
                           cfg["turn_created_at"], turn.summary_through])


def maybe_compact(db: Db, gd: dict, turn: Turn) -> bool:
    """Before an LLM call: if the model has a context_window and the request's estimated tokens
    exceed ``compact_at`` (agent config, default 0.85) of it, compact (pgagent_core.compaction):
    stub the turn's older tool outputs, else summarise the conversation's older turns with the
    model (once per turn). Records a ``compaction`` step and returns True (a unit of its own),
    or returns False when nothing was needed or can be done. A failed summary call is recorded
    in the step (``error``) and not tried again in this turn."""
    window = turn.cfg["model"].get("context_window")
    if not window:
        return False
    s = turn.settings
    limit = int(float(s.get("compact_at", compaction.DEFAULT_AT)) * int(window))
    calls = [st for st in turn.steps if st["kind"] == "llm_call" and st["payload"].get("prompt_chars")]
    if calls:
        cal = (int(calls[-1].get("prompt_tokens") or 0), int(calls[-1]["payload"]["prompt_chars"]))
    else:
        row = one(db, CALIBRATION_SQL, ["text", "int8", "int4"], [turn.tenant_id, turn.cfg["conversation_id"],
                                                                   turn.cfg["seq"]])
        cal = (int(row["prompt_tokens"]), int(row["prompt_chars"])) if row else None
    ratio = compaction.tokens_per_char(cal)
    req = request_for(db, turn, gd)
    before = compaction.estimate(req["messages"], req["tools"], ratio)
    if before <= limit:
        return False
    base = {"tokens_before": before, "limit": limit, "context_window": int(window),
            "tokens_per_char": round(ratio, 5), "calibrated": cal is not None and cal[0] > 0}
    done = {i for st in turn.steps if st["kind"] == "compaction" for i in st["payload"].get("dropped") or []}
    outputs = [st for st in turn.steps if st["kind"] == "tool_result"]
    drop = [st["step_id"] for st in outputs[:max(len(outputs) - compaction.KEEP_TOOL_OUTPUTS, 0)]
            if st["step_id"] not in done]
    if drop:
        turn.steps.append({"kind": "compaction", "payload": {"dropped": drop}, "step_id": None, "seq": None})
        try:  # the estimate with the outputs stubbed, before the step is written (the log is append-only)
            req = request_for(db, turn, gd)
        finally:
            turn.steps.pop()
        add_step(db, turn, "compaction", {"stage": "tool_outputs", "dropped": drop, **base,
                                          "tokens_after": compaction.estimate(req["messages"], req["tools"], ratio)})
        return True
    if any(st["kind"] == "compaction" and st["payload"].get("stage") == "summary" for st in turn.steps):
        return False
    older, newer = compaction.split_history(turn.history or [], int(s.get("compact_keep_turns",
                                                                          compaction.DEFAULT_KEEP_TURNS)))
    if not older:
        return False
    seqs = [int(h["seq"]) for h in older if h.get("seq") is not None]
    through = max(seqs) if seqs else turn.summary_through
    messages = [{"role": "system", "content": compaction.SUMMARY_PROMPT},
                {"role": "user", "content": compaction.transcript(turn.summary, older)}]
    model = turn.cfg["model"]
    try:
        reply = model_chat(db, gd, model, {"messages": messages, "tools": [], "params": model["params"]})
    except ProviderError as e:
        add_step(db, turn, "compaction", {"stage": "summary", "error": f"the summary call failed: {e.message}", **base})
        return True
    summary = clean_text(reply.content or "") or ""
    cost = (reply.prompt_tokens * float(model["input_usd_per_mtok"])
            + reply.completion_tokens * float(model["output_usd_per_mtok"])) / 1e6
    turn.summary, turn.summary_through, turn.history = summary, through, newer
    turn.prompt_tokens += reply.prompt_tokens
    turn.completion_tokens += reply.completion_tokens
    turn.cost_usd += cost
    req = request_for(db, turn, gd)
    after = compaction.estimate(req["messages"], req["tools"], ratio)
    add_step(db, turn, "compaction", {"stage": "summary", "summary": summary, "through_seq": through,
                                      "turns": sum(1 for h in older if h.get("role") is None), **base,
                                      "tokens_after": after, "model": reply.model or model["model_name"]},
             prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens, cost_usd=round(cost, 8),
             latency_ms=reply.latency_ms)
    budget.settle(db, turn, cost, reply.prompt_tokens + reply.completion_tokens)
    return True


def tool_specs(turn: Turn) -> list[dict[str, Any]]:
    """The agent's tools as OpenAI function tools (descriptions extended by :func:`describe_for`)."""
    notes = turn.tool_notes or {}
    return [{"type": "function", "function": {
        "name": t["name"],
        "description": t["description"] + ("\n" + notes[t["name"]] if notes.get(t["name"]) else ""),
        "parameters": t["parameters"]}} for t in turn.cfg["tools"]]


def describe_for(db: Db, gd: dict, turn: Turn) -> None:
    """Set ``turn.tool_notes``: what the tool kinds add to their tools' descriptions (e.g. the
    tables a ``sql`` tool may read: pgagent_core.tools.sql.describe), as the turn's first
    llm_call step recorded it (every call of a turn, and a resumed turn, sees the same), else
    computed now. A failure is not fatal: ``turn.tool_notes_error`` says why and the llm_call
    step records it."""
    if turn.tool_notes is not None:
        return
    for st in turn.steps:
        if st["kind"] == "llm_call" and "tool_notes" in st["payload"]:
            turn.tool_notes = st["payload"]["tool_notes"]
            return
    notes: dict[str, str] = {}
    for t in turn.cfg["tools"]:
        try:
            text = tools.describe(db, gd, t)
        except Exception as e:   # a catalog or statistics error: the tool keeps its own description
            if getattr(e, "sqlstate", None) == "57014":
                raise
            turn.tool_notes_error = f"describing tool {t['name']!r} failed: {e}"
            continue
        if text:
            notes[t["name"]] = text
    turn.tool_notes = notes


def successful_results(turn: Turn) -> list[str]:
    """The texts (JSON) of this turn's tool results that are not errors."""
    return [dumps(st["payload"].get("result")) for st in turn.steps
            if st["kind"] == "tool_result" and not st["payload"].get("is_error")]


def system_prompt(turn: Turn, specs: list[dict[str, Any]]) -> str:
    """Persona prompt, traits, agent instructions and (json_schema mode) the tool descriptions."""
    cfg = turn.cfg
    parts = [cfg.get("system_prompt") or "You are a helpful assistant."]
    if cfg.get("traits"):
        parts.append("Traits: " + ", ".join(f"{k}: {v}" for k, v in cfg["traits"].items()))
    if cfg.get("instructions"):
        parts.append(cfg["instructions"])
    if turn.memories:
        parts.append(memory.prompt_section(turn.memories))
    if turn.passages:
        parts.append(knowledge.prompt_section(turn.passages))
    if specs and cfg["model"]["tool_mode"] == "json_schema":
        parts.append(toolcalls.action_instructions(specs, structured=turn.settings.get("response_schema") is not None))
    if turn.settings.get("response_schema") is not None:
        parts.append("Your final answer must be one JSON value (no prose, no code fence) that matches this JSON "
                     "Schema: " + dumps(turn.settings["response_schema"]))
    return "\n\n".join(parts)


def result_text(payload: dict[str, Any], limit: int) -> str:
    """What the model is told a tool returned (JSON text, cut to ``limit`` characters). A result
    object's keys come in jsonb's order (shorter keys first), so the text is the same whether the
    step was just written or loaded again by a resumed turn, except that ``notes`` come first (a
    small model reads a result from its start)."""
    body = {"error": payload["error"]} if payload.get("is_error") else payload.get("result")
    if isinstance(body, dict):
        keys = sorted(body, key=lambda k: (k != "notes", len(k.encode()), k.encode()))
        body = {k: body[k] for k in keys}
    text = dumps(body)
    return text if len(text) <= limit else text[:limit] + f"... [truncated, {len(text)} chars]"


def build_messages(db: Db, turn: Turn, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style messages: system prompt, earlier completed turns, this turn's steps."""
    cfg, s = turn.cfg, turn.settings
    json_mode = cfg["model"]["tool_mode"] == "json_schema"
    msgs: list[dict[str, Any]] = [{"role": "system", "content": system_prompt(turn, specs)}]
    if turn.history is None:  # earlier turns do not change while this one runs
        load_history(db, turn)
    if turn.summary:
        msgs.append({"role": "system", "content": "Summary of the earlier conversation:\n" + turn.summary})
    dropped = {i for st in turn.steps if st["kind"] == "compaction" for i in st["payload"].get("dropped") or []}
    for h in turn.history:
        if h["role"] is not None:
            msgs.append({"role": h["role"], "content": h["content"]})
            continue
        msgs.append({"role": "user", "content": h["user_message"]})
        msgs.append({"role": "assistant", "content": h["answer"]})
    msgs.append({"role": "user", "content": cfg["user_message"]})
    for st in turn.steps:
        p = st["payload"]
        if st["kind"] == "intervention" and p.get("action") == "inject_message":
            msgs.append({"role": p["role"], "content": p["content"]})
        elif st["kind"] == "guardrail" and p.get("feedback"):
            msgs.append({"role": "user", "content": p["feedback"]})
        elif st["kind"] == "llm_call":
            msg = p["message"]
            if json_mode:
                msgs.append({"role": "assistant", "content": msg.get("content") or ""})
            else:
                msgs.append({k: v for k, v in msg.items() if k in ("role", "content", "tool_calls")})
        elif st["kind"] == "tool_result":
            text = result_text(p, int(s["max_result_chars"]))
            if st["step_id"] in dropped:
                text = compaction.stub(st["tool_name"], len(text))
            if json_mode:
                msgs.append({"role": "user", "content": f"Tool {st['tool_name']} returned: {text}"})
            else:
                msgs.append({"role": "tool", "tool_call_id": st["tool_call_id"], "content": text})
    return msgs


# ---------------------------------------------------------------------------- the LLM call

def http_session(gd: dict) -> requests.Session:
    """The backend's one HTTP session (keep-alive connections are reused across calls)."""
    sess = gd.get("pgagent_http")
    if sess is None:
        sess = gd["pgagent_http"] = requests.Session()
    return sess


class Interrupted(Exception):
    """The backend was asked to cancel (or terminate) during an LLM call; the turn is left as
    it is (its committed steps stay) and can be resumed or cancelled."""


def interrupt_check(db: Db) -> Callable[[], None]:
    """A check for :func:`providers.interruptible`: a trivial statement, so PostgreSQL acts on a
    pending cancel or terminate; raises Interrupted."""
    def check() -> None:
        try:
            db.all("SELECT 1")
        except Exception as e:
            raise Interrupted(str(e)) from e
    return check


LLM_CALL_SQL = "SELECT pgagent._llm_call($1, $2) AS r"


def via_llm_call(db: Db, model_id: int, request: dict[str, Any]) -> dict[str, Any]:
    """Send ``request`` (chat: {messages, tools, params, response_format}; embeddings: {input,
    params}) through the SECURITY DEFINER pgagent._llm_call, which decrypts and uses the model's
    key so that it never reaches this (the caller's) code. Returns the success object
    (``{"reply": ...}`` or ``{"embeddings": ...}``). Raises ProviderError (as the provider call
    would) or Interrupted (the backend was cancelled during the call)."""
    try:
        res = one(db, LLM_CALL_SQL, ["int8", "jsonb"], [model_id, request])["r"]
    except Exception as e:
        if getattr(e, "sqlstate", None) == "57014":
            raise Interrupted(str(e)) from e
        raise
    if "error" in res:
        err = res["error"]
        raise ProviderError(err["message"], status=err.get("status"), retryable=bool(err.get("retryable")),
                            kind=err.get("kind") or "http_error", retry_after_s=err.get("retry_after_s"))
    return res


def keyed_chat(db: Db, model: dict[str, Any], request: dict[str, Any]) -> Reply:
    """A chat call for a model with a secret_name, through :func:`via_llm_call`."""
    r = via_llm_call(db, model["model_id"], request)["reply"]
    return Reply(**{**r, "tool_calls": [ToolCall(**t) for t in r["tool_calls"]]})


def model_chat(db: Db, gd: dict, model: dict[str, Any], request: dict[str, Any]) -> Reply:
    """One chat call outside the agent loop (a compaction summary, an eval judge): ``request`` is
    ``{messages, tools, params, response_format?}``; a keyed model goes through pgagent._llm_call.
    Interruptible. Raises ProviderError or Interrupted."""
    if model.get("secret_name"):
        return keyed_chat(db, model, {"response_format": None, **request})
    return chat(http_session(gd), model, request["messages"], request.get("tools") or [], request["params"], None,
                request.get("response_format"), check=interrupt_check(db))


CHAT_MODEL_SQL = """
SELECT pg_catalog.to_jsonb(m) AS model FROM pgagent.model m
 WHERE m.tenant_id = $1::uuid AND m.kind = 'chat' AND m.enabled AND (m.name = $2 OR ($2 IS NULL AND m.is_default))"""


def chat_model(db: Db, tenant_id: str, name: str | None, what: str, hint: str | None = None) -> dict[str, Any]:
    """The tenant's enabled chat model ``name`` (None: its default chat model) as a model row
    (for :func:`model_chat`). ``what`` names its use in the error ("judge model"). Raises
    NotFound (42704)."""
    m = one(db, CHAT_MODEL_SQL, ["text", "text"], [tenant_id, name])
    if m is None:
        raise NotFound(f"{what} {name!r} does not exist" if name else "the tenant has no default chat model",
                       hint=hint or "pgagent.register_model(..., is_default => true)")
    return m["model"]


EMBED_MODEL_SQL = """
SELECT pg_catalog.to_jsonb(m) AS model FROM pgagent.model m
 WHERE m.tenant_id = $1::uuid AND m.kind = 'embedding' AND m.enabled
   AND (m.name = $2 OR ($2 IS NULL AND m.is_default))"""


def embedder(db: Db, gd: dict, tenant_id: str, model: str | None = None
             ) -> tuple[dict[str, Any], Callable[[list[str], dict[str, Any] | None], list[list[float]]]]:
    """The tenant's embedding model named ``model`` (default: its default embedding model) as
    (model row, ``embed(texts, params, role=None) -> one vector per text``). ``role`` ("query"
    or "passage") replaces the model's ``input_type`` param when it has one (E5-style models embed
    queries and passages with different prefixes). Keyed models go through pgagent._llm_call. Raises NotFound (42704: no such enabled embedding model); ``embed``
    raises ProviderFailed (58000: the provider failed, the message says how) or Interrupted."""
    row = one(db, EMBED_MODEL_SQL, ["text", "text"], [tenant_id, model])
    if row is None:
        raise NotFound(f"no enabled embedding model {model!r}" if model else "the tenant has no default embedding model",
                       hint="pgagent.register_model(..., kind => 'embedding', is_default => true)")
    m = row["model"]

    def embed(texts: list[str], params: dict[str, Any] | None = None, *, role: str | None = None
              ) -> list[list[float]]:
        body = {**m["params"], **(params or {})}
        if role is not None and "input_type" in m["params"]:
            body["input_type"] = role  # an E5-style server that takes input_type: "query" or "passage"
        try:
            if m.get("secret_name"):
                return via_llm_call(db, m["model_id"], {"input": texts, "params": body})["embeddings"]
            return providers.embed(http_session(gd), m, texts, body, None, check=interrupt_check(db))[0]
        except ProviderError as e:
            raise ProviderFailed(f"embedding with {m['name']!r} failed: {e.message}") from None
    return m, embed


def recall_for(db: Db, gd: dict, turn: Turn) -> None:
    """With ``memory: true`` in the agent's config, set ``turn.memories``: the memories the
    turn's first llm_call step recorded (so every call of a turn, and a resumed turn, sees the
    same ones), else the ``memory_k`` (default 5) best for the user message (similarity at
    least ``memory_min_similarity``, default 0; pgagent_core.memory), for the turn's creator, in
    its conversation, with the embedding model ``memory_model`` (default: the tenant's). A
    failed recall is not fatal: ``turn.memory_error`` says why, and the llm_call step records it."""
    s = turn.settings
    if turn.memories is not None or not s.get("memory"):
        return
    for st in turn.steps:
        if st["kind"] == "llm_call" and "memories" in st["payload"]:
            turn.memories = st["payload"]["memories"]
            return
    try:
        m, embed = embedder(db, gd, turn.tenant_id, s.get("memory_model"))
        vector = embed([turn.cfg["user_message"]], role="query")[0]
        turn.memories = memory.search(db, gd, tenant_id=turn.tenant_id, agent_id=int(turn.cfg["agent_id"]),
                                      owner=turn.cfg["created_by"], conversation_id=int(turn.cfg["conversation_id"]),
                                      model_id=int(m["model_id"]), vector=vector, k=int(s.get("memory_k", 5)),
                                      min_similarity=float(s.get("memory_min_similarity", 0.0)))
    except (NotFound, ProviderFailed) as e:
        turn.memories, turn.memory_error = [], f"memory recall failed: {e.message}"


def retrieve_for(db: Db, gd: dict, turn: Turn) -> None:
    """With ``knowledge`` (collection names) in the agent's config, set ``turn.passages``: those
    the turn's first llm_call step recorded, else the ``knowledge_k`` (default 3) best chunks of
    those collections for the user message (hybrid search, pgagent_core.knowledge). They are
    shown in the system prompt with their cite marks and are the turn's citations. A failed
    retrieval is not fatal: ``turn.knowledge_error`` says why, and the llm_call step records it."""
    s = turn.settings
    if turn.passages is not None or not s.get("knowledge"):
        return
    for st in turn.steps:
        if st["kind"] == "llm_call" and "passages" in st["payload"]:
            turn.passages = st["payload"]["passages"]
            return
    try:
        found, note = knowledge.search_named(db, gd, turn.tenant_id, list(s["knowledge"]), turn.cfg["user_message"],
                                             int(s.get("knowledge_k", 3)), "hybrid", None,
                                             embedder=lambda name: embedder(db, gd, turn.tenant_id, name))
        turn.passages = [{"cite": f"[{r['document_id']}:{r['chunk_id']}]", "document_id": r["document_id"],
                          "chunk_id": r["chunk_id"], "title": r["title"], "content": r["content"][:4000],
                          "score": r["score"]} for r in found]
        turn.knowledge_error = note
    except (NotFound, ProviderFailed, InvalidArgument) as e:
        turn.passages, turn.knowledge_error = [], f"knowledge retrieval failed: {e.message}"


def request_for(db: Db, turn: Turn, gd: dict | None = None) -> dict[str, Any]:
    """The chat request the loop sends next: ``{messages, tools, params, response_format}`` in
    OpenAI terms (what :func:`chat` and pgagent.prepare_turn use). params merge the model's, the
    persona's, the agent's config.params and the turn's (later wins); each was checked against
    the provider's allowlist when it was set. With ``gd`` and the agent's config ``memory``, the
    system prompt shows the recalled memories (:func:`recall_for`)."""
    if gd is not None:
        recall_for(db, gd, turn)
        retrieve_for(db, gd, turn)
        describe_for(db, gd, turn)
    cfg, model = turn.cfg, turn.cfg["model"]
    specs = tool_specs(turn)
    params = {**model["params"], **cfg["persona_params"], **(turn.settings.get("params") or {}), **cfg["turn_params"]}
    json_mode = model["tool_mode"] == "json_schema" and bool(specs)
    return {"messages": build_messages(db, turn, specs), "tools": [] if json_mode else specs, "params": params,
            "response_format": toolcalls.action_schema(specs, allow_answer=grounding.answer_allowed(
                turn.settings.get("require_tool", "never"), successful_results(turn), sent_back(turn)),
                answer_schema=turn.settings.get("response_schema"))
            if json_mode else response_format_for(turn, bool(specs))}


def sent_back(turn: Turn) -> bool:
    """Whether the turn's last step is the grounding policy sending an answer back (guard grounding)."""
    last = turn.steps[-1] if turn.steps else None
    return bool(last and last["kind"] == "guardrail" and last["payload"].get("guard") == "grounding")


def llm_attempts(turn: Turn) -> int:
    """How many LLM attempts in a row have failed at the end of the turn's log (the retry
    state survives commits and crashes because it is read from the steps)."""
    n = 0
    for st in reversed(turn.steps):
        if st["kind"] == "error" and st["payload"].get("source") == "llm":
            n += 1
        else:
            break
    return n


MAX_BACKOFF_S = 30.0          # the longest backoff slept inside a backend (send_message, a plain run_turn)
MAX_DEFER_S = 3600.0          # the longest a deferred retry waits in the queue (Retry-After)


def retry_policy(turn: Turn) -> tuple[int, int]:
    """(retry_max, retry_base_ms) of the turn: the agent's config ``retry_max`` (default: the
    model's max_retries) and ``retry_base_ms`` (default: its older name retry_backoff_ms, 500)."""
    cfg = turn.cfg.get("agent_config") or {}
    retry_max = cfg.get("retry_max")
    base = cfg.get("retry_base_ms", cfg.get("retry_backoff_ms", DEFAULTS["retry_backoff_ms"]))
    return (int(turn.cfg["model"]["max_retries"]) if retry_max is None else int(retry_max)), int(base)


def backoff_ms(base_ms: int, attempt: int, retry_after_s: float | None, cap_s: float,
               rand: Callable[[], float] = random.random) -> int:
    """The wait (ms) before retry number ``attempt`` (1 = the first retry): exponential backoff
    with "equal jitter", base_ms * 2^(attempt-1) scaled by a uniform factor in [0.5, 1) (Marc
    Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015: spreads the retries
    of many turns that failed together), capped at ``cap_s``; never shorter than the
    provider's Retry-After (s), itself capped at ``cap_s``."""
    exp = base_ms * (2 ** max(attempt - 1, 0))
    wait = min(exp * (0.5 + rand() / 2.0), cap_s * 1000.0)
    if retry_after_s is not None:
        wait = max(wait, min(float(retry_after_s), cap_s) * 1000.0)
    return int(wait)


def _retry_wait_s(turn: Turn, failed: int) -> tuple[float, str | None]:
    """Seconds from now until the recorded retry time of the last failed attempt (0 if due),
    and that time (ISO 8601). Steps recorded before retry_at existed wait their plain backoff."""
    last = turn.steps[-1]["payload"]
    if last.get("retry_at"):
        at = datetime.fromisoformat(last["retry_at"].replace("Z", "+00:00"))
        return max((at - datetime.now(timezone.utc)).total_seconds(), 0.0), last["retry_at"]
    _, base = retry_policy(turn)
    wait = base / 1000.0 * (2 ** (failed - 1))
    if last.get("retry_after_s") is not None:
        wait = max(wait, float(last["retry_after_s"]))
    return min(wait, MAX_BACKOFF_S), None


def llm_attempt(db: Db, gd: dict, turn: Turn, request: dict[str, Any] | None = None) -> Reply | None:
    """One LLM call sending ``request`` (default :func:`request_for`). A failure is recorded as
    an error step (``attempt``, ``will_retry``, ``retry_in_ms``, ``retry_at``); when no retry is
    left the turn fails. Returns the reply or None. Before a retry it waits until the recorded
    retry_at: under a worker's lease (``turn.can_defer``) by returning None at once with
    ``turn.defer_until`` set (the worker releases the turn until then: pgagent.turn.run_after),
    otherwise by sleeping in the backend."""
    model = turn.cfg["model"]
    failed = llm_attempts(turn)
    if failed:
        wait, at = _retry_wait_s(turn, failed)
        if wait > 0.005 and turn.can_defer and at is not None:
            turn.defer_until = at
            return None
        time.sleep(min(wait, MAX_BACKOFF_S))
    if request is None:
        request = request_for(db, turn, gd)
    try:
        if model.get("secret_name"):
            return keyed_chat(db, model, request)
        return chat(http_session(gd), model, request["messages"], request["tools"], request["params"], None,
                    request["response_format"], check=interrupt_check(db),
                    on_delta=db.notice if request["params"].get("stream") else None)
    except ProviderError as e:
        record_llm_failure(db, turn, e)
        return None


def record_llm_failure(db: Db, turn: Turn, e: ProviderError) -> None:
    """Record a failed LLM attempt as an error step; fail the turn when no retry is left
    (retry_max, :func:`retry_policy`) or the error is not retryable (HTTP 4xx other than
    408/409/429, a refused request). A retry's wait (:func:`backoff_ms`; Retry-After honoured up
    to 30 s in a backend, up to an hour in the queue under a worker) is recorded as
    ``retry_in_ms`` and ``retry_at``, so it survives commits and crashes."""
    retry_max, base = retry_policy(turn)
    attempt, attempts = llm_attempts(turn) + 1, retry_max + 1
    will_retry = e.retryable and attempt < attempts
    payload = {"message": e.message, "error_kind": e.kind, "http_status": e.status, "attempt": attempt,
               "will_retry": will_retry, "source": "llm", "retry_after_s": e.retry_after_s}
    if will_retry:
        wait = backoff_ms(base, attempt, e.retry_after_s, MAX_DEFER_S if turn.can_defer else MAX_BACKOFF_S)
        at = datetime.now(timezone.utc) + timedelta(milliseconds=wait)
        payload |= {"retry_in_ms": wait, "retry_at": at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}
    add_step(db, turn, "error", payload)
    if not will_retry:
        fail(db, turn, f"LLM call failed after {attempt} attempt(s): {e.message}",
             {"error_kind": e.kind, "http_status": e.status})


# ---------------------------------------------------------------------------- recording a reply

def _memory_record(turn: Turn) -> dict[str, Any]:
    """What the turn's first llm_call step records of automatic recall and retrieval:
    ``memories`` and ``passages`` (what the prompt showed), ``memory_error`` and
    ``knowledge_error`` (a failed search); nothing on later calls."""
    if any(st["kind"] == "llm_call" for st in turn.steps):
        return {}
    out: dict[str, Any] = {}
    if turn.memories is not None:
        out["memories"] = turn.memories
    if turn.memory_error:
        out["memory_error"] = turn.memory_error
    if turn.passages is not None:
        out["passages"] = turn.passages
    if turn.knowledge_error:
        out["knowledge_error"] = turn.knowledge_error
    if turn.tool_notes:
        out["tool_notes"] = turn.tool_notes
    if turn.tool_notes_error:
        out["tool_notes_error"] = turn.tool_notes_error
    return out


def record_reply(db: Db, turn: Turn, reply: Reply, gd: dict | None = None) -> None:
    """Write the llm_call step and what follows from it: thinking, tool_call steps (with
    immediate error results for invalid calls), or the response that completes the turn (after
    the after_response policy hooks). Settles the call's budget (:func:`budget.settle`)."""
    model = turn.cfg["model"]
    names = {t["name"] for t in turn.cfg["tools"]}
    id_prefix = f"call_{turn.turn_id}_{turn.next_seq}"
    reply.prompt_tokens = min(max(int(reply.prompt_tokens or 0), 0), MAX_TOKENS_PER_CALL)
    reply.completion_tokens = min(max(int(reply.completion_tokens or 0), 0), MAX_TOKENS_PER_CALL)
    answer: str | None = reply.content
    calls = list(reply.tool_calls)
    for i, c in enumerate(calls):   # providers without call ids (Gemini, Ollama): unique in the turn
        if not c.id:
            c.id = f"{id_prefix}_{i}"
    if model["tool_mode"] == "json_schema" and names and not calls:
        calls, answer = toolcalls.parse_action(reply.content, names, id_prefix)
    elif not calls:
        calls = toolcalls.recover_from_text(reply.content, names, id_prefix)
        if calls:
            answer = None
    cost = (reply.prompt_tokens * float(model["input_usd_per_mtok"])
            + reply.completion_tokens * float(model["output_usd_per_mtok"])) / 1e6
    # A call recovered from text in native mode is re-sent as a proper tool call, without the
    # text it was dug out of (the model then sees a clean, well-formed history).
    recovered = bool(calls) and not reply.tool_calls and model["tool_mode"] == "native"
    message: dict[str, Any] = {"role": "assistant", "content": "" if recovered else reply.content}
    if calls:
        message["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": c.arguments},
                                  **({"extra_content": c.extra} if c.extra else {})} for c in calls]
    add_step(db, turn, "llm_call",
             {"message": message, "finish_reason": reply.finish_reason, "model": reply.model or model["model_name"],
              "provider": model["provider"], "tool_mode": model["tool_mode"],
              "tool_call_source": calls[0].source if calls else None, **_memory_record(turn),
              **({"prompt_chars": turn.prompt_chars} if turn.prompt_chars else {})},
             prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens, cost_usd=round(cost, 8),
             latency_ms=reply.latency_ms)
    turn.llm_calls += 1
    turn.since_retry_llm_calls += 1
    turn.prompt_tokens += reply.prompt_tokens
    turn.completion_tokens += reply.completion_tokens
    turn.cost_usd += cost
    if reply.reasoning:   # the provider's reasoning (reasoning_content, Anthropic thinking blocks)
        add_step(db, turn, "thinking", {"content": reply.reasoning, "source": "reasoning"})
    elif calls and reply.tool_calls and reply.content:   # text the model wrote beside its tool calls
        add_step(db, turn, "thinking", {"content": reply.content, "source": "content"})
    budget.settle(db, turn, cost, reply.prompt_tokens + reply.completion_tokens)
    turn.held = False
    if not calls:
        content = clean_text(answer) if answer is not None else ""
        if turn.settings.get("response_schema") is not None:
            content = conform(db, turn, content)
            if content is None:
                return
        if send_back(db, turn, content):
            return
        verdict = run_hooks(db, {} if gd is None else gd, turn, "after_response", {"content": content})
        if verdict.action == "deny":
            fail(db, turn, f"the answer was withheld by policy hook {verdict.hook}: {verdict.reason}",
                 {"error_kind": "hook_denied", "hook": verdict.hook})
            return
        if verdict.action == "rewrite":
            content = clean_text(str(verdict.payload.get("content", content)))
        turn.answer = content
        add_step(db, turn, "response", {"content": turn.answer})
        set_status(db, turn, "completed")
        return
    auto = turn.settings["auto_approve"]
    for c in calls:
        tool = turn.tool(c.name)
        args, problem = validation.check_call(turn.cfg["tools"], tool, c.name, c.arguments)
        needs_approval = bool(tool and tool["requires_approval"] and problem is None
                              and not (auto is True or (isinstance(auto, list) and c.name in auto)))
        call = add_step(db, turn, "tool_call",
                        {"arguments": args if problem is None else None, "raw_arguments": c.arguments,
                         "source": c.source, "requires_approval": needs_approval, "invalid": problem},
                        tool_call_id=c.id, tool_name=c.name)
        if problem is not None:
            turn.tool_errors += 1
            turn.since_retry_tool_errors += 1
            add_step(db, turn, "tool_result", {"is_error": True, "invalid_call": True, "error": problem},
                     parent=call["step_id"], tool_call_id=c.id, tool_name=c.name)


#: Answers of a turn that agent config ``response_schema`` may send back (default of
#: ``response_schema_retries``).
SCHEMA_RETRIES = 2


def conform(db: Db, turn: Turn, content: str) -> str | None:
    """Agent config ``response_schema``: the answer as compact JSON text when it is valid
    against the schema (:func:`validation.check_answer`; a code fence is taken off). Otherwise
    the answer is sent back to the model with what is wrong (a ``guardrail`` step, guard
    response_schema, action retry, feedback) up to ``response_schema_retries`` (default 2) times
    a turn, and then the turn fails (error_kind response_schema); both return None."""
    schema = turn.settings["response_schema"]
    valid, problem = validation.check_answer(schema, content)
    if valid is not None:
        return valid
    done = sum(1 for st in turn.steps if st["kind"] == "guardrail" and st["payload"].get("guard") == "response_schema")
    retries = int(turn.settings.get("response_schema_retries", SCHEMA_RETRIES))
    if done >= retries:
        fail(db, turn, f"the answer does not match the agent's response_schema after {done + 1} attempt(s): {problem}",
             {"error_kind": "response_schema", "answer": content[:2000]})
        return None
    add_step(db, turn, "guardrail", {
        "event": "before_response", "guard": "response_schema", "action": "retry", "reason": problem,
        "feedback": f"Your answer must be one JSON value that matches this JSON Schema: {dumps(schema)}. "
                    f"Problem: {problem}. Reply again with the corrected JSON only.",
        "answer": content})
    return None


def response_format_for(turn: Turn, tools_sent: bool) -> dict[str, Any] | None:
    """The native structured-output ``response_format`` for agent config ``response_schema``
    (OpenAI json_schema shape; the Gemini and Ollama providers translate it), or None where the
    provider has none (anthropic) or cannot combine it with tools (gemini, ollama: only a request
    without tools gets it). The answer is validated either way (:func:`conform`)."""
    schema = turn.settings.get("response_schema")
    provider = turn.cfg["model"]["provider"]
    if schema is None or provider == "anthropic" or (tools_sent and provider != "openai"):
        return None
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}


def send_back(db: Db, turn: Turn, content: str) -> bool:
    """The grounding policy (agent config ``require_tool``, pgagent_core.grounding): when the
    answer is sent back to the model, record a ``guardrail`` step (event before_response, guard
    grounding, action retry, reason, numbers, feedback: the model sees the feedback as a user
    message) and return True; the turn goes on. At most ``grounding_retries`` (default 2) per turn.
    Then, with agent config ``self_check``, an answer given after a successful tool result is sent
    back once more to be checked against the results (guard self_check)."""
    s = turn.settings
    policy = s.get("require_tool", "never")
    done = sum(1 for st in turn.steps if st["kind"] == "guardrail" and st["payload"].get("guard") == "grounding")
    if policy == "never" or done >= int(s.get("grounding_retries", grounding.DEFAULT_RETRIES)):
        return self_check(db, turn, content)
    # what the model was given, without the tools' introspected notes (a schema's statistics
    # summarise the data; an answer taken from them is not a looked-up fact)
    notes, turn.tool_notes = turn.tool_notes, {}
    try:
        specs = tool_specs(turn)
        context = [turn.cfg["user_message"], system_prompt(turn, specs), turn.summary or ""]
    finally:
        turn.tool_notes = notes
    context += [json.dumps(t["function"]) for t in specs]
    context += [str(h.get("content") or h.get("user_message") or "") + " " + str(h.get("answer") or "")
                for h in (turn.history or [])]
    results = [st for st in turn.steps if st["kind"] == "tool_result"]
    last_error = str(results[-1]["payload"].get("error")) if results and results[-1]["payload"].get("is_error") \
        and not results[-1]["payload"].get("rejected") else None
    last_empty = grounding.empty_notes(results[-1]["payload"].get("result")) \
        if results and not results[-1]["payload"].get("is_error") else None
    verdict = grounding.check(policy, content, has_tools=bool(specs), tool_results=successful_results(turn),
                              context=context, last_error=last_error, last_empty=last_empty)
    if verdict is None:
        return self_check(db, turn, content)
    add_step(db, turn, "guardrail", {"event": "before_response", "guard": "grounding", "action": "retry",
                                     "policy": policy, **verdict, "answer": content})
    return True


def self_check(db: Db, turn: Turn, content: str) -> bool:
    """Agent config ``self_check``: the first answer given after a successful tool result is sent
    back once with :data:`grounding.SELF_CHECK` (a ``guardrail`` step, guard self_check); the
    answer after it is accepted. Returns True when it sent the answer back."""
    if not turn.settings.get("self_check") or not successful_results(turn):
        return False
    if any(st["kind"] == "guardrail" and st["payload"].get("guard") == "self_check" for st in turn.steps):
        return False
    add_step(db, turn, "guardrail", {"event": "before_response", "guard": "self_check", "action": "retry",
                                     "reason": "self_check", "feedback": grounding.SELF_CHECK, "answer": content})
    return True


# ---------------------------------------------------------------------------- running tools

def pending_calls(turn: Turn) -> list[dict[str, Any]]:
    """tool_call steps that have no tool_result yet, in order."""
    done = {s["parent_step_id"] for s in turn.steps if s["kind"] == "tool_result"}
    return [s for s in turn.steps if s["kind"] == "tool_call" and s["step_id"] not in done]


def decision(turn: Turn, call_step_id: int) -> dict[str, Any] | None:
    """The approval step answering a tool_call step, or None if undecided."""
    return next((s for s in turn.steps if s["kind"] == "approval" and s["parent_step_id"] == call_step_id), None)


def execute_call(db: Db, gd: dict, turn: Turn, call: dict[str, Any], *, rewritten_by: str | None = None) -> dict[str, Any]:
    """Run one approved or approval-free tool call and record its tool_result (in the same
    transaction as the tool's own writes). ``rewritten_by``: the policy hook that rewrote the
    arguments (they are then recorded in the result as ``arguments``)."""
    tool = turn.tool(call["tool_name"])
    t0 = time.perf_counter()
    try:
        if tool is None:
            raise tools.ToolFailure(f"tool {call['tool_name']!r} was removed from the agent or disabled")
        ctx = tools.ToolContext(db, turn.tenant_id, turn.turn_id, gd,
                                idempotency_key=f"pgagent-{turn.tenant_id}-{call['step_id']}",
                                agent_id=int(turn.cfg["agent_id"]), user=turn.cfg["created_by"],
                                conversation_id=int(turn.cfg["conversation_id"]),
                                embedder=lambda model: embedder(db, gd, turn.tenant_id, model))
        result = tools.run(ctx, tool, call["payload"]["arguments"])
        payload = {"is_error": False, "result": result}
    except tools.ToolFailure as e:
        payload = {**e.details, "is_error": True, "error": str(e)}
    except Exception as e:  # a bug in a tool kind must not lose the turn
        payload = {"is_error": True, "error": f"{type(e).__name__}: {e}"}
    if rewritten_by:
        payload = {**payload, "rewritten_by": rewritten_by, "arguments": call["payload"]["arguments"]}
    return add_step(db, turn, "tool_result", payload, parent=call["step_id"], tool_call_id=call["tool_call_id"],
                    tool_name=call["tool_name"], latency_ms=(time.perf_counter() - t0) * 1000.0)


def reject_result(db: Db, turn: Turn, call: dict[str, Any], d: dict[str, Any]) -> dict[str, Any]:
    """The tool_result that tells the model a human rejected the call."""
    note = d["payload"].get("note")
    msg = f"the call was rejected by {d['payload'].get('decided_by')}" + (f": {note}" if note else "")
    return add_step(db, turn, "tool_result", {"is_error": True, "rejected": True, "error": msg},
                    parent=call["step_id"], tool_call_id=call["tool_call_id"], tool_name=call["tool_name"])


# ---------------------------------------------------------------------------- driving a turn

CONTINUE, STOP, NEEDS_LLM = "continue", "stop", "needs_llm"


def advance(db: Db, gd: dict, turn: Turn, *, external: bool = False) -> str:
    """Do the next unit of work of ``turn`` and return CONTINUE (more to do), STOP (the turn is
    terminal, paused or waits for an approval) or, with ``external`` (pgagent.prepare_turn /
    submit_reply), NEEDS_LLM instead of calling the model (the request is then in
    ``turn.next_request``). A unit is one of: queued -> running; one pending tool call run (or
    its rejection or a policy hook's denial recorded, or the turn parked for a human);
    awaiting_approval -> running; a limit reached (the turn fails); a budget reservation
    (committed on its own under run_turn); one LLM attempt recorded. Before a tool call or an
    LLM call starts, :func:`gate` records injected messages and parks the turn if its
    conversation is paused. Raises Interrupted (the backend was cancelled during an LLM call)."""
    if turn.status in TERMINAL or turn.status == "paused":
        return STOP
    if turn.status == "queued":
        set_status(db, turn, "running")
        return CONTINUE
    for call in pending_calls(turn):
        if call["payload"].get("requires_approval"):
            d = decision(turn, call["step_id"])
            if d is None:
                if turn.status != "awaiting_approval":
                    set_status(db, turn, "awaiting_approval")
                return STOP
            if not d["payload"]["approved"]:
                reject_result(db, turn, call, d)
                return CONTINUE
        if gate(db, turn):
            return STOP
        tool = turn.tool(call["tool_name"])
        if tool is not None and tool["kind"] == "agent":
            return agent_unit(db, gd, turn, call, tool)
        if tool is not None and tool["kind"] == "handoff":
            return handoff_unit(db, gd, turn, call, tool)
        tool_call_guarded(db, gd, turn, call)
        return CONTINUE
    if turn.status == "awaiting_approval":
        set_status(db, turn, "running")
        return CONTINUE
    s = turn.settings
    if turn.since_retry_tool_errors > int(s["max_tool_errors"]):
        fail(db, turn, f"too many invalid tool calls ({turn.since_retry_tool_errors} > max_tool_errors "
                       f"{s['max_tool_errors']})", {"error_kind": "max_tool_errors"})
        return STOP
    if turn.since_retry_llm_calls >= int(s["max_steps"]):
        fail(db, turn, f"max_steps ({s['max_steps']}) reached without an answer", {"error_kind": "max_steps"})
        return STOP
    if gate(db, turn):
        return STOP
    if not external and maybe_compact(db, gd, turn):
        return CONTINUE
    request = request_for(db, turn, gd)
    turn.prompt_chars = compaction.request_chars(request["messages"], request["tools"])
    if not turn.held:
        try:
            turn.held = budget.reserve(db, turn, request) == "held"
        except budget.BudgetExceeded as e:
            fail(db, turn, f"budget exceeded: {e.message}",
                 {"error_kind": "budget_exceeded", "sqlstate": budget.BUDGET_SQLSTATE, **e.facts})
            return STOP
        if turn.held:
            # its own unit: under CALL run_turn the reservation commits before the call, so the
            # budget's row lock is held briefly (under send_message it is all one transaction)
            return CONTINUE
    verdict = run_hooks(db, gd, turn, "before_llm_call",
                        {"messages": request["messages"], "params": request["params"],
                         "tools": [t["function"]["name"] for t in tool_specs(turn)]})
    if verdict.action == "deny":
        fail(db, turn, f"the LLM call was denied by policy hook {verdict.hook}: {verdict.reason}",
             {"error_kind": "hook_denied", "hook": verdict.hook})
        return STOP
    if verdict.action == "rewrite":
        request = {**request, "messages": verdict.payload.get("messages", request["messages"]),
                   "params": verdict.payload.get("params", request["params"])}
    if external:
        turn.next_request = request
        return NEEDS_LLM
    reply = llm_attempt(db, gd, turn, request)
    if reply is not None:
        record_reply(db, turn, reply, gd)
    elif turn.held:
        budget.release(db, turn)
        turn.held = False
    return STOP if turn.status in TERMINAL else CONTINUE


def gate(db: Db, turn: Turn) -> bool:
    """Before a tool call or an LLM call starts: record the messages operators injected into the
    conversation since the turn was created (one 'intervention' step each, in order: the model
    sees them from the next LLM call on) and, if the conversation is paused, record that and
    park the turn as 'paused' (pgagent.resume_conversation re-queues it). Returns True when
    the turn was parked."""
    seen = max((int(st["payload"].get("intervention_id") or 0) for st in turn.steps
                if st["kind"] == "intervention" and st["payload"].get("action") == "inject_message"), default=0)
    row = one(db, GATE_SQL, ["text", "int8", "int8", "text"],
              [turn.tenant_id, turn.cfg["conversation_id"], seen, turn.cfg["turn_created_at"]])
    for inj in (row or {}).get("injections") or []:
        add_step(db, turn, "intervention", {"action": "inject_message", **inj})
    if row and row["paused"]:
        add_step(db, turn, "intervention", {"action": "pause", "paused_by": row["paused_by"],
                                            "reason": row["pause_reason"]})
        set_status(db, turn, "paused")
        return True
    return False


def run_hooks(db: Db, gd: dict, turn: Turn, event: str, payload: dict[str, Any]) -> hooks.Verdict:
    """Run the turn's policy hooks for ``event`` (:func:`pgagent_core.hooks.run`) and record a
    'guardrail' step when one denies or rewrites (event, hook, action, reason; never the
    payload itself, which the following steps show)."""
    if not any(h["event"] == event for h in turn.cfg.get("hooks") or ()):
        return hooks.Verdict("allow", payload)
    verdict = hooks.run(db, gd, turn, event, {"event": event, "turn_id": turn.turn_id,
                                              "agent": turn.cfg["agent_name"], **payload})
    if verdict.action != "allow":
        add_step(db, turn, "guardrail", {"event": event, "hook": verdict.hook, "action": verdict.action,
                                         "reason": verdict.reason})
    return verdict


def tool_call_guarded(db: Db, gd: dict, turn: Turn, call: dict[str, Any]) -> dict[str, Any]:
    """Run the before_tool_call hooks, then the call (:func:`execute_call`). A denial is the
    call's tool_result (is_error, denied: the model is told why); rewritten arguments are
    validated against the tool's schema again and recorded in the result payload."""
    verdict = run_hooks(db, gd, turn, "before_tool_call",
                        {"tool": call["tool_name"], "tool_call_id": call["tool_call_id"],
                         "arguments": call["payload"].get("arguments")})
    if verdict.action == "deny":
        return add_step(db, turn, "tool_result",
                        {"is_error": True, "denied": True, "hook": verdict.hook,
                         "error": f"the call was denied by policy hook {verdict.hook}: {verdict.reason}"},
                        parent=call["step_id"], tool_call_id=call["tool_call_id"], tool_name=call["tool_name"])
    if verdict.action == "rewrite":
        args = verdict.payload.get("arguments")
        checked, problem = validation.check_call(turn.cfg["tools"], turn.tool(call["tool_name"]), call["tool_name"],
                                                 dumps(args))
        if problem is not None:
            return add_step(db, turn, "tool_result",
                            {"is_error": True, "denied": True, "hook": verdict.hook,
                             "error": f"policy hook {verdict.hook} rewrote the arguments into invalid ones: {problem}"},
                            parent=call["step_id"], tool_call_id=call["tool_call_id"], tool_name=call["tool_name"])
        call = {**call, "payload": {**call["payload"], "arguments": checked}}
        return execute_call(db, gd, turn, call, rewritten_by=verdict.hook)
    return execute_call(db, gd, turn, call)


def _call_allowed(db: Db, gd: dict, turn: Turn, call: dict[str, Any]) -> dict[str, Any] | None:
    """The before_tool_call hooks for an agent or handoff call: the arguments to use (rewritten
    ones validated again), or None when a hook denied the call or rewrote it into invalid
    arguments (its error result is then recorded)."""
    verdict = run_hooks(db, gd, turn, "before_tool_call",
                        {"tool": call["tool_name"], "tool_call_id": call["tool_call_id"],
                         "arguments": call["payload"].get("arguments")})
    problem = None
    args = call["payload"].get("arguments") or {}
    if verdict.action == "deny":
        problem = f"the call was denied by policy hook {verdict.hook}: {verdict.reason}"
    elif verdict.action == "rewrite":
        args, bad = validation.check_call(turn.cfg["tools"], turn.tool(call["tool_name"]), call["tool_name"],
                                          dumps(verdict.payload.get("arguments")))
        if bad is not None:
            problem = f"policy hook {verdict.hook} rewrote the arguments into invalid ones: {bad}"
    if problem is None:
        return args
    add_step(db, turn, "tool_result", {"is_error": True, "denied": True, "hook": verdict.hook, "error": problem},
             parent=call["step_id"], tool_call_id=call["tool_call_id"], tool_name=call["tool_name"])
    return None


def agent_unit(db: Db, gd: dict, turn: Turn, call: dict[str, Any], tool: dict[str, Any]) -> str:
    """One unit of an ``agent`` tool call (pgagent_core.delegation): start the child turn (after
    the before_tool_call hooks, the depth limit and cycle detection: a refused call is an error
    result), advance it by one unit of its own (its lock taken; its LLM calls, tool calls,
    approvals and budget are its own), or, once it is terminal, record the call's tool_result:
    the child's answer, or its error (is_error), with child_turn_id, child_status and the usage
    of the child's whole subtree. While the child waits for an approval (or its conversation is
    paused) the parent waits as awaiting_approval. Returns CONTINUE or STOP."""
    cfg = tool["config"]
    child = delegation.find_child(db, turn.tenant_id, turn.turn_id, call["step_id"])
    if child is None:
        args = _call_allowed(db, gd, turn, call)
        if args is None:
            return CONTINUE
        try:
            agent = delegation.check_call(db, turn.tenant_id, turn.turn_id, int(turn.cfg.get("depth") or 0),
                                          cfg["agent"], int(cfg.get("max_depth", delegation.DEFAULT_MAX_DEPTH)))
        except delegation.Refused as e:
            add_step(db, turn, "tool_result", {"is_error": True, "refused": True, "agent": cfg["agent"],
                                               "error": str(e)},
                     parent=call["step_id"], tool_call_id=call["tool_call_id"], tool_name=call["tool_name"])
            return CONTINUE
        message = delegation.message_of(args)
        child_id = delegation.start_child(db, turn, call, agent, message)
        db.all(INSERT_STEP_SQL, INSERT_STEP_TYPES,
               [turn.tenant_id, child_id, 1, "user_message", {"content": clean_text(message) or "(no message)"},
                None, None, None, None, None, None, None, turn.actor])
        return CONTINUE
    child_id = int(child["turn_id"])
    if child["status"] in TERMINAL:
        used = delegation.usage(db, turn.tenant_id, child_id)
        base = {"agent": cfg["agent"], "child_turn_id": child_id, "child_status": child["status"], "usage": used}
        if child["status"] == "completed":
            payload = {**base, "is_error": False, "result": {"agent": cfg["agent"], "answer": child["answer"]}}
        else:
            payload = {**base, "is_error": True,
                       "error": f"agent {cfg['agent']!r} {child['status']}: {child['error'] or 'no answer'}"}
        add_step(db, turn, "tool_result", payload, parent=call["step_id"], tool_call_id=call["tool_call_id"],
                 tool_name=call["tool_name"])
        if turn.status == "awaiting_approval":
            set_status(db, turn, "running")
        return CONTINUE
    lock_turn(db, gd, turn.tenant_id, child_id)
    sub = load(db, turn.tenant_id, child_id, turn.actor)
    sub.can_defer = turn.can_defer
    state = guarded_advance(db, gd, sub)
    if turn.running_children is None:
        turn.running_children = {}
    turn.running_children[call["step_id"]] = {"turn_id": child_id, "agent": cfg["agent"], "status": sub.status}
    if sub.defer_until is not None:
        turn.defer_until = sub.defer_until
    if state == STOP and sub.status in ("awaiting_approval", "paused"):
        if turn.status != "awaiting_approval":
            set_status(db, turn, "awaiting_approval")
        return STOP
    if turn.status == "awaiting_approval":
        set_status(db, turn, "running")
    return CONTINUE


def handoff_unit(db: Db, gd: dict, turn: Turn, call: dict[str, Any], tool: dict[str, Any]) -> str:
    """A ``handoff`` tool call: after the before_tool_call hooks, the conversation moves to the
    tool's agent (pgagent_core.delegation.switch_agent) and the call's tool_result records
    ``{"handoff": {"from", "to", "reason"}}``; the turn then goes on as the new agent (its
    prompt, tools and model), which answers the same user message with the history. A refused
    handoff (unknown, disabled or the same agent) is an error result. Returns CONTINUE."""
    args = _call_allowed(db, gd, turn, call)
    if args is None:
        return CONTINUE
    name = tool["config"]["agent"]
    try:
        agent = delegation.target(db, turn.tenant_id, name)
        if int(agent["agent_id"]) == int(turn.cfg["agent_id"]):
            raise delegation.Refused(f"this conversation is already answered by agent {name!r}")
    except delegation.Refused as e:
        add_step(db, turn, "tool_result", {"is_error": True, "refused": True, "error": str(e)},
                 parent=call["step_id"], tool_call_id=call["tool_call_id"], tool_name=call["tool_name"])
        return CONTINUE
    reason = args.get("reason") if isinstance(args.get("reason"), str) else None
    moved = {"from": turn.cfg["agent_name"], "to": name, "reason": reason}
    delegation.switch_agent(db, turn.tenant_id, int(turn.cfg["conversation_id"]), int(agent["agent_id"]))
    add_step(db, turn, "tool_result", {"is_error": False, "handoff": moved,
                                       "result": {"handoff": moved, "note": f"agent {name} answers from here on"}},
             parent=call["step_id"], tool_call_id=call["tool_call_id"], tool_name=call["tool_name"])
    fresh = load(db, turn.tenant_id, turn.turn_id, turn.actor)
    turn.cfg = fresh.cfg
    turn.history = turn.tool_notes = turn.memories = turn.passages = None
    return CONTINUE


def guarded_advance(db: Db, gd: dict, turn: Turn, *, external: bool = False) -> str:
    """:func:`advance`, but an unexpected exception (a bug, a value the database refuses) is
    recorded as an error step and fails the turn instead of escaping."""
    try:
        return advance(db, gd, turn, external=external)
    except (Busy, InvalidState, NotFound, Interrupted):
        raise
    except Exception as e:
        if turn.status in TERMINAL:
            raise
        fail(db, turn, f"internal error: {type(e).__name__}: {e}", {"error_kind": "internal"})
        return STOP


def drive(db: Db, gd: dict, turn: Turn) -> dict[str, Any]:
    """Run ``turn`` in the current transaction until it completes, fails or waits for an
    approval; return :func:`summary`. The caller holds the turn's lock."""
    while guarded_advance(db, gd, turn) == CONTINUE:
        pass
    return summary(turn)


def step(db: Db, gd: dict, tenant_id: str, turn_id: int, actor: str | None = None) -> dict[str, Any]:
    """One unit of ``CALL pgagent.run_turn`` (the procedure commits after each call): takes the
    turn's session lock on the first call, and releases it when the turn stops or an error
    escapes. A turn with a worker's lease (pgagent.claim_turn) is run under it
    (:mod:`pgagent_core.lease`): checked at the start of every unit, renewed at the end of a
    unit once half of it is spent, given up when the turn
    stops, waits for an approval, defers a retry (then the result has ``run_after``) or the
    worker stops (``released``: true). Returns ``{"done": false}`` or ``{"done": true,
    "result": summary}``. Raises NotFound, Busy (also lease.LeaseLost), Interrupted."""
    key = (tenant_id, turn_id)
    held = gd.setdefault("pgagent_session_locks", set())
    leases = gd.setdefault("pgagent_leases", {})
    cache = gd.setdefault("pgagent_turns", {})
    if key not in held and key not in leases:
        try:
            lock_turn(db, gd, tenant_id, turn_id, session=True)
            locked = True
        except Busy:
            locked = False   # lease.begin decides: run it under this session's lease, or 55P03
        try:
            got = lease.begin(db, tenant_id, turn_id, locked)
        except BaseException:
            unlock_turn(db, gd, tenant_id, turn_id)
            raise
        if got is not None:
            leases[key] = got
    held_lease = leases.get(key)
    outcome = "continue"
    try:
        turn = cache.pop(key, None)
        seen = None if turn is None or turn.actor != actor else _seen(db, turn)
        if seen is None or not _same(seen, turn):
            turn = load(db, tenant_id, turn_id, actor)
            seen = turn.cfg
        if held_lease is not None:
            # the lease as committed: still this session's? is the worker stopping? enough left?
            outcome = lease.at_start(held_lease, seen, turn_id)
            if outcome == "stopping":
                lease.release(db, held_lease, tenant_id, turn_id)
            elif lease.due_at_start(held_lease, turn.status, turn.cfg):
                lease.renew(db, held_lease, tenant_id, turn_id, turn.cfg)   # committed before the unit
                cache[key] = turn
                return {"done": False}
        if outcome == "continue":
            turn.can_defer, turn.defer_until = held_lease is not None, None
            state = guarded_advance(db, gd, turn)
            if held_lease is not None:
                outcome = lease.finish_unit(db, held_lease, tenant_id, turn_id, turn.status, turn.cfg,
                                            turn.defer_until, stopped=state != CONTINUE)
            if state == CONTINUE and outcome == "continue":
                cache[key] = turn
                return {"done": False}
    except BaseException:
        leases.pop(key, None)
        unlock_turn(db, gd, tenant_id, turn_id)
        raise
    leases.pop(key, None)
    unlock_turn(db, gd, tenant_id, turn_id)
    result = summary(turn)
    if turn.defer_until is not None and turn.status not in TERMINAL:
        result["run_after"] = turn.defer_until
    if outcome == "stopping":
        result["released"] = True
    return {"done": True, "result": result}


SEEN_SQL = """
SELECT t.status, t.lease_owner, pg_catalog.date_part('epoch', t.lease_expires_at)::float8 AS lease_expires_epoch,
       coalesce((SELECT w.stopping FROM pgagent.worker w WHERE w.tenant_id = t.tenant_id AND w.worker_id = t.lease_owner),
                false) AS worker_stopping,
       (SELECT s.step_id FROM pgagent.step s WHERE s.tenant_id = t.tenant_id AND s.turn_id = t.turn_id
         ORDER BY s.seq DESC LIMIT 1) AS last_step
  FROM pgagent.turn t WHERE t.tenant_id = $1::uuid AND t.turn_id = $2"""


def _seen(db: Db, turn: Turn) -> dict[str, Any] | None:
    """The committed turn's status, lease (owner, expiry as epoch s, whether its worker is
    stopping) and last step (None if it is gone)."""
    return one(db, SEEN_SQL, ["text", "int8"], [turn.tenant_id, turn.turn_id])


def _same(row: dict[str, Any] | None, turn: Turn) -> bool:
    """Whether the committed turn (``row`` from :func:`_seen`) is still what the cached
    :class:`Turn` says (same status and last step): then :func:`step` reuses it instead of
    loading the turn again. A unit that was rolled back, or anything written by someone else,
    makes it differ."""
    last = turn.steps[-1]["step_id"] if turn.steps else None
    return row is not None and row["status"] == turn.status and row["last_step"] == last
