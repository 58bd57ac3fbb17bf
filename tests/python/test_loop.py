"""The agent loop inside PostgreSQL against a scripted OpenAI-compatible / Anthropic server."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import errors

from scripted_llm import ScriptedLLM, hang, http_error, raw, text, tool_calls

RUN_SQL_SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
BUMP_SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"],
               "additionalProperties": False}


def base_url(llm: ScriptedLLM, provider: str) -> str:
    """The scripted server's base URL for ``provider``'s wire format."""
    return {"anthropic": llm.anthropic_base_url, "gemini": llm.gemini_base_url,
            "ollama": llm.ollama_base_url}.get(provider, llm.base_url)


def setup_agent(conn: psycopg.Connection, llm: ScriptedLLM, *, provider: str = "openai", tool_mode: str = "native",
                config: dict[str, Any] | None = None, bump_approval: bool = False, timeout_ms: int = 5000,
                secret_name: str | None = None, max_retries: int = 0) -> int:
    """A model pointing at the scripted server, two tools (run_sql: sql kind; bump: a function
    tool that writes a row) and an agent; returns a new conversation id."""
    base = base_url(llm, provider)
    conn.execute("""SELECT pgagent.register_model('scripted', base_url => %s, provider => %s, tool_mode => %s,
                    timeout_ms => %s, max_retries => %s, secret_name => %s,
                    input_usd_per_mtok => 2.5, output_usd_per_mtok => 10)""",
                 [base, provider, tool_mode, timeout_ms, max_retries, secret_name])
    conn.execute("CREATE TABLE public.bumps (n int NOT NULL, at timestamptz DEFAULT clock_timestamp())")
    conn.execute("CREATE TABLE public.weather (day date, rain real)")
    conn.execute("INSERT INTO public.weather SELECT '2013-01-01'::date + i, i % 3 FROM generate_series(0, 364) i")
    conn.execute("""CREATE FUNCTION public.bump(n int) RETURNS text LANGUAGE sql AS
                    $$ INSERT INTO public.bumps(n) VALUES (n) RETURNING 'bumped ' || n $$""")
    conn.execute("SELECT pgagent.register_tool('run_sql', 'Run one read-only SQL query', %s, kind => 'sql')",
                 [json.dumps(RUN_SQL_SCHEMA)])
    conn.execute("""SELECT pgagent.register_tool('bump', 'Record a bump', %s, kind => 'function',
                    config => '{"function": "public.bump"}', requires_approval => %s)""",
                 [json.dumps(BUMP_SCHEMA), bump_approval])
    cfg = {"retry_backoff_ms": 1, **(config or {})}
    conn.execute("SELECT pgagent.create_agent('analyst', model => 'scripted', tools => '{run_sql,bump}', "
                 "instructions => 'Answer from the data.', config => %s)", [json.dumps(cfg)])
    return conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]


def send(conn: psycopg.Connection, conversation: int, content: str = "How many rainy days?") -> dict[str, Any]:
    return conn.execute("SELECT pgagent.send_message(%s, %s)", [conversation, content]).fetchone()[0]


def kinds(conn: psycopg.Connection, turn_id: int) -> list[str]:
    return [r[0] for r in conn.execute("SELECT kind FROM pgagent.step WHERE turn_id = %s ORDER BY seq", [turn_id])]


def steps(conn: psycopg.Connection, turn_id: int, kind: str) -> list[dict[str, Any]]:
    cur = conn.execute("SELECT step_id, payload, tool_name, tool_call_id, prompt_tokens, completion_tokens, cost_usd, "
                       "latency_ms FROM pgagent.step WHERE turn_id = %s AND kind = %s ORDER BY seq", [turn_id, kind])
    cols = [d.name for d in cur.description]
    return [dict(zip(cols, r)) for r in cur]


def bumps(conn: psycopg.Connection) -> list[int]:
    return [r[0] for r in conn.execute("SELECT n FROM public.bumps ORDER BY at")]


# ---------------------------------------------------------------------------- happy paths

def test_native_tool_call_then_answer(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(tool_calls([("run_sql", {"query": "SELECT count(*) AS n FROM weather WHERE rain > 0"})],
                          prompt_tokens=100, completion_tokens=20),
               text("There were 243 rainy days.", prompt_tokens=150, completion_tokens=10))
    r = send(conn, cid)
    assert r["status"] == "completed" and r["answer"] == "There were 243 rainy days."
    assert r["usage"] == {"prompt_tokens": 250, "completion_tokens": 30, "total_tokens": 280}
    assert r["cost_usd"] == pytest.approx((250 * 2.5 + 30 * 10) / 1e6)
    assert kinds(conn, r["turn_id"]) == ["user_message", "llm_call", "tool_call", "tool_result", "llm_call", "response"]
    result = steps(conn, r["turn_id"], "tool_result")[0]
    assert result["payload"]["result"]["rows"] == [{"n": 243}]
    # the model got the tool's result as a tool message answering its call id
    second = llm.requests[1]["body"]["messages"]
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "call_1"
    assert json.loads(second[-1]["content"])["rows"] == [{"n": 243}]
    assert second[0]["role"] == "system" and "Answer from the data." in second[0]["content"]
    assert {t["function"]["name"] for t in llm.requests[0]["body"]["tools"]} == {"run_sql", "bump"}
    turn = conn.execute("SELECT status, finished_at IS NOT NULL, llm_calls, prompt_tokens, cost_usd "
                        "FROM pgagent.turn WHERE turn_id = %s", [r["turn_id"]]).fetchone()
    assert turn[:4] == ("completed", True, 2, 250) and float(turn[4]) == pytest.approx(r["cost_usd"])
    llm_steps = steps(conn, r["turn_id"], "llm_call")
    assert [s["prompt_tokens"] for s in llm_steps] == [100, 150] and all(s["latency_ms"] > 0 for s in llm_steps)


def test_no_tool_needed_and_history_is_sent(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(text("Hello! I analyse weather data."), text("You asked who I am."))
    assert send(conn, cid, "Who are you?")["answer"] == "Hello! I analyse weather data."
    r = send(conn, cid, "What did I ask?")
    assert r["status"] == "completed" and r["llm_calls"] == 1
    msgs = llm.requests[1]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1]["content"] == "Who are you?" and msgs[2]["content"] == "Hello! I analyse weather data."


@pytest.mark.parametrize("written", [
    '{"name": "run_sql", "arguments": {"query": "SELECT 1 AS one"}}',
    'Let me check.\n```json\n{"name": "run_sql", "arguments": {"query": "SELECT 1 AS one"}}\n```',
    '<tool_call>\n{"name": "run_sql", "arguments": {"query": "SELECT 1 AS one"}}\n</tool_call>',
])
def test_tool_call_written_as_text_is_recovered(conn, llm, written):
    cid = setup_agent(conn, llm)
    llm.script(text(written), text("One."))
    r = send(conn, cid)
    assert r["status"] == "completed" and r["answer"] == "One."
    call = steps(conn, r["turn_id"], "tool_call")[0]
    assert call["tool_name"] == "run_sql" and call["payload"]["source"] == "text"
    assert steps(conn, r["turn_id"], "tool_result")[0]["payload"]["result"]["rows"] == [{"one": 1}]


def test_text_naming_an_undeclared_tool_is_an_answer(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(text('{"name": "delete_everything", "arguments": {}}'))
    r = send(conn, cid)
    assert r["status"] == "completed" and "delete_everything" in r["answer"]
    assert "tool_call" not in kinds(conn, r["turn_id"])


def test_json_schema_mode(conn, llm):
    cid = setup_agent(conn, llm, tool_mode="json_schema")
    llm.script(text('{"tool": "run_sql", "arguments": {"query": "SELECT 2 AS two"}}'), text('{"answer": "Two."}'))
    r = send(conn, cid)
    assert r["status"] == "completed" and r["answer"] == "Two."
    body = llm.requests[0]["body"]
    assert "tools" not in body and body["response_format"]["type"] == "json_schema"
    options = body["response_format"]["json_schema"]["schema"]["oneOf"]
    assert {o["properties"].get("tool", {}).get("const") for o in options} == {"run_sql", "bump", None}
    assert "run_sql" in body["messages"][0]["content"]  # tools described in the system prompt
    follow = llm.requests[1]["body"]["messages"][-1]
    assert follow["role"] == "user" and '"two":2' in follow["content"]


def test_anthropic_provider(conn, llm):
    cid = setup_agent(conn, llm, provider="anthropic")
    llm.script(tool_calls([("run_sql", {"query": "SELECT 3 AS three"})], content="Checking."), text("Three."))
    r = send(conn, cid)
    assert r["status"] == "completed" and r["answer"] == "Three."
    first, second = llm.requests[0], llm.requests[1]
    assert first["path"] == "/v1/messages" and first["headers"]["anthropic-version"] == "2023-06-01"
    assert first["body"]["system"].startswith("You are a helpful assistant.")
    assert first["body"]["tools"][0]["input_schema"]["type"] == "object"
    tool_result = second["body"]["messages"][-1]["content"][0]
    assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == "toolu_1"
    assert kinds(conn, r["turn_id"]).count("thinking") == 1  # the text beside the tool_use


# ---------------------------------------------------------------------------- bad model output

def test_unknown_tool_is_told_to_the_model(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(tool_calls([("drop_database", {})]), text("Sorry."))
    r = send(conn, cid)
    assert r["status"] == "completed"
    res = steps(conn, r["turn_id"], "tool_result")[0]["payload"]
    assert res["is_error"] and "unknown tool 'drop_database'" in res["error"] and "run_sql" in res["error"]
    assert "unknown tool" in llm.requests[1]["body"]["messages"][-1]["content"]


def test_invalid_arguments_get_the_validation_error_and_a_retry(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(tool_calls([("bump", {"n": 0})]), tool_calls([("bump", '{"n": ')]),
               tool_calls([("bump", {"n": 2})]), text("Bumped."))
    r = send(conn, cid)
    assert r["status"] == "completed" and bumps(conn) == [2]
    errs = [s["payload"]["error"] for s in steps(conn, r["turn_id"], "tool_result")[:2]]
    assert "do not match its JSON Schema at n" in errs[0] and "minimum" in errs[0]
    assert "not valid JSON" in errs[1]
    # the timeline shows what the model wrote and why it was refused, not "null"
    summaries = [x for (x,) in conn.execute("SELECT summary FROM pgagent.turn_timeline WHERE turn_id = %s "
                                            "AND kind = 'tool_call' ORDER BY seq", [r["turn_id"]])]
    assert summaries[1].startswith("invalid: ") and '(raw: {"n": )' in summaries[1], summaries
    assert summaries[2] == '{"n": 2}'


def test_too_many_invalid_calls_fail_the_turn(conn, llm):
    cid = setup_agent(conn, llm, config={"max_tool_errors": 1})
    llm.script(tool_calls([("bump", {"n": -1})]), tool_calls([("bump", {"n": -2})]))
    r = send(conn, cid)
    assert r["status"] == "failed" and "too many invalid tool calls" in r["error"]
    assert bumps(conn) == []


def test_malformed_reply_is_recorded_and_retried(conn, llm):
    cid = setup_agent(conn, llm, max_retries=2)
    llm.script(raw("this is not json"), raw('{"id": "x", "object": "chat.completion"}'), text("Fine."))
    r = send(conn, cid)
    assert r["status"] == "completed" and r["answer"] == "Fine."
    errs = steps(conn, r["turn_id"], "error")
    assert [e["payload"]["error_kind"] for e in errs] == ["malformed", "malformed"]
    assert "not JSON" in errs[0]["payload"]["message"] and "choices" in errs[1]["payload"]["message"]


@pytest.mark.parametrize("status", [500, 429])
def test_http_errors_are_retried_then_fail_with_the_status(conn, llm, status):
    cid = setup_agent(conn, llm, max_retries=1)
    llm.script(http_error(status), http_error(status))
    r = send(conn, cid)
    assert r["status"] == "failed" and f"HTTP {status}" in r["error"]
    errs = steps(conn, r["turn_id"], "error")
    assert [e["payload"].get("http_status") for e in errs] == [status, status, status]
    assert [e["payload"].get("will_retry") for e in errs[:2]] == [True, False]
    assert len(llm.requests) == 2


def test_timeout_is_a_recorded_failure(conn, llm):
    cid = setup_agent(conn, llm, timeout_ms=300)
    llm.script(hang(5))
    t0 = time.monotonic()
    r = send(conn, cid)
    assert time.monotonic() - t0 < 3
    assert r["status"] == "failed" and "within 300 ms" in r["error"]
    assert steps(conn, r["turn_id"], "error")[0]["payload"]["error_kind"] == "timeout"


def test_dead_endpoint(conn, llm):
    cid = setup_agent(conn, llm)
    conn.execute("UPDATE pgagent.model SET base_url = 'http://127.0.0.1:9/v1'")
    r = send(conn, cid)
    assert r["status"] == "failed" and "cannot reach" in r["error"]


def test_max_steps(conn, llm):
    cid = setup_agent(conn, llm, config={"max_steps": 2})
    llm.script(*[tool_calls([("run_sql", {"query": "SELECT 1"})]) for _ in range(2)])
    r = send(conn, cid)
    assert r["status"] == "failed" and "max_steps (2)" in r["error"] and r["llm_calls"] == 2


# ---------------------------------------------------------------------------- tools

def test_sql_tool_is_read_only_capped_and_timed(conn, llm):
    cid = setup_agent(conn, llm)
    conn.execute("SELECT pgagent.register_tool('run_sql', 'q', %s, kind => 'sql', config => '{\"max_rows\": 5}', "
                 "timeout_ms => 200)", [json.dumps(RUN_SQL_SCHEMA)])
    llm.script(tool_calls([("run_sql", {"query": "SELECT public.bump(7)"}),
                           ("run_sql", {"query": "SELECT * FROM weather"}),
                           ("run_sql", {"query": "SELECT pg_sleep(3)"}),
                           ("run_sql", {"query": "DELETE FROM weather RETURNING *"})]), text("Done."))
    t0 = time.monotonic()
    r = send(conn, cid)
    assert time.monotonic() - t0 < 2.5
    res = [s["payload"] for s in steps(conn, r["turn_id"], "tool_result")]
    assert res[0]["result"]["rows"] == [{"bump": "bumped 7"}] and bumps(conn) == []  # rolled back
    assert res[1]["result"]["row_count"] == 5 and res[1]["result"]["truncated"] is True
    assert res[2]["is_error"] and "timed out after 200 ms" in res[2]["error"]
    assert res[3]["is_error"] and "syntax error" in res[3]["error"]
    assert conn.execute("SELECT count(*) FROM weather").fetchone()[0] == 365
    assert r["status"] == "completed"


def test_function_tool_error_is_readable(conn, llm):
    cid = setup_agent(conn, llm)
    conn.execute("CREATE OR REPLACE FUNCTION public.bump(n int) RETURNS text LANGUAGE plpgsql AS "
                 "$$ BEGIN RAISE EXCEPTION 'bump % refused', n; END $$")
    llm.script(tool_calls([("bump", {"n": 4})]), text("It failed."))
    r = send(conn, cid)
    res = steps(conn, r["turn_id"], "tool_result")[0]["payload"]
    assert r["status"] == "completed" and res["is_error"] and "bump 4 refused" in res["error"]


# ---------------------------------------------------------------------------- approvals

def test_approval_then_process_tool_call(conn, llm):
    cid = setup_agent(conn, llm, bump_approval=True)
    llm.script(tool_calls([("bump", {"n": 5})]))
    r = send(conn, cid, "Bump by five")
    assert r["status"] == "awaiting_approval" and bumps(conn) == []
    pending = r["pending_approvals"]
    assert len(pending) == 1 and pending[0]["tool"] == "bump" and pending[0]["arguments"] == {"n": 5}
    view = conn.execute("SELECT step_id, tool_name FROM pgagent.pending_approvals").fetchall()
    assert view == [(pending[0]["step_id"], "bump")]
    with pytest.raises(errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT pgagent.process_tool_call(%s)", [pending[0]["step_id"]])
    with pytest.raises(errors.ObjectNotInPrerequisiteState):  # the conversation is busy
        send(conn, cid, "another question")
    d = conn.execute("SELECT pgagent.approve_step(%s, true, 'looks fine')", [pending[0]["step_id"]]).fetchone()[0]
    assert d["approved"] is True and d["pending"] == []
    with pytest.raises(errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT pgagent.approve_step(%s, false)", [pending[0]["step_id"]])
    llm.script(text("Bumped by five."))
    r2 = conn.execute("SELECT pgagent.process_tool_call(%s)", [pending[0]["step_id"]]).fetchone()[0]
    assert r2["status"] == "completed" and r2["answer"] == "Bumped by five." and bumps(conn) == [5]
    appr = steps(conn, r["turn_id"], "approval")[0]["payload"]
    assert appr["decided_by"] == "postgres" and appr["note"] == "looks fine" and appr["decided_at"]
    assert kinds(conn, r["turn_id"]) == ["user_message", "llm_call", "tool_call", "approval", "tool_result",
                                         "llm_call", "response"]
    assert conn.execute("SELECT count(*) FROM pgagent.pending_approvals").fetchone()[0] == 0


def test_rejection_is_told_to_the_model(conn, llm):
    cid = setup_agent(conn, llm, bump_approval=True)
    llm.script(tool_calls([("bump", {"n": 9})]))
    step = send(conn, cid)["pending_approvals"][0]["step_id"]
    conn.execute("SELECT pgagent.approve_step(%s, false, 'not today')", [step])
    llm.script(text("The bump was rejected."))
    conn.execute("CALL pgagent.run_turn(%s)", [conn.execute(
        "SELECT turn_id FROM pgagent.step WHERE step_id = %s", [step]).fetchone()[0]])
    assert bumps(conn) == []
    last = llm.requests[-1]["body"]["messages"][-1]
    assert last["role"] == "tool" and "rejected by postgres: not today" in last["content"]


def test_auto_approve_list(conn, llm):
    cid = setup_agent(conn, llm, bump_approval=True, config={"auto_approve": ["bump"]})
    llm.script(tool_calls([("bump", {"n": 1})]), text("ok"))
    assert send(conn, cid)["status"] == "completed" and bumps(conn) == [1]


# ---------------------------------------------------------------------------- transactions and crashes

def test_send_message_is_atomic(conn, llm, dsn):
    cid = setup_agent(conn, llm)
    llm.script(tool_calls([("bump", {"n": 3})]), text("bumped"))
    with psycopg.connect(dsn) as c2:  # not autocommit: one transaction
        assert c2.execute("SELECT pgagent.send_message(%s, 'bump 3')", [cid]).fetchone()[0]["status"] == "completed"
        c2.rollback()
    assert conn.execute("SELECT count(*) FROM pgagent.turn").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pgagent.step").fetchone()[0] == 0
    assert bumps(conn) == []
    llm.script(tool_calls([("bump", {"n": 3})]), text("bumped"))
    with psycopg.connect(dsn) as c2:
        c2.execute("SELECT pgagent.send_message(%s, 'bump 3')", [cid])
        c2.commit()
    assert bumps(conn) == [3] and conn.execute("SELECT count(*) FROM pgagent.step").fetchone()[0] == 6


def test_run_turn_commits_each_step_and_resumes_after_a_killed_backend(conn, llm, dsn):
    cid = setup_agent(conn, llm, timeout_ms=30000)
    turn_id = conn.execute("SELECT pgagent.enqueue_message(%s, 'bump 4 then answer')", [cid]).fetchone()[0]
    assert conn.execute("SELECT status FROM pgagent.turn WHERE turn_id = %s", [turn_id]).fetchone()[0] == "queued"
    llm.script(tool_calls([("bump", {"n": 4})]), hang(30))
    worker = psycopg.connect(dsn, autocommit=True)
    pid = worker.info.backend_pid
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.execute("CALL pgagent.run_turn(%s)", [turn_id])
        except BaseException as e:  # the backend is killed under it
            failure.append(e)

    th = threading.Thread(target=run)
    th.start()
    deadline = time.monotonic() + 10
    while len(llm.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(llm.requests) == 2  # the second LLM call is in flight
    # other sessions already see the committed steps, and the tool's write
    assert kinds(conn, turn_id) == ["user_message", "llm_call", "tool_call", "tool_result"]
    assert bumps(conn) == [4]
    # the LLM call holds no lock that blocks other conversations
    cid2 = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm_other = ScriptedLLM().start()
    try:
        conn.execute("SELECT pgagent.register_model('other', base_url => %s)", [llm_other.base_url])
        llm_other.script(text("independent"))
        conn.execute("UPDATE pgagent.agent SET model_id = (SELECT model_id FROM pgagent.model WHERE name = 'other')")
        assert send(conn, cid2, "hi")["answer"] == "independent"
        conn.execute("UPDATE pgagent.agent SET model_id = (SELECT model_id FROM pgagent.model WHERE name = 'scripted')")
    finally:
        llm_other.stop()
    with pytest.raises(errors.LockNotAvailable):
        conn.execute("CALL pgagent.run_turn(%s)", [turn_id])
    assert conn.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]
    th.join(10)
    assert failure and not th.is_alive()
    worker.close()
    assert conn.execute("SELECT status FROM pgagent.turn WHERE turn_id = %s", [turn_id]).fetchone()[0] == "running"
    llm.reset()
    llm.script(text("Bumped by four."))
    result = conn.execute("CALL pgagent.run_turn(%s)", [turn_id]).fetchone()[0]
    assert result["status"] == "completed" and result["answer"] == "Bumped by four."
    assert bumps(conn) == [4]  # the tool call that had a result was not run again
    assert kinds(conn, turn_id) == ["user_message", "llm_call", "tool_call", "tool_result", "llm_call", "response"]
    # the resumed call carried the first tool result to the model
    assert llm.requests[0]["body"]["messages"][-1]["role"] == "tool"


def test_resume_runs_a_committed_call_that_has_no_result(conn, llm):
    """A crash between the tool_call commit and the tool run: resuming runs it exactly once."""
    cid = setup_agent(conn, llm)
    turn_id = conn.execute("SELECT pgagent.enqueue_message(%s, 'bump 6')", [cid]).fetchone()[0]
    conn.execute("UPDATE pgagent.turn SET status = 'running', started_at = clock_timestamp() WHERE turn_id = %s",
                 [turn_id])
    conn.execute("""INSERT INTO pgagent.step (turn_id, seq, kind, payload, prompt_tokens, completion_tokens, cost_usd)
                    VALUES (%s, 2, 'llm_call', '{"message": {"role": "assistant", "content": "", "tool_calls":
                    [{"id": "call_x", "type": "function", "function": {"name": "bump", "arguments": "{\\"n\\": 6}"}}]}}',
                    5, 5, 0)""", [turn_id])
    conn.execute("""INSERT INTO pgagent.step (turn_id, seq, kind, payload, tool_call_id, tool_name)
                    VALUES (%s, 3, 'tool_call', '{"arguments": {"n": 6}, "requires_approval": false}', 'call_x', 'bump')""",
                 [turn_id])
    llm.script(text("done"))
    result = conn.execute("CALL pgagent.run_turn(%s)", [turn_id]).fetchone()[0]
    assert result["status"] == "completed" and bumps(conn) == [6] and result["llm_calls"] == 2
    result = conn.execute("CALL pgagent.run_turn(%s)", [turn_id]).fetchone()[0]  # idempotent once finished
    assert result["status"] == "completed" and bumps(conn) == [6]


def test_cancel_turn(conn, llm):
    cid = setup_agent(conn, llm, bump_approval=True)
    llm.script(tool_calls([("bump", {"n": 8})]))
    r = send(conn, cid)
    c = conn.execute("SELECT pgagent.cancel_turn(%s, 'changed my mind')", [r["turn_id"]]).fetchone()[0]
    assert c["status"] == "cancelled"
    assert steps(conn, r["turn_id"], "error")[-1]["payload"]["message"] == "cancelled by postgres: changed my mind"
    with pytest.raises(errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT pgagent.cancel_turn(%s)", [r["turn_id"]])
    assert bumps(conn) == []


# ---------------------------------------------------------------------------- secrets

def test_secret_by_name_is_sent_and_redacted(conn, llm):
    cid = setup_agent(conn, llm, secret_name="SCRIPTED_KEY")
    r = send(conn, cid)
    assert r["status"] == "failed" and "SCRIPTED_KEY" in r["error"]
    key = "sk-test-0123456789abcdef"
    conn.execute("SELECT set_config('pgagent.secret.SCRIPTED_KEY', %s, false)", [key])
    llm.script(http_error(401, body={"error": {"message": f"Incorrect API key provided: {key}"}}))
    r = send(conn, cid)
    assert llm.requests[-1]["headers"]["authorization"] == f"Bearer {key}"
    assert r["status"] == "failed" and "[REDACTED]" in r["error"] and key not in r["error"]
    logged = conn.execute("SELECT string_agg(payload::text, ' ') FROM pgagent.step").fetchone()[0]
    assert key not in logged and "[REDACTED]" in logged
    assert key not in conn.execute("SELECT string_agg(error, ' ') FROM pgagent.turn").fetchone()[0]


def test_cancel_backend_interrupts_an_llm_call_and_keeps_the_turn(conn, llm, dsn):
    cid = setup_agent(conn, llm, timeout_ms=60000)
    turn_id = conn.execute("SELECT pgagent.enqueue_message(%s, 'slow')", [cid]).fetchone()[0]
    llm.script(hang(30))
    worker = psycopg.connect(dsn, autocommit=True)
    pid = worker.info.backend_pid
    caught: list[BaseException] = []
    th = threading.Thread(target=lambda: _call_catching(worker, turn_id, caught))
    th.start()
    deadline = time.monotonic() + 10
    while not llm.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    assert conn.execute("SELECT pg_cancel_backend(%s)", [pid]).fetchone()[0]
    th.join(5)
    assert not th.is_alive() and time.monotonic() - t0 < 2  # not the 30 s the server hangs
    assert isinstance(caught[0], errors.QueryCanceled) and "interrupted during an LLM call" in str(caught[0])
    worker.close()
    status = conn.execute("SELECT status FROM pgagent.turn WHERE turn_id = %s", [turn_id]).fetchone()[0]
    assert status == "running" and kinds(conn, turn_id) == ["user_message"]
    llm.reset()
    llm.script(text("finally"))
    assert conn.execute("CALL pgagent.run_turn(%s)", [turn_id]).fetchone()[0]["answer"] == "finally"


def _call_catching(c: psycopg.Connection, turn_id: int, caught: list[BaseException]) -> None:
    try:
        c.execute("CALL pgagent.run_turn(%s)", [turn_id])
    except BaseException as e:
        caught.append(e)


def test_run_turn_that_fails_between_steps_reports_and_unlocks(conn, llm, dsn):
    """A COMMIT that fails between two units (here a deferred constraint trigger; in life a
    cancel landing in COMMIT) ends CALL run_turn with a readable error, keeps the committed
    steps and releases the turn, so another session can resume it."""
    cid = setup_agent(conn, llm)
    conn.execute("""CREATE FUNCTION public.refuse_results() RETURNS trigger LANGUAGE plpgsql AS
                    $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$""")
    conn.execute("""CREATE CONSTRAINT TRIGGER refuse_results AFTER INSERT ON pgagent.step DEFERRABLE INITIALLY DEFERRED
                    FOR EACH ROW WHEN (NEW.kind = 'tool_result') EXECUTE FUNCTION public.refuse_results()""")
    turn = conn.execute("SELECT pgagent.enqueue_message(%s, 'count')", [cid]).fetchone()[0]
    llm.script(tool_calls([("run_sql", {"query": "SELECT 1 AS one"})]), text("one"))
    with psycopg.connect(dsn, autocommit=True) as a:
        with pytest.raises(psycopg.Error) as e:
            a.execute("CALL pgagent.run_turn(%s)", [turn])
        assert "stopped between two steps" in e.value.diag.message_primary
        assert "run_turn" in e.value.diag.message_hint
        assert "Traceback" not in (e.value.diag.context or "")
        assert kinds(conn, turn) == ["user_message", "llm_call", "tool_call"]   # committed steps kept
        conn.execute("DROP TRIGGER refuse_results ON pgagent.step")
        with psycopg.connect(dsn, autocommit=True) as b:   # not 55P03: the lock was released
            r = b.execute("CALL pgagent.run_turn(%s)", [turn]).fetchone()[0]
        assert r["status"] == "completed" and r["answer"] == "one"


def test_function_tool_with_an_odd_parameter_name(conn, llm):
    """Parameter names are quoted as identifiers (a double quote inside one is doubled)."""
    cid = setup_agent(conn, llm)
    conn.execute("""CREATE FUNCTION public.odd("a""b" int, "select" text) RETURNS text LANGUAGE sql
                    AS $$ SELECT $2 || $1 $$""")
    conn.execute("""SELECT pgagent.register_tool('odd', 'odd names', %s, kind => 'function',
                    config => '{"function": "public.odd"}')""",
                 [json.dumps({"type": "object", "properties": {'a"b': {"type": "integer"}, "select": {"type": "string"}}})])
    conn.execute("SELECT pgagent.update_agent('analyst', tools => '{run_sql,bump,odd}')")
    llm.script(tool_calls([("odd", {'a"b': 7, "select": "x"})]), text("ok"))
    r = send(conn, cid)
    assert r["status"] == "completed"
    assert steps(conn, r["turn_id"], "tool_result")[0]["payload"] == {"is_error": False, "result": "x7"}
