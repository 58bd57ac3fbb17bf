"""Policy hooks (pgagent.add_hook): SQL functions the loop calls before an LLM call, before a
tool call and after a response, which allow, deny or rewrite what is about to happen.

A hook is a function ``(payload jsonb) RETURNS jsonb``. It receives
``{event, turn_id, conversation_id, agent, user, ...}`` plus, per event:

- ``before_llm_call``: ``messages`` (OpenAI chat format), ``params``, ``tools`` (names);
- ``before_tool_call``: ``tool``, ``tool_call_id``, ``arguments``;
- ``after_response``: ``content`` (the answer about to be recorded).

and returns SQL NULL or ``{"action": "allow"}``, ``{"action": "deny", "reason": "..."}`` or
``{"action": "rewrite", "payload": {...}, "reason": "..."}`` whose event keys (messages/params, arguments,
content) replace the ones it received; other keys are ignored. Hooks run in order (priority,
then hook_id); each sees the previous one's rewrite, and the first deny ends the chain.

A hook runs like a function tool: as its ``run_as`` role (default pgagent_sandbox, never the
extension owner) through ``pgagent._runner``, in a subtransaction that is always rolled back
(hooks decide, they do not write) with a deadline of the agent's ``hook_timeout_ms`` (default
2000 ms). Hooks fail closed: a hook that raises, times out, no longer exists or returns
anything else is a deny naming the problem. The loop (``loop.run_hooks``) records each deny and
rewrite as a ``guardrail`` step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import providers
from .db import Db, one
from .errors import InvalidArgument, NotFound
from .registry import Caller, api, audit, check, ident
from .tools import ToolFailure
from .tools._spi import guarded
from .tools.function import DEFAULT_RUN_AS, check_run_as

EVENTS = ("before_llm_call", "before_tool_call", "after_response")
#: The payload keys a rewrite may replace, per event.
REWRITABLE = {"before_llm_call": ("messages", "params"), "before_tool_call": ("arguments",),
              "after_response": ("content",)}
DEFAULT_TIMEOUT_MS = 2000
ROLES = ("system", "user", "assistant", "tool")

FN_SQL = """
SELECT pg_catalog.format('%I.%I', n.nspname, p.proname) AS name, p.oid::regprocedure::text AS signature,
       p.prokind, p.pronargs, p.proretset, p.proargtypes[0] = 'jsonb'::regtype AS jsonb_arg,
       p.prorettype = 'jsonb'::regtype AS jsonb_ret
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE p.oid = $1"""


@dataclass
class Verdict:
    """What the hooks decided: ``action`` allow | deny | rewrite; ``payload`` the (possibly
    rewritten) payload; ``reason`` (deny); ``hook`` the deciding hook's function (the deny's,
    or the rewriting ones', comma-separated)."""

    action: str
    payload: dict[str, Any]
    reason: str | None = None
    hook: str | None = None
    rewritten_by: list[str] = field(default_factory=list)


def _check_rewrite(event: str, payload: Any, provider: str) -> dict[str, Any]:
    """The event keys of a rewrite's payload, checked; raises ValueError."""
    if not isinstance(payload, dict):
        raise ValueError("a rewrite needs payload: a JSON object")
    out = {k: payload[k] for k in REWRITABLE[event] if k in payload}
    if not out:
        raise ValueError(f"a rewrite of {event} must set {' or '.join(REWRITABLE[event])}")
    if "messages" in out:
        msgs = out["messages"]
        if not (isinstance(msgs, list) and msgs and all(isinstance(m, dict) and m.get("role") in ROLES for m in msgs)):
            raise ValueError("messages must be a non-empty array of {role: system|user|assistant|tool, content}")
    if "params" in out:
        if not isinstance(out["params"], dict):
            raise ValueError("params must be a JSON object")
        providers.check_params(provider, out["params"])
    if "arguments" in out and not isinstance(out["arguments"], dict):
        raise ValueError("arguments must be a JSON object")
    if "content" in out and not isinstance(out["content"], str):
        raise ValueError("content must be a string")
    return out


def _call(db: Db, gd: dict, hook: dict[str, Any], payload: dict[str, Any], timeout_ms: int) -> Any:
    """One hook's result (JSON). Raises ToolFailure for anything that is not a result."""
    key = ("pgagent_hook_fn", int(hook["fn_oid"]))
    fn = gd.get(key)
    if fn is None:
        fn = one(db, FN_SQL, ["oid"], [int(hook["fn_oid"])])
        if fn is None:
            raise ToolFailure("its function no longer exists")
        gd[key] = fn
    try:
        runner = one(db, "SELECT pgagent._runner($1) AS fn", ["name"], [hook["run_as"]])["fn"]
    except Exception as e:
        raise ToolFailure(f"cannot run as role {hook['run_as']!r}: {getattr(e, 'args', [e])[0]}") from None

    def body() -> Any:
        return db.all(f"SELECT {runner}($1, $2) AS result", ["text", "jsonb"],
                      [f"SELECT {fn['name']}($1)", payload])[0]["result"]

    return guarded(db, timeout_ms, body, rollback=True)


