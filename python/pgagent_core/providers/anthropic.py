"""Anthropic Messages API, translated to and from OpenAI chat-completions terms.

Reference: https://docs.anthropic.com/en/api/messages (POST /v1/messages, headers x-api-key and
anthropic-version: 2023-06-01; ``system`` is a top-level field; tool calls are ``tool_use``
content blocks answered by ``tool_result`` blocks in the next user message; ``max_tokens`` is
required; usage is ``input_tokens``/``output_tokens``).
"""

from __future__ import annotations

from typing import Any

from . import Reply, ToolCall, allowed, describe, malformed, named_call, obj, opt_str, req_str, tokens
from ..limits import clean_text, parse_json

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


def build_request(model: dict[str, Any], messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                  params: dict[str, Any], api_key: str | None,
                  response_format: dict[str, Any] | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url, headers, body) for POST {base_url}/v1/messages. ``response_format`` is ignored:
    the Messages API has no equivalent, so use tool_mode native with Anthropic models. Of
    ``params`` only those in ``ALLOWED_PARAMS["anthropic"]`` and not None are sent (never
    model, system, messages, tools or stream); ``max_tokens`` defaults to
    :data:`DEFAULT_MAX_TOKENS` (tokens). Does not raise for bad params."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system" and m.get("content"))
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m["role"]
        if role == "system":
            continue
        if role == "tool":
            block = {"type": "tool_result", "tool_use_id": m["tool_call_id"], "content": m.get("content") or ""}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            continue
        if role == "assistant" and m.get("tool_calls"):
            blocks: list[dict[str, Any]] = []
            if m.get("content"):
                blocks.append({"type": "text", "text": m["content"]})
            for tc in m["tool_calls"]:
                try:
                    args = parse_json(tc["function"]["arguments"] or "{}", what="arguments")
                except ValueError:
                    args = {}
                blocks.append({"type": "tool_use", "id": tc["id"], "name": tc["function"]["name"],
                               "input": args if isinstance(args, dict) else {}})
            out.append({"role": "assistant", "content": blocks})
            continue
        out.append({"role": role, "content": m.get("content") or ""})
    body: dict[str, Any] = {"model": model["model_name"], "messages": out}
    if system:
        body["system"] = system
    body.update(allowed(params, "anthropic"))
    body.setdefault("max_tokens", DEFAULT_MAX_TOKENS)
    if tools:
        body["tools"] = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                          "input_schema": t["function"].get("parameters") or {"type": "object"}} for t in tools]
    headers = {"Content-Type": "application/json", "anthropic-version": API_VERSION}
    if api_key:
        headers["x-api-key"] = api_key
    base = model["base_url"].rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    return base + "/v1/messages", headers, body


def _block(i: int, b: Any, texts: list[str], thinking: list[str], calls: list[ToolCall]) -> None:
    where = f"content[{i}]"
    b = obj(b, where)
    kind = req_str(b.get("type"), f"{where}.type")
    if kind == "text":
        texts.append(req_str(b.get("text"), f"{where}.text"))
    elif kind == "thinking":
        thought = req_str(b.get("thinking"), f"{where}.thinking")
        thinking.append(thought)
    elif kind == "tool_use":
        if isinstance(b.get("input"), str):
            raise malformed(f"{where}.input must be an object, got {describe(b['input'])}")
        call = named_call(b.get("name"), b.get("input"), opt_str(b.get("id"), f"{where}.id"), where, ".name", ".input")
        call.id = call.id or f"toolu_{len(calls)}"
        calls.append(call)
    # other block types (redacted_thinking, server tool blocks...) carry nothing the loop uses


def parse_response(data: dict[str, Any]) -> Reply:
    """Normalize a Messages API reply into a :class:`Reply` (text blocks joined as content,
    thinking blocks as reasoning, tool_use blocks as tool calls; stop_reason mapped to OpenAI's
    finish_reason; input/output_tokens as prompt/completion tokens; every string cleaned of NUL
    characters and lone surrogates).

    Raises ProviderError(kind="malformed", retryable=True) naming the field when ``content`` is
    not an array of objects with a string ``type``, a text/thinking block lacks its string, a
    tool_use block lacks a non-empty ``name`` or has an ``input`` that is not an object, an
    ``id``/``stop_reason``/``model`` is not a string or null, ``usage`` is not an object or a
    token count is not an integer in 0..limits.MAX_TOKENS_PER_CALL.
    """
    data = obj(data, "the Anthropic reply")
    blocks = data.get("content")
    if not isinstance(blocks, list):
        raise malformed(f"no content list: content must be an array of blocks, got {describe(blocks)}")
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[ToolCall] = []
    for i, b in enumerate(blocks):
        _block(i, b, texts, thinking, calls)
    usage = obj(data.get("usage"), "usage", optional=True)
    stop = opt_str(data.get("stop_reason"), "stop_reason")
    return Reply(content=clean_text("".join(texts)) if texts else None, tool_calls=calls,
                 finish_reason=_FINISH.get(stop, stop) if stop is not None else None,
                 prompt_tokens=tokens(usage.get("input_tokens"), "usage.input_tokens"),
                 completion_tokens=tokens(usage.get("output_tokens"), "usage.output_tokens"),
                 reasoning=clean_text("\n".join(thinking)) or None, model=opt_str(data.get("model"), "model"))


