"""Budgets and quotas (pgagent.set_budget), enforced before every LLM call.

A budget limits USD, tokens (prompt + completion) and/or turns per UTC day or month, for a
whole tenant, one agent, or the turns one role started (the turn's ``created_by``). Every
budget that applies to a turn must have room for its next LLM call.

How concurrent turns cannot overspend: :func:`reserve` runs before the HTTP request, in its own
committed unit under ``CALL run_turn`` (in the caller's transaction under send_message). It
locks the period's ``pgagent.budget_usage`` row of each applicable budget (``SELECT ... FOR
UPDATE``, in budget_id order so two turns never deadlock), then checks ``spent + held +
estimate <= max`` and records the estimate as a ``pgagent.budget_hold`` of the turn. A second
turn reserving against the same budget waits for that row lock, then sees the first turn's hold:
the total of what is spent and in flight never passes the limit. :func:`settle` (in the
transaction that records the llm_call step) replaces the hold by the real usage;
:func:`release` drops it when the attempt failed or the turn stopped. Holds of turns that are no
longer running (a crashed worker's) are deleted by the next reservation.

The estimate is conservative by design: prompt tokens = ceil(UTF-8 bytes of the messages and
tool specs / 3) (English text is about 4 characters per token in OpenAI's tokenizers, see
https://platform.openai.com/tokenizer; 3 leaves room for code and JSON), completion tokens = the
request's ``max_tokens`` / ``max_completion_tokens``, else the agent's
``budget_completion_tokens`` (default 1024). A reply longer than that cap is the only way to
pass a token or USD limit, by at most that call's excess.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .db import Db, one
from .errors import NotFound, PgAgentError
from .registry import Caller, api, audit, check, ident

#: SQLSTATE of an exhausted budget (class 53, "insufficient resources": configuration_limit_exceeded).
BUDGET_SQLSTATE = "53400"
#: Completion tokens reserved when the request sets no max_tokens (agent config budget_completion_tokens).
DEFAULT_COMPLETION_TOKENS = 1024
#: UTF-8 bytes per estimated prompt token (see the module docstring).
BYTES_PER_TOKEN = 3

SCOPES = ("tenant", "agent", "role")
PERIODS = ("day", "month")
LABEL = {"day": "daily", "month": "monthly"}


class BudgetExceeded(PgAgentError):
    """A budget that applies to the turn has no room for the next LLM call (SQLSTATE 53400)."""

    sqlstate = BUDGET_SQLSTATE

    def __init__(self, message: str, facts: dict[str, Any]) -> None:
        super().__init__(message, detail=json.dumps(facts),
                         hint="An admin can raise the limit with pgagent.set_budget; see pgagent.budget_status.")
        #: {budget_id, scope, period, period_start, limit, max, spent, in_flight, estimate}
        self.facts = facts


# The budgets that apply to a turn ($1 tenant, $2 agent_id, $3 the turn's created_by) with the
# start of their current UTC period.
_APPLICABLE = """
SELECT b.budget_id, b.scope, b.period, b.max_usd, b.max_tokens, b.max_turns, a.name AS agent, b.role_name,
       pg_catalog.date_trunc(b.period, pg_catalog.now(), 'UTC') AS period_start
  FROM pgagent.budget b LEFT JOIN pgagent.agent a ON a.tenant_id = b.tenant_id AND a.agent_id = b.agent_id
 WHERE b.tenant_id = $1::uuid
   AND (b.scope = 'tenant' OR (b.scope = 'agent' AND b.agent_id = $2) OR (b.scope = 'role' AND b.role_name = $3))"""

RESERVE_LOCK_SQL = f"""
WITH b AS ({_APPLICABLE}),
ins AS (
  INSERT INTO pgagent.budget_usage (tenant_id, budget_id, period_start)
  SELECT $1::uuid, b.budget_id, b.period_start FROM b ORDER BY b.budget_id
  ON CONFLICT DO NOTHING)
SELECT pg_catalog.count(*) AS n FROM b"""

# After the usage rows exist: lock them (budget_id order), drop this turn's old holds and the
# holds of turns that no longer run, and read what is spent and in flight.
RESERVE_READ_SQL = f"""
WITH b AS ({_APPLICABLE}),
locked AS (
  SELECT u.budget_id, u.period_start, u.spent_usd, u.spent_tokens, u.turns
    FROM pgagent.budget_usage u JOIN b ON u.budget_id = b.budget_id AND u.period_start = b.period_start
   WHERE u.tenant_id = $1::uuid ORDER BY u.budget_id FOR UPDATE OF u)
