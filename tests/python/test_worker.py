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
    ws = [Worker(dsn, concurrency=2, once=True, log=Events()) for _ in range(2)]
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


# ---------------------------------------------------------------------------- retries

def error_steps(conn: psycopg.Connection, turn: int) -> list[dict[str, Any]]:
    return [r[0] for r in conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'error' "
                                       "ORDER BY seq", [turn])]


def test_a_transient_failure_is_retried_from_the_queue_with_backoff(conn, llm, dsn, workers):
    setup_agent(conn, llm, config={"retry_max": 3, "retry_base_ms": 400})
    llm.script(http_error(503), http_error(429, retry_after=1), text("fine"))
    [turn] = enqueue(conn, 1)
    w, ev = start_worker(workers, dsn, concurrency=1)
    assert wait_until(lambda: statuses(conn, [turn]) == {"completed": 1}, timeout=20)
    errs = error_steps(conn, turn)
    assert [(e["http_status"], e["attempt"], e["will_retry"]) for e in errs] == [(503, 1, True), (429, 2, True)]
    # equal jitter: base * 2^(attempt-1) * [0.5, 1); a Retry-After of 1 s is the floor of the second
    assert 200 <= errs[0]["retry_in_ms"] < 400
    assert 1000 <= errs[1]["retry_in_ms"] < 1600
    # the worker gave the turn back between attempts (deferred twice) instead of sleeping in it
    deferred = ev.turns("deferred")
    assert [e["turn_id"] for e in deferred] == [turn, turn] and all(e["run_after"] for e in deferred)
    # and no attempt came before its retry_at
    times = [r["time"] for r in llm.requests]
    assert times[1] - times[0] >= errs[0]["retry_in_ms"] / 1000 - 0.05
    assert times[2] - times[1] >= errs[1]["retry_in_ms"] / 1000 - 0.05
    # the error steps and the retried call are all in the log
    kinds = [r[0] for r in conn.execute("SELECT kind FROM pgagent.step WHERE turn_id = %s ORDER BY seq", [turn])]
    assert kinds == ["user_message", "error", "error", "llm_call", "response"]


def test_the_turn_fails_for_good_after_retry_max(conn, llm, dsn, workers):
    setup_agent(conn, llm, config={"retry_max": 2, "retry_base_ms": 50})
    llm.script(http_error(500), http_error(502), http_error(503), text("never"))
    [turn] = enqueue(conn, 1)
    start_worker(workers, dsn, concurrency=1)
    assert wait_until(lambda: statuses(conn, [turn]) == {"failed": 1}, timeout=20)
    errs = error_steps(conn, turn)
    assert [e.get("will_retry") for e in errs] == [True, True, False, None]
    assert "after 3 attempt(s)" in errs[-1]["message"]
    assert llm.remaining == 1
    row = conn.execute("SELECT lease_owner, lease_expires_at, run_after FROM pgagent.turn WHERE turn_id = %s",
                       [turn]).fetchone()
    assert row == (None, None, None)


def test_a_refused_request_is_not_retried(conn, llm, dsn, workers):
    setup_agent(conn, llm, config={"retry_max": 5, "retry_base_ms": 50})
    llm.script(http_error(400), text("never"))
    [turn] = enqueue(conn, 1)
    start_worker(workers, dsn, concurrency=1)
    assert wait_until(lambda: statuses(conn, [turn]) == {"failed": 1}, timeout=20)
    assert [e.get("will_retry") for e in error_steps(conn, turn)] == [False, None]


# ---------------------------------------------------------------------------- fairness and limits

def second_tenant(conn: psycopg.Connection, llm, name: str = "beta", agent: str = "helper") -> None:
    """A tenant with a tool-less agent on the scripted model (as the superuser)."""
    conn.execute("SELECT pgagent.add_tenant(%s)", [name])
    conn.execute("SELECT set_config('pgagent.tenant', %s, false)", [name])
    conn.execute("SELECT pgagent.register_model('scripted', base_url => %s, timeout_ms => 5000)", [llm.base_url])
    conn.execute("SELECT pgagent.create_agent(%s, model => 'scripted')", [agent])
    conn.execute("RESET pgagent.tenant")


def started_order(conn: psycopg.Connection) -> list[tuple[str, int]]:
    return conn.execute("""SELECT n.name, t.turn_id FROM pgagent.turn t JOIN pgagent.tenant n USING (tenant_id)
                            ORDER BY t.started_at, t.turn_id""").fetchall()


