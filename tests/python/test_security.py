"""Tenant isolation, grants, the audit chain, stored secrets and the SQL-tool sandbox, tested by
attacking: two tenants (acme, globex), each with a login role per pgagent group role, and every
role of one tenant tries to read, write or drive the other tenant's rows in every way we know."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import errors, sql

from scripted_llm import ScriptedLLM, http_error, text, tool_calls

ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("viewer", "user", "operator", "admin")
TENANTS = ("acme", "globex")
TABLES = ("tenant", "tenant_member", "model", "persona", "tool", "agent", "agent_tool", "conversation", "turn",
          "step", "audit_event", "secret", "egress_allow", "egress_exception", "intervention", "rating", "flag",
          "budget", "budget_usage", "budget_hold", "hook", "agent_daily", "worker", "schedule", "schedule_firing",
          "insert_trigger", "memory", "collection", "document", "chunk", "kg_entity", "kg_relation", "kg_extraction",
          "eval_suite", "eval_case", "eval_run", "eval_result", "team", "discussion", "discussion_turn", "api_key")
#: Tables nobody in the matrix may change for the other tenant (the probes change the attacker's
#: own conversations, turns, steps and audit events).
GUARDED = ("tenant", "tenant_member", "model", "persona", "tool", "agent", "agent_tool", "secret", "egress_allow",
           "egress_exception", "intervention", "rating", "flag", "budget", "hook", "worker", "schedule",
           "schedule_firing", "insert_trigger", "memory", "collection", "document", "chunk", "kg_entity",
           "kg_relation", "kg_extraction", "eval_suite", "eval_case", "eval_run", "eval_result", "team", "discussion",
           "discussion_turn", "api_key")
#: budget_usage and budget_hold change with the attacker's own probes (their LLM calls spend the
#: tenant's budget): checked by :func:`spend` instead.
SPEND_SQL = """
SELECT (SELECT coalesce(sum(u.spent_usd), 0) FROM pgagent.budget_usage u WHERE u.tenant_id = %(t)s),
       (SELECT coalesce(sum(s.cost_usd), 0) FROM pgagent.step s WHERE s.tenant_id = %(t)s AND s.kind = 'llm_call'
           AND s.created_at >= (SELECT min(b.created_at) FROM pgagent.budget b WHERE b.tenant_id = %(t)s)),
       (SELECT count(*) FROM pgagent.budget_hold h JOIN pgagent.turn x USING (tenant_id, turn_id)
         WHERE h.tenant_id = %(t)s AND x.status = 'running')"""
VIEWS = ("turn_timeline", "pending_approvals", "turn_summary", "agent_stats", "budget_status", "realtime_steps",
         "tool_call_queue", "thinking_trace", "conversation_timeline", "dashboard_overview", "flagged_issues",
         "queue_status", "workers", "documents", "eval_runs", "eval_results", "eval_changes", "team_discussions",
         "discussion_messages", "api_keys")
RUN_SQL_SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
BUMP_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def key_of(tenant: str) -> str:
    return f"sk-{tenant}-0123456789abcdef"


class World:
    """The two tenants, their roles and the ids of their rows."""

    def __init__(self, cluster: Any, dbname: str, llm: ScriptedLLM) -> None:
        self.cluster, self.dbname, self.llm = cluster, dbname, llm
        self.roles: list[str] = []
        self.ids: dict[str, dict[str, Any]] = {}

    def role(self, tenant: str, group: str | None = None) -> str:
        return f"{self.dbname}_{tenant}" + (f"_{group}" if group else "")

    def connect(self, tenant: str, group: str, *, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.cluster.dsn(self.dbname, user=self.role(tenant, group)), autocommit=autocommit)


@pytest.fixture
def world(cluster, dbname, conn, llm) -> Iterator[World]:
    w = World(cluster, dbname, llm)
    conn.execute("CREATE TABLE public.bumps (n int)")
    conn.execute("GRANT SELECT, INSERT ON public.bumps TO PUBLIC")
    conn.execute("CREATE FUNCTION public.bump(n int) RETURNS text LANGUAGE sql AS "
                 "$$ INSERT INTO public.bumps VALUES (n) RETURNING 'bumped ' || n $$")
    conn.execute("CREATE TABLE public.shared_data (x int)")  # what the sandbox was granted (default privileges)
    conn.execute("INSERT INTO public.shared_data VALUES (42)")
    try:
        for t in TENANTS:
            group = w.role(t)
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
            w.roles.append(group)
            for g in GROUPS:
                r = w.role(t, g)
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}, {}").format(
                    sql.Identifier(r), sql.Identifier(f"pgagent_{g}"), sql.Identifier(group)))
                w.roles.append(r)
            conn.execute("SELECT pgagent.add_tenant(%s, %s)", [t, group])
        for t in TENANTS:
            w.ids[t] = setup_tenant(w, t)
            conn.execute("INSERT INTO pgagent.egress_exception (tenant_id, network, note) VALUES (%s, %s, %s)",
                         [w.ids[t]["tenant_id"], "10.99.0.0/16" if t == "acme" else "10.98.0.0/16", f"MARK-{t} net"])
        yield w
    finally:
        conn.execute("DROP TABLE IF EXISTS " + ", ".join(f"public.tickets_{t}" for t in TENANTS))
        for r in reversed(w.roles):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)))


def setup_tenant(w: World, t: str) -> dict[str, Any]:
    """Configure a tenant as its admin and run two turns as its user (the second one parks on an
    approval), so that every pgagent table has rows of the tenant."""
    with w.connect(t, "admin") as a:
        a.execute("SELECT pgagent.set_secret('KEY', %s)", [key_of(t)])
        a.execute("SELECT pgagent.register_model('scripted', base_url => %s, secret_name => 'KEY', input_usd_per_mtok => 1000, output_usd_per_mtok => 2000)", [w.llm.base_url])
        a.execute("SELECT pgagent.register_tool('run_sql', 'Run SQL', %s, kind => 'sql')", [json.dumps(RUN_SQL_SCHEMA)])
        a.execute("""SELECT pgagent.register_tool('bump', 'Bump', %s, kind => 'function',
                     config => '{"function": "public.bump"}', requires_approval => true)""", [json.dumps(BUMP_SCHEMA)])
        a.execute("SELECT pgagent.create_persona('p', %s)", [f"You work for {t}."])
        a.execute("SELECT pgagent.create_agent('analyst', model => 'scripted', tools => '{run_sql,bump}', "
                  "persona => 'p')")
        a.execute("SELECT pgagent.add_member(%s, %s)", [t, w.role(t, "viewer")])
        a.execute("SELECT pgagent.allow_egress(%s)", [f"api.{t}.example"])
        # memory (issue 10): an embedding model, an admin's own memory and one shared by the agent
        a.execute("SELECT pgagent.register_model('emb', base_url => %s, kind => 'embedding', is_default => true)",
                  [w.llm.base_url])
        memory_admin = a.execute("SELECT pgagent.remember('analyst', %s)", [f"MARK-{t} admin memory"]).fetchone()[0]
        memory_agent = a.execute("SELECT pgagent.remember('analyst', %s, scope => 'agent')",
                                 [f"MARK-{t} shared memory"]).fetchone()[0]
        # the knowledge base: a collection, a document and its chunks, embedded
        a.execute("SELECT pgagent.create_collection('kb')")
        document = a.execute("SELECT (pgagent.add_document('kb', %s, %s, %s) ->> 'document_id')::bigint",
                             [f"MARK-{t} handbook", f"MARK-{t} the handbook says refunds take a week.",
                              json.dumps({"owner": f"MARK-{t}"})]).fetchone()[0]
        assert a.execute("SELECT pgagent.embed_pending()").fetchone()[0]["embedded"] == 1
        a.execute("SELECT pgagent.kg_add(%s, 'works_for', %s, 'person', 'company', source_document => %s)",
                  [f"MARK-{t} Ada", f"MARK-{t} Corp", document])
        # many agents (issue 12): a critic, a lead that asks it through an agent tool, a team
        a.execute("SELECT pgagent.create_agent('critic', model => 'scripted', persona => 'p')")
        a.execute("""SELECT pgagent.register_tool('ask_critic', 'Ask the critic',
                     '{"type": "object", "properties": {"message": {"type": "string"}}}', kind => 'agent',
                     config => '{"agent": "critic"}')""")
        a.execute("SELECT pgagent.create_agent('lead', model => 'scripted', tools => '{ask_critic}')")
        a.execute("SELECT pgagent.create_team('pair', ARRAY['analyst', 'critic'], 'round_robin')")
        # the gateway (issue 13): an API key acting as the admin
        api_key = a.execute("SELECT pgagent.create_api_key('k')").fetchone()[0]
    with w.connect(t, "user") as u:
        memory_user = u.execute("SELECT pgagent.remember('analyst', %s)", [f"MARK-{t} user memory"]).fetchone()[0]
        cid = u.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
        w.llm.script(tool_calls([("run_sql", {"query": "SELECT x FROM shared_data"})]), text(f"MARK-{t} answer"))
        r1 = u.execute("SELECT pgagent.send_message(%s, %s)", [cid, f"MARK-{t} question"]).fetchone()[0]
        assert r1["status"] == "completed", r1
        assert w.llm.requests[-1]["headers"]["authorization"] == f"Bearer {key_of(t)}"
        w.llm.script(tool_calls([("bump", {"n": 1})]))
        r2 = u.execute("SELECT pgagent.send_message(%s, %s)", [cid, f"MARK-{t} bump"]).fetchone()[0]
        assert r2["status"] == "awaiting_approval", r2
        w.llm.script(text(f"MARK-{t} analyst says"), text(f"MARK-{t} critic says"))
        discussion = u.execute("SELECT pgagent.team_discuss('pair', %s, 1)", [f"MARK-{t} topic"]).fetchone()[0]
        assert discussion["status"] == "completed", discussion
        lead = u.execute("SELECT pgagent.start_conversation('lead')").fetchone()[0]
        w.llm.script(tool_calls([("ask_critic", {"message": f"MARK-{t} review"})]), text(f"MARK-{t} review done"),
                     text(f"MARK-{t} lead answer"))
        r3 = u.execute("SELECT pgagent.send_message(%s, %s)", [lead, f"MARK-{t} delegate"]).fetchone()[0]
        assert r3["status"] == "completed" and r3["children"][0]["status"] == "completed", r3
        tenant_id = u.execute("SELECT pgagent.current_tenant()::text").fetchone()[0]
        model_id = u.execute("SELECT model_id FROM pgagent.model WHERE name = 'scripted'").fetchone()[0]
        u.execute("SELECT pgagent.rate_turn(%s, 4, %s)", [r1["turn_id"], f"MARK-{t} rating"])
    with w.connect(t, "operator") as o:   # rows in the operating tables (0.2.0)
        o.execute("SELECT pgagent.inject_message(%s, %s)", [cid, f"MARK-{t} injected"])
        flag = o.execute("SELECT pgagent.flag_issue(%s, category => 'wrong_answer', note => %s)",
                         [r1["turn_id"], f"MARK-{t} flag"]).fetchone()[0]
        # evaluations (issue 11): a suite, a case and a run answered and scored
        o.execute("SELECT pgagent.create_eval_suite('suite', %s)", [f"MARK-{t} suite"])
        o.execute("SELECT pgagent.add_eval_case('suite', %s, expected => %s, name => 'c1')",
                  [f"MARK-{t} eval question", f"MARK-{t} expected"])
        w.llm.script(text(f"MARK-{t} eval answer"))
        eval_run = o.execute("SELECT pgagent.run_eval('suite', 'analyst')").fetchone()[0]
        assert o.execute("SELECT status FROM pgagent.eval_run WHERE run_id = %s", [eval_run]).fetchone()[0] == "scored"
    with psycopg.connect(w.cluster.dsn(w.dbname), autocommit=True) as su:   # a table the admin may watch
        su.execute(sql.SQL("CREATE TABLE public.{} (id int)").format(sql.Identifier(f"tickets_{t}")))
        su.execute(sql.SQL("GRANT TRIGGER ON public.{} TO {}").format(sql.Identifier(f"tickets_{t}"),
                                                                     sql.Identifier(w.role(t, "admin"))))
    with w.connect(t, "admin") as a:      # the worker tables (issue 9): an insert trigger, a schedule, a firing
        a.execute("SELECT pgagent.on_insert(%s, 'analyst', %s)", [f"public.tickets_{t}", f"MARK-{t} ticket {{id}}"])
        a.execute("SELECT pgagent.schedule('analyst', '* * * * *', %s, name => %s)", [f"MARK-{t} tick", f"sched-{t}"])
    with psycopg.connect(w.cluster.dsn(w.dbname), autocommit=True) as su:
        su.execute("UPDATE pgagent.schedule SET next_fire_at = now() - interval '1 minute' WHERE tenant_id = %s",
                   [tenant_id])
    with w.connect(t, "user") as u:       # ... fired, and claimed by a worker of the tenant
        assert u.execute("SELECT pgagent.fire_schedules()").fetchone()[0] == 1
        claimed = u.execute("SELECT turn_id FROM pgagent.claim_turn(%s)", [f"worker-{t}"]).fetchone()
        assert claimed is not None
    with psycopg.connect(w.cluster.dsn(w.dbname), autocommit=True) as su:   # and in the guard tables
        budget = su.execute("INSERT INTO pgagent.budget (tenant_id, scope, period, max_usd, created_by) "
                            "VALUES (%s, 'tenant', 'month', 1000, 'setup') RETURNING budget_id", [tenant_id]).fetchone()[0]
        su.execute("INSERT INTO pgagent.budget_usage (tenant_id, budget_id, period_start) "
                   "VALUES (%s, %s, date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')", [tenant_id, budget])
        su.execute("INSERT INTO pgagent.budget_hold (tenant_id, budget_id, period_start, turn_id) "
                   "SELECT tenant_id, budget_id, period_start, %s FROM pgagent.budget_usage WHERE budget_id = %s",
                   [r2["turn_id"], budget])
        hook = su.execute("INSERT INTO pgagent.hook (tenant_id, event, fn, enabled, created_by) VALUES "
                          "(%s, 'after_response', 'pg_catalog.jsonb_typeof(jsonb)', false, 'setup') RETURNING hook_id",
                          [tenant_id]).fetchone()[0]
    return {"tenant_id": tenant_id, "model_id": model_id, "conversation": cid, "done_turn": r1["turn_id"], "parked_turn": r2["turn_id"],
            "pending_step": r2["pending_approvals"][0]["step_id"], "key": key_of(t), "marker": f"MARK-{t}",
            "flag": flag, "budget": budget, "hook": hook, "worker": f"worker-{t}", "schedule": f"sched-{t}",
            "table": f"public.tickets_{t}", "claimed_turn": claimed[0], "memory_admin": memory_admin,
            "memory_agent": memory_agent, "memory_user": memory_user, "document": document, "eval_run": eval_run,
            "discussion": discussion["discussion_id"], "delegating_turn": r3["turn_id"], "api_key": api_key}


def snapshot(conn: psycopg.Connection, tenant_id: str) -> dict[str, str]:
    """Per table: a digest of all the tenant's rows (as the superuser, which bypasses RLS)."""
    out = {}
    for t in TABLES:
        col = "tenant_id"
        out[t] = conn.execute(sql.SQL("SELECT count(*)::text || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') "
                                      "FROM pgagent.{} x WHERE {} = %s").format(sql.Identifier(t), sql.Identifier(col)),
                              [tenant_id]).fetchone()[0]
    return out


