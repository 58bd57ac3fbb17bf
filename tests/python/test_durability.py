"""Durability (issue 9, first part): run_turn commits every step with synchronous_commit = on
whatever the session says; every tool run gets an idempotency key that is the same on a re-run
of the same call (http: the Idempotency-Key header; function: an idempotency_key parameter)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg

from scripted_llm import text, tool_calls
from test_loop import setup_agent


def test_run_turn_commits_durably_whatever_the_session_setting(conn, llm, dsn):
    setup_agent(conn, llm)
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    turn = conn.execute("SELECT pgagent.enqueue_message(%s, 'setting?')", [cid]).fetchone()[0]
    llm.script(tool_calls([("run_sql", {"query": "SELECT current_setting('synchronous_commit') AS sc"})]),
               text("done"))
    with psycopg.connect(dsn, autocommit=True) as worker:
        worker.execute("SET synchronous_commit = off")
        worker.execute("CALL pgagent.run_turn(%s)", [turn])
        # SET LOCAL lasted one transaction each: the session's own setting is untouched
        assert worker.execute("SHOW synchronous_commit").fetchone()[0] == "off"
    result = conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_result'",
                          [turn]).fetchone()[0]
    assert result["result"]["rows"] == [{"sc": "on"}]   # the step's transaction ran with it on


def test_function_tool_gets_a_stable_idempotency_key_and_dedupes(conn, llm):
    cid = setup_agent(conn, llm)
    conn.execute("CREATE TABLE public.charges (key text PRIMARY KEY, amount int)")
    conn.execute("""CREATE FUNCTION public.charge(amount int, idempotency_key text) RETURNS text LANGUAGE sql AS $$
                      INSERT INTO public.charges VALUES (idempotency_key, amount) ON CONFLICT (key) DO NOTHING;
                      SELECT 'charged ' || amount $$""")
    conn.execute("""SELECT pgagent.register_tool('charge', 'Charge the customer',
                    '{"type": "object", "properties": {"amount": {"type": "integer"}}, "required": ["amount"]}',
                    kind => 'function', config => '{"function": "public.charge"}')""")
    conn.execute("SELECT pgagent.update_agent('analyst', tools => '{run_sql,bump,charge}')")
    llm.script(tool_calls([("charge", {"amount": 5}), ("charge", {"amount": 7})]), text("charged twice"))
    r = conn.execute("SELECT pgagent.send_message(%s, 'charge 5 and 7')", [cid]).fetchone()[0]
    assert r["status"] == "completed"
    tenant = conn.execute("SELECT pgagent.current_tenant()::text").fetchone()[0]
    calls = [s for (s,) in conn.execute("SELECT step_id FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_call' "
                                        "ORDER BY seq", [r["turn_id"]])]
    keys = conn.execute("SELECT key, amount FROM public.charges ORDER BY amount").fetchall()
    assert keys == [(f"pgagent-{tenant}-{calls[0]}", 5), (f"pgagent-{tenant}-{calls[1]}", 7)]
    # a re-run of the same call (what a crash before its tool_result would cause) has the same key
    # and so changes nothing
    conn.execute("SELECT public.charge(5, %s)", [keys[0][0]])
    assert conn.execute("SELECT count(*) FROM public.charges").fetchone()[0] == 2


class _Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        _Recorder.seen.append(dict(self.headers.items()))
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a: Any) -> None:
        pass


def test_http_tool_sends_the_idempotency_key(conn, llm):
    cid = setup_agent(conn, llm)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.seen.clear()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/orders"
        conn.execute("SELECT pgagent.allow_egress('127.0.0.1')")
        conn.execute("INSERT INTO pgagent.egress_exception (tenant_id, network, note) "
                     "VALUES (pgagent.current_tenant(), '127.0.0.1/32', 'test server')")
        conn.execute("""SELECT pgagent.register_tool('order', 'Place an order',
                        '{"type": "object", "properties": {"item": {"type": "string"}}, "required": ["item"]}',
                        kind => 'http', config => %s)""", [json.dumps({"url": url, "method": "POST", "body_arg": "item"})])
        conn.execute("SELECT pgagent.update_agent('analyst', tools => '{run_sql,bump,order}')")
        llm.script(tool_calls([("order", {"item": "tea"})]), text("ordered"))
        r = conn.execute("SELECT pgagent.send_message(%s, 'order tea')", [cid]).fetchone()[0]
    finally:
        server.shutdown()
    assert r["status"] == "completed", r
    call = conn.execute("SELECT step_id FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_call'",
                        [r["turn_id"]]).fetchone()[0]
    tenant = conn.execute("SELECT pgagent.current_tenant()::text").fetchone()[0]
    assert [h.get("Idempotency-Key") for h in _Recorder.seen] == [f"pgagent-{tenant}-{call}"]
