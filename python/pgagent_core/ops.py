"""Operator interventions: inject a message, override an answer, pause and resume a
conversation, retry a failed turn, fork a conversation, rate and flag turns.

Every intervention is an audit event (pgagent.audit_event) and a row of pgagent.intervention
(append-only); one that acts on a turn is also a step of that turn (kind ``intervention``), so
the turn's own log says what happened to it. Steps are written under the turn's lock
(:func:`pgagent_core.loop.lock_turn`): a turn being run by another session right now is left
alone and the intervention reaches it at its next step boundary (:func:`pgagent_core.loop.gate`),
or, where that is not possible, the call fails with 55P03.

Groups: the interventions need pgagent_operator; a pgagent_user may rate and flag the turns it
started itself (operators may rate and flag any). See docs/operations.md.
"""

from __future__ import annotations

from typing import Any

from . import limits, loop
from .db import Db, one
from .errors import Busy, Forbidden, InvalidArgument, InvalidState, NotFound
from .registry import Caller, api, audit, check, ident

#: Longest text an operator may inject or put in place of an answer (characters).
MAX_TEXT = 100_000
CATEGORY_RE = r"^[a-z][a-z0-9_]{0,62}$"

INTERVENTION_SQL = """
INSERT INTO pgagent.intervention (tenant_id, conversation_id, turn_id, action, payload, created_by)
VALUES ($1::uuid, $2, $3, $4, $5, pgagent._outer_user()) RETURNING intervention_id"""


def _text(value: Any, what: str, *, required: bool = True) -> str | None:
    """A cleaned text argument of at most MAX_TEXT characters (22023 otherwise)."""
    if value is None and not required:
        return None
    check(isinstance(value, str) and value.strip() != "", f"{what} must be a non-empty text")
    check(len(value) <= MAX_TEXT, f"{what} is longer than {MAX_TEXT} characters")
    return limits.clean_text(value)


def _note(value: Any, what: str) -> str | None:
    """An optional short text (≤ 10000 characters)."""
    if value is None:
        return None
    check(isinstance(value, str) and len(value) <= 10000, f"{what} must be a text of at most 10000 characters")
    return limits.clean_text(value)


def _intervention(db: Db, c: Caller, conversation_id: int, turn_id: int | None, action: str,
                  payload: dict[str, Any]) -> int:
    """Append a pgagent.intervention row; returns its id."""
    return int(one(db, INTERVENTION_SQL, ["text", "int8", "int8", "text", "jsonb"],
                   [c.tenant_id, conversation_id, turn_id, action, limits.clean_json(payload)])["intervention_id"])


def _conversation(db: Db, c: Caller, conversation: Any) -> dict[str, Any]:
    """The caller's tenant's conversation row (42704 when it has none of that id)."""
    ident(conversation, "conversation")
    row = one(db, "SELECT conversation_id, agent_id, user_id, title, metadata, paused_at::text AS paused_at, "
                  "paused_by::text AS paused_by, pause_reason FROM pgagent.conversation "
                  "WHERE tenant_id = $1::uuid AND conversation_id = $2", ["text", "int8"], [c.tenant_id, conversation])
    if row is None:
        raise NotFound(f"conversation {conversation} does not exist (for this tenant)")
    return row


def _turn(db: Db, gd: dict, c: Caller, turn: Any) -> loop.Turn:
    """The turn, locked for this transaction (55P03 while another session runs it), as the loop
    sees it, with the caller as the actor of the steps written now."""
    ident(turn, "turn")
    loop.lock_turn(db, gd, c.tenant_id, turn)
    return loop.load(db, c.tenant_id, turn, c.role)


def _active_turns(db: Db, c: Caller, conversation_id: int, statuses: tuple[str, ...]) -> list[int]:
    return [int(r["turn_id"]) for r in db.all(
        "SELECT turn_id FROM pgagent.turn WHERE tenant_id = $1::uuid AND conversation_id = $2 "
        "AND status = ANY($3) ORDER BY seq", ["text", "int8", "text[]"], [c.tenant_id, conversation_id, list(statuses)])]


