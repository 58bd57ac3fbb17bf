"""OpenTelemetry traces of turns (issue 13, pgagent_gateway/tracing.py), from the gateway and from
`pgagent worker`: checked with the SDK's in-memory exporter, and once through the real OTLP/HTTP
exporter against an in-process receiver."""

from __future__ import annotations

import http.server
import threading
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient

from scripted_llm import text, tool_calls
from test_gateway import SQL_CALL, Site, h, site  # noqa: F401  (site is a fixture)

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

from pgagent_gateway.app import create_app  # noqa: E402
from pgagent_gateway.tracing import Tracing  # noqa: E402
from pgagent_worker.worker import Worker  # noqa: E402


@pytest.fixture
def spans() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider), exporter


def delegating_lead(site: Site) -> None:
    with site.as_role("team_admin") as a:
        a.execute("""SELECT pgagent.register_tool('ask_analyst', 'Ask the analyst',
                     '{"type": "object", "properties": {"message": {"type": "string"}}}', kind => 'agent',
                     config => '{"agent": "analyst"}')""")
        a.execute("SELECT pgagent.create_agent('lead', tools => '{ask_analyst}')")


def test_a_delegating_turn_is_one_trace_with_gen_ai_attributes(site, spans):
    tracing, exporter = spans
    delegating_lead(site)
    with TestClient(create_app(site.cluster.dsn(site.dbname, user=site.role("gw")), pool_size=2,
                               tracing=tracing)) as client:
        u = h(site, "team_user")
        cid = client.post("/v1/conversations", headers=u, json={"agent": "lead"}).json()["conversation_id"]
        site.llm.script(tool_calls([("ask_analyst", {"message": "rainy days?"})], prompt_tokens=11, completion_tokens=3),
                        tool_calls([SQL_CALL], prompt_tokens=21, completion_tokens=4),
                        text("243.", prompt_tokens=31, completion_tokens=2),
                        text("The analyst says 243.", prompt_tokens=41, completion_tokens=5))
        r = client.post(f"/v1/conversations/{cid}/messages", headers=u, json={"content": "How rainy?"}).json()
    assert r["status"] == "completed"
    got = {s.name: s for s in exporter.get_finished_spans()}
    assert sorted(got) == ["chat scripted", "execute_tool ask_analyst", "execute_tool run_sql",
                           "invoke_agent analyst", "invoke_agent lead"]
    every = exporter.get_finished_spans()
    assert len(every) == 8 and len({s.context.trace_id for s in every}) == 1   # 4 chat spans, one trace
    root, tool, child = got["invoke_agent lead"], got["execute_tool ask_analyst"], got["invoke_agent analyst"]
    assert root.parent is None and tool.parent.span_id == root.context.span_id
    assert child.parent.span_id == tool.context.span_id
    assert got["execute_tool run_sql"].parent.span_id == child.context.span_id
    chats = sorted((s for s in every if s.name.startswith("chat")), key=lambda s: s.start_time)
    assert [s.attributes["gen_ai.usage.input_tokens"] for s in chats] == [11, 21, 31, 41]
    assert [s.parent.span_id for s in chats] == [root.context.span_id, child.context.span_id,
                                                 child.context.span_id, root.context.span_id]
    a = chats[0].attributes
    assert (a["gen_ai.operation.name"], a["gen_ai.system"], a["gen_ai.provider.name"], a["gen_ai.request.model"]) == \
        ("chat", "openai", "openai", "scripted")
    assert list(a["gen_ai.response.finish_reasons"]) == ["tool_calls"]
    assert root.attributes["gen_ai.agent.name"] == "lead" and root.attributes["pgagent.turn_id"] == r["turn_id"]
    assert root.attributes["gen_ai.usage.input_tokens"] == 52 and child.attributes["gen_ai.usage.input_tokens"] == 52
    assert tool.attributes["gen_ai.tool.name"] == "ask_analyst" and tool.attributes["gen_ai.operation.name"] == "execute_tool"
    # the times are the recorded ones: every span inside its parent
    for s in every:
        if s.parent is not None:
            parent = next(p for p in every if p.context.span_id == s.parent.span_id)
            assert parent.start_time <= s.start_time <= s.end_time <= parent.end_time, (s.name, parent.name)


def test_the_worker_exports_the_turns_it_runs(site, spans):
    tracing, exporter = spans
    with site.as_role("team_user") as u:
        cid = u.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
        u.execute("SELECT pgagent.enqueue_message(%s, 'rainy?')", [cid])
        site.llm.script(text("no idea"))
    w = Worker(site.cluster.dsn(site.dbname, user=site.role("team_user")), concurrency=1, once=True, poll_s=0.2,
               tracing=tracing)
    assert w.run() == 0
    names = [s.name for s in exporter.get_finished_spans()]
    assert sorted(names) == ["chat scripted", "invoke_agent analyst"]
    root = next(s for s in exporter.get_finished_spans() if s.name == "invoke_agent analyst")
    assert root.attributes["pgagent.status"] == "completed"


class _Receiver(http.server.BaseHTTPRequestHandler):
    got: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Receiver.got.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_otlp_exporter_sends_the_trace(site):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        tracing = Tracing.create(f"http://127.0.0.1:{srv.server_address[1]}", "pgagent-test")
        with TestClient(create_app(site.cluster.dsn(site.dbname, user=site.role("gw")), pool_size=2,
                                   tracing=tracing)) as client:
            u = h(site, "team_user")
            cid = client.post("/v1/conversations", headers=u, json={"agent": "analyst"}).json()["conversation_id"]
            site.llm.script(text("hello"))
            client.post(f"/v1/conversations/{cid}/messages", headers=u, json={"content": "hi"})
        tracing.flush()
    finally:
        srv.shutdown()
    assert _Receiver.got, "no OTLP request arrived"
    path, ctype, body = _Receiver.got[-1]
    assert path == "/v1/traces" and ctype == "application/x-protobuf"
    assert b"invoke_agent analyst" in body and b"gen_ai.usage.input_tokens" in body and b"pgagent-test" in body
