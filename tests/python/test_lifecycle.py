"""The full lifecycle of what an admin configures (update, disable, enable, delete, with the
rules for what history keeps), end-user identity, the external runtime mode, verify_turn, the
checks at registration and errors a person can act on."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import errors

from scripted_llm import embedding, text, tool_calls
from test_loop import send, setup_agent


def audit_actions(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT action FROM pgagent.audit_event ORDER BY chain_seq")]


def test_update_disable_enable_delete(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(text("first"))
    assert send(conn, cid)["status"] == "completed"
    # update: only the given fields change, validated like registration
    conn.execute("SELECT pgagent.update_model('scripted', timeout_ms => 1234, params => '{\"temperature\": 0.2}')")
    assert conn.execute("SELECT timeout_ms, params, provider FROM pgagent.model WHERE name = 'scripted'").fetchone() == \
        (1234, {"temperature": 0.2}, "openai")
    conn.execute("SELECT pgagent.update_tool('bump', requires_approval => true)")
    assert conn.execute("SELECT requires_approval, kind FROM pgagent.tool WHERE name = 'bump'").fetchone() == (True, "function")
    conn.execute("SELECT pgagent.update_agent('analyst', tools => '{run_sql}', instructions => 'Short.')")
    assert conn.execute("SELECT array_agg(t.name) FROM pgagent.agent_tool x JOIN pgagent.tool t USING (tenant_id, tool_id)"
                        ).fetchone()[0] == ["run_sql"]
    conn.execute("SELECT pgagent.create_persona('p', 'You are P.')")
    conn.execute("SELECT pgagent.update_persona('p', system_prompt => 'You are Q.')")
    assert conn.execute("SELECT system_prompt FROM pgagent.persona WHERE name = 'p'").fetchone()[0] == "You are Q."
    # the model's params reached the request
    llm.script(text("second"))
    send(conn, cid)
    assert llm.requests[-1]["body"]["temperature"] == 0.2

    # a disabled agent takes no messages, a disabled model neither; enable restores
    assert conn.execute("SELECT pgagent.disable_agent('analyst')").fetchone()[0] is True
    with pytest.raises(errors.ObjectNotInPrerequisiteState) as e:
        send(conn, cid)
    assert "enable_agent" in e.value.diag.message_hint
    with pytest.raises(errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT pgagent.start_conversation('analyst')")
    conn.execute("SELECT pgagent.enable_agent('analyst')")
    conn.execute("SELECT pgagent.disable_model('scripted')")
    with pytest.raises(errors.ObjectNotInPrerequisiteState):
        send(conn, cid)
    conn.execute("SELECT pgagent.enable_model('scripted')")
    # a disabled tool is not offered to the model
    conn.execute("SELECT pgagent.disable_tool('run_sql')")
    llm.script(text("third"))
    send(conn, cid)
    assert "tools" not in llm.requests[-1]["body"]
    conn.execute("SELECT pgagent.enable_tool('run_sql')")

    # delete: refused while in use (2BP01, naming the users), allowed once unused
    with pytest.raises(errors.DependentObjectsStillExist) as e:
        conn.execute("SELECT pgagent.delete_model('scripted')")
    assert "analyst" in e.value.diag.message_detail and "disable_model" in e.value.diag.message_hint
    with pytest.raises(errors.DependentObjectsStillExist):
        conn.execute("SELECT pgagent.delete_agent('analyst')")
    conn.execute("SELECT pgagent.register_tool('unused', 'never called', kind => 'sql')")
    assert conn.execute("SELECT pgagent.delete_tool('unused')").fetchone()[0] is True
    assert conn.execute("SELECT pgagent.delete_persona('p')").fetchone()[0] is True
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SELECT pgagent.delete_persona('p')")
    actions = audit_actions(conn)
    for a in ("model_updated", "tool_updated", "agent_updated", "persona_updated", "agent_disabled", "agent_enabled",
              "model_disabled", "model_enabled", "tool_disabled", "tool_enabled", "tool_deleted", "persona_deleted"):
        assert a in actions, (a, actions)
    assert conn.execute("SELECT ok FROM pgagent.verify_audit_chain()").fetchone()[0] is True


def test_agent_stats_counts_every_status(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(text("done"))
    send(conn, cid)                                                           # completed
    t = conn.execute("SELECT pgagent.enqueue_message(%s, 'later')", [cid]).fetchone()[0]   # queued
    row = conn.execute("SELECT turns, completed, queued, running, cancelled FROM pgagent.agent_stats").fetchone()
    assert row == (2, 1, 1, 0, 0)
    conn.execute("SELECT pgagent.cancel_turn(%s)", [t])
    row = conn.execute("SELECT turns, completed, queued, running, cancelled FROM pgagent.agent_stats").fetchone()
    assert row == (2, 1, 0, 0, 1)
    # pending_approvals comes in the order it promises (oldest first)
    assert "ORDER BY" in conn.execute("SELECT pg_get_viewdef('pgagent.pending_approvals')").fetchone()[0]


def test_used_tool_is_disabled_not_deleted(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(tool_calls([("bump", {"n": 1})]), text("done"))
    assert send(conn, cid)["status"] == "completed"
    with pytest.raises(errors.DependentObjectsStillExist) as e:
        conn.execute("SELECT pgagent.delete_tool('bump')")
    assert "turn" in e.value.diag.message_detail
    conn.execute("SELECT pgagent.disable_tool('bump')")
    # the history stays readable
    assert conn.execute("SELECT count(*) FROM pgagent.turn_timeline WHERE tool_name = 'bump'").fetchone()[0] == 2


def test_secrets_members_and_conversations(conn, llm, cluster, dbname):
    conn.execute("SELECT pgagent.set_secret('K', 'sk-0123456789')")
    conn.execute("SELECT pgagent.register_model('keyed', base_url => %s, secret_name => 'K')", [llm.base_url])
    with pytest.raises(errors.DependentObjectsStillExist):
        conn.execute("SELECT pgagent.delete_secret('K')")
    conn.execute("SELECT pgagent.delete_model('keyed')")
    assert conn.execute("SELECT pgagent.delete_secret('K')").fetchone()[0] is True
    assert conn.execute("SELECT count(*) FROM pgagent.secret").fetchone()[0] == 0

    role = f"{dbname}_member"
    conn.execute(f'CREATE ROLE "{role}" LOGIN IN ROLE pgagent_viewer')
    try:
        assert conn.execute("SELECT pgagent.add_member('default', %s)", [role]).fetchone()[0] is True
        assert conn.execute("SELECT pgagent.add_member('default', %s)", [role]).fetchone()[0] is False
        with psycopg.connect(cluster.dsn(dbname, user=role), autocommit=True) as c:
            assert c.execute("SELECT pgagent.current_tenant() = pgagent.default_tenant_id()").fetchone()[0]
        assert conn.execute("SELECT pgagent.remove_member('default', %s)", [role]).fetchone()[0] is True
        with psycopg.connect(cluster.dsn(dbname, user=role), autocommit=True) as c:
            with pytest.raises(errors.InsufficientPrivilege):
                c.execute("SELECT pgagent.current_tenant()")
    finally:
        conn.execute(f'DROP ROLE "{role}"')

    cid = setup_agent(conn, llm)
    llm.script(text("a"), text("b"))
    send(conn, cid)
    send(conn, cid)
    out = conn.execute("SELECT pgagent.delete_conversation(%s, 'GDPR request')", [cid]).fetchone()[0]
    assert out == {"conversation_id": cid, "turns_deleted": 2, "steps_deleted": 6}
    assert conn.execute("SELECT count(*) FROM pgagent.step").fetchone()[0] == 0
    ev = conn.execute("SELECT payload FROM pgagent.audit_event WHERE action = 'conversation_deleted'").fetchone()[0]
    assert ev["reason"] == "GDPR request" and len(ev["turns"]) == 2 and all(t["last_step_hash"] for t in ev["turns"])
    assert conn.execute("SELECT ok FROM pgagent.verify_audit_chain()").fetchone()[0] is True
    # steps stay append-only outside delete_conversation
    with pytest.raises(errors.InsufficientPrivilege):
        conn.execute("DELETE FROM pgagent.audit_event")


def test_user_id_in_views(conn, llm):
    setup_agent(conn, llm)
    cid = conn.execute("SELECT pgagent.start_conversation('analyst', user_id => 'customer-42')").fetchone()[0]
    llm.script(tool_calls([("bump", {"n": 2})]))
    conn.execute("SELECT pgagent.update_tool('bump', requires_approval => true)")
    r = send(conn, cid)
    assert r["status"] == "awaiting_approval"
    for view in ("turn_summary", "turn_timeline", "pending_approvals"):
        assert conn.execute(f"SELECT DISTINCT user_id FROM pgagent.{view}").fetchall() == [("customer-42",)], view
    with pytest.raises(errors.InvalidParameterValue):
        conn.execute("SELECT pgagent.start_conversation('analyst', user_id => '')")


def test_external_runtime_mode(conn, llm):
    """prepare_turn returns the exact request; submit_reply continues with the app's reply,
    through the same parsing, validation, tools, approvals and log."""
    cid = setup_agent(conn, llm)
    turn = conn.execute("SELECT pgagent.enqueue_message(%s, 'How many rainy days?')", [cid]).fetchone()[0]
    prep = conn.execute("SELECT pgagent.prepare_turn(%s)", [turn]).fetchone()[0]
    req = prep["request"]
    assert prep["status"] == "running" and req["model"] == "scripted" and req["provider"] == "openai"
    assert req["messages"][0]["role"] == "system" and req["messages"][-1] == {"role": "user", "content": "How many rainy days?"}
    assert {t["function"]["name"] for t in req["tools"]} == {"run_sql", "bump"}
    # what the in-database loop would send is the same request
    llm.script(text("x"))
    conn.execute("SELECT pgagent.send_message(%s, 'probe')", [conn.execute(
        "SELECT pgagent.start_conversation('analyst')").fetchone()[0]])
    sent = llm.requests[-1]["body"]
    assert sent["tools"] == req["tools"] and sent["messages"][0] == req["messages"][0]
    n_requests = len(llm.requests)

    reply = {"id": "x", "object": "chat.completion", "model": "ext", "choices": [{"index": 0, "finish_reason": "tool_calls",
             "message": {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
             "function": {"name": "run_sql", "arguments": json.dumps({"query": "SELECT count(*) AS n FROM weather WHERE rain > 0"})}}]}}],
             "usage": {"prompt_tokens": 100, "completion_tokens": 20}}
    out = conn.execute("SELECT pgagent.submit_reply(%s, %s)", [turn, json.dumps(reply)]).fetchone()[0]
    assert out["status"] == "running" and out["request"] is not None
    assert out["request"]["messages"][-1]["role"] == "tool" and '"n":243' in out["request"]["messages"][-1]["content"]
    bad = conn.execute("SELECT pgagent.submit_reply(%s, '{\"choices\": \"nope\"}')", [turn]).fetchone()[0]
    assert bad["status"] == "failed" and "malformed" in bad["error"]
    assert len(llm.requests) == n_requests   # nothing was sent by the database
    kinds = [r[0] for r in conn.execute("SELECT kind FROM pgagent.step WHERE turn_id = %s ORDER BY seq", [turn])]
    assert kinds == ["user_message", "llm_call", "tool_call", "tool_result", "error", "error"]
    assert conn.execute("SELECT ok FROM pgagent.verify_turn(%s)", [turn]).fetchone()[0] is True
    with pytest.raises(errors.ObjectNotInPrerequisiteState):
        conn.execute("SELECT pgagent.submit_reply(%s, %s)", [turn, json.dumps(reply)])


def test_verify_turn_detects_a_superusers_edit(conn, llm):
    cid = setup_agent(conn, llm)
    llm.script(tool_calls([("bump", {"n": 3})]), text("bumped three"))
    r = send(conn, cid)
    t = r["turn_id"]
    assert conn.execute("SELECT * FROM pgagent.verify_turn(%s)", [t]).fetchone() == (True, 6, None, None)
    victim = conn.execute("SELECT step_id FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_result'", [t]).fetchone()[0]
    conn.execute("ALTER TABLE pgagent.step DISABLE TRIGGER step_no_update_delete")
    conn.execute("UPDATE pgagent.step SET payload = '{\"is_error\": false, \"result\": \"bumped 300\"}' WHERE step_id = %s",
                 [victim])
    conn.execute("ALTER TABLE pgagent.step ENABLE TRIGGER step_no_update_delete")
    ok, n, broken, problem = conn.execute("SELECT * FROM pgagent.verify_turn(%s)", [t]).fetchone()
    assert (ok, n, broken) == (False, 6, victim) and "hash does not match" in problem
    # the turn row too: a rewritten answer or cost is found by comparing with the steps
    llm.script(text("honest"))
    t2 = send(conn, cid)["turn_id"]
    conn.execute("ALTER TABLE pgagent.turn DISABLE TRIGGER turn_guard")
    conn.execute("UPDATE pgagent.turn SET answer = 'made up', cost_usd = 0 WHERE turn_id = %s", [t2])
    conn.execute("ALTER TABLE pgagent.turn ENABLE TRIGGER turn_guard")
    ok, _, broken, problem = conn.execute("SELECT * FROM pgagent.verify_turn(%s)", [t2]).fetchone()
    assert ok is False and broken is None and "differ" in problem
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SELECT * FROM pgagent.verify_turn(999999)")


def test_registration_checks_what_tools_use(conn, llm):
    setup_agent(conn, llm)
    cases = [
        ("SELECT pgagent.register_tool('f', 'd', kind => 'function', config => '{\"function\": \"public.nope\"}')",
         errors.UndefinedObject, "does not exist"),
        ("SELECT pgagent.register_tool('s', 'd', kind => 'sql', config => '{\"search_path\": \"nope_schema\"}')",
         errors.UndefinedObject, "nope_schema"),
        ("SELECT pgagent.register_tool('s', 'd', kind => 'sql', config => '{\"search_path\": \"hidden\"}')",
         errors.InsufficientPrivilege, "GRANT USAGE ON SCHEMA hidden TO pgagent_sandbox"),
        ("SELECT pgagent.register_tool('f', 'd', kind => 'function', config => '{\"function\": \"hidden.secret_fn\"}')",
         errors.InsufficientPrivilege, "GRANT EXECUTE"),
        ("SELECT pgagent.register_tool('f', 'd', kind => 'function', config => '{\"functon\": \"public.bump\"}')",
         errors.InvalidParameterValue, "functon"),
        ("SELECT pgagent.register_tool('r', 'd', '{\"type\": \"object\", \"properties\": {\"x\": {\"$ref\": "
         "\"http://127.0.0.1:9/schema.json\"}}}', kind => 'sql')", errors.InvalidParameterValue, "$ref"),
        ("SELECT pgagent.register_model('m', input_usd_per_mtok => 'NaN')", errors.InvalidParameterValue, "input_usd_per_mtok"),
        ("SELECT pgagent.register_model('m', output_usd_per_mtok => -1)", errors.InvalidParameterValue, "output_usd_per_mtok"),
        ("SELECT pgagent.register_model('m', params => '{\"messages\": []}')", errors.InvalidParameterValue, "messages"),
        ("SELECT pgagent.register_model('m', params => '{\"stream_options\": {}}')", errors.InvalidParameterValue,
         "stream_options"),
        ("SELECT pgagent.register_model('m', params => '{\"stream\": \"yes\"}')", errors.InvalidParameterValue,
         "must be true or false"),
        ("SELECT pgagent.create_agent('a2', model => 'scripted', config => '{\"auto_approve\": \"yes\"}')",
         errors.InvalidParameterValue, "auto_approve"),
        ("SELECT pgagent.create_agent('a2', model => 'scripted', config => '{\"max_step\": 3}')",
         errors.InvalidParameterValue, "max_steps"),
    ]
    conn.execute("CREATE SCHEMA hidden")
    conn.execute("CREATE FUNCTION hidden.secret_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    conn.execute("REVOKE EXECUTE ON FUNCTION hidden.secret_fn() FROM PUBLIC")
    conn.execute("SELECT pgagent.register_model('emb', kind => 'embedding', base_url => %s)", [llm.base_url])
    cases.append(("SELECT pgagent.create_agent('a3', model => 'emb')", errors.InvalidParameterValue, "embedding model"))
    deep = "[" * 10000 + "]" * 10000
    cases.append((f"SELECT pgagent.register_model('m', params => '{{\"stop\": {deep}}}')", errors.InvalidParameterValue,
                  "nested"))
    for q, exc, needle in cases:
        with pytest.raises(exc) as e:
            conn.execute(q)
        d = e.value.diag
        text_ = f"{d.message_primary} {d.message_detail} {d.message_hint}"
        assert d.message_primary.startswith("pgagent: "), (q, text_)
        assert needle in text_, (q, text_)
        assert d.message_detail and d.message_hint, q
        assert "Traceback" not in (d.context or "") and "PL/Python" not in (d.context or ""), (q, d.context)
    # send_message params are checked too, and nothing is recorded
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    before = conn.execute("SELECT count(*) FROM pgagent.turn").fetchone()[0]
    with pytest.raises(errors.InvalidParameterValue):
        conn.execute("SELECT pgagent.send_message(%s, 'hi', '{\"messages\": [{\"role\": \"system\", \"content\": \"x\"}]}')",
                     [cid])
    assert conn.execute("SELECT count(*) FROM pgagent.turn").fetchone()[0] == before


def test_embed_query_once_with_an_index(conn, llm):
    """The documented search form embeds the query once and can use an HNSW index."""
    conn.execute("SELECT pgagent.register_model('emb', kind => 'embedding', base_url => %s, is_default => true)",
                 [llm.base_url])
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text, v vector(16))")
    conn.execute("INSERT INTO notes SELECT i, 'note ' || i, ('[' || array_to_string(array_fill((i % 7)::real / 7 + 0.01, "
                 "ARRAY[16]), ',') || ']')::vector FROM generate_series(1, 2000) i")
    conn.execute("CREATE INDEX ON notes USING hnsw (v vector_cosine_ops)")
    conn.execute("ANALYZE notes")
    n = len(llm.requests)
    rows = conn.execute("SELECT id FROM notes ORDER BY v <=> (SELECT pgagent.embed('wet weather')) LIMIT 5").fetchall()
    assert len(rows) == 5
    assert len(llm.requests) == n + 1   # one embeddings request for the whole query
    plan = "\n".join(r[0] for r in conn.execute(
        "EXPLAIN SELECT id FROM notes ORDER BY v <=> (SELECT pgagent.embed('wet weather')) LIMIT 5"))
    assert "Index Scan using notes_v_idx" in plan and "InitPlan" in plan, plan


def test_run_turn_in_a_transaction_block_and_on_a_finished_turn(conn, llm, dsn):
    cid = setup_agent(conn, llm)
    llm.script(text("the answer"))
    t = send(conn, cid)["turn_id"]
    assert conn.execute("CALL pgagent.run_turn(%s)", [t]).fetchone()[0]["answer"] == "the answer"
    with psycopg.connect(dsn) as c:   # not autocommit: a transaction block
        with pytest.raises(errors.ActiveSqlTransaction) as e:
            c.execute("CALL pgagent.run_turn(%s)", [t])
        assert "outside a transaction block" in e.value.diag.message_primary
        assert "autocommit" in e.value.diag.message_hint
