#!/usr/bin/env python3
"""``make eval``: pgagent's public evaluation suite (bench/evalsuite.py) against the offline
embedded model (llama.cpp, Qwen2.5-Coder-1.5B-Instruct), one agent per configuration of the
grounding mechanisms; writes bench/eval.md (docs/evals.md).

It starts a throwaway cluster and the local model, loads six vega-datasets tables into
``evaldata``, defines the suite through the SQL API (pgagent.create_eval_suite /
add_eval_case), and for each configuration, temperature and repetition runs
``pgagent.run_eval(queue => true)``: the cases are enqueued and one ``pgagent worker`` process
answers them; pgagent.score_eval scores them. The numbers come from the eval_runs view.

Configurations (each a change to the sql tool or the agent; see docs/evals.md#grounded-answers):
  baseline  the sql tool's description lists the tables and columns (what a tool author writes);
            results have no total_rows or notes; no grounding policy
  hints     + total_rows and notes in sql results, HINTs in errors (autofix off)
  schema    hints + the introspected schema (types, sample values, NULLs) in the tool description
  auto      hints + require_tool auto (an answer whose numbers no tool result shows, or given
            right after a failed call, is sent back once; in json_schema mode the next reply
            must then be a tool call)
  always    hints + require_tool always (as auto, and no answer before a tool returned a result)
  check     always + self_check (the first answer after a tool result is sent back once to be checked)
  examples  auto + few-shot query examples in the sql tool's description (SQL idioms on a made-up table)
  autofix   auto + the sql tool runs the mechanical fix of a failed query (and of a value's case)
  autofix+examples  both

Usage: ``make eval`` (configs baseline and autofix, temperature 0, one run each) or
``python bench/eval.py --configs baseline,hints,auto,autofix --temperatures 0,default --runs 1 --runs-of autofix=3``
(``--runs-of`` gives some configurations more runs; bench/eval.md is rewritten after every run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "bench")]
import evalsuite  # noqa: E402
import local_models  # noqa: E402
from pgcluster import Cluster  # noqa: E402

PERSONA = ("You are a careful data analyst. Use run_sql to look facts up in the database; never guess numbers. "
           "Answer in one or two sentences.")
CONFIGS = {
    "baseline": ({"hints": False, "schema": False}, {}),
    "hints": ({"hints": True, "schema": False, "autofix": False}, {}),
    "schema": ({"hints": True, "schema": True, "autofix": False}, {}),
    "auto": ({"hints": True, "schema": False, "autofix": False}, {"require_tool": "auto"}),
    "always": ({"hints": True, "schema": False, "autofix": False}, {"require_tool": "always"}),
    "check": ({"hints": True, "schema": False, "autofix": False}, {"require_tool": "always", "self_check": True}),
    "examples": ({"hints": True, "schema": False, "autofix": False, "examples": True}, {"require_tool": "auto"}),
    "autofix": ({"hints": True, "schema": False, "autofix": True}, {"require_tool": "auto"}),
    "autofix+examples": ({"hints": True, "schema": False, "autofix": True, "examples": True}, {"require_tool": "auto"}),
}
PARAMS_LINE = {"0": {"temperature": 0}, "default": {}}


def setup(conn: psycopg.Connection, chat_url: str, temperatures: list[str], note: str) -> None:
    """As the tenant's admin: one model per temperature, the persona, the sql tool and the agent
    (configure() sets the tool's and the agent's config before each run)."""
    for temp in temperatures:
        params = {**PARAMS_LINE[temp], "max_tokens": 256}
        conn.execute("""SELECT pgagent.register_model(%s, base_url => %s, model_name => 'qwen2.5-coder-1.5b-instruct',
                          tool_mode => 'json_schema', params => %s, context_window => 8192, timeout_ms => 120000,
                          is_default => %s)""", [f"qwen-t{temp}", chat_url, json.dumps(params), temp == temperatures[0]])
    conn.execute("SELECT pgagent.create_persona('analyst', %s)", [PERSONA])
    conn.execute("""SELECT pgagent.register_tool('run_sql', %s,
                      '{"type": "object", "properties": {"query": {"type": "string", "description": "one SELECT"}},
                        "required": ["query"]}', kind => 'sql', config => '{"search_path": "evaldata"}',
                      timeout_ms => 10000)""",
                 ["Run one read-only PostgreSQL SELECT query and get its rows as JSON. " + note])
    conn.execute("SELECT pgagent.create_agent('analyst', persona => 'analyst', tools => '{run_sql}')")


def configure(conn: psycopg.Connection, cfg: str, temp: str) -> None:
    """Give the tool and the agent the configuration ``cfg`` and the model of temperature ``temp``."""
    tool_cfg, agent_cfg = CONFIGS[cfg]
    conn.execute("SELECT pgagent.update_tool('run_sql', config => %s)",
                 [json.dumps({"search_path": "evaldata", "max_rows": 20, **tool_cfg})])
    conn.execute("SELECT pgagent.update_agent('analyst', model => %s, config => %s)",
                 [f"qwen-t{temp}", json.dumps({"max_steps": 6, **agent_cfg})])


def run_one(conn: psycopg.Connection, agent: str, label: str, timeout_s: float) -> dict:
    run = conn.execute("SELECT pgagent.run_eval('public', %s, label => %s, queue => true)", [agent, label]).fetchone()[0]
    deadline = time.monotonic() + timeout_s
    while True:
        s = conn.execute("SELECT pgagent.score_eval(%s)", [run]).fetchone()[0]
        if s["status"] == "scored" or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    cols = ["run_id", "agent", "label", "status", "cases", "scored", "correct", "score", "grounded_share",
            "mean_latency_ms", "llm_calls", "prompt_tokens", "completion_tokens"]
    row = conn.execute(f"SELECT {', '.join(cols)} FROM pgagent.eval_runs WHERE run_id = %s", [run]).fetchone()
    out = dict(zip(cols, row))
    out["wrong"] = conn.execute("""SELECT case_name, answer FROM pgagent.eval_results
                                    WHERE run_id = %s AND NOT coalesce(correct, false) ORDER BY case_name""",
                                [run]).fetchall()
    out["ungrounded"] = [r[0] for r in conn.execute("""SELECT case_name FROM pgagent.eval_results
                                    WHERE run_id = %s AND correct AND NOT grounded ORDER BY case_name""", [run])]
    out["sent_back"] = conn.execute("""SELECT count(*) FROM pgagent.step s JOIN pgagent.eval_result r
                                         ON r.tenant_id = s.tenant_id AND r.turn_id = s.turn_id
                                        WHERE r.run_id = %s AND s.kind = 'guardrail'""", [run]).fetchone()[0]
    return out


def write(path: Path, results: list[dict], args: argparse.Namespace, counts: dict[str, int], took_s: float,
          quiet: bool = False) -> None:
    lines = ["# Evaluation: the public suite on the embedded model", "",
             f"Generated by `make eval` (bench/eval.py) on 2 cores with `{' '.join(sys.argv[1:]) or '(defaults)'}`; "
             f"{took_s / 60:.0f} min. Model: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M, llama.cpp), json_schema tool mode, "
             "max_tokens 256. Suite: bench/evalsuite.py, "
             f"{len(evalsuite.CASES) + len(evalsuite.NO_TOOL)} cases ({len(evalsuite.CASES)} over "
             + ", ".join(f"{t} ({n} rows)" for t, n in counts.items())
             + f"; {len(evalsuite.NO_TOOL)} that need no tool). Cases are enqueued (run_eval queue => true) and "
               "answered by one `pgagent worker`.", "",
             "Score = right answers / cases. Grounded = right answers that came from a tool result / right answers "
             "to questions that need a tool. Latency = a turn's start to finish (mean per case).", "",
             "| configuration | temperature | run | score | grounded | mean latency s | LLM calls/case | sent back |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['config']} | {r['temperature']} | {r['rep']} | {float(r['score'] or 0):.3f} "
                     f"| {float(r['grounded_share'] or 0):.3f} | {float(r['mean_latency_ms'] or 0) / 1000:.1f} "
                     f"| {int(r['llm_calls'] or 0) / max(1, r['cases']):.2f} | {r['sent_back']} |")
    lines += ["", "Mean over runs:", "", "| configuration | temperature | runs | score | grounded |", "|---|---|---:|---:|---:|"]
    for cfg in args.configs:
        for temp in args.temperatures:
            rs = [r for r in results if r["config"] == cfg and r["temperature"] == temp]
            if rs:
                lines.append(f"| {cfg} | {temp} | {len(rs)} | {sum(float(r['score'] or 0) for r in rs) / len(rs):.3f} "
                             f"| {sum(float(r['grounded_share'] or 0) for r in rs) / len(rs):.3f} |")
    lines += ["", "Wrong answers per run (case: answer):", ""]
    for r in results:
        wrong = "; ".join(f"{n}: {(a or '(none)')[:80]!r}" for n, a in r["wrong"]) or "none"
        lines.append(f"- {r['config']} t={r['temperature']} #{r['rep']}: {wrong}")
        if r["ungrounded"]:
            lines.append(f"  - right but not grounded: {', '.join(r['ungrounded'])}")
    path.write_text("\n".join(lines) + "\n" + (args.append_text or ""))
    if not quiet:
        print("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="baseline,autofix")
    ap.add_argument("--temperatures", default="0", help="comma list of 0 and default (the server's default)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--runs-of", default="", help="runs of some configurations (at a temperature), overriding --runs: "
                                                  "e.g. autofix=3,baseline@default=0")
    ap.add_argument("--out", default=str(ROOT / "bench" / "eval.md"))
    ap.add_argument("--timeout-s", type=float, default=3600)
    ap.add_argument("--append-text", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.configs = [c for c in args.configs.split(",") if c]
    args.temperatures = [t for t in args.temperatures.split(",") if t]
    runs_of = {f"{c}@{t}": args.runs for c in args.configs for t in args.temperatures}
    for item in (x for x in args.runs_of.split(",") if x):
        name, _, n = item.partition("=")
        keys = [k for k in runs_of if name in (k, k.split("@")[0])]
        if not keys or not n.isdigit():
            ap.error(f"--runs-of: expected CONFIG=N or CONFIG@TEMPERATURE=N for --configs and --temperatures, "
                     f"not {item!r}")
        for k in keys:
            runs_of[k] = int(n)
    for c in args.configs:
        if c not in CONFIGS:
            ap.error(f"unknown configuration {c!r} (one of {', '.join(CONFIGS)})")
    t_start = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # stop the model, the worker and the cluster
    urls = local_models.start()
    results: list[dict] = []
    worker = None
    try:
        with Cluster() as cluster:
            cluster.createdb("eval")
            with psycopg.connect(cluster.dsn("eval"), autocommit=True) as su:
                su.execute("CREATE EXTENSION pgagent CASCADE")
                counts = evalsuite.load(su)
                note = evalsuite.tables_note(su)
                su.execute("CREATE ROLE eval_admin LOGIN IN ROLE pgagent_admin")
                su.execute("CREATE ROLE eval_worker LOGIN IN ROLE pgagent_user")
                su.execute("CREATE ROLE eval_team NOLOGIN")
                su.execute("GRANT eval_team TO eval_admin, eval_worker")
                su.execute("SELECT pgagent.add_tenant('eval', 'eval_team')")
            with psycopg.connect(cluster.dsn("eval", user="eval_admin"), autocommit=True) as conn:
                setup(conn, urls["chat"], args.temperatures, note)
                evalsuite.define(conn)
                env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
                worker = subprocess.Popen([sys.executable, "-m", "pgagent_worker", "worker", "--dsn",
                                           cluster.dsn("eval", user="eval_worker"), "--concurrency", "1",
                                           "--worker-id", "eval-worker", "--poll-s", "1"],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for rep in range(1, max(runs_of.values()) + 1):
                    for temp in args.temperatures:
                        for cfg in [c for c in args.configs if runs_of[f"{c}@{temp}"] >= rep]:
                            t0 = time.monotonic()
                            configure(conn, cfg, temp)
                            r = run_one(conn, "analyst", f"{cfg} t={temp} #{rep}", args.timeout_s)
                            r.update(config=cfg, temperature=temp, rep=rep)
                            results.append(r)
                            print(f"{cfg} t={temp} #{rep}: score {r['score']} grounded {r['grounded_share']} "
                                  f"({time.monotonic() - t0:.0f} s); wrong: {[w[0] for w in r['wrong']]}", flush=True)
                            # written after every run: a stopped ablation keeps the runs it finished
                            write(Path(args.out), results, args, counts, time.monotonic() - t_start, quiet=True)
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
        local_models.stop()
    write(Path(args.out), results, args, counts, time.monotonic() - t_start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
