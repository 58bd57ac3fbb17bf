"""``POST /v1/chat/completions``: an OpenAI-compatible endpoint whose ``model`` is an agent's name,
so any OpenAI client library can talk to a pgagent agent (reference:
https://platform.openai.com/docs/api-reference/chat/create).

The conversation: the ``X-Pgagent-Conversation`` header (a conversation id), else the request's
``user`` field (the latest conversation of that agent with that ``user_id``, or a new one), else
a new conversation per request. Only the last ``user`` message is sent: the conversation's earlier
turns are pgagent's history, kept in the database. The answer comes back as a ``chat.completion``
(``usage`` from the turn's tokens) with the headers ``X-Pgagent-Conversation`` and
``X-Pgagent-Turn``; with ``"stream": true`` as ``chat.completion.chunk`` events (the LLM's text as
it arrives: the turn's last call is asked to stream, and its NOTICEs are passed on) ending with
``data: [DONE]``. A turn that fails is HTTP 502 (code ``turn_failed``); one that waits for an
approval is HTTP 409 (code ``awaiting_approval``, with the pending calls).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .app import Gateway, Principal, _json, read_body
from .errors import HttpError, from_database


def last_user_message(messages: Any) -> str:
    """The text of the last ``user`` message (string content, or its text parts joined).
    Raises HttpError 400 when there is none."""
    if not isinstance(messages, list) or not messages:
        raise HttpError(400, "invalid_argument", "messages must be a non-empty array")
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            if isinstance(content, str) and content.strip():
                return content
            break
    raise HttpError(400, "invalid_argument", "messages has no user message with text")


def completion(summary: dict[str, Any], agent: str) -> dict[str, Any]:
    """A ``chat.completion`` object for a completed turn's summary."""
    usage = summary.get("usage") or {}
    return {"id": f"chatcmpl-pgagent-{summary['turn_id']}", "object": "chat.completion", "created": int(time.time()),
            "model": agent,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": summary.get("answer")},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": usage.get("prompt_tokens", 0), "completion_tokens": usage.get("completion_tokens", 0),
                      "total_tokens": usage.get("total_tokens", 0)}}


def check_outcome(summary: dict[str, Any]) -> None:
    """Raise HttpError for a turn that did not complete (502 turn_failed, 409 awaiting_approval)."""
    if summary["status"] == "completed":
        return
    if summary["status"] == "awaiting_approval":
        raise HttpError(409, "awaiting_approval", f"turn {summary['turn_id']} waits for an approval",
                        turn_id=summary["turn_id"], pending=summary.get("pending_approvals"))
    raise HttpError(502, "turn_failed", f"turn {summary['turn_id']} {summary['status']}: {summary.get('error')}",
                    turn_id=summary["turn_id"])


async def conversation_for(gw: Gateway, who: Principal, request: Request, agent: str, user: Any) -> int:
    """The conversation the request continues or starts (see the module doc)."""
    header = request.headers.get("x-pgagent-conversation")
    if header:
        if not header.strip().isdigit():
            raise HttpError(400, "invalid_argument", "X-Pgagent-Conversation must be a conversation id")
        found = await gw.value(who, """SELECT c.conversation_id FROM pgagent.conversation c
                                         JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
                                        WHERE c.conversation_id = %s AND a.name = %s""", [int(header), agent])
        if found is None:
            raise HttpError(404, "not_found", f"conversation {header.strip()} of agent {agent!r} does not exist (for this key)")
        return int(found)
    if user is not None and not isinstance(user, str):
        raise HttpError(400, "invalid_argument", "user must be a string")
    if user:
        found = await gw.value(who, """SELECT c.conversation_id FROM pgagent.conversation c
                                         JOIN pgagent.agent a ON a.tenant_id = c.tenant_id AND a.agent_id = c.agent_id
                                        WHERE a.name = %s AND c.user_id = %s ORDER BY c.conversation_id DESC LIMIT 1""",
                               [agent, user])
        if found is not None:
            return int(found)
    return int(await gw.value(who, "SELECT pgagent.start_conversation(%s, title => 'chat completions', user_id => %s)",
                              [agent, user or None]))


def add_routes(app: FastAPI, gw: Gateway) -> None:
    """Register the OpenAI-compatible route on ``app``."""

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(request: Request) -> Any:
        """OpenAI chat completions with ``model`` = an agent's name (see the module doc)."""
        who = await gw.principal(request)
        b = await read_body(request)
        agent = b.get("model")
        if not isinstance(agent, str) or not agent:
            raise HttpError(400, "invalid_argument", "model (the agent's name) is required")
        content = last_user_message(b.get("messages"))
        conversation = await conversation_for(gw, who, request, agent, b.get("user"))
        headers = {"X-Pgagent-Conversation": str(conversation)}
        if not b.get("stream"):
            t0 = time.perf_counter()
            summary = await gw.value(who, "SELECT pgagent.send_message(%s, %s)", [conversation, content])
            gw.metrics.turn(summary, time.perf_counter() - t0)
            await gw.trace(who, summary)
            headers["X-Pgagent-Turn"] = str(summary["turn_id"])
            check_outcome(summary)
            return JSONResponse(completion(summary, agent), headers=headers)
        include_usage = bool((b.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(stream(gw, who, conversation, content, agent, include_usage),
                                 media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})


async def stream(gw: Gateway, who: Principal, conversation: int, content: str, agent: str,
                 include_usage: bool) -> AsyncIterator[str]:
    """The chunks of a streamed chat completion."""
    created, cid = int(time.time()), f"chatcmpl-pgagent-c{conversation}-{time.time_ns()}"

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": agent,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    deltas: asyncio.Queue[str] = asyncio.Queue()
    yield chunk({"role": "assistant", "content": ""})
    t0 = time.perf_counter()
    try:
        async with gw.acting(who) as conn:
            conn.add_notice_handler(lambda d: deltas.put_nowait(d.message_primary or ""))
            task = asyncio.ensure_future(conn.execute("SELECT pgagent.send_message(%s, %s, '{\"stream\": true}') AS r",
                                                      [conversation, content]))
            while not task.done() or not deltas.empty():
                try:
                    text = await asyncio.wait_for(deltas.get(), timeout=0.05)
                except asyncio.TimeoutError:
                    continue
                if text:
                    yield chunk({"content": text})
            summary = _json((await (await task).fetchone())["r"])
        gw.metrics.turn(summary, time.perf_counter() - t0)
        await gw.trace(who, summary)
        check_outcome(summary)
        yield chunk({}, "stop")
        if include_usage:
            usage = completion(summary, agent)["usage"]
            yield f"data: {json.dumps({**json.loads(chunk({})[6:]), 'choices': [], 'usage': usage})}\n\n"
    except HttpError as e:
        yield f"data: {json.dumps(e.body())}\n\n"
    except psycopg.Error as e:   # a database error after the stream began: say so in the stream
        yield f"data: {json.dumps(from_database(e).body())}\n\n"
    yield "data: [DONE]\n\n"