def _try_lock(db: Db, gd: dict, c: Caller, turn_id: int) -> loop.Turn | None:
    """The turn locked and loaded, or None when another session is running it right now."""
    try:
        loop.lock_turn(db, gd, c.tenant_id, turn_id)
    except Busy:
        return None
    return loop.load(db, c.tenant_id, turn_id, c.role)


# ---------------------------------------------------------------------------- messages and answers

@api("operator")
def inject_message(db: Db, gd: dict, c: Caller, conversation: int, content: str, role: str = "system") -> int:
    """Add an operator's message (role ``system`` or ``user``) to the conversation's context
    from the next LLM call on: a turn that is running, queued, paused or waiting for approval
    records it as an ``intervention`` step at its next step boundary and the model sees it
    there; later turns see it in their history, in time order. Returns the intervention_id.
    Audited (message_injected). Raises 22023 (empty content, bad role), 42704."""
    conv = _conversation(db, c, conversation)
    check(role in ("system", "user"), f"role {role!r} is not system or user")
    text = _text(content, "content")
    iid = _intervention(db, c, conv["conversation_id"], None, "inject_message", {"role": role, "content": text})
    audit(db, "message_injected", "conversation", conversation, {"intervention_id": iid, "role": role,
                                                                   "chars": len(text or "")})
    return iid


@api("operator")
def override_response(db: Db, gd: dict, c: Caller, turn: int, content: str, reason: str) -> dict[str, Any]:
    """Replace what the user sees as the answer of a completed turn (turn.answer, and the
    history later turns send to the model); the model's answer stays in the turn's response
    step, and an ``intervention`` step records the new answer, the old one, who and why.
    Returns the turn summary. Audited (response_overridden). Raises 22023 (empty content or
    reason), 42704, 55000 (the turn is not completed), 55P03."""
    text = _text(content, "content")
    why = _text(reason, "reason")
    t = _turn(db, gd, c, turn)
    if t.status != "completed":
        raise InvalidState(f"turn {turn} is {t.status}; only a completed turn's answer can be overridden",
                           hint="Inject a message (pgagent.inject_message) to steer a turn that still runs.")
    original = t.answer
    loop.add_step(db, t, "intervention", {"action": "override_response", "content": text, "reason": why,
                                          "original": original, "by": c.role})
    db.all("UPDATE pgagent.turn SET answer = $3 WHERE tenant_id = $1::uuid AND turn_id = $2",
           ["text", "int8", "text"], [c.tenant_id, turn, text])
    t.answer = text
    iid = _intervention(db, c, int(t.cfg["conversation_id"]), turn, "override_response",
                        {"reason": why, "chars": len(text or "")})
    audit(db, "response_overridden", "turn", turn, {"intervention_id": iid, "reason": why})
    return loop.summary(t)


# ---------------------------------------------------------------------------- pause and resume

@api("operator")
def pause_conversation(db: Db, gd: dict, c: Caller, conversation: int, reason: str | None = None) -> dict[str, Any]:
    """Pause a conversation: no new LLM call or tool call starts in it. Its queued turns are
    parked ('paused') now; a running turn (another session's) parks itself at its next step
    boundary, and a turn waiting for approval keeps waiting (approvals may still be recorded)
    and parks when its approved call would run. Each parked turn gets an ``intervention``
    step. Returns {conversation_id, paused_at, paused_turns: [turn_id], active_turns:
    [turn_id] (running or waiting: they park at their next boundary)}. Audited
    (conversation_paused). Raises 42704, 55000 (already paused)."""
    conv = _conversation(db, c, conversation)
    why = _note(reason, "reason")
    if conv["paused_at"] is not None:
        raise InvalidState(f"conversation {conversation} is already paused (by {conv['paused_by']})",
                           hint=f"SELECT pgagent.resume_conversation({conversation});")
    at = one(db, "UPDATE pgagent.conversation SET paused_at = pg_catalog.clock_timestamp(), "
                 "paused_by = pgagent._outer_user(), pause_reason = $3 "
                 "WHERE tenant_id = $1::uuid AND conversation_id = $2 RETURNING paused_at::text AS at",
             ["text", "int8", "text"], [c.tenant_id, conversation, why])["at"]
    parked, active = [], []
    for turn_id in _active_turns(db, c, conversation, ("queued", "running", "awaiting_approval")):
        t = _try_lock(db, gd, c, turn_id)
        if t is None or t.status != "queued":
            active.append(turn_id)   # it parks itself at its next step boundary (loop.gate)
            continue
        loop.add_step(db, t, "intervention", {"action": "pause", "paused_by": c.role, "reason": why})
        loop.set_status(db, t, "paused")
        parked.append(turn_id)
    iid = _intervention(db, c, conversation, None, "pause", {"reason": why, "paused_turns": parked})
    audit(db, "conversation_paused", "conversation", conversation, {"intervention_id": iid, "reason": why,
                                                                      "paused_turns": parked})
    return {"conversation_id": conversation, "paused_at": at, "paused_turns": parked, "active_turns": active}