def test_a_busy_tenant_does_not_starve_another(conn, llm, dsn, workers):
    from scripted_llm import hang
    setup_agent(conn, llm)
    second_tenant(conn, llm)
    llm.responder = lambda body: hang(0.03, text("ok"))
    enqueue(conn, 40)                              # tenant default: a deep queue, first
    conn.execute("SET pgagent.tenant = 'beta'")
    enqueue(conn, 5, agent="helper")               # then 5 turns of beta
    conn.execute("RESET pgagent.tenant")
    start_worker(workers, dsn, concurrency=2)
    assert wait_until(lambda: conn.execute("SELECT count(*) FROM pgagent.turn WHERE status = 'completed'")
                      .fetchone()[0] == 45, timeout=60)
    order = started_order(conn)
    beta_ranks = [i for i, (tenant, _) in enumerate(order) if tenant == "beta"]
    # first come, first served would start beta's turns last (ranks 40-44); fair claiming
    # serves the tenant with fewer turns in flight first
    assert len(beta_ranks) == 5 and max(beta_ranks) < 15, beta_ranks


def overlaps(conn: psycopg.Connection, where: str, args: list[Any]) -> int:
    """The most turns matching ``where`` that ran at the same moment (from started/finished)."""
    rows = conn.execute(f"SELECT started_at, finished_at FROM pgagent.turn t WHERE {where}", args).fetchall()
    points = sorted([(s, 1) for s, _ in rows] + [(f, -1) for _, f in rows], key=lambda p: (p[0], p[1]))
    best = cur = 0
    for _, d in points:
        cur += d
        best = max(best, cur)
    return best


def test_tenant_and_agent_limits_bound_the_turns_in_flight(conn, llm, dsn, workers):
    from scripted_llm import hang
    setup_agent(conn, llm)
    second_tenant(conn, llm)
    llm.responder = lambda body: hang(0.05, text("ok"))
    conn.execute("SET pgagent.tenant = 'beta'")
    conn.execute("SELECT pgagent.set_limits(max_running_turns => 1)")
    enqueue(conn, 6, agent="helper")
    conn.execute("RESET pgagent.tenant")
    conn.execute("SELECT pgagent.create_agent('solo', model => 'scripted', config => '{\"max_running_turns\": 2}')")
    enqueue(conn, 8, agent="solo")
    start_worker(workers, dsn, concurrency=4)
    assert wait_until(lambda: conn.execute("SELECT count(*) FROM pgagent.turn WHERE status = 'completed'")
                      .fetchone()[0] == 14, timeout=60)
    beta = conn.execute("SELECT tenant_id FROM pgagent.tenant WHERE name = 'beta'").fetchone()[0]
    assert overlaps(conn, "t.tenant_id = %s", [beta]) == 1
    solo = overlaps(conn, """t.tenant_id = pgagent.default_tenant_id() AND t.conversation_id IN
                             (SELECT conversation_id FROM pgagent.conversation c JOIN pgagent.agent a USING (tenant_id, agent_id)
                               WHERE a.name = 'solo')""", [])
    assert solo == 2


# ---------------------------------------------------------------------------- approvals

def test_an_approved_call_is_continued_by_a_worker(conn, llm, dsn, workers):
    setup_agent(conn, llm, bump_approval=True)
    llm.responder = bump_then_answer
    [turn] = enqueue(conn, 1)
    w, ev = start_worker(workers, dsn, concurrency=1)
    assert wait_until(lambda: statuses(conn, [turn]) == {"awaiting_approval": 1}, timeout=20)
    # parked: no worker claims it while it waits for a human
    assert conn.execute("SELECT lease_expires_at = 'infinity' FROM pgagent.turn WHERE turn_id = %s",
                        [turn]).fetchone()[0]
    time.sleep(1.0)
    assert conn.execute("SELECT count(*) FROM public.bumps").fetchone()[0] == 0
    call = conn.execute("SELECT step_id FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_call'", [turn]).fetchone()[0]
    conn.execute("SELECT pgagent.approve_step(%s, true, 'ok')", [call])
    ok = wait_until(lambda: statuses(conn, [turn]) == {"completed": 1}, timeout=20)
    assert ok, (conn.execute("SELECT status, lease_owner, lease_expires_at::text, run_after FROM pgagent.turn WHERE turn_id = %s", [turn]).fetchone(), ev, conn.execute("SELECT kind, payload FROM pgagent.step WHERE turn_id = %s ORDER BY seq", [turn]).fetchall())
    assert [r[0] for r in conn.execute("SELECT n FROM public.bumps")] == [1]


