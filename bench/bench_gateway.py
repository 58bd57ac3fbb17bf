"""Benchmark: the HTTP gateway under load (issue 13).

A throwaway cluster, an instant OpenAI-compatible server on 127.0.0.1 (bench_turn's), one tenant
with an agent, and ``pgagent serve`` in a process of its own (``--pool-size 20``). Then, for
``--seconds`` (default 60): ``--sse`` (default 200) clients hold ``GET /v1/events`` streams (the
tenant's live feed, as the console uses it) while messages are sent at ``--rate`` (default 50)
per second (``POST /v1/conversations/{id}/messages``, each a whole turn: user message, one LLM
call, response), spread over 200 conversations. Reported: send latency p50/p95/p99 and errors,
and per SSE client the events received and the delay from a step's commit (its created_at) to
its arrival, p50/p95.

Writes the section "HTTP gateway" of ``bench/results.md``. Usage: ``make bench`` or
``.venv/bin/python bench/bench_gateway.py [--seconds 60] [--sse 200] [--rate 50]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
from pgcluster import Cluster  # noqa: E402
from sections import write_section  # noqa: E402

SETUP = """
CREATE ROLE bench_team NOLOGIN;
SELECT pgagent.add_tenant('bench', 'bench_team');
CREATE ROLE bench_app LOGIN IN ROLE pgagent_user, bench_team;
CREATE ROLE bench_admin LOGIN IN ROLE pgagent_admin, bench_team;
GRANT bench_app TO bench_admin;
CREATE ROLE bench_gw LOGIN IN ROLE pgagent_gateway;
GRANT bench_app TO bench_gw;
"""


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def sse_client(c: httpx.AsyncClient, base: str, key: str, stop: asyncio.Event, got: list[float],
                     counts: list[int], i: int, errors: list[str], connected: list[int]) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with c.stream("GET", base + "/v1/events", headers=headers) as r:
            if r.status_code != 200:
                errors.append(f"sse {r.status_code}")
                return
            connected[0] += 1
            buf = ""
            sampled = i % 20 == 0   # delays from a sample of the clients (parsing is the cost)
            tail = ""
            async for chunk in r.aiter_text():
                if not sampled:   # count the events without parsing them (a marker may span two chunks)
                    joined = tail + chunk
                    counts[i] += joined.count("\nevent: step\n")
                    tail = joined[-12:] if not joined.endswith("\nevent: step\n") else ""
                else:
                    buf += chunk
                    while "\n\n" in buf:
                        block, buf = buf.split("\n\n", 1)
                        if block.startswith("id:"):
                            data = json.loads(block.split("data: ", 1)[1])
                            counts[i] += 1
                            got.append(time.time() - datetime.fromisoformat(data["created_at"]).timestamp())
                if stop.is_set():
                    return
            errors.append("sse stream closed by the server")
    except (httpx.HTTPError, asyncio.CancelledError) as e:
        if not stop.is_set():
            errors.append(f"sse {type(e).__name__}")


async def sender(base: str, key: str, conversations: list[int], rate: float, seconds: float,
                 latencies: list[float], errors: list[str]) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    sent = 0
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as c:
        async def one(cid: int) -> None:
            t0 = time.perf_counter()
            try:
                r = await c.post(f"{base}/v1/conversations/{cid}/messages", headers=headers, json={"content": "hi"})
                if r.status_code != 200 or r.json().get("status") != "completed":
                    errors.append(f"send {r.status_code} {r.text[:120]}")
                else:
                    latencies.append((time.perf_counter() - t0) * 1000)
            except httpx.HTTPError as e:
                errors.append(f"send {type(e).__name__}")

        tasks = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            due = start + sent / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.ensure_future(one(conversations[sent % len(conversations)])))
            sent += 1
        await asyncio.gather(*tasks)
    return sent


async def sse_clients(base: str, key: str, n: int, seconds: float, ready: Path) -> dict[str, Any]:
    """``n`` SSE clients (one HTTP client, ``n`` connections) for ``seconds`` after all are
    connected, which ``ready`` (a file) tells the sending process (run in a process of their own:
    see :func:`main`)."""
    stop = asyncio.Event()
    delays: list[float] = []
    counts = [0] * n
    errors: list[str] = []
    connected = [0]
    http = httpx.AsyncClient(timeout=httpx.Timeout(30, read=None), limits=httpx.Limits(max_connections=n + 10))
    clients = [asyncio.ensure_future(sse_client(http, base, key, stop, delays, counts, i, errors, connected))
               for i in range(n)]
    t0 = time.monotonic()
    while connected[0] + len(errors) < n and time.monotonic() - t0 < 60:
        await asyncio.sleep(0.05)
    ready.write_text(str(connected[0]))
    await asyncio.sleep(seconds)
    stop.set()
    for c in clients:
        c.cancel()
    await asyncio.gather(*clients, return_exceptions=True)
    await http.aclose()
    return {"counts": counts, "delays_ms": [d * 1000 for d in delays], "errors": errors}


async def load(base: str, key: str, conversations: list[int], args: argparse.Namespace) -> dict[str, Any]:
    """The SSE clients in a child process (this one's event loop would otherwise be shared with
    their parsing), then the sends from here."""
    out = Path(f"/tmp/pgagent-bench-sse-{os.getpid()}.json")
    ready = Path(f"/tmp/pgagent-bench-sse-{os.getpid()}.ready")
    ready.unlink(missing_ok=True)
    child = subprocess.Popen([sys.executable, __file__, "--sse-only", base, key, str(args.sse),
                              str(args.seconds + args.drain), str(out), str(ready)])
    t0 = time.monotonic()
    while not ready.exists() and time.monotonic() - t0 < 90:   # every stream connected first
        await asyncio.sleep(0.1)
    ready.unlink(missing_ok=True)
    latencies: list[float] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    sent = await sender(base, key, conversations, args.rate, args.seconds, latencies, errors)
    elapsed = time.perf_counter() - t0
    await asyncio.get_running_loop().run_in_executor(None, child.wait)
    sse = json.loads(out.read_text())
    out.unlink()
    return {"sent": sent, "elapsed_s": elapsed, "latencies": latencies, "errors": errors + sse["errors"],
            "counts": sse["counts"], "delays_ms": sse["delays_ms"]}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--sse-only":   # the child process of load()
        base, key, n, seconds, out, ready = sys.argv[2:8]
        Path(out).write_text(json.dumps(asyncio.run(sse_clients(base, key, int(n), float(seconds), Path(ready)))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--sse", type=int, default=200)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--drain", type=float, default=30.0, help="s the SSE clients keep reading after the sends")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    args = ap.parse_args()
    # the LLM server in a process of its own: in this one it would share the GIL with the load
    llm_port = 19750 + os.getpid() % 1000
    llm = subprocess.Popen([sys.executable, "-c", (
        "import sys; sys.path.insert(0, %r); from http.server import ThreadingHTTPServer; import bench_turn; "
        "ThreadingHTTPServer(('127.0.0.1', %d), bench_turn.InstantLLM).serve_forever()") % (str(ROOT / "bench"), llm_port)])
    try:
        return run(args, llm_port)
    finally:
        llm.terminate()
        llm.wait(10)


def run(args: argparse.Namespace, llm_port: int) -> int:
    """The benchmark proper, with the LLM server on ``llm_port``."""
    with Cluster(settings={"max_connections": "100"}) as cluster:
        cluster.createdb("bench")
        with psycopg.connect(cluster.dsn("bench"), autocommit=True) as su:
            su.execute("CREATE EXTENSION pgagent CASCADE")
            su.execute(SETUP)
        with psycopg.connect(cluster.dsn("bench", user="bench_admin"), autocommit=True) as a:
            a.execute("SELECT pgagent.register_model('instant', base_url => %s, is_default => true)",
                      [f"http://127.0.0.1:{llm_port}/v1"])
            a.execute("SELECT pgagent.create_agent('echo')")
            key = a.execute("SELECT pgagent.create_api_key('bench', 'bench_app', rate_per_min => 1000000)").fetchone()[0]
        with psycopg.connect(cluster.dsn("bench", user="bench_app"), autocommit=True) as u:
            conversations = [u.execute("SELECT pgagent.start_conversation('echo')").fetchone()[0] for _ in range(200)]
        port = 18750 + os.getpid() % 1000
        gw = subprocess.Popen([str(ROOT / ".venv" / "bin" / "pgagent"), "serve", "--dsn",
                               cluster.dsn("bench", user="bench_gw"), "--port", str(port), "--pool-size", "20",
                               "--log-level", "warning"])
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    if httpx.get(base + "/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            r = asyncio.run(load(base, key, conversations, args))
        finally:
            gw.terminate()
            gw.wait(10)
        with psycopg.connect(cluster.dsn("bench"), autocommit=True) as su:
            steps = su.execute("SELECT count(*) FROM pgagent.step").fetchone()[0]
    lat, delays, counts = r["latencies"], r["delays_ms"], r["counts"]
    lines = [
        "## HTTP gateway",
        "",
        f"`pgagent serve` (one process, `--pool-size 20`) against an instant LLM server on 127.0.0.1, "
        f"{args.sse} clients on the live feed (`GET /v1/events`) while messages are sent at {args.rate:g}/s "
        f"for {args.seconds:g} s (each a whole turn: user message, one LLM call, response), on this "
        "machine's 2 cores shared with PostgreSQL, the LLM server and the load generator "
        "(`bench/bench_gateway.py`).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| messages sent | {r['sent']} in {r['elapsed_s']:.1f} s ({r['sent'] / r['elapsed_s']:.1f}/s) |",
        f"| send latency p50 / p95 / p99 | {pct(lat, 50):.1f} / {pct(lat, 95):.1f} / {pct(lat, 99):.1f} ms |",
        f"| errors | {len(r['errors'])}" + (f" ({', '.join(sorted(set(r['errors']))[:5])})" if r["errors"] else "") + " |",
        f"| steps recorded | {steps} |",
        f"| events per SSE client (of {steps} steps), read until {args.drain:g} s after the last send: "
        f"min / median / max | {min(counts)} / {statistics.median(counts):.0f} / {max(counts)} |",
        f"| commit-to-client delay p50 / p95 (sampled clients) | {pct(delays, 50):.1f} / {pct(delays, 95):.1f} ms |",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    write_section(args.out, "HTTP gateway", section)
    return 0 if not r["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
