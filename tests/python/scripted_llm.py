#!/usr/bin/env python3
"""A deterministic, scripted LLM HTTP server for tests.

:class:`ScriptedLLM` serves, on ``127.0.0.1`` and a free port, in a
background thread:

* ``POST /v1/chat/completions`` -- OpenAI chat-completions API;
* ``POST /v1/messages``         -- Anthropic Messages API;
* ``POST /v1beta/models/{model}:generateContent`` and ``:streamGenerateContent?alt=sse`` --
  Google Gemini API (https://ai.google.dev/api/generate-content; function calls as
  ``functionCall`` parts, usage as ``usageMetadata``; :attr:`ScriptedLLM.thought_signature`
  adds a ``thoughtSignature`` to each function-call part, as Gemini 3 models do);
* ``POST /api/chat``            -- Ollama's native chat API
  (https://github.com/ollama/ollama/blob/main/docs/api.md#generate-a-chat-completion; tool calls
  with object arguments and no ids, ``prompt_eval_count``/``eval_count``; ``stream`` defaults to
  true there, so a request without ``"stream": false`` gets newline-delimited JSON);
* ``POST /v1/embeddings``       -- OpenAI embeddings API (deterministic
  hash-based vectors unless replies were queued with
  :meth:`ScriptedLLM.script_embeddings`).

Chat replies come from one FIFO queue shared by both chat endpoints, filled
with :meth:`ScriptedLLM.script` and the reply helpers :func:`text`,
:func:`tool_calls`, :func:`http_error`, :func:`hang` and :func:`raw`.  The
same reply object is rendered in OpenAI or Anthropic shape depending on the
endpoint that pops it (OpenAI, Anthropic, Gemini or Ollama).  When the queue is empty the server answers HTTP 500
with an error whose type is ``script_exhausted``, so a test that makes more
calls than it scripted fails visibly.

A request with ``"stream": true`` gets its text or tool-call reply as server-sent events
(OpenAI ``chat.completion.chunk`` events ending with ``data: [DONE]``, a usage chunk when
``stream_options.include_usage`` is set; Anthropic ``message_start`` ... ``message_stop``), the
content split into words, :attr:`ScriptedLLM.stream_delay_s` seconds apart.

Every request is recorded in :attr:`ScriptedLLM.requests`.

Example::

    with ScriptedLLM() as llm:
        llm.script(tool_calls([("sql", {"query": "select 1"})]), text("done"))
        ...  # point the code under test at llm.base_url
        assert llm.requests[0]["body"]["messages"][0]["role"] == "system"

Standalone: ``python3 tests/python/scripted_llm.py script.json [--port N]``
where ``script.json`` is a list of reply specs understood by
:func:`reply_from_spec`.

Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import math
import re
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple, Type, Union

__all__ = [
    "ScriptedLLM", "Reply", "TextReply", "ToolCallsReply", "HttpErrorReply",
    "HangReply", "RawReply", "EmbeddingReply", "ToolCall", "TrickleReply",
    "text", "tool_calls", "http_error", "hang", "raw", "embedding", "trickle",
    "reply_from_spec",
]

#: ``(name, arguments)`` or ``(name, arguments, explicit_id)``; *arguments*
#: is a dict (JSON-encoded for OpenAI) or a raw string sent verbatim.
ToolCallSpec = Union[Tuple[str, Union[Dict[str, Any], str]],
                     Tuple[str, Union[Dict[str, Any], str], str]]

OPENAI_CHAT = "/v1/chat/completions"
ANTHROPIC_MESSAGES = "/v1/messages"
OPENAI_EMBEDDINGS = "/v1/embeddings"
OLLAMA_CHAT = "/api/chat"
GEMINI_PREFIX = "/v1beta/models/"
_GEMINI_FINISH = {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}

_FINISH_TO_STOP_REASON = {
    "stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens",
    "content_filter": "refusal",
}


# --------------------------------------------------------------------- replies
@dataclass(frozen=True)
class ToolCall:
    """One tool call of a :class:`ToolCallsReply`."""

    name: str
    arguments: Union[Dict[str, Any], str]
    id: Optional[str] = None

    def openai_arguments(self) -> str:
        """Arguments as the JSON string OpenAI sends (raw strings verbatim)."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)

    def anthropic_input(self) -> Any:
        """Arguments as Anthropic's ``input`` object.

        A raw string that parses as JSON is decoded; otherwise it is sent as
        the (schema-violating) string itself so malformed input can be tested.
        """
        if not isinstance(self.arguments, str):
            return self.arguments
        try:
            return json.loads(self.arguments)
        except ValueError:
            return self.arguments


