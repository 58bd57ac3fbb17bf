"""``GET /v1/turns/{turn_id}/events``: a turn's steps as server-sent events, as they commit.

The stream has a connection of its own (LISTEN needs one for as long as it lasts), acting as the
key's role for the whole session. It LISTENs on the tenant's channel (``pgagent.event_channel()``,
whose notifications hold ids only) and, on each notification about the turn, reads the new steps
through ``pgagent.turn_timeline`` as that role, so row level security decides what is sent.
Events (WHATWG event-stream format):

* ``event: step``, ``id: <step_id>``, ``data``: the turn_timeline row (seq, kind, tool_name,
  summary, tokens, cost_usd, latency_ms, payload, ...);
* ``event: end``, ``data``: ``{turn_id, status, answer, error}`` once the turn is completed,
  failed or cancelled (or waits for an approval, or is paused: ``status`` says which), after which
  the stream closes;
* a ``: keep-alive`` comment every 5 s.

Resuming: a client that reconnects with ``Last-Event-ID: <step_id>`` (or ``?after=<step_id>``) gets
the steps after that one, so nothing is missed and nothing is sent twice. Token deltas of a
streamed LLM call are not in this stream (they reach the session that runs the turn as NOTICEs):
the OpenAI-compatible endpoint streams them.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from psycopg import sql
from psycopg.rows import dict_row

from .app import Gateway, _json
from .errors import HttpError

#: seconds between keep-alive comments; also the longest a step waits to be sent if its notification
#: came while the stream was reading (it is then found by the next read)
KEEPALIVE_S = 5.0
#: statuses after which the stream ends (the turn needs someone else to go on)
STOPPED = ("completed", "failed", "cancelled", "awaiting_approval", "paused")


def event(kind: str, data: Any, event_id: int | None = None) -> str:
    """One server-sent event."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def resume_point(request: Request, after: int | None) -> int | None:
    """The step id a stream resumes after: ``?after=`` or the ``Last-Event-ID`` header."""
    header = request.headers.get("last-event-id")
    if after is None and header:
        if not header.strip().isdigit():
            raise HttpError(400, "invalid_argument", "Last-Event-ID must be a step id")
        return int(header.strip())
    return after


async def listening(gw: Gateway, who: Any) -> psycopg.AsyncConnection:
    """A connection of its own acting as ``who`` for the whole session, LISTENing on the tenant's
    channel. Raises HttpError 403 when the gateway may not act as the key's role."""
    conn = await psycopg.AsyncConnection.connect(gw.dsn, autocommit=True, row_factory=dict_row)
    try:
        try:
            await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(who.role)))
        except psycopg.errors.InsufficientPrivilege:
            raise HttpError(403, "forbidden", f"the gateway may not act as role {who.role!r}") from None
        await conn.execute("SELECT pg_catalog.set_config('pgagent.tenant', %s, false)", [who.tenant])
        channel = (await (await conn.execute("SELECT pgagent.event_channel() AS ch")).fetchone())["ch"]
        await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    except BaseException:
        await conn.close()
        raise
    return conn


async def woken(conn: psycopg.AsyncConnection, turn_id: int | None) -> bool:
    """Wait up to :data:`KEEPALIVE_S` for a step or turn notification (about ``turn_id``, or any);
    True when one came."""
    async for n in conn.notifies(timeout=KEEPALIVE_S):
        try:
            note = json.loads(n.payload)
        except ValueError:
            continue
        if turn_id is None or note.get("turn_id") == turn_id:
            return True
    return False


def add_routes(app: FastAPI, gw: Gateway) -> None:
    """Register the events routes on ``app``."""

    @app.get("/v1/events", tags=["read"])
    async def tenant_events(request: Request, after: int | None = None, recent: int = 0) -> StreamingResponse:
        """Every step the key's role may see, as server-sent events as they commit (the console's
        live feed): after ``Last-Event-ID``/``?after=`` if given, else the ``recent`` (0..500)
        latest steps first, then new ones."""
        who = await gw.principal(request)
        last = resume_point(request, after)
        if not 0 <= recent <= 500:
            raise HttpError(400, "invalid_argument", "recent must be from 0 to 500")
        conn = await listening(gw, who)

        async def stream() -> AsyncIterator[str]:
            try:
                if last is None:
                    rows = await (await conn.execute(
                        "SELECT * FROM (SELECT * FROM pgagent.turn_timeline ORDER BY step_id DESC LIMIT %s) x "
                        "ORDER BY step_id", [recent])).fetchall()
                    top = await (await conn.execute("SELECT coalesce(max(step_id), 0) AS m FROM pgagent.step")).fetchone()
                    seen = int(top["m"])
                    for r in rows:
                        yield event("step", _json(r), int(r["step_id"]))
                else:
                    seen = last
                while True:
                    rows = await (await conn.execute(
                        "SELECT * FROM pgagent.turn_timeline WHERE step_id > %s ORDER BY step_id LIMIT 500",
                        [seen])).fetchall()
                    for r in rows:
                        seen = int(r["step_id"])
                        yield event("step", _json(r), seen)
                    if len(rows) == 500:
                        continue
                    came = await woken(conn, None)
                    if await request.is_disconnected():
                        return
                    if not came:
                        yield ": keep-alive\n\n"
            finally:
                await conn.close()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/turns/{turn_id}/events", tags=["read"])
    async def turn_events(request: Request, turn_id: int, after: int | None = None) -> StreamingResponse:
        """The turn's steps as server-sent events (see the module doc)."""
        who = await gw.principal(request)
        last = resume_point(request, after)
        conn = await listening(gw, who)
        try:
            if await (await conn.execute("SELECT 1 FROM pgagent.turn WHERE turn_id = %s", [turn_id])).fetchone() is None:
                raise HttpError(404, "not_found", f"turn {turn_id} does not exist (for this key)")
        except BaseException:
            await conn.close()
            raise

        async def stream() -> AsyncIterator[str]:
            seen = last or 0
            try:
                while True:
                    rows = await (await conn.execute(
                        "SELECT * FROM pgagent.turn_timeline WHERE turn_id = %s AND step_id > %s ORDER BY seq",
                        [turn_id, seen])).fetchall()
                    for r in rows:
                        seen = int(r["step_id"])
                        yield event("step", _json(r), seen)
                    t = await (await conn.execute("SELECT status, answer, error FROM pgagent.turn WHERE turn_id = %s",
                                                  [turn_id])).fetchone()
                    if t is None or t["status"] in STOPPED:
                        yield event("end", {"turn_id": turn_id, **(_json(t) if t else {"status": "gone"})})
                        return
                    woke = await woken(conn, turn_id)
                    if await request.is_disconnected():
                        return
                    if not woke:
                        yield ": keep-alive\n\n"
            finally:
                await conn.close()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
