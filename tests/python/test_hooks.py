"""Policy hooks (pgagent.add_hook) against the scripted LLM server: allow, deny and rewrite at
before_llm_call, before_tool_call and after_response; fail closed; run as their role; the
example hook in examples/hooks/redact_email.sql."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from scripted_llm import text, tool_calls
from test_loop import bumps, kinds, send, setup_agent, steps

ROOT = Path(__file__).resolve().parents[2]


def hook(conn: psycopg.Connection, name: str, body: str, event: str, **kw: Any) -> int:
    """Create public.<name>(payload jsonb) RETURNS jsonb (plpgsql ``body``) and add it as a hook."""
    conn.execute(f"CREATE FUNCTION public.{name}(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$ {body} $$")
    conn.execute(f"GRANT EXECUTE ON FUNCTION public.{name}(jsonb) TO pgagent_sandbox")
    args = "".join(f", {k} => %s" for k in kw)
    return conn.execute(f"SELECT pgagent.add_hook(%s, 'public.{name}(jsonb)'{args})",
                        [event, *kw.values()]).fetchone()[0]


def guardrails(conn: psycopg.Connection, turn_id: int) -> list[dict[str, Any]]:
    return [s["payload"] for s in steps(conn, turn_id, "guardrail")]


def test_example_hook_redacts_email_addresses_from_answers(conn, llm):
    cid = setup_agent(conn, llm)
    conn.execute((ROOT / "examples" / "hooks" / "redact_email.sql").read_text())
    llm.script(text("Write to jane.doe@example.com or ops@mail.example.org."), text("Noted."))
    r = send(conn, cid, "who do I contact?")
    assert r["status"] == "completed"
    assert r["answer"] == "Write to [redacted email] or [redacted email]."
    assert kinds(conn, r["turn_id"]) == ["user_message", "llm_call", "guardrail", "response"]
    assert steps(conn, r["turn_id"], "llm_call")[0]["payload"]["message"]["content"].startswith("Write to jane.doe@")
    assert guardrails(conn, r["turn_id"]) == [{"event": "after_response", "hook": "policy.redact_email(jsonb)",
                                              "action": "rewrite", "reason": "e-mail addresses redacted"}]
    # the next turn's history carries the redacted answer; an answer without addresses is untouched
    r2 = send(conn, cid, "thanks")
    assert r2["answer"] == "Noted." and "guardrail" not in kinds(conn, r2["turn_id"])
    assert any(m["content"] == "Write to [redacted email] or [redacted email]."
               for m in llm.requests[1]["body"]["messages"])
    assert conn.execute("SELECT verify_ok FROM pgagent.verify_turn(%s) AS v(verify_ok, a, b, c)",
                        [r["turn_id"]]).fetchone()[0]


def test_before_tool_call_deny_tells_the_model_and_runs_nothing(conn, llm):
    cid = setup_agent(conn, llm)
    hook(conn, "no_bump", "BEGIN IF payload->>'tool' = 'bump' THEN "
                          "RETURN '{\"action\": \"deny\", \"reason\": \"bumps are frozen\"}'; END IF; RETURN NULL; END",
         "before_tool_call")
    llm.script(tool_calls([("bump", {"n": 4})]), text("I could not bump."))
    r = send(conn, cid, "bump 4")
    assert r["status"] == "completed" and bumps(conn) == []
    res = steps(conn, r["turn_id"], "tool_result")[0]["payload"]
    assert res["is_error"] and res["denied"] and "bumps are frozen" in res["error"]
    assert llm.requests[1]["body"]["messages"][-1]["role"] == "tool"
    assert "bumps are frozen" in llm.requests[1]["body"]["messages"][-1]["content"]
    assert kinds(conn, r["turn_id"]) == ["user_message", "llm_call", "tool_call", "guardrail", "tool_result",
                                         "llm_call", "response"]
    # other tools pass
    llm.script(tool_calls([("run_sql", {"query": "SELECT 1 AS one"})]), text("one"))
    r = send(conn, cid, "sql")
    assert steps(conn, r["turn_id"], "tool_result")[0]["payload"]["is_error"] is False


def test_before_tool_call_rewrite_is_validated_and_recorded(conn, llm):
    cid = setup_agent(conn, llm)
    hook(conn, "double", "BEGIN RETURN jsonb_build_object('action', 'rewrite', 'payload', jsonb_build_object("
                         "'arguments', jsonb_build_object('n', (payload->'arguments'->>'n')::int * 2))); END",
         "before_tool_call")
    llm.script(tool_calls([("bump", {"n": 3})]), text("bumped 6"))
    r = send(conn, cid, "bump 3")
    assert bumps(conn) == [6]
    res = steps(conn, r["turn_id"], "tool_result")[0]["payload"]
    assert res["rewritten_by"] == "public.double(jsonb)" and res["arguments"] == {"n": 6}
    assert steps(conn, r["turn_id"], "tool_call")[0]["payload"]["arguments"] == {"n": 3}   # what the model asked
    # a rewrite the tool's schema refuses is a denial, not a call
    conn.execute("CREATE OR REPLACE FUNCTION public.double(payload jsonb) RETURNS jsonb LANGUAGE sql AS "
                 "$$ SELECT '{\"action\": \"rewrite\", \"payload\": {\"arguments\": {\"n\": -1}}}'::jsonb $$")
    llm.script(tool_calls([("bump", {"n": 1})]), text("no"))
    r = send(conn, cid, "bump 1")
    res = steps(conn, r["turn_id"], "tool_result")[0]["payload"]
    assert res["denied"] and "rewrote the arguments into invalid ones" in res["error"] and bumps(conn) == [6]


def test_before_llm_call_deny_fails_the_turn_without_a_request(conn, llm):
    cid = setup_agent(conn, llm)
    hook(conn, "no_secrets", "BEGIN IF payload::text ILIKE '%password%' THEN "
                             "RETURN '{\"action\": \"deny\", \"reason\": \"mentions a password\"}'; END IF; "
                             "RETURN '{\"action\": \"allow\"}'; END", "before_llm_call")
    r = send(conn, cid, "my password is hunter2")
    assert r["status"] == "failed" and len(llm.requests) == 0
    assert "denied by policy hook public.no_secrets(jsonb): mentions a password" in r["error"]
    assert kinds(conn, r["turn_id"]) == ["user_message", "guardrail", "error"]
    assert steps(conn, r["turn_id"], "error")[0]["payload"]["error_kind"] == "hook_denied"
    llm.script(text("fine"))
    assert send(conn, cid, "hello")["status"] == "completed"


def test_before_llm_call_rewrite_changes_what_is_sent_and_hooks_chain_in_priority_order(conn, llm):
    cid = setup_agent(conn, llm)
    # priority 10 runs first: masks digits; priority 20 sees its output and appends a note
    hook(conn, "mask_digits", """BEGIN RETURN jsonb_build_object('action', 'rewrite', 'reason', 'digits masked',
            'payload', jsonb_build_object('messages', (SELECT jsonb_agg(CASE WHEN m->>'role' = 'user'
                THEN jsonb_set(m, '{content}', to_jsonb(regexp_replace(m->>'content', '[0-9]', '#', 'g'))) ELSE m END
                ORDER BY i) FROM jsonb_array_elements(payload->'messages') WITH ORDINALITY AS x(m, i)))); END""",
         "before_llm_call", priority=10)
    hook(conn, "note", """BEGIN RETURN jsonb_build_object('action', 'rewrite', 'payload', jsonb_build_object(
            'messages', payload->'messages' || '[{"role": "system", "content": "seen by note"}]'::jsonb,
            'params', '{"temperature": 0.1}'::jsonb)); END""", "before_llm_call", priority=20)
    llm.script(text("ok"))
    r = send(conn, cid, "card 4111 1111")
    body = llm.requests[0]["body"]
    assert body["messages"][-2] == {"role": "user", "content": "card #### ####"}
    assert body["messages"][-1] == {"role": "system", "content": "seen by note"} and body["temperature"] == 0.1
    assert guardrails(conn, r["turn_id"]) == [{"event": "before_llm_call", "action": "rewrite",
                                              "hook": "public.mask_digits(jsonb), public.note(jsonb)",
                                              "reason": "digits masked"}]
    assert steps(conn, r["turn_id"], "user_message")[0]["payload"]["content"] == "card 4111 1111"


@pytest.mark.parametrize("body,reason", [
    ("BEGIN RAISE EXCEPTION 'boom'; END", "the hook failed: "),
    ("BEGIN RETURN '{\"action\": \"maybe\"}'; END", "neither NULL nor"),
    ("BEGIN RETURN '[1, 2]'; END", "neither NULL nor"),
    ("BEGIN RETURN '{\"action\": \"rewrite\", \"payload\": {\"content\": 7}}'; END", "content must be a string"),
    ("BEGIN RETURN '{\"action\": \"rewrite\", \"payload\": {}}'; END", "must set content"),
    ("BEGIN PERFORM pg_sleep(5); RETURN NULL; END", "timed out after 200 ms"),
    ("BEGIN PERFORM count(*) FROM pgagent.secret; RETURN NULL; END", "permission denied"),
])
def test_a_failing_hook_denies(conn, llm, body, reason):
    cid = setup_agent(conn, llm, config={"hook_timeout_ms": 200})
    hook(conn, "bad", body, "after_response")
    llm.script(text("the answer"))
    r = send(conn, cid, "q")
    assert r["status"] == "failed" and r["answer"] is None
    g = guardrails(conn, r["turn_id"])
    assert len(g) == 1 and g[0]["action"] == "deny" and reason in g[0]["reason"], g
    assert steps(conn, r["turn_id"], "error")[0]["payload"]["error_kind"] == "hook_denied"


def test_hooks_run_as_their_role_and_their_writes_are_rolled_back(conn, llm):
    cid = setup_agent(conn, llm)
    conn.execute("CREATE TABLE public.hook_log (who name, at timestamptz DEFAULT now())")
    conn.execute("GRANT INSERT ON public.hook_log TO pgagent_sandbox")
    hook(conn, "whoami", "BEGIN INSERT INTO public.hook_log(who) VALUES (current_user); "
                         "RETURN jsonb_build_object('action', 'deny', 'reason', 'as ' || current_user); END",
         "before_llm_call")
    r = send(conn, cid, "hi")
    assert "as pgagent_sandbox" in r["error"]
    assert conn.execute("SELECT count(*) FROM public.hook_log").fetchone()[0] == 0


def test_agent_scoped_hook_and_delete_hook(conn, llm):
    cid = setup_agent(conn, llm)
    conn.execute("SELECT pgagent.create_agent('other', model => 'scripted')")
    other = conn.execute("SELECT pgagent.start_conversation('other')").fetchone()[0]
    hid = hook(conn, "deny_all", "BEGIN RETURN '{\"action\": \"deny\", \"reason\": \"closed\"}'; END",
               "before_llm_call", agent="analyst")
    llm.script(text("other works"), text("analyst works again"))
    assert send(conn, cid, "a")["status"] == "failed"
    assert send(conn, other, "b")["status"] == "completed"
    assert conn.execute("SELECT pgagent.delete_hook(%s)", [hid]).fetchone()[0] is True
    assert send(conn, cid, "c")["answer"] == "analyst works again"
    acts = [a for (a,) in conn.execute("SELECT action FROM pgagent.audit_event WHERE object_type = 'hook' "
                                       "ORDER BY event_id")]
    assert acts == ["hook_added", "hook_deleted"]


def test_add_hook_checks_its_arguments(conn, llm):
    setup_agent(conn, llm)
    conn.execute("CREATE FUNCTION public.not_a_hook(x int) RETURNS jsonb LANGUAGE sql AS $$ SELECT NULL::jsonb $$")
    conn.execute("CREATE FUNCTION public.ok_hook(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT NULL::jsonb $$")
    conn.execute("REVOKE EXECUTE ON FUNCTION public.ok_hook(jsonb) FROM PUBLIC")
    cases = [
        ("SELECT pgagent.add_hook('before_lunch', 'public.ok_hook(jsonb)')", errors.InvalidParameterValue, "event"),
        ("SELECT pgagent.add_hook(NULL, 'public.ok_hook(jsonb)')", errors.InvalidParameterValue, "event"),
        ("SELECT pgagent.add_hook('after_response', NULL)", errors.InvalidParameterValue, "function"),
        ("SELECT pgagent.add_hook('after_response', 'public.not_a_hook(int)')", errors.InvalidParameterValue,
         "is not a hook"),
        ("SELECT pgagent.add_hook('after_response', 'public.ok_hook(jsonb)', agent => 'nope')",
         errors.UndefinedObject, "nope"),
        ("SELECT pgagent.add_hook('after_response', 'public.ok_hook(jsonb)', run_as => 'postgres')",
         errors.InsufficientPrivilege, "superuser"),
        ("SELECT pgagent.add_hook('after_response', 'public.ok_hook(jsonb)', run_as => 'no_such_role_y')",
         errors.UndefinedObject, "no_such_role_y"),
        ("SELECT pgagent.add_hook('after_response', 'public.ok_hook(jsonb)')", errors.InsufficientPrivilege,
         "may not execute"),
        ("SELECT pgagent.add_hook('after_response', 'public.ok_hook(jsonb)', priority => 2000000000)",
         errors.InvalidParameterValue, "priority"),
        ("SELECT pgagent.delete_hook(NULL)", errors.InvalidParameterValue, "hook"),
        ("SELECT pgagent.delete_hook(777)", errors.UndefinedObject, "777"),
    ]
    for sql, err, match in cases:
        with pytest.raises(err, match=match):
            conn.execute(sql)
    with pytest.raises(errors.UndefinedFunction):
        conn.execute("SELECT pgagent.add_hook('after_response', 'public.missing(jsonb)')")
    assert conn.execute("SELECT count(*) FROM pgagent.hook").fetchone()[0] == 0
    conn.execute("GRANT EXECUTE ON FUNCTION public.ok_hook(jsonb) TO pgagent_sandbox")
    hid = conn.execute("SELECT pgagent.add_hook('after_response', 'public.ok_hook(jsonb)', priority => 5)").fetchone()[0]
    row = conn.execute("SELECT event, fn::text, run_as, priority FROM pgagent.hook WHERE hook_id = %s", [hid]).fetchone()
    assert row == ("after_response", "ok_hook(jsonb)", "pgagent_sandbox", 5)
    ev = conn.execute("SELECT payload FROM pgagent.audit_event WHERE action = 'hook_added'").fetchone()[0]
    assert json.dumps(ev) and ev["function"] == "public.ok_hook(jsonb)" and ev["priority"] == 5
