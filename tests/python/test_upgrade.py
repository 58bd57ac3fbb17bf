"""ALTER EXTENSION pgagent UPDATE from every earlier release (scripts/releases.py RELEASES: 0.1.0
updates through 0.1.1): install it from git history, give it real data through its own API,
update, and compare the catalog of schema pgagent with a fresh install of this version; then
check that the old data still works (hash chains, approvals, new turns, views, the new operator
API on old turns). Needs `make install` of this tree and the git history."""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql

from scripted_llm import text, tool_calls

import releases  # noqa: E402  (scripts/ is on sys.path: conftest.py)

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS_VERSION = releases.PREVIOUS[0]
GROUPS = ("viewer", "user", "operator", "admin")
RUN_SQL_SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
BUMP_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
RUNTIME_FUNCTION = re.compile(r"_run_as_[0-9]+\b")   # pgagent._run_as_<role oid>, made at run time


def current_version() -> str:
    return re.search(r"^default_version = '(.*)'", (ROOT / "pgagent.control").read_text(), re.M).group(1)


@pytest.fixture(params=releases.RELEASES, ids=[v for v, _ in releases.RELEASES])
def old_release(request: pytest.FixtureRequest) -> Iterator[str]:
    """Install an earlier release next to this version (scripts/releases.py): its script into
    the extension directory (removed afterwards, so users never see it) and its pgagent_core
    into its versioned directory. Checks first that this tree is what is installed."""
    old_version, old_commit = request.param
    ext = releases.extension_dir()
    new = current_version()
    upgrade = ext / f"pgagent--{PREVIOUS_VERSION}--{new}.sql"
    built = ROOT / "build" / upgrade.name
    subprocess.run(["make", "-s", "-C", str(ROOT), "all"], check=True, capture_output=True)
    assert upgrade.exists() and upgrade.read_bytes() == built.read_bytes(), \
        f"{upgrade} is missing or differs from {built}: run `make install`"
    assert (ext / f"pgagent--{new}.sql").read_bytes() == (ROOT / "build" / f"pgagent--{new}.sql").read_bytes(), \
        "the installed full script differs from build/: run `make install`"
    try:
        with releases.installed(old_version, old_commit) as version:
            yield version
    except releases.Unavailable as e:
        pytest.skip(str(e))


# ---------------------------------------------------------------------------- the catalog

def _q(conn: psycopg.Connection, query: str) -> list[tuple[Any, ...]]:
    return conn.execute(query).fetchall()


def _acl(items: list[str] | None) -> str:
    return "{" + ",".join(sorted(items)) + "}" if items else "default"


