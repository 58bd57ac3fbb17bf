"""Benchmark: the monitoring views and analytics functions over a 1 M step log.

Loads one tenant with ``--turns`` turns (default 100,000) of 10 steps each (1 M steps) spread
over the last 30 days, in 10,000 conversations of 4 agents, plus a second tenant with a tenth
of that (its rows must not slow the first tenant's queries), some turns waiting for approval
or failed, ratings and flags. The rows are bulk-loaded by the superuser with
``session_replication_role = replica`` (no triggers: the step hashes are placeholders; nothing
here verifies chains). Then each query below runs ``--runs`` times as a login role that is a
pgagent_operator of the big tenant (so row level security applies, as in production) and the
median and p95 (ms, client-side, including the round trip) are reported. Target (issue 8):
every view <= 50 ms.

Then it times the reference turn of bench_turn.py in three tenants (about 1 k, 100 k and 1 M
steps), before and after ANALYZE, to show that a turn's cost does not grow with the log.

Writes the section "Views at 1 M steps" of ``bench/results.md`` (replacing it, leaving the rest
as bench_turn.py wrote it) and prints it. Usage: ``make bench`` or
``.venv/bin/python bench/bench_views.py [--turns N] [--runs N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
from bench_turn import InstantLLM  # noqa: E402
from pgcluster import Cluster  # noqa: E402
from sections import write_section  # noqa: E402

KINDS = ["user_message", "llm_call", "thinking", "tool_call", "approval", "tool_result", "llm_call", "tool_call",
         "tool_result", "response"]

LOAD_SQL = """
SET session_replication_role = replica;
INSERT INTO pgagent.agent (tenant_id, name, model_id)
SELECT %(t)s, 'agent_' || i, (SELECT model_id FROM pgagent.model WHERE tenant_id = %(t)s LIMIT 1)
  FROM generate_series(1, 4) i;
INSERT INTO pgagent.conversation (tenant_id, agent_id, title, created_by, created_at)
SELECT %(t)s, (SELECT agent_id FROM pgagent.agent WHERE tenant_id = %(t)s AND name = 'agent_' || (1 + i %% 4)),
       'c' || i, 'bench', now() - interval '31 days'
  FROM generate_series(1, %(convs)s) i;
CREATE TEMP TABLE conv_ids AS
SELECT conversation_id, row_number() OVER (ORDER BY conversation_id) AS n
  FROM pgagent.conversation WHERE tenant_id = %(t)s;
-- turn i: conversation 1 + i %% convs, created (i / turns) * 30 days after 30 days ago; the
-- newest 50 wait for approval, every 20th failed
INSERT INTO pgagent.turn (tenant_id, conversation_id, seq, status, user_message, answer, error, llm_calls,
                          prompt_tokens, completion_tokens, cost_usd, created_by, created_at, started_at, finished_at)
SELECT %(t)s, c.conversation_id, 1 + i / %(convs)s,
       CASE WHEN i > %(turns)s - 50 THEN 'awaiting_approval' WHEN i %% 20 = 0 THEN 'failed' ELSE 'completed' END,
       'question ' || i, CASE WHEN i > %(turns)s - 50 OR i %% 20 = 0 THEN NULL ELSE 'answer ' || i END,
       CASE WHEN i %% 20 = 0 AND i <= %(turns)s - 50 THEN 'LLM call failed' END,
       2, 300, 40, 0.0012, 'bench', ts, ts, CASE WHEN i > %(turns)s - 50 THEN NULL ELSE ts + interval '2 seconds' END
  FROM generate_series(1, %(turns)s) i
  JOIN conv_ids c ON c.n = 1 + i %% %(convs)s
  CROSS JOIN LATERAL (SELECT now() - interval '30 days' * (1 - i::float8 / %(turns)s) - interval '5 seconds' AS ts) x;
INSERT INTO pgagent.step (tenant_id, turn_id, seq, kind, payload, tool_call_id, tool_name,
                          prompt_tokens, completion_tokens, cost_usd, latency_ms, created_by, created_at, hash)
