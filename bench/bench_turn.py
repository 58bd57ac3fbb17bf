"""Benchmark: the cost pgagent adds to a turn, measured against a plain Python loop.

A turn here is the reference workload of DEVELOPERS.md: two LLM calls (the first asks for a
``run_sql`` tool call, the second answers) against an instant OpenAI-compatible server on
127.0.0.1 (HTTP/1.1 keep-alive), one SQL tool run, every step recorded. Measured:

* ``send_message``: the whole turn in one transaction, inside the database;
* ``run_turn``: ``enqueue_message`` + ``CALL pgagent.run_turn`` committing after every step;
* ``plain loop``: requests + psycopg from a client process, commit per step, the same rows;
* backend memory (RssAnon: private, kB) before and after the send_message runs (a leak shows as growth).

Writes ``bench/results.md`` (and prints it). Usage: ``make bench`` or
``.venv/bin/python bench/bench_turn.py [--turns N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import socket
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import releases  # noqa: E402
from pgcluster import Cluster  # noqa: E402

TOOL_CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function",
     "function": {"name": "run_sql", "arguments": json.dumps({"query": "SELECT count(*) AS n FROM t WHERE x > 5"})}}]}


class InstantLLM(BaseHTTPRequestHandler):
    """Answers a tool call to the first request of a turn, then a final answer."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # without this, Nagle + delayed ACK add ~40 ms to every keep-alive reply
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        last = body["messages"][-1]["role"]
        msg = TOOL_CALL if last == "user" else {"role": "assistant", "content": "There are 4 rows."}
        out = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                          "choices": [{"index": 0, "message": msg,
                                       "finish_reason": "tool_calls" if last == "user" else "stop"}],
                          "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


