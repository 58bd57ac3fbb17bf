"""Hostile LLM replies through the whole loop, as a property: generated replies (wrong types,
NUL characters, lone surrogates, huge usage, deep nesting, junk tool calls, answers that are not
JSON) in native and json_schema tool modes, through send_message and CALL run_turn. Every turn
must end terminal, every failure must be a recorded step, the step chain must verify, and
nothing may escape as an SQL error. Seeded, CI-sized batches (the 10,000-reply fuzzer that
found the cases is the same generator run longer: PGAGENT_FUZZ_TURNS=10000)."""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import psycopg
import pytest

from scripted_llm import raw, text, trickle
from test_loop import setup_agent

TURNS = int(os.environ.get("PGAGENT_FUZZ_TURNS", "60"))
TERMINAL = {"completed", "failed", "cancelled"}


def deep(n: int) -> Any:
    """JSON nested n levels: real lists when small, else a marker that :func:`splice` replaces
    with the nested text (json.dumps itself cannot write thousands of levels)."""
    if n > 100:
        return f"__DEEP_{n}__"
    v: Any = "x"
    for _ in range(n):
        v = [v]
    return v


def splice(text_: str) -> str:
    """Replace deep() markers (as JSON strings, possibly escaped once more) with nested arrays."""
    import re
    return re.sub(r'\\?"__DEEP_(\d+)__\\?"', lambda m: "[" * int(m.group(1)) + "1" + "]" * int(m.group(1)), text_)


def junk(rng: random.Random) -> Any:
    return rng.choice([None, True, -1, 2_000_000_000, 1.5, "x", "\u0000", "\ud800", [], {}, [1, "a"], {"a": 1},
                       "1e999", deep(rng.choice([3, 50, 2000])), "A" * rng.choice([1, 10_000])])