class Matrix:
    def __init__(self, victim: dict[str, Any]) -> None:
        self.victim = victim
        self.attempts = 0
        self.leaks: list[str] = []

    def leaked(self, value: Any) -> bool:
        s = json.dumps(value, default=str)
        return any(m in s for m in (self.victim["tenant_id"], self.victim["key"], self.victim["marker"]))

    def attempt(self, conn: psycopg.Connection, label: str, query: str, params: Any = None, *,
                write: bool = False) -> None:
        """Run one attack in its own transaction (rolled back). A leak: the victim's data in the
        result, or a write that touched rows (write=True)."""
        self.attempts += 1
        try:
            with conn.transaction(force_rollback=True):
                cur = conn.execute(query, params)
                rows = cur.fetchall() if cur.description else []
                if self.leaked(rows) or (write and cur.rowcount > 0):
                    self.leaks.append(f"{label}: {query} -> {rows!r} ({cur.rowcount} rows)")
        except psycopg.Error:
            pass


def test_adversarial_matrix(world, conn):
    before = {t: snapshot(conn, world.ids[t]["tenant_id"]) for t in TENANTS}
    total, leaks = 0, []
    for attacker, victim_name in (("acme", "globex"), ("globex", "acme")):
        v = world.ids[victim_name]
        vt = v["tenant_id"]
        victim_channel = conn.execute("SELECT pgagent.event_channel(%s)", [vt]).fetchone()[0]
        m = Matrix(v)
        for g in GROUPS:
            who = f"{attacker}/{g}"
            with world.connect(attacker, g, autocommit=False) as c:
                for t in TABLES:
                    tbl = sql.Identifier("pgagent", t).as_string(c)
                    m.attempt(c, who, f"SELECT * FROM {tbl}")
                    m.attempt(c, who, f"SELECT * FROM {tbl} WHERE tenant_id = %s", [vt])
                    m.attempt(c, who, f"UPDATE {tbl} SET tenant_id = tenant_id WHERE tenant_id = %s", [vt], write=True)
                    m.attempt(c, who, f"DELETE FROM {tbl} WHERE tenant_id = %s", [vt], write=True)
                    m.attempt(c, who, f"TRUNCATE {tbl}", write=True)
                    # insert a copy of one of our own rows into the victim tenant
                    m.attempt(c, who, f"INSERT INTO {tbl} OVERRIDING SYSTEM VALUE SELECT (pg_catalog.jsonb_populate_record("
                                      f"NULL::{tbl}, pg_catalog.to_jsonb(x) || pg_catalog.jsonb_build_object('tenant_id', %s::uuid))).* "
                                      f"FROM {tbl} x LIMIT 1 RETURNING *", [vt], write=True)
                    # ... and under the victim's tenant setting
                    m.attempt(c, who, f"SELECT pg_catalog.set_config('pgagent.tenant', %s, true), * FROM {tbl}",
                              [victim_name])
                for view in VIEWS:
                    m.attempt(c, who, f"SELECT * FROM pgagent.{view}")
                    m.attempt(c, who, f"SELECT * FROM pgagent.{view} WHERE tenant_id = %s", [vt])
                fn_attacks = [
                    ("SELECT pgagent.approve_step(%s, true, 'pwned')", [v["pending_step"]]),
                    ("SELECT pgagent.approve_step(%s, false)", [v["pending_step"]]),
                    ("SELECT pgagent.process_tool_call(%s)", [v["pending_step"]]),
                    ("SELECT pgagent.cancel_turn(%s)", [v["parked_turn"]]),
                    ("SELECT pgagent.send_message(%s, 'hi')", [v["conversation"]]),
                    ("SELECT pgagent.enqueue_message(%s, 'hi')", [v["conversation"]]),
                    ("SELECT pgagent.delete_conversation(%s)", [v["conversation"]]),
                    ("SELECT pgagent.prepare_turn(%s)", [v["parked_turn"]]),
                    ("SELECT pgagent.submit_reply(%s, '{\"choices\": []}')", [v["parked_turn"]]),
                    ("SELECT * FROM pgagent.verify_turn(%s)", [v["done_turn"]]),
                    ("SELECT pgagent._turn_step(%s)", [v["parked_turn"]]),
                    ("CALL pgagent._run_turn(%s, NULL)", [v["parked_turn"]]),
                    ("SELECT pgagent._py('cancel_turn', %s)", [json.dumps({"turn": v["parked_turn"]})]),
                    ("SELECT pgagent.remove_member(%s, %s)", [victim_name, world.role(victim_name, "viewer")]),
                    ("SELECT pgagent.verify_audit_chain(%s)", [vt]),
                    ("SELECT * FROM pgagent.verify_audit_chain(%s) WHERE events > 0", [vt]),
                    ("SELECT pgagent._llm_call(%s, '{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}')",
                     [v["model_id"]]),
                    ("SELECT pgagent._secret_decrypt(ciphertext) FROM pgagent.secret", None),
                    ("SELECT ciphertext FROM pgagent.secret", None),
                    ("SELECT pgagent.add_member(%s, current_user)", [victim_name]),
                    ("SELECT pgagent.add_member(%s, current_user)", [vt]),
                    ("SELECT pgagent.add_tenant(%s)", [victim_name]),
                    ("SELECT pgagent._kek()", None),
                    ("SELECT * FROM pgagent.authenticate_api_key(%s)", [v["api_key"]]),
                    ("SELECT pgagent._api_key_matches(%s, hash) FROM pgagent.api_key", [v["api_key"]]),
                    ("SELECT pgagent.create_api_key('stolen', %s)", [world.role(victim_name, "admin")]),
                    ("SHOW pgagent.kek", None),
                    ("SELECT pg_catalog.pg_read_file('pgagent.kek')", None),
                    ("SELECT pgagent.current_tenant()::text FROM pg_catalog.set_config('pgagent.tenant', %s, true)", [victim_name]),
                    ("SELECT pgagent.current_tenant()::text FROM pg_catalog.set_config('pgagent.tenant', %s, true)", [vt]),
                    ("SELECT pgagent._sandbox_query('SELECT * FROM pgagent.secret', NULL, 'public', 10)", None),
                    ("SELECT pgagent._sandbox_query('SELECT pg_catalog.set_config(''role'', current_user, true)', NULL, 'public', 10)", None),
                    # the operator API (0.2.0) on the victim's ids
                    ("SELECT pgagent.inject_message(%s, 'pwned')", [v["conversation"]]),
                    ("SELECT pgagent.override_response(%s, 'pwned', 'x')", [v["done_turn"]]),
                    ("SELECT pgagent.pause_conversation(%s)", [v["conversation"]]),
                    ("SELECT pgagent.resume_conversation(%s)", [v["conversation"]]),
                    ("SELECT pgagent.retry_turn(%s)", [v["done_turn"]]),
                    ("SELECT pgagent.fork_conversation(%s, %s)", [v["conversation"], v["pending_step"]]),
                    ("SELECT pgagent.bulk_approve(step_ids => %s)", [[v["pending_step"]]]),
                    ("SELECT pgagent.bulk_approve(tool => 'bump')", None),
                    ("SELECT pgagent.rate_turn(%s, 1, 'pwned')", [v["done_turn"]]),
                    ("SELECT pgagent.flag_issue(%s)", [v["done_turn"]]),
                    ("SELECT pgagent.flag_issue(step => %s)", [v["pending_step"]]),
                    ("SELECT pgagent.resolve_issue(%s)", [v["flag"]]),
                    ("SELECT pgagent.delete_budget(%s)", [v["budget"]]),
                    ("SELECT pgagent.delete_hook(%s)", [v["hook"]]),
                    ("SELECT pgagent.set_budget(scope => 'agent', agent => 'analyst', max_usd => 0)", None),
                    # the analytics functions (0.2.0) run as the caller: its tenant only
                    ("SELECT pgagent.agent_analytics('analyst', 3660)", None),
                    ("SELECT * FROM pgagent.hourly_activity(2)", None),
                    ("SELECT * FROM pgagent.tool_usage(3660)", None),
                    ("SELECT pgagent.agent_analytics('analyst') FROM pg_catalog.set_config('pgagent.tenant', %s, true)",
                     [victim_name]),
                    # the worker API (issue 9): claim, beat, stop or exit the victim's work and workers
                    ("SELECT * FROM pgagent.claim_turn('thief', 60000, %s)", [victim_name]),
                    ("SELECT * FROM pgagent.claim_turn('thief', 60000, %s)", [vt]),
                    ("SELECT 1 WHERE pgagent.worker_heartbeat(%s, true) > 0", [v["worker"]]),
                    ("SELECT 1 WHERE pgagent.worker_exit(%s) > 0", [v["worker"]]),
                    ("SELECT pgagent.fire_schedules()", None),
                    ("SELECT pgagent.housekeeping('0 seconds', '0 seconds')", None),
                    ("SELECT pgagent.unschedule(%s)", [v["schedule"]]),
                    ("SELECT pgagent.schedule('analyst', '* * * * *', 'x', name => %s)", [v["schedule"]]),
                    ("SELECT pgagent.on_insert(%s, 'analyst', 'pwned')", [v["table"]]),
                    ("SELECT pgagent.off_insert(%s, 'analyst')", [v["table"]]),
                    ("SELECT pgagent.set_limits(1, 1)", None),
                    ("SELECT pgagent._enqueue_internal(%s, 1, 'pwned', '{}', 'x', 'x', '{}')", [vt]),
                    ("SELECT pgagent._cron_py('* * * * *', 'UTC', now())", None),
                    ("SELECT pgagent._on_insert_row()", None),
                    ("CALL pgagent._run_turn(%s, NULL)", [v["claimed_turn"]]),
                ]
                for q, p in fn_attacks:
                    m.attempt(c, who, q, p, write=q.startswith("SELECT pgagent.add_"))
                # the victim's event channel (LISTEN is not covered by row level security: its name
                # is the secret); asking for it must fail, not answer it
                for q, p in [("SELECT pgagent.event_channel(%s)", [victim_name]),
                             ("SELECT pgagent.event_channel(%s)", [vt]),
                             ("SELECT pgagent.event_channel() FROM pg_catalog.set_config('pgagent.tenant', %s, true)",
                              [victim_name]),
                             ("SELECT 'pgagent_events_' || events_key FROM pgagent.tenant WHERE tenant_id = %s", [vt])]:
                    m.attempts += 1
                    try:
                        with c.transaction(force_rollback=True):
                            out = c.execute(q, p).fetchone()
                            if out and out[0] == victim_channel:
                                m.leaks.append(f"{who}: {q} -> {out}")
                    except psycopg.Error:
                        pass
                # an id-taking function that answered must have answered with an error, not the victim's data
                for q, p in [("SELECT pgagent._turn_step(%s)", [v["parked_turn"]])]:
                    m.attempts += 1
                    try:
                        with c.transaction(force_rollback=True):
                            out = c.execute(q, p).fetchone()[0]
                            if "error" not in out:
                                m.leaks.append(f"{who}: {q} -> {out}")
                    except psycopg.Error:
                        pass
                for target in (world.role(victim_name), world.role(victim_name, g), world.role(victim_name, "admin")):
                    m.attempt(c, who, sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(target)).as_string(c) +
                              "; SELECT * FROM pgagent.step", write=True)
                    m.attempt(c, who, "SELECT pg_catalog.set_config('role', %s, true), (SELECT count(*) FROM pgagent.step)",
                              [target], write=True)
            with world.connect(attacker, g) as c:  # CALL run_turn must run outside a transaction block
                m.attempts += 1
                try:
                    res = c.execute("CALL pgagent.run_turn(%s)", [v["parked_turn"]]).fetchall()
                    if m.leaked(res):
                        m.leaks.append(f"{who}: run_turn -> {res}")
                except psycopg.Error:
                    pass
        # the sql tool: the model (driven by a user of the attacker's tenant) tries to read across
        probes = ["SELECT * FROM pgagent.step", "SELECT * FROM pgagent.secret", "SELECT * FROM pgagent.turn_timeline",
                  "SELECT pgagent.current_tenant()", "SELECT pgagent._secret_decrypt(ciphertext) FROM pgagent.secret",
                  "SELECT pg_catalog.set_config('role', session_user, true), (SELECT count(*) FROM pgagent.step)",
                  "SELECT * FROM pg_catalog.query_to_xml('SELECT * FROM pgagent.step', true, false, '') AS q",
                  f"SELECT pg_catalog.set_config('pgagent.tenant', '{victim_name}', true), "
                  "(SELECT pg_catalog.count(*) FROM pgagent.audit_event)"]
        cid = world.ids[attacker]["conversation"]
        with world.connect(attacker, "operator") as o:
            o.execute("SELECT pgagent.cancel_turn(%s)", [world.ids[attacker]["parked_turn"]])
            world.llm.script(tool_calls([("run_sql", {"query": q}) for q in probes]), text("done"))
            r = o.execute("SELECT pgagent.send_message(%s, 'probe')", [cid]).fetchone()[0]
            assert r["status"] == "completed", r
            results = o.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_result' "
                                "ORDER BY seq", [r["turn_id"]]).fetchall()
            assert len(results) == len(probes)
            for q, (payload,) in zip(probes, results):
                m.attempts += 1
                if not payload["is_error"] or m.leaked(payload):
                    m.leaks.append(f"{attacker} sql tool: {q} -> {payload}")
        total += m.attempts
        leaks += m.leaks
    after = {t: snapshot(conn, world.ids[t]["tenant_id"]) for t in TENANTS}
    # each tenant's budget was charged exactly its own LLM calls, and no reservation is left over
    for t in TENANTS:
        spent, calls, held = conn.execute(SPEND_SQL, {"t": world.ids[t]["tenant_id"]}).fetchone()
        assert calls > 0   # the probes made priced LLM calls
        if spent != calls or held:
            leaks.append(f"{t}: budget spent {spent} USD for its own LLM calls of {calls} USD, {held} holds left")
    # the attackers changed only their own tenants (the probes above); the victims are untouched
    for t in TENANTS:
        for tbl in GUARDED:
            if before[t][tbl] != after[t][tbl]:
                leaks.append(f"{t}.{tbl} changed by an attacker")
    out = ROOT / "results" / "security_matrix.txt"
    out.parent.mkdir(exist_ok=True)
    out.write_text(f"security matrix: {total} attempts, {len(leaks)} leaks\n" + "".join(f"LEAK {x}\n" for x in leaks))
    print(f"security matrix: {total} attempts, {len(leaks)} leaks")
    assert leaks == []
    assert total > 500


