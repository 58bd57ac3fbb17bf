"""Agents that call agents: the ``agent`` tool kind (a child turn of another agent of the same
tenant answers the call) and the ``handoff`` tool kind (the conversation moves to another agent).

A child turn is an ordinary turn in a conversation of its own, linked to the call that started
it (``pgagent.turn.parent_turn_id``, ``parent_step_id``, ``depth``), created by the same role
as its parent (so budgets, approvals and the four-eyes rule apply to it unchanged). The loop
(:func:`pgagent_core.loop.agent_unit`) advances it one unit at a time inside the parent's own
units: under ``send_message`` all in the caller's transaction, under ``CALL run_turn`` one
committed unit at a time, so a crash in the child resumes where it stopped. Workers never claim
a child turn on its own: whoever runs the root turn runs its children.

This module holds the SQL: finding, creating and summarising child turns, the ancestor chain for
cycle detection, and handoff's agent switch. It raises :class:`Refused` (a message for the
model, recorded as the call's error result) for a call that must not run.
"""

from __future__ import annotations

from typing import Any

from .db import Db, one
from .limits import clean_text

#: Default and largest ``max_depth`` of an agent tool: how deep a chain of agent calls may go
#: (the root turn has depth 0; its children depth 1, ...).
DEFAULT_MAX_DEPTH = 3
MAX_DEPTH_LIMIT = 10


class Refused(Exception):
    """An agent call or handoff that must not run (unknown or disabled agent, depth limit,
    cycle); the message is shown to the model as the call's error result."""


CHILD_SQL = """
SELECT turn_id, status, answer, error, llm_calls, prompt_tokens, completion_tokens, cost_usd::float8 AS cost_usd
  FROM pgagent.turn WHERE tenant_id = $1::uuid AND parent_turn_id = $2 AND parent_step_id = $3"""

# the turn and its ancestors, root first: (turn_id, agent_id, agent name)
CHAIN_SQL = """
WITH RECURSIVE up AS (
  SELECT t.turn_id, t.parent_turn_id, c.agent_id, 0 AS n
    FROM pgagent.turn t JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
   WHERE t.tenant_id = $1::uuid AND t.turn_id = $2
  UNION ALL
  SELECT p.turn_id, p.parent_turn_id, c.agent_id, up.n + 1
    FROM up JOIN pgagent.turn p ON p.tenant_id = $1::uuid AND p.turn_id = up.parent_turn_id
    JOIN pgagent.conversation c ON c.tenant_id = p.tenant_id AND c.conversation_id = p.conversation_id
   WHERE up.n < 64)
SELECT up.turn_id, up.agent_id, a.name AS agent
  FROM up JOIN pgagent.agent a ON a.tenant_id = $1::uuid AND a.agent_id = up.agent_id
 ORDER BY up.n DESC"""

# the subtree below a turn, with each turn's own usage (turn_tree sums it)
SUBTREE_USAGE_SQL = """
WITH RECURSIVE down AS (
  SELECT t.turn_id FROM pgagent.turn t WHERE t.tenant_id = $1::uuid AND t.turn_id = $2
  UNION ALL
  SELECT c.turn_id FROM down JOIN pgagent.turn c ON c.tenant_id = $1::uuid AND c.parent_turn_id = down.turn_id)
SELECT count(*)::int AS turns, coalesce(sum(t.llm_calls), 0)::int AS llm_calls,
       coalesce(sum(t.prompt_tokens), 0)::int8 AS prompt_tokens,
       coalesce(sum(t.completion_tokens), 0)::int8 AS completion_tokens,
       coalesce(sum(t.cost_usd), 0)::float8 AS cost_usd
  FROM down JOIN pgagent.turn t ON t.tenant_id = $1::uuid AND t.turn_id = down.turn_id"""

AGENT_SQL = "SELECT agent_id, name, enabled FROM pgagent.agent WHERE tenant_id = $1::uuid AND name = $2"

NEW_CONVERSATION_SQL = """
INSERT INTO pgagent.conversation (tenant_id, agent_id, title, metadata, user_id, created_by)
SELECT $1::uuid, $2, $3, $4, p.user_id, $5 FROM pgagent.conversation p
 WHERE p.tenant_id = $1::uuid AND p.conversation_id = $6
RETURNING conversation_id"""

NEW_TURN_SQL = """
INSERT INTO pgagent.turn (tenant_id, conversation_id, seq, status, user_message, created_by, parent_turn_id,
                          parent_step_id, depth)
VALUES ($1::uuid, $2, 1, 'queued', $3, $4, $5, $6, $7)
RETURNING turn_id"""


def find_child(db: Db, tenant_id: str, turn_id: int, call_step_id: int) -> dict[str, Any] | None:
    """The child turn started by tool_call step ``call_step_id`` of ``turn_id`` (turn_id, status,
    answer, error, llm_calls, tokens, cost_usd in USD), or None."""
    return one(db, CHILD_SQL, ["text", "int8", "int8"], [tenant_id, turn_id, call_step_id])