def run(db: Db, gd: dict, turn: Any, event: str, payload: dict[str, Any]) -> Verdict:
    """Run the turn's enabled hooks for ``event`` (turn.cfg["hooks"], in priority order) on
    ``payload`` and return the :class:`Verdict`. Never raises for a hook's fault: that is a deny
    (fail closed)."""
    timeout_ms = int(turn.settings.get("hook_timeout_ms") or DEFAULT_TIMEOUT_MS)
    current = {**payload, "conversation_id": int(turn.cfg["conversation_id"]), "user": turn.cfg["created_by"]}
    rewriters: list[str] = []
    reasons: list[str] = []
    for h in turn.cfg.get("hooks") or ():
        if h["event"] != event:
            continue
        name = h["fn"]
        try:
            out = _call(db, gd, h, current, timeout_ms)
        except ToolFailure as e:
            return Verdict("deny", current, f"the hook failed: {e}", name, rewriters)
        action = out.get("action") if isinstance(out, dict) else ("allow" if out is None else None)
        if action == "allow":
            continue
        if action == "deny":
            reason = out.get("reason")
            return Verdict("deny", current, reason if isinstance(reason, str) and reason else "no reason given",
                           name, rewriters)
        if action == "rewrite":
            try:
                current = {**current, **_check_rewrite(event, out.get("payload"), turn.cfg["model"]["provider"])}
            except ValueError as e:
                return Verdict("deny", current, f"the hook returned an invalid rewrite: {e}", name, rewriters)
            rewriters.append(name)
            if isinstance(out.get("reason"), str) and out["reason"]:
                reasons.append(out["reason"])
            continue
        return Verdict("deny", current, "the hook returned neither NULL nor {action: allow | deny | rewrite}",
                       name, rewriters)
    if rewriters:
        return Verdict("rewrite", current, "; ".join(reasons) or None, ", ".join(rewriters), rewriters)
    return Verdict("allow", current)


# ---------------------------------------------------------------------------- the admin API

@api("admin")
def add_hook(db: Db, gd: dict, c: Caller, event: Any = None, function: Any = None, agent: Any = None,
             run_as: Any = DEFAULT_RUN_AS, priority: Any = 100) -> int:
    """pgagent.add_hook: call ``function`` (an oid: a function ``(jsonb) RETURNS jsonb``) at
    ``event`` (before_llm_call | before_tool_call | after_response) of the turns of ``agent``
    (a name; NULL: every agent of the tenant), as role ``run_as``, in ``priority`` order (lower
    first). Returns hook_id. Audited (hook_added). Raises InvalidArgument (22023), NotFound
    (42704: agent, role), Forbidden (42501: run_as is a superuser, BYPASSRLS, not the caller's to
    lend, or may not execute the function)."""
    check(event in EVENTS, f"event must be one of {', '.join(EVENTS)}, not {event!r}")
    check(isinstance(function, int) and not isinstance(function, bool) and function > 0,
          "function must be a function (regprocedure), e.g. 'myschema.my_hook(jsonb)'")
    fn = one(db, FN_SQL, ["oid"], [function])
    if fn is None:
        raise NotFound(f"function {function} does not exist")
    check(fn["prokind"] == "f" and fn["pronargs"] == 1 and fn["jsonb_arg"] and fn["jsonb_ret"] and not fn["proretset"],
          f"{fn['signature']} is not a hook: a hook is a plain function (payload jsonb) RETURNS jsonb",
          "CREATE FUNCTION my_hook(payload jsonb) RETURNS jsonb ...; see docs/guardrails.md.")
    check(isinstance(run_as, str) and run_as != "", "run_as must be a role name")
    check(isinstance(priority, int) and not isinstance(priority, bool) and -1000000 <= priority <= 1000000,
          f"priority must be an integer from -1000000 to 1000000, not {priority!r}")
    agent_id = None
    if agent is not None:
        check(isinstance(agent, str), "agent must be an agent's name")
        r = one(db, "SELECT agent_id FROM pgagent.agent WHERE tenant_id = $1::uuid AND name = $2",
                ["text", "text"], [c.tenant_id, agent])
        if r is None:
            raise NotFound(f"agent {agent!r} does not exist (for this tenant)")
        agent_id = int(r["agent_id"])
    check_run_as(db, c.role, c.superuser, run_as, fn["signature"], "run_as")
    r = one(db, """INSERT INTO pgagent.hook (tenant_id, event, fn, agent_id, run_as, priority, created_by)
                   VALUES ($1::uuid, $2, $3::oid::regprocedure, $4, $5, $6, $7) RETURNING hook_id""",
            ["text", "text", "oid", "int8", "name", "int4", "name"],
            [c.tenant_id, event, function, agent_id, run_as, priority, c.role])
    audit(db, "hook_added", "hook", r["hook_id"], {"event": event, "function": fn["signature"], "agent": agent,
                                                   "run_as": run_as, "priority": priority})
    return int(r["hook_id"])


@api("admin")
def delete_hook(db: Db, gd: dict, c: Caller, hook: Any = None) -> bool:
    """pgagent.delete_hook: remove a policy hook. Returns true. Audited (hook_deleted). Raises
    InvalidArgument (22023), NotFound (42704)."""
    ident(hook, "hook")
    r = one(db, """DELETE FROM pgagent.hook WHERE tenant_id = $1::uuid AND hook_id = $2
                   RETURNING event, fn::text AS fn, agent_id, run_as""", ["text", "int8"], [c.tenant_id, hook])
    if r is None:
        raise NotFound(f"hook {hook} does not exist (for this tenant)")
    audit(db, "hook_deleted", "hook", hook, dict(r))
    return True


__all__ = ["EVENTS", "Verdict", "run", "add_hook", "delete_hook", "InvalidArgument"]
