"""Token streaming: with params {"stream": true} the provider call uses server-sent events, the
answer's text reaches the caller as NOTICEs while the call runs, and the recorded steps are the
same as without streaming (OpenAI-compatible and Anthropic, text and tool calls, broken streams)."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from scripted_llm import ScriptedLLM, raw, text, tool_calls
from test_loop import base_url, setup_agent

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from pgagent_core import providers  # noqa: E402

ANSWER = "There were two hundred and forty three rainy days in 2013."


def model(llm: ScriptedLLM, provider: str) -> dict[str, Any]:
    return {"provider": provider, "model_name": "m", "timeout_ms": 5000, "base_url": base_url(llm, provider)}


def step_payloads(conn: psycopg.Connection, turn_id: int) -> list[tuple[str, Any]]:
    """Each step's kind and payload, without what differs between two runs (latency, ids, time)."""
    out = []
    for kind, payload, pt, ct, cost in conn.execute(
            "SELECT kind, payload, prompt_tokens, completion_tokens, cost_usd FROM pgagent.step "
            "WHERE turn_id = %s ORDER BY seq", [turn_id]):
        payload = {k: v for k, v in payload.items() if k not in ("latency_ms", "request_ms", "duration_ms")}
        # call ids the loop makes up (providers without ids) name the turn
        out.append((kind, re.sub(r"call_\d+_", "call_T_", json.dumps(payload, sort_keys=True)), pt, ct, cost))
    return out


# ---------------------------------------------------------------------------- the provider layer
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "ollama"])
def test_streamed_reply_equals_the_whole_one(provider):
    with ScriptedLLM() as llm:
        calls = tool_calls([("run_sql", {"query": "SELECT count(*) FROM weather"}, "call_a"),
                            ("bump", {"n": 2}, "call_b")],
                           content="Let me look.", prompt_tokens=31, completion_tokens=17)
        llm.script(calls, text(ANSWER, 40, 12), calls, text(ANSWER, 40, 12))
        s, msgs = requests.Session(), [{"role": "user", "content": "rainy days?"}]
        whole = [providers.chat(s, model(llm, provider), msgs, [], {}, None) for _ in range(2)]
        deltas: list[str] = []
        streamed = [providers.chat(s, model(llm, provider), msgs, [], {"stream": True}, None,
                                   on_delta=deltas.append) for _ in range(2)]
        bodies = [r["body"] for r in llm.requests]
    for w, st in zip(whole, streamed):
        assert dataclasses.replace(st, latency_ms=0) == dataclasses.replace(w, latency_ms=0)
    assert streamed[1].content == ANSWER and streamed[1].prompt_tokens == 40
    assert [tc.name for tc in streamed[0].tool_calls] == ["run_sql", "bump"]
    # the text arrived in pieces (one per word), the tool calls' arguments were not passed on
    assert "".join(deltas) == "Let me look." + ANSWER and len(deltas) > 10
    if provider == "gemini":   # a different method, not a body field
        paths = [r["path"] for r in llm.requests]
        assert paths[0].endswith("/models/m:generateContent") and paths[2].endswith("/models/m:streamGenerateContent")
        assert "stream" not in bodies[2]
    elif provider == "ollama":   # Ollama streams unless told not to
        assert bodies[0]["stream"] is False and bodies[2]["stream"] is True
    else:
        assert "stream" not in bodies[0] and bodies[2]["stream"] is True
    if provider == "openai":
        assert bodies[2]["stream_options"] == {"include_usage": True}
    assert "stream" not in {k for b in bodies for k in b if k not in ("stream", "stream_options")}


