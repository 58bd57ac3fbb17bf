"""Gemini and Ollama providers and provider presets (issue 12).

Wire formats as the scripted server speaks them (tests/python/scripted_llm.py, from the providers'
public API references cited there); streaming of all four providers is in test_streaming.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from scripted_llm import ScriptedLLM, http_error, raw, text, tool_calls
from test_loop import base_url, kinds, send, setup_agent, steps

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from pgagent_core import presets, providers  # noqa: E402
from pgagent_core.providers import ProviderError, gemini, ollama  # noqa: E402

SQL_CALL = ("run_sql", {"query": "SELECT count(*) FROM weather WHERE rain > 0"})


def model(llm: ScriptedLLM, provider: str, **kw: Any) -> dict[str, Any]:
    return {"provider": provider, "model_name": "m", "timeout_ms": 5000, "base_url": base_url(llm, provider), **kw}


# ---------------------------------------------------------------------------- a whole turn through the loop

@pytest.mark.parametrize("provider", ["gemini", "ollama"])
def test_a_tool_turn_round_trips_in_the_providers_format(conn, llm, provider):
    cid = setup_agent(conn, llm, provider=provider)
    llm.script(tool_calls([SQL_CALL], prompt_tokens=31, completion_tokens=7), text("243 rainy days.", 50, 4))
    r = send(conn, cid)
    assert r["status"] == "completed" and r["answer"] == "243 rainy days."
    assert kinds(conn, r["turn_id"]) == ["user_message", "llm_call", "tool_call", "tool_result", "llm_call",
                                         "response"]
    result = steps(conn, r["turn_id"], "tool_result")[0]
    assert result["payload"]["result"]["rows"] == [{"count": 243}]
    calls = steps(conn, r["turn_id"], "llm_call")
    assert [(c["prompt_tokens"], c["completion_tokens"]) for c in calls] == [(31, 7), (50, 4)]
    # prices of the model (2.5 / 10 USD per 1M tokens) apply to the provider's usage
    assert float(calls[0]["cost_usd"]) == pytest.approx((31 * 2.5 + 7 * 10) / 1e6)
    # neither API gave the call an id: the loop made one, unique in the turn
    call_id = steps(conn, r["turn_id"], "tool_call")[0]["tool_call_id"]
    assert call_id.startswith(f"call_{r['turn_id']}_") and result["tool_call_id"] == call_id
    first, second = (q["body"] for q in llm.requests)
    if provider == "gemini":
        assert "contents" in first and "Answer from the data." in first["systemInstruction"]["parts"][0]["text"]
        decl = {d["name"]: d for d in first["tools"][0]["functionDeclarations"]}
        assert set(decl) == {"run_sql", "bump"}
        assert decl["run_sql"]["parametersJsonSchema"]["required"] == ["query"]
        model_turn, answer = second["contents"][-2], second["contents"][-1]
        assert model_turn["role"] == "model" and model_turn["parts"][0]["functionCall"] == \
            {"name": "run_sql", "args": SQL_CALL[1]} and model_turn["parts"][0]["thoughtSignature"] == gemini.NO_SIGNATURE
        response = answer["parts"][0]["functionResponse"]
        assert answer["role"] == "user" and response["name"] == "run_sql"
        assert response["response"]["output"]["rows"] == [{"count": 243}]
    else:
        assert first["stream"] is False and first["tools"][0]["function"]["name"] in ("run_sql", "bump")
        assistant, tool = second["messages"][-2], second["messages"][-1]
        assert assistant["tool_calls"] == [{"function": {"name": "run_sql", "arguments": SQL_CALL[1]}}]
        assert tool["role"] == "tool" and tool["tool_name"] == "run_sql"
        assert json.loads(tool["content"])["rows"] == [{"count": 243}]


def test_gemini_thought_signatures_go_back_with_their_calls(conn, llm):
    cid = setup_agent(conn, llm, provider="gemini")
    llm.thought_signature = "sig"
    llm.script(tool_calls([SQL_CALL]), text("243."))
    r = send(conn, cid)
    assert r["answer"] == "243."
    recorded = steps(conn, r["turn_id"], "llm_call")[0]["payload"]["message"]["tool_calls"][0]
    assert recorded["extra_content"] == {"google": {"thought_signature": "sig-1"}}
    part = llm.requests[1]["body"]["contents"][-2]["parts"][0]
    assert part["thoughtSignature"] == "sig-1" and part["functionCall"]["name"] == "run_sql"


def test_gemini_key_goes_in_a_header_never_the_url(conn, llm):
    cid = setup_agent(conn, llm, provider="gemini", secret_name="GEMINI_KEY")
    key = "AIzaSy-test-0123456789"
    conn.execute("SELECT set_config('pgagent.secret.GEMINI_KEY', %s, false)", [key])
    llm.script(http_error(400, body={"error": {"code": 400, "message": f"API key not valid: {key}",
                                               "status": "INVALID_ARGUMENT"}}))
    r = send(conn, cid)
    req = llm.requests[-1]
    assert req["headers"]["x-goog-api-key"] == key and key not in req["path"] and "authorization" not in req["headers"]
    assert r["status"] == "failed" and "HTTP 400" in r["error"] and key not in r["error"] and "[REDACTED]" in r["error"]


@pytest.mark.parametrize("provider", ["gemini", "ollama"])
def test_failures_are_recorded_steps(conn, llm, provider):
    cid = setup_agent(conn, llm, provider=provider, max_retries=1)
    llm.script(http_error(429, retry_after=0), text("after the retry"))
    r = send(conn, cid)
    assert r["answer"] == "after the retry"
    err = steps(conn, r["turn_id"], "error")[0]["payload"]
    assert err["http_status"] == 429 and err["will_retry"] is True
    llm.script(raw('{"candidates": "nope"}' if provider == "gemini" else '{"message": "nope"}'),
               raw("{}"))
    r = send(conn, cid)
    assert r["status"] == "failed"
    errs = [e["payload"]["message"] for e in steps(conn, r["turn_id"], "error")]
    assert len(errs) == 3 and ("candidates must be an array" in errs[0] if provider == "gemini"
                               else "message must be an object" in errs[0])
    assert errs[2].startswith("LLM call failed after 2 attempt(s): malformed reply")


def test_gemini_blocked_prompt_fails_the_turn_without_retrying(conn, llm):
    cid = setup_agent(conn, llm, provider="gemini", max_retries=2)
    llm.script(raw(json.dumps({"promptFeedback": {"blockReason": "SAFETY"},
                               "usageMetadata": {"promptTokenCount": 9}})))
    r = send(conn, cid)
    assert r["status"] == "failed" and "blocked by the provider (blockReason SAFETY)" in r["error"]
    assert len(llm.requests) == 1


# ---------------------------------------------------------------------------- the translations, unit by unit

def test_gemini_request_maps_params_choice_and_schema():
    m = {"provider": "gemini", "model_name": "gemini-2.5-flash", "base_url": "https://g.example/v1beta/"}
    tools = [{"type": "function", "function": {"name": "f", "description": "d",
                                               "parameters": {"type": "object", "properties": {}}}}]
    url, headers, body = gemini.build_request(
        m, [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], tools,
        {"temperature": 0.2, "top_p": 0.9, "top_k": 5, "max_tokens": 100, "stop": "END", "seed": 7,
         "thinking_budget": 0, "tool_choice": {"type": "function", "function": {"name": "f"}}, "stream": True,
         "n": 3}, "KEY", {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}})
    assert url == "https://g.example/v1beta/models/gemini-2.5-flash:generateContent"
    assert headers["x-goog-api-key"] == "KEY"
    assert body["generationConfig"] == {"temperature": 0.2, "topP": 0.9, "topK": 5, "maxOutputTokens": 100,
                                        "seed": 7, "stopSequences": ["END"], "thinkingConfig": {"thinkingBudget": 0},
                                        "responseMimeType": "application/json",
                                        "responseJsonSchema": {"type": "object"}}
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}
    assert body["systemInstruction"] == {"parts": [{"text": "S"}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "U"}]}]
    assert gemini.stream_url(url).endswith("/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    assert gemini.model_path("tunedModels/x") == "tunedModels/x"


def test_gemini_parallel_results_share_one_content_and_errors_stay_errors():
    msgs = [{"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "abc", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
                {"id": "call_9_2_1", "type": "function", "function": {"name": "g", "arguments": "not json"}}]},
            {"role": "tool", "tool_call_id": "abc", "content": '{"rows": []}'},
            {"role": "tool", "tool_call_id": "call_9_2_1", "content": '{"error": "boom"}'}]
    _, _, body = gemini.build_request({"model_name": "m", "base_url": "http://x"}, msgs, [], {}, None, None)
    model_turn, results = body["contents"][1], body["contents"][2]
    # the API's own id goes back; an id the loop made up does not
    assert model_turn["parts"] == [{"functionCall": {"name": "f", "args": {"a": 1}, "id": "abc"},
                                    "thoughtSignature": gemini.NO_SIGNATURE},
                                   {"functionCall": {"name": "g", "args": {}}}]
    assert results == {"role": "user", "parts": [
        {"functionResponse": {"name": "f", "response": {"output": {"rows": []}}, "id": "abc"}},
        {"functionResponse": {"name": "g", "response": {"error": "boom"}}}]}


def test_gemini_reply_parsing():
    r = gemini.parse_response({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "thinking...", "thought": True}, {"text": "Hello"}, {"text": " there"}]},
            "finishReason": "MAX_TOKENS"}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 5, "thoughtsTokenCount": 30},
        "modelVersion": "gemini-2.5-flash-001"})
    assert (r.content, r.reasoning, r.finish_reason) == ("Hello there", "thinking...", "length")
    assert (r.prompt_tokens, r.completion_tokens, r.model) == (12, 35, "gemini-2.5-flash-001")
    safety = gemini.parse_response({"candidates": [{"finishReason": "SAFETY"}]})
    assert safety.content is None and safety.finish_reason == "content_filter"
    for bad, why in [({"candidates": [{"content": {"parts": [{"functionCall": {"args": {}}}]}}]},
                      "functionCall.name must be a non-empty string"),
                     ({"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": [1]}}]}}]},
                      "functionCall.args must be an object"),
                     ({"candidates": [{"content": {"parts": "x"}}]}, "parts must be an array"),
                     ({"candidates": [{"finishReason": "MALFORMED_FUNCTION_CALL"}]}, "MALFORMED_FUNCTION_CALL"),
                     ({"candidates": [{"content": {"parts": []}}], "usageMetadata": {"promptTokenCount": -1}},
                      "promptTokenCount must be an integer"),
                     ({}, "no candidates[0]")]:
        with pytest.raises(ProviderError) as e:
            gemini.parse_response(bad)
        assert e.value.kind == "malformed" and e.value.retryable and why in e.value.message, (bad, e.value.message)
    with pytest.raises(ProviderError) as e:
        gemini.parse_response({"promptFeedback": {"blockReason": "OTHER"}})
    assert e.value.kind == "refused" and not e.value.retryable


def test_ollama_request_and_reply():
    m = {"model_name": "qwen3:8b", "base_url": "http://127.0.0.1:11434/v1/"}
    url, headers, body = ollama.build_request(
        m, [{"role": "user", "content": "q"}], [], {"max_tokens": 50, "temperature": 0, "stop": "x", "num_ctx": 8192,
                                                    "keep_alive": "5m", "think": True, "logit_bias": {"1": 2}},
        None, {"type": "json_schema", "json_schema": {"schema": {"type": "object", "required": ["a"]}}})
    assert url == "http://127.0.0.1:11434/api/chat" and "Authorization" not in headers
    assert body == {"model": "qwen3:8b", "messages": [{"role": "user", "content": "q"}], "stream": False,
                    "options": {"temperature": 0, "num_predict": 50, "stop": ["x"], "num_ctx": 8192},
                    "keep_alive": "5m", "think": True, "format": {"type": "object", "required": ["a"]}}
    r = ollama.parse_response({"model": "qwen3:8b", "message": {
        "role": "assistant", "content": "", "thinking": "hmm",
        "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
        "done": True, "done_reason": "stop", "prompt_eval_count": 26, "eval_count": 290})
    assert (r.content, r.reasoning, r.finish_reason, r.prompt_tokens, r.completion_tokens) == \
        (None, "hmm", "tool_calls", 26, 290)
    assert r.tool_calls[0].name == "f" and json.loads(r.tool_calls[0].arguments) == {"a": 1} and r.tool_calls[0].id == ""
    for bad, why in [({"message": {"content": 5}}, "message.content must be a string"),
                     ({"message": {"tool_calls": [{"function": {"name": ""}}]}}, "function.name must be a non-empty"),
                     ({"message": {"content": "x"}, "eval_count": "many"}, "eval_count must be an integer")]:
        with pytest.raises(ProviderError) as e:
            ollama.parse_response(bad)
        assert e.value.kind == "malformed" and why in e.value.message, e.value.message
    with pytest.raises(ProviderError, match="reported an error: model 'x' not found"):
        ollama.parse_response({"error": "model 'x' not found"})


def test_ollama_http_errors_are_readable():
    with ScriptedLLM() as llm:
        llm.script(http_error(404, body={"error": "model 'nope' not found, try pulling it first"}))
        with pytest.raises(ProviderError) as e:
            providers.chat(requests.Session(), model(llm, "ollama"), [{"role": "user", "content": "x"}], [], {}, None)
    assert e.value.status == 404 and not e.value.retryable and "model 'nope' not found" in e.value.message


def test_params_are_checked_per_provider():
    providers.check_params("gemini", {"thinking_budget": 1024, "top_k": 3})
    providers.check_params("ollama", {"num_ctx": 4096, "keep_alive": "10m", "think": False})
    with pytest.raises(ValueError, match='"num_ctx" is not allowed for provider gemini'):
        providers.check_params("gemini", {"num_ctx": 4096})
    with pytest.raises(ValueError, match="at most 5 strings"):
        providers.check_params("gemini", {"stop": ["a", "b", "c", "d", "e", "f"]})
    with pytest.raises(ValueError, match="valid: anthropic, gemini, ollama, openai"):
        providers.check_params("mistral", {})


# ---------------------------------------------------------------------------- presets

def test_preset_families_and_overrides():
    assert presets.family("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert presets.family("openai/gpt-4o") == "gpt-4o"
    assert presets.family("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert presets.family("models/gemini-2.5-flash-lite") == "gemini-2.5-flash-lite"
    assert presets.family("llama3.2") is None
    m = presets.apply("gemini", {"name": "g", "model_name": "gemini-2.5-flash", "input_usd_per_mtok": 0.5})
    assert (m["provider"], m["base_url"], m["tool_mode"], m["secret_name"]) == \
        ("gemini", "https://generativelanguage.googleapis.com/v1beta", "native", "gemini_api_key")
    assert (m["input_usd_per_mtok"], m["output_usd_per_mtok"], m["context_window"]) == (0.5, 2.50, 1_048_576)
    with pytest.raises(ValueError, match="valid: anthropic, gemini, llamacpp, ollama, openai, openrouter, vllm"):
        presets.apply("azure", {})
    with pytest.raises(ValueError, match="preset ollama uses provider ollama, but provider anthropic was given"):
        presets.apply("ollama", {"provider": "anthropic"})


def test_register_model_with_a_preset(conn: psycopg.Connection):
    conn.execute("SELECT pgagent.register_model('claude', model_name => 'claude-haiku-4-5-20251001', "
                 "preset => 'anthropic')")
    conn.execute("SELECT pgagent.register_model('local', model_name => 'qwen3:8b', preset => 'ollama', "
                 "params => '{\"num_ctx\": 8192}', base_url => 'http://127.0.0.1:11500')")
    conn.execute("SELECT pgagent.register_model('router', model_name => 'openai/gpt-4o-mini', preset => 'openrouter', "
                 "secret_name => '')")
    conn.execute("SELECT pgagent.register_model('emb', model_name => 'nomic-embed-text', preset => 'ollama', "
                 "kind => 'embedding')")
    conn.execute("SELECT pgagent.register_model('plain-anthropic', provider => 'anthropic', model_name => 'x')")
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT name, provider, base_url, tool_mode, secret_name, input_usd_per_mtok::float8, "
        "output_usd_per_mtok::float8, context_window, params FROM pgagent.model")}
    assert rows["claude"] == ("anthropic", "https://api.anthropic.com", "native", "anthropic_api_key", 1.0, 5.0,
                              200000, {})
    assert rows["local"] == ("ollama", "http://127.0.0.1:11500", "native", None, 0.0, 0.0, None, {"num_ctx": 8192})
    assert rows["router"] == ("openai", "https://openrouter.ai/api/v1", "native", None, 0.15, 0.6, 128000, {})
    assert rows["emb"][:2] == ("openai", "http://127.0.0.1:11434/v1")
    # no preset: the provider's usual base URL, no prices
    assert rows["plain-anthropic"][:2] == ("anthropic", "https://api.anthropic.com") and rows["plain-anthropic"][4] == 0
    for call, why in [("preset => 'azure'", "preset 'azure' is not known"),
                      ("preset => 'gemini', provider => 'openai'", "uses provider gemini, but provider openai"),
                      ("provider => 'gemini', kind => 'embedding'", "has no embeddings endpoint"),
                      ("preset => 'ollama', params => '{\"thinking_budget\": 5}'", '"thinking_budget" is not allowed')]:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=why):
            conn.execute(f"SELECT pgagent.register_model('bad', {call})")
        conn.rollback() if not conn.autocommit else None


# ---------------------------------------------------------------------------- structured answers (response_schema)

PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
          "required": ["name", "age"], "additionalProperties": False}


def structured_agent(conn: psycopg.Connection, llm: ScriptedLLM, provider: str = "openai", tools: str = "{}",
                     tool_mode: str = "native", **cfg: Any) -> int:
    setup_agent(conn, llm, provider=provider, tool_mode=tool_mode)
    conn.execute("SELECT pgagent.create_agent('extractor', model => 'scripted', tools => %s, config => %s)",
                 [tools, json.dumps({"response_schema": PERSON, **cfg})])
    return conn.execute("SELECT pgagent.start_conversation('extractor')").fetchone()[0]


@pytest.mark.parametrize("provider", ["openai", "gemini", "ollama"])
def test_response_schema_is_native_where_the_provider_has_it(conn, llm, provider):
    cid = structured_agent(conn, llm, provider)
    llm.script(text('{"name": "Ada", "age": 36}'))
    r = send(conn, cid, "Ada Lovelace, 36, mathematician")
    assert r["status"] == "completed" and r["answer"] == '{"name":"Ada","age":36}'
    body = llm.requests[0]["body"]
    if provider == "openai":
        assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": PERSON}}
    elif provider == "gemini":
        assert body["generationConfig"]["responseJsonSchema"] == PERSON
    else:
        assert body["format"] == PERSON
    assert "matches this JSON Schema" in json.dumps(body)   # and the prompt says so


def test_response_schema_is_validated_and_sent_back_where_it_is_not_native(conn, llm):
    cid = structured_agent(conn, llm, "anthropic")
    llm.script(text("Her name is Ada and she is 36."), text('```json\n{"name": "Ada", "age": "36"}\n```'),
               text('```json\n{"name": "Ada", "age": 36}\n```'))
    r = send(conn, cid, "Ada Lovelace, 36")
    assert r["status"] == "completed" and json.loads(r["answer"]) == {"name": "Ada", "age": 36}
    assert "response_format" not in llm.requests[0]["body"]
    guards = [g["payload"] for g in steps(conn, r["turn_id"], "guardrail")]
    assert [g["guard"] for g in guards] == ["response_schema"] * 2
    assert "not valid JSON" in guards[0]["reason"] and "at age: '36' is not of type 'integer'" in guards[1]["reason"]
    # the model saw what was wrong, as a user message after its answer
    last = llm.requests[2]["body"]["messages"]
    assert last[-2] == {"role": "assistant", "content": '```json\n{"name": "Ada", "age": "36"}\n```'}
    assert last[-1]["role"] == "user" and \
        "Problem: the answer does not match the response_schema at age" in last[-1]["content"]


def test_response_schema_retries_run_out_into_a_failed_turn(conn, llm):
    cid = structured_agent(conn, llm, "openai", response_schema_retries=1)
    llm.script(text("no idea"), text('{"name": "Ada"}'))
    r = send(conn, cid, "who?")
    assert r["status"] == "failed"
    assert "does not match the agent's response_schema after 2 attempt(s)" in r["error"]
    assert "'age' is a required property" in r["error"]
    err = steps(conn, r["turn_id"], "error")[-1]["payload"]
    assert err["error_kind"] == "response_schema" and err["answer"] == '{"name": "Ada"}'


def test_response_schema_in_json_schema_tool_mode_types_the_answer(conn, llm):
    cid = structured_agent(conn, llm, "openai", tools="{run_sql}", tool_mode="json_schema")
    llm.script(text(json.dumps({"tool": "run_sql", "arguments": {"query": "SELECT 36 AS age"}})),
               text(json.dumps({"answer": {"name": "Ada", "age": 36}})))
    r = send(conn, cid, "Ada's age from the data")
    assert r["status"] == "completed" and r["answer"] == '{"name":"Ada","age":36}'
    options = llm.requests[0]["body"]["response_format"]["json_schema"]["schema"]["oneOf"]
    assert options[-1]["properties"]["answer"] == PERSON


def test_response_schema_with_tools_on_gemini_is_validated_not_native(conn, llm):
    cid = structured_agent(conn, llm, "gemini", tools="{run_sql}")
    llm.script(text('{"name": "Ada", "age": 36}'))
    assert send(conn, cid, "x")["answer"] == '{"name":"Ada","age":36}'
    assert "responseJsonSchema" not in llm.requests[0]["body"].get("generationConfig", {})


def test_a_bad_response_schema_is_refused(conn, llm):
    setup_agent(conn, llm)
    for schema, why in [({"type": "array"}, 'response_schema must describe an object'),
                        ({"type": "object", "properties": {"a": {"$ref": "https://x.example/s"}}},
                         "response_schema must be self-contained"),
                        ({"type": "object", "required": 5}, "response_schema is not a valid JSON Schema")]:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=why):
            conn.execute("SELECT pgagent.create_agent('bad', model => 'scripted', config => %s)",
                         [json.dumps({"response_schema": schema})])
