"""Operator interventions against the scripted LLM server: inject_message, override_response,
pause/resume_conversation, retry_turn, fork_conversation, bulk_approve, rate_turn, flag_issue,
on turns that are running, waiting for approval, completed and failed."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import errors

from scripted_llm import hang, http_error, text, tool_calls
from test_loop import bumps, kinds, send, setup_agent, steps


def status(conn: psycopg.Connection, turn_id: int) -> str:
    return conn.execute("SELECT status FROM pgagent.turn WHERE turn_id = %s", [turn_id]).fetchone()[0]


def verified(conn: psycopg.Connection, turn_id: int) -> bool:
    ok, _, _, problem = conn.execute("SELECT * FROM pgagent.verify_turn(%s)", [turn_id]).fetchone()
    assert problem is None
    return ok


def interventions(conn: psycopg.Connection, turn_id: int) -> list[dict[str, Any]]:
    return [s["payload"] for s in steps(conn, turn_id, "intervention")]


def audited(conn: psycopg.Connection, action: str) -> int:
    return conn.execute("SELECT count(*) FROM pgagent.audit_event WHERE action = %s", [action]).fetchone()[0]


def waiting_turn(conn: psycopg.Connection, llm, cid: int, n: int = 3) -> tuple[int, int]:
    """A turn parked on an approval of bump(n); returns (turn_id, tool_call step_id)."""
    llm.script(tool_calls([("bump", {"n": n})]))
    r = send(conn, cid, f"bump {n}")
    assert r["status"] == "awaiting_approval"
    return r["turn_id"], r["pending_approvals"][0]["step_id"]


def run_in_thread(dsn: str, turn_id: int) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def go() -> None:
        with psycopg.connect(dsn, autocommit=True) as w:
            try:
                out.append(w.execute("CALL pgagent.run_turn(%s)", [turn_id]).fetchone()[0])
            except BaseException as e:  # reported through out
                out.append(e)

    th = threading.Thread(target=go)
    th.start()
    return th, out


def wait_requests(llm, n: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while len(llm.requests) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(llm.requests) >= n


# ---------------------------------------------------------------------------- inject_message

def test_inject_before_a_turn_reaches_the_next_turn_as_history(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(text("first"), text("second"))
    send(conn, cid, "hello")
    iid = conn.execute("SELECT pgagent.inject_message(%s, 'Answer in French.')", [cid]).fetchone()[0]
    assert iid > 0
    r = send(conn, cid, "again")
    msgs = llm.requests[1]["body"]["messages"]
    # system prompt, first turn, the injection (in time order), this turn's message
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "system", "user"]
    assert msgs[3]["content"] == "Answer in French."
    assert "intervention" not in kinds(conn, r["turn_id"])   # it was history, not news, for this turn
    assert audited(conn, "message_injected") == 1
    # a later turn still sees it
    llm.script(text("third"))
    send(conn, cid, "once more")
    assert any(m["content"] == "Answer in French." for m in llm.requests[2]["body"]["messages"])


def test_inject_into_a_waiting_turn_is_a_step_the_next_call_sees(conn, llm):
    cid = setup_agent(conn, llm, bump_approval=True)
    turn_id, call = waiting_turn(conn, llm, cid)
    conn.execute("SELECT pgagent.inject_message(%s, 'The user is a VIP.', role => 'user')", [cid])
    conn.execute("SELECT pgagent.approve_step(%s, true)", [call])
    llm.script(text("done"))
    r = conn.execute("SELECT pgagent.process_tool_call(%s)", [call]).fetchone()[0]
    assert r["status"] == "completed" and bumps(conn) == [3]
    assert kinds(conn, turn_id) == ["user_message", "llm_call", "tool_call", "approval", "intervention",
                                    "tool_result", "llm_call", "response"]
    inj = interventions(conn, turn_id)[0]
    assert inj["action"] == "inject_message" and inj["role"] == "user" and inj["content"] == "The user is a VIP."
    msgs = llm.requests[1]["body"]["messages"]
    assert {"role": "user", "content": "The user is a VIP."} in msgs
    assert msgs[-1]["role"] == "tool"   # the injection sits where it was recorded, before the result
    assert verified(conn, turn_id)


def test_inject_into_a_running_turn_reaches_its_next_llm_call(conn, llm, dsn):
    cid = setup_agent(conn, llm, timeout_ms=30000)
    turn_id = conn.execute("SELECT pgagent.enqueue_message(%s, 'bump 2')", [cid]).fetchone()[0]
    llm.script(hang(1.0, tool_calls([("bump", {"n": 2})])), text("bumped"))
    th, out = run_in_thread(dsn, turn_id)
    wait_requests(llm, 1)
    conn.execute("SELECT pgagent.inject_message(%s, 'Stop after this.')", [cid])   # not blocked by the run
    th.join(15)
    assert out[0]["status"] == "completed"
    assert {"role": "system", "content": "Stop after this."} in llm.requests[1]["body"]["messages"]
    assert kinds(conn, turn_id).count("intervention") == 1


def test_inject_checks_its_arguments(conn, llm):
    cid = setup_agent(conn, llm)
    with pytest.raises(errors.InvalidParameterValue, match="role"):
        conn.execute("SELECT pgagent.inject_message(%s, 'x', role => 'assistant')", [cid])
    with pytest.raises(errors.InvalidParameterValue, match="content"):
        conn.execute("SELECT pgagent.inject_message(%s, '  ')", [cid])
    with pytest.raises(errors.InvalidParameterValue, match="content"):
        conn.execute("SELECT pgagent.inject_message(%s, NULL)", [cid])
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SELECT pgagent.inject_message(999999, 'x')")
    with pytest.raises(errors.InvalidParameterValue):
        conn.execute("SELECT pgagent.inject_message(NULL, 'x')")


# ---------------------------------------------------------------------------- override_response

def test_override_response_keeps_the_model_answer_in_the_log(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(text("The answer is 41."), text("ok"))
    r = send(conn, cid, "what is 6*7?")
    o = conn.execute("SELECT pgagent.override_response(%s, 'The answer is 42.', 'arithmetic error')",
                     [r["turn_id"]]).fetchone()[0]
    assert o["answer"] == "The answer is 42."
    row = conn.execute("SELECT answer, status FROM pgagent.turn WHERE turn_id = %s", [r["turn_id"]]).fetchone()
    assert row == ("The answer is 42.", "completed")
    assert steps(conn, r["turn_id"], "response")[0]["payload"]["content"] == "The answer is 41."
    iv = interventions(conn, r["turn_id"])[0]
    assert iv["action"] == "override_response" and iv["original"] == "The answer is 41."
    assert iv["reason"] == "arithmetic error"
    assert verified(conn, r["turn_id"])
    assert audited(conn, "response_overridden") == 1
    send(conn, cid, "thanks")   # the next turn's history carries the corrected answer
    assert {"role": "assistant", "content": "The answer is 42."} in llm.requests[1]["body"]["messages"]


def test_override_response_refuses_unfinished_turns(conn, llm):
    cid = setup_agent(conn, llm, bump_approval=True)
    turn_id, _ = waiting_turn(conn, llm, cid)
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="awaiting_approval"):
        conn.execute("SELECT pgagent.override_response(%s, 'x', 'y')", [turn_id])
    llm.script(http_error(400))
    failed = send(conn, conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0], "fail")
    assert failed["status"] == "failed"
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="failed"):
        conn.execute("SELECT pgagent.override_response(%s, 'x', 'y')", [failed["turn_id"]])
    with pytest.raises(errors.InvalidParameterValue, match="reason"):
        conn.execute("SELECT pgagent.override_response(%s, 'x', NULL)", [turn_id])
    # nobody edits a completed turn's answer behind the API's back: the trigger still freezes the rest
    llm.script(text("fine"))
    done = send(conn, conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0], "ok")
    with pytest.raises(errors.IntegrityConstraintViolation):
        conn.execute("UPDATE pgagent.turn SET llm_calls = 0 WHERE turn_id = %s", [done["turn_id"]])


# ---------------------------------------------------------------------------- pause and resume

def test_pause_stops_a_running_turn_at_the_next_step_and_resume_continues_it(conn, llm, dsn):
    cid = setup_agent(conn, llm, timeout_ms=30000)
    turn_id = conn.execute("SELECT pgagent.enqueue_message(%s, 'bump 5')", [cid]).fetchone()[0]
    llm.script(hang(1.0, tool_calls([("bump", {"n": 5})])))
    th, out = run_in_thread(dsn, turn_id)
    wait_requests(llm, 1)
    p = conn.execute("SELECT pgagent.pause_conversation(%s, 'incident 7')", [cid]).fetchone()[0]
    assert p["active_turns"] == [turn_id] and p["paused_turns"] == []
    th.join(15)
    assert out[0]["status"] == "paused"
    # the LLM reply was recorded, but the tool call it asked for did not start
    assert kinds(conn, turn_id) == ["user_message", "llm_call", "tool_call", "intervention"]
    assert bumps(conn) == [] and len(llm.requests) == 1
    assert interventions(conn, turn_id)[0] == {"action": "pause", "paused_by": conn.info.user,
                                               "reason": "incident 7"}
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="already paused"):
        conn.execute("SELECT pgagent.pause_conversation(%s)", [cid])
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="still paused"):
        send(conn, cid, "hello?")
    res = conn.execute("SELECT pgagent.resume_conversation(%s)", [cid]).fetchone()[0]
    assert res["requeued_turns"] == [turn_id]
    assert status(conn, turn_id) == "queued"
    llm.script(text("bumped 5"))
    done = conn.execute("CALL pgagent.run_turn(%s)", [turn_id]).fetchone()[0]
    assert done["status"] == "completed" and bumps(conn) == [5]
    assert kinds(conn, turn_id)[-4:] == ["intervention", "tool_result", "llm_call", "response"]
    assert verified(conn, turn_id)
    assert audited(conn, "conversation_paused") == 1 and audited(conn, "conversation_resumed") == 1
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="not paused"):
        conn.execute("SELECT pgagent.resume_conversation(%s)", [cid])


def test_a_new_message_to_a_paused_conversation_makes_no_llm_call(conn, llm):
    cid = setup_agent(conn, llm)
    conn.execute("SELECT pgagent.pause_conversation(%s)", [cid])
    r = send(conn, cid, "hello?")
    assert r["status"] == "paused" and llm.requests == []
    assert kinds(conn, r["turn_id"]) == ["user_message", "intervention"]
    queued = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    q = conn.execute("SELECT pgagent.enqueue_message(%s, 'later')", [queued]).fetchone()[0]
    assert conn.execute("SELECT pgagent.pause_conversation(%s)", [queued]).fetchone()[0]["paused_turns"] == [q]
    assert status(conn, q) == "paused"
    assert conn.execute("SELECT pgagent.resume_conversation(%s)", [cid]).fetchone()[0]["requeued_turns"] == [r["turn_id"]]
    llm.script(text("hi"))
    assert conn.execute("CALL pgagent.run_turn(%s)", [r["turn_id"]]).fetchone()[0]["answer"] == "hi"
    # cancelling a paused turn works too
    assert conn.execute("SELECT pgagent.cancel_turn(%s)", [q]).fetchone()[0]["status"] == "cancelled"


def test_pause_lets_a_waiting_turn_be_approved_and_parks_it_when_its_call_would_run(conn, llm):
    cid = setup_agent(conn, llm, bump_approval=True)
    turn_id, call = waiting_turn(conn, llm, cid)
    p = conn.execute("SELECT pgagent.pause_conversation(%s)", [cid]).fetchone()[0]
    assert p["paused_turns"] == [] and p["active_turns"] == [turn_id]
    conn.execute("SELECT pgagent.approve_step(%s, true)", [call])   # approving is still allowed
    r = conn.execute("SELECT pgagent.process_tool_call(%s)", [call]).fetchone()[0]
    assert r["status"] == "paused" and bumps(conn) == []
    conn.execute("SELECT pgagent.resume_conversation(%s)", [cid])
    llm.script(text("bumped"))
    assert conn.execute("CALL pgagent.run_turn(%s)", [turn_id]).fetchone()[0]["status"] == "completed"
    assert bumps(conn) == [3]


# ---------------------------------------------------------------------------- retry_turn

def test_retry_runs_a_failed_turn_again_from_its_last_good_step(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(tool_calls([("run_sql", {"query": "SELECT 1 AS one"})]), http_error(500))
    r = send(conn, cid, "one?")
    assert r["status"] == "failed"
    before = kinds(conn, r["turn_id"])
    assert before == ["user_message", "llm_call", "tool_call", "tool_result", "error", "error"]
    llm.script(text("It is 1."))
    again = conn.execute("SELECT pgagent.retry_turn(%s)", [r["turn_id"]]).fetchone()[0]
    assert again["status"] == "completed" and again["answer"] == "It is 1." and again["error"] is None
    assert kinds(conn, r["turn_id"]) == before + ["intervention", "llm_call", "response"]
    assert interventions(conn, r["turn_id"])[0]["action"] == "retry"
    assert again["llm_calls"] == 2   # totals keep the earlier call
    # the retried call carried the tool result: it went on from the last good step
    assert llm.requests[-1]["body"]["messages"][-1]["role"] == "tool"
    assert verified(conn, r["turn_id"])
    with pytest.raises(errors.ObjectNotInPrerequisiteState, match="completed"):
        conn.execute("SELECT pgagent.retry_turn(%s)", [r["turn_id"]])


def test_retry_counts_max_steps_afresh_and_can_queue_only(conn, llm):
    cid = setup_agent(conn, llm, config={"max_steps": 1})
    llm.script(tool_calls([("run_sql", {"query": "SELECT 1"})]))
    r = send(conn, cid, "loop")
    assert r["status"] == "failed" and "max_steps" in r["error"]
    q = conn.execute("SELECT pgagent.retry_turn(%s, run => false)", [r["turn_id"]]).fetchone()[0]
    assert q["status"] == "queued"
    llm.script(text("finally"))
    assert conn.execute("CALL pgagent.run_turn(%s)", [r["turn_id"]]).fetchone()[0]["answer"] == "finally"


# ---------------------------------------------------------------------------- fork_conversation

def test_fork_at_a_response_copies_history_and_leaves_the_original(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(text("one"), text("two"))
    t1 = send(conn, cid, "first")
    send(conn, cid, "second")
    original = conn.execute("SELECT count(*) FROM pgagent.step s JOIN pgagent.turn t USING (tenant_id, turn_id) "
                            "WHERE t.conversation_id = %s", [cid]).fetchone()[0]
    at = steps(conn, t1["turn_id"], "response")[0]["step_id"]
    f = conn.execute("SELECT pgagent.fork_conversation(%s, %s, title => 'what if')", [cid, at]).fetchone()[0]
    assert f["turns_copied"] == 1 and f["steps_copied"] == 3 and f["open_turn_id"] is None
    new = f["conversation_id"]
    row = conn.execute("SELECT forked_from, forked_at_step, title FROM pgagent.conversation "
                       "WHERE conversation_id = %s", [new]).fetchone()
    assert row == (cid, at, "what if")
    llm.script(text("forked"))
    send(conn, new, "another second")
    msgs = llm.requests[-1]["body"]["messages"]
    assert [m.get("content") for m in msgs[1:]] == ["first", "one", "another second"]
    assert original == conn.execute("SELECT count(*) FROM pgagent.step s JOIN pgagent.turn t USING (tenant_id, turn_id) "
                                    "WHERE t.conversation_id = %s", [cid]).fetchone()[0]
    for (tid,) in conn.execute("SELECT turn_id FROM pgagent.turn WHERE conversation_id = %s", [new]).fetchall():
        assert verified(conn, tid)
    assert audited(conn, "conversation_forked") == 1


def test_fork_mid_turn_replays_from_there_with_another_agent(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(tool_calls([("bump", {"n": 7})]), text("bumped seven"))
    r = send(conn, cid, "bump 7")
    call = steps(conn, r["turn_id"], "tool_call")[0]["step_id"]
    conn.execute("SELECT pgagent.create_agent('analyst2', model => 'scripted', tools => '{bump}', "
                 "instructions => 'Be terse.')")
    f = conn.execute("SELECT pgagent.fork_conversation(%s, %s, agent => 'analyst2')", [cid, call]).fetchone()[0]
    open_turn = f["open_turn_id"]
    assert open_turn and status(conn, open_turn) == "queued"
    assert kinds(conn, open_turn) == ["user_message", "llm_call", "tool_call"]
    llm.script(text("terse"))
    done = conn.execute("CALL pgagent.run_turn(%s)", [open_turn]).fetchone()[0]
    assert done["status"] == "completed" and done["answer"] == "terse"
    assert bumps(conn) == [7, 7]   # the copied call ran again in the fork
    assert llm.requests[-1]["body"]["messages"][0]["content"].endswith("Be terse.")
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SELECT pgagent.fork_conversation(%s, %s)", [f["conversation_id"], call])


# ---------------------------------------------------------------------------- bulk_approve

def test_bulk_approve_by_filter_and_by_ids(conn, llm):
    cid = setup_agent(conn, llm, bump_approval=True)
    waits = []
    for n in (1, 2, 3):
        c2 = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
        waits.append(waiting_turn(conn, llm, c2, n))
    with pytest.raises(errors.InvalidParameterValue):
        conn.execute("SELECT pgagent.bulk_approve()")
    n = conn.execute("SELECT pgagent.bulk_approve(step_ids => %s, approved => false, note => 'no')",
                     [[waits[0][1]]]).fetchone()[0]
    assert n == 1 and bumps(conn) == []
    assert steps(conn, waits[0][0], "tool_result")[0]["payload"]["rejected"] is True
    n = conn.execute("SELECT pgagent.bulk_approve(tool => 'bump', note => 'batch')").fetchone()[0]
    assert n == 2 and sorted(bumps(conn)) == [2, 3]
    for turn_id, call in waits[1:]:
        assert kinds(conn, turn_id)[-2:] == ["approval", "tool_result"]
        assert steps(conn, turn_id, "approval")[0]["payload"]["note"] == "batch"
    assert audited(conn, "approval_decided") == 3
    # an already decided call in an explicit list: nothing is decided
    with pytest.raises(errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT pgagent.bulk_approve(step_ids => %s)", [[waits[1][1]]])
    # resume => true continues the turns
    c3 = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    t4, s4 = waiting_turn(conn, llm, c3, 4)
    llm.script(text("bumped 4"))
    assert conn.execute("SELECT pgagent.bulk_approve(step_ids => %s, resume => true)", [[s4]]).fetchone()[0] == 1
    assert status(conn, t4) == "completed"


# ---------------------------------------------------------------------------- ratings and flags

def test_rate_and_flag(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(text("fine"))
    r = send(conn, cid, "hi")
    rid = conn.execute("SELECT pgagent.rate_turn(%s, 4, 'good')", [r["turn_id"]]).fetchone()[0]
    assert conn.execute("SELECT pgagent.rate_turn(%s, thumbs_up => false)", [r["turn_id"]]).fetchone()[0] == rid
    assert conn.execute("SELECT rating, thumbs_up, comment FROM pgagent.rating WHERE rating_id = %s",
                        [rid]).fetchone() == (None, False, None)
    for bad in ("SELECT pgagent.rate_turn(%s)", "SELECT pgagent.rate_turn(%s, 6)", "SELECT pgagent.rate_turn(%s, 0)"):
        with pytest.raises(errors.InvalidParameterValue):
            conn.execute(bad, [r["turn_id"]])
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SELECT pgagent.rate_turn(987654, 3)")
    step = steps(conn, r["turn_id"], "response")[0]["step_id"]
    fid = conn.execute("SELECT pgagent.flag_issue(step => %s, category => 'wrong_answer', note => 'meh')",
                       [step]).fetchone()[0]
    row = conn.execute("SELECT turn_id, step_id, status FROM pgagent.flag WHERE flag_id = %s", [fid]).fetchone()
    assert row == (r["turn_id"], step, "open")
    with pytest.raises(errors.InvalidParameterValue, match="category"):
        conn.execute("SELECT pgagent.flag_issue(%s, category => 'Bad Category')", [r["turn_id"]])
    with pytest.raises(errors.InvalidParameterValue):
        conn.execute("SELECT pgagent.flag_issue()")
    assert conn.execute("SELECT pgagent.resolve_issue(%s, 'retrained')", [fid]).fetchone()[0] is True
    assert conn.execute("SELECT pgagent.resolve_issue(%s)", [fid]).fetchone()[0] is False
    assert conn.execute("SELECT status, resolution FROM pgagent.flag WHERE flag_id = %s",
                        [fid]).fetchone() == ("resolved", "retrained")
    assert audited(conn, "turn_rated") == 2 and audited(conn, "issue_flagged") == 1


def test_interventions_are_append_only_and_deleted_with_their_conversation(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(text("x"))
    r = send(conn, cid, "hi")
    conn.execute("SELECT pgagent.inject_message(%s, 'note')", [cid])
    conn.execute("SELECT pgagent.rate_turn(%s, 5)", [r["turn_id"]])
    conn.execute("SELECT pgagent.flag_issue(%s)", [r["turn_id"]])
    with pytest.raises(errors.InsufficientPrivilege):
        conn.execute("UPDATE pgagent.intervention SET payload = '{}'")
    with pytest.raises(errors.InsufficientPrivilege):
        conn.execute("DELETE FROM pgagent.intervention")
    conn.execute("SELECT pgagent.delete_conversation(%s)", [cid])
    for t in ("intervention", "rating", "flag", "turn"):
        assert conn.execute(f"SELECT count(*) FROM pgagent.{t}").fetchone()[0] == 0