@api("operator")
def resume_conversation(db: Db, gd: dict, c: Caller, conversation: int) -> dict[str, Any]:
    """Resume a paused conversation: clear the pause and queue its paused turns again (an
    ``intervention`` step each); ``CALL pgagent.run_turn(turn)`` (or a worker) continues them
    from where they stopped. Returns {conversation_id, requeued_turns: [turn_id]}. Audited
    (conversation_resumed). Raises 42704, 55000 (not paused), 55P03 (a paused turn is locked
    by another session)."""
    conv = _conversation(db, c, conversation)
    if conv["paused_at"] is None:
        raise InvalidState(f"conversation {conversation} is not paused")
    db.all("UPDATE pgagent.conversation SET paused_at = NULL, paused_by = NULL, pause_reason = NULL "
           "WHERE tenant_id = $1::uuid AND conversation_id = $2", ["text", "int8"], [c.tenant_id, conversation])
    requeued = []
    for turn_id in _active_turns(db, c, conversation, ("paused",)):
        t = _turn(db, gd, c, turn_id)
        loop.add_step(db, t, "intervention", {"action": "resume", "resumed_by": c.role})
        loop.set_status(db, t, "queued")
        requeued.append(turn_id)
    iid = _intervention(db, c, conversation, None, "resume", {"requeued_turns": requeued})
    audit(db, "conversation_resumed", "conversation", conversation, {"intervention_id": iid,
                                                                       "requeued_turns": requeued})
    return {"conversation_id": conversation, "requeued_turns": requeued}


# ---------------------------------------------------------------------------- retry and fork

@api("operator")
def retry_turn(db: Db, gd: dict, c: Caller, turn: int, run: bool = True) -> dict[str, Any]:
    """Run a failed turn again from its last good step: an ``intervention`` step (action retry,
    with the error it had) ends the run of failed attempts, the turn is queued again with its
    limits (max_steps, max_tool_errors) counted afresh from here, and with ``run`` it is driven
    now in the caller's transaction (as send_message does); without, ``CALL pgagent.run_turn``
    runs it. Its steps, tokens and cost so far are kept. Returns the turn summary. Audited
    (turn_retried). Raises 42704, 55000 (the turn did not fail), 55P03."""
    check(isinstance(run, bool), "run must be true or false")
    t = _turn(db, gd, c, turn)
    if t.status != "failed":
        raise InvalidState(f"turn {turn} is {t.status}; only a failed turn can be retried")
    previous = t.error
    loop.add_step(db, t, "intervention", {"action": "retry", "previous_error": previous, "by": c.role})
    t.error = None
    t.since_retry_llm_calls = t.since_retry_tool_errors = 0
    loop.set_status(db, t, "queued")
    iid = _intervention(db, c, int(t.cfg["conversation_id"]), turn, "retry", {"previous_error": previous})
    audit(db, "turn_retried", "turn", turn, {"intervention_id": iid, "previous_error": previous})
    return loop.drive(db, gd, t) if run else loop.summary(t)


FORK_SOURCE_SQL = """
SELECT s.step_id, s.turn_id, s.seq AS step_seq, t.seq AS turn_seq, t.conversation_id
  FROM pgagent.step s JOIN pgagent.turn t ON t.tenant_id = s.tenant_id AND t.turn_id = s.turn_id
 WHERE s.tenant_id = $1::uuid AND s.step_id = $2"""