SELECT t.tenant_id, t.turn_id, k.seq, k.kind,
       CASE k.kind WHEN 'tool_call' THEN '{"arguments": {"query": "SELECT 1"}, "requires_approval": true}'::jsonb
                   WHEN 'llm_call' THEN '{"message": {"role": "assistant", "content": "ok"}, "model": "m"}'::jsonb
                   ELSE '{"content": "text of the step"}'::jsonb END,
       CASE WHEN k.kind = 'tool_call' THEN 'call_' || k.seq END, CASE WHEN k.kind = 'tool_call' THEN 'run_sql' END,
       CASE WHEN k.kind = 'llm_call' THEN 150 END, CASE WHEN k.kind = 'llm_call' THEN 20 END,
       CASE WHEN k.kind = 'llm_call' THEN 0.0006 END, CASE WHEN k.kind = 'llm_call' THEN 12.5 END,
       'bench', t.created_at + k.seq * interval '100 ms', '\\x00'
  FROM pgagent.turn t
  CROSS JOIN LATERAL (SELECT s AS seq, (%(kinds)s::text[])[s] AS kind
                        FROM generate_series(1, CASE WHEN t.status = 'awaiting_approval' THEN 4 ELSE 10 END) s) k
 WHERE t.tenant_id = %(t)s AND k.kind NOT IN ('approval', 'tool_result');
-- approvals and results answer the tool_call before them (seq 4 -> 5, 6; seq 8 -> 9)
INSERT INTO pgagent.step (tenant_id, turn_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name, latency_ms,
                          created_by, created_at, hash)
SELECT c.tenant_id, c.turn_id, a.seq, a.kind,
       CASE a.kind WHEN 'approval' THEN '{"approved": true, "decided_by": "bench"}'::jsonb
                   ELSE '{"is_error": false, "result": {"rows": [{"n": 1}]}}'::jsonb END,
       c.step_id, CASE WHEN a.kind = 'tool_result' THEN c.tool_call_id END, 'run_sql',
       CASE WHEN a.kind = 'tool_result' THEN 3.5 END, 'bench', c.created_at + (a.seq - c.seq) * interval '100 ms', '\\x00'
  FROM pgagent.step c
  JOIN pgagent.turn t ON t.tenant_id = c.tenant_id AND t.turn_id = c.turn_id AND t.status <> 'awaiting_approval'
  JOIN (VALUES (4, 5, 'approval'), (4, 6, 'tool_result'), (8, 9, 'tool_result')) AS a(call_seq, seq, kind)
    ON a.call_seq = c.seq
 WHERE c.tenant_id = %(t)s AND c.kind = 'tool_call';
INSERT INTO pgagent.rating (tenant_id, turn_id, rated_by, rating)
SELECT tenant_id, turn_id, 'bench', 1 + turn_id %% 5 FROM pgagent.turn WHERE tenant_id = %(t)s AND turn_id %% 50 = 0;
INSERT INTO pgagent.flag (tenant_id, turn_id, category, created_by, created_at)
SELECT tenant_id, turn_id, 'wrong_answer', 'bench', created_at FROM pgagent.turn
 WHERE tenant_id = %(t)s AND turn_id %% 100 = 0;
-- the rollup the trigger turn_rollup keeps (triggers are off while loading): as the migration
-- to 0.2.0 backfills it
INSERT INTO pgagent.agent_daily (tenant_id, agent_id, day, completed, failed, cancelled, llm_calls, prompt_tokens,
                                 completion_tokens, cost_usd, timed, timed_ms)
SELECT t.tenant_id, c.agent_id, (t.created_at AT TIME ZONE 'UTC')::date,
       count(*) FILTER (WHERE t.status = 'completed'), count(*) FILTER (WHERE t.status = 'failed'),
       count(*) FILTER (WHERE t.status = 'cancelled'), sum(t.llm_calls), sum(t.prompt_tokens),
       sum(t.completion_tokens), sum(t.cost_usd), count(t.finished_at),
       coalesce(sum(extract(epoch FROM t.finished_at - t.created_at) * 1000), 0)
  FROM pgagent.turn t
  JOIN pgagent.conversation c ON c.tenant_id = t.tenant_id AND c.conversation_id = t.conversation_id
 WHERE t.tenant_id = %(t)s AND t.status IN ('completed', 'failed', 'cancelled')
 GROUP BY 1, 2, 3;
