"""Prometheus metrics of the gateway (``GET /metrics``, prometheus_client's text format).

* ``pgagent_gateway_requests_total{method, route, status}`` and
  ``pgagent_gateway_request_seconds{route}`` (histogram, s): every request;
* ``pgagent_gateway_turns_total{status}``, ``pgagent_gateway_turn_seconds`` (histogram, s),
  ``pgagent_gateway_tokens_total{kind=prompt|completion}``, ``pgagent_gateway_cost_usd_total``
  (USD), ``pgagent_gateway_llm_calls_total``: the turns answered through the gateway (sync
  messages and chat completions), from the summaries pgagent returns;
* ``pgagent_gateway_errors_total{code}``: error responses by their stable code.

Labels never hold tenant data: ``route`` is the route's template (``/v1/turns/{turn_id}``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

#: request latency buckets (s): a turn with LLM calls takes seconds
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The gateway's metrics in a registry of their own (so two apps in one process never clash)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("pgagent_gateway_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram("pgagent_gateway_request_seconds", "HTTP request latency (s)", ["route"],
                                 buckets=BUCKETS, registry=r)
        self.turns = Counter("pgagent_gateway_turns", "turns answered through the gateway", ["status"], registry=r)
        self.turn_latency = Histogram("pgagent_gateway_turn_seconds", "turn latency through the gateway (s)",
                                      buckets=BUCKETS, registry=r)
        self.tokens = Counter("pgagent_gateway_tokens", "LLM tokens of those turns", ["kind"], registry=r)
        self.cost = Counter("pgagent_gateway_cost_usd", "LLM cost of those turns (USD)", registry=r)
        self.llm_calls = Counter("pgagent_gateway_llm_calls", "LLM calls of those turns", registry=r)
        self.errors = Counter("pgagent_gateway_errors", "error responses", ["code"], registry=r)

    def turn(self, summary: dict[str, Any], seconds: float) -> None:
        """Count a turn from pgagent's summary (send_message's result)."""
        self.turns.labels(summary.get("status") or "unknown").inc()
        self.turn_latency.observe(seconds)
        usage = summary.get("usage") or {}
        self.tokens.labels("prompt").inc(int(usage.get("prompt_tokens") or 0))
        self.tokens.labels("completion").inc(int(usage.get("completion_tokens") or 0))
        self.cost.inc(float(summary.get("cost_usd") or 0))
        self.llm_calls.inc(int(summary.get("llm_calls") or 0))

    def text(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)