@dataclass(frozen=True)
class Reply:
    """Base class of all scripted replies."""


@dataclass(frozen=True)
class TextReply(Reply):
    """A final assistant answer."""

    content: str
    prompt_tokens: int = 10
    completion_tokens: int = 5
    finish_reason: str = "stop"


@dataclass(frozen=True)
class ToolCallsReply(Reply):
    """An assistant turn requesting native tool calls."""

    calls: Tuple[ToolCall, ...]
    content: Optional[str] = None
    prompt_tokens: int = 10
    completion_tokens: int = 5
    finish_reason: str = "tool_calls"


@dataclass(frozen=True)
class HttpErrorReply(Reply):
    """An HTTP error; ``body=None`` means an API-shaped JSON error."""

    status: int
    body: Union[str, Dict[str, Any], None] = None
    headers: Dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RawReply(Reply):
    """A verbatim response body (e.g. invalid JSON or JSON lacking ``choices``)."""

    body: str
    status: int = 200
    content_type: str = "application/json"


@dataclass(frozen=True)
class HangReply(Reply):
    """Sleep *seconds* (aborted by :meth:`ScriptedLLM.stop`), then send *then*.

    If the client gave up meanwhile the late answer is simply lost.
    """

    seconds: float
    then: Optional[Reply] = None


@dataclass(frozen=True)
class EmbeddingReply(Reply):
    """Explicit embedding vectors for ``/v1/embeddings``."""

    vectors: Tuple[Tuple[float, ...], ...]
    prompt_tokens: int = 8


@dataclass(frozen=True)
class TrickleReply(Reply):
    """Send *then* slowly: one byte every *byte_every_s* seconds (the body only, or with
    ``headers=True`` the status line and headers too).  Aborted by ``stop()`` or when the
    client goes away."""

    then: Reply
    byte_every_s: float = 0.3
    headers: bool = False


def text(content: str, prompt_tokens: int = 10, completion_tokens: int = 5,
         finish_reason: str = "stop") -> TextReply:
    """A final answer (``finish_reason`` ``"stop"``; ``"length"`` for truncation)."""
    return TextReply(content, prompt_tokens, completion_tokens, finish_reason)


def tool_calls(calls: Sequence[ToolCallSpec], content: Optional[str] = None,
               prompt_tokens: int = 10, completion_tokens: int = 5,
               finish_reason: str = "tool_calls") -> ToolCallsReply:
    """Native tool calls.

    *calls* holds ``(name, arguments)`` or ``(name, arguments, id)`` tuples.
    A dict *arguments* is JSON-encoded; a string is sent verbatim (use it for
    malformed JSON).  Without an explicit id, ids are ``call_N`` (OpenAI) /
    ``toolu_N`` (Anthropic), N counting up per server since the last reset.
    """
    parsed = []
    for spec in calls:
        if len(spec) == 3:
            name, args, call_id = spec  # type: ignore[misc]
        else:
            (name, args), call_id = spec, None  # type: ignore[misc]
        parsed.append(ToolCall(name, args, call_id))
    return ToolCallsReply(tuple(parsed), content, prompt_tokens, completion_tokens,
                          finish_reason)


def http_error(status: int, body: Union[str, Dict[str, Any], None] = None,
               headers: Optional[Dict[str, str]] = None,
               retry_after: Optional[float] = None) -> HttpErrorReply:
    """An HTTP error reply, e.g. ``http_error(429, retry_after=1)``.

    *body*: ``None`` gives an API-shaped JSON error, a dict is JSON-encoded,
    a string is sent verbatim.
    """
    hdrs = dict(headers or {})
    if retry_after is not None:
        hdrs["Retry-After"] = f"{retry_after:g}"
    return HttpErrorReply(status, body, hdrs)


