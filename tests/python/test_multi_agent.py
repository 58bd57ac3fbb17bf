"""Agents calling agents (issue 12): the agent tool kind (child turns), handoff, the turn tree."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest

from scripted_llm import ScriptedLLM, hang, http_error, text, tool_calls
from test_loop import kinds, send, setup_agent, steps

ASK = {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}


def agent_tool(conn: psycopg.Connection, name: str, agent: str, **cfg: Any) -> None:
    conn.execute("SELECT pgagent.register_tool(%s, %s, %s, kind => 'agent', config => %s)",
                 [name, f"Ask the {agent} agent", json.dumps(ASK), json.dumps({"agent": agent, **cfg})])


def supervisor(conn: psycopg.Connection, llm: ScriptedLLM, **kw: Any) -> int:
    """setup_agent's analyst, an ask_analyst agent tool and a supervisor agent with it; returns
    a conversation with the supervisor."""
    setup_agent(conn, llm, **kw)
    agent_tool(conn, "ask_analyst", "analyst")
    conn.execute("SELECT pgagent.create_agent('supervisor', model => 'scripted', tools => '{ask_analyst}', "
                 "instructions => 'Delegate data questions to the analyst.', config => '{\"retry_backoff_ms\": 1}')")
    return conn.execute("SELECT pgagent.start_conversation('supervisor')").fetchone()[0]


DELEGATE = tool_calls([("ask_analyst", {"message": "How many rainy days in 2013?"})], prompt_tokens=20,
                      completion_tokens=6)
CHILD_SQL = tool_calls([("run_sql", {"query": "SELECT count(*) FROM weather WHERE rain > 0"})], prompt_tokens=30,
                       completion_tokens=8)


def child_of(conn: psycopg.Connection, turn: int) -> dict[str, Any]:
    cur = conn.execute("SELECT turn_id, status, depth, parent_step_id, user_message, answer, created_by::text, "
                       "conversation_id FROM pgagent.turn WHERE parent_turn_id = %s", [turn])
    rows = [dict(zip([d.name for d in cur.description], r)) for r in cur]
    assert len(rows) == 1, rows
    return rows[0]


def test_a_supervisor_delegates_to_the_analyst_and_usage_rolls_up(conn, llm):
    cid = supervisor(conn, llm)
    llm.script(DELEGATE, CHILD_SQL, text("243 rainy days.", 40, 5), text("The analyst found 243 rainy days.", 50, 9))
    r = send(conn, cid, "How rainy was 2013?")
    assert r["status"] == "completed" and r["answer"] == "The analyst found 243 rainy days."
    child = child_of(conn, r["turn_id"])
    assert (child["status"], child["depth"], child["user_message"], child["answer"]) == \
        ("completed", 1, "How many rainy days in 2013?", "243 rainy days.")
    assert kinds(conn, child["turn_id"]) == ["user_message", "llm_call", "tool_call", "tool_result", "llm_call",
                                             "response"]
    call = steps(conn, r["turn_id"], "tool_call")[0]
    result = steps(conn, r["turn_id"], "tool_result")[0]["payload"]
    assert child["parent_step_id"] == call["step_id"] and result["child_turn_id"] == child["turn_id"]
    assert result["result"] == {"agent": "analyst", "answer": "243 rainy days."}
    assert result["usage"]["prompt_tokens"] == 70 and result["usage"]["completion_tokens"] == 13
    # the parent's own usage, and the whole tree's
    assert r["usage"]["prompt_tokens"] == 70 and r["children"] == [
        {"turn_id": child["turn_id"], "agent": "analyst", "status": "completed"}]
    assert r["total"]["prompt_tokens"] == 140 and r["total"]["completion_tokens"] == 28 and r["total"]["llm_calls"] == 4
    cost = (140 * 2.5 + 28 * 10) / 1e6
    assert r["total"]["cost_usd"] == pytest.approx(cost)
    # the analyst saw its own prompt and tools, not the supervisor's
    child_request = llm.requests[1]["body"]
    assert "Answer from the data." in child_request["messages"][0]["content"]
    assert {t["function"]["name"] for t in child_request["tools"]} == {"run_sql", "bump"}
    tree = conn.execute("SELECT turn_id, depth, agent, status, subtree_cost_usd::float8, path FROM pgagent.turn_tree(%s)",
                        [child["turn_id"]]).fetchall()
    assert [(t[0], t[1], t[2], t[3]) for t in tree] == [(r["turn_id"], 0, "supervisor", "completed"),
                                                        (child["turn_id"], 1, "analyst", "completed")]
    assert tree[0][4] == pytest.approx(cost) and tree[1][5] == [r["turn_id"], child["turn_id"]]


def test_depth_limit_and_cycles_are_refused_results(conn, llm):
    setup_agent(conn, llm)
    for a, b in (("a", "b"), ("b", "c"), ("c", "d")):
        agent_tool(conn, f"ask_{b}", b, max_depth=2)
    agent_tool(conn, "ask_a", "a")
    for name, tool in (("a", "ask_b"), ("b", "ask_c"), ("c", "ask_d"), ("d", "ask_a")):
        conn.execute("SELECT pgagent.create_agent(%s, model => 'scripted', tools => %s)", [name, "{" + tool + "}"])
    cid = conn.execute("SELECT pgagent.start_conversation('a')").fetchone()[0]
    # a -> b -> c; c's call of d would be depth 3 > max_depth 2
    llm.script(tool_calls([("ask_b", {"message": "go"})]), tool_calls([("ask_c", {"message": "go"})]),
               tool_calls([("ask_d", {"message": "go"})]), text("c: could not ask d"), text("b: done"), text("a: done"))
    r = send(conn, cid, "start")
    assert r["answer"] == "a: done"
    c = child_of(conn, child_of(conn, r["turn_id"])["turn_id"])
    refused = steps(conn, c["turn_id"], "tool_result")[0]["payload"]
    assert refused["is_error"] and refused["refused"] and "3 deep, more than max_depth 2" in refused["error"]
    # the limit counts from the root: d -> a -> b, and b's call of c would be depth 3
    cid = conn.execute("SELECT pgagent.start_conversation('d')").fetchone()[0]
    llm.script(tool_calls([("ask_a", {"message": "x"})]), tool_calls([("ask_b", {"message": "x"})]),
               tool_calls([("ask_c", {"message": "x"})]), text("b"), text("a"), text("d done"))
    r = send(conn, cid, "start")
    assert r["answer"] == "d done"
    b_turn = child_of(conn, child_of(conn, r["turn_id"])["turn_id"])
    assert "max_depth 2" in steps(conn, b_turn["turn_id"], "tool_result")[0]["payload"]["error"]
    # an agent that calls an agent already in its chain
    agent_tool(conn, "ask_selfish", "selfish")   # the agent need not exist yet
    conn.execute("SELECT pgagent.create_agent('selfish', model => 'scripted', tools => '{ask_selfish}')")
    cid = conn.execute("SELECT pgagent.start_conversation('selfish')").fetchone()[0]
    llm.script(tool_calls([("ask_selfish", {"message": "me again"})]), text("I cannot ask myself."))
    r = send(conn, cid, "recurse")
    err = steps(conn, r["turn_id"], "tool_result")[0]["payload"]["error"]
    assert "it would form a cycle (selfish -> selfish)" in err
    assert conn.execute("SELECT count(*) FROM pgagent.turn WHERE parent_turn_id = %s", [r["turn_id"]]).fetchone()[0] == 0
    # an agent that does not exist (or belongs to another tenant: looked up in the caller's only)
    agent_tool(conn, "ask_ghost", "ghost")
    conn.execute("SELECT pgagent.create_agent('caller', model => 'scripted', tools => '{ask_ghost}')")
    cid = conn.execute("SELECT pgagent.start_conversation('caller')").fetchone()[0]
    llm.script(tool_calls([("ask_ghost", {"message": "boo"})]), text("no ghost"))
    r = send(conn, cid, "x")
    assert "agent 'ghost' does not exist (for this tenant)" in steps(conn, r["turn_id"], "tool_result")[0]["payload"]["error"]


def test_a_child_that_needs_approval_makes_the_parent_wait(conn, llm, dsn):
    cid = supervisor(conn, llm, bump_approval=True)
    llm.script(DELEGATE, tool_calls([("bump", {"n": 7})]))
    r = send(conn, cid, "bump it via the analyst")
    assert r["status"] == "awaiting_approval" and r["children"][0]["status"] == "awaiting_approval"
    child = child_of(conn, r["turn_id"])
    call = steps(conn, child["turn_id"], "tool_call")[0]
    waiting = conn.execute("SELECT step_id, turn_id FROM pgagent.pending_approvals").fetchall()
    assert waiting == [(call["step_id"], child["turn_id"])]
    conn.execute("SELECT pgagent.approve_step(%s, true, 'ok')", [call["step_id"]])
    llm.script(text("Bumped 7."), text("Done: the analyst bumped 7."))
    done = conn.execute("CALL pgagent.run_turn(%s)", [r["turn_id"]]).fetchone()[0]
    assert done["status"] == "completed" and done["answer"] == "Done: the analyst bumped 7."
    assert conn.execute("SELECT n FROM public.bumps").fetchall() == [(7,)]
    assert child_of(conn, r["turn_id"])["status"] == "completed"


def test_a_failed_child_is_an_error_result_the_parent_can_answer_from(conn, llm):
    cid = supervisor(conn, llm)
    llm.script(DELEGATE, http_error(400, body={"error": {"message": "context too long"}}),
               text("The analyst could not answer."))
    r = send(conn, cid, "x")
    assert r["status"] == "completed" and r["answer"] == "The analyst could not answer."
    result = steps(conn, r["turn_id"], "tool_result")[0]["payload"]
    assert result["is_error"] and result["child_status"] == "failed"
    assert "agent 'analyst' failed: LLM call failed after 1 attempt(s): HTTP 400" in result["error"]
    assert "context too long" in llm.requests[-1]["body"]["messages"][-1]["content"]


def test_run_turn_commits_the_child_step_by_step_and_resumes_it_after_a_crash(conn, llm, dsn):
    cid = supervisor(conn, llm, timeout_ms=60000)
    turn = conn.execute("SELECT pgagent.enqueue_message(%s, 'rainy?')", [cid]).fetchone()[0]
    llm.script(DELEGATE, CHILD_SQL, hang(30))
    worker = psycopg.connect(dsn, autocommit=True)
    pid = worker.info.backend_pid
    th = threading.Thread(target=lambda: _run_quietly(worker, turn))
    th.start()
    deadline = time.monotonic() + 20
    while len(llm.requests) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(llm.requests) == 3   # the child's second LLM call hangs: kill the backend
    conn.execute("SELECT pg_terminate_backend(%s)", [pid])
    th.join(10)
    child = child_of(conn, turn)
    # what the child did before the crash was committed, step by step
    assert kinds(conn, child["turn_id"]) == ["user_message", "llm_call", "tool_call", "tool_result"]
    # no worker claims the child on its own; the parent is claimable again once its lease is gone
    claimed = conn.execute("SELECT turn_id FROM pgagent.claim_turn('w1', 60000)").fetchall()
    assert child["turn_id"] not in [c[0] for c in claimed]
    llm.reset()
    llm.script(text("243.", 40, 5), text("243 rainy days, says the analyst."))
    done = conn.execute("CALL pgagent.run_turn(%s)", [turn]).fetchone()[0]
    assert done["status"] == "completed" and done["answer"] == "243 rainy days, says the analyst."
    assert kinds(conn, child["turn_id"]) == ["user_message", "llm_call", "tool_call", "tool_result", "llm_call",
                                             "response"]
    # the SQL tool ran once: its result was committed before the crash
    assert len(steps(conn, child["turn_id"], "tool_result")) == 1
    assert conn.execute("SELECT count(*) FROM pgagent.turn WHERE parent_turn_id = %s", [turn]).fetchone()[0] == 1


def _run_quietly(c: psycopg.Connection, turn: int) -> None:
    try:
        c.execute("CALL pgagent.run_turn(%s)", [turn])
    except psycopg.Error:
        pass


def test_handoff_moves_the_conversation_to_another_agent(conn, llm):
    setup_agent(conn, llm)
    conn.execute("""SELECT pgagent.register_tool('transfer_to_analyst', 'Hand data questions to the analyst',
                    '{"type": "object", "properties": {"reason": {"type": "string"}}}', kind => 'handoff',
                    config => '{"agent": "analyst"}')""")
    conn.execute("SELECT pgagent.create_agent('triage', model => 'scripted', tools => '{transfer_to_analyst}', "
                 "instructions => 'Route the user.')")
    cid = conn.execute("SELECT pgagent.start_conversation('triage')").fetchone()[0]
    llm.script(tool_calls([("transfer_to_analyst", {"reason": "a data question"})]), CHILD_SQL, text("243."))
    r = send(conn, cid, "How many rainy days?")
    assert r["status"] == "completed" and r["answer"] == "243."
    moved = steps(conn, r["turn_id"], "tool_result")[0]["payload"]
    assert moved["handoff"] == {"from": "triage", "to": "analyst", "reason": "a data question"}
    # after the handoff the analyst's prompt and tools were used, with the turn so far
    after = llm.requests[1]["body"]
    assert "Answer from the data." in after["messages"][0]["content"]
    assert {t["function"]["name"] for t in after["tools"]} == {"run_sql", "bump"}
    assert after["messages"][1] == {"role": "user", "content": "How many rainy days?"}
    agent = conn.execute("SELECT a.name FROM pgagent.conversation c JOIN pgagent.agent a USING (tenant_id, agent_id) "
                         "WHERE c.conversation_id = %s", [cid]).fetchone()[0]
    assert agent == "analyst"
    llm.script(text("Still me, the analyst."))
    assert send(conn, cid, "who are you?")["answer"] == "Still me, the analyst."
    assert "Answer from the data." in llm.requests[-1]["body"]["messages"][0]["content"]


# ---------------------------------------------------------------------------- teams

def team_agents(conn: psycopg.Connection, llm: ScriptedLLM, *names: str) -> None:
    setup_agent(conn, llm)
    for n in names:
        conn.execute("SELECT pgagent.create_agent(%s, model => 'scripted', instructions => %s)", [n, f"You are {n}."])


def messages(conn: psycopg.Connection, discussion: int) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT round, role, agent, message, vote FROM pgagent.discussion_messages "
                        "WHERE discussion_id = %s ORDER BY seq", [discussion]).fetchall()


def test_round_robin_members_see_the_transcript(conn, llm):
    team_agents(conn, llm, "ann", "bob")
    conn.execute("SELECT pgagent.create_team('pair', ARRAY['ann', 'bob'], 'round_robin')")
    llm.script(text("Ann: start with the data."), text("Bob: agreed, then a chart."), text("Ann: a bar chart."),
               text("Bob: done."))
    r = conn.execute("SELECT pgagent.team_discuss('pair', 'Plan the weather report', max_rounds => 2)").fetchone()[0]
    assert (r["status"], r["rounds"], r["outcome"]) == ("completed", 2, "Bob: done.")
    assert [(m[0], m[2]) for m in messages(conn, r["discussion_id"])] == [(1, "ann"), (1, "bob"), (2, "ann"), (2, "bob")]
    third = llm.requests[2]["body"]["messages"]
    assert "You are ann." in third[0]["content"]
    assert "ann: Ann: start with the data.\nbob: Bob: agreed, then a chart." in third[-1]["content"]
    # each member talks in its own conversation: ann's second turn has her first one as history
    assert third[1] == {"role": "user", "content": llm.requests[0]["body"]["messages"][-1]["content"]}
    row = conn.execute("SELECT team, mode, status, messages, llm_calls, tokens FROM pgagent.team_discussions").fetchone()
    assert row == ("pair", "round_robin", "completed", 4, 4, 60)


def test_debate_ends_with_the_judge(conn, llm):
    team_agents(conn, llm, "pro", "con", "judge")
    conn.execute("SELECT pgagent.create_team('duel', ARRAY['pro', 'con'], 'debate', '{\"judge\": \"judge\"}')")
    llm.script(text("Rain matters."), text("Sun matters."), text("Rain matters more: 243 days."),
               text("Still sun."), text("Verdict: rain."))
    r = conn.execute("SELECT pgagent.team_discuss('duel', 'Rain or sun?', 2)").fetchone()[0]
    assert r["status"] == "completed" and r["outcome"] == "Verdict: rain."
    assert [(m[0], m[1], m[2]) for m in messages(conn, r["discussion_id"])] == [
        (1, "member", "pro"), (1, "member", "con"), (2, "member", "pro"), (2, "member", "con"), (2, "judge", "judge")]
    # round 2: pro critiques con's round-1 answer; the judge sees both final answers
    assert "- con: Sun matters." in llm.requests[2]["body"]["messages"][-1]["content"]
    judged = llm.requests[4]["body"]["messages"][-1]["content"]
    assert "- pro: Rain matters more: 243 days." in judged and "- con: Still sun." in judged


def test_consensus_reached_and_not_reached(conn, llm):
    team_agents(conn, llm, "x", "y", "z")
    conn.execute("SELECT pgagent.create_team('trio', ARRAY['x', 'y', 'z'], 'consensus', '{\"quorum\": 1}')")
    llm.script(text("I think Paris.\nVOTE: Paris"), text("VOTE: Lyon"), text("**VOTE:** paris."),
               text("VOTE: Paris"), text("OK.\nVOTE: Paris!"), text("VOTE: PARIS"))
    r = conn.execute("SELECT pgagent.team_discuss('trio', 'Best city for the conference?')").fetchone()[0]
    assert (r["status"], r["rounds"], r["outcome"]) == ("completed", 2, "Paris")
    assert r["detail"]["tallies"] == [{"round": 1, "votes": {"paris": 2, "lyon": 1}},
                                      {"round": 2, "votes": {"paris": 3}}]
    assert "- y: Lyon" in llm.requests[3]["body"]["messages"][-1]["content"]
    assert [m[4] for m in messages(conn, r["discussion_id"])][:3] == ["Paris", "Lyon", "paris."]
    llm.script(text("VOTE: A"), text("VOTE: B"), text("no vote at all"))
    r = conn.execute("SELECT pgagent.team_discuss('trio', 'A or B?', 1)").fetchone()[0]
    assert (r["status"], r["outcome"]) == ("no_consensus", None)
    assert r["detail"]["tallies"] == [{"round": 1, "votes": {"a": 1, "b": 1}}]
    assert conn.execute("SELECT status FROM pgagent.team_discussions WHERE discussion_id = %s",
                        [r["discussion_id"]]).fetchone()[0] == "no_consensus"


def test_supervisor_team_delegates_to_members_as_tools(conn, llm):
    team_agents(conn, llm, "lead")
    conn.execute("SELECT pgagent.create_team('desk', ARRAY['analyst'], 'supervisor', '{\"supervisor\": \"lead\"}')")
    tools = conn.execute("SELECT t.name, t.kind, t.config FROM pgagent.agent a JOIN pgagent.agent_tool x USING "
                         "(tenant_id, agent_id) JOIN pgagent.tool t USING (tenant_id, tool_id) WHERE a.name = 'lead'"
                         ).fetchall()
    assert tools == [("ask_analyst", "agent", {"agent": "analyst"})]
    llm.script(tool_calls([("ask_analyst", {"message": "Count the rainy days of 2013."})]), CHILD_SQL,
               text("243."), text("The desk's answer: 243 rainy days."))
    r = conn.execute("SELECT pgagent.team_discuss('desk', 'How rainy was 2013?')").fetchone()[0]
    assert r["status"] == "completed" and r["outcome"] == "The desk's answer: 243 rainy days."
    assert [(m[1], m[2], m[3]) for m in messages(conn, r["discussion_id"])] == [
        ("member", "analyst", "243."), ("supervisor", "lead", "The desk's answer: 243 rainy days.")]


def test_a_member_that_fails_fails_the_discussion_and_bad_teams_are_refused(conn, llm):
    team_agents(conn, llm, "ann", "bob")
    conn.execute("SELECT pgagent.create_team('pair', ARRAY['ann', 'bob'])")
    llm.script(text("fine"), http_error(400))
    r = conn.execute("SELECT pgagent.team_discuss('pair', 'x', 1)").fetchone()[0]
    assert r["status"] == "failed" and "member bob (turn" in r["detail"]["error"] and "HTTP 400" in r["detail"]["error"]
    assert len(r["messages"]) == 2
    for call, why in [("'t', ARRAY['ann'], 'debate'", "needs at least 2 members"),
                      ("'t', ARRAY['ann', 'bob'], 'debate'", "needs config.judge"),
                      ("'t', ARRAY['ann', 'ghost']", "agent 'ghost' does not exist"),
                      ("'t', ARRAY['ann', 'ann']", "lists an agent twice"),
                      ("'t', ARRAY['ann', 'bob'], 'vote'", "mode 'vote' is not valid"),
                      ("'t', ARRAY['ann', 'bob'], 'consensus', '{\"quorum\": 2}'", "quorum must be"),
                      ("'t', ARRAY['ann'], 'supervisor', '{\"supervisor\": \"ann\"}'", "cannot also be a member")]:
        with pytest.raises(psycopg.Error, match=why):
            conn.execute(f"SELECT pgagent.create_team({call})")
    with pytest.raises(psycopg.errors.UndefinedObject, match="team 'nope' does not exist"):
        conn.execute("SELECT pgagent.team_discuss('nope', 'x')")


def test_a_budget_of_the_child_agent_stops_the_child_not_the_parent(conn, llm):
    cid = supervisor(conn, llm)
    conn.execute("SELECT pgagent.set_budget(scope => 'agent', agent => 'analyst', period => 'day', max_tokens => 1)")
    llm.script(DELEGATE, text("The analyst is over its budget today."))
    r = send(conn, cid, "How rainy was 2013?")
    assert r["status"] == "completed" and r["answer"] == "The analyst is over its budget today."
    result = steps(conn, r["turn_id"], "tool_result")[0]["payload"]
    assert result["is_error"] and result["child_status"] == "failed" and "budget exceeded" in result["error"]
    child = child_of(conn, r["turn_id"])
    assert conn.execute("SELECT count(*) FROM pgagent.step WHERE turn_id = %s AND kind = 'llm_call'",
                        [child["turn_id"]]).fetchone()[0] == 0   # stopped before its LLM call
    assert len(llm.requests) == 2
