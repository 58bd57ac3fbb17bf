"""The ``pgagent`` command: ``pgagent worker --dsn ... [--concurrency N] [--tenant T] [--agent A]
[--once] [--lease-ms MS] [--poll-s S] [--log-format text|json]`` and ``pgagent serve --dsn ...
[--host 127.0.0.1] [--port 8750]`` (the HTTP gateway, python/pgagent_gateway).

Signals: SIGTERM (and a first SIGINT) finish the step in flight of every turn, release the turns
and exit 0; a second SIGINT cancels what is in flight and exits 130 at once."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Sequence

from .worker import Worker, line_logger


def parser() -> argparse.ArgumentParser:
    """The command line (``pgagent worker --help``)."""
    p = argparse.ArgumentParser(prog="pgagent", description="pgagent: AI agents inside PostgreSQL.")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run queued turns (CALL pgagent.run_turn) with a pool of connections",
                       description="Claim queued turns of the tenants the connecting role may act for and run them "
                                   "inside the database, one committed step at a time. docs/durability.md.")
    w.add_argument("--dsn", default=os.environ.get("PGAGENT_DSN", ""),
                   help="libpq connection string (default: $PGAGENT_DSN, else the PG* environment)")
    w.add_argument("--concurrency", "-c", type=int, default=2, help="turns run at once (connections), default 2")
    w.add_argument("--tenant", help="only this tenant (name or id)")
    w.add_argument("--agent", help="only this agent (by name)")
    w.add_argument("--once", action="store_true", help="drain: exit when nothing is claimable and no turn runs")
    w.add_argument("--lease-ms", type=int, default=60000,
                   help="lease on a claimed turn (ms), renewed after every step; default 60000")
    w.add_argument("--poll-s", type=float, default=2.0, help="longest idle wait between claims (s); default 2")
    w.add_argument("--housekeeping-s", type=float, default=30.0, help="s between housekeeping runs (leader only)")
    w.add_argument("--worker-id", help="this worker's id (default host:pid:random)")
    w.add_argument("--log-format", choices=("text", "json"), default="text", help="one line per event")
    w.add_argument("--otlp-endpoint", help="export each turn's trace (OpenTelemetry, OTLP/HTTP) to this endpoint "
                                           "(default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or $OTEL_EXPORTER_OTLP_ENDPOINT)")
    g = sub.add_parser("serve", help="run the HTTP gateway (REST, server-sent events, OpenAI-compatible chat)",
                       description="Serve pgagent's SQL API over HTTP; every request runs as its API key's database "
                                   "role. docs/http.md.")
    g.add_argument("--dsn", default=os.environ.get("PGAGENT_DSN", ""),
                   help="libpq connection string of the gateway's login role (default: $PGAGENT_DSN)")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=8750, help="port (default 8750)")
    g.add_argument("--pool-size", type=int, default=10, help="database connections for requests (default 10)")
    g.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    g.add_argument("--otlp-endpoint", help="export each turn's trace (OpenTelemetry, OTLP/HTTP) to this endpoint "
                                           "(default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or $OTEL_EXPORTER_OTLP_ENDPOINT)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pgagent`` console script; returns the exit status."""
    args = parser().parse_args(argv)
    if args.command == "serve":
        import uvicorn

        from pgagent_gateway.app import create_app
        from pgagent_gateway.tracing import Tracing
        uvicorn.run(create_app(args.dsn, pool_size=args.pool_size,
                               tracing=Tracing.create(args.otlp_endpoint, "pgagent-gateway")),
                    host=args.host, port=args.port, log_level=args.log_level)
        return 0
    tracing = None
    if args.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or \
            os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from pgagent_gateway.tracing import Tracing
        tracing = Tracing.create(args.otlp_endpoint, "pgagent-worker")
    worker = Worker(args.dsn, concurrency=args.concurrency, tenant=args.tenant, agent=args.agent, once=args.once,
                    lease_ms=args.lease_ms, poll_s=args.poll_s, housekeeping_s=args.housekeeping_s,
                    worker_id=args.worker_id, log=line_logger(args.log_format, sys.stderr), tracing=tracing)
    interrupts = {"n": 0}

    def on_term(signum: int, frame: object) -> None:
        worker.stop()

    def on_int(signum: int, frame: object) -> None:
        interrupts["n"] += 1
        if interrupts["n"] == 1:
            worker.stop()
        else:
            worker.kill()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_int)
    rc = worker.run()
    if tracing is not None:
        tracing.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main())
