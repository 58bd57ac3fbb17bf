"""Events (sql/35_events.sql): a NOTIFY per step, turn status change and intervention on the
tenant's channel; live under CALL run_turn, in order, ids and kinds only, one channel per tenant."""

from __future__ import annotations

import json
import re
import threading
from typing import Any, Callable

import psycopg
import pytest
from psycopg import errors, sql

from scripted_llm import hang, text, tool_calls
from test_loop import send, setup_agent

STEP_KEYS = {"type", "tenant_id", "conversation_id", "turn_id", "step_id", "seq", "kind", "parent_step_id"}
TURN_KEYS = {"type", "tenant_id", "conversation_id", "turn_id", "status", "previous_status"}
INTERVENTION_KEYS = {"type", "tenant_id", "conversation_id", "turn_id", "intervention_id", "action"}


def listen(dsn: str, channel_of: str | None = None, **kw: Any) -> tuple[psycopg.Connection, str]:
    c = psycopg.connect(dsn, autocommit=True, **kw)
    ch = c.execute("SELECT pgagent.event_channel(%s)", [channel_of]).fetchone()[0]
    c.execute(sql.SQL("LISTEN {}").format(sql.Identifier(ch)))
    return c, ch


def collect(c: psycopg.Connection, until: Callable[[dict[str, Any]], bool], timeout: float = 20) -> list[dict]:
    """Notifications (decoded payloads) until one satisfies *until*; fails after *timeout* s."""
    got: list[dict] = []
    for n in c.notifies(timeout=timeout):
        got.append(json.loads(n.payload))
        if until(got[-1]):
            return got
    raise AssertionError(f"no closing event within {timeout} s; got {got}")


def turn_done(turn_id: int) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "turn" and e["turn_id"] == turn_id and e["status"] in ("completed", "failed")


def check_no_content(events: list[dict], *secrets: str) -> None:
    keys = {"step": STEP_KEYS, "turn": TURN_KEYS, "intervention": INTERVENTION_KEYS}
    for e in events:
        assert set(e) == keys[e["type"]], e
        for s in secrets:
            assert s not in json.dumps(e), e


def test_run_turn_events_arrive_live_in_order_with_ids_only(conn, llm, dsn):
    cid = setup_agent(conn, llm, timeout_ms=30000)
    listener, channel = listen(dsn)
    assert re.fullmatch(r"pgagent_events_[0-9a-f]{32}", channel)
    turn_id = conn.execute("SELECT pgagent.enqueue_message(%s, 'how many zebras?')", [cid]).fetchone()[0]
    llm.script(tool_calls([("run_sql", {"query": "SELECT 'zebra' AS animal"})]), hang(2, text("three zebras")))
    worker = psycopg.connect(dsn, autocommit=True)
    th = threading.Thread(target=lambda: worker.execute("CALL pgagent.run_turn(%s)", [turn_id]))
    th.start()
    try:
        early = collect(listener, lambda e: e["type"] == "step" and e["kind"] == "tool_result")
        # the tool_result's event came while the second LLM call is still in flight
        assert conn.execute("SELECT status FROM pgagent.turn WHERE turn_id = %s", [turn_id]).fetchone()[0] == "running"
        rest = collect(listener, turn_done(turn_id))
    finally:
        th.join(30)
        worker.close()
        listener.close()
    events = early + rest
    check_no_content(events, "zebra")
    steps = [e for e in events if e["type"] == "step"]
    db = conn.execute("SELECT step_id, seq, kind, parent_step_id FROM pgagent.step WHERE turn_id = %s ORDER BY seq",
                      [turn_id]).fetchall()
    assert [(e["step_id"], e["seq"], e["kind"], e["parent_step_id"]) for e in steps] == [tuple(r) for r in db]
    assert [e["kind"] for e in steps] == ["user_message", "llm_call", "tool_call", "tool_result", "llm_call",
                                          "response"]
    assert all(e["turn_id"] == turn_id and e["conversation_id"] == cid for e in events)
    turns = [(e["previous_status"], e["status"]) for e in events if e["type"] == "turn"]
    assert turns == [(None, "queued"), ("queued", "running"), ("running", "completed")]


def test_send_message_events_arrive_at_commit_one_per_step(conn, llm, dsn):
    cid = setup_agent(conn, llm)
    listener, _ = listen(dsn)
    llm.script(tool_calls([("run_sql", {"query": "SELECT 1"})]), text("one"))
    r = send(conn, cid, "count it")
    events = collect(listener, turn_done(r["turn_id"]))
    listener.close()
    check_no_content(events, "count it")
    n_steps = conn.execute("SELECT count(*) FROM pgagent.step WHERE turn_id = %s", [r["turn_id"]]).fetchone()[0]
    steps = [e for e in events if e["type"] == "step"]
    assert len(steps) == n_steps and len({e["step_id"] for e in steps}) == n_steps
    assert [e["seq"] for e in steps] == list(range(1, n_steps + 1))
    assert [e["status"] for e in events if e["type"] == "turn"][-1] == "completed"


