"""Hostile-input unit tests (no PostgreSQL needed): input limits, provider hardening (total
deadline, malformed replies, text cleaning, request-parameter allowlist), self-contained tool
schemas and the published config schemas.

conftest.py puts python/ and tests/python on sys.path; none of its database fixtures are used.
"""

from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
from contextlib import contextmanager
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest
import requests

from pgagent_core import configschema, limits, loop, toolcalls, validation
from pgagent_core import providers
from pgagent_core.limits import MAX_TOKENS_PER_CALL
from pgagent_core.providers import (ALLOWED_PARAMS, ProviderError, Reply, ToolCall, anthropic, check_params,
                                    openai, post_json)
from pgagent_core.tools import function as function_tool
from pgagent_core.tools import http as http_tool
from pgagent_core.tools import sql as sql_tool
from scripted_llm import ScriptedLLM, embedding, raw, text, tool_calls, trickle


def nested_list(depth: int) -> Any:
    v: Any = []
    for _ in range(depth - 1):
        v = [v]
    return v


def nested_dict(depth: int) -> Any:
    v: Any = {}
    for _ in range(depth - 1):
        v = {"a": v}
    return v


def is_clean(s: Any) -> bool:
    if not isinstance(s, str):
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in s


def is_clean_or_none(s: Any) -> bool:
    return s is None or is_clean(s)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    yield s
    s.close()


