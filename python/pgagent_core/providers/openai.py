"""OpenAI-compatible chat completions (OpenAI, llama.cpp, vLLM, Ollama's /v1).

Reference: https://platform.openai.com/docs/api-reference/chat/create
"""

from __future__ import annotations

from typing import Any

from . import ProviderError, Reply, ToolCall


def build_request(model: dict[str, Any], messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                  params: dict[str, Any], api_key: str | None,
                  response_format: dict[str, Any] | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(url, headers, body) for POST /chat/completions. ``content: null`` is sent as ``""``
    (some servers reject null), and ``tool_choice`` only when the params ask for it."""
    body: dict[str, Any] = {"model": model["model_name"], "messages": [_clean(m) for m in messages]}
    body.update({k: v for k, v in params.items() if v is not None})
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


def parse_response(data: dict[str, Any]) -> Reply:
    """Normalize a chat.completion object. Raises ProviderError(kind='malformed') when
    ``choices[0].message`` is missing or a tool call lacks its function name."""
    try:
        choice = data["choices"][0]
        msg = choice["message"]
        if not isinstance(msg, dict):
            raise TypeError("message is not an object")
    except (KeyError, IndexError, TypeError) as e:
        raise ProviderError(f"malformed chat completion: no choices[0].message ({e})",
                            kind="malformed", retryable=True) from None
    calls = []
    for i, tc in enumerate(msg.get("tool_calls") or []):
        fn = (tc or {}).get("function") or {}
        if not fn.get("name"):
            raise ProviderError("malformed chat completion: tool call without a function name",
                                kind="malformed", retryable=True)
        args = fn.get("arguments")
        if not isinstance(args, str):  # some servers send an object
            from . import dumps
            args = dumps(args if args is not None else {})
        calls.append(ToolCall(id=tc.get("id") or f"call_{i}", name=fn["name"], arguments=args))
    usage = data.get("usage") or {}
    return Reply(content=msg.get("content"), tool_calls=calls, finish_reason=choice.get("finish_reason"),
                 prompt_tokens=int(usage.get("prompt_tokens") or 0),
                 completion_tokens=int(usage.get("completion_tokens") or 0),
                 reasoning=msg.get("reasoning_content") or msg.get("reasoning"), model=data.get("model"))