SELECT b.budget_id, b.scope, b.period, b.agent, b.role_name, b.period_start::text AS period_start,
       b.max_usd::float8 AS max_usd, b.max_tokens, b.max_turns,
       l.spent_usd::float8 AS spent_usd, l.spent_tokens, l.turns
  FROM b JOIN locked l ON l.budget_id = b.budget_id ORDER BY b.budget_id"""

DROP_STALE_HOLDS_SQL = """
DELETE FROM pgagent.budget_hold h
 WHERE h.tenant_id = $1::uuid AND h.budget_id = ANY($2)
   AND (h.turn_id = $3 OR NOT EXISTS (SELECT 1 FROM pgagent.turn t
                                       WHERE t.tenant_id = h.tenant_id AND t.turn_id = h.turn_id
                                         AND t.status = 'running'))"""

HELD_SQL = """
SELECT h.budget_id, pg_catalog.sum(h.usd)::float8 AS usd, pg_catalog.sum(h.tokens)::int8 AS tokens,
       pg_catalog.sum(h.turns)::int8 AS turns
  FROM pgagent.budget_hold h
 WHERE h.tenant_id = $1::uuid AND h.budget_id = ANY($2) AND h.period_start = ANY($3::timestamptz[])
 GROUP BY h.budget_id"""

HOLD_SQL = """
INSERT INTO pgagent.budget_hold (tenant_id, budget_id, period_start, turn_id, usd, tokens, turns)
SELECT $1::uuid, x.budget_id, x.period_start, $4, $5, $6, $7
  FROM ROWS FROM (pg_catalog.unnest($2::int8[]), pg_catalog.unnest($3::timestamptz[])) AS x(budget_id, period_start)"""

SETTLE_SQL = f"""
WITH b AS ({_APPLICABLE}),
spend AS (
  INSERT INTO pgagent.budget_usage AS u (tenant_id, budget_id, period_start, spent_usd, spent_tokens, turns)
  SELECT $1::uuid, b.budget_id, b.period_start, $5, $6, $7 FROM b ORDER BY b.budget_id
  ON CONFLICT (tenant_id, budget_id, period_start) DO UPDATE
     SET spent_usd = u.spent_usd + excluded.spent_usd, spent_tokens = u.spent_tokens + excluded.spent_tokens,
         turns = u.turns + excluded.turns, updated_at = pg_catalog.clock_timestamp()
  RETURNING 1),