COPY_TURN_SQL = """
INSERT INTO pgagent.turn (tenant_id, conversation_id, seq, status, user_message, params, created_by, started_at)
VALUES ($1::uuid, $2, $3, $6, $4, $5, pgagent._outer_user(),
        CASE WHEN $6 = 'running' THEN pg_catalog.clock_timestamp() END) RETURNING turn_id"""

COPY_STEPS_SQL = """
SELECT step_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name, prompt_tokens, completion_tokens,
       cost_usd, latency_ms, created_by::text AS created_by
  FROM pgagent.step WHERE tenant_id = $1::uuid AND turn_id = $2 AND seq <= $3 ORDER BY seq"""


@api("operator")
def fork_conversation(db: Db, gd: dict, c: Caller, conversation: int, at_step: int, agent: str | None = None,
                      title: str | None = None) -> dict[str, Any]:
    """A new conversation whose history is ``conversation``'s up to and including step
    ``at_step``, for replaying with another agent (``agent``: its model, prompt and tools;
    default the same agent). The completed turns before the step's turn are copied whole
    (their steps re-recorded, with new ids and their own hash chain). If ``at_step`` is the
    response (or the last step) of a completed turn, that turn is copied whole too; otherwise
    its steps up to ``at_step`` are copied into a queued turn, which ``CALL pgagent.run_turn``
    continues from there. The original is untouched. Returns {conversation_id, forked_from,
    at_step, turns_copied, steps_copied, open_turn_id}. Audited (conversation_forked). Raises
    22023, 42704 (no such conversation, step or agent; a step of another conversation)."""
    conv = _conversation(db, c, conversation)
    ident(at_step, "at_step")
    src = one(db, FORK_SOURCE_SQL, ["text", "int8"], [c.tenant_id, at_step])
    if src is None or int(src["conversation_id"]) != conversation:
        raise NotFound(f"step {at_step} is not a step of conversation {conversation} (for this tenant)")
    agent_id = conv["agent_id"]
    if agent is not None:
        a = one(db, "SELECT agent_id FROM pgagent.agent WHERE tenant_id = $1::uuid AND name = $2 AND enabled",
                ["text", "text"], [c.tenant_id, agent])
        if a is None:
            raise NotFound(f"agent {agent!r} does not exist or is disabled (for this tenant)")
        agent_id = a["agent_id"]
    new_title = _note(title, "title") or f"fork of {conv['title'] or 'conversation ' + str(conversation)}"
    meta = {**(conv["metadata"] or {}), "forked_from": {"conversation_id": conversation, "step_id": at_step}}
    new_conv = int(one(db, "INSERT INTO pgagent.conversation (tenant_id, agent_id, title, metadata, user_id, created_by,"
                           " forked_from, forked_at_step) VALUES ($1::uuid, $2, $3, $4, $5, pgagent._outer_user(), $6, $7)"
                           " RETURNING conversation_id", ["text", "int8", "text", "jsonb", "text", "int8", "int8"],
                       [c.tenant_id, agent_id, new_title, meta, conv["user_id"], conversation, at_step]
                       )["conversation_id"])
    turns = db.all("SELECT turn_id, seq, status, user_message, params, answer FROM pgagent.turn "
                   "WHERE tenant_id = $1::uuid AND conversation_id = $2 AND seq <= $3 "
                   "AND (status = 'completed' OR turn_id = $4) ORDER BY seq",
                   ["text", "int8", "int4", "int8"], [c.tenant_id, conversation, src["turn_seq"], src["turn_id"]])
    copied_turns = copied_steps = 0
    open_turn = None
    for n, old in enumerate(turns, start=1):
        last = old["turn_id"] == src["turn_id"]
        upto = src["step_seq"] if last else 2 ** 31 - 1
        steps = db.all(COPY_STEPS_SQL, ["text", "int8", "int4"], [c.tenant_id, old["turn_id"], upto])
        whole = not last or (old["status"] == "completed" and (
            steps[-1]["kind"] == "response" or int(src["step_seq"]) >= _last_seq(db, c, int(old["turn_id"]))))
        done = whole and old["status"] == "completed"
        tid = int(one(db, COPY_TURN_SQL, ["text", "int8", "int4", "text", "jsonb", "text"],
                      [c.tenant_id, new_conv, n, old["user_message"], old["params"],
                       "running" if done else "queued"])["turn_id"])
        t = loop.load(db, c.tenant_id, tid, c.role)
        ids: dict[int, int] = {}
        for st in steps:
            new = loop.add_step(db, t, st["kind"], st["payload"],
                                parent=ids.get(st["parent_step_id"]) if st["parent_step_id"] else None,
                                tool_call_id=st["tool_call_id"], tool_name=st["tool_name"],
                                prompt_tokens=st["prompt_tokens"], completion_tokens=st["completion_tokens"],
                                cost_usd=st["cost_usd"], latency_ms=None if st["latency_ms"] is None
                                else float(st["latency_ms"]))
            ids[int(st["step_id"])] = int(new["step_id"])
            copied_steps += 1
        t = loop.load(db, c.tenant_id, tid, c.role)   # totals from the copied steps
        if done:
            t.answer = old["answer"]
            loop.set_status(db, t, "completed")
        else:
            open_turn = tid   # queued: CALL pgagent.run_turn continues it from the copied steps
        copied_turns += 1
    iid = _intervention(db, c, conversation, None, "fork", {"new_conversation_id": new_conv, "at_step": at_step,
                                                            "agent_id": agent_id})
    audit(db, "conversation_forked", "conversation", conversation,
          {"intervention_id": iid, "new_conversation_id": new_conv, "at_step": at_step, "agent_id": agent_id})
    return {"conversation_id": new_conv, "forked_from": conversation, "at_step": at_step,
            "turns_copied": copied_turns, "steps_copied": copied_steps, "open_turn_id": open_turn}