@pytest.mark.parametrize("body, why", [
    ("data: {not json\n\n", "event 1 of the stream is not JSON"),
    ('data: [1, 2]\n\n', "event 1 of the stream is not a JSON object"),
    ('data: {"choices": [{"index": 0, "delta": {"tool_calls": [7]}}]}\n\n', "stream chunk 1 has the wrong shape"),
    ('data: {"error": {"message": "overloaded"}}\n\n', "error in the stream: overloaded"),
    ('data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\ndata: [DONE]\n\n',
     "choices[0].delta.content must be a string or null, got the number 5"),
])
def test_broken_streams_are_readable_errors(body, why):
    with ScriptedLLM() as llm:
        llm.script(raw(body, content_type="text/event-stream"))
        with pytest.raises(providers.ProviderError) as e:
            providers.chat(requests.Session(), model(llm, "openai"), [{"role": "user", "content": "x"}], [],
                           {"stream": True}, None)
    assert why in e.value.message and e.value.retryable


def test_broken_anthropic_tool_input_is_malformed():
    events = [{"type": "message_start", "message": {"id": "m", "model": "m", "usage": {"input_tokens": 3}}},
              {"type": "content_block_start", "index": 0,
               "content_block": {"type": "tool_use", "id": "t", "name": "bump", "input": {}}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"n"}},
              {"type": "content_block_stop", "index": 0}]
    with ScriptedLLM() as llm:
        llm.script(raw("".join(f"data: {json.dumps(e)}\n\n" for e in events), content_type="text/event-stream"))
        with pytest.raises(providers.ProviderError) as e:
            providers.chat(requests.Session(), model(llm, "anthropic"), [{"role": "user", "content": "x"}], [],
                           {"stream": True}, None)
    assert "content[0].input (streamed) is not JSON" in e.value.message and e.value.kind == "malformed"


def test_server_that_ignores_stream_still_answers():
    with ScriptedLLM() as llm:
        whole = llm._openai(text(ANSWER), "m")   # the JSON reply, as a server without streaming sends it
        llm.script(raw(json.dumps(whole)))
        deltas: list[str] = []
        r = providers.chat(requests.Session(), model(llm, "openai"), [{"role": "user", "content": "x"}], [],
                           {"stream": True}, None, on_delta=deltas.append)
    assert r.content == ANSWER and deltas == [ANSWER]


def test_stream_is_a_checked_param():
    providers.check_params("openai", {"stream": True})
    providers.check_params("anthropic", {"stream": False})
    with pytest.raises(ValueError, match="stream"):
        providers.check_params("openai", {"stream": "yes"})
    assert providers.allowed({"stream": True, "temperature": 0}, "openai") == {"temperature": 0}


# ---------------------------------------------------------------------------- inside PostgreSQL
def run_with_notices(dsn: str, sql: str, args: list[Any]) -> tuple[Any, list[tuple[float, str]], float]:
    """Run ``sql`` on a new connection collecting NOTICEs with their arrival time; returns
    (first value, [(time, message)], time the statement returned)."""
    notices: list[tuple[float, str]] = []
    with psycopg.connect(dsn, autocommit=True) as c:
        c.add_notice_handler(lambda d: notices.append((time.monotonic(), d.message_primary or "")))
        row = c.execute(sql, args).fetchone()
        return (row[0] if row else None), notices, time.monotonic()


@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini", "ollama"])
def test_send_message_streams_notices_before_the_call_ends_and_records_the_same_steps(conn, llm, dsn, provider):
    cid = setup_agent(conn, llm, provider=provider)
    cid2 = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    script = (tool_calls([("run_sql", {"query": "SELECT count(*) FROM weather WHERE rain > 0"}, "call_a")]),
              text(ANSWER))
    llm.script(*script)
    plain = conn.execute("SELECT pgagent.send_message(%s, 'rainy days?')", [cid]).fetchone()[0]
    llm.stream_delay_s = 0.15
    llm.script(*script)
    t0 = time.monotonic()
    streamed, notices, t_end = run_with_notices(
        dsn, "SELECT pgagent.send_message(%s, 'rainy days?', params => '{\"stream\": true}')", [cid2])
    assert streamed["answer"] == plain["answer"] == ANSWER
    assert "".join(m for _, m in notices) == ANSWER
    # the first words arrived while the answer's call was still streaming (12 words, 0.15 s apart)
    assert len(notices) >= 3 and notices[0][0] < t_end - 0.5, (t0, notices, t_end)
    assert step_payloads(conn, streamed["turn_id"]) == step_payloads(conn, plain["turn_id"])
    bodies = [r["body"] for r in llm.requests]
    if provider == "gemini":
        assert [r["path"].rsplit(":", 1)[1] for r in llm.requests] == ["generateContent"] * 2 + \
            ["streamGenerateContent"] * 2
    else:
        assert [b.get("stream") for b in bodies] == ([False, False] if provider == "ollama" else [None, None]) + \
            [True, True]