dropped AS (DELETE FROM pgagent.budget_hold h WHERE h.turn_id = $4 AND h.tenant_id = $1::uuid RETURNING 1)
SELECT (SELECT pg_catalog.count(*) FROM spend) AS budgets, (SELECT pg_catalog.count(*) FROM dropped) AS holds"""

RELEASE_SQL = "DELETE FROM pgagent.budget_hold WHERE turn_id = $2 AND tenant_id = $1::uuid"


def estimate(turn: Any, request: dict[str, Any]) -> dict[str, Any]:
    """What one LLM call of ``turn`` sending ``request`` ({messages, tools, params}) may cost at
    most: ``{"tokens": int, "usd": float, "turns": 0 | 1}`` (turns is 1 for the turn's first
    call). See the module docstring for the estimate and its sources."""
    body = json.dumps([request.get("messages") or [], request.get("tools") or []], ensure_ascii=False)
    prompt = math.ceil(len(body.encode("utf-8")) / BYTES_PER_TOKEN)
    params = request.get("params") or {}
    cap = params.get("max_completion_tokens") or params.get("max_tokens") \
        or turn.settings.get("budget_completion_tokens") or DEFAULT_COMPLETION_TOKENS
    model = turn.cfg["model"]
    usd = (prompt * float(model["input_usd_per_mtok"]) + int(cap) * float(model["output_usd_per_mtok"])) / 1e6
    return {"tokens": prompt + int(cap), "usd": usd, "turns": 1 if turn.llm_calls == 0 else 0}


def _who(turn: Any) -> list[Any]:
    return [turn.tenant_id, int(turn.cfg["agent_id"]), turn.cfg["created_by"]]


def reserve(db: Db, turn: Any, request: dict[str, Any]) -> str:
    """Reserve room for one LLM call of ``turn`` (a loop.Turn) sending ``request`` in every
    budget that applies. Returns ``"none"`` (no budget applies; nothing was locked) or
    ``"held"`` (a budget_hold per budget was written; the usage rows stay locked until the
    transaction ends). Raises :class:`BudgetExceeded` (53400) naming the first exhausted budget
    and limit; the caller records it (loop.fail) in the same transaction."""
    if one(db, RESERVE_LOCK_SQL, ["text", "int8", "text"], _who(turn))["n"] == 0:
        return "none"
    rows = db.all(RESERVE_READ_SQL, ["text", "int8", "text"], _who(turn))
    ids = [int(r["budget_id"]) for r in rows]
    db.all(DROP_STALE_HOLDS_SQL, ["text", "int8[]", "int8"], [turn.tenant_id, ids, turn.turn_id])
    held = {int(h["budget_id"]): h for h in db.all(HELD_SQL, ["text", "int8[]", "text[]"],
                                                   [turn.tenant_id, ids, [r["period_start"] for r in rows]])}
    need = estimate(turn, request)
    for r in rows:
        h = held.get(int(r["budget_id"])) or {"usd": 0.0, "tokens": 0, "turns": 0}
        for limit, spent, unit in (("max_usd", "spent_usd", "usd"), ("max_tokens", "spent_tokens", "tokens"),
                                   ("max_turns", "turns", "turns")):
            if r[limit] is None:
                continue
            used, inflight, want = float(r[spent]), float(h[unit] or 0), float(need[unit])
            if want > 0 and used + inflight + want > float(r[limit]):
                target = {"tenant": "the tenant", "agent": f"agent {r['agent']}", "role": f"role {r['role_name']}"}
                raise BudgetExceeded(
                    f"the {LABEL[r['period']]} budget of {target[r['scope']]} allows {float(r[limit]):g} {unit}; "
                    f"{used:g} spent, {inflight:g} in flight, this call needs up to {want:g}",
                    {"budget_id": int(r["budget_id"]), "scope": r["scope"], "period": r["period"],
                     "period_start": r["period_start"], "limit": limit, "max": float(r[limit]),
                     "spent": used, "in_flight": inflight, "estimate": want})
    db.all(HOLD_SQL, ["text", "int8[]", "text[]", "int8", "numeric", "int8", "int4"],
           [turn.tenant_id, ids, [r["period_start"] for r in rows], turn.turn_id,
            round(need["usd"], 8), need["tokens"], need["turns"]])
    return "held"


def settle(db: Db, turn: Any, usd: float, tokens: int) -> None:
    """Add one recorded LLM call's real usage (``usd`` USD, ``tokens`` prompt + completion
    tokens; the turn counts once, on its first call) to every budget that applies now, and
    delete the turn's holds. One statement; cheap when no budget applies."""
    db.all(SETTLE_SQL, ["text", "int8", "text", "int8", "numeric", "int8", "int4"],
           [*_who(turn), turn.turn_id, round(max(usd, 0.0), 8), max(int(tokens), 0),
            1 if turn.llm_calls == 1 else 0])


def release(db: Db, turn: Any) -> None:
    """Drop the turn's reservations (a failed attempt or a turn that stopped running)."""
    db.all(RELEASE_SQL, ["text", "int8"], [turn.tenant_id, turn.turn_id])


# ---------------------------------------------------------------------------- the admin API

def _limit(value: Any, what: str, cast: type) -> Any:
    if value is None:
        return None
    check(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
          and math.isfinite(float(value)), f"{what} must be a number >= 0, not {value!r}")
    if cast is int:
        check(float(value) == int(value) and int(value) < 2 ** 62, f"{what} must be a whole number, not {value!r}")
        return int(value)
    check(float(value) < 1e12, f"{what} must be below 1e12 USD")
    return float(value)


