"""Budgets (pgagent.set_budget): enforced before every LLM call, reserved atomically so
concurrent turns cannot overspend, reported by budget_status, audited."""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest
from psycopg import errors

from scripted_llm import hang, http_error, text, tool_calls
from test_loop import kinds, send, setup_agent, steps


def status_row(conn: psycopg.Connection, budget_id: int) -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM pgagent.budget_status WHERE budget_id = %s", [budget_id])
    return dict(zip([d.name for d in cur.description], cur.fetchone()))


def holds(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM pgagent.budget_hold").fetchone()[0]


def budget_error(conn: psycopg.Connection, turn_id: int) -> dict[str, Any]:
    errs = steps(conn, turn_id, "error")
    assert len(errs) == 1, errs
    return errs[0]["payload"]


def test_turn_limit_stops_the_turn_before_any_http_request(conn, llm):
    cid = setup_agent(conn, llm)
    bid = conn.execute("SELECT pgagent.set_budget(max_turns => 2, period => 'day')").fetchone()[0]
    llm.script(text("one"), text("two"), text("three"))
    assert send(conn, cid, "a")["status"] == "completed"
    assert send(conn, cid, "b")["status"] == "completed"
    r = send(conn, cid, "c")
    assert r["status"] == "failed" and r["error"].startswith("budget exceeded: the daily budget of the tenant allows 2 turns")
    assert len(llm.requests) == 2                       # no HTTP request for the third turn
    assert kinds(conn, r["turn_id"]) == ["user_message", "error"]
    e = budget_error(conn, r["turn_id"])
    assert e["error_kind"] == "budget_exceeded" and e["sqlstate"] == "53400"
    assert (e["budget_id"], e["limit"], e["max"], e["spent"], e["estimate"]) == (bid, "max_turns", 2, 2, 1)
    s = status_row(conn, bid)
    assert (s["turns"], s["remaining_turns"], s["exhausted"], float(s["used_pct"])) == (2, 0, True, 100.0)
    assert (s["spent_tokens"], s["held_tokens"]) == (30, 0) and holds(conn) == 0


def test_a_turn_counts_once_however_many_calls_it_makes(conn, llm):
    cid = setup_agent(conn, llm)
    bid = conn.execute("SELECT pgagent.set_budget(max_turns => 1)").fetchone()[0]
    llm.script(tool_calls([("bump", {"n": 1})]), text("bumped"), text("never"))
    r = send(conn, cid, "bump")
    assert r["status"] == "completed" and r["llm_calls"] == 2
    assert status_row(conn, bid)["turns"] == 1
    assert send(conn, cid, "again")["status"] == "failed" and len(llm.requests) == 2


def test_usd_and_token_spend_are_the_recorded_usage(conn, llm):
    cid = setup_agent(conn, llm)   # 2.5 USD per M prompt tokens, 10 per M completion tokens
    bid = conn.execute("SELECT pgagent.set_budget(max_usd => 1, max_tokens => 1000000)").fetchone()[0]
    llm.script(tool_calls([("bump", {"n": 1})], prompt_tokens=1000, completion_tokens=100),
               text("done", prompt_tokens=1200, completion_tokens=50))
    r = send(conn, cid, "bump")
    s = status_row(conn, bid)
    assert s["spent_tokens"] == 2350 == r["usage"]["total_tokens"]
    assert float(s["spent_usd"]) == pytest.approx(r["cost_usd"]) == pytest.approx((2200 * 2.5 + 150 * 10) / 1e6)
    assert s["period"] == "month" and s["period_start"].day == 1
    # a USD limit below the next call's estimate refuses it
    conn.execute("SELECT pgagent.set_budget(max_usd => %s::numeric)", [float(s["spent_usd"]) + 1e-6])
    r = send(conn, cid, "again")
    assert r["status"] == "failed" and budget_error(conn, r["turn_id"])["limit"] == "max_usd"
    assert len(llm.requests) == 2


def test_estimate_reserves_the_completion_cap(conn, llm):
    cid = setup_agent(conn, llm, config={"budget_completion_tokens": 500})
    conn.execute("SELECT pgagent.set_budget(max_tokens => 520)")
    r = send(conn, cid, "hi")            # the prompt estimate plus 500 completion tokens do not fit
    assert r["status"] == "failed" and len(llm.requests) == 0
    e = budget_error(conn, r["turn_id"])
    assert e["limit"] == "max_tokens" and e["estimate"] > 500
    # max_tokens in the request is the cap instead
    conn.execute("SELECT pgagent.update_agent('analyst', config => %s)",
                 [json.dumps({"budget_completion_tokens": 500, "params": {"max_tokens": 10}})])
    llm.script(text("short"))
    assert send(conn, cid, "hi")["status"] == "completed"


def test_agent_and_role_scopes_apply_only_to_their_turns(conn, llm):
    cid = setup_agent(conn, llm)
    conn.execute("SELECT pgagent.create_agent('other', model => 'scripted')")
    other = conn.execute("SELECT pgagent.start_conversation('other')").fetchone()[0]
    conn.execute("SELECT pgagent.set_budget(scope => 'agent', agent => 'analyst', max_turns => 0)")
    conn.execute("CREATE ROLE budget_nobody NOLOGIN")
    try:
        conn.execute("SELECT pgagent.set_budget(scope => 'role', role => 'budget_nobody', max_turns => 0)")
        llm.script(text("from other"))
        assert send(conn, other, "hi")["status"] == "completed"
        r = send(conn, cid, "hi")
        assert r["status"] == "failed" and "budget of agent analyst" in r["error"]
        me = conn.execute("SELECT current_user").fetchone()[0]
        conn.execute("SELECT pgagent.set_budget(scope => 'role', role => %s, max_turns => 0)", [me])
        r = send(conn, other, "hi")
        assert r["status"] == "failed" and f"budget of role {me}" in r["error"]
        assert len(llm.requests) == 1
    finally:
        conn.execute("DELETE FROM pgagent.budget")
        conn.execute("DROP ROLE budget_nobody")


def test_failed_attempts_release_their_reservation_and_stale_holds_do_not_count(conn, llm):
    cid = setup_agent(conn, llm, max_retries=1)
    bid = conn.execute("SELECT pgagent.set_budget(max_turns => 1)").fetchone()[0]
    llm.script(http_error(500), http_error(500))
    r = send(conn, cid, "hi")
    assert r["status"] == "failed" and holds(conn) == 0
    assert status_row(conn, bid)["turns"] == 0        # no call was recorded: nothing spent
    # a hold left by a crashed worker for a turn that is no longer running is dropped
    period = conn.execute("SELECT date_trunc('month', now(), 'UTC')").fetchone()[0]
    conn.execute("INSERT INTO pgagent.budget_hold (tenant_id, budget_id, period_start, turn_id, turns) "
                 "SELECT tenant_id, %s, %s, %s, 1 FROM pgagent.turn WHERE turn_id = %s",
                 [bid, period, r["turn_id"], r["turn_id"]])
    assert status_row(conn, bid)["held_turns"] == 0   # the view ignores it too
    llm.script(text("ok"))
    assert send(conn, cid, "again")["status"] == "completed"
    assert holds(conn) == 0


def test_retry_after_raising_the_budget(conn, llm):
    cid = setup_agent(conn, llm)
    conn.execute("SELECT pgagent.set_budget(max_turns => 0)")
    r = send(conn, cid, "hi")
    assert r["status"] == "failed"
    conn.execute("SELECT pgagent.set_budget(max_turns => 5)")
    llm.script(text("now it fits"))
    r = conn.execute("SELECT pgagent.retry_turn(%s)", [r["turn_id"]]).fetchone()[0]
    assert r["status"] == "completed" and r["answer"] == "now it fits"


@pytest.mark.parametrize("how", ["run_turn", "send_message"])
def test_eight_concurrent_sessions_never_overspend(conn, llm, dsn, how):
    """8 sessions start a turn at once against max_turns 3 (and a token limit that fits 3
    calls): exactly 3 HTTP requests reach the server, 3 turns complete, 5 fail on the budget."""
    setup_agent(conn, llm, config={"params": {"max_tokens": 20}})
    bid = conn.execute("SELECT pgagent.set_budget(max_turns => 3, period => 'day')").fetchone()[0]
    tok = conn.execute("SELECT pgagent.set_budget(scope => 'agent', agent => 'analyst', max_tokens => 100000)"
                       ).fetchone()[0]
    convs = [conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0] for _ in range(8)]
    llm.script(*[hang(0.3, text(f"answer {i}")) for i in range(8)])
    barrier, out = threading.Barrier(8), []

    def go(cid: int) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            barrier.wait()
            if how == "run_turn":
                tid = c.execute("SELECT pgagent.enqueue_message(%s, 'hi')", [cid]).fetchone()[0]
                out.append(c.execute("CALL pgagent.run_turn(%s)", [tid]).fetchone()[0])
            else:
                out.append(send(c, cid, "hi"))

    threads = [threading.Thread(target=go, args=(cid,)) for cid in convs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == 8
    assert sorted(r["status"] for r in out) == ["completed"] * 3 + ["failed"] * 5
    assert len(llm.requests) == 3
    assert all("budget exceeded" in r["error"] for r in out if r["status"] == "failed")
    assert status_row(conn, bid)["turns"] == 3 and holds(conn) == 0
    assert status_row(conn, tok)["spent_tokens"] == 3 * 15


def test_set_budget_replaces_by_scope_and_is_audited(conn, llm):
    setup_agent(conn, llm)
    a = conn.execute("SELECT pgagent.set_budget(max_usd => 5)").fetchone()[0]
    b = conn.execute("SELECT pgagent.set_budget(max_usd => 7, max_turns => 10)").fetchone()[0]
    d = conn.execute("SELECT pgagent.set_budget(max_usd => 1, period => 'day')").fetchone()[0]
    assert a == b != d
    assert conn.execute("SELECT max_usd, max_turns FROM pgagent.budget WHERE budget_id = %s", [a]).fetchone() == (7, 10)
    ev = conn.execute("SELECT payload FROM pgagent.audit_event WHERE action = 'budget_set' ORDER BY event_id").fetchall()
    assert len(ev) == 3 and ev[1][0]["previous"] == {"max_usd": 5, "max_tokens": None, "max_turns": None}
    assert ev[1][0]["limits"] == {"max_usd": 7.0, "max_tokens": None, "max_turns": 10}
    assert conn.execute("SELECT pgagent.delete_budget(%s)", [d]).fetchone()[0] is True
    assert conn.execute("SELECT count(*) FROM pgagent.audit_event WHERE action = 'budget_deleted'").fetchone()[0] == 1


@pytest.mark.parametrize("call,err,match", [
    ("pgagent.set_budget()", errors.InvalidParameterValue, "needs max_usd, max_tokens or max_turns"),
    ("pgagent.set_budget(max_usd => -1)", errors.InvalidParameterValue, "max_usd must be a number >= 0"),
    ("pgagent.set_budget(scope => 'planet', max_turns => 1)", errors.InvalidParameterValue, "scope must be one of"),
    ("pgagent.set_budget(period => 'week', max_turns => 1)", errors.InvalidParameterValue, "period must be day or month"),
    ("pgagent.set_budget(scope => 'agent', max_turns => 1)", errors.InvalidParameterValue, "needs agent"),
    ("pgagent.set_budget(max_turns => 1, agent => 'analyst')", errors.InvalidParameterValue, "only for scope"),
    ("pgagent.set_budget(scope => 'agent', agent => 'nope', max_turns => 1)", errors.UndefinedObject, "nope"),
    ("pgagent.set_budget(scope => 'role', role => 'no_such_role_x', max_turns => 1)", errors.UndefinedObject,
     "no_such_role_x"),
    ("pgagent.set_budget(scope => NULL, max_turns => 1)", errors.InvalidParameterValue, "scope"),
    ("pgagent.delete_budget(NULL)", errors.InvalidParameterValue, "budget"),
    ("pgagent.delete_budget(424242)", errors.UndefinedObject, "424242"),
])
def test_bad_input(conn, llm, call, err, match):
    setup_agent(conn, llm)
    with pytest.raises(err, match=match):
        conn.execute(f"SELECT {call}")
    assert conn.execute("SELECT count(*) FROM pgagent.budget").fetchone()[0] == 0
