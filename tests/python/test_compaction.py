"""Context compaction (issue 10): a conversation that outgrows its model's context window has its
older tool outputs stubbed, then its older turns summarised; each stage is a recorded step with
tokens before and after, nothing is deleted, and later prompts use the summary
(docs/memory.md#context-compaction)."""

from __future__ import annotations

import json

from scripted_llm import http_error, text, tool_calls

LONG = "The {n}th order shipped from warehouse {n} with {n}0 parcels. " * 7     # 392 characters


def setup(conn, llm, window: int, **config) -> int:
    conn.execute("SELECT pgagent.register_model('m', base_url => %s, is_default => true, context_window => %s, "
                 "max_retries => 0)", [llm.base_url, window])
    conn.execute("SELECT pgagent.create_agent('a', config => %s)", [json.dumps(config)])
    return conn.execute("SELECT pgagent.start_conversation('a')").fetchone()[0]


def chats(llm):
    return [q["body"] for q in llm.requests if q["path"].endswith("/chat/completions")]


def test_older_turns_are_summarised_and_the_summary_is_used_from_then_on(conn, llm):
    # each earlier turn adds ~860 characters, ~215 estimated tokens (4 characters per token: the
    # scripted replies report no usage to calibrate with): the 4th turn's prompt is ~770 tokens,
    # the 5th's (a short question) ~890, the first over 850 = 0.85 x 1000
    cid = setup(conn, llm, 1000, compact_keep_turns=1)
    for n in range(1, 5):
        llm.script(text(LONG.format(n=n), prompt_tokens=0))
        conn.execute("SELECT pgagent.send_message(%s, %s)", [cid, f"Question {n}: " + LONG.format(n=n)])
    steps_before = conn.execute("SELECT count(*) FROM pgagent.step").fetchone()[0]
    llm.script(text("Summary: orders 1 to 3 shipped from warehouses 1 to 3."), text("Order 4 came from warehouse 4."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'Where did order 4 come from?')", [cid]).fetchone()[0]
    assert r["status"] == "completed" and r["answer"] == "Order 4 came from warehouse 4."
    comp = conn.execute("SELECT payload, prompt_tokens FROM pgagent.step WHERE kind = 'compaction'").fetchall()
    assert len(comp) == 1
    p = comp[0][0]
    assert p["stage"] == "summary" and p["summary"].startswith("Summary: orders 1 to 3")
    assert p["tokens_before"] > p["limit"] == 850 and p["tokens_after"] < 850 and p["calibrated"] is False
    assert p["through_seq"] == 3 and p["turns"] == 3 and comp[0][1] == 10
    # the summary request carried the older turns; the answer request carries the summary and turn 4 only
    summary_req, answer_req = chats(llm)[-2:]
    assert "Question 1" in summary_req["messages"][1]["content"] and "Question 4" not in summary_req["messages"][1]["content"]
    sent = json.dumps(answer_req["messages"])
    assert "Summary of the earlier conversation" in sent and "Question 1" not in sent and "Question 4" in sent
    # nothing was deleted: the log only grew (by this turn's steps)
    assert conn.execute("SELECT count(*) FROM pgagent.step").fetchone()[0] > steps_before
    assert conn.execute("SELECT count(*) FROM pgagent.turn WHERE status = 'completed'").fetchone()[0] == 5
    # the next turn starts from the summary (no new compaction while it fits)
    llm.script(text("You're welcome."))
    conn.execute("SELECT pgagent.send_message(%s, 'Thanks')", [cid])
    sent = json.dumps(chats(llm)[-1]["messages"])
    assert "orders 1 to 3 shipped" in sent and "Question 1" not in sent and "Question 4" in sent
    assert conn.execute("SELECT count(*) FROM pgagent.step WHERE kind = 'compaction'").fetchone()[0] == 1
    row = conn.execute("SELECT summary FROM pgagent.turn_timeline WHERE kind = 'compaction'").fetchone()[0]
    assert row.startswith("summary: ") and "tokens (estimated)" in row


def test_old_tool_outputs_are_stubbed_first(conn, llm):
    conn.execute("CREATE FUNCTION public.big(n int) RETURNS text LANGUAGE sql AS $$ SELECT repeat('x', 2400) || n $$")
    conn.execute("GRANT EXECUTE ON FUNCTION public.big(int) TO pgagent_sandbox")
    cid = setup(conn, llm, 1000)
    conn.execute("SELECT pgagent.register_tool('big', 'A big report', '{\"type\": \"object\", \"properties\": "
                 "{\"n\": {\"type\": \"integer\"}}, \"required\": [\"n\"]}', kind => 'function', "
                 "config => '{\"function\": \"public.big\"}')")
    conn.execute("SELECT pgagent.update_agent('a', tools => '{big}')")
    llm.script(tool_calls([("big", {"n": 1})]), tool_calls([("big", {"n": 2})]), text("Both reports are long."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'Get reports 1 and 2')", [cid]).fetchone()[0]
    assert r["status"] == "completed"
    kinds = [k for (k,) in conn.execute("SELECT kind FROM pgagent.step WHERE turn_id = %s ORDER BY seq", [r["turn_id"]])]
    assert kinds == ["user_message", "llm_call", "tool_call", "tool_result", "llm_call", "tool_call", "tool_result",
                     "compaction", "llm_call", "response"]
    p = conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'compaction'").fetchone()[0]
    first = conn.execute("SELECT step_id FROM pgagent.step WHERE kind = 'tool_result' ORDER BY seq LIMIT 1").fetchone()[0]
    assert p["stage"] == "tool_outputs" and p["dropped"] == [first]
    assert p["tokens_before"] > 850 >= p["tokens_after"]
    tool_msgs = [m["content"] for m in chats(llm)[-1]["messages"] if m["role"] == "tool"]
    assert "was removed to fit the context window" in tool_msgs[0] and tool_msgs[1].count("x") == 2400
    # the stored output is untouched
    assert len(conn.execute("SELECT payload ->> 'result' FROM pgagent.step WHERE step_id = %s", [first]).fetchone()[0]) > 2400


def test_a_failed_summary_is_recorded_and_the_turn_goes_on(conn, llm):
    cid = setup(conn, llm, 1000, compact_keep_turns=0)
    for n in range(1, 5):
        llm.script(text(LONG.format(n=n), prompt_tokens=0))
        conn.execute("SELECT pgagent.send_message(%s, %s)", [cid, f"Question {n}: " + LONG.format(n=n)])
    assert conn.execute("SELECT count(*) FROM pgagent.step WHERE kind = 'compaction'").fetchone()[0] == 0
    llm.script(http_error(500, "summariser down"), text("Answer anyway."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'And now?')", [cid]).fetchone()[0]
    assert r["status"] == "completed" and r["answer"] == "Answer anyway."
    p = conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'compaction'").fetchone()[0]
    assert p["stage"] == "summary" and "the summary call failed" in p["error"] and "500" in p["error"]
    assert conn.execute("SELECT count(*) FROM pgagent.step WHERE kind = 'compaction'").fetchone()[0] == 1  # not retried


def test_the_estimate_is_calibrated_by_the_providers_usage(conn, llm):
    cid = setup(conn, llm, 100000, compact_at=0.5, compact_keep_turns=0)
    llm.script(text("ok", prompt_tokens=123))
    r1 = conn.execute("SELECT pgagent.send_message(%s, 'hello')", [cid]).fetchone()[0]
    chars = conn.execute("SELECT (payload ->> 'prompt_chars')::int FROM pgagent.step WHERE kind = 'llm_call' "
                         "AND turn_id = %s", [r1["turn_id"]]).fetchone()[0]
    assert chars > 0
    conn.execute("UPDATE pgagent.model SET context_window = 60")   # (the API would refuse nothing here; a test shortcut)
    llm.script(text("a summary"), text("fine"))
    conn.execute("SELECT pgagent.send_message(%s, %s)", [cid, "x" * 400])
    p = conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'compaction'").fetchone()[0]
    assert p["calibrated"] is True and abs(p["tokens_per_char"] - round(123 / chars, 5)) < 1e-9


def test_no_context_window_no_compaction(conn, llm):
    conn.execute("SELECT pgagent.register_model('m', base_url => %s, is_default => true)", [llm.base_url])
    conn.execute("SELECT pgagent.create_agent('a')")
    cid = conn.execute("SELECT pgagent.start_conversation('a')").fetchone()[0]
    for n in range(3):
        llm.script(text(LONG.format(n=n) * 10))
        conn.execute("SELECT pgagent.send_message(%s, %s)", [cid, LONG.format(n=n) * 10])
    assert conn.execute("SELECT count(*) FROM pgagent.step WHERE kind = 'compaction'").fetchone()[0] == 0