@api("admin")
def set_budget(db: Db, gd: dict, c: Caller, scope: Any = "tenant", period: Any = "month", max_usd: Any = None,
               max_tokens: Any = None, max_turns: Any = None, agent: Any = None, role: Any = None) -> int:
    """pgagent.set_budget: create or replace (by scope, agent or role, and period) a budget of
    the caller's tenant. ``scope`` tenant | agent (needs ``agent``, its name) | role (needs
    ``role``, a role name: the turns it starts); ``period`` day | month (UTC); limits in USD,
    tokens (prompt + completion) and turns, at least one. Returns budget_id. Audited
    (budget_set, with the old and new limits). Raises InvalidArgument (22023), NotFound (42704:
    unknown agent or role)."""
    check(scope in SCOPES, f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    check(period in PERIODS, f"period must be day or month, not {period!r}")
    limits = {"max_usd": _limit(max_usd, "max_usd", float), "max_tokens": _limit(max_tokens, "max_tokens", int),
              "max_turns": _limit(max_turns, "max_turns", int)}
    check(any(v is not None for v in limits.values()), "a budget needs max_usd, max_tokens or max_turns",
          hint="To remove a budget, use pgagent.delete_budget.")
    check(limits["max_turns"] is None or limits["max_turns"] < 2 ** 31, "max_turns must be below 2^31")
    check(scope == "agent" or agent is None, "agent is only for scope => 'agent'")
    check(scope == "role" or role is None, "role is only for scope => 'role'")
    agent_id = None
    if scope == "agent":
        check(isinstance(agent, str) and agent != "", "scope 'agent' needs agent => the agent's name")
        r = one(db, "SELECT agent_id FROM pgagent.agent WHERE tenant_id = $1::uuid AND name = $2",
                ["text", "text"], [c.tenant_id, agent])
        if r is None:
            raise NotFound(f"agent {agent!r} does not exist (for this tenant)")
        agent_id = int(r["agent_id"])
    if scope == "role":
        check(isinstance(role, str) and role != "", "scope 'role' needs role => a role name")
        if one(db, "SELECT 1 AS x FROM pg_catalog.pg_roles WHERE rolname = $1", ["name"], [role]) is None:
            raise NotFound(f'role "{role}" does not exist')
    old = one(db, """SELECT pg_catalog.to_jsonb(b) AS b FROM pgagent.budget b
                      WHERE tenant_id = $1::uuid AND scope = $2 AND agent_id IS NOT DISTINCT FROM $3
                        AND role_name IS NOT DISTINCT FROM $4 AND period = $5""",
              ["text", "text", "int8", "name", "text"], [c.tenant_id, scope, agent_id, role, period])
    r = one(db, """INSERT INTO pgagent.budget AS b (tenant_id, scope, agent_id, role_name, period, max_usd, max_tokens,
                                                   max_turns, created_by)
                   VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9)
                   ON CONFLICT ON CONSTRAINT budget_one_per_scope DO UPDATE
                      SET max_usd = excluded.max_usd, max_tokens = excluded.max_tokens, max_turns = excluded.max_turns,
                          updated_at = pg_catalog.now()
                   RETURNING budget_id""",
            ["text", "text", "int8", "name", "text", "numeric", "int8", "int4", "name"],
            [c.tenant_id, scope, agent_id, role, period, limits["max_usd"], limits["max_tokens"], limits["max_turns"],
             c.role])
    old_limits = None if old is None else {k: old["b"][k] for k in limits}
    audit(db, "budget_set", "budget", r["budget_id"],
          {"scope": scope, "agent": agent, "role": role, "period": period, "limits": limits, "previous": old_limits})
    return int(r["budget_id"])


@api("admin")
def delete_budget(db: Db, gd: dict, c: Caller, budget: Any = None) -> bool:
    """pgagent.delete_budget: remove a budget (its usage and holds go with it). Returns true.
    Audited (budget_deleted). Raises InvalidArgument (22023), NotFound (42704)."""
    ident(budget, "budget")
    r = one(db, "DELETE FROM pgagent.budget WHERE tenant_id = $1::uuid AND budget_id = $2 RETURNING pg_catalog.to_jsonb(budget) AS b",
            ["text", "int8"], [c.tenant_id, budget])
    if r is None:
        raise NotFound(f"budget {budget} does not exist (for this tenant)")
    b = r["b"]
    audit(db, "budget_deleted", "budget", budget,
          {k: b[k] for k in ("scope", "agent_id", "role_name", "period", "max_usd", "max_tokens", "max_turns")})
    return True
