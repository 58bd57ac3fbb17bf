"""Server-sent events: ``GET /v1/turns/{turn_id}/events`` (one turn's steps, as they commit) and
``GET /v1/events`` (every step the key's role may see: the console's live feed).

The streams of one role in one tenant share a :class:`Feed`: one connection LISTENs on the
tenant's channel (its name, an unguessable key, is asked for with ``pgagent.event_channel()`` as
the key's role; the notifications hold ids only), and on each notification the feed reads the new
steps once through ``pgagent.turn_timeline`` on a pooled connection acting as that role, so row
level security decides what is sent, and hands the encoded events to every stream. 200 streams of
one role cost one listening connection and one read per notification, not 200 of each.
Events (WHATWG event-stream format):

* ``event: step``, ``id: <step_id>``, ``data``: the turn_timeline row without its payload (seq,
  kind, tool_name, summary, tokens, cost_usd, latency_ms, ...: :data:`COLUMNS`);
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

import asyncio
import json
from typing import Any, AsyncIterator

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from psycopg import sql

from .app import Gateway
from .errors import HttpError

#: what an event carries of a turn_timeline row: everything but the step's payload (large; read it
#: with GET /v1/turns/{id}/steps), so that a busy feed stays light
COLUMNS = ("tenant_id, conversation_id, agent, turn_id, turn_seq, turn_status, step_id, seq, kind, tool_name, "
           "tool_call_id, parent_step_id, summary, prompt_tokens, completion_tokens, cost_usd, latency_ms, at_ms, "
           "created_by, created_at, user_id, parent_turn_id, depth")

#: seconds between keep-alive comments
KEEPALIVE_S = 15.0
#: statuses after which a turn's stream ends (the turn needs someone else to go on)
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


class Feed:
    """The live steps of one tenant channel as one role sees them, shared by every stream of
    that role: on each notification it reads the new steps once (``turn_timeline`` after the
    last step it saw, as the role) and hands each subscriber the rows, already encoded as
    events, plus the turn status changes. One LISTEN connection per feed."""

    def __init__(self, gw: Gateway, who: Any, channel: str) -> None:
        self.gw, self.who, self.channel = gw, who, channel
        self.subscribers: set[asyncio.Queue[Any]] = set()
        self.task: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.dirty = asyncio.Event()   # notifications came since the last read
        self.turn_notes: list[dict[str, Any]] = []
        self.step_ids: list[int] = []   # notified (so committed) steps not read yet

    async def start(self) -> None:
        """Begin listening (returns once LISTEN is on and the starting step is known)."""
        self.task = asyncio.ensure_future(self._run())
        self.reader = asyncio.ensure_future(self._reads())
        await asyncio.wait_for(self.ready.wait(), timeout=10)

    def stop(self) -> None:
        """Stop listening and reading."""
        for t in (self.task, self.reader):
            if t is not None:
                t.cancel()

    async def _reads(self) -> None:
        """One read per burst of notifications: however many came while a read ran, the next
        read gets all their steps at once (then the turn status changes that came with them)."""
        while True:
            await self.dirty.wait()
            self.dirty.clear()
            notes, self.turn_notes = self.turn_notes, []
            ids, self.step_ids = self.step_ids, []
            try:
                await self._read(ids)
            except asyncio.CancelledError:
                raise
            except Exception:   # a lost connection, a pool timeout: try again (nothing is dropped)
                self.step_ids = ids + self.step_ids
                self.turn_notes = notes + self.turn_notes
                self.dirty.set()
                await asyncio.sleep(1.0)
                continue
            for note in notes:
                self._push(("turn", note))

    def _push(self, item: Any) -> None:
        for q in list(self.subscribers):
            if q.full():
                # a client this far behind re-reads from its last step (a "gap") when it catches up:
                # what it had queued is dropped, the database still has it
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(("gap", None))
            q.put_nowait(item)   # (after a gap: delivered if the gap's read did not cover it)

    async def _read(self, ids: list[int]) -> None:
        """Read and hand out the notified steps. By id, not "after the last one": step ids are
        taken when a step is written, but transactions commit in another order, and a
        notification (sent at commit) is the moment a step is visible. Row level security
        leaves out what the role may not see."""
        for i in range(0, len(ids), 1000):
            rows = await self.gw.rows(self.who, "SELECT " + COLUMNS + " FROM pgagent.turn_timeline "
                                                "WHERE step_id = ANY(%s) ORDER BY step_id", [ids[i:i + 1000]])
            for r in rows:
                self._push(("step", (int(r["step_id"]), int(r["turn_id"]), event("step", r, int(r["step_id"])))))

    async def _run(self) -> None:
        while self.subscribers:
            try:
                async with await psycopg.AsyncConnection.connect(self.gw.dsn, autocommit=True) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    if not self.ready.is_set():
                        self.ready.set()
                    else:   # after a reconnect: the streams re-read what came meanwhile
                        self._push(("gap", None))
                    async for n in conn.notifies():
                        try:
                            note = json.loads(n.payload)
                        except ValueError:
                            continue
                        if note.get("type") == "turn":
                            self.turn_notes.append(note)   # sent after the read that follows
                        elif note.get("type") == "step" and isinstance(note.get("step_id"), int):
                            self.step_ids.append(note["step_id"])
                        if note.get("type") in ("step", "turn"):
                            self.dirty.set()
            except asyncio.CancelledError:
                return
            except psycopg.Error:
                await asyncio.sleep(1.0)


class Hub:
    """The feeds of the process, by (channel, role): created on the first subscriber, stopped
    when the last one leaves."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.feeds: dict[tuple[str, str], Feed] = {}
        self.lock = asyncio.Lock()

    async def subscribe(self, who: Any) -> tuple[Feed, asyncio.Queue[Any]]:
        """Join the feed of ``who``'s tenant and role; returns it and the subscriber's queue
        (items: ``("step", (step_id, turn_id, encoded event))``, ``("turn", note)``, ``("gap", None)``)."""
        channel = await self.gw.value(who, "SELECT pgagent.event_channel()")
        q: asyncio.Queue[Any] = asyncio.Queue(maxsize=5000)
        async with self.lock:
            feed = self.feeds.get((channel, who.role))
            if feed is None or (feed.task is not None and feed.task.done()):
                feed = self.feeds[(channel, who.role)] = Feed(self.gw, who, channel)
                feed.subscribers.add(q)
                await feed.start()
            else:
                feed.subscribers.add(q)
        return feed, q

    def unsubscribe(self, feed: Feed, q: asyncio.Queue[Any]) -> None:
        """Leave; the last subscriber out stops the feed."""
        feed.subscribers.discard(q)
        if not feed.subscribers and feed.task is not None:
            feed.stop()
            if self.feeds.get((feed.channel, feed.who.role)) is feed:
                del self.feeds[(feed.channel, feed.who.role)]

    async def close(self) -> None:
        """Stop every feed."""
        for f in self.feeds.values():
            f.stop()
        self.feeds.clear()


