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
* a ``: keep-alive`` comment every 15 s.

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

KEEPALIVE_S = 15.0
#: statuses after which the stream ends (the turn needs someone else to go on)
STOPPED = ("completed", "failed", "cancelled", "awaiting_approval", "paused")


def event(kind: str, data: Any, event_id: int | None = None) -> str:
    """One server-sent event."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def add_routes(app: FastAPI, gw: Gateway) -> None:
    """Register the events route on ``app``."""

    @app.get("/v1/turns/{turn_id}/events", tags=["read"])
    async def turn_events(request: Request, turn_id: int, after: int | None = None) -> StreamingResponse:
        """The turn's steps as server-sent events (see the module doc)."""
        who = await gw.principal(request)
        last = after
        header = request.headers.get("last-event-id")
        if last is None and header:
            if not header.strip().isdigit():
                raise HttpError(400, "invalid_argument", "Last-Event-ID must be a step id")
            last = int(header.strip())
        conn = await psycopg.AsyncConnection.connect(gw.dsn, autocommit=True, row_factory=dict_row)
        try:
            try:
                await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(who.role)))
            except psycopg.errors.InsufficientPrivilege:
                raise HttpError(403, "forbidden", f"the gateway may not act as role {who.role!r}") from None
            await conn.execute("SELECT pg_catalog.set_config('pgagent.tenant', %s, false)", [who.tenant])
            if await (await conn.execute("SELECT 1 FROM pgagent.turn WHERE turn_id = %s", [turn_id])).fetchone() is None:
                raise HttpError(404, "not_found", f"turn {turn_id} does not exist (for this key)")
            channel = (await (await conn.execute("SELECT pgagent.event_channel() AS ch")).fetchone())["ch"]
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
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
                    woke = False
                    async for n in conn.notifies(timeout=KEEPALIVE_S):
                        try:
                            note = json.loads(n.payload)
                        except ValueError:
                            continue
                        if note.get("turn_id") == turn_id:
                            woke = True
                            break
                    if await request.is_disconnected():
                        return
                    if not woke:
                        yield ": keep-alive\n\n"
            finally:
                await conn.close()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