def timed(n: int, fn: Callable[[int], None]) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def stats(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {"median": statistics.median(ms), "p95": ms[int(len(ms) * 0.95) - 1], "mean": statistics.fmean(ms)}


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of /proc/<pid>/status in kB: VmRSS (all resident pages, including the
    shared buffers this backend has touched, which grow with the tables) or RssAnon (private
    memory: what a leak would grow)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def plain_loop(dsn: str, url: str) -> Callable[[int], None]:
    """The baseline: what a hand-written client loop does for the same turn."""
    conn = psycopg.connect(dsn)
    http = requests.Session()
    conn.execute("CREATE TABLE IF NOT EXISTS plain_step (id bigserial PRIMARY KEY, turn bigint, kind text, payload jsonb)")
    conn.execute("CREATE TABLE IF NOT EXISTS plain_turn (id bigserial PRIMARY KEY, status text, answer text)")
    conn.commit()

    def turn(_: int) -> None:
        tid = conn.execute("INSERT INTO plain_turn(status) VALUES ('running') RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO plain_step(turn, kind, payload) VALUES (%s, 'user_message', %s)",
                     [tid, json.dumps({"content": "How many?"})])
        conn.commit()
        messages: list[dict[str, Any]] = [{"role": "user", "content": "How many?"}]
        while True:
            r = http.post(url + "/chat/completions", json={"model": "m", "messages": messages}, timeout=10).json()
            msg = r["choices"][0]["message"]
            conn.execute("INSERT INTO plain_step(turn, kind, payload) VALUES (%s, 'llm_call', %s)", [tid, json.dumps(r)])
            conn.commit()
            messages.append({**msg, "content": msg["content"] or ""})
            if not msg.get("tool_calls"):
                conn.execute("UPDATE plain_turn SET status = 'completed', answer = %s WHERE id = %s",
                             [msg["content"], tid])
                conn.commit()
                return
            for tc in msg["tool_calls"]:
                q = json.loads(tc["function"]["arguments"])["query"]
                rows = conn.execute(f"SELECT coalesce(jsonb_agg(t), '[]') FROM ({q}) t").fetchone()[0]
                conn.execute("INSERT INTO plain_step(turn, kind, payload) VALUES (%s, 'tool_result', %s)",
                             [tid, json.dumps(rows)])
                conn.commit()
                messages.append({"role": "tool", "tool_call_id": tc["id"], "content": json.dumps(rows)})
    return turn


class PgAgentBench:
    """One database with pgagent (this version, or an earlier release by ``version``) set up for
    the reference turn; ``send`` and ``run`` do one turn each and check it."""

    def __init__(self, cluster: Cluster, dbname: str, url: str, version: str | None = None) -> None:
        cluster.createdb(dbname)
        self.conn = conn = psycopg.connect(cluster.dsn(dbname), autocommit=True)
        conn.execute("CREATE EXTENSION pgagent " + (f"VERSION '{version}' " if version else "") + "CASCADE")
        conn.execute("CREATE TABLE public.t AS SELECT g AS x FROM generate_series(1, 9) g")
        conn.execute("GRANT SELECT ON public.t TO pgagent_sandbox")  # sql tools run as the sandbox role
        conn.execute("SELECT pgagent.register_model('instant', base_url => %s, max_retries => 0)", [url])
        conn.execute("""SELECT pgagent.register_tool('run_sql', 'query', '{"type": "object", "properties":
                        {"query": {"type": "string"}}, "required": ["query"]}', kind => 'sql')""")
        conn.execute("SELECT pgagent.create_agent('bench', model => 'instant', tools => '{run_sql}', "
                     "config => '{\"history_turns\": 0}')")
        self.pid = conn.info.backend_pid

    def new_conv(self) -> int:
        """A new conversation with the bench agent."""
        return self.conn.execute("SELECT pgagent.start_conversation('bench')").fetchone()[0]

    def send(self, _: int) -> None:
        """One turn with send_message; asserts it completed with a successful tool run."""
        r = self.conn.execute("SELECT pgagent.send_message(%s, 'How many?')", [self.new_conv()]).fetchone()[0]
        assert r["status"] == "completed" and r["llm_calls"] == 2, r
        ok = self.conn.execute("SELECT NOT (payload->>'is_error')::boolean FROM pgagent.step WHERE turn_id = %s "
                               "AND kind = 'tool_result'", [r["turn_id"]]).fetchone()[0]
        assert ok, "the sql tool failed"

    def run(self, _: int) -> None:
        """One turn with enqueue_message + CALL run_turn; asserts it completed."""
        tid = self.conn.execute("SELECT pgagent.enqueue_message(%s, 'How many?')", [self.new_conv()]).fetchone()[0]
        r = self.conn.execute("CALL pgagent.run_turn(%s)", [tid]).fetchone()[0]
        assert r["status"] == "completed", r


def interleaved(n: int, rounds: int, fns: dict[str, Callable[[int], None]]) -> dict[str, list[float]]:
    """Time ``n`` calls of each function, in ``rounds`` alternating rounds, so that the CPU speed
    drift of a shared VM hits every function alike. Returns the samples (ms) by name."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds):
        for k, fn in (fns.items() if r % 2 == 0 else reversed(list(fns.items()))):
            out[k] += timed(n // rounds, fn)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--turns", type=int, default=300)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    ap.add_argument("--no-baseline", action="store_true",
                    help="do not measure the previous release (scripts/releases.py) in the same run")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), InstantLLM)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    n = args.turns
    prev = None
    with contextlib.ExitStack() as stack, Cluster() as cluster:
        cur = PgAgentBench(cluster, "bench", url)
        if not args.no_baseline:
            try:
                prev_version = stack.enter_context(releases.installed())
                prev = PgAgentBench(cluster, "bench_prev", url, prev_version)
            except releases.Unavailable as e:
                print(f"no baseline: {e}")
        for b in filter(None, (cur, prev)):   # warm-up: imports, plans, HTTP session
            timed(20, b.send)
            timed(10, b.run)
        rss0, anon0 = rss_kb(cur.pid), rss_kb(cur.pid, "RssAnon")
        send_ms = timed(n, cur.send)
        rss1, anon1 = rss_kb(cur.pid), rss_kb(cur.pid, "RssAnon")
        run_ms = timed(n, cur.run)
        steps = cur.conn.execute("SELECT count(*) FROM pgagent.step").fetchone()[0]
        turns = cur.conn.execute("SELECT count(*) FROM pgagent.turn WHERE status = 'completed'").fetchone()[0]
        if prev is not None:
            # the comparison runs on a fresh database of this version, with the same history as
            # the previous release's (the tables' size changes the cost of a turn)
            cmp_ = PgAgentBench(cluster, "bench_cmp", url)
            timed(20, cmp_.send)
            timed(10, cmp_.run)
            versus = interleaved(n, 6, {"send": cmp_.send, "prev_send": prev.send, "run": cmp_.run,
                                        "prev_run": prev.run})
            cmp_.conn.close()
        baseline = plain_loop(cluster.dsn("bench"), url)
        timed(20, baseline)
        plain_ms = timed(n, baseline)
        conv_ms = timed(n, lambda _: cur.conn.execute("SELECT pgagent.start_conversation('bench')"))
        for b in filter(None, (cur, prev)):
            b.conn.close()
    server.shutdown()

    s, r, p, c = stats(send_ms), stats(run_ms), stats(plain_ms), stats(conv_ms)
    lines = [
        "# pgagent benchmark results",
        "",
        f"Generated by `make bench` (bench/bench_turn.py) on {time.strftime('%Y-%m-%d')}, "
        f"{platform.machine()}, Python {platform.python_version()}, PostgreSQL 15, 2 cores.",
        f"Workload: {n} turns each; a turn = 2 LLM calls (tool call, then answer) to an instant local "
        "OpenAI-compatible server + 1 sql tool run, every step recorded (6 steps).",
        "",
        "| path | median ms | p95 ms | mean ms |",
        "|---|---:|---:|---:|",
        f"| pgagent.send_message (one transaction) | {s['median']:.2f} | {s['p95']:.2f} | {s['mean']:.2f} |",
        f"| enqueue_message + CALL pgagent.run_turn (commit per step) | {r['median']:.2f} | {r['p95']:.2f} | {r['mean']:.2f} |",
        f"| plain Python loop (requests + psycopg, commit per step) | {p['median']:.2f} | {p['p95']:.2f} | {p['mean']:.2f} |",
        f"| pgagent.start_conversation (for scale) | {c['median']:.2f} | {c['p95']:.2f} | {c['mean']:.2f} |",
        "",
        f"Backend private memory (RssAnon) across {n} send_message turns: {anon0} kB -> {anon1} kB "
        f"({anon1 - anon0:+d} kB, {(anon1 - anon0) / n:+.2f} kB/turn; a leak would grow this).",
        f"Backend VmRSS: {rss0} kB -> {rss1} kB ({rss1 - rss0:+d} kB; includes shared buffers touched as the "
        "tables grow, not a leak).",
        f"Rows written: {turns} completed turns, {steps} steps.",
        "",
        "Targets (DEVELOPERS.md): a plain loop does a 2-LLM-call turn in about 4 ms; LangGraph with its",
        "Postgres checkpointer in about 14 ms. pgagent should stay near the former.",
    ]
    if prev is not None:
        rows = [("send_message", "send", "prev_send"), ("enqueue_message + run_turn", "run", "prev_run")]
        lines += ["", f"## Against the previous release ({releases.PREVIOUS[0]}, commit {releases.PREVIOUS[1]}), same run",
                  "",
                  f"Both versions in the same cluster, in databases with the same history, {n} turns each, "
                  "timed in 6 alternating rounds (this VM's CPU speed drifts).", "",
                  f"| path | {releases.PREVIOUS[0]} median ms | this version median ms | change |",
                  "|---|---:|---:|---:|"]
        for label, now, before in rows:
            a_, b_ = stats(versus[before])["median"], stats(versus[now])["median"]
            lines.append(f"| {label} | {a_:.2f} | {b_:.2f} | {(b_ / a_ - 1) * 100:+.0f}% |")
    text = "\n".join(lines) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