def test_each_role_can_do_its_job_and_no_more(world):
    acme = world.ids["acme"]
    with world.connect("acme", "viewer") as c:
        assert c.execute("SELECT count(*) FROM pgagent.turn_summary").fetchone()[0] == 8   # 2 sent, 1 scheduled, 1 eval case, 2 discussed, 1 delegating and its child
        assert {r[0] for r in c.execute("SELECT DISTINCT tenant_id::text FROM pgagent.turn_timeline")} == {acme["tenant_id"]}
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("SELECT pgagent.send_message(%s, 'hi')", [acme["conversation"]])
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("SELECT * FROM pgagent.secret")
    with world.connect("acme", "user") as c:
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("SELECT pgagent.approve_step(%s, true)", [acme["pending_step"]])
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("SELECT pgagent.register_model('x', base_url => 'http://x')")
        for stmt in ("UPDATE pgagent.step SET payload = '{}'", "DELETE FROM pgagent.step",
                     "DELETE FROM pgagent.audit_event", "TRUNCATE pgagent.turn"):
            with pytest.raises(errors.InsufficientPrivilege):
                c.execute(stmt)
    with world.connect("acme", "operator") as c:
        world.llm.script(text("bumped it"))
        c.execute("SELECT pgagent.approve_step(%s, true, 'ok')", [acme["pending_step"]])
        r = c.execute("SELECT pgagent.process_tool_call(%s)", [acme["pending_step"]]).fetchone()[0]
        assert r["status"] == "completed"
        with pytest.raises(errors.InsufficientPrivilege):
            c.execute("SELECT pgagent.create_agent('a2', model => 'scripted')")
    with world.connect("acme", "admin") as c:
        actions = [r[0] for r in c.execute("SELECT action FROM pgagent.audit_event ORDER BY chain_seq")]
        for a in ("tenant_added", "secret_set", "model_registered", "tool_registered", "agent_created",
                  "member_added", "approval_decided"):
            assert a in actions, (a, actions)
        assert c.execute("SELECT ok FROM pgagent.verify_audit_chain()").fetchone()[0] is True
        for stmt in ("UPDATE pgagent.audit_event SET payload = '{}'", "UPDATE pgagent.step SET payload = '{}'"):
            with pytest.raises(errors.InsufficientPrivilege):
                c.execute(stmt)


