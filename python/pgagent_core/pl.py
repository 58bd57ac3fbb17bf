"""Entry points for the PL/Python function bodies in pgagent's SQL (each body is one call).

Every function takes ``plpy`` and ``GD`` first; pgagent errors are raised with their SQLSTATE
through ``plpy.error`` (see :mod:`pgagent_core.errors`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

from . import loop, providers, secrets, tools, validation
from .db import Db, PlpyDb, one
from .errors import Forbidden, InvalidArgument, InvalidState, NotFound, PgAgentError, ProviderFailed


def _audit(db: Db, action: str, object_type: str, object_id: Any, payload: dict[str, Any] | None = None) -> None:
    """Append an event to the tenant's hash-chained audit log (pgagent.audit_event)."""
    db.all("SELECT pgagent._audit($1, $2, $3, $4)", ["text", "text", "text", "jsonb"],
           [action, object_type, None if object_id is None else str(object_id), payload or {}])


LLM_MODEL_SQL = """
SELECT pg_catalog.to_jsonb(m) AS model, pgagent._may_act(m.tenant_id) AS ok,
       coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = pgagent._outer_user()), false) AS su
  FROM pgagent.model m WHERE m.model_id = $1"""
LLM_KEY_SQL = """
SELECT pgagent._secret_decrypt(s.ciphertext) AS v FROM pgagent.secret s
 WHERE s.tenant_id = $1::uuid AND s.name = $2"""


def llm_call(plpy: Any, gd: dict, model_id: int, request: str) -> str:
    """Body of the SECURITY DEFINER ``pgagent._llm_call``: one provider call for a model that has
    a secret_name, made here so that the decrypted key never reaches the caller.

    Checks that the session's outer role may act for the model's tenant (42501 otherwise), takes
    the key from pgagent.secret (for superusers also the server environment or the setting
    ``pgagent.secret.<name>``; never for tenant roles, who could otherwise aim any environment
    variable at a server of their own), calls the provider and returns, as JSON text,
    ``{"reply": <Reply fields>}`` (a request with ``input`` instead of ``messages`` is an
    embeddings request: ``{"embeddings": [[...]], "prompt_tokens", "latency_ms"}``) or
    ``{"error": {message, kind, status, retryable, retry_after_s}}``, with every occurrence of
    the key replaced by [REDACTED]."""
    def go() -> str:
        db = PlpyDb(plpy, gd, atomic=True)
        row = one(db, LLM_MODEL_SQL, ["int8"], [model_id])
        if row is None or not row["ok"]:
            raise Forbidden(f"role may not use model {model_id}")
        model, name = row["model"], row["model"]["secret_name"]
        req = json.loads(request)
        key = None
        try:
            found = one(db, LLM_KEY_SQL, ["text", "text"], [model["tenant_id"], name])
            key = found["v"] if found else None
        except Exception as e:  # no key-encryption key, or a ciphertext it cannot open
            return _jsonb({"error": {"message": f"cannot decrypt secret {name!r}: {getattr(e, 'message', e)}",
                                     "kind": "config", "status": None, "retryable": False}})
        if key is None and row["su"]:
            try:
                key = secrets.resolve(db, name)
            except KeyError:
                key = None
        if key is None:
            return _jsonb({"error": {"message": f"secret {name!r} for model {model['name']!r} is not set "
                                                f"(pgagent.set_secret)", "kind": "config", "status": None,
                                     "retryable": False}})
        try:
            if "input" in req:  # an embeddings request (pgagent.embed)
                vectors, tokens, latency = providers.embed(loop.http_session(gd), model, req["input"],
                                                           req.get("params") or {}, key, check=loop.interrupt_check(db))
                return _jsonb({"embeddings": vectors, "prompt_tokens": tokens, "latency_ms": latency})
            reply = providers.chat(loop.http_session(gd), model, req["messages"], req.get("tools") or [],
                                   req.get("params") or {}, key, req.get("response_format"),
                                   check=loop.interrupt_check(db))
        except providers.ProviderError as e:
            return _jsonb(secrets.redact({"error": {"message": e.message, "kind": e.kind, "status": e.status,
                                                    "retryable": e.retryable, "retry_after_s": e.retry_after_s}},
                                         [key]))
        return _jsonb(secrets.redact({"reply": dataclasses.asdict(reply)}, [key]))
    return _guard(plpy, go)