def test_rolled_back_work_sends_nothing(conn, llm, dsn):
    cid = setup_agent(conn, llm)
    listener, _ = listen(dsn)
    with pytest.raises(errors.RaiseException):
        with conn.transaction():
            llm.script(text("lost"))
            send(conn, cid, "then roll back")
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'abort'; END $$")
    assert list(listener.notifies(timeout=0.5)) == []
    listener.close()


def test_interventions_are_events(conn, llm, dsn):
    cid = setup_agent(conn, llm)
    listener, _ = listen(dsn)
    conn.execute("SELECT pgagent.inject_message(%s, 'secret instruction')", [cid])
    conn.execute("SELECT pgagent.pause_conversation(%s, 'checking')", [cid])
    events = collect(listener, lambda e: e.get("action") == "pause")
    listener.close()
    check_no_content(events, "secret instruction", "checking")
    assert [(e["type"], e["action"], e["conversation_id"]) for e in events] == [
        ("intervention", "inject_message", cid), ("intervention", "pause", cid)]


def test_channels_are_per_tenant_and_only_members_learn_them(cluster, dbname, conn, llm):
    roles = []
    try:
        for t in ("acme", "globex"):
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(f"{dbname}_{t}")))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE pgagent_viewer, {}").format(
                sql.Identifier(f"{dbname}_{t}_viewer"), sql.Identifier(f"{dbname}_{t}")))
            roles += [f"{dbname}_{t}_viewer", f"{dbname}_{t}"]
            conn.execute("SELECT pgagent.add_tenant(%s, %s)", [t, f"{dbname}_{t}"])
        ids = dict(conn.execute("SELECT name, tenant_id::text FROM pgagent.tenant").fetchall())
        listener, channel = listen(cluster.dsn(dbname, user=f"{dbname}_acme_viewer"))
        assert channel != conn.execute("SELECT pgagent.event_channel('globex')").fetchone()[0]
        for other in ("globex", ids["globex"], "default", "nosuch"):
            with pytest.raises(errors.UndefinedObject):
                listener.execute("SELECT pgagent.event_channel(%s)", [other])
        assert listener.execute("SELECT pgagent.event_channel(%s)", [ids["acme"]]).fetchone()[0] == channel
        turns = {}
        for t in ("globex", "acme"):   # a turn in each; acme's listener hears only acme's
            conn.execute("SELECT set_config('pgagent.tenant', %s, false)", [t])
            conn.execute("SELECT pgagent.register_model('scripted', base_url => %s, is_default => true)",
                         [llm.base_url])
            conn.execute("SELECT pgagent.create_agent('a')")
            cid = conn.execute("SELECT pgagent.start_conversation('a')").fetchone()[0]
            llm.script(text(f"hello from {t}"))
            turns[t] = send(conn, cid, "hi")["turn_id"]
        events = collect(listener, turn_done(turns["acme"]))
        assert events and {e["tenant_id"] for e in events} == {ids["acme"]}
        assert turns["globex"] not in {e["turn_id"] for e in events}
        listener.close()
    finally:
        for r in roles:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(r)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)))


def test_example_listener_prints_steps_as_run_turn_commits_them(conn, llm, dsn):
    """examples/listen.py, as documented: a step line for each step, then the turn's end."""
    import subprocess
    import sys
    from pathlib import Path

    cid = setup_agent(conn, llm)
    turn_id = conn.execute("SELECT max(turn_id) + 1 FROM (SELECT 0 AS turn_id UNION ALL "
                           "SELECT turn_id FROM pgagent.turn) t").fetchone()[0]   # the next one
    script = Path(__file__).resolve().parents[2] / "examples" / "listen.py"
    p = subprocess.Popen([sys.executable, str(script), "--dsn", dsn, "--until-turn", str(turn_id), "--timeout", "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline().startswith("listening on pgagent_events_")
        assert conn.execute("SELECT pgagent.enqueue_message(%s, 'rainy days?')", [cid]).fetchone()[0] == turn_id
        llm.script(tool_calls([("run_sql", {"query": "SELECT count(*) FROM weather WHERE rain > 0"})]),
                   text("243 rainy days"))
        conn.execute("CALL pgagent.run_turn(%s)", [turn_id])
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    lines = out.splitlines()
    assert p.returncode == 0, err
    kinds = [ln.split()[4] for ln in lines if " step " in ln]
    assert kinds == ["user_message", "llm_call", "tool_call", "tool_result", "llm_call", "response"], lines
    assert any("243 rainy days" in ln for ln in lines if "response" in ln)   # read through the view
    assert lines[0] == f"turn {turn_id} new -> queued" and lines[-1] == f"turn {turn_id} running -> completed"