def catalog(conn: psycopg.Connection, *, column_order: bool = False) -> dict[str, list[str]]:
    """Everything that defines schema pgagent, as sorted lines per kind of object (pgagent's own
    runtime objects, pgagent._run_as_<oid>, left out). column_order adds each table's column list
    in order (an upgrade appends new columns, so it differs from a fresh install there)."""
    rel = """FROM pg_class c WHERE c.relnamespace = 'pgagent'::regnamespace"""
    out: dict[str, list[str]] = {}
    out["relations"] = [
        f"{n} kind={k} rls={r} force_rls={f} owner={o} options={opt} acl={_acl(acl)}"
        for n, k, r, f, o, opt, acl in _q(conn, f"""
            SELECT c.relname, c.relkind, c.relrowsecurity, c.relforcerowsecurity, c.relowner::regrole::text,
                   c.reloptions, c.relacl::text[] {rel} AND c.relkind <> 'i'""")]
    out["columns"] = [
        f"{t}.{a}: {typ} not_null={nn} default={d} identity={i!r} generated={g!r} acl={_acl(acl)}"
        for t, a, typ, nn, d, i, g, acl in _q(conn, f"""
            SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, a.attacl::text[]
              {rel.replace('FROM pg_class c', 'FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid '
                                              'LEFT JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum')}
               AND c.relkind IN ('r', 'v', 'p', 'm') AND a.attnum > 0 AND NOT a.attisdropped""")]
    if column_order:
        out["column order"] = [f"{t}: {cols}" for t, cols in _q(conn, f"""
            SELECT c.relname, string_agg(a.attname, ', ' ORDER BY a.attnum)
              {rel.replace('FROM pg_class c', 'FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid')}
               AND c.relkind IN ('r', 'v') AND a.attnum > 0 AND NOT a.attisdropped GROUP BY c.relname""")]
    out["constraints"] = [f"{t}.{n}: {d}" for t, n, d in _q(conn, f"""
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
          {rel.replace('FROM pg_class c', 'FROM pg_class c JOIN pg_constraint k ON k.conrelid = c.oid')}""")]
    out["indexes"] = [d for (d,) in _q(conn, f"SELECT pg_get_indexdef(c.oid) {rel} AND c.relkind = 'i'")]
    out["views"] = [f"{n}| {line}" for n, d in _q(conn, f"SELECT c.relname, pg_get_viewdef(c.oid) {rel} AND c.relkind = 'v' "
                                                          "ORDER BY 1") for line in d.splitlines()]
    out["policies"] = [
        f"{t}.{n}: cmd={cmd} permissive={p} roles={roles} using={u} check={w}"
        for t, n, cmd, p, roles, u, w in _q(conn, """
            SELECT c.relname, p.polname, p.polcmd, p.polpermissive,
                   (SELECT string_agg(CASE r WHEN 0 THEN 'public' ELSE r::regrole::text END, ',' ORDER BY 1)
                      FROM unnest(p.polroles) r),
                   pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
              FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
             WHERE c.relnamespace = 'pgagent'::regnamespace""")]
    out["triggers"] = [f"{t}.{n}: {d} enabled={e}" for t, n, d, e in _q(conn, """
        SELECT c.relname, g.tgname, pg_get_triggerdef(g.oid), g.tgenabled
          FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
         WHERE c.relnamespace = 'pgagent'::regnamespace AND NOT g.tgisinternal""")]
    functions, bodies = [], []
    for sig, kind, secdef, cfg, vol, par, ret, owner, acl, body in _q(conn, """
            SELECT p.oid::regprocedure::text, p.prokind, p.prosecdef, p.proconfig, p.provolatile, p.proparallel,
                   pg_get_function_result(p.oid), p.proowner::regrole::text, p.proacl::text[],
                   CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) ELSE p.prosrc END
              FROM pg_proc p WHERE p.pronamespace = 'pgagent'::regnamespace ORDER BY 1"""):
        if RUNTIME_FUNCTION.search(sig):
            continue
        functions.append(f"{sig}: kind={kind} security_definer={secdef} config={cfg} volatile={vol} "
                         f"parallel={par} returns={ret} owner={owner} acl={_acl(acl)}")
        bodies += [f"{sig}| {line}" for line in body.splitlines()]
    out["functions"], out["function definitions"] = functions, bodies
    out["comments"] = [f"{o}: {d}" for o, d in _q(conn, """
        SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description FROM pg_description d""")
        if "pgagent" in o and not RUNTIME_FUNCTION.search(o)]
    out["extension members"] = [o for (o,) in _q(conn, """
        SELECT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d
         WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
           AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pgagent')""")]
    out["extension"] = [f"{n}: {v} config dump={cfg}" for n, v, cfg in _q(conn, """
        SELECT e.extname, e.extversion,
               (SELECT string_agg(t::regclass::text || coalesce(' ' || quote_literal(w), ''), ', ' ORDER BY t::regclass::text)
                  FROM unnest(e.extconfig, e.extcondition) AS x(t, w))
          FROM pg_extension e WHERE e.extname = 'pgagent'""")]
    out["schema"] = [f"pgagent owner={o} acl={_acl(acl)}" for o, acl in _q(conn, """
        SELECT nspowner::regrole::text, nspacl::text[] FROM pg_namespace WHERE nspname = 'pgagent'""")]
    # sorted, but a view's or function's lines stay in order
    return {k: v if k in ("views", "function definitions") else sorted(v) for k, v in out.items()}


def catalog_diff(expected: dict[str, list[str]], actual: dict[str, list[str]],
                 expected_name: str, actual_name: str) -> str:
    """A unified diff per kind of object; empty when the catalogs are the same."""
    parts = []
    for kind in expected.keys() | actual.keys():
        a, b = expected.get(kind, []), actual.get(kind, [])
        if a != b:
            parts.append(f"=== {kind}\n" + "\n".join(difflib.unified_diff(
                a, b, expected_name, actual_name, lineterm="", n=0)))
    return "\n".join(sorted(parts))