SET session_replication_role = origin;
"""

#: (name, query, is_view); %(conv)s / %(turn)s are a conversation and a turn of the big tenant.
#: The <= 50 ms target is for the views; the analytics functions aggregate every turn in their
#: window and are reported beside them.
QUERIES = [
    ("realtime_steps (all rows: last hour, <= 200)", "SELECT * FROM pgagent.realtime_steps", True),
    ("tool_call_queue (newest 50)", "SELECT * FROM pgagent.tool_call_queue ORDER BY created_at DESC LIMIT 50", True),
    ("tool_call_queue (one turn)", "SELECT * FROM pgagent.tool_call_queue WHERE turn_id = %(turn)s", True),
    ("thinking_trace (newest 50)", "SELECT * FROM pgagent.thinking_trace ORDER BY created_at DESC LIMIT 50", True),
    ("thinking_trace (one turn)", "SELECT * FROM pgagent.thinking_trace WHERE turn_id = %(turn)s", True),
    ("conversation_timeline (one conversation)",
     "SELECT * FROM pgagent.conversation_timeline WHERE conversation_id = %(conv)s ORDER BY created_at, source, seq", True),
    ("dashboard_overview", "SELECT * FROM pgagent.dashboard_overview", True),
    ("flagged_issues (first 50)", "SELECT * FROM pgagent.flagged_issues LIMIT 50", True),
    ("pending_approvals", "SELECT * FROM pgagent.pending_approvals", True),
    ("turn_timeline (one turn)", "SELECT * FROM pgagent.turn_timeline WHERE turn_id = %(turn)s ORDER BY seq", True),
    ("turn_summary (newest 50)", "SELECT * FROM pgagent.turn_summary ORDER BY turn_id DESC LIMIT 50", True),
    ("agent_stats", "SELECT * FROM pgagent.agent_stats", True),
    ("budget_status", "SELECT * FROM pgagent.budget_status", True),
    ("queue_status", "SELECT * FROM pgagent.queue_status", True),
    ("agent_analytics('agent_1', 7)", "SELECT pgagent.agent_analytics('agent_1', 7)", False),
    ("hourly_activity(1)", "SELECT * FROM pgagent.hourly_activity(1)", False),
    ("tool_usage(7)", "SELECT * FROM pgagent.tool_usage(7)", False),
]
VIEW_TARGET_MS = 50.0


def load(su: psycopg.Connection, tenant: str, turns: int) -> None:
    su.execute(f"CREATE ROLE {tenant}_team NOLOGIN")
    t = su.execute("SELECT pgagent.add_tenant(%s, %s)", [tenant, f"{tenant}_team"]).fetchone()[0]
    su.execute("SELECT set_config('pgagent.tenant', %s, false)", [tenant])
    su.execute("SELECT pgagent.register_model('m', base_url => 'http://127.0.0.1:9/v1', is_default => true)")
    su.execute("SELECT pgagent.set_budget(max_usd => 1000)")
    with su.transaction():
        params = {"t": t, "turns": turns, "convs": max(turns // 10, 1), "kinds": KINDS}
        for stmt in LOAD_SQL.split(";\n"):
            if stmt.strip():
                su.execute(stmt, params if "%(" in stmt else None)
        su.execute("DROP TABLE conv_ids")


def measure(c: psycopg.Connection, q: str, params: dict[str, int], runs: int) -> tuple[float, float, int]:
    c.execute(q, params).fetchall()   # warm: plan cache, buffers
    times, n = [], 0
    for _ in range(runs):
        t0 = time.perf_counter()
        n = len(c.execute(q, params).fetchall())
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))], n


TURN_SETUP = [
    "SELECT pgagent.register_model('instant', base_url => %(url)s, max_retries => 0)",
    """SELECT pgagent.register_tool('run_sql', 'query', '{"type": "object", "properties":
       {"query": {"type": "string"}}, "required": ["query"]}', kind => 'sql')""",
    "SELECT pgagent.create_agent('turn_bench', model => 'instant', tools => '{run_sql}', "
    "config => '{\"history_turns\": 0}')",
]