def test_tenant_selection(world, cluster, dbname, conn):
    # a role of exactly one tenant gets it without SET; a member of two must choose
    both = f"{dbname}_both"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE pgagent_viewer, {}, {}").format(
        sql.Identifier(both), sql.Identifier(world.role("acme")), sql.Identifier(world.role("globex"))))
    try:
        with psycopg.connect(cluster.dsn(dbname, user=both), autocommit=True) as c:
            with pytest.raises(errors.InsufficientPrivilege) as e:
                c.execute("SELECT pgagent.current_tenant()")
            assert "SET pgagent.tenant" in (e.value.diag.message_hint or "")
            c.execute("SET pgagent.tenant = 'globex'")
            assert c.execute("SELECT pgagent.current_tenant()::text").fetchone()[0] == world.ids["globex"]["tenant_id"]
            assert c.execute("SELECT count(*) FROM pgagent.turn").fetchone()[0] == 8   # see test_each_role_can_do_its_job
            c.execute("SET pgagent.tenant = 'no-such-tenant'")
            with pytest.raises(errors.InsufficientPrivilege):
                c.execute("SELECT pgagent.current_tenant()")
    finally:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(both)))
    # the superuser may pick any tenant and gets the default tenant when unset
    assert conn.execute("SELECT pgagent.current_tenant() = pgagent.default_tenant_id()").fetchone()[0]
    conn.execute("SET pgagent.tenant = 'acme'")
    assert conn.execute("SELECT pgagent.current_tenant()::text").fetchone()[0] == world.ids["acme"]["tenant_id"]


