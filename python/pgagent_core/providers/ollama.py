"""Ollama's native chat API (``POST /api/chat``), translated to and from OpenAI chat-completions
terms. (Ollama's OpenAI-compatible ``/v1`` endpoint is served by the ``openai`` provider.)

Reference: https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion
(``model``, ``messages`` with ``role`` system/user/assistant/tool, assistant ``tool_calls`` as
``{"function": {"name", "arguments": {object}}}``, tool results as ``{"role": "tool",
"content", "tool_name"}``; ``tools`` in OpenAI's function format; ``format`` a JSON Schema for
structured output; ``options`` for sampling (``num_predict``, ``temperature``, ...);
``stream`` defaults to true, so false is sent explicitly. A streamed reply is newline-delimited
JSON (``application/x-ndjson``): each line a partial message, the last ``done: true`` with
``done_reason``, ``prompt_eval_count`` (prompt tokens) and ``eval_count`` (completion tokens)).
"""

from __future__ import annotations

from typing import Any

from . import Reply, allowed, describe, malformed, named_call, obj, opt_str, stream_error, tokens
from ..limits import clean_text, parse_json

DEFAULT_BASE_URL = "http://127.0.0.1:11434"
#: params (OpenAI names) -> Ollama ``options`` names; the rest of ALLOWED_PARAMS["ollama"] are top-level.
_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
            "max_tokens": "num_predict", "stop": "stop", "seed": "seed", "repeat_penalty": "repeat_penalty",
            "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty", "num_ctx": "num_ctx"}