def _last_seq(db: Db, c: Caller, turn_id: int) -> int:
    return int(one(db, "SELECT pg_catalog.max(seq) AS m FROM pgagent.step WHERE tenant_id = $1::uuid AND turn_id = $2",
                   ["text", "int8"], [c.tenant_id, turn_id])["m"] or 0)


# ---------------------------------------------------------------------------- ratings and flags

def _own_or_operator(db: Db, c: Caller, turn_id: int, what: str) -> dict[str, Any]:
    """The turn row; a caller that is not an operator may only act on the turns it started."""
    row = one(db, "SELECT turn_id, created_by::text AS created_by, conversation_id FROM pgagent.turn "
                  "WHERE tenant_id = $1::uuid AND turn_id = $2", ["text", "int8"], [c.tenant_id, turn_id])
    if row is None:
        raise NotFound(f"turn {turn_id} does not exist (for this tenant)")
    if row["created_by"] != c.role and not c.superuser:
        op = one(db, "SELECT pg_catalog.pg_has_role($1, 'pgagent_operator', 'MEMBER') AS ok", ["name"], [c.role])
        if not op["ok"]:
            raise Forbidden(f'role "{c.role}" may only {what} the turns it started',
                            detail=f"Turn {turn_id} was started by {row['created_by']}.",
                            hint="Operators (pgagent_operator) may act on any turn of the tenant.")
    return row