def test_audit_chain_detects_tampering(world, conn):
    tid = world.ids["acme"]["tenant_id"]
    ok, n, broken = conn.execute("SELECT * FROM pgagent.verify_audit_chain(%s)", [tid]).fetchone()
    assert ok and n >= 6 and broken is None
    with pytest.raises(errors.InsufficientPrivilege):  # even the superuser, while the trigger is on
        conn.execute("UPDATE pgagent.audit_event SET payload = '{}' WHERE tenant_id = %s", [tid])
    victim = conn.execute("SELECT event_id FROM pgagent.audit_event WHERE tenant_id = %s AND action = 'model_registered'",
                          [tid]).fetchone()[0]
    conn.execute("ALTER TABLE pgagent.audit_event DISABLE TRIGGER audit_no_update_delete")
    conn.execute("UPDATE pgagent.audit_event SET payload = payload || '{\"base_url\": \"http://evil\"}' "
                 "WHERE tenant_id = %s AND event_id = %s", [tid, victim])
    conn.execute("ALTER TABLE pgagent.audit_event ENABLE TRIGGER audit_no_update_delete")
    assert conn.execute("SELECT * FROM pgagent.verify_audit_chain(%s)", [tid]).fetchone() == (False, n, victim)
    # the other tenant's chain is intact
    assert conn.execute("SELECT ok FROM pgagent.verify_audit_chain(%s)", [world.ids["globex"]["tenant_id"]]).fetchone()[0]


