"""OpenTelemetry traces of turns, exported by the gateway and the workers when an OTLP endpoint
is configured (``--otlp-endpoint`` or the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` /
``OTEL_EXPORTER_OTLP_ENDPOINT``), through the opentelemetry-sdk's OTLP/HTTP exporter.

A turn is recorded step by step in the database, so its trace is built from the steps once the
turn stops (finished, or waiting for an approval), with the times they recorded: no
instrumentation runs inside the database. One trace per turn tree:

* ``invoke_agent <agent>``: the turn (created_at to finished_at), with ``gen_ai.operation.name``
  ``invoke_agent``, ``gen_ai.agent.name``, ``gen_ai.conversation.id``, ``gen_ai.usage.input_tokens``
  / ``output_tokens`` (the turn's own), ``pgagent.turn_id``, ``pgagent.status``,
  ``pgagent.cost_usd`` (USD); an error status for a failed turn and an event per error step;
* ``chat <model>`` (span kind CLIENT) per LLM call (ending when its llm_call step was recorded,
  lasting its latency_ms): ``gen_ai.operation.name`` ``chat``, ``gen_ai.system`` and
  ``gen_ai.provider.name`` (openai, anthropic, gcp.gemini, ollama), ``gen_ai.request.model``,
  ``gen_ai.response.model``, ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``,
  ``gen_ai.response.finish_reasons``, ``pgagent.cost_usd``;
* ``execute_tool <tool>`` per tool call that has a result: ``gen_ai.operation.name``
  ``execute_tool``, ``gen_ai.tool.name``, ``gen_ai.tool.call.id``, ``gen_ai.tool.type``
  (function), an error status for an error result; an agent tool's child turn is an
  ``invoke_agent`` span under it, with its own calls below.

Attribute names: the OpenTelemetry semantic conventions for generative AI
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/ and gen-ai-agent-spans/).
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any

#: the turn tree of a root turn and every step of it (run as the key's or worker's role)
TREE_SQL = """
SELECT x.turn_id, x.parent_turn_id, x.parent_step_id, x.agent, t.status, t.conversation_id, t.error, t.created_at,
       t.finished_at, t.prompt_tokens, t.completion_tokens, t.cost_usd::float8 AS cost_usd
  FROM pgagent.turn_tree(%s) x JOIN pgagent.turn t ON t.turn_id = x.turn_id"""
STEPS_SQL = """
SELECT step_id, turn_id, seq, kind, payload, parent_step_id, tool_call_id, tool_name, prompt_tokens,
       completion_tokens, cost_usd::float8 AS cost_usd, latency_ms::float8 AS latency_ms, created_at
  FROM pgagent.step WHERE turn_id = ANY(%s) ORDER BY turn_id, seq"""

_SYSTEM = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "ollama": "ollama"}


def endpoint_from_env() -> str | None:
    """The OTLP traces endpoint the environment configures, or None."""
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")


def _ns(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000) * 1000


class Tracing:
    """Builds and exports turn traces. Pass ``provider`` (an SDK TracerProvider, e.g. with an
    in-memory exporter in tests) or ``endpoint`` (OTLP/HTTP, e.g.
    ``http://127.0.0.1:4318/v1/traces``); with neither, :meth:`create` returns None."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("pgagent", "0.2.0")

    @classmethod
    def create(cls, endpoint: str | None = None, service: str = "pgagent") -> "Tracing | None":
        """A Tracing exporting to ``endpoint`` (default: the environment's), or None when no
        endpoint is configured (tracing off; opentelemetry is then never imported)."""
        endpoint = endpoint or endpoint_from_env()
        if not endpoint:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if not endpoint.rstrip("/").endswith("/v1/traces"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5)))
        return cls(provider)

    def export(self, turns: list[dict[str, Any]], steps: list[dict[str, Any]]) -> None:
        """Emit the spans of one turn tree: ``turns`` as :data:`TREE_SQL` returns them (root
        first), ``steps`` as :data:`STEPS_SQL` returns them. Never raises for odd rows (missing
        times or latencies are taken from the neighbouring steps)."""
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        by_turn: dict[int, list[dict[str, Any]]] = {}
        for s in steps:
            by_turn.setdefault(int(s["turn_id"]), []).append(s)
        children = {(int(t["parent_turn_id"]), int(t["parent_step_id"])): t for t in turns
                    if t.get("parent_turn_id") is not None}

        def turn_span(t: dict[str, Any], parent_ctx: Any) -> None:
            end = t["finished_at"] or max((s["created_at"] for s in by_turn.get(int(t["turn_id"]), [])),
                                          default=t["created_at"])
            span = self.tracer.start_span(f"invoke_agent {t['agent']}", context=parent_ctx, kind=SpanKind.INTERNAL,
                                          start_time=_ns(t["created_at"]), attributes={
                                              "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": t["agent"],
                                              "gen_ai.conversation.id": str(t["conversation_id"]),
                                              "gen_ai.usage.input_tokens": int(t["prompt_tokens"] or 0),
                                              "gen_ai.usage.output_tokens": int(t["completion_tokens"] or 0),
                                              "pgagent.turn_id": int(t["turn_id"]), "pgagent.status": t["status"],
                                              "pgagent.cost_usd": float(t["cost_usd"] or 0)})
            ctx = trace.set_span_in_context(span)
            calls = {s["step_id"]: s for s in by_turn.get(int(t["turn_id"]), []) if s["kind"] == "tool_call"}
            for s in by_turn.get(int(t["turn_id"]), []):
                done = _ns(s["created_at"])
                began = done - int(float(s["latency_ms"] or 0) * 1e6)
                p = s["payload"] or {}
                if s["kind"] == "llm_call":
                    model = p.get("model") or "unknown"
                    system = _SYSTEM.get(p.get("provider") or "", p.get("provider") or "unknown")
                    child = self.tracer.start_span(f"chat {model}", context=ctx, kind=SpanKind.CLIENT, start_time=began,
                                                   attributes={
                                                       "gen_ai.operation.name": "chat", "gen_ai.system": system,
                                                       "gen_ai.provider.name": system, "gen_ai.request.model": model,
                                                       "gen_ai.response.model": model,
                                                       "gen_ai.usage.input_tokens": int(s["prompt_tokens"] or 0),
                                                       "gen_ai.usage.output_tokens": int(s["completion_tokens"] or 0),
                                                       "gen_ai.response.finish_reasons": [str(p.get("finish_reason"))],
                                                       "pgagent.cost_usd": float(s["cost_usd"] or 0),
                                                       "pgagent.step_id": int(s["step_id"])})
                    child.end(end_time=done)
                elif s["kind"] == "tool_result":
                    call = calls.get(s["parent_step_id"]) or {}
                    start = began if s["latency_ms"] is not None else _ns(call.get("created_at") or s["created_at"])
                    child = self.tracer.start_span(f"execute_tool {s['tool_name']}", context=ctx, kind=SpanKind.INTERNAL,
                                                   start_time=start, attributes={
                                                       "gen_ai.operation.name": "execute_tool",
                                                       "gen_ai.tool.name": s["tool_name"] or "",
                                                       "gen_ai.tool.call.id": s["tool_call_id"] or "",
                                                       "gen_ai.tool.type": "function",
                                                       "pgagent.step_id": int(s["step_id"])})
                    if p.get("is_error"):
                        child.set_status(Status(StatusCode.ERROR, str(p.get("error"))[:500]))
                    sub = children.get((int(t["turn_id"]), int(s["parent_step_id"] or 0)))
                    if sub is not None:
                        turn_span(sub, trace.set_span_in_context(child))
                    child.end(end_time=done)
                elif s["kind"] == "error":
                    span.add_event("error", {"message": str(p.get("message"))[:500]}, timestamp=done)
            if t["status"] == "failed":
                span.set_status(Status(StatusCode.ERROR, str(t.get("error") or "failed")[:500]))
            span.end(end_time=_ns(end))

        root = next((t for t in turns if t.get("parent_turn_id") is None), turns[0] if turns else None)
        if root is not None:
            turn_span(root, None)

    def flush(self) -> None:
        """Send what is buffered (the SDK's batch processor)."""
        self.provider.force_flush()
