"""Worker leases on turns (issue 9; docs/durability.md, "Workers and leases").

A turn a worker runs carries a lease in its row: ``lease_owner`` (the worker's id, the session
setting ``pgagent.worker_id``; a plain session is ``backend:<pid>``) and ``lease_expires_at``.
``pgagent.claim_turn`` (sql/47_worker.sql) gives a worker the lease of a queued turn, or of a
worker's turn whose lease expired (a killed worker, a frozen backend); the worker then runs it
with ``CALL pgagent.run_turn``. Under that CALL, :func:`pgagent_core.loop.step` calls this module:

* at the first unit, :func:`begin` takes the turn's session advisory lock as before; a turn whose
  lease this session holds is run even when another (stale) backend still holds the advisory
  lock, because the lease, not the lock, says who runs it now. A live lease of someone else is
  55P03.
* at the start of every unit, :func:`at_start` reads the committed lease (with the query that
  checks the cached turn, so at no extra cost): another owner now is :class:`LeaseLost`; a
  stopping worker (``pgagent.worker_heartbeat(id, stopping => true)``, SIGTERM) releases the turn
  there, after the step in flight committed.
* L is the longest a unit may take: the worker's ``--lease-ms``, but at least the model's and the
  tools' timeouts plus 1 s. Before a unit starts with less than L left (a claim with a short
  lease, a takeover), :func:`renew` extends the lease to 2L in a unit of its own, committed
  first. At the end of a unit, :func:`finish_unit` renews it to 2L once less than 1.5 L is left,
  parks it (awaiting an approval: ``infinity`` until ``pgagent.approve_step`` decides the last
  call) or releases it for a deferred retry (``run_after``), in the unit's own transaction. So
  every unit starts with at least L left and cannot outlive its lease while its backend runs; a
  frozen backend that wakes after a takeover renews at the end of its unit, finds the lease
  taken (:class:`LeaseLost`) and rolls the unit back (and the unique (turn_id, seq) of the step
  log refuses a second writer of a step anyway). Renewals cost one UPDATE per L/2 of work.

Turns nobody leased (``send_message``, a plain ``CALL run_turn`` of a turn no worker touched) run
exactly as before: no lease, no extra statement.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .db import Db, one
from .errors import Busy

DEFAULT_LEASE_MS = 60000
#: ms of L (length_ms: the longest call + 1 s) a unit may start without: a turn claimed with a
#: lease of L moments ago runs its first unit at once, with at least the longest call + 0.5 s left
CLAIM_SLACK_MS = 500
TERMINAL = ("completed", "failed", "cancelled")

# Who this session is for leases, the lease length it asked for (ms), and the turn's lease now
# (a parked lease, infinity, waits for an approval and holds nobody off).
BEGIN_SQL = """
SELECT coalesce(nullif(pg_catalog.current_setting('pgagent.worker_id', true), ''),
                'backend:' || pg_catalog.pg_backend_pid()) AS me,
       coalesce(nullif(pg_catalog.current_setting('pgagent.lease_ms', true), '')::int, $3) AS lease_ms,
       t.lease_owner, t.lease_expires_at > pg_catalog.now() AND t.lease_expires_at < 'infinity' AS live,
       pg_catalog.to_char(t.lease_expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS expires
  FROM pgagent.turn t WHERE t.tenant_id = $1::uuid AND t.turn_id = $2"""

TAKE_SQL = """
UPDATE pgagent.turn SET lease_owner = $3, lease_expires_at = pg_catalog.now() + $4 * interval '1 millisecond'
 WHERE tenant_id = $1::uuid AND turn_id = $2 AND status NOT IN ('completed', 'failed', 'cancelled')"""

# One statement at the end of every unit: renew (or park, or release) the lease if this session
# still holds it, and say whether the worker was asked to stop (pgagent.worker_stop).
RENEW_SQL = """
UPDATE pgagent.turn t
   SET lease_expires_at = CASE WHEN $4 = 'park' THEN 'infinity'::timestamptz
                               WHEN $4 = 'release' THEN pg_catalog.now()
                               ELSE pg_catalog.now() + $5 * interval '1 millisecond' END,
       run_after = $6::timestamptz
 WHERE t.tenant_id = $1::uuid AND t.turn_id = $2 AND t.lease_owner = $3
   AND t.status NOT IN ('completed', 'failed', 'cancelled')
RETURNING pg_catalog.date_part('epoch', t.lease_expires_at)::float8 AS expires"""
RENEW_TYPES = ["text", "int8", "text", "text", "int8", "text"]


class LeaseLost(Busy):
    """Another worker took the turn over after this session's lease expired (55P03): the unit
    in flight is rolled back."""


@dataclass
class Lease:
    """This CALL's lease on one turn: ``me`` (the lease_owner it writes), ``lease_ms`` (the
    renewal length asked for, ms), ``locked`` (whether it also holds the advisory lock) and
    ``expires`` (when the lease ends as last committed, epoch s; the server's clock, which the
    backend shares)."""

    me: str
    lease_ms: int
    locked: bool
    expires: float = 0.0


def begin(db: Db, tenant_id: str, turn_id: int, locked: bool) -> Lease | None:
    """At the first unit of a CALL run_turn. ``locked``: whether the session advisory lock was
    taken. Returns the :class:`Lease` to keep when the turn is a worker's (has a lease_owner) or
    this session was given its lease, else None (no lease: nothing changes). Takes the lease of
    a turn whose lease expired or was released. Raises Busy (55P03) when the advisory lock is
    held elsewhere and the lease is not this session's, or the lease is someone else's and live."""
    row = one(db, BEGIN_SQL, ["text", "int8", "int4"], [tenant_id, turn_id, DEFAULT_LEASE_MS])
    if row is None:
        if locked:
            return None
        raise Busy(f"turn {turn_id} is being run by another session")
    me, mine = row["me"], row["lease_owner"] == row["me"]
    if not locked and not (mine and row["live"]):
        raise Busy(f"turn {turn_id} is being run by another session",
                   detail=f"Another backend holds turn {turn_id}'s advisory lock.")
    if row["lease_owner"] is None:
        return None
    if not mine and row["live"]:
        raise Busy(f"turn {turn_id} is leased to worker {row['lease_owner']} until {row['expires']}",
                   detail="A worker runs it; its lease is renewed after every step.",
                   hint="Wait for it, or for the lease to expire if the worker died (then CALL run_turn takes it).")
    if not mine or not row["live"]:
        db.all(TAKE_SQL, ["text", "int8", "text", "int8"], [tenant_id, turn_id, me, int(row["lease_ms"])])
    return Lease(me=me, lease_ms=int(row["lease_ms"]), locked=locked)


def at_start(lease: Lease, row: dict[str, Any], turn_id: int) -> str:
    """At the start of a unit, from the committed turn (``row``: lease_owner,
    lease_expires_epoch, worker_stopping): raise :class:`LeaseLost` if the lease is no longer
    this session's (another worker took the turn over); 'stopping' if this worker was asked to
    stop (the unit is not run); else 'continue'."""
    if row.get("lease_owner") != lease.me:
        raise LeaseLost(f"turn {turn_id}: lease lost to {row.get('lease_owner') or 'nobody'}",
                        detail="Its lease expired and another worker claimed it; this session stops.")
    lease.expires = float(row.get("lease_expires_epoch") or 0.0)
    return "stopping" if row.get("worker_stopping") else "continue"


def release(db: Db, lease: Lease, tenant_id: str, turn_id: int) -> None:
    """Give the lease back now (the worker is stopping): any worker may claim the turn at once."""
    db.all(RENEW_SQL, RENEW_TYPES, [tenant_id, turn_id, lease.me, "release", 0, None])


def length_ms(lease: Lease, cfg: dict[str, Any]) -> int:
    """L, the longest a unit may take (ms): the asked lease, but at least the longest single LLM
    or tool call the turn can make (the model's timeout_ms, each tool's timeout_ms) plus 1 s.
    A renewal extends the lease to 2L from now."""
    longest = max([int(cfg["model"].get("timeout_ms") or 0)]
                  + [int(t.get("timeout_ms") or 0) for t in cfg.get("tools") or []])
    return max(lease.lease_ms, longest + 1000)


def _left_ms(lease: Lease) -> float:
    return (lease.expires - time.time()) * 1000.0


def _renew(db: Db, lease: Lease, tenant_id: str, turn_id: int, mode: str, length: int,
           run_after: str | None = None) -> None:
    row = one(db, RENEW_SQL, RENEW_TYPES, [tenant_id, turn_id, lease.me, mode, length, run_after])
    if row is None:
        raise LeaseLost(f"turn {turn_id}: lease lost",
                        detail="Its lease expired and another worker claimed it before this step committed; "
                               "the step is rolled back.")
    lease.expires = float(row["expires"])


def due_at_start(lease: Lease, status: str, cfg: dict[str, Any]) -> bool:
    """Whether the lease must be renewed, in a unit of its own, before the next unit starts:
    less than L - :data:`CLAIM_SLACK_MS` left (after a claim with a short lease, or a takeover),
    so that the next unit, which may make an LLM or tool call of up to L - 1 s, cannot outlive it
    (a lease claimed for L a moment ago is enough: no extra unit). Not for a queued turn (its
    next unit only sets it running, and renews at its end) or one that cannot go on."""
    if status in TERMINAL or status in ("queued", "paused"):
        return False
    return _left_ms(lease) < length_ms(lease, cfg) - CLAIM_SLACK_MS


def renew(db: Db, lease: Lease, tenant_id: str, turn_id: int, cfg: dict[str, Any]) -> None:
    """Extend the lease to 2L from now. Raises LeaseLost (55P03) if another worker holds it."""
    _renew(db, lease, tenant_id, turn_id, "renew", 2 * length_ms(lease, cfg))


def finish_unit(db: Db, lease: Lease, tenant_id: str, turn_id: int, status: str, cfg: dict[str, Any],
                run_after: str | None = None, stopped: bool = False) -> str:
    """At the end of a unit, in its transaction: renew the lease to 2L once less than 1.5 L is
    left (the turn goes on; the renewal also fences: it finds the lease taken over if this unit
    outlived it, frozen), park it (``stopped`` in awaiting_approval: it waits for a human),
    release it (paused, or ``run_after`` given: a deferred retry), or do nothing (terminal: the
    status update cleared it). Returns 'continue' or 'stopped' (the turn left the worker's
    hands). Raises LeaseLost (55P03) if another worker holds it now."""
    if status in TERMINAL:
        return "stopped"
    if stopped and status == "awaiting_approval":
        _renew(db, lease, tenant_id, turn_id, "park", 0)
        return "stopped"
    if status == "paused" or run_after is not None:
        _renew(db, lease, tenant_id, turn_id, "release", 0, run_after)
        return "stopped"
    length = length_ms(lease, cfg)
    if _left_ms(lease) < 1.5 * length:
        _renew(db, lease, tenant_id, turn_id, "renew", 2 * length)
    return "continue"