def test_stored_secret_is_encrypted_and_redacted(world, conn):
    acme = world.ids["acme"]
    ct = conn.execute("SELECT ciphertext FROM pgagent.secret WHERE tenant_id = %s", [acme["tenant_id"]]).fetchone()[0]
    assert acme["key"].encode() not in bytes(ct)
    with world.connect("acme", "operator") as c:
        c.execute("SELECT pgagent.cancel_turn(%s)", [acme["parked_turn"]])
        world.llm.script(http_error(401, body={"error": {"message": f"Incorrect API key provided: {acme['key']}"}}))
        r = c.execute("SELECT pgagent.send_message(%s, 'hi')", [acme["conversation"]]).fetchone()[0]
        assert world.llm.requests[-1]["headers"]["authorization"] == f"Bearer {acme['key']}"
        assert r["status"] == "failed" and "[REDACTED]" in r["error"] and acme["key"] not in r["error"]
    everything = conn.execute("SELECT (SELECT string_agg(payload::text, ' ') FROM pgagent.step) || "
                              "(SELECT string_agg(coalesce(error, ''), ' ') FROM pgagent.turn) || "
                              "(SELECT string_agg(payload::text, ' ') FROM pgagent.audit_event)").fetchone()[0]
    assert acme["key"] not in everything and world.ids["globex"]["key"] not in everything
    # a non-superuser never falls back to the server's environment or pgagent.secret.* settings
    with world.connect("acme", "admin") as c:
        c.execute("SELECT set_config('pgagent.secret.OTHER', 'sk-from-a-setting-123', false)")
        c.execute("SELECT pgagent.register_model('scripted', base_url => %s, secret_name => 'OTHER')",
                  [world.llm.base_url])
        r = c.execute("SELECT pgagent.send_message(%s, 'hi')", [acme["conversation"]]).fetchone()[0]
        assert r["status"] == "failed" and "'OTHER'" in r["error"]


