"""Crash trials (issue 9): 100 SIGKILLs at random moments while two `pgagent worker` processes
run a stream of multi-step turns with side-effecting tools (a function tool that writes a row,
exactly once; an http tool, at least once, with an Idempotency-Key), half of them on a backend
running CALL pgagent.run_turn (the postmaster then restarts every backend: crash recovery),
half on a worker process (another one is started). After the trials every turn must be
completed, with every step committed before a kill still there unchanged, no step twice, one
row per function tool_result and one distinct Idempotency-Key per http tool_result. Then a
frozen backend (SIGSTOP) loses its turn to another worker once its lease expires, and the
turn finishes once.

The trials run on a cluster of their own: killing a backend restarts the whole cluster."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from pgcluster import Cluster
from scripted_llm import Reply, ScriptedLLM, hang, text, tool_calls

ROOT = Path(__file__).resolve().parents[2]
TRIALS = int(os.environ.get("PGAGENT_CRASH_TRIALS", "100"))
BUMP = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
ORDER = {"type": "object", "properties": {"item": {"type": "string"}}, "required": ["item"]}


class Recorder(BaseHTTPRequestHandler):
    """The http tool's server: records each request's Idempotency-Key."""

    keys: list[str] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with Recorder.lock:
            Recorder.keys.append(self.headers.get("Idempotency-Key") or "")
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: Any) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    """A client killed mid-request is expected here: no traceback on stderr."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def three_calls(body: dict[str, Any]) -> Reply:
    """Turn "job <k>": 1st call bump(k) + order(k); 2nd bump(100000 + k); 3rd the answer. A
    random 0-20 ms inside each call, so that kills also land in LLM calls."""
    msgs = body["messages"]
    k = int(next(m["content"] for m in msgs if m["role"] == "user").split()[-1])
    done = sum(1 for m in msgs if m["role"] == "tool")
    reply = (tool_calls([("bump", {"n": k}), ("order", {"item": f"item-{k}"})]) if done == 0 else
             tool_calls([("bump", {"n": 100000 + k})]) if done == 2 else text(f"job {k} done"))
    return hang(random.uniform(0, 0.02), reply)


EXPECTED = ["user_message", "llm_call", "tool_call", "tool_call", "tool_result", "tool_result",
            "llm_call", "tool_call", "tool_result", "llm_call", "response"]


