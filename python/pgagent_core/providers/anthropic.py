"""Anthropic Messages API, translated to and from OpenAI chat-completions terms.

Reference: https://docs.anthropic.com/en/api/messages (POST /v1/messages, headers x-api-key and
anthropic-version: 2023-06-01; ``system`` is a top-level field; tool calls are ``tool_use``
content blocks answered by ``tool_result`` blocks in the next user message; ``max_tokens`` is
required; usage is ``input_tokens``/``output_tokens``).
"""

from __future__ import annotations

import json
from typing import Any

from . import ProviderError, Reply, ToolCall

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 1024
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length"}


def build_request(model: dict[str, Any], messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                  params: dict[str, Any], api_key: str | None,
                  response_format: dict[str, Any] | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url, headers, body) for POST {base_url}/v1/messages. ``response_format`` is ignored:
    the Messages API has no equivalent, so use tool_mode native with Anthropic models."""
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
                    args = json.loads(tc["function"]["arguments"] or "{}")
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
    body.update({k: v for k, v in params.items() if v is not None})
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


def parse_response(data: dict[str, Any]) -> Reply:
    """Normalize a Messages API reply. Raises ProviderError(kind='malformed') without ``content``."""
    blocks = data.get("content")
    if not isinstance(blocks, list):
        raise ProviderError("malformed Anthropic reply: no content list", kind="malformed", retryable=True)
    texts, thinking, calls = [], [], []
    for b in blocks:
        t = (b or {}).get("type")
        if t == "text":
            texts.append(b.get("text", ""))
        elif t == "thinking":
            thinking.append(b.get("thinking", ""))
        elif t == "tool_use":
            calls.append(ToolCall(id=b.get("id") or f"toolu_{len(calls)}", name=b.get("name", ""),
                                  arguments=json.dumps(b.get("input") or {})))
    usage = data.get("usage") or {}
    return Reply(content="".join(texts) if texts else None, tool_calls=calls,
                 finish_reason=_FINISH.get(data.get("stop_reason"), data.get("stop_reason")),
                 prompt_tokens=int(usage.get("input_tokens") or 0),
                 completion_tokens=int(usage.get("output_tokens") or 0),
                 reasoning="\n".join(thinking) or None, model=data.get("model"))