class Sent:
    """The step ids a stream has sent lately (the last :data:`REMEMBER` of them), so that a step
    is sent once however it arrives (the feed, a catch-up read)."""

    REMEMBER = 20000

    def __init__(self) -> None:
        from collections import deque
        self.ids: set[int] = set()
        self.order: Any = deque()

    def first(self, step_id: int) -> bool:
        """Whether ``step_id`` was not sent yet (it is remembered as sent from now on)."""
        if step_id in self.ids:
            return False
        self.ids.add(step_id)
        self.order.append(step_id)
        if len(self.order) > self.REMEMBER:
            self.ids.discard(self.order.popleft())
        return True

    def floor(self) -> int:
        """Where a catch-up read starts: before the steps remembered (commits come out of id
        order, so a late commit may have an id below the ones sent)."""
        return min(self.order) - 1 if self.order else 0


async def next_batch(q: asyncio.Queue[Any], request: Request) -> list[Any] | None:
    """What a stream writes next: the items waiting in its queue; [] after :data:`KEEPALIVE_S`
    without any (write a keep-alive); None when the client has gone."""
    items = await take(q)
    if not items and await request.is_disconnected():
        return None
    return items


async def take(q: asyncio.Queue[Any]) -> list[Any]:
    """The items waiting in a subscriber queue (at least one), or [] after :data:`KEEPALIVE_S`
    without any: a stream writes what accumulated as one chunk."""
    try:
        items = [await asyncio.wait_for(q.get(), timeout=KEEPALIVE_S)]
    except asyncio.TimeoutError:
        return []
    while not q.empty():
        items.append(q.get_nowait())
    return items


