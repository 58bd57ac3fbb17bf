"""The gateway's FastAPI application: :func:`create_app`.

Each authenticated request borrows a pooled connection (the gateway's own login role, a member
of ``pgagent_gateway`` and of the roles its keys act as), opens a transaction, ``SET LOCAL ROLE``
to the key's role and sets ``pgagent.tenant`` to the key's tenant for that transaction only, and
calls the SQL API. The transaction ends with the request, so nothing of one request's role
survives into the next. Routes are thin: a view read or one API function call each, plus
``POST /v1/rpc/{function}`` for any other public API function (by its named arguments; the
database's grants decide who may call it).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .auth import KeyCache, Principal, RateLimiter, key_from_headers
from .errors import HttpError, from_database
from .metrics import Metrics

log = logging.getLogger("pgagent.gateway")

#: Largest request body accepted (bytes): 1 MiB.
MAX_BODY = 1 << 20
#: Most rows a list endpoint returns.
MAX_LIMIT = 1000


def _console() -> tuple[bytes, str]:
    """The console page and the CSP hash of its one inline script ('sha256-<base64>')."""
    import base64
    import hashlib
    import re
    from pathlib import Path

    html = (Path(__file__).with_name("console") / "index.html").read_text(encoding="utf-8")
    script = re.search(r"<script>(.*?)</script>", html, re.S)
    digest = base64.b64encode(hashlib.sha256((script.group(1) if script else "").encode()).digest()).decode()
    return html.encode("utf-8"), f"sha256-{digest}"


CONSOLE_HTML, CONSOLE_SCRIPT_HASH = _console()


def _json(value: Any) -> Any:
    """Rows as JSON-able values (timestamps and decimals as text/float)."""
    return json.loads(json.dumps(value, default=lambda v: float(v) if hasattr(v, "as_integer_ratio") else str(v)))


async def read_body(request: Request) -> dict[str, Any]:
    """The request's JSON object body ({} when empty). Raises HttpError 413 (over
    :data:`MAX_BODY` bytes) or 400 (not JSON, not an object)."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise HttpError(413, "too_large", f"the request body is larger than {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise HttpError(400, "invalid_json", f"the body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise HttpError(400, "invalid_json", "the body must be a JSON object")
    return data


class Gateway:
    """State shared by the routes: the pool, the key cache, rate limits and metrics."""

    def __init__(self, dsn: str, *, pool_size: int = 10, tracing: Any = None) -> None:
        self.dsn = dsn
        self.tracing = tracing
        # every connection opened at start and warmed up (pgagent._warm_up imports pgagent_core
        # into the backend, ~200 ms), so no request waits for a new backend to get ready
        self.pool = AsyncConnectionPool(dsn, min_size=pool_size, max_size=pool_size, open=False,
                                        configure=self._warm, kwargs={"autocommit": True, "row_factory": dict_row})
        self.keys = KeyCache()
        self.limits = RateLimiter()
        self.metrics = Metrics()
        self.functions: dict[str, list[tuple[str, str]]] | None = None
        self.hub: Any = None   # events.Hub: the shared LISTEN connections of the event streams

    @staticmethod
    async def _warm(conn: psycopg.AsyncConnection) -> None:
        try:
            await conn.execute("SELECT pgagent._warm_up()")
        except psycopg.errors.InsufficientPrivilege:   # not a pgagent_gateway member: requests will say so
            pass

    async def principal(self, request: Request) -> Principal:
        """The request's principal; raises HttpError 401 (no or unknown key) or 429 (rate)."""
        key = key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
        if key is None:
            raise HttpError(401, "unauthenticated", "an API key is required",
                            hint="Send Authorization: Bearer <key> (pgagent.create_api_key).",
                            headers={"WWW-Authenticate": "Bearer"})
        found = self.keys.peek(key)
        if found is KeyCache.MISS:
            async with self.pool.connection() as conn:
                row = await (await conn.execute(
                    "SELECT key_id, tenant_id::text AS tenant_id, tenant, role_name, rate_per_min "
                    "FROM pgagent.authenticate_api_key(%s)", [key])).fetchone()
            found = Principal(int(row["key_id"]), row["tenant_id"], row["tenant"], row["role_name"],
                              int(row["rate_per_min"])) if row else None
            self.keys.put(key, found)
        if found is None:
            raise HttpError(401, "unauthenticated", "the API key is not valid (unknown or revoked)",
                            headers={"WWW-Authenticate": "Bearer"})
        wait = self.limits.take(found)
        if wait is not None:
            raise HttpError(429, "rate_limited", f"more than {found.rate_per_min} requests a minute with this key",
                            headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        return found

    @asynccontextmanager
    async def acting(self, who: Principal) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection in a transaction acting as ``who`` (role and tenant set locally)."""
        async with self.pool.connection() as conn:
            async with conn.transaction():
                try:
                    await conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(who.role)))
                except psycopg.errors.InsufficientPrivilege:
                    raise HttpError(403, "forbidden", f"the gateway may not act as role {who.role!r}",
                                    hint="GRANT that role to the gateway's login role.") from None
                await conn.execute("SELECT pg_catalog.set_config('pgagent.tenant', %s, true)", [who.tenant])
                yield conn

    async def rows(self, who: Principal, query: str | sql.Composable, args: Any = None) -> list[dict[str, Any]]:
        """All rows of ``query`` run as ``who``."""
        async with self.acting(who) as conn:
            return _json(await (await conn.execute(query, args)).fetchall())

    async def value(self, who: Principal, query: str | sql.Composable, args: Any = None) -> Any:
        """The first column of the first row of ``query`` run as ``who`` (None without a row)."""
        async with self.acting(who) as conn:
            row = await (await conn.execute(query, args)).fetchone()
        return _json(next(iter(row.values()))) if row else None

    async def trace(self, who: Principal, summary: dict[str, Any]) -> None:
        """Export the trace of the turn ``summary`` describes (and its child turns), when
        tracing is on (:mod:`.tracing`); a failure to read or export is logged, never raised."""
        if self.tracing is None or not summary.get("turn_id"):
            return
        from .tracing import STEPS_SQL, TREE_SQL
        try:
            async with self.acting(who) as conn:
                turns = await (await conn.execute(TREE_SQL, [summary["turn_id"]])).fetchall()
                steps = await (await conn.execute(STEPS_SQL, [[t["turn_id"] for t in turns]])).fetchall()
            self.tracing.export(turns, steps)
        except Exception:   # tracing must never fail a request
            log.exception("exporting the trace of turn %s failed", summary.get("turn_id"))

    async def api_functions(self) -> dict[str, list[tuple[str, str]]]:
        """Public API functions (schema pgagent, not ``_*``) -> their (argument name, type) lists,
        read from the catalog once."""
        if self.functions is None:
            async with self.pool.connection() as conn:
                rows = await (await conn.execute("""
                    SELECT p.proname, p.proargnames, p.proargmodes,
                           ARRAY(SELECT pg_catalog.format_type(t, NULL) FROM unnest(p.proargtypes) t) AS types
                      FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname = 'pgagent' AND p.proname !~ '^_' AND p.prokind = 'f'
                       AND p.prorettype <> 'pg_catalog.trigger'::pg_catalog.regtype""")).fetchall()
            found: dict[str, list[tuple[str, str]]] = {}
            for r in rows:
                names = [n for n, m in zip(r["proargnames"] or [], r["proargmodes"] or ["i"] * 100)
                         if m in ("i", "b", "v")]
                if len(names) == len(r["types"]) and r["proname"] not in found:
                    found[r["proname"]] = list(zip(names, r["types"]))
            self.functions = found
        return self.functions


def create_app(dsn: str, *, pool_size: int = 10, tracing: Any = None) -> FastAPI:
    """The gateway application for a database (``dsn``: libpq string of the gateway's login role).
    ``tracing``: a :class:`.tracing.Tracing` to export each turn's trace (None: off)."""
    gw = Gateway(dsn, pool_size=pool_size, tracing=tracing)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gw.pool.open(wait=True, timeout=120)   # ready (warmed up) before the first request
        try:
            yield
        finally:
            if gw.hub is not None:
                await gw.hub.close()
            await gw.pool.close()
            if gw.tracing is not None:
                gw.tracing.flush()

    app = FastAPI(title="pgagent gateway", version="0.2.0", lifespan=lifespan,
                  description="HTTP over pgagent's SQL API: every request runs as its API key's database role.")
    app.state.gateway = gw

    # ------------------------------------------------------------------ errors and metrics
    def error_response(e: HttpError) -> JSONResponse:
        gw.metrics.errors.labels(e.code).inc()
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, e: HttpError) -> JSONResponse:
        return error_response(e)

    @app.exception_handler(psycopg.Error)
    async def _db_error(request: Request, e: psycopg.Error) -> JSONResponse:
        return error_response(from_database(e))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or "request"
        return error_response(HttpError(400, "invalid_request", f"{where}: {first.get('msg', 'invalid')}"))

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(HttpError(e.status_code, code, str(e.detail)))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(HttpError(500, "internal", "internal error (logged by the gateway)"))

    @app.middleware("http")
    async def _observe(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return error_response(HttpError(413, "too_large", f"the request body is larger than {MAX_BODY} bytes"))
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        gw.metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        gw.metrics.latency.labels(path).observe(time.perf_counter() - t0)
        return response

    body_of = read_body

    def limit_of(limit: int) -> int:
        if not 1 <= limit <= MAX_LIMIT:
            raise HttpError(400, "invalid_argument", f"limit must be from 1 to {MAX_LIMIT}")
        return limit

    # ------------------------------------------------------------------ health and metrics
    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """The process is up (no database call, no key)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["health"])
    async def ready() -> JSONResponse:
        """The database answers (no key)."""
        try:
            async with gw.pool.connection(timeout=5) as conn:
                await conn.execute("SELECT 1")
        except Exception as e:   # a pool timeout or a dead server: not ready, say why
            return error_response(HttpError(503, "unavailable", f"the database does not answer: {type(e).__name__}"))
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["health"])
    async def metrics() -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(gw.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ------------------------------------------------------------------ reading
    @app.get("/v1/whoami", tags=["read"])
    async def whoami(request: Request) -> dict[str, Any]:
        """The key's tenant and role, as the database sees them."""
        who = await gw.principal(request)
        row = (await gw.rows(who, "SELECT pgagent._outer_user()::text AS role, pgagent.current_tenant()::text "
                                  "AS tenant_id"))[0]
        return {**row, "tenant": who.tenant, "key_id": who.key_id}

    @app.get("/v1/agents", tags=["read"])
    async def agents(request: Request) -> list[dict[str, Any]]:
        """The tenant's agents (name, model, tools, instructions, config, enabled)."""
        who = await gw.principal(request)
        return await gw.rows(who, """
            SELECT a.name, m.name AS model, a.instructions, a.config, a.enabled,
                   coalesce((SELECT array_agg(t.name ORDER BY t.name) FROM pgagent.agent_tool x
                               JOIN pgagent.tool t ON t.tenant_id = x.tenant_id AND t.tool_id = x.tool_id
                              WHERE x.tenant_id = a.tenant_id AND x.agent_id = a.agent_id), '{}') AS tools
              FROM pgagent.agent a JOIN pgagent.model m ON m.tenant_id = a.tenant_id AND m.model_id = a.model_id
             ORDER BY a.name""")

    @app.get("/v1/conversations", tags=["read"])
    async def conversations(request: Request, agent: str | None = None, user_id: str | None = None,
                            limit: int = 50) -> list[dict[str, Any]]:
        """Conversations, newest first (optionally of one agent or end user)."""
        who = await gw.principal(request)
        return await gw.rows(who, """
            SELECT c.conversation_id, a.name AS agent, c.title, c.user_id, c.metadata, c.created_by, c.created_at,
                   c.paused_at IS NOT NULL AS paused
              FROM pgagent.conversation c JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
             WHERE (%(agent)s::text IS NULL OR a.name = %(agent)s) AND (%(user)s::text IS NULL OR c.user_id = %(user)s)
             ORDER BY c.conversation_id DESC LIMIT %(limit)s""", {"agent": agent, "user": user_id, "limit": limit_of(limit)})

    @app.get("/v1/conversations/{conversation_id}/turns", tags=["read"])
    async def conversation_turns(request: Request, conversation_id: int) -> list[dict[str, Any]]:
        """A conversation's turns in order (turn_summary rows)."""
        who = await gw.principal(request)
        return await gw.rows(who, "SELECT * FROM pgagent.turn_summary WHERE conversation_id = %s ORDER BY seq",
                             [conversation_id])

    @app.get("/v1/turns/{turn_id}", tags=["read"])
    async def turn(request: Request, turn_id: int) -> dict[str, Any]:
        """One turn (turn_summary row)."""
        who = await gw.principal(request)
        rows = await gw.rows(who, "SELECT * FROM pgagent.turn_summary WHERE turn_id = %s", [turn_id])
        if not rows:
            raise HttpError(404, "not_found", f"turn {turn_id} does not exist (for this key)")
        return rows[0]

    @app.get("/v1/turns/{turn_id}/steps", tags=["read"])
    async def turn_steps(request: Request, turn_id: int, after: int = 0) -> list[dict[str, Any]]:
        """A turn's steps in order (turn_timeline rows), optionally after a step id."""
        who = await gw.principal(request)
        return await gw.rows(who, "SELECT * FROM pgagent.turn_timeline WHERE turn_id = %s AND step_id > %s "
                                  "ORDER BY seq", [turn_id, after])

    @app.get("/v1/turns/{turn_id}/tree", tags=["read"])
    async def turn_tree(request: Request, turn_id: int) -> list[dict[str, Any]]:
        """The tree of turns agent tool calls made around this one (pgagent.turn_tree)."""
        who = await gw.principal(request)
        return await gw.rows(who, "SELECT * FROM pgagent.turn_tree(%s)", [turn_id])

    @app.get("/v1/approvals", tags=["read"])
    async def approvals(request: Request) -> list[dict[str, Any]]:
        """Tool calls waiting for a decision (pending_approvals)."""
        who = await gw.principal(request)
        return await gw.rows(who, "SELECT * FROM pgagent.pending_approvals ORDER BY step_id")

    @app.get("/v1/analytics/agents", tags=["read"])
    async def agent_stats(request: Request) -> list[dict[str, Any]]:
        """Per-agent totals (agent_stats)."""
        who = await gw.principal(request)
        return await gw.rows(who, "SELECT * FROM pgagent.agent_stats ORDER BY agent")

    @app.get("/v1/analytics/hourly", tags=["read"])
    async def hourly(request: Request, days: int = 1) -> list[dict[str, Any]]:
        """Per hour over the last days (pgagent.hourly_activity: turns, steps, LLM calls, tokens,
        cost in USD, errors) with the average time of the turns that finished (avg_turn_ms, ms)."""
        who = await gw.principal(request)
        return await gw.rows(who, """
            SELECT h.*, l.avg_turn_ms
              FROM pgagent.hourly_activity(%(days)s) h
              LEFT JOIN (SELECT pg_catalog.date_trunc('hour', t.created_at) AS hour,
                                round(avg(extract(epoch FROM t.finished_at - t.created_at) * 1000)::numeric, 1) AS avg_turn_ms
                           FROM pgagent.turn t
                          WHERE t.finished_at IS NOT NULL AND t.tenant_id = pgagent.current_tenant()
                            AND t.created_at >= pg_catalog.now() - pg_catalog.make_interval(days => %(days)s)
                          GROUP BY 1) l USING (hour)
             ORDER BY h.hour""", {"days": days})

    @app.get("/console", tags=["console"], include_in_schema=False)
    async def console() -> Response:
        """The web console (one static page; it holds no data and calls this API with the key
        typed into it)."""
        return Response(CONSOLE_HTML, media_type="text/html; charset=utf-8", headers={
            "Content-Security-Policy": f"default-src 'self'; script-src '{CONSOLE_SCRIPT_HASH}'; "
                                       "style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})

    @app.get("/v1/budgets", tags=["read"])
    async def budgets(request: Request) -> list[dict[str, Any]]:
        """Budgets and what their periods have spent (budget_status)."""
        who = await gw.principal(request)
        return await gw.rows(who, "SELECT * FROM pgagent.budget_status")

    # ------------------------------------------------------------------ acting
    @app.post("/v1/conversations", tags=["act"], status_code=201)
    async def start_conversation(request: Request) -> dict[str, Any]:
        """Start a conversation: ``{"agent", "title"?, "metadata"?, "user_id"?}``."""
        who = await gw.principal(request)
        b = await body_of(request)
        if not isinstance(b.get("agent"), str):
            raise HttpError(400, "invalid_argument", "agent (a name) is required")
        cid = await gw.value(who, "SELECT pgagent.start_conversation(%s, title => %s, metadata => %s, user_id => %s)",
                             [b["agent"], b.get("title"), json.dumps(b.get("metadata") or {}), b.get("user_id")])
        return {"conversation_id": cid}

    @app.post("/v1/conversations/{conversation_id}/messages", tags=["act"])
    async def message(request: Request, conversation_id: int) -> JSONResponse:
        """Send a message: ``{"content", "params"?, "wait"?: true}``. With wait (default) the turn
        runs now and its summary is returned (200); without, it is queued for workers and
        ``{"turn_id"}`` is returned (202)."""
        who = await gw.principal(request)
        b = await body_of(request)
        if not isinstance(b.get("content"), str):
            raise HttpError(400, "invalid_argument", "content (the message text) is required")
        params = json.dumps(b.get("params") or {})
        if b.get("wait", True) is False:
            turn_id = await gw.value(who, "SELECT pgagent.enqueue_message(%s, %s, %s)",
                                     [conversation_id, b["content"], params])
            return JSONResponse({"turn_id": turn_id, "status": "queued"}, status_code=202)
        t0 = time.perf_counter()
        summary = await gw.value(who, "SELECT pgagent.send_message(%s, %s, %s)", [conversation_id, b["content"], params])
        gw.metrics.turn(summary, time.perf_counter() - t0)
        await gw.trace(who, summary)
        return JSONResponse(summary)

    @app.post("/v1/steps/{step_id}/decision", tags=["act"])
    async def decide(request: Request, step_id: int) -> dict[str, Any]:
        """Approve or reject a waiting tool call: ``{"approved": bool, "note"?, "run"?: true}``;
        with run (default) an approved call is run and the turn continues (process_tool_call)."""
        who = await gw.principal(request)
        b = await body_of(request)
        if not isinstance(b.get("approved"), bool):
            raise HttpError(400, "invalid_argument", "approved (true or false) is required")
        async with gw.acting(who) as conn:
            decided = (await (await conn.execute("SELECT pgagent.approve_step(%s, %s, %s) AS r",
                                                 [step_id, b["approved"], b.get("note")])).fetchone())["r"]
            if b["approved"] and b.get("run", True) and not decided.get("pending"):
                turn_after = (await (await conn.execute("SELECT pgagent.process_tool_call(%s) AS r",
                                                        [step_id])).fetchone())["r"]
                return _json({"decision": decided, "turn": turn_after})
        return _json({"decision": decided})

    @app.post("/v1/turns/{turn_id}/cancel", tags=["act"])
    async def cancel(request: Request, turn_id: int) -> dict[str, Any]:
        """Cancel a queued or parked turn: ``{"reason"?}``."""
        who = await gw.principal(request)
        b = await body_of(request)
        return await gw.value(who, "SELECT pgagent.cancel_turn(%s, %s)", [turn_id, b.get("reason")])

    @app.post("/v1/rpc/{function}", tags=["act"])
    async def rpc(request: Request, function: str) -> JSONResponse:
        """Call any public API function by its named arguments (``{"name": value, ...}``), e.g.
        ``/v1/rpc/inject_message`` with ``{"conversation": 7, "content": "..."}``. The database's
        grants decide whether the key's role may call it. Returns ``{"result": ...}``."""
        who = await gw.principal(request)
        b = await body_of(request)
        fns = await gw.api_functions()
        if function not in fns:
            raise HttpError(404, "not_found", f"no public API function pgagent.{function}",
                            hint="See docs/api.md for the SQL API.")
        types = dict(fns[function])
        unknown = sorted(set(b) - set(types))
        if unknown:
            raise HttpError(400, "invalid_argument", f"pgagent.{function} has no argument {unknown[0]!r}",
                            hint="valid: " + ", ".join(n for n, _ in fns[function]))
        args = [sql.SQL("{} => {}::{}").format(sql.Identifier(k), sql.Placeholder(), sql.SQL(types[k])) for k in b]
        values = [json.dumps(v) if types[k] in ("jsonb", "json") else v for k, v in b.items()]
        query = sql.SQL("SELECT pgagent.{}({}) AS result").format(sql.Identifier(function), sql.SQL(", ").join(args))
        async with gw.acting(who) as conn:
            cur = await conn.execute(query, values)
            rows = await cur.fetchall()
        result = [r["result"] for r in rows] if len(rows) != 1 else rows[0]["result"]
        return JSONResponse(_json({"result": result}))

    from . import events, openai   # noqa: E402  (routes that need the helpers above)
    events.add_routes(app, gw)
    openai.add_routes(app, gw)
    return app
