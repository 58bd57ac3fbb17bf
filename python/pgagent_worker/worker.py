"""The worker pool behind ``pgagent worker`` (issue 9; docs/durability.md, "Workers").

A :class:`Worker` holds ``concurrency`` connections (a psycopg_pool ConnectionPool) that each,
in a thread, claim a turn (``pgagent.claim_turn``: FOR UPDATE SKIP LOCKED, a lease) and run it
with ``CALL pgagent.run_turn``: the loop, the LLM calls and the tools still run inside the
database, one committed step at a time. One more connection LISTENs on the queue channels of the
tenants it serves (``pgagent_queue_<key>``, named like ``pgagent.event_channel``) and wakes an
idle slot when a turn is queued or a parked turn's calls are all decided; a maintenance thread beats the worker's heart, fires due schedules
(``pgagent.fire_schedules``) and, on the one worker that holds the housekeeping advisory lock,
calls ``pgagent.housekeeping``. Idle slots also poll every ``poll_s`` seconds (deferred retries,
expired leases). An embedding thread drains the knowledge base's queue (``pgagent.embed_pending``,
woken by pgagent.add_document's notification; with ``once`` until the queue is empty).

Stopping: :meth:`Worker.stop` (SIGTERM, a first SIGINT) asks the database to stop this worker's
CALLs after the step in flight (``pgagent.worker_heartbeat(id, stopping => true)``: their leases
are released, the turns are claimable at once) and exits when they have returned;
:meth:`Worker.kill` (a second SIGINT) cancels the statements in flight (the step in flight is
rolled back; the leases expire) and exits at once.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

import psycopg
import psycopg.rows
from psycopg_pool import ConnectionPool, PoolTimeout

HOUSEKEEPING_LOCK = "SELECT pg_catalog.pg_try_advisory_lock(pg_catalog.hashtextextended('pgagent/housekeeper', 0)) AS ok"


def default_worker_id() -> str:
    """``<host>:<pid>:<4 random hex>``, within the 128 characters pgagent.claim_turn accepts."""
    host = "".join(c if c.isalnum() or c in "_.-" else "-" for c in socket.gethostname())[:80] or "host"
    return f"{host}:{os.getpid()}:{secrets.token_hex(2)}"


class Worker:
    """A pool of ``concurrency`` slots running turns for the tenants the connecting role may act
    for (optionally one ``tenant`` and one ``agent``).

    Parameters: ``dsn`` (libpq connection string), ``lease_ms`` (lease length asked for; the
    database renews it to at least the model's and tools' timeouts + 1 s), ``poll_s`` (longest
    idle wait between claims, s), ``heartbeat_s`` (s), ``housekeeping_s`` (s between
    housekeeping runs on the leader), ``once`` (exit when nothing is claimable and no slot is
    busy), ``log`` (a callable taking one dict per event; :func:`line_logger` writes text or
    JSON lines)."""

    def __init__(self, dsn: str, *, concurrency: int = 2, tenant: str | None = None, agent: str | None = None,
                 once: bool = False, lease_ms: int = 60000, poll_s: float = 2.0, heartbeat_s: float = 5.0,
                 housekeeping_s: float = 30.0, worker_id: str | None = None,
                 log: Callable[[dict[str, Any]], None] | None = None, tracing: Any = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.dsn, self.concurrency, self.tenant, self.agent, self.once = dsn, concurrency, tenant, agent, once
        self.lease_ms, self.poll_s, self.heartbeat_s, self.housekeeping_s = lease_ms, poll_s, heartbeat_s, housekeeping_s
        self.worker_id = worker_id or default_worker_id()
        self.log = log if log is not None else (lambda event: None)
        #: a pgagent_gateway.tracing.Tracing exporting each finished turn's trace, or None
        self.tracing = tracing
        self.stopping = threading.Event()
        self.killed = threading.Event()
        self.embed_wake = threading.Event()
        self.embedded = 0
        self.cond = threading.Condition()
        self.busy = 0
        self.turns = 0
        self.failures = 0
        self.leader = False
        self._conns: dict[int, psycopg.Connection] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.pool: ConnectionPool | None = None

    # ------------------------------------------------------------------------ connections
    def _configure(self, conn: psycopg.Connection) -> None:
        conn.execute("SELECT pg_catalog.set_config('pgagent.worker_id', %s, false), "
                     "pg_catalog.set_config('pgagent.lease_ms', %s, false), "
                     "pg_catalog.set_config('application_name', %s, false)",
                     [self.worker_id, str(self.lease_ms), f"pgagent worker {self.worker_id}"[:63]])
        # warm the backend up before the first turn arrives: any API call loads pgagent_core
        # into its PL/Python (about 200 ms, which the first turn would otherwise wait for)
        conn.execute("SELECT pgagent.config_schema('agent.config') IS NOT NULL")

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, autocommit=True)
        self._configure(conn)
        return conn

    # ------------------------------------------------------------------------ slots
    def _wake(self, n: int = 1) -> None:
        with self.cond:
            self.cond.notify(n)

    def _claim(self, conn: psycopg.Connection) -> tuple[Any, str, int] | None:
        # the claimed turn's tenant becomes the session's (pgagent.tenant) in the same statement:
        # CALL run_turn follows with no round trip between
        row = conn.execute("SELECT c.tenant_id, c.tenant_name, c.turn_id, "
                           "pg_catalog.set_config('pgagent.tenant', c.tenant_id::text, false) "
                           "FROM pgagent.claim_turn(%s, %s, %s, %s, %s) c",
                           [self.worker_id, self.lease_ms, self.tenant, self.agent,
                            json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                        "concurrency": self.concurrency})]).fetchone()
        return None if row is None else (row[0], row[1], int(row[2]))

    def _run(self, conn: psycopg.Connection, tenant_id: Any, tenant_name: str, turn_id: int) -> None:
        t0 = time.perf_counter()
        try:
            row = conn.execute("CALL pgagent.run_turn(%s)", [turn_id]).fetchone()
        except psycopg.Error as e:
            self.failures += 1
            self.log({"event": "turn", "worker": self.worker_id, "tenant": tenant_name, "turn_id": turn_id,
                      "outcome": "error", "sqlstate": getattr(e, "sqlstate", None),
                      "error": str(e).splitlines()[0] if str(e) else type(e).__name__,
                      "ms": round((time.perf_counter() - t0) * 1000, 1)})
            if isinstance(e, psycopg.OperationalError):
                raise
            return
        result = row[0] if row else {}
        self.turns += 1
        outcome = ("released" if result.get("released") else "deferred" if result.get("run_after")
                   else result.get("status"))
        event = {"event": "turn", "worker": self.worker_id, "tenant": tenant_name, "turn_id": turn_id,
                 "outcome": outcome, "status": result.get("status"), "steps": result.get("steps"),
                 "llm_calls": result.get("llm_calls"), "ms": round((time.perf_counter() - t0) * 1000, 1)}
        if result.get("run_after"):
            event["run_after"] = result["run_after"]
        if result.get("error"):
            event["error"] = result["error"]
        self.log(event)
        if self.tracing is not None and outcome in ("completed", "failed", "cancelled", "awaiting_approval"):
            self._trace(conn, turn_id)

    def _trace(self, conn: psycopg.Connection, turn_id: int) -> None:
        """Export the turn's trace (pgagent_gateway.tracing); a failure is logged, never raised."""
        from pgagent_gateway.tracing import STEPS_SQL, TREE_SQL
        try:
            with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
                turns = cur.execute(TREE_SQL, [turn_id]).fetchall()
                steps = cur.execute(STEPS_SQL, [[t["turn_id"] for t in turns]]).fetchall()
            self.tracing.export(turns, steps)
        except Exception as e:   # tracing must never stop a worker
            self.log({"event": "trace_failed", "worker": self.worker_id, "turn_id": turn_id, "error": repr(e)})

    def _slot(self, n: int) -> None:
        backoff = 0.1
        while not self.stopping.is_set():
            assert self.pool is not None
            try:
                with self.pool.connection(timeout=max(self.poll_s, 1.0)) as conn:
                    with self._lock:
                        self._conns[n] = conn
                    try:
                        claim = self._claim(conn)
                        if claim is not None:
                            with self._lock:
                                self.busy += 1
                            try:
                                self._run(conn, *claim)
                            finally:
                                with self._lock:
                                    self.busy -= 1
                    finally:
                        with self._lock:
                            self._conns.pop(n, None)
                backoff = 0.1
            except (psycopg.OperationalError, PoolTimeout) as e:
                if self.stopping.is_set():
                    break
                self.log({"event": "connection", "worker": self.worker_id, "slot": n, "outcome": "lost",
                          "error": (str(e).splitlines() or [type(e).__name__])[0], "retry_in_s": round(backoff, 2)})
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except psycopg.Error as e:   # claim_turn refused (42501, ...): say so and wait
                self.log({"event": "claim", "worker": self.worker_id, "outcome": "error",
                          "sqlstate": getattr(e, "sqlstate", None), "error": str(e).splitlines()[0]})
                self.stopping.wait(self.poll_s)
                continue
            if claim is None:
                if self.once:
                    with self._lock:
                        idle_all = self.busy == 0
                    if idle_all:
                        self.stopping.set()
                        self._wake(self.concurrency)
                        break
                with self.cond:
                    if not self.stopping.is_set():
                        self.cond.wait(self.poll_s)

    # ------------------------------------------------------------------------ listener and maintenance
    def _listen(self) -> None:
        while not self.stopping.is_set():
            try:
                with self._connect() as conn:
                    channels: set[str] = set()
                    refreshed = 0.0
                    while not self.stopping.is_set():
                        if time.monotonic() - refreshed > 30:
                            rows = conn.execute(
                                "SELECT pgagent.event_channel(t.tenant_id::text) FROM pgagent.tenant t "
                                "WHERE %s::text IS NULL OR t.name = %s OR t.tenant_id::text = %s",
                                [self.tenant, self.tenant, self.tenant]).fetchall()
                            for (ch,) in rows:
                                # the tenant's queue channel: a notification per turn that became
                                # claimable (queued, or approved after a worker parked it)
                                ch = "pgagent_queue_" + ch.removeprefix("pgagent_events_")
                                if ch not in channels:
                                    conn.execute(f'LISTEN "{ch}"')
                                    channels.add(ch)
                            refreshed = time.monotonic()
                        for n in conn.notifies(timeout=1.0):
                            if n.payload == "embed":   # pgagent.add_document: chunks to embed
                                self.embed_wake.set()
                            else:
                                self._wake()
            except psycopg.Error:
                self.stopping.wait(1.0)

    def _embed(self) -> None:
        """Drain the knowledge base's embedding queue (pgagent.embed_pending), one batch at a
        time; idle, wait for a notification from pgagent.add_document or ``poll_s``. With
        ``once``, return when the queue is empty (the slots' stop does not cut it short)."""
        def go_on() -> bool:
            return not self.killed.is_set() and (self.once or not self.stopping.is_set())
        while go_on():
            try:
                with self._connect() as conn:
                    while go_on():
                        self.embed_wake.clear()
                        r = conn.execute("SELECT pgagent.embed_pending(%s)", [self.tenant]).fetchone()[0]
                        if r["embedded"] or r["failed"]:
                            self.embedded += r["embedded"]
                            self.log({"event": "embed", "worker": self.worker_id, "tenant_id": r["tenant_id"],
                                      "collection_id": r["collection_id"], "embedded": r["embedded"],
                                      "failed": r["failed"], **({"error": r["error"]} if r.get("error") else {})})
                            continue
                        if self.once:
                            return
                        self.embed_wake.wait(self.poll_s)
            except psycopg.Error as e:
                self.log({"event": "embed", "worker": self.worker_id, "outcome": "error",
                          "error": (str(e).splitlines() or [type(e).__name__])[0]})
                if self.once:
                    return
                self.stopping.wait(1.0)

    def _maintain(self) -> None:
        last_hk = 0.0
        while not self.stopping.is_set():
            try:
                with self._connect() as conn:
                    self.leader = bool(conn.execute(HOUSEKEEPING_LOCK).fetchone()[0])
                    while not self.stopping.is_set():
                        conn.execute("SELECT pgagent.worker_heartbeat(%s)", [self.worker_id])
                        fired = conn.execute("SELECT pgagent.fire_schedules()").fetchone()[0]
                        if fired:
                            self.log({"event": "schedules", "worker": self.worker_id, "fired": fired})
                            self._wake(min(fired, self.concurrency))
                        if not self.leader:
                            self.leader = bool(conn.execute(HOUSEKEEPING_LOCK).fetchone()[0])
                        if self.leader and time.monotonic() - last_hk >= self.housekeeping_s:
                            hk = conn.execute("SELECT pgagent.housekeeping()").fetchone()[0]
                            last_hk = time.monotonic()
                            if any(v for k, v in hk.items() if k != "skipped"):
                                self.log({"event": "housekeeping", "worker": self.worker_id, **hk})
                        self.stopping.wait(min(self.heartbeat_s, self.poll_s))
            except psycopg.Error as e:
                self.leader = False
                self.log({"event": "maintenance", "worker": self.worker_id, "outcome": "error",
                          "error": (str(e).splitlines() or [type(e).__name__])[0]})
                self.stopping.wait(1.0)

    # ------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Open the pool and start the threads (returns at once; :meth:`wait` joins them)."""
        self.pool = ConnectionPool(self.dsn, min_size=self.concurrency, max_size=self.concurrency,
                                   kwargs={"autocommit": True}, configure=self._configure,
                                   name=f"pgagent-worker-{self.worker_id}", open=True, reconnect_timeout=0)
        self.log({"event": "start", "worker": self.worker_id, "concurrency": self.concurrency,
                  "tenant": self.tenant, "agent": self.agent, "once": self.once})
        self._threads = [threading.Thread(target=self._slot, args=(i,), name=f"slot-{i}", daemon=True)
                         for i in range(self.concurrency)]
        self._threads.append(threading.Thread(target=self._embed, name="embed", daemon=True))
        if not self.once:
            self._threads += [threading.Thread(target=self._listen, name="listen", daemon=True),
                              threading.Thread(target=self._maintain, name="maintain", daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Graceful stop (SIGTERM): CALLs in flight end after their current step and release
        their turns; then the worker exits."""
        if self.stopping.is_set():
            return
        self.log({"event": "stopping", "worker": self.worker_id})
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute("SELECT pgagent.worker_heartbeat(%s, true)", [self.worker_id])
        except psycopg.Error as e:
            self.log({"event": "stopping", "worker": self.worker_id, "outcome": "error", "error": str(e).splitlines()[0]})
        self.stopping.set()
        self._wake(self.concurrency)

    def kill(self) -> None:
        """Immediate stop (a second SIGINT): cancel the statements in flight and exit."""
        self.killed.set()
        self.stopping.set()
        with self._lock:
            conns = list(self._conns.values())
        for c in conns:
            try:
                c.cancel_safe(timeout=2.0)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self._wake(self.concurrency)

    def wait(self, timeout: float | None = None) -> bool:
        """Join the threads (each at most ``timeout`` s); True when all ended. Then mark the
        worker exited in the database and close the pool."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            while t.is_alive():
                t.join(0.2)
                if self.killed.is_set() and t.name.startswith("slot"):
                    break
                if deadline is not None and time.monotonic() > deadline:
                    break
        done = not any(t.is_alive() for t in self._threads)
        # stopped, and the leases still held given back (after a kill: the cancelled turns are
        # claimable at once instead of when their leases expire)
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=2 if self.killed.is_set() else 5) as conn:
                conn.execute("SELECT pgagent.worker_exit(%s)", [self.worker_id])
        except psycopg.Error:
            pass
        if self.pool is not None:
            self.pool.close(timeout=0 if self.killed.is_set() else 5)
        self.log({"event": "exit", "worker": self.worker_id, "turns": self.turns, "errors": self.failures,
                  "embedded": self.embedded})
        return done

    def run(self) -> int:
        """start + wait; the exit status (0, or 130 after :meth:`kill`)."""
        self.start()
        while any(t.is_alive() for t in self._threads):
            time.sleep(0.2)
            if self.killed.is_set() or (self.stopping.is_set() and not any(
                    t.is_alive() for t in self._threads if t.name.startswith("slot"))):
                break
        self.stopping.set()
        self.wait(timeout=10)
        return 130 if self.killed.is_set() else 0


def line_logger(fmt: str = "text", out: TextIO = sys.stderr) -> Callable[[dict[str, Any]], None]:
    """A logger writing one line per event: ``json`` (one JSON object, with ``ts``) or ``text``
    (``<ts> <event> key=value ...``)."""
    lock = threading.Lock()

    def log(event: dict[str, Any]) -> None:
        ts = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        if fmt == "json":
            line = json.dumps({"ts": ts, **event}, default=str)
        else:
            rest = " ".join(f"{k}={json.dumps(v, default=str) if isinstance(v, (str, dict, list)) and (' ' in str(v) or not v) else v}"
                            for k, v in event.items() if k != "event" and v is not None)
            line = f"{ts} {event.get('event')} {rest}"
        with lock:
            out.write(line + "\n")
            out.flush()
    return log