def hang(seconds: float, then: Optional[Reply] = None) -> HangReply:
    """Wait *seconds* before answering with *then*.

    Default *then*: ``text("late reply")`` for chat, deterministic vectors for
    embeddings.  The wait is aborted (connection dropped) by ``stop()``.
    """
    return HangReply(seconds, then)


def raw(body_text: str, status: int = 200,
        content_type: str = "application/json") -> RawReply:
    """A verbatim body, for malformed responses."""
    return RawReply(body_text, status, content_type)


def embedding(*vectors: Sequence[float], prompt_tokens: int = 8) -> EmbeddingReply:
    """Explicit vectors for one ``/v1/embeddings`` call (one per input)."""
    return EmbeddingReply(tuple(tuple(float(x) for x in v) for v in vectors), prompt_tokens)


def trickle(body_or_reply: Union[Reply, str, Dict[str, Any]], byte_every_s: float = 0.3,
            headers: bool = False) -> TrickleReply:
    """A reply sent one byte every *byte_every_s* seconds, to test total-call timeouts.

    *body_or_reply*: a reply object (e.g. ``text("hi")``, rendered for the endpoint as
    usual), a string sent verbatim as a JSON body, or a dict JSON-encoded.  With
    ``headers=True`` the status line and headers trickle too.
    """
    if isinstance(body_or_reply, Reply):
        inner: Reply = body_or_reply
    elif isinstance(body_or_reply, str):
        inner = raw(body_or_reply)
    else:
        inner = raw(json.dumps(body_or_reply))
    return TrickleReply(inner, float(byte_every_s), bool(headers))


def reply_from_spec(spec: Dict[str, Any]) -> Reply:
    """Build a reply from a JSON-able spec (used by the ``__main__`` mode).

    Accepted shapes: ``{"text": "..."}``,
    ``{"tool_calls": [[name, args], ...], "content": "..."}``,
    ``{"http_error": 500, "body": ...}``, ``{"raw": "...", "status": 200}``,
    ``{"hang": 5, "then": {...}}``; token counts may be given as
    ``prompt_tokens`` / ``completion_tokens``.
    """
    tokens = {k: spec[k] for k in ("prompt_tokens", "completion_tokens") if k in spec}
    if "text" in spec:
        return text(spec["text"], **tokens)
    if "tool_calls" in spec:
        return tool_calls([tuple(c) for c in spec["tool_calls"]],  # type: ignore[misc]
                          spec.get("content"), **tokens)
    if "http_error" in spec:
        return http_error(int(spec["http_error"]), spec.get("body"), spec.get("headers"))
    if "raw" in spec:
        return raw(spec["raw"], int(spec.get("status", 200)),
                   spec.get("content_type", "application/json"))
    if "hang" in spec:
        then = reply_from_spec(spec["then"]) if "then" in spec else None
        return hang(float(spec["hang"]), then)
    if "trickle" in spec:
        return trickle(reply_from_spec(spec["then"]), float(spec["trickle"]), bool(spec.get("headers")))
    raise ValueError(f"unknown reply spec: {spec!r}")


# ---------------------------------------------------------------------- server
class _Response:
    """A rendered HTTP response."""

    #: seconds between bytes when the response trickles (:class:`TrickleReply`), else None
    trickle: Optional[float] = None
    trickle_headers: bool = False
    #: server-sent events (each a complete "event: ...\ndata: ...\n\n" text) instead of a body
    events: Optional[List[str]] = None
    event_delay: float = 0.0

    def __init__(self, status: int, body: Union[str, Dict[str, Any]],
                 content_type: str = "application/json",
                 headers: Optional[Dict[str, str]] = None) -> None:
        self.status = status
        self.body = body if isinstance(body, str) else json.dumps(body)
        self.content_type = content_type
        self.headers = headers or {}


def _api(route: str) -> str:
    if route == ANTHROPIC_MESSAGES:
        return "anthropic"
    if route == OLLAMA_CHAT:
        return "ollama"
    if route.startswith(GEMINI_PREFIX):
        return "gemini"
    return "openai"


def _gemini_route(route: str) -> Optional[Tuple[str, bool]]:
    """(model, streaming) of a Gemini method path, else None."""
    if not route.startswith(GEMINI_PREFIX) or ":" not in route:
        return None
    model, method = route[len(GEMINI_PREFIX):].rsplit(":", 1)
    if method not in ("generateContent", "streamGenerateContent"):
        return None
    return model, method == "streamGenerateContent"