def replayable_sql() -> str:
    """The replayable part of this version's scripts (every sql/NN_*.sql but the tables)."""
    files = subprocess.run(["make", "-s", "-C", str(ROOT), "--no-print-directory", "print-replay"],
                           check=True, capture_output=True, text=True).stdout.split()
    assert files and "sql/10_tables.sql" not in files
    body = "\n".join((ROOT / f).read_text() for f in files)
    return body.replace("@PYLIBDIR@", str(releases.PYLIBROOT / current_version())).replace("@EXTVERSION@", current_version())


# ---------------------------------------------------------------------------- the test

class Tenant:
    """One tenant of the old release: a group role and a login role per pgagent group role."""

    def __init__(self, cluster: Any, dbname: str, name: str) -> None:
        self.cluster, self.dbname, self.name = cluster, dbname, name
        self.group = f"{dbname}_{name}"

    def role(self, g: str) -> str:
        return f"{self.group}_{g}"

    def roles(self) -> list[str]:
        return [self.group] + [self.role(g) for g in GROUPS]

    def connect(self, g: str) -> psycopg.Connection:
        return psycopg.connect(self.cluster.dsn(self.dbname, user=self.role(g)), autocommit=True)


def fill_old_release(su: psycopg.Connection, t: Tenant, llm: Any) -> dict[str, Any]:
    """Real data through 0.1.0's API: a tenant with roles, a model with a secret, tools, a persona,
    an agent, a member, an egress rule, a completed turn with a tool call and a parked turn."""
    su.execute("CREATE TABLE public.bumps (n int)")
    su.execute("GRANT SELECT, INSERT ON public.bumps TO PUBLIC")
    su.execute("CREATE FUNCTION public.bump(n int) RETURNS text LANGUAGE sql AS "
               "$$ INSERT INTO public.bumps VALUES (n) RETURNING 'bumped ' || n $$")
    su.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(t.group)))
    for g in GROUPS:
        su.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}, {}").format(
            sql.Identifier(t.role(g)), sql.Identifier(f"pgagent_{g}"), sql.Identifier(t.group)))
    tenant_id = su.execute("SELECT pgagent.add_tenant(%s, %s)::text", [t.name, t.group]).fetchone()[0]
    su.execute("INSERT INTO pgagent.egress_exception (tenant_id, network, note) VALUES (%s, '10.99.0.0/16', 'lab')",
               [tenant_id])
    with t.connect("admin") as a:
        a.execute("SELECT pgagent.set_secret('KEY', 'sk-upgrade-0123456789abcdef')")
        a.execute("SELECT pgagent.register_model('scripted', base_url => %s, secret_name => 'KEY', "
                  "input_usd_per_mtok => 2.5, output_usd_per_mtok => 10)", [llm.base_url])
        a.execute("SELECT pgagent.register_tool('run_sql', 'Run SQL', %s, kind => 'sql')", [json.dumps(RUN_SQL_SCHEMA)])
        a.execute("""SELECT pgagent.register_tool('bump', 'Bump', %s, kind => 'function',
                     config => '{"function": "public.bump"}', requires_approval => true)""", [json.dumps(BUMP_SCHEMA)])
        a.execute("SELECT pgagent.create_persona('p', 'You count things.', traits => '{\"tone\": \"dry\"}')")
        a.execute("SELECT pgagent.create_agent('counter', model => 'scripted', tools => '{run_sql,bump}', "
                  "persona => 'p', config => '{\"retry_backoff_ms\": 1}')")
        a.execute("SELECT pgagent.add_member(%s, %s)", [t.name, t.role("viewer")])
        a.execute("SELECT pgagent.allow_egress('api.example.com')")
    with t.connect("user") as u:
        cid = u.execute("SELECT pgagent.start_conversation('counter', 'before the upgrade')").fetchone()[0]
        llm.script(tool_calls([("run_sql", {"query": "SELECT count(*) AS n FROM generate_series(1, 3)"})],
                              prompt_tokens=100, completion_tokens=20),
                   text("There are 3.", prompt_tokens=150, completion_tokens=10))
        done = u.execute("SELECT pgagent.send_message(%s, 'How many?')", [cid]).fetchone()[0]
        assert done["status"] == "completed" and done["answer"] == "There are 3.", done
        llm.script(tool_calls([("bump", {"n": 7})]))
        parked = u.execute("SELECT pgagent.send_message(%s, 'Bump it by 7')", [cid]).fetchone()[0]
        assert parked["status"] == "awaiting_approval", parked
    return {"tenant_id": tenant_id, "conversation": cid, "done": done["turn_id"], "parked": parked["turn_id"],
            "pending_step": parked["pending_approvals"][0]["step_id"]}