def base(url: str) -> str:
    """The server's root URL: a trailing ``/``, ``/v1`` or ``/api`` is dropped (so a base_url
    copied from an OpenAI-compatible setup still works)."""
    url = url.rstrip("/")
    for suffix in ("/v1", "/api"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def build_request(model: dict[str, Any], messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                  params: dict[str, Any], api_key: str | None,
                  response_format: dict[str, Any] | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url, headers, body) for POST ``{base}/api/chat`` with ``stream: false``. Of ``params``
    (``ALLOWED_PARAMS["ollama"]``) the sampling ones go into ``options`` (max_tokens as
    num_predict, tokens; num_ctx: the context size, tokens), ``keep_alive`` and ``think`` at the
    top level. A json_schema ``response_format`` becomes ``format`` (the schema); json_object
    becomes ``"json"``. An API key (a proxy in front of Ollama) is sent as a Bearer token. Does
    not raise for bad params."""
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for m in messages:
        role = m["role"]
        msg: dict[str, Any] = {"role": role, "content": m.get("content") or ""}
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for tc in m["tool_calls"]:
                names[tc["id"]] = tc["function"]["name"]
                try:
                    args = parse_json(tc["function"].get("arguments") or "{}", what="arguments")
                except ValueError:
                    args = {}
                calls.append({"function": {"name": tc["function"]["name"],
                                           "arguments": args if isinstance(args, dict) else {}}})
            msg["tool_calls"] = calls
        elif role == "tool":
            msg["tool_name"] = names.get(m.get("tool_call_id") or "", "tool")
        out.append(msg)
    p = allowed(params, "ollama")
    body: dict[str, Any] = {"model": model["model_name"], "messages": out, "stream": False}
    options = {theirs: p[ours] for ours, theirs in _OPTIONS.items() if ours in p}
    if isinstance(options.get("stop"), str):
        options["stop"] = [options["stop"]]
    if options:
        body["options"] = options
    for key in ("keep_alive", "think"):
        if key in p:
            body[key] = p[key]
    if tools:
        body["tools"] = tools
    if response_format and response_format.get("type") == "json_schema":
        body["format"] = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
    elif response_format and response_format.get("type") == "json_object":
        body["format"] = "json"
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return base(model["base_url"]) + "/api/chat", headers, body


#: Body fields of a streamed request (the reply is newline-delimited JSON).
STREAM_FIELDS = {"stream": True}


def parse_response(data: dict[str, Any]) -> Reply:
    """Normalize an ``/api/chat`` reply into a :class:`Reply`: ``message.content`` as content,
    ``message.thinking`` as reasoning, ``message.tool_calls`` as tool calls (finish_reason
    ``tool_calls``; arguments an object or JSON text), ``done_reason`` as finish_reason (stop,
    length; ``load``/``unload`` as stop), ``prompt_eval_count``/``eval_count`` as prompt and
    completion tokens. Every string is cleaned.

    Raises ProviderError: kind ``http_error`` (retryable) for a reply that is an ``error``
    object; kind ``malformed`` (retryable) naming the field when ``message`` is not an object,
    content/thinking not strings, a tool call lacks a non-empty function name or has arguments
    that are neither an object nor JSON text, or a count is not an integer in range."""
    from . import ProviderError

    data = obj(data, "the Ollama reply")
    if data.get("error") is not None:
        raise ProviderError(f"the server reported an error: {clean_text(str(data['error']))[:2000]}", retryable=True)
    msg = obj(data.get("message"), "message")
    raw_calls = msg.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise malformed(f"message.tool_calls must be an array, got {describe(raw_calls)}")
    calls = []
    for i, tc in enumerate(raw_calls):
        where = f"message.tool_calls[{i}]"
        fn = obj(obj(tc, where).get("function"), f"{where}.function")
        calls.append(named_call(fn.get("name"), fn.get("arguments"), opt_str(tc.get("id"), f"{where}.id"), where,
                                ".function.name", ".function.arguments"))
    done = opt_str(data.get("done_reason"), "done_reason")
    finish = "tool_calls" if calls else ({"load": "stop", "unload": "stop"}.get(done, done) if done else None)
    return Reply(content=opt_str(msg.get("content"), "message.content") or None, tool_calls=calls,
                 finish_reason=finish, prompt_tokens=tokens(data.get("prompt_eval_count"), "prompt_eval_count"),
                 completion_tokens=tokens(data.get("eval_count"), "eval_count"),
                 reasoning=opt_str(msg.get("thinking"), "message.thinking") or None,
                 model=opt_str(data.get("model"), "model"))


class StreamState:
    """Rebuilds an ``/api/chat`` reply from the lines of a streamed call: ``message.content``
    and ``message.thinking`` pieces are concatenated, ``message.tool_calls`` (each sent whole)
    appended, and the ``done: true`` line's done_reason and counts kept.
    :func:`parse_response` then checks the rebuilt reply like any other."""

    def __init__(self) -> None:
        self.n = 0
        self.content: list[str] = []
        self.thinking: list[str] = []
        self.calls: list[Any] = []
        self.last: dict[str, Any] = {}

    def feed(self, event: dict[str, Any]) -> str | None:
        """Take one line's object; return the answer text it adds (None if none). Raises
        ProviderError: kind ``http_error`` (retryable) for an ``error`` line, ``malformed`` for
        a line of the wrong shape."""
        self.n += 1
        stream_error(event)
        msg = event.get("message") or {}
        if not isinstance(msg, dict):
            raise malformed(f"stream line {self.n}: message must be an object, got {describe(msg)}")
        for key, into in (("content", self.content), ("thinking", self.thinking)):
            if msg.get(key) is not None and not isinstance(msg[key], str):
                raise malformed(f"stream line {self.n}: message.{key} must be a string, got {describe(msg[key])}")
            if msg.get(key):
                into.append(msg[key])
        calls = msg.get("tool_calls") or []
        if not isinstance(calls, list):
            raise malformed(f"stream line {self.n}: message.tool_calls must be an array, got {describe(calls)}")
        self.calls.extend(calls)
        self.last = event
        return msg.get("content") or None

    def result(self) -> dict[str, Any]:
        """The ``/api/chat`` reply the lines add up to."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.content)}
        if self.thinking:
            message["thinking"] = "".join(self.thinking)
        if self.calls:
            message["tool_calls"] = self.calls
        return {**{k: v for k, v in self.last.items() if k != "message"}, "message": message}