def test_sql_tool_sandbox(world):
    acme = world.ids["acme"]
    probes = ["SELECT x FROM shared_data", "SELECT count(*) FROM pgagent.step", "SELECT count(*) FROM pgagent.secret",
              "SELECT public.bump(5)", "SELECT current_user::text AS u",
              "SELECT pg_catalog.set_config('role', session_user, true)"]
    with world.connect("acme", "operator") as c:
        c.execute("SELECT pgagent.cancel_turn(%s)", [acme["parked_turn"]])
        world.llm.script(tool_calls([("run_sql", {"query": q}) for q in probes]), text("ok"))
        r = c.execute("SELECT pgagent.send_message(%s, 'probe')", [acme["conversation"]]).fetchone()[0]
        res = [p for (p,) in c.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_result' "
                                       "ORDER BY seq", [r["turn_id"]])]
    assert res[0]["result"]["rows"] == [{"x": 42}]
    assert res[1]["is_error"] and "permission denied for schema pgagent" in res[1]["error"]
    assert res[2]["is_error"] and "permission denied" in res[2]["error"]
    assert res[3]["is_error"] or res[3]["result"]["rows"] == [{"bump": "bumped 5"}]
    assert res[4]["result"]["rows"] == [{"u": "pgagent_sandbox"}]
    assert res[5]["is_error"] and "role" in res[5]["error"]


