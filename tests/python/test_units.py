"""Unit tests of the pure-Python parts of pgagent_core (no PostgreSQL needed).

conftest.py puts python/ on sys.path; none of its database fixtures are used here.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest
import requests

from pgagent_core import cancel, loop, secrets, toolcalls, validation
from pgagent_core.providers import ProviderError, Reply, ToolCall, anthropic, openai, post_json, timeout_pair
from pgagent_core.tools import function as function_tool
from pgagent_core.tools import sql as sql_tool

NAMES = {"run_sql", "get_weather"}


def _args(call: ToolCall) -> Any:
    return json.loads(call.arguments)


# =========================================================================== toolcalls.recover_from_text

class TestRecoverFromText:
    def test_bare_json_call(self) -> None:
        calls = toolcalls.recover_from_text('{"name": "run_sql", "arguments": {"query": "select 1"}}', NAMES, "c7")
        assert len(calls) == 1
        c = calls[0]
        assert (c.id, c.name, c.source) == ("c7_1", "run_sql", "text")
        assert _args(c) == {"query": "select 1"}

    def test_bare_json_call_with_surrounding_whitespace(self) -> None:
        calls = toolcalls.recover_from_text('\n  {"name": "get_weather", "arguments": {"city": "Oslo"}}  \n', NAMES, "p")
        assert [(c.name, _args(c)) for c in calls] == [("get_weather", {"city": "Oslo"})]

    def test_json_embedded_in_prose(self) -> None:
        text = 'Let me look that up: {"name": "run_sql", "arguments": {"query": "select {1}"}} thanks'
        calls = toolcalls.recover_from_text(text, NAMES, "p")
        assert [(c.name, _args(c)) for c in calls] == [("run_sql", {"query": "select {1}"})]

    def test_fenced_json_block(self) -> None:
        text = ('I will query the table.\n```json\n{"name": "run_sql", "arguments": {"query": "select 2"}}\n```\n'
                'Then I will answer.')
        calls = toolcalls.recover_from_text(text, NAMES, "p")
        assert [(c.name, _args(c), c.source) for c in calls] == [("run_sql", {"query": "select 2"}, "text")]

    def test_fenced_block_without_language(self) -> None:
        text = '```\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n```'
        calls = toolcalls.recover_from_text(text, NAMES, "p")
        assert [(c.name, _args(c)) for c in calls] == [("get_weather", {"city": "Rome"})]

    def test_qwen_tool_call_tags(self) -> None:
        text = ('<tool_call>\n{"name": "run_sql", "arguments": {"query": "select 3"}}\n</tool_call>')
        calls = toolcalls.recover_from_text(text, NAMES, "q")
        assert [(c.id, c.name, _args(c), c.source) for c in calls] == [("q_1", "run_sql", {"query": "select 3"}, "text")]

    def test_qwen_tag_after_prose(self) -> None:
        text = ('Sure, checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                '</tool_call>\nMore prose {not json}')
        calls = toolcalls.recover_from_text(text, NAMES, "q")
        assert [(c.name, _args(c)) for c in calls] == [("get_weather", {"city": "Paris"})]

    def test_unterminated_tool_call_tag(self) -> None:
        # the stray "{plan}" defeats the first-"{"-to-last-"}" fallback, so only the tag can match
        text = 'My {plan}: query.\n<tool_call>\n{"name": "run_sql", "arguments": {"query": "select 4"}}\n'
        calls = toolcalls.recover_from_text(text, NAMES, "q")
        assert [(c.name, _args(c)) for c in calls] == [("run_sql", {"query": "select 4"})]

    def test_two_tool_call_tags_give_two_calls(self) -> None:
        text = ('<tool_call>\n{"name": "run_sql", "arguments": {"query": "select 1"}}\n</tool_call>\n'
                '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')
        calls = toolcalls.recover_from_text(text, NAMES, "q")
        assert [c.name for c in calls] == ["run_sql", "get_weather"]

    def test_openai_function_wrapper_with_string_arguments(self) -> None:
        raw_args = '{"query": "select 5"}'
        text = json.dumps({"type": "function", "function": {"name": "run_sql", "arguments": raw_args}})
        calls = toolcalls.recover_from_text(text, NAMES, "p")
        assert len(calls) == 1
        # arguments given as a JSON string are kept as is (not double-encoded)
        assert calls[0].arguments == raw_args
        assert calls[0].name == "run_sql"

    def test_list_of_two_calls(self) -> None:
        text = json.dumps([{"name": "run_sql", "arguments": {"query": "select 6"}},
                           {"name": "get_weather", "arguments": {"city": "Lima"}}])
        calls = toolcalls.recover_from_text(text, NAMES, "t3")
        assert [(c.id, c.name, _args(c), c.source) for c in calls] == [
            ("t3_1", "run_sql", {"query": "select 6"}, "text"),
            ("t3_2", "get_weather", {"city": "Lima"}, "text")]

    def test_list_skips_undeclared_tool_and_numbers_kept_calls(self) -> None:
        text = json.dumps([{"name": "rm_rf", "arguments": {}},
                           {"name": "get_weather", "arguments": {"city": "Lima"}}])
        calls = toolcalls.recover_from_text(text, NAMES, "t")
        assert [(c.id, c.name) for c in calls] == [("t_1", "get_weather")]

    def test_arguments_under_parameters(self) -> None:
        calls = toolcalls.recover_from_text('{"name": "get_weather", "parameters": {"city": "Kyiv"}}', NAMES, "p")
        assert [(c.name, _args(c)) for c in calls] == [("get_weather", {"city": "Kyiv"})]

    def test_call_without_arguments_gets_empty_object(self) -> None:
        calls = toolcalls.recover_from_text('{"name": "get_weather"}', NAMES, "p")
        assert [(c.name, _args(c)) for c in calls] == [("get_weather", {})]

    def test_undeclared_tool_is_not_a_call(self) -> None:
        assert toolcalls.recover_from_text('{"name": "drop_database", "arguments": {"x": 1}}', NAMES, "p") == []

    def test_tagged_undeclared_tool_is_not_a_call(self) -> None:
        text = '<tool_call>{"name": "drop_database", "arguments": {}}</tool_call>'
        assert toolcalls.recover_from_text(text, NAMES, "p") == []

    def test_prose_without_json(self) -> None:
        assert toolcalls.recover_from_text("The answer is 42. Nothing to call here.", NAMES, "p") == []

    def test_json_that_is_not_a_call(self) -> None:
        assert toolcalls.recover_from_text('{"answer": 3}', NAMES, "p") == []
        assert toolcalls.recover_from_text('[1, 2, 3]', NAMES, "p") == []
        assert toolcalls.recover_from_text('{"name": 5, "arguments": {}}', NAMES, "p") == []

    def test_invalid_json_is_not_a_call(self) -> None:
        assert toolcalls.recover_from_text('{"name": "run_sql", "arguments": {', NAMES, "p") == []

    def test_empty_content_or_no_tools(self) -> None:
        assert toolcalls.recover_from_text(None, NAMES, "p") == []
        assert toolcalls.recover_from_text("", NAMES, "p") == []
        assert toolcalls.recover_from_text('{"name": "run_sql", "arguments": {}}', set(), "p") == []


# =========================================================================== toolcalls.action_schema / parse_action

SPECS = [
    {"type": "function", "function": {"name": "run_sql", "description": "Run SQL",
                                      "parameters": {"type": "object", "properties": {"query": {"type": "string"}},
                                                     "required": ["query"]}}},
    {"type": "function", "function": {"name": "get_weather", "description": "Weather"}},
]


class TestActionSchema:
    def test_one_option_per_tool_plus_answer(self) -> None:
        rf = toolcalls.action_schema(SPECS)
        assert rf["type"] == "json_schema"
        js = rf["json_schema"]
        assert js["name"] == "agent_action"
        options = js["schema"]["oneOf"]
        assert len(options) == len(SPECS) + 1
        assert [o["properties"]["tool"]["const"] for o in options[:-1]] == ["run_sql", "get_weather"]
        for o in options[:-1]:
            assert o["required"] == ["tool", "arguments"]
        # the tool's parameters schema is used for the arguments; a tool without one gets an object
        assert options[0]["properties"]["arguments"] == SPECS[0]["function"]["parameters"]
        assert options[1]["properties"]["arguments"] == {"type": "object"}
        assert options[-1] == {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}

    def test_schema_accepts_exactly_the_expected_actions(self) -> None:
        import jsonschema

        schema = toolcalls.action_schema(SPECS)["json_schema"]["schema"]
        jsonschema.validate({"tool": "run_sql", "arguments": {"query": "select 1"}}, schema)
        jsonschema.validate({"answer": "done"}, schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"tool": "run_sql", "arguments": {}}, schema)  # query required
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"tool": "nope", "arguments": {}}, schema)

    def test_action_instructions_describe_every_tool(self) -> None:
        text = toolcalls.action_instructions(SPECS)
        assert "- run_sql: Run SQL" in text
        assert "- get_weather: Weather" in text
        assert json.dumps(SPECS[0]["function"]["parameters"]) in text


class TestParseAction:
    def test_tool_action(self) -> None:
        calls, answer = toolcalls.parse_action('{"tool": "run_sql", "arguments": {"query": "select 1"}}', NAMES, "j")
        assert answer is None
        assert [(c.id, c.name, _args(c), c.source) for c in calls] == [("j_1", "run_sql", {"query": "select 1"},
                                                                          "json_schema")]

    def test_tool_action_with_string_arguments_kept_raw(self) -> None:
        calls, answer = toolcalls.parse_action('{"tool": "run_sql", "arguments": "{\\"query\\": 1}"}', NAMES, "j")
        assert answer is None
        assert calls[0].arguments == '{"query": 1}'

    def test_tool_action_without_arguments(self) -> None:
        calls, _ = toolcalls.parse_action('{"tool": "get_weather"}', NAMES, "j")
        assert _args(calls[0]) == {}

    def test_answer_action(self) -> None:
        calls, answer = toolcalls.parse_action('  {"answer": "There are 3 rows."}  ', NAMES, "j")
        assert calls == []
        assert answer == "There are 3 rows."

    def test_tool_wins_over_answer_when_both_present(self) -> None:
        calls, answer = toolcalls.parse_action('{"tool": "run_sql", "arguments": {}, "answer": "x"}', NAMES, "j")
        assert answer is None and [c.name for c in calls] == ["run_sql"]

    def test_non_json_text_is_the_answer(self) -> None:
        calls, answer = toolcalls.parse_action("  It is sunny in Oslo.\n", NAMES, "j")
        assert calls == []
        assert answer == "It is sunny in Oslo."

    def test_none_content_is_empty_answer(self) -> None:
        assert toolcalls.parse_action(None, NAMES, "j") == ([], "")

    def test_non_json_with_tagged_call_is_recovered(self) -> None:
        text = 'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
        calls, answer = toolcalls.parse_action(text, NAMES, "j")
        assert answer is None
        assert [(c.id, c.name, _args(c), c.source) for c in calls] == [("j_1", "get_weather", {"city": "Oslo"},
                                                                          "text")]

    def test_json_that_is_neither_is_the_answer_text(self) -> None:
        calls, answer = toolcalls.parse_action('{"result": 3}', NAMES, "j")
        assert calls == [] and answer == '{"result": 3}'


# =========================================================================== validation

OBJ_SCHEMA = {"type": "object",
              "properties": {"city": {"type": "string"},
                             "opts": {"type": "object", "properties": {"days": {"type": "integer"}}}},
              "required": ["city"], "additionalProperties": False}
TOOLS = [{"name": "get_weather", "parameters": OBJ_SCHEMA}, {"name": "run_sql", "parameters": {"type": "object"}}]


class TestCheckSchema:
    def test_valid_object_schemas(self) -> None:
        validation.check_schema(OBJ_SCHEMA)
        validation.check_schema({"type": "object"})
        validation.check_schema({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
                                 "properties": {"a": {"type": "integer", "minimum": 0}}})

    def test_not_a_dict(self) -> None:
        for bad in ([], "object", None, 5):
            with pytest.raises(ValueError, match="must be a JSON Schema object"):
                validation.check_schema(bad)

    def test_non_object_type(self) -> None:
        for bad in ({"type": "string"}, {"type": "array"}, {"properties": {}}):
            with pytest.raises(ValueError, match=r'"type": "object"'):
                validation.check_schema(bad)

    def test_invalid_schema(self) -> None:
        with pytest.raises(ValueError, match="not a valid JSON Schema") as ei:
            validation.check_schema({"type": "object", "properties": {"a": {"type": "no-such-type"}}})
        assert "no-such-type" in str(ei.value)
        with pytest.raises(ValueError, match="not a valid JSON Schema"):
            validation.check_schema({"type": "object", "required": "city"})


class TestCheckCall:
    def test_unknown_tool_lists_available_tools(self) -> None:
        args, msg = validation.check_call(TOOLS[::-1], None, "drop_db", "{}")
        assert args is None
        assert "unknown tool 'drop_db'" in msg
        assert "available tools: get_weather, run_sql" in msg

    def test_unknown_tool_with_no_tools(self) -> None:
        _, msg = validation.check_call([], None, "x", "{}")
        assert msg.endswith("available tools: none")

    def test_invalid_json(self) -> None:
        args, msg = validation.check_call(TOOLS, TOOLS[0], "get_weather", '{"city": ')
        assert args is None
        assert "arguments for get_weather are not valid JSON" in msg
        assert "send a JSON object" in msg

    def test_non_object_json(self) -> None:
        args, msg = validation.check_call(TOOLS, TOOLS[1], "run_sql", '["select 1"]')
        assert args is None
        assert msg == "arguments for run_sql must be a JSON object, got list"

    def test_schema_violation_names_the_path(self) -> None:
        args, msg = validation.check_call(TOOLS, TOOLS[0], "get_weather", '{"city": "Oslo", "opts": {"days": "x"}}')
        assert args is None
        assert "do not match its JSON Schema at opts/days" in msg
        assert "'x' is not of type 'integer'" in msg

    def test_missing_required_is_at_root(self) -> None:
        args, msg = validation.check_call(TOOLS, TOOLS[0], "get_weather", '{}')
        assert args is None
        assert "at (root)" in msg and "'city' is a required property" in msg

    def test_additional_property_rejected(self) -> None:
        args, msg = validation.check_call(TOOLS, TOOLS[0], "get_weather", '{"city": "Oslo", "evil": 1}')
        assert args is None and "evil" in msg

    def test_valid_call_returns_parsed_arguments(self) -> None:
        args, msg = validation.check_call(TOOLS, TOOLS[0], "get_weather", '{"city": "Oslo", "opts": {"days": 3}}')
        assert msg is None
        assert args == {"city": "Oslo", "opts": {"days": 3}}

    def test_blank_arguments_mean_empty_object(self) -> None:
        assert validation.check_call(TOOLS, TOOLS[1], "run_sql", "  ") == ({}, None)
        # ...which still has to satisfy the schema
        args, msg = validation.check_call(TOOLS, TOOLS[0], "get_weather", "")
        assert args is None and "'city' is a required property" in msg


# =========================================================================== secrets

class FakeDb:
    def __init__(self, value: Any) -> None:
        self.value = value
        self.calls: list[tuple[str, list[str], list[Any]]] = []

    def all(self, sql: str, types: Any = (), args: Any = (), *, cache: bool = True) -> list[dict[str, Any]]:
        self.calls.append((sql, list(types), list(args)))
        return [{"v": self.value}]


class TestRedact:
    def test_nested_structures(self) -> None:
        key = "sk-abcdef123456"
        value = {"message": f"HTTP 401: bad key {key}",
                 "list": [f"x{key}y", 3, None, {"deep": [key, "ok"]}],
                 key: "key as dict key", "n": 7}
        out = secrets.redact(value, [key])
        assert out == {"message": "HTTP 401: bad key [REDACTED]",
                       "list": ["x[REDACTED]y", 3, None, {"deep": ["[REDACTED]", "ok"]}],
                       "[REDACTED]": "key as dict key", "n": 7}
        assert key not in json.dumps(out)
        assert key in value["message"]  # the input is not mutated

    def test_every_occurrence_and_every_secret(self) -> None:
        assert secrets.redact("aaaa-1 bbbb-2 aaaa-1", ["aaaa-1", "bbbb-2", None]) == \
            "[REDACTED] [REDACTED] [REDACTED]"

    def test_short_and_empty_secrets_ignored(self) -> None:
        assert secrets.redact("abc is abc", ["abc"]) == "abc is abc"
        assert secrets.redact("x", ["", None]) == "x"
        assert secrets.redact("abcd", ["abcd"]) == "[REDACTED]"  # 4 characters is long enough

    def test_non_text_values_pass_through(self) -> None:
        assert secrets.redact(12345678, ["12345678"]) == 12345678
        assert secrets.redact(None, ["secret-x"]) is None


class TestResolve:
    def test_none_or_empty_name(self) -> None:
        db = FakeDb("guc-value")
        assert secrets.resolve(db, None) is None
        assert secrets.resolve(db, "") is None
        assert db.calls == []

    def test_env_wins_over_guc(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PGAGENT_TEST_KEY", "from-env-123")
        db = FakeDb("from-guc-456")
        assert secrets.resolve(db, "PGAGENT_TEST_KEY") == "from-env-123"
        assert db.calls == []

    def test_guc_fallback(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PGAGENT_TEST_KEY", raising=False)
        db = FakeDb("from-guc-456")
        assert secrets.resolve(db, "PGAGENT_TEST_KEY") == "from-guc-456"
        sql, types, args = db.calls[0]
        assert "pgagent.secret." in sql and "current_setting" in sql
        assert args == ["PGAGENT_TEST_KEY"]

    def test_empty_env_value_falls_back_to_guc(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PGAGENT_TEST_KEY", "")
        assert secrets.resolve(FakeDb("from-guc-456"), "PGAGENT_TEST_KEY") == "from-guc-456"

    def test_missing_raises_keyerror_without_values(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PGAGENT_TEST_KEY", raising=False)
        monkeypatch.setenv("PGAGENT_OTHER_KEY", "other-secret-value")
        for guc in (None, ""):
            with pytest.raises(KeyError) as ei:
                secrets.resolve(FakeDb(guc), "PGAGENT_TEST_KEY")
            assert ei.value.args == ("PGAGENT_TEST_KEY",)
            assert "other-secret-value" not in str(ei.value)
            assert str(ei.value) == "'PGAGENT_TEST_KEY'"

    def test_missing_when_db_returns_no_row(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("PGAGENT_TEST_KEY", raising=False)

        class NoRows(FakeDb):
            def all(self, *a: Any, **k: Any) -> list[dict[str, Any]]:
                return []
        with pytest.raises(KeyError):
            secrets.resolve(NoRows(None), "PGAGENT_TEST_KEY")


# =========================================================================== providers.openai

OA_MODEL = {"model_name": "qwen2.5-7b", "base_url": "http://llm.local:8080/v1/", "provider": "openai"}
OA_TOOLS = [{"type": "function", "function": {"name": "run_sql", "parameters": {"type": "object"}}}]


class TestOpenAIBuildRequest:
    def test_url_headers_body(self) -> None:
        msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "run_sql", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "[]"}]
        rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
        url, headers, body = openai.build_request(OA_MODEL, msgs, OA_TOOLS, {"temperature": 0.2, "seed": None,
                                                                           "max_tokens": 99}, "sk-1", rf)
        assert url == "http://llm.local:8080/v1/chat/completions"
        assert headers["Authorization"] == "Bearer sk-1"
        assert headers["Content-Type"] == "application/json"
        assert body["model"] == "qwen2.5-7b"
        assert body["tools"] is OA_TOOLS
        assert body["response_format"] is rf
        assert body["temperature"] == 0.2 and body["max_tokens"] == 99
        assert "seed" not in body  # None params are dropped
        assert "tool_choice" not in body
        assert body["messages"][2]["content"] == ""  # null content sent as ""
        assert body["messages"][2]["tool_calls"] == msgs[2]["tool_calls"]
        assert msgs[2]["content"] is None  # caller's message untouched
        assert body["messages"][3] == msgs[3]

    def test_no_key_no_authorization_no_tools(self) -> None:
        url, headers, body = openai.build_request({**OA_MODEL, "base_url": "https://api.openai.com/v1"},
                                                  [{"role": "user", "content": "hi"}], [], {}, None, None)
        assert url == "https://api.openai.com/v1/chat/completions"
        assert "Authorization" not in headers
        assert "tools" not in body and "response_format" not in body
        _, headers, _ = openai.build_request(OA_MODEL, [], [], {}, "", None)
        assert "Authorization" not in headers

    def test_params_override_and_tool_choice_passthrough(self) -> None:
        _, _, body = openai.build_request(OA_MODEL, [], OA_TOOLS, {"tool_choice": "required", "top_p": 0.9},
                                          None, None)
        assert body["tool_choice"] == "required" and body["top_p"] == 0.9


class TestOpenAIParseResponse:
    def test_text_reply_and_usage(self) -> None:
        r = openai.parse_response({"model": "m1", "choices": [{"message": {"role": "assistant", "content": "Hello",
                                                                            "reasoning_content": "hmm"},
                                                                "finish_reason": "stop"}],
                                   "usage": {"prompt_tokens": 12, "completion_tokens": 3}})
        assert isinstance(r, Reply)
        assert (r.content, r.finish_reason, r.prompt_tokens, r.completion_tokens, r.reasoning, r.model) == \
            ("Hello", "stop", 12, 3, "hmm", "m1")
        assert r.tool_calls == []

    def test_tool_calls_string_and_object_arguments(self) -> None:
        r = openai.parse_response({"choices": [{"finish_reason": "tool_calls", "message": {
            "content": None,
            "tool_calls": [{"id": "call_a", "type": "function",
                            "function": {"name": "run_sql", "arguments": '{"query": "select 1"}'}},
                           {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}},
                           {"id": "call_c", "function": {"name": "noargs"}}]}}]})
        assert r.content is None and r.finish_reason == "tool_calls"
        assert [(c.id, c.name, c.source) for c in r.tool_calls] == [
            ("call_a", "run_sql", "native"), ("call_1", "get_weather", "native"), ("call_c", "noargs", "native")]
        assert r.tool_calls[0].arguments == '{"query": "select 1"}'
        assert isinstance(r.tool_calls[1].arguments, str)
        assert json.loads(r.tool_calls[1].arguments) == {"city": "Oslo"}
        assert json.loads(r.tool_calls[2].arguments) == {}
        assert r.prompt_tokens == 0 and r.completion_tokens == 0

    @pytest.mark.parametrize("data", [{}, {"choices": []}, {"choices": [{}]}, {"choices": [{"message": "hi"}]},
                                      {"choices": None}])
    def test_missing_choices_is_malformed_retryable(self, data: dict[str, Any]) -> None:
        with pytest.raises(ProviderError) as ei:
            openai.parse_response(data)
        assert ei.value.kind == "malformed"
        assert ei.value.retryable is True

    def test_tool_call_without_name_is_malformed(self) -> None:
        with pytest.raises(ProviderError) as ei:
            openai.parse_response({"choices": [{"message": {"tool_calls": [{"id": "x", "function": {}}]}}]})
        assert ei.value.kind == "malformed" and "function name" in ei.value.message


# =========================================================================== providers.anthropic

AN_MODEL = {"model_name": "claude-x", "base_url": "https://api.anthropic.com", "provider": "anthropic"}


class TestAnthropicBuildRequest:
    MSGS = [
        {"role": "system", "content": "Be brief."},
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "weather in Oslo and rows?"},
        {"role": "assistant", "content": "Checking.",
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather",
                                                                      "arguments": '{"city": "Oslo"}'}},
                        {"id": "c2", "type": "function", "function": {"name": "run_sql", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 3}'},
        {"role": "tool", "tool_call_id": "c2", "content": None},
    ]

    def test_translation(self) -> None:
        url, headers, body = anthropic.build_request(AN_MODEL, self.MSGS, OA_TOOLS, {"temperature": 0, "top_k": None},
                                                     "sk-ant-1", {"type": "json_schema"})
        assert url == "https://api.anthropic.com/v1/messages"
        assert headers["x-api-key"] == "sk-ant-1"
        assert headers["anthropic-version"] == "2023-06-01"
        assert "Authorization" not in headers
        assert body["system"] == "Be brief.\n\nUse tools."
        assert body["model"] == "claude-x"
        assert body["max_tokens"] == anthropic.DEFAULT_MAX_TOKENS == 1024
        assert body["temperature"] == 0 and "top_k" not in body
        assert "response_format" not in body
        msgs = body["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
        assert all(m["role"] != "system" for m in msgs)
        assert msgs[0] == {"role": "user", "content": "weather in Oslo and rows?"}
        assert msgs[1]["content"] == [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "c2", "name": "run_sql", "input": {}}]
        # consecutive tool messages become ONE user message with tool_result blocks
        assert msgs[2]["content"] == [
            {"type": "tool_result", "tool_use_id": "c1", "content": '{"temp": 3}'},
            {"type": "tool_result", "tool_use_id": "c2", "content": ""}]
        assert body["tools"] == [{"name": "run_sql", "description": "", "input_schema": {"type": "object"}}]

    def test_assistant_tool_calls_without_text(self) -> None:
        msgs = [{"role": "user", "content": "q"},
                {"role": "assistant", "content": None,
                 "tool_calls": [{"id": "c9", "function": {"name": "run_sql", "arguments": ""}}]}]
        _, _, body = anthropic.build_request(AN_MODEL, msgs, [], {}, None, None)
        assert body["messages"][1]["content"] == [{"type": "tool_use", "id": "c9", "name": "run_sql", "input": {}}]
        assert "system" not in body and "tools" not in body

    def test_tool_results_separated_by_assistant_are_not_merged(self) -> None:
        msgs = [{"role": "user", "content": "q"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "a", "function": {"name": "t",
                                                                                             "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "a", "content": "1"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "b", "function": {"name": "t",
                                                                                             "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "b", "content": "2"}]
        _, _, body = anthropic.build_request(AN_MODEL, msgs, [], {}, None, None)
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user", "assistant", "user"]
        assert [len(m["content"]) for m in body["messages"][2::2]] == [1, 1]

    def test_max_tokens_param_wins_and_no_key_header(self) -> None:
        _, headers, body = anthropic.build_request(AN_MODEL, [{"role": "user", "content": "x"}], [],
                                                   {"max_tokens": 77}, None, None)
        assert body["max_tokens"] == 77
        assert "x-api-key" not in headers and headers["anthropic-version"] == "2023-06-01"

    @pytest.mark.parametrize("base", ["https://api.anthropic.com", "https://api.anthropic.com/",
                                      "https://api.anthropic.com/v1", "https://api.anthropic.com/v1/"])
    def test_base_url_with_or_without_v1(self, base: str) -> None:
        url, _, _ = anthropic.build_request({**AN_MODEL, "base_url": base}, [], [], {}, None, None)
        assert url == "https://api.anthropic.com/v1/messages"


class TestAnthropicParseResponse:
    def test_text_tool_use_thinking_usage(self) -> None:
        r = anthropic.parse_response({
            "model": "claude-x", "stop_reason": "tool_use",
            "content": [{"type": "thinking", "thinking": "step 1"},
                        {"type": "text", "text": "Let me "}, {"type": "text", "text": "check."},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                        {"type": "thinking", "thinking": "step 2"}],
            "usage": {"input_tokens": 20, "output_tokens": 7}})
        assert r.content == "Let me check."
        assert r.reasoning == "step 1\nstep 2"
        assert r.finish_reason == "tool_calls"
        assert (r.prompt_tokens, r.completion_tokens, r.model) == (20, 7, "claude-x")
        assert [(c.id, c.name, json.loads(c.arguments), c.source) for c in r.tool_calls] == [
            ("toolu_1", "get_weather", {"city": "Oslo"}, "native")]

    @pytest.mark.parametrize("stop,finish", [("end_turn", "stop"), ("stop_sequence", "stop"),
                                             ("tool_use", "tool_calls"), ("max_tokens", "length"),
                                             ("refusal", "refusal"), (None, None)])
    def test_stop_reason_mapping(self, stop: str | None, finish: str | None) -> None:
        assert anthropic.parse_response({"content": [], "stop_reason": stop}).finish_reason == finish

    def test_no_text_means_none_content(self) -> None:
        r = anthropic.parse_response({"content": [{"type": "tool_use", "name": "t"}]})
        assert r.content is None and r.reasoning is None
        assert r.tool_calls[0].id == "toolu_0" and json.loads(r.tool_calls[0].arguments) == {}

    def test_missing_content_is_malformed(self) -> None:
        with pytest.raises(ProviderError) as ei:
            anthropic.parse_response({"type": "error", "error": {"message": "overloaded"}})
        assert ei.value.kind == "malformed" and ei.value.retryable


# =========================================================================== providers.post_json

class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, Callable[["_Handler"], None]] = {}

    def log_message(self, *a: Any) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length)
        try:
            self.routes[self.path](self)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def send(self, status: int, payload: bytes, ctype: str = "application/json",
             extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)


def _echo(h: _Handler) -> None:
    time.sleep(0.01)
    h.send(200, json.dumps({"ok": True, "got": json.loads(h.body), "ua": h.headers.get("User-Agent"),
                            "x": h.headers.get("X-Test")}).encode())


def _slow(h: _Handler) -> None:
    time.sleep(2)
    h.send(200, b"{}")


ROUTES: dict[str, Callable[[_Handler], None]] = {
    "/ok": _echo,
    "/500": lambda h: h.send(500, b'{"error": "boom"}'),
    "/400": lambda h: h.send(400, b'{"error": "bad request"}'),
    "/429": lambda h: h.send(429, b'{"error": "slow down"}', extra={"Retry-After": "2"}),
    "/429-date": lambda h: h.send(429, b"{}", extra={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
    "/html": lambda h: h.send(200, b"<html>oops</html>", "text/html"),
    "/list": lambda h: h.send(200, b"[1, 2]"),
    "/slow": _slow,
}


@pytest.fixture(scope="module")
def http_base() -> Iterator[str]:
    class Server(ThreadingHTTPServer):
        daemon_threads = True

    _Handler.routes = ROUTES
    srv = Server(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    yield s
    s.close()


class TestPostJson:
    def test_timeout_pair(self) -> None:
        assert timeout_pair(300) == (0.3, 0.3)
        assert timeout_pair(60000) == (10.0, 60.0)
        assert timeout_pair(0) == (0.001, 0.001)

    def test_ok(self, http_base: str, session: requests.Session) -> None:
        data, latency = post_json(session, http_base + "/ok", {"X-Test": "yes"}, {"a": [1, "é"]}, 5000)
        assert data == {"ok": True, "got": {"a": [1, "é"]}, "ua": "pgagent/0.1", "x": "yes"}
        assert latency > 0
        assert latency >= 10  # the handler sleeps 10 ms

    def test_500_retryable(self, http_base: str, session: requests.Session) -> None:
        with pytest.raises(ProviderError) as ei:
            post_json(session, http_base + "/500", {}, {}, 5000)
        e = ei.value
        assert (e.status, e.retryable, e.kind, e.retry_after_s) == (500, True, "http_error", None)
        assert "HTTP 500" in e.message and "boom" in e.message

    def test_400_not_retryable(self, http_base: str, session: requests.Session) -> None:
        with pytest.raises(ProviderError) as ei:
            post_json(session, http_base + "/400", {}, {}, 5000)
        assert (ei.value.status, ei.value.retryable, ei.value.kind) == (400, False, "http_error")
        assert "bad request" in ei.value.message

    def test_429_retry_after(self, http_base: str, session: requests.Session) -> None:
        with pytest.raises(ProviderError) as ei:
            post_json(session, http_base + "/429", {}, {}, 5000)
        assert (ei.value.status, ei.value.retryable, ei.value.retry_after_s) == (429, True, 2.0)

    def test_429_with_http_date_retry_after_is_ignored(self, http_base: str, session: requests.Session) -> None:
        with pytest.raises(ProviderError) as ei:
            post_json(session, http_base + "/429-date", {}, {}, 5000)
        assert ei.value.retryable and ei.value.retry_after_s is None

    def test_non_json_body_malformed(self, http_base: str, session: requests.Session) -> None:
        with pytest.raises(ProviderError) as ei:
            post_json(session, http_base + "/html", {}, {}, 5000)
        assert (ei.value.kind, ei.value.status, ei.value.retryable) == ("malformed", 200, True)
        assert "oops" in ei.value.message

    def test_json_non_object_malformed(self, http_base: str, session: requests.Session) -> None:
        with pytest.raises(ProviderError) as ei:
            post_json(session, http_base + "/list", {}, {}, 5000)
        assert ei.value.kind == "malformed" and "list" in ei.value.message

    def test_timeout(self, http_base: str, session: requests.Session) -> None:
        t0 = time.monotonic()
        with pytest.raises(ProviderError) as ei:
            post_json(session, http_base + "/slow", {}, {}, 300)
        elapsed = time.monotonic() - t0
        assert elapsed < 1.5
        assert (ei.value.kind, ei.value.status, ei.value.retryable) == ("timeout", None, True)
        assert "300 ms" in ei.value.message

    def test_connection_refused(self, session: requests.Session) -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there any more
        with pytest.raises(ProviderError) as ei:
            post_json(session, f"http://127.0.0.1:{port}/x", {}, {}, 2000)
        assert (ei.value.kind, ei.value.status, ei.value.retryable) == ("connection", None, True)
        assert f"127.0.0.1:{port}" in ei.value.message


# =========================================================================== cancel.cancel_after

@contextmanager
def _sigint_handler(handler: Any) -> Iterator[None]:
    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


class TestCancelAfter:
    def test_fires_keyboard_interrupt_outside_postgres(self) -> None:
        with _sigint_handler(signal.default_int_handler):
            t0 = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                with cancel.cancel_after(50) as deadline:
                    time.sleep(2)
            elapsed = time.monotonic() - t0
        assert elapsed < 1.0
        assert elapsed >= 0.04
        assert deadline.fired is True
        assert deadline.ms == 50

    def test_block_finishing_first_does_not_fire(self) -> None:
        got: list[int] = []
        with _sigint_handler(lambda signo, frame: got.append(signo)):
            with cancel.cancel_after(100) as deadline:
                time.sleep(0.01)
            assert deadline.fired is False
            time.sleep(0.3)  # well past the 100 ms deadline: the timer must be gone
        assert got == []

    def test_signal_is_sigint_and_fired_is_reported(self) -> None:
        got: list[int] = []
        with _sigint_handler(lambda signo, frame: got.append(signo)):
            with cancel.cancel_after(30) as deadline:
                end = time.monotonic() + 1.0
                while not got and time.monotonic() < end:
                    time.sleep(0.01)
            assert deadline.elapsed_ms >= 25
        assert got == [signal.SIGINT]
        assert deadline.fired is True

    def test_deadline_over_one_second_is_split_correctly(self) -> None:
        # ms >= 1000 exercises the seconds/nanoseconds split of the timer spec
        got: list[float] = []
        with _sigint_handler(lambda signo, frame: got.append(time.monotonic())):
            t0 = time.monotonic()
            with cancel.cancel_after(1100) as deadline:
                time.sleep(0.5)
                assert not got  # not yet: 500 ms < 1100 ms
                end = t0 + 3.0
                while not got and time.monotonic() < end:
                    time.sleep(0.01)
        assert got, "timer never fired"
        assert 1.0 <= got[0] - t0 < 1.6
        assert deadline.fired is True

    @pytest.mark.parametrize("ms", [0, -1, -1000])
    def test_non_positive_ms_rejected(self, ms: int) -> None:
        with pytest.raises(ValueError, match="positive"):
            with cancel.cancel_after(ms):
                pass


# =========================================================================== tools: check_config

class TestSqlCheckConfig:
    @pytest.mark.parametrize("config", [
        {},
        {"query": "SELECT * FROM t WHERE id = $1", "args": ["id"]},
        {"query": "select 1", "max_rows": 1, "search_path": "demo, public"},
        {"max_rows": 100000},
        {"query": None},
        {"args": []},
    ])
    def test_accepted(self, config: dict[str, Any]) -> None:
        sql_tool.check_config(config)

    @pytest.mark.parametrize("config,fragment", [
        ({"query": ""}, "config.query"),
        ({"query": "   "}, "config.query"),
        ({"query": 5}, "config.query"),
        ({"args": "id"}, "config.args"),
        ({"args": ["id", 2]}, "config.args"),
        ({"args": None}, "config.args"),
        ({"search_path": ["public"]}, "config.search_path"),
        ({"max_rows": 0}, "config.max_rows"),
        ({"max_rows": 100001}, "config.max_rows"),
        ({"max_rows": "10"}, "config.max_rows"),
        ({"max_rows": 1.5}, "config.max_rows"),
    ])
    def test_rejected(self, config: dict[str, Any], fragment: str) -> None:
        with pytest.raises(ValueError, match=fragment):
            sql_tool.check_config(config)

    def test_boolean_max_rows_rejected(self) -> None:
        with pytest.raises(ValueError, match="config.max_rows"):
            sql_tool.check_config({"max_rows": True})


class TestFunctionCheckConfig:
    @pytest.mark.parametrize("config", [{"function": "lookup"}, {"function": "myschema.fn"},
                                        {"function": "f", "extra": 1}])
    def test_accepted(self, config: dict[str, Any]) -> None:
        function_tool.check_config(config)

    @pytest.mark.parametrize("config", [{}, {"function": ""}, {"function": None}, {"function": 5},
                                        {"function": ["a"]}, {"fn": "lookup"}])
    def test_rejected(self, config: dict[str, Any]) -> None:
        with pytest.raises(ValueError, match="config.function"):
            function_tool.check_config(config)


# =========================================================================== loop helpers (no database)

def _turn(tool_mode: str = "native", **cfg: Any) -> loop.Turn:
    base = {"tenant_id": "t1", "turn_id": 5, "model": {"tool_mode": tool_mode},
            "tools": [{"name": "run_sql", "description": "Run SQL", "parameters": {"type": "object"}}]}
    return loop.Turn(cfg={**base, **cfg}, steps=[], status="running")


class TestLoopHelpers:
    def test_result_text_result_and_error(self) -> None:
        assert loop.result_text({"result": {"rows": [{"a": "é"}]}}, 1000) == '{"rows":[{"a":"é"}]}'
        assert loop.result_text({"is_error": True, "error": "boom", "result": "ignored"}, 1000) == '{"error":"boom"}'
        assert loop.result_text({"is_error": False, "result": None}, 1000) == "null"

    def test_result_text_truncation(self) -> None:
        payload = {"result": "x" * 50}
        full = json.dumps("x" * 50)
        assert loop.result_text(payload, len(full)) == full  # exactly at the limit: untouched
        cut = loop.result_text(payload, 10)
        assert cut == full[:10] + f"... [truncated, {len(full)} chars]"

    def test_tool_specs(self) -> None:
        assert loop.tool_specs(_turn()) == [{"type": "function", "function": {
            "name": "run_sql", "description": "Run SQL", "parameters": {"type": "object"}}}]

    def test_system_prompt(self) -> None:
        t = _turn(system_prompt="You are Ada.", traits={"tone": "dry"}, instructions="Answer in French.")
        assert loop.system_prompt(t, loop.tool_specs(t)) == "You are Ada.\n\nTraits: tone: dry\n\nAnswer in French."
        plain = _turn()
        assert loop.system_prompt(plain, []) == "You are a helpful assistant."

    def test_system_prompt_json_schema_mode_describes_tools(self) -> None:
        t = _turn("json_schema")
        text = loop.system_prompt(t, loop.tool_specs(t))
        assert text.startswith("You are a helpful assistant.\n\n")
        assert "- run_sql: Run SQL" in text and '{"answer": ' in text
        assert "run_sql" not in loop.system_prompt(t, [])

    def test_turn_properties(self) -> None:
        t = _turn(agent_config={"max_steps": 3})
        assert t.settings["max_steps"] == 3 and t.settings["max_tool_errors"] == loop.DEFAULTS["max_tool_errors"]
        assert t.next_seq == 1
        t.steps.append({"seq": 4})
        assert t.next_seq == 5
        assert t.tool("run_sql")["description"] == "Run SQL" and t.tool("nope") is None