def tool_call(rng: random.Random) -> Any:
    name = rng.choice(["run_sql", "bump", "nope", "", None, 5, "run_sql\u0000"])
    args = rng.choice([{"query": "SELECT count(*) FROM weather"}, {"query": "SELECT 1\u0000"}, {"n": 1}, {"n": "x"},
                       "{not json", "\"str\"", "[1]", None, 5, {"query": deep(3000)}, "{\"query\": \"\\ud800\"}"])
    tc: Any = {"id": rng.choice(["c1", None, 7, "\u0000id"]), "type": "function",
               "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}
    return rng.choice([tc, tc, tc, "string", 5, None, {"function": "x"}, {"function": {"arguments": "{}"}}])


def answer_text(rng: random.Random, json_mode: bool) -> Any:
    plain = rng.choice(["An answer.", "nul \u0000 here", "lone \ud800 surrogate", "", "x" * 50_000])
    if not json_mode:
        return plain
    return rng.choice([json.dumps({"answer": plain}), json.dumps({"answer": 5}), json.dumps({"tool": 5}),
                       json.dumps({"tool": "run_sql", "arguments": {"query": "SELECT 1\u0000"}}),
                       json.dumps({"tool": "run_sql", "arguments": deep(5000)}), json.dumps(deep(5000)),
                       "not json at all", json.dumps({"answer": "ok", "tool": "run_sql"}), plain])


def body(rng: random.Random, json_mode: bool) -> str:
    """One generated chat-completion body (as text, so invalid JSON is possible)."""
    msg: dict[str, Any] = {"role": "assistant", "content": answer_text(rng, json_mode)}
    if rng.random() < 0.35:
        msg["tool_calls"] = rng.choice([[tool_call(rng)], [tool_call(rng), tool_call(rng)], junk(rng)])
    if rng.random() < 0.2:
        msg["content"] = junk(rng)
    if rng.random() < 0.1:
        msg["reasoning_content"] = junk(rng)
    usage: Any = {"prompt_tokens": rng.choice([10, 2_000_000_000, 2**40, -5, "100", 1.5, True, None]),
                  "completion_tokens": rng.choice([5, 2_000_000_000, "x", None])}
    if rng.random() < 0.15:
        usage = junk(rng)
    choice: Any = {"index": 0, "message": msg, "finish_reason": rng.choice(["stop", "tool_calls", None, 5, "\u0000"])}
    doc: Any = {"id": "x", "object": "chat.completion", "model": rng.choice(["m", None, 5]),
                "choices": rng.choice([[choice]] * 6 + [[], "x", [None], None, {"0": choice}]), "usage": usage}
    if rng.random() < 0.08:
        doc = junk(rng)
    out = splice(json.dumps(doc, ensure_ascii=True))
    r = rng.random()
    if r < 0.04:
        out = out[: len(out) // 2]          # truncated JSON
    elif r < 0.06:
        out = ""
    return out


def check_turn(conn: psycopg.Connection, turn_id: int, status: str) -> None:
    assert status in TERMINAL, (turn_id, status)
    kinds = [k for (k,) in conn.execute("SELECT kind FROM pgagent.step WHERE turn_id = %s ORDER BY seq", [turn_id])]
    if status == "failed":
        assert "error" in kinds, kinds
    else:
        assert kinds[-1] == "response", kinds
    ok, _, _, problem = conn.execute("SELECT * FROM pgagent.verify_turn(%s)", [turn_id]).fetchone()
    assert ok, problem


@pytest.mark.parametrize("tool_mode", ["native", "json_schema"])
def test_generated_replies_always_end_in_a_recorded_terminal_turn(conn, llm, tool_mode):
    cid = setup_agent(conn, llm, tool_mode=tool_mode, max_retries=1, config={"max_steps": 3})
    rng = random.Random(f"pgagent-{tool_mode}")
    json_mode = tool_mode == "json_schema"
    statuses: dict[str, int] = {}
    for i in range(TURNS):
        llm.reset()
        llm.script(*[raw(body(rng, json_mode)) for _ in range(4)], text("final"), text("final"))
        if i % 2 == 0:
            r = conn.execute("SELECT pgagent.send_message(%s, %s)", [cid, f"question {i}"]).fetchone()[0]
            turn_id, status = r["turn_id"], r["status"]
        else:
            turn_id = conn.execute("SELECT pgagent.enqueue_message(%s, %s)", [cid, f"question {i}"]).fetchone()[0]
            status = conn.execute("CALL pgagent.run_turn(%s)", [turn_id]).fetchone()[0]["status"]
        check_turn(conn, turn_id, status)
        statuses[status] = statuses.get(status, 0) + 1
    # usage sums of any realistic size fit; a turn that ran really went through the loop
    assert conn.execute("SELECT max(prompt_tokens) FROM pgagent.turn").fetchone()[0] >= 0
    assert statuses.get("completed", 0) > 0 and statuses.get("failed", 0) > 0, statuses


def test_huge_usage_sums_fit(conn, llm):
    cid = setup_agent(conn, llm, config={"max_steps": 3})
    big = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "run_sql", "arguments": "{\"query\": \"SELECT 1\"}"}}]}}],
           "usage": {"prompt_tokens": 2_000_000_000, "completion_tokens": 2_000_000_000}}
    llm.script(raw(json.dumps(big)), raw(json.dumps({**big, "choices": [{"message": {"role": "assistant",
                                                                                          "content": "done"}}]})))
    r = conn.execute("SELECT pgagent.send_message(%s, 'count')", [cid]).fetchone()[0]
    assert r["status"] in TERMINAL
    check_turn(conn, r["turn_id"], r["status"])


def test_timeout_bounds_a_trickled_reply(conn, llm):
    """A reply trickled one byte every 0.3 s: timeout_ms bounds the whole call, not each read."""
    cid = setup_agent(conn, llm, timeout_ms=500, max_retries=0)
    llm.script(trickle(text("this arrives far too slowly"), byte_every_s=0.3))
    t0 = time.monotonic()
    r = conn.execute("SELECT pgagent.send_message(%s, 'slow')", [cid]).fetchone()[0]
    took = time.monotonic() - t0
    assert r["status"] == "failed" and "500 ms" in r["error"], r
    assert took < 5, took   # a generous bound: per-read timeouts took 20 s here
    check_turn(conn, r["turn_id"], r["status"])