def test_no_role_can_obtain_even_its_own_tenants_key(world):
    """Keys are used inside pgagent._llm_call only: no tenant role, admin included, gets the
    plaintext of its own tenant's key from any object, even when the provider echoes it back."""
    acme = world.ids["acme"]
    key = acme["key"]
    tries = 0
    for g in GROUPS:
        with world.connect("acme", g) as c:
            for q, p in [("SELECT ciphertext FROM pgagent.secret", None),
                         ("SELECT pgagent._secret_decrypt(ciphertext) FROM pgagent.secret", None),
                         ("SELECT pgagent._secret_decrypt(%s)", [b"x"]),
                         ("SELECT pgagent._kek()", None),
                         ("SELECT pgagent._secret_encrypt('x')", None),
                         ("SELECT * FROM pgagent.audit_event", None),
                         ("SELECT * FROM pgagent.turn_timeline", None),
                         ("SELECT pgagent._llm_call(%s, %s)",
                          [acme["model_id"], json.dumps({"messages": [{"role": "user", "content": "echo"}]})])]:
                tries += 1
                world.llm.script(text(f"the key you sent is {key}"), http_error(401, body=f"bad key {key}"))
                try:
                    out = json.dumps(c.execute(q, p).fetchall(), default=str)
                except psycopg.Error as e:
                    out = str(e)
                assert key not in out, (g, q, out)
                world.llm.reset()
    assert tries == 32
    # and the loop's own use of it: an echoed key becomes [REDACTED] in the recorded reply
    with world.connect("acme", "operator") as c:
        c.execute("SELECT pgagent.cancel_turn(%s)", [acme["parked_turn"]])
        world.llm.script(text(f"your key is {key}"))
        r = c.execute("SELECT pgagent.send_message(%s, 'echo my key')", [acme["conversation"]]).fetchone()[0]
        assert world.llm.requests[-1]["headers"]["authorization"] == f"Bearer {key}"
        assert r["answer"] == "your key is [REDACTED]"
    # a member of acme cannot spend globex's key by calling _llm_call with globex's model
    with world.connect("acme", "admin") as c, pytest.raises(errors.InsufficientPrivilege):
        c.execute("SELECT pgagent._llm_call(%s, '{\"messages\": []}')", [world.ids["globex"]["model_id"]])


def test_an_agent_tool_cannot_reach_an_agent_of_another_tenant(world):
    """acme's agent tool names an agent only globex has: the call is refused as an unknown agent,
    and no turn of either tenant is created for it."""
    with world.connect("globex", "admin") as g:
        g.execute("SELECT pgagent.create_agent('globex_only', model => 'scripted')")
    with world.connect("acme", "admin") as a:
        a.execute("""SELECT pgagent.register_tool('ask_other', 'Ask another agent',
                     '{"type": "object", "properties": {"message": {"type": "string"}}}', kind => 'agent',
                     config => '{"agent": "globex_only"}')""")
        a.execute("SELECT pgagent.create_agent('reacher', model => 'scripted', tools => '{ask_other}')")
    with world.connect("acme", "user") as u:
        cid = u.execute("SELECT pgagent.start_conversation('reacher')").fetchone()[0]
        world.llm.script(tool_calls([("ask_other", {"message": "MARK-acme leak this"})]), text("could not"))
        r = u.execute("SELECT pgagent.send_message(%s, 'reach')", [cid]).fetchone()[0]
        result = u.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_result'",
                           [r["turn_id"]]).fetchone()[0]
    assert result["refused"] and "agent 'globex_only' does not exist (for this tenant)" in result["error"]
    with psycopg.connect(world.cluster.dsn(world.dbname), autocommit=True) as su:
        assert su.execute("SELECT count(*) FROM pgagent.turn WHERE user_message LIKE '%leak this%'").fetchone()[0] == 0