def add_routes(app: FastAPI, gw: Gateway) -> None:
    """Register the events routes on ``app``."""
    hub = gw.hub = Hub(gw)

    def sse(stream: AsyncIterator[str]) -> StreamingResponse:
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.get("/v1/events", tags=["read"])
    async def tenant_events(request: Request, after: int | None = None, recent: int = 0) -> StreamingResponse:
        """Every step the key's role may see, as server-sent events as they commit (the console's
        live feed): after ``Last-Event-ID``/``?after=`` if given, else the ``recent`` (0..500)
        latest steps first, then new ones."""
        who = await gw.principal(request)
        last = resume_point(request, after)
        if not 0 <= recent <= 500:
            raise HttpError(400, "invalid_argument", "recent must be from 0 to 500")
        feed, q = await hub.subscribe(who)

        async def stream() -> AsyncIterator[str]:
            try:
                sent = Sent()
                if last is None:
                    rows = await gw.rows(who, "SELECT * FROM (SELECT " + COLUMNS + " FROM pgagent.turn_timeline "
                                              "ORDER BY step_id DESC LIMIT %s) x ORDER BY step_id", [recent])
                else:
                    rows = await gw.rows(who, "SELECT " + COLUMNS + " FROM pgagent.turn_timeline WHERE step_id > %s "
                                              "ORDER BY step_id LIMIT 5000", [last])
                out = [event("step", r, int(r["step_id"])) for r in rows if sent.first(int(r["step_id"]))]
                if out:
                    yield "".join(out)
                while True:
                    items = await next_batch(q, request)
                    if items is None:
                        return
                    if not items:
                        yield ": keep-alive\n\n"
                        continue
                    out = []
                    for item in items:
                        if item[0] == "step" and sent.first(item[1][0]):
                            out.append(item[1][2])
                        elif item[0] == "gap":   # fell behind (or the feed reconnected): read what it missed
                            rows = await gw.rows(who, "SELECT " + COLUMNS + " FROM pgagent.turn_timeline "
                                                      "WHERE step_id > %s ORDER BY step_id LIMIT 20000", [sent.floor()])
                            out += [event("step", r, int(r["step_id"])) for r in rows if sent.first(int(r["step_id"]))]
                    if out:
                        yield "".join(out)
            finally:
                hub.unsubscribe(feed, q)

        return sse(stream())

    @app.get("/v1/turns/{turn_id}/events", tags=["read"])
    async def turn_events(request: Request, turn_id: int, after: int | None = None) -> StreamingResponse:
        """The turn's steps as server-sent events (see the module doc)."""
        who = await gw.principal(request)
        last = resume_point(request, after) or 0
        if await gw.value(who, "SELECT 1 FROM pgagent.turn WHERE turn_id = %s", [turn_id]) is None:
            raise HttpError(404, "not_found", f"turn {turn_id} does not exist (for this key)")
        feed, q = await hub.subscribe(who)

        async def status() -> dict[str, Any] | None:
            rows = await gw.rows(who, "SELECT status, answer, error FROM pgagent.turn WHERE turn_id = %s", [turn_id])
            return rows[0] if rows else None

        async def stream() -> AsyncIterator[str]:
            seen = last
            try:
                caught_up = True
                while True:
                    if caught_up:
                        for r in await gw.rows(who, "SELECT " + COLUMNS + " FROM pgagent.turn_timeline WHERE turn_id = %s "
                                                    "AND step_id > %s ORDER BY seq", [turn_id, seen]):
                            seen = int(r["step_id"])
                            yield event("step", r, seen)
                        t = await status()
                        if t is None or t["status"] in STOPPED:
                            yield event("end", {"turn_id": turn_id, **(t or {"status": "gone"})})
                            return
                        caught_up = False
                    items = await next_batch(q, request)
                    if items is None:
                        return
                    if not items:
                        yield ": keep-alive\n\n"
                        continue
                    out = []
                    for item in items:
                        if item[0] == "step" and item[1][1] == turn_id and item[1][0] > seen:
                            seen = item[1][0]
                            out.append(item[1][2])
                        elif (item[0] == "turn" and item[1].get("turn_id") == turn_id) or item[0] == "gap":
                            caught_up = True   # read anything missed, then the status
                    if out:
                        yield "".join(out)
            finally:
                hub.unsubscribe(feed, q)

        return sse(stream())