#: Body field of a streamed request.
STREAM_FIELDS = {"stream": True}


class StreamState:
    """Rebuilds a Messages API reply from the events of a streamed call
    (https://docs.anthropic.com/en/api/messages-streaming): ``message_start`` gives the id, model
    and input usage; ``content_block_start`` opens a block at its ``index``;
    ``content_block_delta`` adds ``text_delta`` text, ``thinking_delta`` thinking or
    ``input_json_delta`` partial JSON of a tool_use input (parsed at ``content_block_stop``);
    ``message_delta`` gives the stop_reason and the output usage; ``ping`` and ``message_stop``
    carry nothing more. :func:`parse_response` then checks the rebuilt reply like any other.
    """

    def __init__(self) -> None:
        self.n = 0
        self.message: dict[str, Any] = {"content": [], "usage": {}}
        self.json: dict[int, str] = {}

    def _block(self, index: Any) -> dict[str, Any]:
        content = self.message["content"]
        if not isinstance(index, int) or not 0 <= index < len(content):
            raise ValueError(f"no open content block {index!r}")
        return content[index]

    def feed(self, event: dict[str, Any]) -> str | None:
        """Take one event; return the answer text it adds (None if it adds none). Raises
        ProviderError: kind ``http_error`` for an ``error`` event (retryable: Anthropic sends
        ``overloaded_error`` this way), ``malformed`` for an event of the wrong shape or a
        tool_use input that is not a JSON object."""
        from . import ProviderError

        self.n += 1
        kind = event.get("type")
        try:
            if kind == "error":
                err = event.get("error") or {}
                raise ProviderError(f"the server reported an error in the stream: "
                                    f"{clean_text(str(err.get('message', err)))[:2000]}", retryable=True)
            if kind == "message_start":
                msg = event["message"]
                self.message.update({k: msg.get(k) for k in ("id", "model", "stop_reason")})
                self.message["usage"] = dict(msg.get("usage") or {})
            elif kind == "content_block_start":
                index, block = event["index"], dict(event["content_block"])
                if index != len(self.message["content"]):
                    raise ValueError(f"content block {index} starts out of order")
                if block.get("type") == "tool_use":
                    self.json[index] = ""
                self.message["content"].append(block)
            elif kind == "content_block_delta":
                block, delta = self._block(event["index"]), event["delta"]
                if delta.get("type") == "text_delta":
                    block["text"] = block.get("text", "") + delta["text"]
                    return delta["text"] or None
                if delta.get("type") == "thinking_delta":
                    block["thinking"] = block.get("thinking", "") + delta["thinking"]
                elif delta.get("type") == "input_json_delta":
                    self.json[event["index"]] += delta["partial_json"]
            elif kind == "content_block_stop":
                index = event["index"]
                block = self._block(index)
                if index in self.json:
                    raw = self.json.pop(index)
                    try:
                        block["input"] = parse_json(raw, what="tool_use input") if raw.strip() else {}
                    except ValueError as e:
                        raise malformed(f"content[{index}].input (streamed) is not JSON: {e}") from None
            elif kind == "message_delta":
                delta = event.get("delta") or {}
                if "stop_reason" in delta:
                    self.message["stop_reason"] = delta["stop_reason"]
                self.message["usage"].update(event.get("usage") or {})
        except (KeyError, AttributeError, TypeError, ValueError) as e:
            raise malformed(f"stream event {self.n} ({kind}) has the wrong shape ({type(e).__name__}: {e})") from None
        return None

    def result(self) -> dict[str, Any]:
        """The Messages API reply the events add up to (tool_use inputs still being streamed
        when the stream ended are parsed as they are)."""
        for index in list(self.json):
            raw = self.json.pop(index)
            try:
                self.message["content"][index]["input"] = parse_json(raw, what="tool_use input") if raw.strip() \
                    else {}
            except ValueError as e:
                raise malformed(f"content[{index}].input (streamed) is not JSON: {e}") from None
        return {"type": "message", **self.message}
