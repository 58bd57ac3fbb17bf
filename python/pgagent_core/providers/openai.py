"""OpenAI-compatible chat completions (OpenAI, llama.cpp, vLLM, Ollama's /v1).

Reference: https://platform.openai.com/docs/api-reference/chat/create
"""

from __future__ import annotations

import json
from typing import Any

from . import (Reply, ToolCall, allowed, arguments_text, describe, malformed, obj, opt_str, req_str, stream_error,
               tokens)
from ..limits import clean_json, clean_text


def build_request(model: dict[str, Any], messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                  params: dict[str, Any], api_key: str | None,
                  response_format: dict[str, Any] | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url, headers, body) for POST /chat/completions. ``content: null`` is sent as ``""``
    (some servers reject null). Of ``params`` only those in ``ALLOWED_PARAMS["openai"]`` and not
    None are sent (never model, messages, tools, response_format or stream), and
    ``tool_choice`` only when there are ``tools``. Does not raise for bad params."""
    body: dict[str, Any] = {"model": model["model_name"], "messages": [_clean(m) for m in messages]}
    extra = allowed(params, "openai")
    if not tools:
        extra.pop("tool_choice", None)
        extra.pop("parallel_tool_calls", None)
    body.update(extra)
    if tools:
        body["tools"] = tools
    if response_format is not None:
        body["response_format"] = response_format
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return model["base_url"].rstrip("/") + "/chat/completions", headers, body


def _clean(m: dict[str, Any]) -> dict[str, Any]:
    if m.get("content") is None:
        m = {**m, "content": ""}
    return m


def _content(value: Any, where: str) -> str | None:
    """message.content: a string, null, or an array of content parts whose text parts
    (``{"type": "text", "text": "..."}``) are joined; other part types are skipped."""
    if value is None or isinstance(value, str):
        return opt_str(value, where)
    if not isinstance(value, list):
        raise malformed(f"{where} must be a string, null or an array of text parts, got {describe(value)}")
    texts = []
    for i, part in enumerate(value):
        part = obj(part, f"{where}[{i}]")
        if req_str(part.get("type"), f"{where}[{i}].type") == "text":
            texts.append(req_str(part.get("text"), f"{where}[{i}].text"))
    return clean_text("".join(texts)) if texts else None


def _tool_call(i: int, tc: Any) -> ToolCall:
    where = f"choices[0].message.tool_calls[{i}]"
    tc = obj(tc, where)
    kind = tc.get("type")
    if kind is not None and kind != "function":
        raise malformed(f'{where}.type must be "function", got {describe(kind)}')
    fn = obj(tc.get("function"), f"{where}.function")
    name = fn.get("name")
    if not isinstance(name, str) or not (clean_text(name) or "").strip():
        raise malformed(f"tool call without a function name: {where}.function.name must be a non-empty string, "
                        f"got {describe(name)}")
    call_id = opt_str(tc.get("id"), f"{where}.id")
    extra = tc.get("extra_content")   # Gemini's OpenAI-compatible endpoint: thought signatures
    return ToolCall(id=call_id or f"call_{i}", name=clean_text(name) or "",
                    arguments=arguments_text(fn.get("arguments"), f"{where}.function.arguments"),
                    extra=clean_json(extra) if isinstance(extra, dict) and extra else None)


def parse_response(data: dict[str, Any]) -> Reply:
    """Normalize a chat.completion object into a :class:`Reply` (first choice; token counts in
    tokens; every string cleaned of NUL characters and lone surrogates).

    Raises ProviderError(kind="malformed", retryable=True) naming the field when anything has
    the wrong type: the reply or ``choices[0]``/``message`` not an object, ``choices`` not a
    non-empty array, ``content`` not a string/null/array of text parts, ``tool_calls`` not an
    array of objects with a ``function`` object holding a non-empty ``name`` and ``arguments``
    as JSON text or an object, ``id``/``finish_reason``/``model``/``reasoning_content`` not
    strings or null, ``usage`` not an object, token counts not integers in
    0..limits.MAX_TOKENS_PER_CALL.
    """
    data = obj(data, "the chat completion")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise malformed(f"no choices[0].message: choices must be a non-empty array, got {describe(choices)}")
    choice = obj(choices[0], "choices[0]")
    msg = obj(choice.get("message"), "choices[0].message")
    raw_calls = msg.get("tool_calls")
    if raw_calls is None:
        raw_calls = []
    if not isinstance(raw_calls, list):
        raise malformed(f"choices[0].message.tool_calls must be an array, got {describe(raw_calls)}")
    calls = [_tool_call(i, tc) for i, tc in enumerate(raw_calls)]
    usage = obj(data.get("usage"), "usage", optional=True)
    reasoning = (opt_str(msg.get("reasoning_content"), "choices[0].message.reasoning_content")
                 or opt_str(msg.get("reasoning"), "choices[0].message.reasoning"))
    return Reply(content=_content(msg.get("content"), "choices[0].message.content"), tool_calls=calls,
                 finish_reason=opt_str(choice.get("finish_reason"), "choices[0].finish_reason"),
                 prompt_tokens=tokens(usage.get("prompt_tokens"), "usage.prompt_tokens"),
                 completion_tokens=tokens(usage.get("completion_tokens"), "usage.completion_tokens"),
                 reasoning=reasoning or None, model=opt_str(data.get("model"), "model"))


#: Body fields of a streamed request: usage arrives in a last chunk with empty choices
#: (https://platform.openai.com/docs/api-reference/chat/create#chat-create-stream_options).
STREAM_FIELDS = {"stream": True, "stream_options": {"include_usage": True}}


class StreamState:
    """Rebuilds a chat.completion object from the ``chat.completion.chunk`` events of a streamed
    call (https://platform.openai.com/docs/api-reference/chat-streaming): ``delta.content`` and
    ``delta.reasoning_content``/``reasoning`` are concatenated, ``delta.tool_calls`` are merged by
    ``index`` (id and name from the first chunk that has them, ``arguments`` concatenated), the
    last non-null ``finish_reason`` and ``usage`` win. :func:`parse_response` then checks the
    rebuilt object like any reply, so a streamed and a non-streamed call give the same Reply.
    """

    def __init__(self) -> None:
        self.n = 0
        self.model: Any = None
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: Any = None
        self.usage: Any = None

    def feed(self, event: dict[str, Any]) -> str | None:
        """Take one chunk; return the answer text it adds (None if it adds none). Raises
        ProviderError: kind ``http_error`` for an ``error`` event (retryable), ``malformed``
        for a chunk of the wrong shape."""
        self.n += 1
        stream_error(event)
        try:
            if event.get("model") is not None:
                self.model = event["model"]
            if event.get("usage") is not None:
                self.usage = event["usage"]
            added = []
            for choice in event.get("choices") or []:
                if choice.get("index", 0) != 0:
                    continue
                if choice.get("finish_reason") is not None:
                    self.finish_reason = choice["finish_reason"]
                delta = choice.get("delta") or {}
                for key in ("content", "reasoning_content", "reasoning"):
                    if delta.get(key) is not None and not isinstance(delta[key], str):
                        raise malformed(f"stream chunk {self.n}: choices[0].delta.{key} must be a string or null, "
                                        f"got {describe(delta[key])}")
                if isinstance(delta.get("content"), str) and delta["content"]:
                    self.content.append(delta["content"])
                    added.append(delta["content"])
                for key in ("reasoning_content", "reasoning"):
                    if isinstance(delta.get(key), str) and delta[key]:
                        self.reasoning.append(delta[key])
                for tc in delta.get("tool_calls") or []:
                    call = self.calls.setdefault(int(tc.get("index", len(self.calls))),
                                                 {"id": None, "type": "function",
                                                  "function": {"name": "", "arguments": ""}})
                    if tc.get("id") and not call["id"]:
                        call["id"] = tc["id"]
                    if isinstance(tc.get("extra_content"), dict):
                        call["extra_content"] = tc["extra_content"]
                    fn = tc.get("function") or {}
                    if fn.get("name") and not call["function"]["name"]:
                        call["function"]["name"] = fn["name"]
                    if fn.get("arguments") is not None:
                        call["function"]["arguments"] += fn["arguments"] if isinstance(fn["arguments"], str) \
                            else json.dumps(fn["arguments"])
        except (AttributeError, TypeError, ValueError) as e:
            raise malformed(f"stream chunk {self.n} has the wrong shape ({type(e).__name__}: {e})") from None
        return "".join(added) or None

    def result(self) -> dict[str, Any]:
        """The chat.completion object the chunks add up to."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content) or None}
        if self.calls:
            message["tool_calls"] = [self.calls[i] for i in sorted(self.calls)]
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        return {"object": "chat.completion", "model": self.model,
                "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason}],
                "usage": self.usage}