@api("user")
def rate_turn(db: Db, gd: dict, c: Caller, turn: int, rating: Any = None, comment: str | None = None,
              thumbs_up: Any = None) -> int:
    """Rate a turn: ``rating`` 1..5 and/or ``thumbs_up`` (true/false), with an optional
    comment. One rating per turn and rater: rating again replaces it. Users rate the turns they
    started, operators any. Returns the rating_id. Audited (turn_rated). Raises 22023 (neither
    given, rating outside 1..5), 42704, 42501."""
    ident(turn, "turn")
    check(rating is not None or thumbs_up is not None, "give a rating (1..5) or thumbs_up (true/false)")
    if rating is not None:
        check(isinstance(rating, int) and not isinstance(rating, bool) and 1 <= rating <= 5,
              f"rating must be an integer from 1 to 5, not {rating!r}")
    check(thumbs_up is None or isinstance(thumbs_up, bool), "thumbs_up must be true or false")
    note = _note(comment, "comment")
    _own_or_operator(db, c, turn, "rate")
    rid = int(one(db, """
        INSERT INTO pgagent.rating (tenant_id, turn_id, rated_by, rating, thumbs_up, comment)
        VALUES ($1::uuid, $2, pgagent._outer_user(), $3, $4, $5)
        ON CONFLICT (turn_id, rated_by, tenant_id) DO UPDATE
           SET rating = EXCLUDED.rating, thumbs_up = EXCLUDED.thumbs_up, comment = EXCLUDED.comment,
               updated_at = pg_catalog.clock_timestamp()
        RETURNING rating_id""", ["text", "int8", "int2", "bool", "text"],
                  [c.tenant_id, turn, rating, thumbs_up, note])["rating_id"])
    audit(db, "turn_rated", "turn", turn, {"rating_id": rid, "rating": rating, "thumbs_up": thumbs_up})
    return rid


@api("user")
def flag_issue(db: Db, gd: dict, c: Caller, turn: int | None = None, step: int | None = None,
               category: str = "other", note: str | None = None) -> int:
    """Flag a problem with a turn or one of its steps (``step``; the turn is then implied):
    ``category`` like wrong_answer, unsafe, tool_misuse, slow (^[a-z][a-z0-9_]{0,62}$), with
    a note. The flag is open until pgagent.resolve_issue; pgagent.flagged_issues lists them.
    Users flag the turns they started, operators any. Returns the flag_id. Audited
    (issue_flagged). Raises 22023, 42704, 42501."""
    import re
    check(turn is not None or step is not None, "give a turn or a step to flag")
    check(isinstance(category, str) and re.match(CATEGORY_RE, category) is not None,
          f"category {category!r} is not valid", f"A category matches {CATEGORY_RE}, e.g. wrong_answer.")
    text = _note(note, "note")
    if step is not None:
        ident(step, "step")
        row = one(db, "SELECT turn_id FROM pgagent.step WHERE tenant_id = $1::uuid AND step_id = $2",
                  ["text", "int8"], [c.tenant_id, step])
        if row is None:
            raise NotFound(f"step {step} does not exist (for this tenant)")
        if turn is not None and int(row["turn_id"]) != turn:
            raise InvalidArgument(f"step {step} is not a step of turn {turn}")
        turn = int(row["turn_id"])
    ident(turn, "turn")
    _own_or_operator(db, c, turn, "flag")
    fid = int(one(db, "INSERT INTO pgagent.flag (tenant_id, turn_id, step_id, category, note, created_by) "
                      "VALUES ($1::uuid, $2, $3, $4, $5, pgagent._outer_user()) RETURNING flag_id",
                  ["text", "int8", "int8", "text", "text"], [c.tenant_id, turn, step, category, text])["flag_id"])
    audit(db, "issue_flagged", "turn", turn, {"flag_id": fid, "step_id": step, "category": category})
    return fid


@api("operator")
def resolve_issue(db: Db, gd: dict, c: Caller, flag: int, resolution: str | None = None) -> bool:
    """Mark an open flag resolved (who, when, how). Returns true (false if it was already
    resolved). Audited (issue_resolved). Raises 22023, 42704."""
    ident(flag, "flag")
    text = _note(resolution, "resolution")
    row = one(db, "SELECT status FROM pgagent.flag WHERE tenant_id = $1::uuid AND flag_id = $2",
              ["text", "int8"], [c.tenant_id, flag])
    if row is None:
        raise NotFound(f"flag {flag} does not exist (for this tenant)")
    if row["status"] == "resolved":
        return False
    db.all("UPDATE pgagent.flag SET status = 'resolved', resolved_by = pgagent._outer_user(), "
           "resolved_at = pg_catalog.clock_timestamp(), resolution = $3 WHERE tenant_id = $1::uuid AND flag_id = $2",
           ["text", "int8", "text"], [c.tenant_id, flag, text])
    audit(db, "issue_resolved", "flag", flag, {"resolution": text})
    return True