def _error_body(api: str, message: str, err_type: str, code: Union[int, str, None]) -> Dict[str, Any]:
    if api == "anthropic":
        return {"type": "error", "error": {"type": err_type, "message": message}}
    if api == "gemini":
        return {"error": {"code": code if isinstance(code, int) else 500, "message": message, "status": err_type}}
    if api == "ollama":
        return {"error": message}
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}


class _Handler(http.server.BaseHTTPRequestHandler):
    """Request handler; all logic lives in :class:`ScriptedLLM`."""

    server_version = "ScriptedLLM/1.0"
    protocol_version = "HTTP/1.0"
    timeout = 30  # never let an idle client pin a thread forever

    def do_POST(self) -> None:  # noqa: N802 (http.server naming)
        llm: ScriptedLLM = self.server.llm  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
        resp = llm._handle(self.path, dict(self.headers.items()), raw_body)
        if resp is None:  # server stopping while hanging: drop the connection
            self.close_connection = True
            return
        data = resp.body.encode("utf-8")
        if resp.trickle is not None:
            self._send_trickled(llm, resp, data)
            return
        if resp.events is not None:
            self._send_events(llm, resp)
            return
        try:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # client timed out / went away

    def _send_trickled(self, llm: "ScriptedLLM", resp: "_Response", data: bytes) -> None:
        """Write *resp* one byte at a time, ``resp.trickle`` seconds apart."""
        self.close_connection = True
        head = [f"HTTP/1.0 {resp.status} {self.responses.get(resp.status, ('',))[0]}",
                f"Content-Type: {resp.content_type}", f"Content-Length: {len(data)}"]
        head += [f"{k}: {v}" for k, v in resp.headers.items()]
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        try:
            if resp.trickle_headers:
                data = head_bytes + data
            else:
                self.wfile.write(head_bytes)
            for i in range(len(data)):
                if llm._stopping.wait(resp.trickle):
                    return
                self.wfile.write(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # client gave up

    def _send_events(self, llm: "ScriptedLLM", resp: "_Response") -> None:
        """Write *resp.events* one by one, ``resp.event_delay`` seconds apart (the body ends when
        the connection closes, as HTTP/1.0 without Content-Length)."""
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", resp.content_type if resp.content_type != "application/json"
                             else "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.flush()
            for i, event in enumerate(resp.events or []):
                if i and resp.event_delay and llm._stopping.wait(resp.event_delay):
                    return
                self.wfile.write(event.encode("utf-8"))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # client gave up

    def do_GET(self) -> None:  # noqa: N802
        llm: ScriptedLLM = self.server.llm  # type: ignore[attr-defined]
        resp = llm._handle(self.path, dict(self.headers.items()), "", method="GET")
        assert resp is not None
        data = resp.body.encode("utf-8")
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        if self.server.llm.verbose:  # type: ignore[attr-defined]
            super().log_message(format, *args)


class ScriptedLLM:
    """Scripted OpenAI/Anthropic-compatible server on 127.0.0.1.

    :param port: TCP port, 0 (default) for a free one.
    :param embedding_dim: Vector size of unscripted embeddings when the
        request has no ``dimensions``.
    :param verbose: Log requests to stderr.
    """

    def __init__(self, port: int = 0, embedding_dim: int = 16, verbose: bool = False) -> None:
        self._requested_port = port
        self.embedding_dim = embedding_dim
        self.verbose = verbose
        self._lock = threading.Lock()
        self._queue: Deque[Reply] = deque()
        self._emb_queue: Deque[Reply] = deque()
        self._requests: List[Dict[str, Any]] = []
        self._tool_counter = 0
        self._msg_counter = 0
        self._stopping = threading.Event()
        #: seconds between the events of a streamed reply
        self.stream_delay_s = 0.0
        #: Gemini: when set, each functionCall part carries thoughtSignature f"{value}-{n}"
        self.thought_signature: Optional[str] = None
        #: when the chat queue is empty: a callable(request body) -> Reply answering from the
        #: request itself (so that concurrent turns get their replies in any order)
        self.responder: Optional[Callable[[Dict[str, Any]], Reply]] = None
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "ScriptedLLM":
        """Bind and serve in a daemon thread; returns ``self``."""
        if self._server is not None:
            raise RuntimeError("ScriptedLLM already started")
        self._stopping.clear()
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self._requested_port), _Handler)
        server.daemon_threads = True
        server.llm = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"ScriptedLLM:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging requests are aborted.  Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "ScriptedLLM":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.stop()

    # ----------------------------------------------------------- properties
    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._server is None:
            raise RuntimeError("ScriptedLLM is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """Anthropic-style base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def gemini_base_url(self) -> str:
        """Gemini-style base URL, ``http://127.0.0.1:PORT/v1beta``."""
        return f"http://127.0.0.1:{self.port}/v1beta"

    @property
    def ollama_base_url(self) -> str:
        """Ollama-style base URL, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> List[Dict[str, Any]]:
        """Snapshot of received requests, oldest first.

        Each is ``{"method", "path", "headers", "body", "raw_body", "time"}``:
        *headers* has lower-cased names, *body* is the decoded JSON (``None``
        if the body was not JSON), *raw_body* the text as received.
        """
        with self._lock:
            return list(self._requests)

    @property
    def remaining(self) -> int:
        """Number of chat replies still queued."""
        with self._lock:
            return len(self._queue)

    # -------------------------------------------------------------- control
    def script(self, *replies: Reply) -> "ScriptedLLM":
        """Append *replies* to the chat queue (shared by both chat APIs)."""
        for r in replies:
            if not isinstance(r, Reply):
                raise TypeError(f"not a reply object: {r!r}")
        with self._lock:
            self._queue.extend(replies)
        return self

    def script_embeddings(self, *replies: Reply) -> "ScriptedLLM":
        """Queue replies for ``/v1/embeddings`` (:func:`embedding`,
        :func:`http_error`, :func:`raw`, :func:`hang`).  When this queue is
        empty, embeddings are deterministic hash-based unit vectors."""
        with self._lock:
            self._emb_queue.extend(replies)
        return self

    def reset(self) -> None:
        """Clear both queues, the recorded requests and the id counter."""
        with self._lock:
            self._queue.clear()
            self._emb_queue.clear()
            self._requests.clear()
            self._tool_counter = 0
            self._msg_counter = 0

    # ------------------------------------------------------------- internal
    def _next_tool_id(self) -> int:
        with self._lock:
            self._tool_counter += 1
            return self._tool_counter

    def _next_msg_id(self) -> int:
        with self._lock:
            self._msg_counter += 1
            return self._msg_counter

    def _handle(self, path: str, headers: Dict[str, str], raw_body: str,
                method: str = "POST") -> Optional[_Response]:
        """Record a request and build its response (``None`` = drop connection)."""
        route = path.split("?", 1)[0].rstrip("/")
        try:
            body: Any = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = None
        record = {"method": method, "path": route,
                  "headers": {k.lower(): v for k, v in headers.items()},
                  "body": body, "raw_body": raw_body, "time": time.time()}
        with self._lock:
            self._requests.append(record)

        api = _api(route)
        if method != "POST" or (route not in (OPENAI_CHAT, ANTHROPIC_MESSAGES, OPENAI_EMBEDDINGS, OLLAMA_CHAT)
                                and _gemini_route(route) is None):
            return _Response(404, _error_body(api, f"no route for {method} {route}",
                                              "not_found_error", 404))
        if not isinstance(body, dict):
            return _Response(400, _error_body(api, "request body is not a JSON object",
                                              "invalid_request_error", 400))

        queue = self._emb_queue if route == OPENAI_EMBEDDINGS else self._queue
        with self._lock:
            reply = queue.popleft() if queue else None
        if reply is None and route != OPENAI_EMBEDDINGS and self.responder is not None:
            reply = self.responder(body)
        if reply is None and route == OPENAI_EMBEDDINGS:
            return self._default_embeddings(body)
        if reply is None:
            return _Response(500, _error_body(
                api, f"ScriptedLLM: script exhausted (no reply left for POST {route})",
                "script_exhausted", "script_exhausted"))

        while isinstance(reply, HangReply):
            if self._stopping.wait(max(0.0, reply.seconds)):
                return None
            if reply.then is not None:
                reply = reply.then
            elif route == OPENAI_EMBEDDINGS:
                return self._default_embeddings(body)
            else:
                reply = text("late reply")
        if isinstance(reply, TrickleReply):
            resp = self._render(reply.then, route, body)
            resp.trickle, resp.trickle_headers = reply.byte_every_s, reply.headers
            return resp
        return self._render(reply, route, body)

    def _render(self, reply: Reply, route: str, body: Dict[str, Any]) -> _Response:
        api = _api(route)
        gemini = _gemini_route(route)
        model = gemini[0] if gemini else str(body.get("model") or "scripted-model")
        if isinstance(reply, RawReply):
            return _Response(reply.status, reply.body, reply.content_type)
        if isinstance(reply, HttpErrorReply):
            err = reply.body if reply.body is not None else _error_body(
                api, f"scripted HTTP {reply.status}",
                "rate_limit_error" if reply.status == 429 else "api_error", reply.status)
            return _Response(reply.status, err, headers=reply.headers)
        if route == OPENAI_EMBEDDINGS:
            if isinstance(reply, EmbeddingReply):
                return _Response(200, {
                    "object": "list", "model": model,
                    "data": [{"object": "embedding", "index": i, "embedding": list(v)}
                             for i, v in enumerate(reply.vectors)],
                    "usage": {"prompt_tokens": reply.prompt_tokens,
                              "total_tokens": reply.prompt_tokens}})
        elif isinstance(reply, (TextReply, ToolCallsReply)) and gemini is not None:
            whole = self._gemini(reply, model)
            if gemini[1]:
                resp = _Response(200, "")
                resp.events = _gemini_events(whole)
                resp.event_delay = self.stream_delay_s
                return resp
            return _Response(200, whole)
        elif isinstance(reply, (TextReply, ToolCallsReply)) and api == "ollama":
            whole = self._ollama(reply, model)
            if body.get("stream", True) is not False:
                resp = _Response(200, "", content_type="application/x-ndjson")
                resp.events = _ollama_lines(whole)
                resp.event_delay = self.stream_delay_s
                return resp
            return _Response(200, whole)
        elif isinstance(reply, (TextReply, ToolCallsReply)):
            whole = self._anthropic(reply, model) if api == "anthropic" else self._openai(reply, model)
            if body.get("stream") is True:
                resp = _Response(200, "")
                resp.events = (_anthropic_events(whole) if api == "anthropic"
                               else _openai_events(whole, bool((body.get("stream_options") or {}).get("include_usage"))))
                resp.event_delay = self.stream_delay_s
                return resp
            return _Response(200, whole)
        return _Response(500, _error_body(
            api, f"ScriptedLLM: {type(reply).__name__} cannot answer {route}",
            "script_error", "script_error"))

    def _openai(self, reply: Union[TextReply, ToolCallsReply], model: str) -> Dict[str, Any]:
        message: Dict[str, Any] = {"role": "assistant", "content": reply.content}
        if isinstance(reply, ToolCallsReply):
            message["tool_calls"] = [
                {"id": c.id or f"call_{self._next_tool_id()}", "type": "function",
                 "function": {"name": c.name, "arguments": c.openai_arguments()}}
                for c in reply.calls]
        return {
            "id": f"chatcmpl-scripted-{self._next_msg_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": reply.finish_reason}],
            "usage": {"prompt_tokens": reply.prompt_tokens,
                      "completion_tokens": reply.completion_tokens,
                      "total_tokens": reply.prompt_tokens + reply.completion_tokens},
        }

    def _anthropic(self, reply: Union[TextReply, ToolCallsReply], model: str) -> Dict[str, Any]:
        content: List[Dict[str, Any]] = []
        if reply.content:
            content.append({"type": "text", "text": reply.content})
        if isinstance(reply, ToolCallsReply):
            content.extend(
                {"type": "tool_use", "id": c.id or f"toolu_{self._next_tool_id()}",
                 "name": c.name, "input": c.anthropic_input()}
                for c in reply.calls)
        return {
            "id": f"msg_scripted_{self._next_msg_id()}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": _FINISH_TO_STOP_REASON.get(reply.finish_reason, reply.finish_reason),
            "stop_sequence": None,
            "usage": {"input_tokens": reply.prompt_tokens,
                      "output_tokens": reply.completion_tokens},
        }

    def _gemini(self, reply: Union[TextReply, ToolCallsReply], model: str) -> Dict[str, Any]:
        parts: List[Dict[str, Any]] = []
        if reply.content:
            parts.append({"text": reply.content})
        if isinstance(reply, ToolCallsReply):
            for c in reply.calls:
                call: Dict[str, Any] = {"name": c.name, "args": c.anthropic_input()}
                if c.id:
                    call["id"] = c.id
                part: Dict[str, Any] = {"functionCall": call}
                if self.thought_signature:
                    part["thoughtSignature"] = f"{self.thought_signature}-{self._next_tool_id()}"
                parts.append(part)
        return {
            "candidates": [{"content": {"role": "model", "parts": parts}, "index": 0,
                            "finishReason": _GEMINI_FINISH.get(reply.finish_reason, reply.finish_reason.upper())}],
            "usageMetadata": {"promptTokenCount": reply.prompt_tokens,
                              "candidatesTokenCount": reply.completion_tokens,
                              "totalTokenCount": reply.prompt_tokens + reply.completion_tokens},
            "modelVersion": model, "responseId": f"scripted-{self._next_msg_id()}",
        }

    def _ollama(self, reply: Union[TextReply, ToolCallsReply], model: str) -> Dict[str, Any]:
        message: Dict[str, Any] = {"role": "assistant", "content": reply.content or ""}
        if isinstance(reply, ToolCallsReply):
            message["tool_calls"] = [{"function": {"name": c.name, "arguments": c.anthropic_input()}}
                                     for c in reply.calls]
        return {"model": model, "created_at": "2026-01-01T00:00:00Z", "message": message, "done": True,
                "done_reason": "length" if reply.finish_reason == "length" else "stop",
                "total_duration": 1000000, "prompt_eval_count": reply.prompt_tokens,
                "eval_count": reply.completion_tokens}

    def _default_embeddings(self, body: Dict[str, Any]) -> _Response:
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) and not all(
            isinstance(x, int) for x in inputs) else [inputs]
        dim = int(body.get("dimensions") or self.embedding_dim)
        data = [{"object": "embedding", "index": i, "embedding": _hash_vector(item, dim)}
                for i, item in enumerate(items)]
        tokens = sum(len(json.dumps(x)) // 4 + 1 for x in items)
        return _Response(200, {"object": "list", "data": data,
                               "model": str(body.get("model") or "scripted-embedding"),
                               "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _words(text: Optional[str]) -> List[str]:
    """*text* in pieces that join back to it: each word with the spaces after it."""
    return re.findall(r"\s*\S+\s*", text or "") or ([text] if text else [])


def _sse(data: Dict[str, Any], event: Optional[str] = None) -> str:
    return (f"event: {event}\n" if event else "") + f"data: {json.dumps(data)}\n\n"


def _openai_events(whole: Dict[str, Any], include_usage: bool) -> List[str]:
    """The chat.completion.chunk events a streaming OpenAI server sends for *whole*."""
    msg, choice = whole["choices"][0]["message"], whole["choices"][0]
    head = {"id": whole["id"], "object": "chat.completion.chunk", "created": whole["created"],
            "model": whole["model"]}

    def chunk(delta: Dict[str, Any], finish: Optional[str] = None) -> str:
        return _sse({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    out = [chunk({"role": "assistant", "content": "" if msg.get("content") else None})]
    out += [chunk({"content": w}) for w in _words(msg.get("content"))]
    for i, tc in enumerate(msg.get("tool_calls") or []):
        args = tc["function"]["arguments"]
        out.append(chunk({"tool_calls": [{"index": i, "id": tc["id"], "type": "function",
                                          "function": {"name": tc["function"]["name"], "arguments": ""}}]}))
        half = len(args) // 2
        out += [chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
                for part in (args[:half], args[half:]) if part]
    out.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        out.append(_sse({**head, "choices": [], "usage": whole["usage"]}))
    return out + ["data: [DONE]\n\n"]


def _anthropic_events(whole: Dict[str, Any]) -> List[str]:
    """The events a streaming Anthropic server sends for *whole*."""
    start = {**whole, "content": [], "stop_reason": None,
             "usage": {"input_tokens": whole["usage"]["input_tokens"], "output_tokens": 1}}
    out = [_sse({"type": "message_start", "message": start}, "message_start"), _sse({"type": "ping"}, "ping")]
    for i, block in enumerate(whole["content"]):
        if block["type"] == "text":
            out.append(_sse({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                            "content_block_start"))
            out += [_sse({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": w}},
                         "content_block_delta") for w in _words(block["text"])]
        else:
            out.append(_sse({"type": "content_block_start", "index": i,
                             "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"],
                                               "input": {}}}, "content_block_start"))
            args = json.dumps(block["input"])
            half = len(args) // 2
            out += [_sse({"type": "content_block_delta", "index": i,
                          "delta": {"type": "input_json_delta", "partial_json": part}}, "content_block_delta")
                    for part in (args[:half], args[half:]) if part]
        out.append(_sse({"type": "content_block_stop", "index": i}, "content_block_stop"))
    out.append(_sse({"type": "message_delta", "delta": {"stop_reason": whole["stop_reason"], "stop_sequence": None},
                     "usage": {"output_tokens": whole["usage"]["output_tokens"]}}, "message_delta"))
    return out + [_sse({"type": "message_stop"}, "message_stop")]


def _gemini_events(whole: Dict[str, Any]) -> List[str]:
    """The chunks ``streamGenerateContent?alt=sse`` sends for *whole*: one text part per word,
    each function call whole in its own chunk, finishReason and usageMetadata (cumulative) on
    the last chunk."""
    cand = whole["candidates"][0]
    head = {"modelVersion": whole["modelVersion"], "responseId": whole["responseId"]}
    out = []
    for part in cand["content"]["parts"]:
        pieces = [{"text": w} for w in _words(part["text"])] if "text" in part else [part]
        out += [_sse({**head, "candidates": [{"content": {"role": "model", "parts": [p]}, "index": 0}]})
                for p in pieces]
    usage = whole["usageMetadata"]
    out.append(_sse({**head, "candidates": [{"content": {"role": "model", "parts": [{"text": ""}]},
                                             "finishReason": cand["finishReason"], "index": 0}],
                     "usageMetadata": usage}))
    return out


def _ollama_lines(whole: Dict[str, Any]) -> List[str]:
    """The newline-delimited JSON a streaming Ollama server sends for *whole*: one line per
    word, the tool calls whole in one line, then the ``done: true`` line with the counts."""
    head = {"model": whole["model"], "created_at": whole["created_at"]}
    msg = whole["message"]
    out = [json.dumps({**head, "message": {"role": "assistant", "content": w}, "done": False}) + "\n"
           for w in _words(msg.get("content"))]
    if msg.get("tool_calls"):
        out.append(json.dumps({**head, "message": {"role": "assistant", "content": "",
                                                   "tool_calls": msg["tool_calls"]}, "done": False}) + "\n")
    out.append(json.dumps({**whole, "message": {"role": "assistant", "content": ""}}) + "\n")
    return out


def _hash_vector(item: Any, dim: int) -> List[float]:
    """Deterministic unit vector of size *dim* derived from *item*."""
    seed = json.dumps(item, sort_keys=True).encode("utf-8")
    values: List[float] = []
    block = 0
    while len(values) < dim:
        digest = hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        values.extend(x / 2**31 - 1.0 for x in struct.unpack(">8I", digest))
        block += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


# ------------------------------------------------------------------------ CLI
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve the replies of a JSON script file until interrupted."""
    parser = argparse.ArgumentParser(description="Scripted OpenAI/Anthropic test server.")
    parser.add_argument("script", help="JSON file: a list of reply specs")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    with open(args.script, encoding="utf-8") as f:
        specs = json.load(f)
    llm = ScriptedLLM(port=args.port, verbose=args.verbose)
    llm.script(*(reply_from_spec(s) for s in specs))
    with llm:
        print(f"OPENAI_BASE_URL={llm.base_url}", flush=True)
        print(f"ANTHROPIC_BASE_URL={llm.anthropic_base_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