def rows_digest(conn: psycopg.Connection, table: str, columns: str) -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT {columns} FROM pgagent.{table} ORDER BY 1, 2").fetchall()


def test_update_matches_a_fresh_install_and_keeps_the_data(cluster, llm, old_release):
    new = current_version()
    old_db, fresh_db = f"upg{os.getpid()}_old", f"upg{os.getpid()}_fresh"
    t = Tenant(cluster, old_db, "acme")
    with psycopg.connect(cluster.dsn(), autocommit=True) as pg:
        for db in (old_db, fresh_db):
            pg.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    try:
        # ------------------------------------------------------------ 0.1.0 with data
        with psycopg.connect(cluster.dsn(old_db), autocommit=True) as su:
            su.execute("SET client_min_messages = warning")
            su.execute(sql.SQL("CREATE EXTENSION pgagent VERSION {} CASCADE").format(sql.Literal(old_release)))
            ids = fill_old_release(su, t, llm)
            events = su.execute("SELECT count(*) FROM pgagent.audit_event WHERE tenant_id = %s",
                                [ids["tenant_id"]]).fetchone()[0]
            assert events >= 6   # tenant_added, secret_set, model_registered, agent_created, member_added, egress_allowed
            before = {"step": rows_digest(su, "step", "turn_id, seq, kind, payload, created_by, created_at"),
                      "turn": rows_digest(su, "turn", "turn_id, status, answer, llm_calls, prompt_tokens, cost_usd"),
                      "audit_event": rows_digest(su, "audit_event", "tenant_id, chain_seq, hash")}

        # ------------------------------------------------------------ the update (new sessions from here:
        # a backend that imported 0.1.0's pgagent_core keeps it)
        with psycopg.connect(cluster.dsn(old_db), autocommit=True) as su:
            su.execute("SET client_min_messages = warning")
            su.execute("ALTER EXTENSION pgagent UPDATE")
            assert su.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgagent'").fetchone()[0] == new
            upgraded = catalog(su)
        with psycopg.connect(cluster.dsn(fresh_db), autocommit=True) as fresh:
            fresh.execute("SET client_min_messages = warning")
            fresh.execute("CREATE EXTENSION pgagent CASCADE")
            expected = catalog(fresh)
        diff = catalog_diff(expected, upgraded, f"fresh {new}", f"{old_release} updated to {new}")
        assert not diff, "the updated catalog differs from a fresh install:\n" + diff

        # ------------------------------------------------------------ the data of 0.1.0 is kept ...
        with psycopg.connect(cluster.dsn(old_db), autocommit=True) as su:
            assert rows_digest(su, "step", "turn_id, seq, kind, payload, created_by, created_at") == before["step"]
            assert rows_digest(su, "turn", "turn_id, status, answer, llm_calls, prompt_tokens, cost_usd") == before["turn"]
            assert rows_digest(su, "audit_event", "tenant_id, chain_seq, hash") == before["audit_event"]
            assert su.execute("SELECT bool_and(m.enabled) FROM pgagent.model m").fetchone()[0] is True
            assert su.execute("SELECT bool_and(updated_at = created_at) FROM pgagent.persona").fetchone()[0] is True

        # ------------------------------------------------------------ ... and works in this version
        with t.connect("viewer") as v:
            for turn in (ids["done"], ids["parked"]):
                ok, n, broken, problem = v.execute("SELECT * FROM pgagent.verify_turn(%s)", [turn]).fetchone()
                assert ok and n > 0 and broken is None and problem is None, (turn, n, broken, problem)
            assert v.execute("SELECT ok, events FROM pgagent.verify_audit_chain()").fetchone() == (True, events)
            summary = v.execute("SELECT turn_id, status, steps, prompt_tokens, user_id FROM pgagent.turn_summary "
                                "ORDER BY turn_id").fetchall()
            assert [(r[0], r[1]) for r in summary] == [(ids["done"], "completed"), (ids["parked"], "awaiting_approval")]
            assert summary[0][2] == 6 and summary[0][3] == 250 and summary[0][4] is None
            assert [r[0] for r in v.execute("SELECT step_id FROM pgagent.pending_approvals")] == [ids["pending_step"]]
        with t.connect("operator") as op:   # another role than the one that started the turn (four-eyes rule)
            d = op.execute("SELECT pgagent.approve_step(%s, true, 'fine')", [ids["pending_step"]]).fetchone()[0]
            assert d["approved"] is True and d["decided_by"] == t.role("operator"), d
            llm.script(text("Bumped by 7."))
            r = op.execute("SELECT pgagent.process_tool_call(%s)", [ids["pending_step"]]).fetchone()[0]
            assert r["status"] == "completed" and r["answer"] == "Bumped by 7.", r
        with t.connect("user") as u:
            llm.script(text("Still here."))
            r = u.execute("SELECT pgagent.send_message(%s, 'And now?')", [ids["conversation"]]).fetchone()[0]
            assert r["status"] == "completed" and r["answer"] == "Still here.", r
            history = [m["content"] for m in llm.requests[-1]["body"]["messages"] if m["role"] == "user"]
            assert history[:2] == ["How many?", "Bump it by 7"], history
            new_turn = r["turn_id"]
        with t.connect("viewer") as v:
            for turn in (ids["done"], ids["parked"], new_turn):
                assert v.execute("SELECT ok, problem FROM pgagent.verify_turn(%s)", [turn]).fetchone() == (True, None)
            ok, n = v.execute("SELECT ok, events FROM pgagent.verify_audit_chain()").fetchone()
            assert ok and n > events   # approval_decided and later events continue the old chain
            assert v.execute("SELECT status FROM pgagent.turn_summary WHERE turn_id = %s",
                             [ids["parked"]]).fetchone()[0] == "completed"
        with t.connect("operator") as op:   # the operator API of this version works on old turns
            o = op.execute("SELECT pgagent.override_response(%s, 'Three.', 'house style')", [ids["done"]]).fetchone()[0]
            assert o["answer"] == "Three."
            assert op.execute("SELECT pgagent.rate_turn(%s, 5)", [ids["done"]]).fetchone()[0] > 0
            op.execute("SELECT pgagent.inject_message(%s, 'Be brief.')", [ids["conversation"]])
            p = op.execute("SELECT pgagent.pause_conversation(%s)", [ids["conversation"]]).fetchone()[0]
            assert p["paused_turns"] == [] and p["active_turns"] == []
            op.execute("SELECT pgagent.resume_conversation(%s)", [ids["conversation"]])
        with t.connect("viewer") as v:
            assert v.execute("SELECT ok, problem FROM pgagent.verify_turn(%s)", [ids["done"]]).fetchone() == (True, None)
            assert v.execute("SELECT count(*) FROM pgagent.intervention").fetchone()[0] == 4   # override, inject, pause, resume
        with psycopg.connect(cluster.dsn(old_db), autocommit=True) as su:
            assert [r[0] for r in su.execute("SELECT n FROM public.bumps")] == [7]

        # ------------------------------------------------------------ the replayable part runs again cleanly
        # (what the next release's upgrade script does first thing after its migration)
        cluster.psql("-q", "--single-transaction", "-c", "SET client_min_messages = warning", "-f", "-",
                     dbname=fresh_db, input=replayable_sql(), check=True)
        with psycopg.connect(cluster.dsn(fresh_db), autocommit=True) as fresh:
            again = catalog(fresh)
        diff = catalog_diff(expected, again, f"fresh {new}", "replayed once more")
        assert not diff, "replaying sql/ over an install changed the catalog:\n" + diff
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as pg:
            for db in (old_db, fresh_db):
                pg.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            for r in reversed(t.roles()):
                pg.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)))