def _guard(plpy: Any, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except PgAgentError as e:
        if e.hint:
            plpy.error(e.message, hint=e.hint, sqlstate=e.sqlstate)
        plpy.error(e.message, sqlstate=e.sqlstate)
    except loop.Interrupted as e:
        plpy.error(f"pgagent: interrupted during an LLM call: {e}", sqlstate="57014",
                   hint="The turn keeps its committed steps: CALL pgagent.run_turn to resume it or "
                        "pgagent.cancel_turn to end it.")


def _jsonb(value: Any) -> str:
    return json.dumps(value, default=str)


# ---------------------------------------------------------------------------- registration

def register_tool(plpy: Any, gd: dict, name: str, description: str, parameters: str | None, kind: str,
                  config: str | None, requires_approval: bool, timeout_ms: int) -> int:
    """Validate and upsert a tool (by name, for the current tenant); returns tool_id.
    Raises 22023 for an unknown kind, a bad config or a parameters value that is not a JSON
    Schema of an object."""
    def go() -> int:
        params = json.loads(parameters) if parameters else {"type": "object", "properties": {}}
        cfg = json.loads(config) if config else {}
        if kind not in tools.KINDS:
            raise InvalidArgument(f"unknown tool kind {kind!r}; supported: {', '.join(sorted(tools.KINDS))}")
        if not isinstance(cfg, dict):
            raise InvalidArgument("config must be a JSON object")
        try:
            validation.check_schema(params)
            tools.kind_module(kind).check_config(cfg)
        except ValueError as e:
            raise InvalidArgument(f"tool {name!r}: {e}") from None
        db = PlpyDb(plpy, gd, atomic=True)
        row = one(db, """
            INSERT INTO pgagent.tool AS t (tenant_id, name, description, parameters, kind, config,
                                          requires_approval, timeout_ms)
            VALUES (pgagent.current_tenant(), $1, $2, $3, $4, $5, $6, $7)
            ON CONFLICT (tenant_id, name) DO UPDATE
               SET description = excluded.description, parameters = excluded.parameters, kind = excluded.kind,
                   config = excluded.config, requires_approval = excluded.requires_approval,
                   timeout_ms = excluded.timeout_ms, updated_at = now()
            RETURNING tool_id""", ["text", "text", "jsonb", "text", "jsonb", "bool", "int4"],
            [name, description, params, kind, cfg, requires_approval, timeout_ms])
        _audit(db, "tool_registered", "tool", row["tool_id"],
               {"name": name, "kind": kind, "config": cfg, "requires_approval": requires_approval})
        return row["tool_id"]
    return _guard(plpy, go)


# ---------------------------------------------------------------------------- conversation

def _new_turn(db: Db, conversation: int, content: str, params: dict[str, Any], status: str) -> int:
    conv = one(db, """
        SELECT c.tenant_id::text AS tenant_id,
               pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(c.tenant_id::text || '/conv/' || $1::text, 0)) AS locked
          FROM pgagent.conversation c
         WHERE c.tenant_id = pgagent.current_tenant() AND c.conversation_id = $1""", ["int8"], [conversation])
    if conv is None:
        raise NotFound(f"conversation {conversation} does not exist (for this tenant)")
    busy = one(db, """SELECT turn_id, status FROM pgagent.turn WHERE tenant_id = $1::uuid AND conversation_id = $2
                       AND status IN ('queued', 'running', 'awaiting_approval') ORDER BY seq LIMIT 1""",
               ["text", "int8"], [conv["tenant_id"], conversation])
    if busy is not None:
        raise InvalidState(f"conversation {conversation} has turn {busy['turn_id']} still {busy['status']}",
                           hint="Approve or reject its pending tool calls (pgagent.approve_step), run it "
                                "(CALL pgagent.run_turn) or cancel it (pgagent.cancel_turn) first.")
    turn = one(db, """
        INSERT INTO pgagent.turn (tenant_id, conversation_id, seq, status, user_message, params,
                                  created_at, started_at)
        SELECT $1::uuid, $2, coalesce(max(t.seq), 0) + 1, $3, $4, $5, n.ts, CASE WHEN $3 = 'running' THEN n.ts END
          FROM (SELECT pg_catalog.clock_timestamp() AS ts) n
          LEFT JOIN pgagent.turn t ON t.tenant_id = $1::uuid AND t.conversation_id = $2
         GROUP BY n.ts
        RETURNING turn_id""", ["text", "int8", "text", "text", "jsonb"],
        [conv["tenant_id"], conversation, status, content, params])
    db.all(loop.INSERT_STEP_SQL, loop.INSERT_STEP_TYPES,
           [conv["tenant_id"], turn["turn_id"], 1, "user_message", {"content": content}, None, None, None,
            None, None, None, None])
    return int(turn["turn_id"])


def _params(params: str | None) -> dict[str, Any]:
    value = json.loads(params) if params else {}
    if not isinstance(value, dict):
        raise InvalidArgument("params must be a JSON object")
    return value


def _content(content: str | None) -> str:
    if content is None or not content.strip():
        raise InvalidArgument("content must be a non-empty message")
    return content


def send_message(plpy: Any, gd: dict, conversation: int, content: str, params: str | None) -> str:
    """Record the user message and run the whole turn in the caller's transaction. Returns the
    loop summary as JSON text (see :func:`pgagent_core.loop.summary`). Raises 22023, 42704, 55000."""
    def go() -> str:
        db = PlpyDb(plpy, gd, atomic=True)
        turn_id = _new_turn(db, conversation, _content(content), _params(params), "running")
        turn = loop.load(db, turn_id)
        loop.lock_turn(db, turn.tenant_id, turn_id)
        return _jsonb(loop.drive(db, gd, turn))
    return _guard(plpy, go)


def enqueue_message(plpy: Any, gd: dict, conversation: int, content: str, params: str | None) -> int:
    """Record the user message as a queued turn (run later with CALL pgagent.run_turn); returns turn_id."""
    return _guard(plpy, lambda: _new_turn(PlpyDb(plpy, gd, atomic=True), conversation, _content(content),
                                          _params(params), "queued"))


def run_turn(plpy: Any, gd: dict, turn_id: int) -> str:
    """Run or resume a turn, committing after every step (procedure context)."""
    return _guard(plpy, lambda: _jsonb(loop.run_turn(PlpyDb(plpy, gd, atomic=False), gd, turn_id)))


def _locked_call(db: Db, step: int) -> tuple[loop.Turn, dict[str, Any]]:
    row = one(db, """SELECT s.tenant_id::text AS tenant_id, s.turn_id, s.kind FROM pgagent.step s
                      WHERE s.tenant_id = pgagent.current_tenant() AND s.step_id = $1""", ["int8"], [step])
    if row is None:
        raise NotFound(f"step {step} does not exist (for this tenant)")
    if row["kind"] != "tool_call":
        raise InvalidArgument(f"step {step} is a {row['kind']} step, not a tool_call")
    loop.lock_turn(db, row["tenant_id"], int(row["turn_id"]))
    turn = loop.load(db, int(row["turn_id"]))
    call = next(s for s in turn.steps if s["step_id"] == step)
    return turn, call


def approve_step(plpy: Any, gd: dict, step: int, approved: bool, note: str | None) -> str:
    """Record a human decision on a tool call that awaits approval. A rejection also records
    the tool_result that tells the model. Raises 22023, 42704, 55000 (already decided, not
    awaiting approval)."""
    def go() -> str:
        if approved is None:
            raise InvalidArgument("approved must be true or false")
        db = PlpyDb(plpy, gd, atomic=True)
        turn, call = _locked_call(db, step)
        if not call["payload"].get("requires_approval"):
            raise InvalidState(f"tool call {step} does not require approval")
        if loop.decision(turn, step) is not None:
            raise InvalidState(f"tool call {step} was already decided")
        if turn.status != "awaiting_approval":
            raise InvalidState(f"turn {turn.turn_id} is {turn.status}, not awaiting_approval")
        who = one(db, "SELECT current_user::text AS u, pg_catalog.clock_timestamp()::text AS at", [], [])
        d = loop.add_step(db, turn, "approval", {"approved": approved, "note": note, "decided_by": who["u"],
                                                 "decided_at": who["at"]}, parent=step)
        _audit(db, "approval_decided", "step", step, {"approved": approved, "note": note, "turn_id": turn.turn_id,
                                                       "tool": call["tool_name"], "approval_step_id": d["step_id"]})
        if not approved:
            loop.reject_result(db, turn, call, d)
        return _jsonb({"approval_step_id": d["step_id"], "tool_call_step_id": step, "approved": approved,
                       "turn_id": turn.turn_id, "turn_status": turn.status,
                       "pending": [c["step_id"] for c in loop.pending_calls(turn)
                                   if loop.decision(turn, c["step_id"]) is None]})
    return _guard(plpy, go)


def process_tool_call(plpy: Any, gd: dict, step: int, resume: bool) -> str:
    """Run an approved (or approval-free) tool call and, with ``resume``, continue the turn in
    the caller's transaction. A rejected call (already answered) just resumes. Returns the loop
    summary. Raises 22023, 42704, 55000 (not yet approved; turn finished)."""

    def go() -> str:
        db = PlpyDb(plpy, gd, atomic=True)
        turn, call = _locked_call(db, step)
        if turn.status in loop.TERMINAL:
            raise InvalidState(f"turn {turn.turn_id} is already {turn.status}")
        if call in loop.pending_calls(turn):
            d = loop.decision(turn, step)
            if call["payload"].get("requires_approval") and d is None:
                raise InvalidState(f"tool call {step} awaits approval", hint="Call pgagent.approve_step first.")
            if d is not None and not d["payload"]["approved"]:
                loop.reject_result(db, turn, call, d)
            else:
                loop.execute_call(db, gd, turn, call)
        if not resume:
            return _jsonb(loop.summary(turn))
        return _jsonb(loop.drive(db, gd, turn))
    return _guard(plpy, go)


def cancel_turn(plpy: Any, gd: dict, turn_id: int, reason: str | None) -> str:
    """Cancel a queued, running (not currently executing) or awaiting_approval turn."""
    def go() -> str:
        db = PlpyDb(plpy, gd, atomic=True)
        row = one(db, "SELECT tenant_id::text AS tenant_id FROM pgagent.turn WHERE tenant_id = "
                      "pgagent.current_tenant() AND turn_id = $1", ["int8"], [turn_id])
        if row is None:
            raise NotFound(f"turn {turn_id} does not exist (for this tenant)")
        loop.lock_turn(db, row["tenant_id"], turn_id)
        turn = loop.load(db, turn_id)
        if turn.status in loop.TERMINAL:
            raise InvalidState(f"turn {turn_id} is already {turn.status}")
        who = one(db, "SELECT current_user::text AS u", [], [])
        loop.add_step(db, turn, "error", {"message": f"cancelled by {who['u']}" + (f": {reason}" if reason else ""),
                                          "error_kind": "cancelled", "cancelled_by": who["u"]})
        turn.error = reason or "cancelled"
        loop.set_status(db, turn, "cancelled")
        _audit(db, "turn_cancelled", "turn", turn_id, {"reason": reason})
        return _jsonb(loop.summary(turn))
    return _guard(plpy, go)



EMBED_MODEL_SQL = """
SELECT pg_catalog.to_jsonb(m) AS model FROM pgagent.model m
 WHERE m.tenant_id = pgagent.current_tenant() AND m.kind = 'embedding'
   AND (m.name = $1 OR ($1 IS NULL AND m.is_default))"""


def embed(plpy: Any, gd: dict, inputs: list[str], model: str | None, params: str | None) -> list[str]:
    """Embed each text with the named (or the tenant's default) embedding model; returns one
    pgvector literal (``"[0.1,...]"``) per input. Keyed models go through pgagent._llm_call so the
    key never reaches the caller. Raises 22023 (empty input, bad params), 42704 (no such
    embedding model), 58000 (the provider failed: the message says how)."""
    def go() -> list[str]:
        if not inputs or any(not isinstance(t, str) or not t for t in inputs):
            raise InvalidArgument("input must be one or more non-empty texts")
        db = PlpyDb(plpy, gd, atomic=True)
        row = one(db, EMBED_MODEL_SQL, ["text"], [model])
        if row is None:
            raise NotFound(f"no embedding model {model!r}" if model else "the tenant has no default embedding model",
                           hint="pgagent.register_model(..., kind => 'embedding', is_default => true)")
        m, extra = row["model"], _params(params)
        body = {**m["params"], **extra}
        try:
            if m.get("secret_name"):
                vectors = loop.via_llm_call(db, m["model_id"], {"input": inputs, "params": body})["embeddings"]
            else:
                vectors, _, _ = providers.embed(loop.http_session(gd), m, inputs, body, None,
                                                check=loop.interrupt_check(db))
        except providers.ProviderError as e:
            raise ProviderFailed(f"embedding with {m['name']!r} failed: {e.message}") from None
        return ["[" + ",".join(repr(x) for x in v) + "]" for v in vectors]
    return _guard(plpy, go)