def chain(db: Db, tenant_id: str, turn_id: int) -> list[dict[str, Any]]:
    """``turn_id`` and its ancestors, root first: ``[{turn_id, agent_id, agent}]``."""
    return db.all(CHAIN_SQL, ["text", "int8"], [tenant_id, turn_id])


def target(db: Db, tenant_id: str, name: str) -> dict[str, Any]:
    """The agent ``name`` of the tenant (agent_id, name). Raises Refused when there is none
    (an agent of another tenant is not visible by construction) or it is disabled."""
    row = one(db, AGENT_SQL, ["text", "text"], [tenant_id, name])
    if row is None:
        raise Refused(f"agent {name!r} does not exist (for this tenant)")
    if not row["enabled"]:
        raise Refused(f"agent {name!r} is disabled")
    return row


def check_call(db: Db, tenant_id: str, turn_id: int, depth: int, agent: str, max_depth: int) -> dict[str, Any]:
    """Whether turn ``turn_id`` (at ``depth``) may start a child turn of ``agent``: the agent
    exists and is enabled, the child's depth (depth + 1) is at most ``max_depth``, and the agent
    is not already in the chain of turns that led here (a cycle: a -> b -> a, or an agent
    calling itself). Returns the agent row; raises Refused naming the reason."""
    row = target(db, tenant_id, agent)
    if depth + 1 > max_depth:
        raise Refused(f"agent {agent!r} was not called: the chain of agent calls would be {depth + 1} deep, more "
                      f"than max_depth {max_depth}; answer with what you have")
    path = chain(db, tenant_id, turn_id)
    if any(int(p["agent_id"]) == int(row["agent_id"]) for p in path):
        names = " -> ".join([*(p["agent"] for p in path), agent])
        raise Refused(f"agent {agent!r} was not called: it would form a cycle ({names}); answer with what you have")
    return row


def start_child(db: Db, turn: Any, call: dict[str, Any], agent: dict[str, Any], message: str) -> int:
    """Create the child turn that answers tool_call step ``call`` of ``turn`` (a loop.Turn):
    a new conversation of ``agent`` (same user_id and created_by as the parent's; metadata
    names the parent turn and step) with a queued turn whose user message is ``message`` (the
    caller records its user_message step). Returns the child's turn_id."""
    message = clean_text(message) or "(no message)"
    cfg = turn.cfg
    conv = one(db, NEW_CONVERSATION_SQL, ["text", "int8", "text", "jsonb", "name", "int8"],
               [turn.tenant_id, agent["agent_id"], f"{cfg['agent_name']} -> {agent['name']}",
                {"parent_turn_id": turn.turn_id, "parent_step_id": call["step_id"], "tool": call["tool_name"]},
                cfg["created_by"], cfg["conversation_id"]])
    child = one(db, NEW_TURN_SQL, ["text", "int8", "text", "name", "int8", "int8", "int4"],
                [turn.tenant_id, conv["conversation_id"], message, cfg["created_by"], turn.turn_id, call["step_id"],
                 int(cfg.get("depth") or 0) + 1])
    return int(child["turn_id"])


def usage(db: Db, tenant_id: str, turn_id: int) -> dict[str, Any]:
    """The usage of ``turn_id`` and every turn below it: turns, llm_calls, prompt_tokens,
    completion_tokens (tokens) and cost_usd (USD)."""
    return one(db, SUBTREE_USAGE_SQL, ["text", "int8"], [tenant_id, turn_id])


def message_of(args: dict[str, Any]) -> str:
    """The child's user message from an agent call's arguments: ``message`` (or ``input``,
    ``task``, ``question``) when it is a string, else the arguments as JSON text."""
    import json

    for key in ("message", "input", "task", "question", "query"):
        if isinstance(args.get(key), str) and args[key].strip():
            return args[key]
    return json.dumps(args, ensure_ascii=False)


def switch_agent(db: Db, tenant_id: str, conversation_id: int, agent_id: int) -> None:
    """Handoff: the conversation is answered by ``agent_id`` from now on."""
    db.all("UPDATE pgagent.conversation SET agent_id = $3 WHERE tenant_id = $1::uuid AND conversation_id = $2",
           ["text", "int8", "int8"], [tenant_id, conversation_id, agent_id])


def wake_ancestors(db: Db, tenant_id: str, turn_id: int) -> None:
    """Make the ancestors of ``turn_id`` that a worker parked (lease until infinity) claimable
    again and notify the workers: a child's approval was decided, so the root can go on."""
    ids = [int(p["turn_id"]) for p in chain(db, tenant_id, turn_id)]
    if len(ids) < 2:
        return
    db.all("""WITH w AS (UPDATE pgagent.turn SET lease_expires_at = pg_catalog.now()
                          WHERE tenant_id = $1::uuid AND turn_id = ANY($2) AND lease_expires_at = 'infinity'
                         RETURNING tenant_id, turn_id)
              SELECT pg_catalog.pg_notify('pgagent_queue_' || n.events_key, w.turn_id::text)
                FROM w JOIN pgagent.tenant n USING (tenant_id)""", ["text", "int8[]"], [tenant_id, ids[:-1]])