def test_run_turn_streams_and_a_models_params_turn_it_on(conn, llm, dsn):
    setup_agent(conn, llm)
    conn.execute("SELECT pgagent.update_model('scripted', params => '{\"stream\": true}')")
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    turn = conn.execute("SELECT pgagent.enqueue_message(%s, 'hi')", [cid]).fetchone()[0]
    llm.script(text("Hello there, how can I help?"))
    _, notices, _ = run_with_notices(dsn, "CALL pgagent.run_turn(%s)", [turn])
    assert "".join(m for _, m in notices) == "Hello there, how can I help?"
    assert conn.execute("SELECT status, answer FROM pgagent.turn WHERE turn_id = %s", [turn]).fetchone() == \
        ("completed", "Hello there, how can I help?")
    assert llm.requests[-1]["body"]["stream"] is True


def test_keyed_model_streams_through_the_definer_call(conn, llm, dsn):
    conn.execute("SELECT pgagent.set_secret('KEY', 'sk-stream-0123456789')")
    setup_agent(conn, llm, secret_name="KEY")
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(text("Streamed through the key holder."))
    r, notices, _ = run_with_notices(
        dsn, "SELECT pgagent.send_message(%s, 'hi', params => '{\"stream\": true}')", [cid])
    assert r["answer"] == "Streamed through the key holder."
    assert "".join(m for _, m in notices) == r["answer"]
    assert llm.requests[-1]["headers"]["authorization"] == "Bearer sk-stream-0123456789"


def test_a_broken_stream_is_a_recorded_retried_step(conn, llm, dsn):
    cid = setup_agent(conn, llm, max_retries=1)
    llm.script(raw("data: {broken\n\n", content_type="text/event-stream"), text("fine now"))
    r = conn.execute("SELECT pgagent.send_message(%s, 'hi', params => '{\"stream\": true}')", [cid]).fetchone()[0]
    assert r["status"] == "completed" and r["answer"] == "fine now"
    err = conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'error'",
                       [r["turn_id"]]).fetchone()[0]
    assert "event 1 of the stream is not JSON" in err["message"] and err["will_retry"] is True


def test_cancel_during_a_stream_keeps_the_turn(conn, llm, dsn):
    """pg_cancel_backend while the answer streams: the call stops, nothing half-written."""
    cid = setup_agent(conn, llm, timeout_ms=30000)
    llm.stream_delay_s = 0.3
    llm.script(text(" ".join(f"w{i}" for i in range(60))))
    worker = psycopg.connect(dsn, autocommit=True)
    pid, got = worker.info.backend_pid, []
    worker.add_notice_handler(lambda d: got.append(d.message_primary))
    err: list[BaseException] = []

    def run() -> None:
        try:
            worker.execute("SELECT pgagent.send_message(%s, 'long', params => '{\"stream\": true}')", [cid])
        except BaseException as e:
            err.append(e)

    th = threading.Thread(target=run)
    th.start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert got, "no streamed text arrived"
    conn.execute("SELECT pg_cancel_backend(%s)", [pid])
    th.join(10)
    worker.close()
    assert err and isinstance(err[0], psycopg.errors.QueryCanceled)
    assert conn.execute("SELECT count(*) FROM pgagent.turn").fetchone()[0] == 0   # rolled back whole