@pytest.fixture(scope="module")
def crash_cluster() -> Iterator[Cluster]:
    c = Cluster().start()
    try:
        with psycopg.connect(c.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET restart_after_crash = on")
            conn.execute("SELECT pg_reload_conf()")
            conn.execute("CREATE DATABASE crash")
        yield c
    finally:
        c.stop()


def connect(dsn: str, timeout: float = 30.0) -> psycopg.Connection:
    """A connection, retried while the cluster recovers from a crash. The test cluster runs
    with synchronous_commit = off (scripts/pgcluster.py): this connection's own commits (the
    enqueued turns) are made durable; run_turn makes its steps durable by itself."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(dsn, autocommit=True, connect_timeout=2, options="-c synchronous_commit=on")
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def spawn(dsn: str, name: str, concurrency: int = 2) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    return subprocess.Popen([sys.executable, "-m", "pgagent_worker", "worker", "--dsn", dsn, "--concurrency",
                             str(concurrency),
                             "--lease-ms", "300", "--poll-s", "0.2", "--worker-id", name, "--log-format", "json"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def setup(conn: psycopg.Connection, llm: ScriptedLLM, http_port: int) -> None:
    conn.execute("CREATE EXTENSION IF NOT EXISTS pgagent CASCADE")
    conn.execute("CREATE TABLE public.bumps (n int NOT NULL)")
    conn.execute("CREATE FUNCTION public.bump(n int) RETURNS text LANGUAGE sql AS "
                 "$$ INSERT INTO public.bumps VALUES (n) RETURNING 'bumped ' || n $$")
    conn.execute("GRANT SELECT, INSERT ON public.bumps TO pgagent_sandbox")
    # the model's and the tools' timeouts (300 ms) bound a unit: L = 1.3 s, a lease is renewed to
    # 2L = 2.6 s, so a dead worker's turn is taken over quickly
    conn.execute("SELECT pgagent.register_model('scripted', base_url => %s, timeout_ms => 300, max_retries => 5)",
                 [llm.base_url])
    conn.execute("SELECT pgagent.register_tool('bump', 'Record a bump', %s, kind => 'function', "
                 "config => '{\"function\": \"public.bump\"}', timeout_ms => 300)", [json.dumps(BUMP)])
    conn.execute("SELECT pgagent.allow_egress('127.0.0.1')")
    conn.execute("INSERT INTO pgagent.egress_exception (tenant_id, network, note) "
                 "VALUES (pgagent.current_tenant(), '127.0.0.1/32', 'crash trial server')")
    conn.execute("SELECT pgagent.register_tool('order', 'Place an order', %s, kind => 'http', config => %s, "
                 "timeout_ms => 300)",
                 [json.dumps(ORDER), json.dumps({"url": f"http://127.0.0.1:{http_port}/orders", "method": "POST",
                                                 "body_arg": "item"})])
    conn.execute("SELECT pgagent.create_agent('jobs', model => 'scripted', tools => '{bump,order}', "
                 "config => '{\"retry_base_ms\": 20, \"max_steps\": 10}')")


def enqueue(conn: psycopg.Connection, k: int) -> int:
    cid = conn.execute("SELECT pgagent.start_conversation('jobs')").fetchone()[0]
    return conn.execute("SELECT pgagent.enqueue_message(%s, %s)", [cid, f"job {k}"]).fetchone()[0]


def committed_steps(conn: psycopg.Connection) -> dict[int, tuple[int, int, str, bytes]]:
    return {r[0]: r[1:] for r in conn.execute("SELECT step_id, turn_id, seq, kind, hash FROM pgagent.step")}


def test_100_sigkills_lose_no_committed_step_and_run_no_tool_twice(crash_cluster):
    dsn = crash_cluster.dsn("crash")
    server = QuietServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Recorder.keys.clear()
    rnd = random.Random(20261204)
    workers: list[subprocess.Popen] = []
    outcomes: Counter[str] = Counter()
    with ScriptedLLM() as llm:
        llm.responder = three_calls
        conn = connect(dsn)
        setup(conn, llm, server.server_address[1])
        turns: list[int] = []
        k = 0
        try:
            workers = [spawn(dsn, "w0"), spawn(dsn, "w1")]
            names = 2
            seen: dict[int, tuple[int, int, str, bytes]] = {}
            trial = 0
            while trial < TRIALS:
                try:
                    while conn.execute("SELECT count(*) FROM pgagent.turn WHERE status <> 'completed'").fetchone()[0] < 6:
                        k += 1
                        turns.append(enqueue(conn, k))
                    time.sleep(rnd.uniform(0.02, 0.3))
                    before = committed_steps(conn)
                    in_flight = conn.execute("SELECT count(*) FROM pgagent.turn WHERE status = 'running'").fetchone()[0]
                    backends = conn.execute("""SELECT pid FROM pg_stat_activity WHERE datname = 'crash'
                                                AND application_name LIKE 'pgagent worker%%'
                                                AND query LIKE 'CALL pgagent.run_turn%%' AND state = 'active'""").fetchall()
                except psycopg.OperationalError:   # still recovering from the last kill
                    conn = connect(dsn)
                    continue
                seen.update(before)
                trial += 1
                if trial % 2 == 0 and not backends:
                    # wait for a backend inside CALL run_turn, to kill it there (after a backend kill
                    # the workers reconnect with a backoff of up to seconds on a slow machine)
                    until = time.monotonic() + 8.0
                    while time.monotonic() < until:
                        time.sleep(0.01)
                        backends = conn.execute("""SELECT pid FROM pg_stat_activity WHERE datname = 'crash'
                                                    AND application_name LIKE 'pgagent worker%%'
                                                    AND query LIKE 'CALL pgagent.run_turn%%' AND state = 'active'""").fetchall()
                        if backends:
                            break
                if trial % 2 == 0 and backends:
                    pid = rnd.choice(backends)[0]
                    os.kill(pid, signal.SIGKILL)          # the postmaster restarts every backend
                    outcomes["backend killed"] += 1
                else:
                    victim = rnd.randrange(len(workers))
                    workers[victim].kill()                # SIGKILL: no goodbye, leases left behind
                    workers[victim].wait()
                    workers[victim] = spawn(dsn, f"w{names}")
                    names += 1
                    outcomes["worker killed"] += 1
                outcomes["turns running at a kill"] += in_flight
                conn.close()
                conn = connect(dsn)
            # drain: every turn completes
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    left = conn.execute("SELECT count(*) FROM pgagent.turn WHERE status <> 'completed'").fetchone()[0]
                except psycopg.OperationalError:
                    conn = connect(dsn)
                    continue
                if left == 0:
                    break
                time.sleep(0.2)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            for w in workers:
                try:
                    w.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    w.kill()
            server.shutdown()
        conn = connect(dsn)
        status = dict(conn.execute("SELECT status, count(*) FROM pgagent.turn GROUP BY 1").fetchall())
        after = committed_steps(conn)
        lost = [sid for sid, row in seen.items() if after.get(sid) != row]
        kinds = dict(conn.execute("SELECT turn_id, array_agg(kind ORDER BY seq) FROM pgagent.step GROUP BY 1").fetchall())
        gaps = conn.execute("""SELECT count(*) FROM (SELECT turn_id, max(seq) <> count(*) AS gap FROM pgagent.step
                                GROUP BY turn_id) g WHERE gap""").fetchone()[0]
        broken = [t for t in turns if not conn.execute("SELECT ok FROM pgagent.verify_turn(%s)", [t]).fetchone()[0]]
        bump_results = conn.execute("SELECT count(*) FROM pgagent.step WHERE kind = 'tool_result' "
                                    "AND tool_name = 'bump'").fetchone()[0]
        bumps = [r[0] for r in conn.execute("SELECT n FROM public.bumps")]
        tenant = conn.execute("SELECT pgagent.current_tenant()::text").fetchone()[0]
        order_keys = {f"pgagent-{tenant}-{r[0]}" for r in conn.execute(
            "SELECT parent_step_id FROM pgagent.step WHERE kind = 'tool_result' AND tool_name = 'order'")}
        sent = Counter(Recorder.keys)
        print(f"\ncrash trials: {sum(outcomes[m] for m in ('backend killed', 'worker killed'))} SIGKILLs "
              f"({outcomes['backend killed']} of a backend running a turn, {outcomes['worker killed']} of a worker "
              f"process), {outcomes['turns running at a kill']} turns with status running at the kills (summed); {len(turns)} turns: "
              f"{status}; committed steps checked: {len(seen)}, lost or changed: {len(lost)}; steps not in the "
              f"expected order: {sum(1 for t in turns if kinds.get(t) != EXPECTED)}; function tool_results "
              f"{bump_results}, rows {len(bumps)} (distinct {len(set(bumps))}); http tool_results {len(order_keys)}, "
              f"requests {sum(sent.values())}, distinct keys {len(sent)}, keys sent twice or more "
              f"{sum(1 for v in sent.values() if v > 1)}")
        assert sum(outcomes[m] for m in ("backend killed", "worker killed")) == TRIALS
        assert outcomes["backend killed"] >= TRIALS // 4
        assert status == {"completed": len(turns)}
        assert lost == []
        assert all(kinds[t] == EXPECTED for t in turns)
        assert gaps == 0 and broken == []
        assert len(bumps) == bump_results == 2 * len(turns) and len(set(bumps)) == len(bumps)
        assert set(sent) == order_keys and len(order_keys) == len(turns)


def test_a_frozen_backend_loses_its_turn_after_the_lease_and_it_finishes_once(crash_cluster):
    dsn = crash_cluster.dsn("crash")
    with ScriptedLLM() as llm:
        conn = connect(dsn)
        if not conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pgagent'").fetchone()[0]:
            setup(conn, llm, 9)
        conn.execute("SELECT pgagent.update_model('scripted', base_url => %s, timeout_ms => 1000)", [llm.base_url])
        conn.execute("CREATE TABLE IF NOT EXISTS public.frozen (n int)")
        conn.execute("TRUNCATE public.bumps")
        # the first call's reply comes after 0.5 s: the first worker's backend is frozen inside it;
        # the second worker makes the same call again and gets the same reply
        llm.responder = lambda body: (text("finished") if body["messages"][-1]["role"] == "tool"
                                      else hang(0.5, tool_calls([("bump", {"n": 4242})])))
        turn = enqueue(conn, 4242)
        before = len(llm.requests)
        first = spawn(dsn, "frozen-one", concurrency=1)   # its only slot's backend is frozen
        second = None
        try:
            deadline = time.monotonic() + 20
            pid = None
            # freeze it inside the model call (the server has the request), where it holds no row
            # lock: a backend frozen while it writes a step keeps the turn's row locked, and no
            # lease can take that over (see docs/durability.md)
            while len(llm.requests) == before and time.monotonic() < deadline:
                time.sleep(0.005)
            while pid is None and time.monotonic() < deadline:
                row = conn.execute("""SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'pgagent worker frozen-one%%'
                                       AND query LIKE 'CALL pgagent.run_turn%%' AND state = 'active'""").fetchone()
                pid = row[0] if row else None
                time.sleep(0.01)
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            t_stop = time.monotonic()
            expires = conn.execute("SELECT lease_expires_at FROM pgagent.turn WHERE turn_id = %s", [turn]).fetchone()[0]
            second = spawn(dsn, "second", concurrency=1)
            ok = False
            while time.monotonic() - t_stop < 30:
                if conn.execute("SELECT status FROM pgagent.turn WHERE turn_id = %s", [turn]).fetchone()[0] == "completed":
                    ok = True
                    break
                time.sleep(0.05)
            took = time.monotonic() - t_stop
            owner_at_end = conn.execute("SELECT count(*) FROM pgagent.step WHERE turn_id = %s", [turn]).fetchone()[0]
            # wake the frozen backend: its unit must not commit anything now
            os.kill(pid, signal.SIGCONT)
            time.sleep(1.5)
        finally:
            for p in (first, second):
                if p is not None:
                    p.send_signal(signal.SIGTERM)
            for p in (first, second):
                if p is not None:
                    try:
                        p.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        p.kill()
        log2 = second.stderr.read() if second is not None and second.stderr else ""
        assert ok, "the second worker did not take the turn over\n" + log2
        # taken over only once the lease (the 1 s model timeout + 1 s) expired
        first_new = conn.execute("SELECT min(created_at) FROM pgagent.step WHERE turn_id = %s AND seq > 1",
                                 [turn]).fetchone()[0]
        print("\n" + "\n".join(line for line in log2.splitlines() if '"turn"' in line or "claim" in line)
              + f"\nlease at SIGSTOP until {expires}, first step of the second worker at {first_new}")
        assert first_new >= expires, (first_new, expires)
        kinds = [r[0] for r in conn.execute("SELECT kind FROM pgagent.step WHERE turn_id = %s ORDER BY seq", [turn])]
        assert kinds == ["user_message", "llm_call", "tool_call", "tool_result", "llm_call", "response"]
        assert len(kinds) == owner_at_end
        assert [r[0] for r in conn.execute("SELECT n FROM public.bumps")] == [4242]
        print(f"\nfrozen backend: taken over and finished {took:.2f} s after SIGSTOP; the woken backend wrote nothing")
