"""pgagent worker (issue 9): claiming with leases, LISTEN wake-ups, retries deferred in the queue,
fairness and limits, SIGTERM/SIGINT, approvals under workers, schedules, on_insert and
housekeeping. The crash trials are in test_crash.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from scripted_llm import Reply, http_error, text, tool_calls
from test_loop import setup_agent

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

from pgagent_worker.worker import Worker  # noqa: E402


def bump_then_answer(body: dict[str, Any]) -> Reply:
    """A turn of 2 LLM calls: first call the bump tool (n = the number in the user message),
    then answer. Works for any number of turns in any order."""
    msgs = body["messages"]
    if msgs[-1]["role"] == "tool":
        return text("bumped: " + msgs[-1]["content"][:40])
    user = next(m["content"] for m in reversed(msgs) if m["role"] == "user")
    n = int("".join(c for c in user if c.isdigit()) or 0)
    return tool_calls([("bump", {"n": n})])


def enqueue(conn: psycopg.Connection, n: int, agent: str = "analyst", prefix: str = "bump") -> list[int]:
    """n new conversations with one queued turn each ("<prefix> <i>", i from 1); their turn ids."""
    out = []
    for i in range(n):
        cid = conn.execute("SELECT pgagent.start_conversation(%s)", [agent]).fetchone()[0]
        out.append(conn.execute("SELECT pgagent.enqueue_message(%s, %s)", [cid, f"{prefix} {i + 1}"]).fetchone()[0])
    return out


def statuses(conn: psycopg.Connection, turns: list[int]) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM pgagent.turn WHERE turn_id = ANY(%s) GROUP BY 1", [turns])
    return dict(rows.fetchall())


def wait_until(pred, timeout: float = 30.0, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return pred()


class Events(list):
    """A worker's log events, kept for assertions."""

    def __call__(self, event: dict[str, Any]) -> None:
        self.append(event)

    def turns(self, outcome: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self if e["event"] == "turn" and (outcome is None or e.get("outcome") == outcome)]


@pytest.fixture
def workers(dsn: str) -> Iterator[list[Worker]]:
    """Workers started by a test are stopped (gracefully) at its end."""
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()
    for w in started:
        w.wait(timeout=15)


def start_worker(workers: list[Worker], dsn: str, **kw: Any) -> tuple[Worker, Events]:
    ev = Events()
    w = Worker(dsn, log=ev, **{"poll_s": 0.5, "heartbeat_s": 0.5, **kw})
    w.start()
    workers.append(w)
    return w, ev


# ---------------------------------------------------------------------------- draining

def test_two_workers_drain_the_queue_each_turn_once(conn, llm, dsn):
    setup_agent(conn, llm)
    llm.responder = bump_then_answer
    turns = enqueue(conn, 30)
    evs = []
    ws = [Worker(dsn, concurrency=2, once=True, log=(ev := Events())) for _ in range(2)]
    evs = [w.log for w in ws]
    threads = [threading.Thread(target=w.run) for w in ws]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses(conn, turns) == {"completed": 30}
    # each turn ran once: one bump per turn, its own number, and one "completed" log line
    bumps = sorted(r[0] for r in conn.execute("SELECT n FROM public.bumps"))
    assert bumps == list(range(1, 31))
    logged = sorted(e["turn_id"] for ev in evs for e in ev.turns("completed"))
    assert logged == sorted(turns)
    assert all(ev.turns() for ev in evs), "both workers ran turns"
    # the leases are gone with the turns; the workers registered and exited
    assert conn.execute("SELECT count(*) FROM pgagent.turn WHERE turn_id = ANY(%s) AND lease_owner IS NOT NULL",
                        [turns]).fetchone()[0] == 0
    rows = conn.execute("SELECT worker_id, alive, stopped_at IS NOT NULL, turns_in_flight FROM pgagent.workers").fetchall()
    assert {r[0] for r in rows} == {w.worker_id for w in ws}
    assert all(not r[1] and r[2] and r[3] == 0 for r in rows)
    # every turn: user_message, llm_call, tool_call, tool_result, llm_call, response
    kinds = conn.execute("""SELECT DISTINCT array_agg(kind ORDER BY seq) FROM pgagent.step
                             WHERE turn_id = ANY(%s) GROUP BY turn_id""", [turns]).fetchall()
    assert kinds == [(["user_message", "llm_call", "tool_call", "tool_result", "llm_call", "response"],)]


def test_listen_wakes_an_idle_worker_at_once(conn, llm, dsn, workers):
    setup_agent(conn, llm)
    llm.responder = lambda body: text("hi")
    w, ev = start_worker(workers, dsn, concurrency=1, poll_s=30.0)
    time.sleep(1.0)   # idle, waiting on its 30 s poll
    delays = []
    for i in range(5):
        [turn] = enqueue(conn, 1)
        assert wait_until(lambda: statuses(conn, [turn]) == {"completed": 1}, timeout=10)
        delays.append(conn.execute("SELECT extract(epoch FROM started_at - created_at) FROM pgagent.turn "
                                   "WHERE turn_id = %s", [turn]).fetchone()[0])
    # woken by the NOTIFY of enqueue_message, not by the 30 s poll
    assert max(delays) < 2.0, delays


def test_enqueue_in_an_open_transaction_is_claimed_only_after_commit(conn, llm, dsn, workers):
    setup_agent(conn, llm)
    llm.responder = lambda body: text("hi")
    w, ev = start_worker(workers, dsn, concurrency=1)
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    with psycopg.connect(dsn) as c2:
        turn = c2.execute("SELECT pgagent.enqueue_message(%s, 'later')", [cid]).fetchone()[0]
        time.sleep(1.0)
        assert not ev.turns()
        c2.rollback()
    time.sleep(1.0)
    assert not ev.turns()
    assert conn.execute("SELECT count(*) FROM pgagent.turn WHERE turn_id = %s", [turn]).fetchone()[0] == 0