def turn_cost(dsn: str, tenant: str, n: int) -> float:
    """Median ms of ``n`` reference turns (2 LLM calls to an instant server, 1 sql tool run, 6
    steps; send_message, each in a new conversation) in ``tenant``, on a new session (so its
    cached plans are made against the tables as they are now)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT set_config('pgagent.tenant', %s, false)", [tenant])

        def one() -> float:
            t0 = time.perf_counter()
            cid = c.execute("SELECT pgagent.start_conversation('turn_bench')").fetchone()[0]
            r = c.execute("SELECT pgagent.send_message(%s, 'How many?')", [cid]).fetchone()[0]
            assert r["status"] == "completed" and r["llm_calls"] == 2, r
            return (time.perf_counter() - t0) * 1000

        for _ in range(10):   # warm: imports, plans (a generic plan is made from the 6th run on)
            one()
        return statistics.median(one() for _ in range(n))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--turns", type=int, default=100_000, help="turns of the big tenant (10 steps each)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--turn-runs", type=int, default=100, help="turns timed per tenant size and statistics state")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    args = ap.parse_args()
    with Cluster() as cluster:
        cluster.createdb("bench")
        with psycopg.connect(cluster.dsn("bench"), autocommit=True) as su:
            su.execute("CREATE EXTENSION pgagent CASCADE")
            t0 = time.perf_counter()
            load(su, "big", args.turns)
            load(su, "small", max(args.turns // 10, 10))
            load(su, "tiny", max(args.turns // 1000, 10))
            load_s = time.perf_counter() - t0
            server = ThreadingHTTPServer(("127.0.0.1", 0), InstantLLM)
            threading.Thread(target=server.serve_forever, daemon=True).start()
            su.execute("CREATE TABLE public.t AS SELECT g AS x FROM generate_series(1, 9) g")
            su.execute("GRANT SELECT ON public.t TO pgagent_sandbox")
            url = f"http://127.0.0.1:{server.server_address[1]}/v1"
            sizes = {}
            for tenant in ("tiny", "small", "big"):
                su.execute("SELECT set_config('pgagent.tenant', %s, false)", [tenant])
                for q in TURN_SETUP:
                    su.execute(q, {"url": url} if "%(url)s" in q else None)
                sizes[tenant] = su.execute("SELECT count(*) FROM pgagent.step WHERE tenant_id = "
                                           "pgagent.current_tenant()").fetchone()[0]
            costs: dict[str, list[float]] = {t: [turn_cost(cluster.dsn("bench"), t, args.turn_runs)]
                                             for t in sizes}   # before ANALYZE: no statistics yet
            su.execute("VACUUM ANALYZE")
            for t in sizes:
                costs[t].append(turn_cost(cluster.dsn("bench"), t, args.turn_runs))
            server.shutdown()
            steps = su.execute("SELECT count(*) FROM pgagent.step WHERE tenant_id = "
                               "(SELECT tenant_id FROM pgagent.tenant WHERE name = 'big')").fetchone()[0]
            total = su.execute("SELECT count(*) FROM pgagent.step").fetchone()[0]
            su.execute("CREATE ROLE bench_ops LOGIN IN ROLE pgagent_operator, big_team")
            turn, conv = su.execute("SELECT turn_id, conversation_id FROM pgagent.turn t WHERE tenant_id = "
                                    "(SELECT tenant_id FROM pgagent.tenant WHERE name = 'big') "
                                    "ORDER BY turn_id DESC OFFSET 500 LIMIT 1").fetchone()
        params = {"turn": turn, "conv": conv}
        rows = []
        with psycopg.connect(cluster.dsn("bench", user="bench_ops"), autocommit=True) as c:
            for name, q, is_view in QUERIES:
                med, p95, n = measure(c, q, params, args.runs)
                rows.append((name, med, p95, n, is_view))
                print(f"{name:<45} median {med:8.2f} ms  p95 {p95:8.2f} ms  rows {n}")
    lines = ["## Views at 1 M steps", "",
             f"Generated by `make bench` (bench/bench_views.py): the big tenant has {steps:,} steps "
             f"({args.turns:,} turns over 30 days, {args.turns // 10:,} conversations, 4 agents), {total:,} steps in all "
             f"(a second tenant); bulk-loaded in {load_s:.0f} s. Each query ran {args.runs} times as a "
             "pgagent_operator of the big tenant (row level security applies), client-side time including the "
             f"round trip. Target: each view <= {VIEW_TARGET_MS:.0f} ms.", "",
             "| query | median ms | p95 ms | rows |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {m:.2f} | {p:.2f} | {r} |" for n, m, p, r, _ in rows]
    slow = [n for n, m, _, _, is_view in rows if is_view and m > VIEW_TARGET_MS]
    lines += ["", "Every view is within the target." if not slow else f"Over the target: {', '.join(slow)}."]
    lines += ["", "### A turn's cost against the size of the tenant's log", "",
              f"The reference turn of bench_turn.py (2 LLM calls to an instant server, 1 sql tool run, 6 steps; "
              f"send_message in a new conversation), {args.turn_runs} times per cell after 10 warm-up turns, on a "
              "new session, in three tenants of the same database: before the tables had statistics (right after "
              "the bulk load, unless autovacuum got there first) and after VACUUM ANALYZE. A turn's cost must not "
              "grow with the log.", "",
              "| tenant | steps in its log | median ms, no statistics | median ms, analyzed |", "|---|---:|---:|---:|"]
    lines += [f"| {t} | {sizes[t]:,} | {costs[t][0]:.2f} | {costs[t][1]:.2f} |" for t in sizes]
    section = "\n".join(lines) + "\n"
    write_section(args.out, "Views at 1 M steps", section)
    print("\n" + section)
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