# ---------------------------------------------------------------------------- stopping

def worker_cmd(dsn: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pgagent_worker", "worker", "--dsn", dsn, "--log-format", "json",
            "--poll-s", "0.5", *extra]


def spawn(dsn: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    return subprocess.Popen(worker_cmd(dsn, *extra), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def log_lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_sigterm_finishes_the_step_in_flight_releases_the_turn_and_exits(conn, llm, dsn):
    from scripted_llm import hang
    setup_agent(conn, llm)
    llm.script(hang(2.0, tool_calls([("bump", {"n": 7})])), text("done"))
    [turn] = enqueue(conn, 1)
    p = spawn(dsn, "--concurrency", "1")
    try:
        assert wait_until(lambda: len(llm.requests) == 1, timeout=20)
        time.sleep(0.3)                      # inside the 2 s LLM call
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 0, err
    # the LLM call in flight completed and its steps were committed; then the turn was released
    kinds = [r[0] for r in conn.execute("SELECT kind FROM pgagent.step WHERE turn_id = %s ORDER BY seq", [turn])]
    assert kinds[:3] == ["user_message", "llm_call", "tool_call"]
    assert conn.execute("SELECT status, lease_expires_at <= now() FROM pgagent.turn WHERE turn_id = %s",
                        [turn]).fetchone() == ("running", True)
    lines = log_lines(err)
    assert any(e["event"] == "turn" and e.get("outcome") == "released" for e in lines), err
    assert lines[-1]["event"] == "exit"
    # another worker finishes it (the bump ran once)
    p2 = spawn(dsn, "--once")
    p2.communicate(timeout=30)
    assert statuses(conn, [turn]) == {"completed": 1}
    assert [r[0] for r in conn.execute("SELECT n FROM public.bumps")] == [7]


def test_a_second_sigint_exits_at_once_and_loses_nothing_committed(conn, llm, dsn):
    from scripted_llm import hang
    setup_agent(conn, llm)
    llm.script(hang(5.0, text("slow")), text("again"))
    [turn] = enqueue(conn, 1)
    p = spawn(dsn, "--concurrency", "1", "--lease-ms", "500")
    try:
        assert wait_until(lambda: len(llm.requests) == 1, timeout=20)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
        took = time.monotonic() - t0
    finally:
        p.kill()
    assert p.returncode == 130 and took < 4.0, (took, err)
    # the cancelled LLM call left no step; the turn is resumed by another worker once the lease expired
    kinds = [r[0] for r in conn.execute("SELECT kind FROM pgagent.step WHERE turn_id = %s ORDER BY seq", [turn])]
    assert kinds == ["user_message"]
    p2 = spawn(dsn, "--once")
    p2.communicate(timeout=30)
    assert statuses(conn, [turn]) == {"completed": 1}


# ---------------------------------------------------------------------------- schedules

def test_schedule_validates_and_unschedule_removes(conn, llm):
    setup_agent(conn, llm)
    sid = conn.execute("SELECT pgagent.schedule('analyst', '*/5 * * * *', 'report', name => 'five')").fetchone()[0]
    nxt, tz = conn.execute("SELECT next_fire_at, timezone FROM pgagent.schedule WHERE schedule_id = %s", [sid]).fetchone()
    assert tz == "UTC" and nxt.minute % 5 == 0 and nxt.second == 0
    # the same name replaces it; a time zone moves the due times
    conn.execute("SELECT pgagent.schedule('analyst', '0 9 * * *', 'morning', timezone => 'Asia/Kolkata', name => 'five')")
    nxt = conn.execute("SELECT next_fire_at FROM pgagent.schedule WHERE name = 'five'").fetchone()[0]
    assert (nxt.hour, nxt.minute) == (3, 30)          # 09:00 IST is 03:30 UTC
    for cron, tz, state in [("* * *", "UTC", "22023"), ("61 * * * *", "UTC", "22023"), ("* * * * *", "Mars/Base", "22023")]:
        with pytest.raises(psycopg.Error) as e:
            conn.execute("SELECT pgagent.schedule('analyst', %s, 'x', timezone => %s)", [cron, tz])
        assert e.value.sqlstate == state
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("SELECT pgagent.schedule('nobody', '* * * * *', 'x')")
    assert conn.execute("SELECT pgagent.unschedule('five')").fetchone()[0] is True
    assert conn.execute("SELECT pgagent.unschedule('five')").fetchone()[0] is False
    actions = [r[0] for r in conn.execute("SELECT action FROM pgagent.audit_event WHERE object_type = 'schedule' "
                                          "ORDER BY chain_seq")]
    assert actions == ["schedule_set", "schedule_set", "schedule_removed"]


def test_three_workers_fire_each_due_time_exactly_once_over_ten_simulated_minutes(conn, llm, dsn):
    import random
    setup_agent(conn, llm)
    conn.execute("SELECT pgagent.schedule('analyst', '* * * * *', 'tick', name => 'every-minute')")
    conn.execute("SELECT pgagent.schedule('analyst', '*/3 * * * *', 'tock', name => 'every-third')")
    start = conn.execute("SELECT date_trunc('minute', now()) - interval '11 minutes'").fetchone()[0]
    # as if the schedules had been set 11 minutes ago
    conn.execute("UPDATE pgagent.schedule SET next_fire_at = pgagent._cron_next(cron, timezone, %s)", [start])
    end = conn.execute("SELECT now()").fetchone()[0]
    errors: list[BaseException] = []
    # one simulated clock for all, moved on in steps of up to 20 s; each worker reads it with its
    # own skew of up to 2 s behind, and they race each other on every tick
    from datetime import timedelta
    clock = {"now": start, "tick": 0}
    served = [0, 0, 0]
    done = threading.Event()

    def worker(i: int) -> None:
        rnd = random.Random(i)
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                while not done.is_set():
                    tick, now = clock["tick"], clock["now"]
                    at = now - timedelta(seconds=rnd.uniform(0, 2))
                    c.execute("SELECT pgagent.fire_schedules(%s)", [max(at, start)])
                    served[i] = tick
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    rnd = random.Random(7)
    while clock["now"] < end and not errors:
        # the clock moves on once every worker has fired at the current time
        wait_until(lambda: min(served) >= clock["tick"], timeout=10, every=0.002)
        clock["now"], clock["tick"] = min(clock["now"] + timedelta(seconds=rnd.uniform(1, 20)), end), clock["tick"] + 1
    wait_until(lambda: min(served) >= clock["tick"], timeout=10, every=0.002)
    done.set()
    for t in threads:
        t.join(60)
    conn.execute("SELECT pgagent.fire_schedules(%s)", [end])    # the last tick, without skew
    assert not errors, errors
    fired = conn.execute("""SELECT s.name, f.due_at, f.turn_id FROM pgagent.schedule_firing f
                              JOIN pgagent.schedule s USING (tenant_id, schedule_id) ORDER BY 1, 2""").fetchall()
    minutes = conn.execute("SELECT m FROM generate_series(%s::timestamptz + interval '1 minute', %s, interval '1 minute') m",
                           [start, end]).fetchall()
    every = [due for name, due, _ in fired if name == "every-minute"]
    third = [due for name, due, _ in fired if name == "every-third"]
    assert every == [m for (m,) in minutes]                       # each due time once, none missed
    assert third == [m for (m,) in minutes if m.minute % 3 == 0]
    # one queued turn per firing, each in a new conversation with the schedule's message
    turns = conn.execute("""SELECT t.user_message, c.metadata ->> 'schedule' FROM pgagent.schedule_firing f
                              JOIN pgagent.turn t ON t.tenant_id = f.tenant_id AND t.turn_id = f.turn_id
                              JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
                             ORDER BY f.due_at""").fetchall()
    assert len(turns) == len(fired) == len({r[2] for r in fired})
    assert {(m, s) for m, s in turns} == {("tick", "every-minute"), ("tock", "every-third")}


def test_a_running_worker_fires_a_due_schedule_and_answers_it(conn, llm, dsn, workers):
    setup_agent(conn, llm)
    llm.responder = lambda body: text("scheduled answer")
    # yearly: its next due time after this one is months away, whatever the time of the test
    conn.execute("SELECT pgagent.schedule('analyst', '0 0 1 1 *', 'status report', name => 'report')")
    conn.execute("UPDATE pgagent.schedule SET next_fire_at = now() - interval '1 second'")
    w, ev = start_worker(workers, dsn, concurrency=1)
    assert wait_until(lambda: conn.execute("SELECT count(*) FROM pgagent.turn WHERE status = 'completed' "
                                           "AND user_message = 'status report'").fetchone()[0] == 1, timeout=20)
    assert conn.execute("SELECT count(*) FROM pgagent.schedule_firing").fetchone()[0] == 1
    # the turn is the schedule owner's, and the next due time moved on
    assert conn.execute("SELECT created_by FROM pgagent.turn WHERE user_message = 'status report'").fetchone()[0] == "postgres"
    assert conn.execute("SELECT next_fire_at > now() FROM pgagent.schedule").fetchone()[0]


# ---------------------------------------------------------------------------- on_insert

def test_on_insert_enqueues_in_the_inserting_transaction(conn, llm, dsn, workers):
    setup_agent(conn, llm)
    llm.responder = lambda body: text("triaged")
    conn.execute("CREATE TABLE public.tickets (id int PRIMARY KEY, subject text, body text)")
    conn.execute("CREATE ROLE app_writer LOGIN")
    conn.execute("GRANT INSERT ON public.tickets TO app_writer")
    rid = conn.execute("SELECT pgagent.on_insert('public.tickets', 'analyst', 'New ticket {id}: {subject}')").fetchone()[0]
    app = psycopg.connect(dsn.replace("user=postgres", "user=app_writer"))
    try:
        # a rolled-back insert enqueues nothing
        app.execute("INSERT INTO public.tickets VALUES (1, 'lost', 'never')")
        app.rollback()
        assert conn.execute("SELECT count(*) FROM pgagent.turn").fetchone()[0] == 0
        # a committed one enqueues one turn, even for a role that is no pgagent member
        app.execute("INSERT INTO public.tickets VALUES (2, 'printer on fire', 'help')")
        app.commit()
    finally:
        app.close()
    msg, status, by = conn.execute("SELECT user_message, status, created_by FROM pgagent.turn").fetchone()
    assert status == "queued" and by == "postgres"
    assert msg.startswith("New ticket 2: printer on fire") and '"body": "help"' in msg
    meta = conn.execute("SELECT metadata FROM pgagent.conversation ORDER BY conversation_id DESC LIMIT 1").fetchone()[0]
    assert meta == {"source": "on_insert", "table": "public.tickets", "insert_trigger_id": rid}
    start_worker(workers, dsn, concurrency=1)
    assert wait_until(lambda: conn.execute("SELECT status FROM pgagent.turn").fetchone()[0] == "completed", timeout=20)
    # off_insert removes the trigger: new rows enqueue nothing
    assert conn.execute("SELECT pgagent.off_insert('public.tickets', 'analyst')").fetchone()[0] is True
    conn.execute("INSERT INTO public.tickets VALUES (3, 'quiet', '')")
    assert conn.execute("SELECT count(*) FROM pgagent.turn").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.tickets'::regclass").fetchone()[0] == 0


def test_on_insert_needs_the_trigger_privilege_and_cannot_be_forged(conn, llm, dsn):
    setup_agent(conn, llm)
    conn.execute("CREATE TABLE public.mine (id int)")
    conn.execute("CREATE ROLE boss LOGIN")
    conn.execute("GRANT pgagent_admin TO boss")
    conn.execute("SELECT pgagent.add_member('default', 'boss')")
    conn.execute("CREATE TABLE public.theirs (id int)")
    conn.execute("CREATE SCHEMA boss AUTHORIZATION boss")
    boss = psycopg.connect(dsn.replace("user=postgres", "user=boss"), autocommit=True)
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            boss.execute("SELECT pgagent.on_insert('public.theirs', 'analyst', 'x')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            boss.execute("SELECT pgagent.on_insert('pgagent.turn', 'analyst', 'x')")
        # a trigger made by hand with pgagent's trigger function: no EXECUTE on it
        boss.execute("CREATE TABLE boss.t (id int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            boss.execute("CREATE TRIGGER t AFTER INSERT ON boss.t FOR EACH ROW EXECUTE FUNCTION "
                         "pgagent._on_insert_row('00000000-0000-0000-0000-000000000000', '1')")
        conn.execute("GRANT TRIGGER ON public.theirs TO boss")
        assert boss.execute("SELECT pgagent.on_insert('public.theirs', 'analyst', 'x')").fetchone()[0] > 0
    finally:
        boss.close()


# ---------------------------------------------------------------------------- housekeeping

def test_housekeeping_stops_silent_workers_fails_stuck_turns_and_applies_retention(conn, llm, dsn):
    setup_agent(conn, llm)
    llm.responder = lambda body: text("ok")
    # a worker that went silent while holding a live lease
    [held] = enqueue(conn, 1)
    conn.execute("SELECT * FROM pgagent.claim_turn('ghost:1:abcd', 600000)")
    conn.execute("SET session_replication_role = replica")   # backdate the heartbeat (triggers off)
    conn.execute("UPDATE pgagent.worker SET heartbeat_at = now() - interval '10 minutes'")
    conn.execute("RESET session_replication_role")
    # a turn left running by a client that went away (external runtime mode, no lease)
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    stuck = conn.execute("SELECT pgagent.enqueue_message(%s, 'external')", [cid]).fetchone()[0]
    conn.execute("SELECT pgagent.prepare_turn(%s)", [stuck])
    # an old finished conversation, and retention of 30 days
    old = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    conn.execute("SELECT pgagent.send_message(%s, 'old')", [old])
    conn.execute("SET session_replication_role = replica")
    conn.execute("UPDATE pgagent.conversation SET created_at = now() - interval '40 days' WHERE conversation_id = %s", [old])
    conn.execute("UPDATE pgagent.turn SET created_at = now() - interval '40 days', started_at = now() - interval '40 days', "
                 "finished_at = now() - interval '40 days' WHERE conversation_id = %s", [old])
    conn.execute("RESET session_replication_role")
    conn.execute("SELECT pgagent.set_limits(NULL, 30)")
    out = conn.execute("SELECT pgagent.housekeeping(stuck_after => '0 seconds')").fetchone()[0]
    assert out == {"workers_stopped": 1, "leases_released": 1, "turns_failed": 1, "conversations_deleted": 1}
    assert conn.execute("SELECT lease_expires_at <= now() FROM pgagent.turn WHERE turn_id = %s", [held]).fetchone()[0]
    status, error = conn.execute("SELECT status, error FROM pgagent.turn WHERE turn_id = %s", [stuck]).fetchone()
    assert status == "failed" and error.startswith("stuck:")
    assert conn.execute("SELECT payload ->> 'error_kind' FROM pgagent.step WHERE turn_id = %s ORDER BY seq DESC LIMIT 1",
                        [stuck]).fetchone()[0] == "stuck"
    assert conn.execute("SELECT count(*) FROM pgagent.conversation WHERE conversation_id = %s", [old]).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pgagent.audit_event WHERE action = 'conversation_deleted'").fetchone()[0] == 1
    assert conn.execute("SELECT ok FROM pgagent.verify_audit_chain()").fetchone()[0]
    # the released turn is claimable and a worker finishes it; a second housekeeping finds nothing
    assert conn.execute("SELECT turn_id FROM pgagent.claim_turn('w2:2:abcd')").fetchone()[0] == held
    out = conn.execute("SELECT pgagent.housekeeping(stuck_after => '1 hour')").fetchone()[0]
    assert out == {"workers_stopped": 0, "leases_released": 0, "turns_failed": 0, "conversations_deleted": 0}


def test_a_parked_turn_can_still_be_run_by_a_plain_session(conn, llm, dsn, workers):
    """A worker parked the turn for an approval (lease until infinity): a plain CALL run_turn is
    not refused as if a worker held it, and approving and running it from SQL finishes it."""
    setup_agent(conn, llm, bump_approval=True)
    llm.responder = bump_then_answer
    [turn] = enqueue(conn, 1)
    w, ev = start_worker(workers, dsn, concurrency=1)
    assert wait_until(lambda: statuses(conn, [turn]) == {"awaiting_approval": 1}, timeout=20)
    w.stop()
    w.wait(timeout=15)
    r = conn.execute("CALL pgagent.run_turn(%s)", [turn]).fetchone()[0]
    assert r["status"] == "awaiting_approval" and r["pending_approvals"]
    call = r["pending_approvals"][0]["step_id"]
    conn.execute("SELECT pgagent.approve_step(%s, true, 'ok')", [call])
    r = conn.execute("CALL pgagent.run_turn(%s)", [turn]).fetchone()[0]
    assert r["status"] == "completed"
    assert [row[0] for row in conn.execute("SELECT n FROM public.bumps")] == [1]
