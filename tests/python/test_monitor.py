"""The monitoring views (realtime_steps, tool_call_queue, thinking_trace, conversation_timeline,
dashboard_overview, flagged_issues) and analytics functions (agent_analytics, hourly_activity,
tool_usage) against turns run through the scripted LLM server; row level security in each."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import errors

from scripted_llm import http_error, raw, text, tool_calls
from test_loop import send, setup_agent


def rows(conn: psycopg.Connection, q: str, params: Any = None) -> list[dict[str, Any]]:
    cur = conn.execute(q, params)
    return [dict(zip([d.name for d in cur.description], r)) for r in cur]


def reasoning_reply(content: str, reasoning: str) -> Any:
    return raw(json.dumps({"id": "r1", "object": "chat.completion", "model": "scripted-reasoner",
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": content,
                                                    "reasoning_content": reasoning}}],
                           "usage": {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}}))


@pytest.fixture
def world(conn, llm) -> dict[str, Any]:
    """Six turns of agent analyst: run (auto), pending, rejected, approved and run, failed, and
    one whose model returned reasoning_content; an injection, two ratings and a flag."""
    setup_agent(conn, llm, bump_approval=True)
    conv = [conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0] for _ in range(6)]
    ids: dict[str, Any] = {"conv": conv}
    llm.script(tool_calls([("run_sql", {"query": "SELECT 1 AS one"})], content="Let me query."), text("one"))
    ids["auto"] = send(conn, conv[0], "auto")["turn_id"]
    llm.script(tool_calls([("bump", {"n": 1})]))
    r = send(conn, conv[1], "pending")
    ids["pending"], ids["pending_call"] = r["turn_id"], r["pending_approvals"][0]["step_id"]
    llm.script(tool_calls([("bump", {"n": 2})]), text("not bumped"))
    r = send(conn, conv[2], "rejected")
    ids["rejected"] = r["turn_id"]
    conn.execute("SELECT pgagent.approve_step(%s, false, 'no')", [r["pending_approvals"][0]["step_id"]])
    conn.execute("SELECT pgagent.process_tool_call(%s)", [r["pending_approvals"][0]["step_id"]])
    llm.script(tool_calls([("bump", {"n": 3})]), text("bumped"))
    r = send(conn, conv[3], "approved")
    ids["approved"] = r["turn_id"]
    conn.execute("SELECT pgagent.approve_step(%s, true)", [r["pending_approvals"][0]["step_id"]])
    conn.execute("SELECT pgagent.process_tool_call(%s)", [r["pending_approvals"][0]["step_id"]])
    llm.script(http_error(500))
    ids["failed"] = send(conn, conv[4], "failed")["turn_id"]
    llm.script(reasoning_reply("42", "6 times 7 is 42."))
    ids["reasoned"] = send(conn, conv[5], "6*7?")["turn_id"]
    conn.execute("SELECT pgagent.inject_message(%s, 'Be brief.')", [conv[0]])
    conn.execute("SELECT pgagent.rate_turn(%s, 5)", [ids["auto"]])
    conn.execute("SELECT pgagent.rate_turn(%s, 2, thumbs_up => false)", [ids["rejected"]])
    ids["flag"] = conn.execute("SELECT pgagent.flag_issue(%s, category => 'wrong_answer')",
                               [ids["failed"]]).fetchone()[0]
    return ids


def test_tool_call_queue_states(conn, world):
    q = {r["turn_id"]: r for r in rows(conn, "SELECT * FROM pgagent.tool_call_queue")}
    assert {t: (q[t]["tool_name"], q[t]["state"], q[t]["approval"]) for t in q} == {
        world["auto"]: ("run_sql", "run", "auto-approved"),
        world["pending"]: ("bump", "pending", "pending"),
        world["rejected"]: ("bump", "rejected", "rejected"),
        world["approved"]: ("bump", "run", "approved"),
    }
    assert q[world["rejected"]]["note"] == "no" and "rejected" in q[world["rejected"]]["error"]
    assert q[world["pending"]]["step_id"] == world["pending_call"] and q[world["pending"]]["wait_s"] >= 0
    assert q[world["approved"]]["decided_by"] == "postgres" and q[world["approved"]]["run_ms"] > 0
    assert q[world["pending"]]["turn_status"] == "awaiting_approval"


def test_dashboard_overview(conn, world):
    d = rows(conn, "SELECT * FROM pgagent.dashboard_overview WHERE tenant_id = pgagent.current_tenant()")[0]
    assert (d["queued"], d["running"], d["awaiting_approval"], d["paused"]) == (0, 0, 1, 0)
    assert d["approvals_waiting"] == 1 and d["oldest_wait_s"] >= 0
    assert (d["turns_1h"], d["errors_1h"], d["turns_24h"], d["errors_24h"]) == (6, 1, 6, 1)
    usage = conn.execute("SELECT sum(prompt_tokens + completion_tokens), sum(cost_usd) FROM pgagent.turn").fetchone()
    assert d["tokens_1h"] == d["tokens_24h"] == usage[0] and d["cost_usd_24h"] == usage[1]
    assert float(d["error_rate_pct_24h"]) == 20.0      # 1 failed of 5 finished
    assert 0 < d["p50_turn_ms_24h"] <= d["p95_turn_ms_24h"]
    assert d["open_flags"] == 1


def test_realtime_steps_are_newest_first(conn, world):
    r = rows(conn, "SELECT * FROM pgagent.realtime_steps")
    total = conn.execute("SELECT count(*) FROM pgagent.step").fetchone()[0]
    assert len(r) == total and [x["step_id"] for x in r] == sorted((x["step_id"] for x in r), reverse=True)
    assert r[0]["kind"] == "response" and r[0]["turn_id"] == world["reasoned"] and r[0]["summary"] == "42"
    assert all(x["age_s"] >= 0 for x in r)


def test_thinking_trace_shows_reasoning_and_text_beside_calls(conn, world):
    t = rows(conn, "SELECT turn_id, source, content, model FROM pgagent.thinking_trace ORDER BY turn_id")
    assert [(x["turn_id"], x["source"], x["content"]) for x in t] == [
        (world["auto"], "content", "Let me query."), (world["reasoned"], "reasoning", "6 times 7 is 42.")]
    assert t[1]["model"] == "scripted-reasoner"


def test_conversation_timeline_includes_interventions(conn, world):
    t = rows(conn, "SELECT source, kind, summary, turn_id FROM pgagent.conversation_timeline "
                   "WHERE conversation_id = %s ORDER BY created_at, source, seq", [world["conv"][0]])
    assert [x["kind"] for x in t] == ["user_message", "llm_call", "thinking", "tool_call", "tool_result", "llm_call",
                                      "response", "inject_message"]
    assert t[-1] == {"source": "intervention", "kind": "inject_message", "summary": "Be brief.", "turn_id": None}
    # an intervention that acts on a turn is also one of its steps, summarised in turn_timeline
    conn.execute("SELECT pgagent.override_response(%s, 'One.', 'style')", [world["auto"]])
    summary = rows(conn, "SELECT summary FROM pgagent.turn_timeline WHERE kind = 'intervention'")
    assert summary == [{"summary": "override_response by postgres: One."}]


def test_flagged_issues_open_first(conn, world):
    conn.execute("SELECT pgagent.flag_issue(%s, category => 'slow')", [world["auto"]])
    conn.execute("SELECT pgagent.resolve_issue(%s, 'fixed')", [world["flag"]])
    f = rows(conn, "SELECT status, category, turn_id, agent, resolution FROM pgagent.flagged_issues")
    assert f == [{"status": "open", "category": "slow", "turn_id": world["auto"], "agent": "analyst", "resolution": None},
                 {"status": "resolved", "category": "wrong_answer", "turn_id": world["failed"], "agent": "analyst",
                  "resolution": "fixed"}]


def test_agent_analytics(conn, world):
    a = conn.execute("SELECT pgagent.agent_analytics('analyst')").fetchone()[0]
    assert (a["conversations"], a["turns"], a["completed"], a["failed"], a["active"]) == (6, 6, 4, 1, 1)
    assert a["success_rate_pct"] == 80.0
    t = conn.execute("SELECT sum(llm_calls), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd) "
                     "FROM pgagent.turn").fetchone()
    assert (a["llm_calls"], a["prompt_tokens"], a["completion_tokens"]) == tuple(t[:3])
    assert a["cost_usd"] == pytest.approx(float(t[3]))
    assert a["tools"] == {"run_sql": {"calls": 1, "errors": 0, "approvals": 0, "rejections": 0},
                          "bump": {"calls": 3, "errors": 1, "approvals": 1, "rejections": 1}}
    assert (a["tool_calls"], a["approvals"], a["rejections"]) == (4, 1, 1)
    assert (a["ratings"], a["mean_rating"], a["thumbs_down"]) == (2, 3.5, 1)
    assert 0 < a["avg_turn_ms"] and a["p95_turn_ms"] >= a["avg_turn_ms"] * 0.5


def test_hourly_activity_and_tool_usage(conn, world):
    h = rows(conn, "SELECT * FROM pgagent.hourly_activity()")
    assert len(h) in (25, 26) and h == sorted(h, key=lambda x: x["hour"])
    totals = conn.execute("SELECT count(*), count(*) FILTER (WHERE kind = 'llm_call'), "
                          "count(*) FILTER (WHERE kind = 'error') FROM pgagent.step").fetchone()
    assert (sum(x["turns"] for x in h), sum(x["steps"] for x in h), sum(x["llm_calls"] for x in h),
            sum(x["errors"] for x in h), sum(x["failed_turns"] for x in h)) == (6, *totals, 1)
    assert sum(x["cost_usd"] for x in h) == conn.execute("SELECT sum(cost_usd) FROM pgagent.turn").fetchone()[0]
    u = {r["tool"]: r for r in rows(conn, "SELECT * FROM pgagent.tool_usage()")}
    assert {k: (v["calls"], v["errors"], v["approvals"], v["rejections"], v["pending"]) for k, v in u.items()} == {
        "bump": (3, 1, 1, 1, 1), "run_sql": (1, 0, 0, 0, 0)}
    assert u["run_sql"]["mean_ms"] > 0 and u["run_sql"]["p95_ms"] >= u["run_sql"]["mean_ms"]


@pytest.mark.parametrize("q,err", [
    ("SELECT pgagent.agent_analytics(NULL)", errors.InvalidParameterValue),
    ("SELECT pgagent.agent_analytics('nope')", errors.UndefinedObject),
    ("SELECT pgagent.agent_analytics('analyst', 0)", errors.InvalidParameterValue),
    ("SELECT pgagent.agent_analytics('analyst', NULL)", errors.InvalidParameterValue),
    ("SELECT * FROM pgagent.hourly_activity(0)", errors.InvalidParameterValue),
    ("SELECT * FROM pgagent.tool_usage(-1)", errors.InvalidParameterValue),
    ("SELECT * FROM pgagent.tool_usage(100000)", errors.InvalidParameterValue),
])
def test_analytics_bad_input(conn, llm, q, err):
    setup_agent(conn, llm)
    with pytest.raises(err):
        conn.execute(q)


MONITOR = ("realtime_steps", "tool_call_queue", "thinking_trace", "conversation_timeline", "dashboard_overview",
           "flagged_issues", "budget_status", "turn_timeline", "turn_summary", "agent_stats", "pending_approvals")


def test_row_level_security_in_every_view_and_function(conn, world, cluster, dbname):
    """A viewer of the tenant sees its rows; an operator of another tenant sees none of them,
    and the analytics functions do not even find the agent."""
    conn.execute("CREATE ROLE mon_team_b NOLOGIN")
    conn.execute("CREATE ROLE mon_b LOGIN IN ROLE pgagent_operator, mon_team_b")
    conn.execute("CREATE ROLE mon_a LOGIN IN ROLE pgagent_viewer")
    try:
        conn.execute("SELECT pgagent.add_tenant('team_b', 'mon_team_b')")
        conn.execute("SELECT pgagent.add_member('default', 'mon_a')")
        conn.execute("SELECT pgagent.set_budget(max_turns => 100)")
        with psycopg.connect(cluster.dsn(dbname, user="mon_a"), autocommit=True) as a, \
             psycopg.connect(cluster.dsn(dbname, user="mon_b"), autocommit=True) as b:
            for v in MONITOR:
                mine = a.execute(f"SELECT count(*) FROM pgagent.{v}").fetchone()[0]
                assert mine > 0, v
                theirs = b.execute(f"SELECT count(*) FROM pgagent.{v}").fetchone()[0]
                # team_b sees only its own (empty) dashboard row
                assert theirs == (1 if v == "dashboard_overview" else 0), (v, theirs)
            d = rows(b, "SELECT * FROM pgagent.dashboard_overview")[0]
            assert d["tenant"] == "team_b" and d["turns_24h"] == 0
            assert a.execute("SELECT pgagent.agent_analytics('analyst') ->> 'turns'").fetchone()[0] == "6"
            with pytest.raises(errors.UndefinedObject):
                b.execute("SELECT pgagent.agent_analytics('analyst')")
            assert sum(r[0] for r in b.execute("SELECT turns FROM pgagent.hourly_activity(2)")) == 0
            assert b.execute("SELECT count(*) FROM pgagent.tool_usage()").fetchone()[0] == 0
            assert len(a.execute("SELECT * FROM pgagent.tool_usage()").fetchall()) == 2
    finally:
        for r in ("mon_a", "mon_b", "mon_team_b"):
            conn.execute(f"DROP OWNED BY {r}")
            conn.execute(f"DROP ROLE {r}")


AGGREGATE_SQL = """
SELECT c.agent_id, count(*) AS turns, count(*) FILTER (WHERE t.status = 'completed') AS completed,
       count(*) FILTER (WHERE t.status = 'failed') AS failed,
       count(*) FILTER (WHERE t.status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE t.status = 'awaiting_approval') AS awaiting_approval,
       sum(t.llm_calls) AS llm_calls, sum(t.prompt_tokens)::bigint AS prompt_tokens,
       sum(t.completion_tokens)::bigint AS completion_tokens, sum(t.cost_usd) AS cost_usd,
       round(avg(extract(epoch FROM t.finished_at - t.created_at) * 1000)::numeric, 3) AS avg_turn_ms
  FROM pgagent.turn t JOIN pgagent.conversation c USING (tenant_id, conversation_id)
 WHERE t.tenant_id = pgagent.current_tenant() GROUP BY c.agent_id"""
STATS_SQL = """
SELECT agent_id, turns, completed, failed, cancelled, awaiting_approval, llm_calls, prompt_tokens, completion_tokens,
       cost_usd, avg_turn_ms FROM pgagent.agent_stats WHERE tenant_id = pgagent.current_tenant() AND turns > 0"""


def test_agent_stats_rollup_equals_the_aggregate_through_every_transition(conn, llm, world):
    """agent_stats reads the agent_daily rollup for final turns: it must equal the plain aggregate
    over pgagent.turn after turns complete, fail, get cancelled, retried and deleted."""
    def same() -> dict[int, dict[str, Any]]:
        want = {r["agent_id"]: r for r in rows(conn, AGGREGATE_SQL)}
        got = {r["agent_id"]: r for r in rows(conn, STATS_SQL)}
        assert got == want
        return got

    first = same()
    assert sum(r["turns"] for r in first.values()) == 6 and sum(r["failed"] for r in first.values()) == 1
    conn.execute("SELECT pgagent.cancel_turn(%s, 'enough')", [world["pending"]])
    assert sum(r["cancelled"] for r in same().values()) == 1
    llm.script(text("second try"))
    conn.execute("SELECT pgagent.retry_turn(%s)", [world["failed"]])   # failed -> running -> completed
    after = same()
    assert sum(r["failed"] for r in after.values()) == 0
    assert sum(r["completed"] for r in after.values()) == sum(r["completed"] for r in first.values()) + 1
    conn.execute("SELECT pgagent.delete_conversation(%s)", [world["conv"][0]])
    assert sum(r["turns"] for r in same().values()) == 5
    daily = conn.execute("SELECT count(*), sum(completed + failed + cancelled) FROM pgagent.agent_daily "
                         "WHERE tenant_id = pgagent.current_tenant()").fetchone()
    assert daily[0] >= 1 and daily[1] == 5


def test_queue_status_counts_queued_running_and_retrying_turns(conn, llm, dsn):
    import threading
    import time

    from scripted_llm import hang

    setup_agent(conn, llm, max_retries=1, timeout_ms=30000)
    convs = [conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0] for _ in range(2)]
    waiting = conn.execute("SELECT pgagent.enqueue_message(%s, 'later')", [convs[0]]).fetchone()[0]
    busy = conn.execute("SELECT pgagent.enqueue_message(%s, 'now')", [convs[1]]).fetchone()[0]
    q = rows(conn, "SELECT * FROM pgagent.queue_status")
    assert [(r["agent"], r["queued"], r["running"], r["retrying"]) for r in q] == [("analyst", 2, 0, 0)]
    llm.script(http_error(500), hang(2, text("ok")))   # the first attempt fails, the retry hangs
    worker = psycopg.connect(dsn, autocommit=True)
    th = threading.Thread(target=lambda: worker.execute("CALL pgagent.run_turn(%s)", [busy]))
    th.start()
    try:
        deadline = time.monotonic() + 10
        while len(llm.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = rows(conn, "SELECT * FROM pgagent.queue_status")[0]
        assert (r["queued"], r["running"], r["retrying"]) == (1, 1, 1), r
        assert r["oldest_wait_s"] >= 0 and r["oldest_queued_at"] is not None
    finally:
        th.join(20)
        worker.close()
    r = rows(conn, "SELECT * FROM pgagent.queue_status")[0]
    assert (r["queued"], r["running"], r["retrying"]) == (1, 0, 0), r
    assert conn.execute("SELECT status FROM pgagent.turn WHERE turn_id = %s", [waiting]).fetchone()[0] == "queued"