@contextmanager
def serve(handler: Callable[[BaseHTTPRequestHandler], None], protocol: str = "HTTP/1.0") -> Iterator[tuple[str, list]]:
    """A loopback HTTP server calling ``handler(request)`` for every GET/POST; yields (base
    URL, list of recorded paths)."""
    hits: list[str] = []

    class H(BaseHTTPRequestHandler):
        protocol_version = protocol

        def log_message(self, *a: Any) -> None:
            pass

        def _any(self) -> None:
            hits.append(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            try:
                handler(self)
            except (BrokenPipeError, ConnectionResetError):
                pass

        do_GET = do_POST = _any

    class S(ThreadingHTTPServer):
        daemon_threads = True

    srv = S(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", hits
    finally:
        srv.shutdown()
        srv.server_close()


def chat_model(llm: ScriptedLLM, provider: str = "openai", timeout_ms: int = 5000) -> dict[str, Any]:
    base = llm.base_url if provider == "openai" else llm.anthropic_base_url
    return {"provider": provider, "model_name": "m", "base_url": base, "timeout_ms": timeout_ms}


USER = [{"role": "user", "content": "hi"}]


# =========================================================================== limits

class TestCheckDepth:
    def test_within_and_beyond(self) -> None:
        limits.check_depth(nested_list(32))
        limits.check_depth(nested_dict(32))
        limits.check_depth({"a": 1, "b": "x"}, max_depth=1)
        limits.check_depth(5, max_depth=0)
        with pytest.raises(ValueError) as ei:
            limits.check_depth(nested_list(33), what="params")
        assert str(ei.value) == "params is nested deeper than 32 levels"
        with pytest.raises(ValueError, match="value is nested deeper than 2 levels"):
            limits.check_depth({"a": {"b": (1,)}}, max_depth=2)

    @pytest.mark.parametrize("build", [nested_list, nested_dict])
    def test_ten_thousand_deep_is_a_value_error(self, build: Callable[[int], Any]) -> None:
        with pytest.raises(ValueError, match="nested deeper than 32 levels"):
            limits.check_depth(build(10_000))

    def test_wide_values_are_fine(self) -> None:
        limits.check_depth({str(i): [i, {"x": [1, 2]}] for i in range(20_000)})


class TestParseJson:
    def test_ok(self) -> None:
        assert limits.parse_json('{"a": [1, "é"]}') == {"a": [1, "é"]}
        assert limits.parse_json(b'{"a": 1}') == {"a": 1}

    def test_deep_text_is_a_value_error_not_recursion(self) -> None:
        for text in ("[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
            with pytest.raises(ValueError, match="arguments is nested deeper than 32 levels"):
                limits.parse_json(text, what="arguments")
        with pytest.raises(ValueError, match="nested deeper than 32 levels"):
            limits.parse_json(json.dumps(nested_list(33)))
        assert limits.parse_json(json.dumps(nested_list(33)), max_depth=40) == nested_list(33)

    def test_syntax_errors_stay_json_decode_errors(self) -> None:
        with pytest.raises(json.JSONDecodeError):
            limits.parse_json('{"a": ')

    @pytest.mark.parametrize("text", ["NaN", '{"a": Infinity}', "[-Infinity]", '{"a": 1e999}', "[-1.5e400]"])
    def test_non_standard_constants(self, text: str) -> None:
        with pytest.raises(ValueError, match="not valid JSON"):
            limits.parse_json(text)
        assert limits.parse_json(text, allow_nan=True) is not None


class TestCleanText:
    def test_nul_and_lone_surrogates(self) -> None:
        assert limits.clean_text("a\x00b") == "ab"
        assert limits.clean_text("\ud800") == "\ufffd"
        assert limits.clean_text("a\udc00b\ud800") == "a\ufffdb\ufffd"
        assert limits.clean_text("\x00\ud800\x00") == "\ufffd"
        assert limits.clean_text("\ud83d\ude00") == "\U0001F600"  # a pair written as two code units

    def test_passthrough(self) -> None:
        s = "plain ✓ text"
        assert limits.clean_text(s) is s
        assert limits.clean_text(None) is None
        assert limits.clean_text(5) == 5  # type: ignore[arg-type]

    def test_from_json_escapes(self) -> None:
        decoded = json.loads('"x\\u0000y\\ud800z"')
        assert limits.clean_text(decoded) == "xy\ufffdz"


class TestCleanJson:
    def test_recursive(self) -> None:
        value = {"k\x00": ["a\x00", ("b\ud800", 1, None, True), {"n": 1.5, "nan": math.nan, "inf": -math.inf}],
                 "ok": "fine"}
        out = limits.clean_json(value)
        assert out == {"k": ["a", ["b\ufffd", 1, None, True], {"n": 1.5, "nan": None, "inf": None}], "ok": "fine"}
        json.dumps(out, ensure_ascii=False, allow_nan=False).encode("utf-8")
        assert value["k\x00"][0] == "a\x00"  # input untouched

    def test_deep_value_is_iterative(self) -> None:
        deep = nested_list(10_000)
        deep_out = limits.clean_json(deep)
        d = 0
        while deep_out:
            deep_out, d = deep_out[0], d + 1
        assert d == 9_999

    def test_key_order_kept(self) -> None:
        assert list(limits.clean_json({"b": 1, "a": 2, "c": {"z": 1, "y": 2}})) == ["b", "a", "c"]


class TestCheckNumber:
    @pytest.mark.parametrize("value,kw", [
        (0, {"minimum": 0}), (2.5, {"minimum": 0, "maximum": 3}), (Decimal("0.15"), {"minimum": 0}),
        (Decimal("3"), {"integer": True}), (3, {"integer": True, "minimum": 1, "maximum": 3}), (-7.5, {}),
    ])
    def test_accepted(self, value: Any, kw: dict[str, Any]) -> None:
        limits.check_number("x", value, **kw)

    @pytest.mark.parametrize("value,kw", [
        (math.nan, {}), (math.inf, {}), (-math.inf, {}), (Decimal("NaN"), {}), (Decimal("Infinity"), {}),
        (True, {}), (False, {"integer": True}), ("5", {}), (None, {}), ([1], {}), ({}, {}),
        (-0.01, {"minimum": 0}), (-1, {"minimum": 0}), (11, {"maximum": 10}),
        (1.5, {"integer": True}), (2.0, {"integer": True}), (Decimal("1.0"), {"integer": True}),
    ])
    def test_refused(self, value: Any, kw: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="^price "):
            limits.check_number("price", value, **kw)

    def test_messages(self) -> None:
        with pytest.raises(ValueError) as ei:
            limits.check_number("timeout_ms", 0, minimum=1, maximum=3_600_000, integer=True)
        assert str(ei.value) == "timeout_ms must be an integer from 1 to 3600000, got 0"
        with pytest.raises(ValueError) as ei:
            limits.check_number("input_usd_per_mtok", math.nan, minimum=0)
        assert str(ei.value) == "input_usd_per_mtok must be a number of at least 0, got NaN"
        with pytest.raises(ValueError) as ei:
            limits.check_number("n", "7", maximum=5)
        assert str(ei.value) == 'n must be a number of at most 5, got "7"'

    def test_constant(self) -> None:
        assert MAX_TOKENS_PER_CALL == 10_000_000


# =========================================================================== providers: total deadline

class TestTotalDeadline:
    @pytest.mark.parametrize("provider", ["openai", "anthropic"])
    @pytest.mark.parametrize("headers", [False, True])
    def test_trickled_reply_is_cut_at_the_deadline(self, session: requests.Session, provider: str,
                                                   headers: bool) -> None:
        with ScriptedLLM() as llm:
            llm.script(trickle(text("a long enough answer"), byte_every_s=0.3, headers=headers))
            model = chat_model(llm, provider, timeout_ms=500)
            url = model["base_url"] + ("/chat/completions" if provider == "openai" else "/v1/messages")
            t0 = time.monotonic()
            with pytest.raises(ProviderError) as ei:
                providers.chat(session, model, USER, [], {}, None)
            elapsed = time.monotonic() - t0
        assert elapsed < 1.5
        e = ei.value
        assert (e.kind, e.retryable, e.status) == ("timeout", True, None)
        assert e.message == f"no complete reply from {url} within 500 ms"

    def test_trickled_embeddings_are_cut_too(self, session: requests.Session) -> None:
        with ScriptedLLM() as llm:
            llm.script_embeddings(trickle(embedding([1, 2]), byte_every_s=0.3))
            t0 = time.monotonic()
            with pytest.raises(ProviderError) as ei:
                providers.embed(session, chat_model(llm, timeout_ms=400), ["x"], {}, None)
        assert time.monotonic() - t0 < 1.5 and ei.value.kind == "timeout"

    def test_fast_trickle_within_budget_succeeds(self, session: requests.Session) -> None:
        with ScriptedLLM() as llm:
            llm.script(trickle(text("ok"), byte_every_s=0.001, headers=True))
            r = providers.chat(session, chat_model(llm, timeout_ms=5000), USER, [], {}, None)
        assert r.content == "ok" and r.latency_ms > 0

    def test_session_still_works_after_a_timeout_and_no_late_fire(self, session: requests.Session) -> None:
        with ScriptedLLM() as llm:
            llm.script(trickle(text("slow"), 0.3), text("one"), text("two"))
            with pytest.raises(ProviderError):
                providers.chat(session, chat_model(llm, timeout_ms=300), USER, [], {}, None)
            assert providers.chat(session, chat_model(llm, timeout_ms=300), USER, [], {}, None).content == "one"
            time.sleep(0.4)  # the first call's and the second call's watchdogs are long past their deadline
            assert providers.chat(session, chat_model(llm, timeout_ms=300), USER, [], {}, None).content == "two"
        pools = providers._transport(session).manager("http://x/").pool_classes_by_scheme
        assert pools == {"http": providers._HTTPPool, "https": providers._HTTPSPool}

    def test_keep_alive_connection_is_watched_too(self, session: requests.Session) -> None:
        calls = []

        def handler(h: BaseHTTPRequestHandler) -> None:
            calls.append(h.client_address)
            body = b'{"ok": true}'
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            if len(calls) == 1:
                h.wfile.write(body)
                return
            for i in range(len(body)):  # second request, same connection: trickle
                time.sleep(0.3)
                h.wfile.write(body[i:i + 1])

        with serve(handler, protocol="HTTP/1.1") as (base, _):
            assert post_json(session, base + "/a", {}, {}, 2000)[0] == {"ok": True}
            t0 = time.monotonic()
            with pytest.raises(ProviderError) as ei:
                post_json(session, base + "/b", {}, {}, 500)
            assert time.monotonic() - t0 < 1.5 and ei.value.kind == "timeout"
        assert len(calls) == 2 and calls[0] == calls[1]  # the second call reused the first one's connection

    def test_reply_without_content_length_is_capped(self, session: requests.Session,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(providers, "MAX_REPLY_BYTES", 1000)

        def handler(h: BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.end_headers()
            h.wfile.write(b'{"x": "' + b"a" * 5000 + b'"}')

        with serve(handler) as (base, _):
            with pytest.raises(ProviderError) as ei:
                post_json(session, base + "/big", {}, {}, 5000)
        assert (ei.value.kind, ei.value.retryable) == ("malformed", True)
        assert "larger than 1000 bytes" in ei.value.message

    def test_content_length_over_cap_is_refused_unread(self, session: requests.Session,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(providers, "MAX_REPLY_BYTES", 100)
        with ScriptedLLM() as llm:
            llm.script(text("x" * 500))
            with pytest.raises(ProviderError) as ei:
                providers.chat(session, chat_model(llm), USER, [], {}, None)
        assert ei.value.kind == "malformed" and "larger than 100 bytes" in ei.value.message

    @pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, '{"a": NaN}', '{"a": ' * 70 + "1" + "}" * 70,
                                      '{"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 1e999}}'])
    def test_hostile_json_bodies_are_malformed(self, session: requests.Session, body: str) -> None:
        with ScriptedLLM() as llm:
            llm.script(raw(body))
            with pytest.raises(ProviderError) as ei:
                providers.chat(session, chat_model(llm), USER, [], {}, None)
        assert (ei.value.kind, ei.value.retryable) == ("malformed", True)

    def test_error_status_still_reported(self, session: requests.Session) -> None:
        with ScriptedLLM() as llm:
            llm.script(raw('{"error": "x\\u0000y\x00"}', status=503))
            with pytest.raises(ProviderError) as ei:
                providers.chat(session, chat_model(llm), USER, [], {}, None)
        assert (ei.value.status, ei.value.retryable, ei.value.kind) == (503, True, "http_error")
        assert "\x00" not in ei.value.message


# =========================================================================== providers: malformed replies

def oa(message: Any = None, **top: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"choices": [{"message": {"role": "assistant", "content": "hi"} if message is None
                                          else message, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 3, "completion_tokens": 2}, "model": "m"}
    body.update(top)
    return body


def oa_call(**fn_or_call: Any) -> dict[str, Any]:
    call: dict[str, Any] = {"id": "c1", "type": "function", "function": {"name": "t", "arguments": "{}"}}
    for k, v in fn_or_call.items():
        if k in ("name", "arguments"):
            call["function"][k] = v
        else:
            call[k] = v
    return oa({"content": None, "tool_calls": [call]})


OPENAI_BAD = [
    ({"choices": {"0": {}}}, "choices"),
    ({"choices": ["x"]}, "choices[0]"),
    (oa([]), "choices[0].message"),
    (oa({"content": 5}), "choices[0].message.content"),
    (oa({"content": True}), "choices[0].message.content"),
    (oa({"content": {"text": "x"}}), "choices[0].message.content"),
    (oa({"content": ["x"]}), "choices[0].message.content[0]"),
    (oa({"content": [{"type": "text", "text": 5}]}), "choices[0].message.content[0].text"),
    (oa({"content": [{"text": "x"}]}), "choices[0].message.content[0].type"),
    (oa({"content": None, "tool_calls": "run"}), "choices[0].message.tool_calls"),
    (oa({"content": None, "tool_calls": {"a": 1}}), "choices[0].message.tool_calls"),
    (oa({"content": None, "tool_calls": ["run_sql"]}), "choices[0].message.tool_calls[0]"),
    (oa({"content": None, "tool_calls": [{"id": "x", "function": "run_sql"}]}), "tool_calls[0].function"),
    (oa_call(name=5), "function.name"),
    (oa_call(name=""), "function.name"),
    (oa_call(name="\x00"), "function.name"),
    (oa_call(arguments=[1, 2]), "function.arguments"),
    (oa_call(arguments=5), "function.arguments"),
    (oa_call(arguments=True), "function.arguments"),
    (oa_call(id=5), "tool_calls[0].id"),
    (oa_call(id={"x": 1}), "tool_calls[0].id"),
    (oa_call(type="custom"), "tool_calls[0].type"),
    (oa(usage="12"), "usage"),
    (oa(usage=[1, 2]), "usage"),
    (oa(usage={"prompt_tokens": "12"}), "usage.prompt_tokens"),
    (oa(usage={"prompt_tokens": True}), "usage.prompt_tokens"),
    (oa(usage={"prompt_tokens": -1}), "usage.prompt_tokens"),
    (oa(usage={"prompt_tokens": 1.5}), "usage.prompt_tokens"),
    (oa(usage={"completion_tokens": MAX_TOKENS_PER_CALL + 1}), "usage.completion_tokens"),
    (oa(usage={"completion_tokens": 10**30}), "usage.completion_tokens"),
    (oa(model=5), "model"),
    (oa({"content": "x", "reasoning_content": ["a"]}), "reasoning_content"),
    (oa({"content": "x", "reasoning": 1}), "reasoning"),
    ({"choices": [{"message": {"content": "x"}, "finish_reason": 1}]}, "finish_reason"),
]


class TestOpenAIMalformed:
    @pytest.mark.parametrize("data,field", OPENAI_BAD)
    def test_wrong_types_are_malformed_and_retryable(self, data: dict[str, Any], field: str) -> None:
        with pytest.raises(ProviderError) as ei:
            openai.parse_response(data)
        e = ei.value
        assert (e.kind, e.retryable) == ("malformed", True)
        assert field in e.message and e.message.startswith("malformed reply: ")

    def test_not_an_object(self) -> None:
        for data in ([], "x", None, 5):
            with pytest.raises(ProviderError) as ei:
                openai.parse_response(data)  # type: ignore[arg-type]
            assert ei.value.kind == "malformed"

    def test_content_parts_are_joined(self) -> None:
        r = openai.parse_response(oa({"content": [{"type": "text", "text": "a\x00"}, {"type": "image_url", "x": 1},
                                                  {"type": "text", "text": "b"}]}))
        assert r.content == "ab"
        assert openai.parse_response(oa({"content": []})).content is None

    def test_defaults_for_missing_optional_fields(self) -> None:
        r = openai.parse_response({"choices": [{"message": {"tool_calls": None}}], "usage": None})
        assert (r.content, r.tool_calls, r.finish_reason, r.prompt_tokens, r.completion_tokens, r.model) == \
            (None, [], None, 0, 0, None)

    def test_object_arguments_are_cleaned_before_encoding(self) -> None:
        r = openai.parse_response(oa_call(arguments={"q": "a\x00b", "k\ud800": [1]}))
        assert json.loads(r.tool_calls[0].arguments) == {"q": "ab", "k\ufffd": [1]}


ANTHROPIC_BAD = [
    ({"content": "hi"}, "content"),
    ({"content": {"type": "text"}}, "content"),
    ({"content": ["hi"]}, "content[0]"),
    ({"content": [{"text": "hi"}]}, "content[0].type"),
    ({"content": [{"type": 5}]}, "content[0].type"),
    ({"content": [{"type": "text", "text": 5}]}, "content[0].text"),
    ({"content": [{"type": "text"}]}, "content[0].text"),
    ({"content": [{"type": "thinking", "thinking": None}]}, "content[0].thinking"),
    ({"content": [{"type": "tool_use", "name": "t", "input": "{}"}]}, "content[0].input"),
    ({"content": [{"type": "tool_use", "name": "t", "input": [1]}]}, "content[0].input"),
    ({"content": [{"type": "tool_use", "input": {}}]}, "content[0].name"),
    ({"content": [{"type": "tool_use", "name": 7}]}, "content[0].name"),
    ({"content": [{"type": "tool_use", "name": "t", "id": 7}]}, "content[0].id"),
    ({"content": [], "usage": "3"}, "usage"),
    ({"content": [], "usage": {"input_tokens": "3"}}, "usage.input_tokens"),
    ({"content": [], "usage": {"output_tokens": -1}}, "usage.output_tokens"),
    ({"content": [], "usage": {"output_tokens": False}}, "usage.output_tokens"),
    ({"content": [], "stop_reason": 5}, "stop_reason"),
    ({"content": [], "model": ["m"]}, "model"),
]


class TestAnthropicMalformed:
    @pytest.mark.parametrize("data,field", ANTHROPIC_BAD)
    def test_wrong_types_are_malformed_and_retryable(self, data: dict[str, Any], field: str) -> None:
        with pytest.raises(ProviderError) as ei:
            anthropic.parse_response(data)
        assert (ei.value.kind, ei.value.retryable) == ("malformed", True)
        assert field in ei.value.message

    def test_unknown_block_types_are_skipped(self) -> None:
        r = anthropic.parse_response({"content": [{"type": "redacted_thinking", "data": "x"},
                                                  {"type": "server_tool_use", "id": 5},
                                                  {"type": "text", "text": "ok"}]})
        assert r.content == "ok" and r.tool_calls == []

    def test_strings_are_cleaned(self) -> None:
        r = anthropic.parse_response({
            "model": "m\x00", "stop_reason": "end_turn",
            "content": [{"type": "thinking", "thinking": "t\ud800"}, {"type": "text", "text": "a\x00b"},
                        {"type": "tool_use", "id": "i\x00d", "name": "t\x00ool", "input": {"q": "x\x00\udfff"}}]})
        assert (r.content, r.reasoning, r.model) == ("ab", "t\ufffd", "m")
        c = r.tool_calls[0]
        assert (c.id, c.name, json.loads(c.arguments)) == ("id", "tool", {"q": "x\ufffd"})


class TestCleanRepliesEndToEnd:
    """A reply body with \\u0000 and \\ud800 escapes parses to clean strings."""

    OPENAI_BODY = (
        '{"model": "m\\u0000", "choices": [{"finish_reason": "tool_calls\\ud800", "message": {'
        '"content": "he\\u0000llo \\ud800 world", "reasoning_content": "r\\u0000",'
        '"tool_calls": [{"id": "c\\u00001", "type": "function", "function": {"name": "run\\u0000_sql",'
        '"arguments": "{\\"q\\": \\"a\\u0000b\\ud800\\", \\"esc\\": \\"x\\\\u0000y\\\\ud800\\"}"}}]}}],'
        '"usage": {"prompt_tokens": 1, "completion_tokens": 2}}')

    def test_openai(self, session: requests.Session) -> None:
        with ScriptedLLM() as llm:
            llm.script(raw(self.OPENAI_BODY))
            r = providers.chat(session, chat_model(llm), USER, [], {}, None)
        assert r.content == "hello \ufffd world" and r.reasoning == "r" and r.model == "m"
        assert r.finish_reason == "tool_calls\ufffd"
        c = r.tool_calls[0]
        assert (c.id, c.name) == ("c1", "run_sql")
        assert is_clean(c.arguments)
        # the arguments text itself still holds escapes; check_call cleans the decoded values
        tool = {"name": "run_sql", "parameters": {"type": "object"}}
        args, problem = validation.check_call([tool], tool, c.name, c.arguments)
        assert problem is None and args == {"q": "ab\ufffd", "esc": "xy\ufffd"}
        json.dumps(args, ensure_ascii=False).encode("utf-8")

    def test_anthropic(self, session: requests.Session) -> None:
        body = ('{"content": [{"type": "text", "text": "a\\u0000\\ud800"}, {"type": "tool_use", "id": "t\\u0000",'
                '"name": "n\\ud800", "input": {"k\\u0000": "v\\udc00"}}], "stop_reason": "tool_use",'
                '"usage": {"input_tokens": 5, "output_tokens": 1}}')
        with ScriptedLLM() as llm:
            llm.script(raw(body))
            r = providers.chat(session, chat_model(llm, "anthropic"), USER, [], {}, None)
        assert r.content == "a\ufffd" and r.finish_reason == "tool_calls"
        assert (r.tool_calls[0].id, r.tool_calls[0].name) == ("t", "n\ufffd")
        assert json.loads(r.tool_calls[0].arguments) == {"k": "v\ufffd"}


# =========================================================================== providers: embeddings parser

class TestEmbeddingsParser:
    def test_ok_and_reordered_by_index(self) -> None:
        vecs, used = providers.parse_embeddings({"data": [{"index": 1, "embedding": [3, 4]},
                                                          {"index": 0, "embedding": [1.5, 2]}],
                                                 "usage": {"prompt_tokens": 4}}, 2)
        assert vecs == [[1.5, 2.0], [3.0, 4.0]] and used == 4
        assert all(isinstance(x, float) for v in vecs for x in v)

    @pytest.mark.parametrize("data,fragment", [
        ({"data": "x"}, "data must be an array"),
        ({"data": [{"embedding": [1]}]}, "1 vectors for 2 inputs"),
        ({"data": [{"embedding": "AAAA"}, {"embedding": [1]}]}, "data[0].embedding"),
        ({"data": [{"embedding": []}, {"embedding": [1]}]}, "data[0].embedding"),
        ({"data": [{"embedding": [1, "2"]}, {"embedding": [1, 2]}]}, "finite numbers"),
        ({"data": [{"embedding": [1, True]}, {"embedding": [1, 2]}]}, "finite numbers"),
        ({"data": [{"embedding": [1, math.nan]}, {"embedding": [1, 2]}]}, "finite numbers"),
        ({"data": [{"embedding": [1, math.inf]}, {"embedding": [1, 2]}]}, "finite numbers"),
        ({"data": [{"embedding": [1, 2]}, {"embedding": [1]}]}, "dimensions"),
        ({"data": [{"index": 0, "embedding": [1]}, {"index": 0, "embedding": [2]}]}, "index"),
        ({"data": [{"index": "0", "embedding": [1]}, {"index": 1, "embedding": [2]}]}, "index"),
        ({"data": ["x", {"embedding": [2]}]}, "data[0]"),
        ({"data": [{"embedding": [1]}, {"embedding": [2]}], "usage": {"prompt_tokens": "9"}}, "prompt_tokens"),
    ])
    def test_malformed(self, data: dict[str, Any], fragment: str) -> None:
        with pytest.raises(ProviderError) as ei:
            providers.parse_embeddings(data, 2)
        assert (ei.value.kind, ei.value.retryable) == ("malformed", True) and fragment in ei.value.message

    def test_embed_end_to_end(self, session: requests.Session) -> None:
        with ScriptedLLM() as llm:
            llm.script_embeddings(raw('{"data": [{"embedding": [1, "x"]}]}'), embedding([1, 0]))
            with pytest.raises(ProviderError) as ei:
                providers.embed(session, chat_model(llm), ["a"], {}, None)
            assert ei.value.kind == "malformed" and "malformed embeddings reply from" in ei.value.message
            vecs, _, _ = providers.embed(session, chat_model(llm), ["a"],
                                         {"dimensions": 2, "input": ["evil"], "model": "x",
                                          "encoding_format": "base64", "user": None}, None)
            body = llm.requests[-1]["body"]
        assert vecs == [[1.0, 0.0]]
        assert body == {"model": "m", "input": ["a"], "dimensions": 2}


# =========================================================================== providers: request parameters

class TestCheckParams:
    def test_documented_lists(self) -> None:
        assert set(ALLOWED_PARAMS) == {"openai", "anthropic", "gemini", "ollama", "openai.embedding"}
        forbidden = {"messages", "model", "tools", "response_format", "stream_options", "n", "system",
                     "functions", "function_call", "input", "encoding_format", "logprobs"}
        for names in ALLOWED_PARAMS.values():
            assert not names & forbidden
        # stream is pgagent's own switch (chat only): valid in params, never copied into a body
        from pgagent_core.providers import CONTROL_PARAMS, allowed
        assert CONTROL_PARAMS == {"stream"} and "stream" not in ALLOWED_PARAMS["openai.embedding"]
        assert "stream" not in allowed({"stream": True, "stream_options": {"x": 1}}, "openai")
        assert {"temperature", "top_p", "max_tokens", "stop", "seed"} <= ALLOWED_PARAMS["openai"]
        assert {"temperature", "top_k", "max_tokens", "stop_sequences", "metadata"} <= ALLOWED_PARAMS["anthropic"]
        assert "thinking" not in ALLOWED_PARAMS["anthropic"] and "tool_choice" not in ALLOWED_PARAMS["anthropic"]
        assert ALLOWED_PARAMS["openai.embedding"] == {"dimensions", "user", "input_type"}
        assert {"thinking_budget", "tool_choice", "max_tokens"} <= ALLOWED_PARAMS["gemini"]
        assert {"num_ctx", "keep_alive", "think", "max_tokens"} <= ALLOWED_PARAMS["ollama"]
        assert "num_ctx" not in ALLOWED_PARAMS["gemini"] and "thinking_budget" not in ALLOWED_PARAMS["ollama"]

    @pytest.mark.parametrize("provider,params", [
        ("openai", {}),
        ("openai", {"temperature": 0.2, "top_p": 1, "max_tokens": 99, "seed": None, "stop": ["\n\n", "END"],
                    "presence_penalty": -1.5, "frequency_penalty": 2, "logit_bias": {"50256": -100},
                    "parallel_tool_calls": False, "tool_choice": "required", "reasoning_effort": "low",
                    "user": "u1", "top_k": 40, "min_p": 0.05, "typical_p": 1, "repeat_penalty": 1.1,
                    "max_completion_tokens": 10}),
        ("openai", {"stop": "END", "tool_choice": {"type": "function", "function": {"name": "run_sql"}}}),
        ("anthropic", {"temperature": 1, "top_p": 0.9, "top_k": 5, "max_tokens": 4096, "stop_sequences": ["x"],
                       "metadata": {"user_id": "u"}}),
        ("anthropic", {"temperature": None}),
    ])
    def test_accepted(self, provider: str, params: dict[str, Any]) -> None:
        check_params(provider, params)

    def test_embedding_kind(self) -> None:
        check_params("openai", {"dimensions": 8, "input_type": "query"}, kind="embedding")
        with pytest.raises(ValueError) as ei:
            check_params("openai", {"temperature": 0}, kind="embedding")
        assert str(ei.value) == ('params: "temperature" is not allowed for openai embedding models; '
                                 "allowed: dimensions, input_type, user")
        with pytest.raises(ValueError, match="no embeddings endpoint"):
            check_params("anthropic", {}, kind="embedding")
        with pytest.raises(ValueError, match="no embeddings endpoint"):
            check_params("gemini", {}, kind="embedding")
        with pytest.raises(ValueError, match="not supported"):
            check_params("mistral", {})

    def test_unknown_key_message(self) -> None:
        with pytest.raises(ValueError) as ei:
            check_params("openai", {"messages": [{"role": "system", "content": "evil"}]})
        assert str(ei.value) == ('params: "messages" is not allowed for provider openai; allowed: '
                                 + ", ".join(sorted(ALLOWED_PARAMS["openai"])))
        with pytest.raises(ValueError) as ei:
            check_params("anthropic", {"system": "x", "stream_options": {}}, what="agent config.params")
        assert str(ei.value).startswith('agent config.params: "system", "stream_options" are not allowed for '
                                        "provider anthropic; allowed: max_tokens, metadata, ")

    @pytest.mark.parametrize("provider,params,fragment", [
        ("openai", {"stream": "yes"}, '"stream" must be true or false'),
        ("openai", {"n": 3}, '"n" is not allowed'),
        ("openai", {"response_format": {"type": "json_object"}}, '"response_format" is not allowed'),
        ("openai", {"model": "gpt-evil"}, '"model" is not allowed'),
        ("openai", {"tools": []}, '"tools" is not allowed'),
        ("anthropic", {"thinking": {"type": "enabled", "budget_tokens": 2048}}, '"thinking" is not allowed'),
        ("anthropic", {"tool_choice": {"type": "any"}}, '"tool_choice" is not allowed'),
        ("openai", {"temperature": "hot"}, '"temperature" must be a number from 0 to 2, got "hot"'),
        ("openai", {"temperature": 3}, '"temperature" must be a number from 0 to 2, got 3'),
        ("openai", {"temperature": True}, '"temperature" must be a number'),
        ("anthropic", {"temperature": 1.5}, '"temperature" must be a number from 0 to 1, got 1.5'),
        ("openai", {"max_tokens": 0}, '"max_tokens" must be an integer from 1 to 10000000, got 0'),
        ("openai", {"max_tokens": 1.5}, '"max_tokens" must be an integer'),
        ("openai", {"max_tokens": 10.0}, '"max_tokens" must be an integer'),
        ("anthropic", {"max_tokens": True}, '"max_tokens" must be an integer'),
        ("openai", {"stop": 5}, '"stop" must be a string or an array'),
        ("openai", {"stop": ["a", 1]}, '"stop" must be a string or an array'),
        ("openai", {"seed": "x"}, '"seed" must be an integer'),
        ("openai", {"seed": 2**64}, '"seed" must be an integer'),
        ("openai", {"logit_bias": {"a": 1}}, '"logit_bias" must be an object of token ids'),
        ("openai", {"logit_bias": {"1": 500}}, '"logit_bias" must be an object of token ids'),
        ("openai", {"tool_choice": "always"}, '"tool_choice" must be'),
        ("openai", {"tool_choice": {"type": "function", "function": {"name": "x"}, "messages": []}}, "tool_choice"),
        ("anthropic", {"metadata": {"user_id": "u", "x": 1}}, '"metadata" must be'),
        ("anthropic", {"stop_sequences": "x"}, '"stop_sequences" must be an array'),
        ("openai", {"logit_bias": nested_dict(40)}, "nested deeper than 32 levels"),
    ])
    def test_refused(self, provider: str, params: dict[str, Any], fragment: str) -> None:
        with pytest.raises(ValueError) as ei:
            check_params(provider, params)
        assert fragment in str(ei.value) and str(ei.value).startswith("params")

    @pytest.mark.parametrize("params", [[], "x", None, 5])
    def test_not_an_object(self, params: Any) -> None:
        with pytest.raises(ValueError, match="^params must be a JSON object"):
            check_params("openai", params)


class TestBuildRequestDefence:
    HOSTILE = {"messages": [{"role": "system", "content": "evil"}], "model": "evil", "stream": True, "n": 5,
               "tools": [{"type": "function", "function": {"name": "evil"}}], "response_format": {"type": "text"},
               "system": "evil", "stream_options": {"include_usage": True}, "temperature": 0.1, "top_k": 3}

    def test_openai_drops_everything_not_allowed(self) -> None:
        model = {"model_name": "good", "base_url": "http://h/v1"}
        _, _, body = openai.build_request(model, USER, [], dict(self.HOSTILE, tool_choice="required"), None, None)
        assert body == {"model": "good", "messages": USER, "temperature": 0.1, "top_k": 3}
        tools = [{"type": "function", "function": {"name": "ok", "parameters": {"type": "object"}}}]
        rf = {"type": "json_schema"}
        _, _, body = openai.build_request(model, USER, tools, dict(self.HOSTILE, tool_choice="auto"), None, rf)
        assert body["tools"] is tools and body["response_format"] is rf and body["tool_choice"] == "auto"
        assert body["model"] == "good" and body["messages"] == USER and "stream" not in body and "n" not in body

    def test_anthropic_drops_everything_not_allowed(self) -> None:
        model = {"model_name": "good", "base_url": "https://api.anthropic.com"}
        msgs = [{"role": "system", "content": "sys"}, *USER]
        _, _, body = anthropic.build_request(model, msgs, [], dict(self.HOSTILE, thinking={"type": "enabled"}),
                                             None, None)
        assert body == {"model": "good", "messages": USER, "system": "sys", "top_k": 3, "temperature": 0.1,
                        "max_tokens": anthropic.DEFAULT_MAX_TOKENS}

    def test_anthropic_history_with_deep_arguments(self) -> None:
        model = {"model_name": "m", "base_url": "https://api.anthropic.com"}
        msgs = [*USER, {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "function": {"name": "t", "arguments": "[" * 50_000 + "]" * 50_000}}]}]
        _, _, body = anthropic.build_request(model, msgs, [], {}, None, None)
        assert body["messages"][1]["content"][0]["input"] == {}


# =========================================================================== validation

class TestSelfContainedSchemas:
    @pytest.mark.parametrize("schema", [
        {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/x"}}},
        {"type": "object", "$ref": "https://example.com/s.json"},
        {"type": "object", "properties": {"a": {"items": {"anyOf": [{"$ref": "other.json#/x"}]}}}},
        {"type": "object", "$defs": {"x": {"$dynamicRef": "http://evil/x#meta"}}},
        {"type": "object", "$defs": {"x": {"$recursiveRef": "file:///etc/passwd"}}},
        {"type": "object", "$ref": "//evil.example/x"},
    ])
    def test_remote_references_refused(self, schema: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="must be self-contained: .* is not a local reference"):
            validation.check_schema(schema)

    def test_local_references_allowed(self) -> None:
        validation.check_schema({"type": "object", "$defs": {"city": {"type": "string"}},
                                 "properties": {"a": {"$ref": "#/$defs/city"}, "b": {"$ref": "#"}}})
        validation.check_schema({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                                 "definitions": {"n": {"type": "integer"}}, "properties": {"a": {"$ref": "#/definitions/n"}}})

    def test_absolute_id_and_unknown_schema_refused(self) -> None:
        with pytest.raises(ValueError, match=r"\$id .* is an absolute URI"):
            validation.check_schema({"type": "object", "$id": "http://evil.example/root"})
        with pytest.raises(ValueError, match=r"\$schema .* is not a known JSON Schema draft"):
            validation.check_schema({"type": "object", "$schema": "http://127.0.0.1:9/meta"})
        with pytest.raises(ValueError, match=r"\$schema"):
            validation.check_schema({"type": "object", "$schema": {"x": 1}})

    def test_deep_schema_refused(self) -> None:
        deep: dict[str, Any] = {"type": "object"}
        for _ in range(40):
            deep = {"type": "object", "properties": {"a": deep}}
        with pytest.raises(ValueError, match="parameters is nested deeper than 32 levels"):
            validation.check_schema(deep)

    def test_property_named_ref_is_not_a_reference(self) -> None:
        validation.check_schema({"type": "object", "properties": {"$ref": {"type": "string"}}})

    @pytest.mark.parametrize("draft", [None, "http://json-schema.org/draft-07/schema#",
                                       "https://json-schema.org/draft/2019-09/schema"])
    def test_validation_never_fetches(self, draft: str | None) -> None:
        def handler(h: BaseHTTPRequestHandler) -> None:
            body = b'{"type": "string"}'
            h.send_response(200)
            h.send_header("Content-Type", "application/schema+json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        with serve(handler) as (base, hits):
            params: dict[str, Any] = {"type": "object", "properties": {"a": {"$ref": f"{base}/x"},
                                                                       "b": {"$ref": "relative.json"}}}
            if draft:
                params["$schema"] = draft
            with pytest.raises(ValueError):
                validation.check_schema(params)
            tool = {"name": "t", "parameters": params}  # as if stored before check_schema refused it
            for args in ('{"a": 1}', '{"b": 1}'):
                got, problem = validation.check_call([tool], tool, "t", args)
                assert got is None and "cannot be checked" in problem and "misconfigured" in problem
            time.sleep(0.1)
            assert hits == []


class TestCheckCallHostile:
    TOOL = {"name": "t", "parameters": {"type": "object"}}

    @pytest.mark.parametrize("depth", [33, 10_000, 200_000])
    def test_deep_arguments_are_a_message(self, depth: int) -> None:
        args, problem = validation.check_call([self.TOOL], self.TOOL, "t", '{"a":' + "[" * depth + "]" * depth + "}")
        assert args is None and problem == "arguments for t is nested deeper than 32 levels; send a flatter JSON object"

    @pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": [1, -Infinity]}', '{"a": 1e999}'])
    def test_non_finite_numbers_are_a_message(self, text: str) -> None:
        args, problem = validation.check_call([self.TOOL], self.TOOL, "t", text)
        assert args is None and "arguments for t is not valid JSON" in problem and problem.endswith("send a JSON object")

    def test_arguments_are_cleaned(self) -> None:
        args, problem = validation.check_call([self.TOOL], self.TOOL, "t", '{"a\\u0000": "b\\ud800"}')
        assert problem is None and args == {"a": "b\ufffd"}

    def test_toolcalls_parsers_survive_deep_content(self) -> None:
        deep = "[" * 100_000 + "]" * 100_000
        assert toolcalls.recover_from_text(deep, {"t"}, "p") == []
        assert toolcalls.parse_action(deep, {"t"}, "p") == ([], deep)
        tagged = "<tool_call>" + '{"name": "t", "arguments": ' + "[" * 5000 + "]" * 5000 + "}</tool_call>"
        assert toolcalls.recover_from_text(tagged, {"t"}, "p") == []


# =========================================================================== configschema

class TestConfigSchema:
    def test_every_schema_is_valid_and_closed(self) -> None:
        for name, schema in configschema.SCHEMAS.items():
            configschema.StrictValidator.check_schema(schema)
            assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
            assert schema["type"] == "object"
            if name != "persona.traits":
                assert schema["additionalProperties"] is False
                for key, prop in schema["properties"].items():
                    assert prop.get("x-expected"), (name, key)
            json.dumps(schema)
        assert set(configschema.SCHEMAS) == {"agent.config", "tool.sql", "tool.function", "tool.http",
                                             "tool.memory", "tool.knowledge", "tool.graph", "tool.agent", "tool.handoff", "team.config",
                                             "persona.traits", "params.openai", "params.anthropic", "params.gemini", "params.ollama",
                                             "params.openai.embedding"}

    def test_schema_returns_a_copy(self) -> None:
        s = configschema.schema("agent.config")
        s["properties"].clear()
        assert configschema.SCHEMAS["agent.config"]["properties"]
        with pytest.raises(ValueError, match="no config schema 'nope'; valid: agent.config"):
            configschema.schema("nope")
        with pytest.raises(ValueError, match="no config schema"):
            configschema.validate("nope", {})

    def test_in_step_with_the_code(self) -> None:
        agent = configschema.SCHEMAS["agent.config"]["properties"]
        assert set(loop.DEFAULTS) <= set(agent)
        for key, default in loop.DEFAULTS.items():
            assert agent[key]["default"] == default, key
        http = configschema.SCHEMAS["tool.http"]["properties"]
        assert set(http) == http_tool.CONFIG_KEYS
        assert configschema._HTTP_METHODS == http_tool.METHODS
        assert http["max_bytes"]["maximum"] == http_tool.MAX_MAX_BYTES
        assert http["max_redirects"]["maximum"] == http_tool.MAX_MAX_REDIRECTS
        assert configschema.SCHEMAS["tool.sql"]["properties"]["max_rows"]["default"] == sql_tool.DEFAULT_MAX_ROWS
        assert configschema.SCHEMAS["tool.function"]["properties"]["run_as"]["default"] == function_tool.DEFAULT_RUN_AS
        for key in ("openai", "anthropic", "openai.embedding"):
            assert set(configschema.SCHEMAS[f"params.{key}"]["properties"]) == ALLOWED_PARAMS[key]

    # ---------------------------------------------------------------- agent.config

    @pytest.mark.parametrize("config", [
        {}, {"max_steps": 1}, {"max_steps": 100, "max_tool_errors": 0, "history_turns": 1000, "retry_backoff_ms": 0,
                               "max_result_chars": 100, "auto_approve": True, "allow_self_approval": False,
                               "params": {"temperature": 0}},
        {"auto_approve": ["run_sql", "get_weather"]}, {"auto_approve": []}, {"max_result_chars": 1_000_000},
    ])
    def test_agent_ok(self, config: dict[str, Any]) -> None:
        configschema.validate("agent.config", config)

    def test_agent_typo(self) -> None:
        with pytest.raises(ValueError) as ei:
            configschema.validate("agent.config", {"max_step": 3})
        assert str(ei.value) == ('agent config: unknown key "max_step"; valid keys: allow_self_approval, auto_approve, '
                                 "budget_completion_tokens, compact_at, compact_keep_turns, grounding_retries, history_turns, hook_timeout_ms, "
                                 "knowledge, knowledge_k, max_result_chars, max_running_turns, max_steps, max_tool_errors, memory, memory_k, "
                                 "memory_min_similarity, memory_model, params, require_tool, response_schema, "
                                 "response_schema_retries, retry_backoff_ms, retry_base_ms, retry_max, self_check")

    @pytest.mark.parametrize("config,message", [
        ({"auto_approve": "yes"}, 'agent config: auto_approve must be a boolean or an array of tool names, got "yes"'),
        ({"auto_approve": ["a", "a"]}, "agent config: auto_approve must be a boolean or an array of tool names"),
        ({"auto_approve": [1]}, "agent config: auto_approve must be"),
        ({"max_steps": 0}, "agent config: max_steps must be an integer from 1 to 100, got 0"),
        ({"max_steps": 101}, "agent config: max_steps must be an integer from 1 to 100, got 101"),
        ({"max_steps": "ten"}, 'agent config: max_steps must be an integer from 1 to 100, got "ten"'),
        ({"max_steps": 8.0}, "agent config: max_steps must be an integer from 1 to 100, got 8.0"),
        ({"max_steps": True}, "agent config: max_steps must be an integer"),
        ({"max_steps": None}, "agent config: max_steps must be an integer"),
        ({"retry_backoff_ms": 60001}, "agent config: retry_backoff_ms must be an integer from 0 to 60000"),
        ({"max_result_chars": 99}, "agent config: max_result_chars must be an integer from 100 to 1000000"),
        ({"allow_self_approval": "true"}, 'agent config: allow_self_approval must be true or false, got "true"'),
        ({"params": []}, "agent config: params must be an object of request parameters, got []"),
        ({"history_turns": 3, "max_tool_errors": -1}, "agent config: max_tool_errors must be an integer from 0 to 100"),
    ])
    def test_agent_wrong_types(self, config: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError) as ei:
            configschema.validate("agent.config", config)
        assert str(ei.value).startswith(message)

    def test_agent_not_an_object_or_too_deep(self) -> None:
        with pytest.raises(ValueError, match=r"^agent config must be a JSON object, got \[\]"):
            configschema.validate("agent.config", [])
        with pytest.raises(ValueError, match="^agent config is nested deeper than 32 levels"):
            configschema.validate("agent.config", {"params": nested_dict(40)})
        with pytest.raises(ValueError, match="^cfg: unknown key"):
            configschema.validate("agent.config", {"x": 1}, what="cfg")

    # ---------------------------------------------------------------- tools

    @pytest.mark.parametrize("name,config", [
        ("tool.sql", {}), ("tool.sql", {"query": "SELECT * FROM t WHERE id = $1", "args": ["id"]}),
        ("tool.sql", {"query": "select 1", "max_rows": 1, "search_path": "demo, public"}),
        ("tool.sql", {"query": None}), ("tool.sql", {"args": []}), ("tool.sql", {"max_rows": 100000}),
        ("tool.function", {"function": "lookup"}), ("tool.function", {"function": "s.fn", "run_as": "r"}),
        ("tool.http", {}), ("tool.http", {"url": "https://api.example.com/{x}", "method": "post",
                                          "headers": {"Accept": "a/b"}, "body_arg": "x", "max_bytes": 10,
                                          "max_redirects": 0}),
        ("tool.http", {"url": "HTTP://h/", "method": "Delete", "max_bytes": None, "body_arg": None}),
    ])
    def test_tool_ok(self, name: str, config: dict[str, Any]) -> None:
        configschema.validate(name, config)
        {"tool.sql": sql_tool, "tool.function": function_tool, "tool.http": http_tool}[name].check_config(config)

    @pytest.mark.parametrize("name,config,message", [
        ("tool.sql", {"querry": "x"}, 'config: unknown key "querry"; valid keys: args, autofix, examples, hints, max_rows, query, schema, search_path'),
        ("tool.sql", {"query": ""}, "config.query must be a non-empty SQL query"),
        ("tool.sql", {"query": "  "}, "config.query must be a non-empty SQL query"),
        ("tool.sql", {"args": "id"}, 'config.args must be an array of argument names, got "id"'),
        ("tool.sql", {"args": None}, "config.args must be an array of argument names, got null"),
        ("tool.sql", {"max_rows": 0}, "config.max_rows must be an integer from 1 to 100000, got 0"),
        ("tool.sql", {"max_rows": 1.5}, "config.max_rows must be an integer"),
        ("tool.sql", {"search_path": ["public"]}, "config.search_path must be a string"),
        ("tool.function", {}, "config.function is required: a non-empty string naming the SQL function"),
        ("tool.function", {"fn": "x"}, 'config: unknown key "fn"; valid keys: function, run_as'),
        ("tool.function", {"function": ""}, "config.function must be a non-empty string"),
        ("tool.function", {"function": "f", "run_as": None}, "config.run_as must be a role name, got null"),
        ("tool.http", {"timeout": 5}, 'config: unknown key "timeout"; valid keys: body_arg, headers, max_bytes, '
                                      "max_redirects, method, url"),
        ("tool.http", {"method": "TRACE"}, 'config.method must be one of GET, HEAD, POST, PUT, PATCH, DELETE, got '
                                           '"TRACE"'),
        ("tool.http", {"url": "ftp://x/"}, "config.url must be an http:// or https:// URL"),
        ("tool.http", {"headers": ["x"]}, "config.headers must be an object of header names to string values"),
        ("tool.http", {"headers": {"X": "a\r\nB: c"}}, "config.headers must be an object"),
        ("tool.http", {"headers": {"Bad Name": "x"}}, "config.headers must be an object"),
        ("tool.http", {"headers": {"X": 1}}, "config.headers must be an object"),
        ("tool.http", {"max_bytes": 0}, "config.max_bytes must be an integer from 1 to 50000000, got 0"),
        ("tool.http", {"max_bytes": True}, "config.max_bytes must be an integer"),
        ("tool.http", {"max_redirects": 11}, "config.max_redirects must be an integer from 0 to 10, got 11"),
    ])
    def test_tool_refused(self, name: str, config: dict[str, Any], message: str) -> None:
        with pytest.raises(ValueError) as ei:
            configschema.validate(name, config)
        assert str(ei.value).startswith(message)

    @pytest.mark.parametrize("config", [
        {"query": None}, {"query": "x", "args": ["a", "b"]}, {"max_rows": 5}, {"search_path": ""},
        {"query": 5}, {"args": [1]}, {"max_rows": "10"}, {"max_rows": True}, {"max_rows": 100001},
    ])
    def test_sql_schema_agrees_with_check_config(self, config: dict[str, Any]) -> None:
        def ok(fn: Callable[[], None]) -> bool:
            try:
                fn()
                return True
            except ValueError:
                return False
        assert ok(lambda: configschema.validate("tool.sql", config)) == ok(lambda: sql_tool.check_config(config))

    # ---------------------------------------------------------------- persona.traits and params

    def test_persona_traits(self) -> None:
        configschema.validate("persona.traits", {})
        configschema.validate("persona.traits", {"tone": "dry", "verbosity": 2, "formal": False, "x": 1.5})
        for bad in (None, [], {"a": 1}):
            with pytest.raises(ValueError) as ei:
                configschema.validate("persona.traits", {"tone": "dry", "style": bad})
            assert str(ei.value).startswith('persona traits: "style" must be a string, number or boolean, got ')
        with pytest.raises(ValueError, match="^persona traits must be a JSON object"):
            configschema.validate("persona.traits", "dry")

    def test_params_schemas_match_check_params(self) -> None:
        configschema.validate("params.openai", {"temperature": 1.5})
        with pytest.raises(ValueError) as ei:
            configschema.validate("params.anthropic", {"temperature": 1.5})
        assert str(ei.value) == 'params: "temperature" must be a number from 0 to 1, got 1.5'
        with pytest.raises(ValueError, match='"dimensions" must be an integer from 1 to 65536'):
            configschema.validate("params.openai.embedding", {"dimensions": 0})
        with pytest.raises(ValueError, match='"input_type" must be one of query, passage, document'):
            configschema.validate("params.openai.embedding", {"input_type": "both"})


# =========================================================================== property-style: random hostile replies

JUNK_SCALARS: list[Any] = [None, True, False, 0, -1, 1, 7, 1.5, -0.0, 2**70, MAX_TOKENS_PER_CALL,
                           MAX_TOKENS_PER_CALL + 1, math.nan, math.inf, "", "x", "\x00", "\ud800", "a\udc00b",
                           "\x00\ud83d\ude00", "tool_calls", "function", "text", "tool_use", "stop", "{}",
                           '{"q": "a\\u0000"}', "[" * 50, "é" * 300]


def junk(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.6:
        return rng.choice(JUNK_SCALARS)
    if r < 0.75:
        return [junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if r < 0.9:
        return {rng.choice(["type", "text", "name", "id", "arguments", "input", "function", "k\x00", "\ud800"]):
                junk(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return nested_list(rng.randint(30, 200))


def mutate(rng: random.Random, value: Any, rate: float) -> Any:
    """A copy of ``value`` where containers' entries are replaced by junk, deleted or kept."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            r = rng.random()
            if r < rate:
                out[k] = junk(rng)
            elif r < rate * 1.5:
                continue
            else:
                out[k] = mutate(rng, v, rate)
        if rng.random() < rate / 2:
            out[rng.choice(["extra", "\x00", "content", "usage"])] = junk(rng)
        return out
    if isinstance(value, list):
        out_l = [junk(rng) if rng.random() < rate else mutate(rng, v, rate) for v in value]
        if rng.random() < rate:
            out_l.insert(rng.randint(0, len(out_l)), junk(rng))
        return out_l
    return value


def openai_base(rng: random.Random) -> dict[str, Any]:
    calls = [{"id": f"c{i}\x00", "type": "function",
              "function": {"name": rng.choice(["run_sql", "t\ud800", "x"]),
                           "arguments": rng.choice(['{"q": "a\x00"}', "{}", {"a": "b\udc00"}, None, "not json"])}}
             for i in range(rng.randint(0, 3))]
    return {"id": "x", "model": rng.choice(["m", "m\x00", None]),
            "choices": [{"index": 0, "finish_reason": rng.choice(["stop", "tool_calls", None, "len\ud800"]),
                         "message": {"role": "assistant", "content": rng.choice(["hi\x00", None, "ok", "\ud800",
                                                                                 [{"type": "text", "text": "p\x00"}]]),
                                     "reasoning_content": rng.choice([None, "r\x00"]),
                                     "tool_calls": calls or None}}],
            "usage": {"prompt_tokens": rng.randint(0, 10**6), "completion_tokens": rng.randint(0, 10**6)}}


def anthropic_base(rng: random.Random) -> dict[str, Any]:
    blocks: list[Any] = []
    for i in range(rng.randint(0, 4)):
        kind = rng.choice(["text", "thinking", "tool_use", "redacted_thinking"])
        if kind == "text":
            blocks.append({"type": "text", "text": rng.choice(["a\x00", "b", "\ud800"])})
        elif kind == "thinking":
            blocks.append({"type": "thinking", "thinking": "t\x00", "signature": "s"})
        elif kind == "tool_use":
            blocks.append({"type": "tool_use", "id": f"toolu_{i}", "name": rng.choice(["t", "n\x00"]),
                           "input": rng.choice([{}, {"q": "x\x00"}, {"k\ud800": [1, {"z": None}]}, None])})
        else:
            blocks.append({"type": "redacted_thinking", "data": "zz"})
    return {"id": "msg", "type": "message", "role": "assistant", "model": rng.choice(["claude", "c\x00", None]),
            "content": blocks, "stop_reason": rng.choice(["end_turn", "tool_use", "max_tokens", None, "x\x00"]),
            "usage": {"input_tokens": rng.randint(0, 10**6), "output_tokens": rng.randint(0, 10**6)}}


def check_reply(r: Reply) -> None:
    assert isinstance(r, Reply)
    assert is_clean_or_none(r.content) and is_clean_or_none(r.reasoning)
    assert is_clean_or_none(r.finish_reason) and is_clean_or_none(r.model)
    for n in (r.prompt_tokens, r.completion_tokens):
        assert type(n) is int and 0 <= n <= MAX_TOKENS_PER_CALL
    assert isinstance(r.tool_calls, list)
    for c in r.tool_calls:
        assert isinstance(c, ToolCall)
        assert is_clean(c.id) and c.id and is_clean(c.name) and c.name.strip() and is_clean(c.arguments)
    json.dumps({"content": r.content, "reasoning": r.reasoning, "calls": [vars(c) for c in r.tool_calls]},
               ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_random_hostile_replies(provider: str) -> None:
    rng = random.Random(20240601 + (provider == "anthropic"))
    parse = openai.parse_response if provider == "openai" else anthropic.parse_response
    base = openai_base if provider == "openai" else anthropic_base
    outcomes = {"reply": 0, "malformed": 0}
    for i in range(2000):
        rate = rng.choice([0.0, 0.05, 0.15, 0.4])
        body: Any = mutate(rng, base(rng), rate) if rng.random() < 0.95 else junk(rng)
        try:
            r = parse(body)
        except ProviderError as e:
            assert (e.kind, e.retryable) == ("malformed", True), (i, body)
            assert is_clean(e.message)
            outcomes["malformed"] += 1
        else:
            check_reply(r)
            outcomes["reply"] += 1
    assert outcomes["reply"] > 200 and outcomes["malformed"] > 200, outcomes
