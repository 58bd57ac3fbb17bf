"""The HTTP gateway (issue 13, python/pgagent_gateway): API keys, requests as the key's role,
REST, server-sent events, the OpenAI-compatible endpoint, metrics and errors. The app runs in
process (FastAPI's TestClient); the LLM is the scripted server."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from scripted_llm import ScriptedLLM, text, tool_calls
from test_loop import BUMP_SCHEMA, RUN_SQL_SCHEMA

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
from pgagent_gateway import auth  # noqa: E402
from pgagent_gateway.app import create_app  # noqa: E402

SQL_CALL = ("run_sql", {"query": "SELECT count(*) FROM weather WHERE rain > 0"})


class Site:
    """Two tenants (team, rival) with admin/operator/user roles, a gateway login role that may act
    as them, an analyst agent per tenant, and keys."""

    def __init__(self, cluster: Any, dbname: str, conn: psycopg.Connection, llm: ScriptedLLM) -> None:
        self.cluster, self.dbname, self.conn, self.llm = cluster, dbname, conn, llm
        self.roles: list[str] = []
        self.keys: dict[str, str] = {}

    def role(self, name: str) -> str:
        return f"{self.dbname}_{name}"

    def create_role(self, name: str, *member_of: str, login: bool = True) -> str:
        r = self.role(name)
        self.conn.execute(sql.SQL("CREATE ROLE {} {} {}").format(
            sql.Identifier(r), sql.SQL("LOGIN" if login else "NOLOGIN"),
            sql.SQL("IN ROLE ") + sql.SQL(", ").join(sql.Identifier(m) for m in member_of) if member_of else sql.SQL("")))
        self.roles.append(r)
        return r

    def as_role(self, name: str) -> psycopg.Connection:
        return psycopg.connect(self.cluster.dsn(self.dbname, user=self.role(name)), autocommit=True)

    def setup(self) -> None:
        c = self.conn
        c.execute("CREATE TABLE public.weather (day date, rain real)")
        c.execute("INSERT INTO public.weather SELECT '2013-01-01'::date + i, i % 3 FROM generate_series(0, 364) i")
        c.execute("CREATE TABLE public.bumps (n int)")
        c.execute("GRANT SELECT, INSERT ON public.bumps TO PUBLIC")
        c.execute("CREATE FUNCTION public.bump(n int) RETURNS text LANGUAGE sql AS "
                  "$$ INSERT INTO public.bumps VALUES (n) RETURNING 'bumped ' || n $$")
        gw = self.create_role("gw", "pgagent_gateway")
        for t in ("team", "rival"):
            group = self.create_role(t, login=False)
            c.execute("SELECT pgagent.add_tenant(%s, %s)", [t, group])
            for g in ("admin", "operator", "user"):
                self.create_role(f"{t}_{g}", f"pgagent_{g}", group)
                c.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(self.role(f"{t}_{g}")), sql.Identifier(gw)))
            for g in ("operator", "user"):   # an admin issues keys for roles it is a member of
                c.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(self.role(f"{t}_{g}")),
                                                          sql.Identifier(self.role(f"{t}_admin"))))
            with self.as_role(f"{t}_admin") as a:
                a.execute("SELECT pgagent.register_model('scripted', base_url => %s, is_default => true, "
                          "input_usd_per_mtok => 2.5, output_usd_per_mtok => 10)", [self.llm.base_url])
                a.execute("SELECT pgagent.register_tool('run_sql', 'Run SQL', %s, kind => 'sql')",
                          [json.dumps(RUN_SQL_SCHEMA)])
                a.execute("""SELECT pgagent.register_tool('bump', 'Bump', %s, kind => 'function',
                             config => '{"function": "public.bump"}', requires_approval => true)""",
                          [json.dumps(BUMP_SCHEMA)])
                a.execute("SELECT pgagent.create_agent('analyst', tools => '{run_sql,bump}')")
                for g in ("admin", "operator", "user"):
                    self.keys[f"{t}_{g}"] = a.execute("SELECT pgagent.create_api_key(%s, %s)",
                                                      [f"{g}-key", self.role(f"{t}_{g}")]).fetchone()[0]
        c.execute("GRANT SELECT ON public.weather TO pgagent_sandbox")

    def drop(self) -> None:
        self.conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(
            sql.SQL(", ").join(sql.Identifier(r) for r in self.roles)))
        for r in reversed(self.roles):
            self.conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)))


@pytest.fixture
def site(cluster, dbname, conn, llm) -> Iterator[Site]:
    s = Site(cluster, dbname, conn, llm)
    try:
        s.setup()
        yield s
    finally:
        s.drop()


@pytest.fixture
def client(site) -> Iterator[TestClient]:
    with TestClient(create_app(site.cluster.dsn(site.dbname, user=site.role("gw")), pool_size=4)) as c:
        yield c


def h(site: Site, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {site.keys[who]}"}


def error(r: Any) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and "Traceback" not in r.text, r.text
    return body["error"]


def test_keys_are_hashed_shown_once_and_map_to_roles(site, client):
    key = site.keys["team_user"]
    assert key.startswith("pga_") and len(key) == 52
    stored = site.conn.execute("SELECT prefix, hash, role_name FROM pgagent.api_key WHERE prefix = %s",
                               [key[:12]]).fetchone()
    assert stored[0] == key[:12] and stored[1].startswith("$2a$10$") and key not in stored[1]
    assert stored[2] == site.role("team_user")
    me = client.get("/v1/whoami", headers=h(site, "team_user")).json()
    assert me["role"] == site.role("team_user") and me["tenant"] == "team"
    # the pooled connection does not keep the last request's role
    assert client.get("/v1/whoami", headers=h(site, "rival_admin")).json()["role"] == site.role("rival_admin")
    assert client.get("/v1/whoami", headers={"X-API-Key": key}).json()["role"] == site.role("team_user")
    with site.as_role("team_admin") as a:
        listed = a.execute("SELECT name, role_name, live FROM pgagent.api_keys ORDER BY name").fetchall()
        assert listed == [("admin-key", site.role("team_admin"), True), ("operator-key", site.role("team_operator"), True),
                          ("user-key", site.role("team_user"), True)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            a.execute("SELECT hash FROM pgagent.api_key")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not issue keys"):
            a.execute("SELECT pgagent.create_api_key('x', %s)", [site.role("rival_user")])
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="superuser"):
            a.execute("SELECT pgagent.create_api_key('x', 'postgres')")
    with site.as_role("team_user") as u:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            u.execute("SELECT pgagent.create_api_key('mine')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            u.execute("SELECT * FROM pgagent.authenticate_api_key(%s)", [key])


def test_unauthenticated_revoked_and_rate_limited(site, client, monkeypatch):
    r = client.get("/v1/agents")
    assert r.status_code == 401 and error(r)["code"] == "unauthenticated" and r.headers["www-authenticate"] == "Bearer"
    r = client.get("/v1/agents", headers={"Authorization": "Bearer pga_" + "0" * 48})
    assert r.status_code == 401 and "not valid" in error(r)["message"]
    assert client.get("/v1/agents", headers=h(site, "team_user")).status_code == 200
    monkeypatch.setattr(auth, "CACHE_S", 0.0)
    client.app.state.gateway.keys = auth.KeyCache()
    with site.as_role("team_admin") as a:
        a.execute("SELECT pgagent.revoke_api_key('user-key')")
        slow = a.execute("SELECT pgagent.create_api_key('slow', %s, rate_per_min => 2)",
                         [site.role("team_user")]).fetchone()[0]
    r = client.get("/v1/agents", headers=h(site, "team_user"))
    assert r.status_code == 401
    codes = [client.get("/v1/agents", headers={"Authorization": f"Bearer {slow}"}).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    r = client.get("/v1/agents", headers={"Authorization": f"Bearer {slow}"})
    assert error(r)["code"] == "rate_limited" and int(r.headers["retry-after"]) >= 1


def test_a_conversation_over_rest_runs_as_the_keys_role(site, client):
    u = h(site, "team_user")
    assert [a["name"] for a in client.get("/v1/agents", headers=u).json()] == ["analyst"]
    r = client.post("/v1/conversations", headers=u, json={"agent": "analyst", "user_id": "cust-7"})
    assert r.status_code == 201
    cid = r.json()["conversation_id"]
    site.llm.script(tool_calls([SQL_CALL]), text("243 rainy days."))
    r = client.post(f"/v1/conversations/{cid}/messages", headers=u, json={"content": "How rainy was 2013?"})
    assert r.status_code == 200 and r.json()["answer"] == "243 rainy days." and r.json()["status"] == "completed"
    turn = r.json()["turn_id"]
    assert client.get(f"/v1/turns/{turn}", headers=u).json()["status"] == "completed"
    steps = client.get(f"/v1/turns/{turn}/steps", headers=u).json()
    assert [s["kind"] for s in steps] == ["user_message", "llm_call", "tool_call", "tool_result", "llm_call", "response"]
    assert [t["turn_id"] for t in client.get(f"/v1/conversations/{cid}/turns", headers=u).json()] == [turn]
    assert client.get("/v1/conversations?user_id=cust-7", headers=u).json()[0]["conversation_id"] == cid
    who = site.conn.execute("SELECT created_by::text FROM pgagent.turn WHERE turn_id = %s", [turn]).fetchone()[0]
    assert who == site.role("team_user")
    # the other tenant's keys see none of it
    rival = h(site, "rival_admin")
    assert client.get(f"/v1/turns/{turn}", headers=rival).status_code == 404
    assert client.get(f"/v1/turns/{turn}/steps", headers=rival).json() == []
    r = client.post(f"/v1/conversations/{cid}/messages", headers=rival, json={"content": "hi"})
    assert r.status_code == 404 and error(r)["code"] == "not_found"
    # queued for workers
    r = client.post(f"/v1/conversations/{cid}/messages", headers=u, json={"content": "later", "wait": False})
    assert r.status_code == 202 and r.json()["status"] == "queued"


def test_approvals_and_interventions(site, client):
    u, op = h(site, "team_user"), h(site, "team_operator")
    cid = client.post("/v1/conversations", headers=u, json={"agent": "analyst"}).json()["conversation_id"]
    site.llm.script(tool_calls([("bump", {"n": 3})]))
    r = client.post(f"/v1/conversations/{cid}/messages", headers=u, json={"content": "bump 3"}).json()
    assert r["status"] == "awaiting_approval"
    step = r["pending_approvals"][0]["step_id"]
    assert [a["step_id"] for a in client.get("/v1/approvals", headers=op).json()] == [step]
    # a user may not decide; the operator approves and the turn goes on
    denied = client.post(f"/v1/steps/{step}/decision", headers=u, json={"approved": True})
    assert denied.status_code == 403 and error(denied)["code"] == "forbidden"
    site.llm.script(text("Bumped 3."))
    r = client.post(f"/v1/steps/{step}/decision", headers=op, json={"approved": True, "note": "fine"})
    assert r.status_code == 200 and r.json()["turn"]["answer"] == "Bumped 3."
    assert site.conn.execute("SELECT n FROM public.bumps").fetchall() == [(3,)]
    # any other API function by its named arguments
    r = client.post("/v1/rpc/inject_message", headers=op, json={"conversation": cid, "content": "Be brief."})
    assert r.status_code == 200 and isinstance(r.json()["result"], int)
    assert client.post("/v1/rpc/inject_message", headers=u, json={"conversation": cid, "content": "x"}).status_code == 403
    r = client.post("/v1/rpc/inject_message", headers=op, json={"conversation": cid, "text": "x"})
    assert r.status_code == 400 and "no argument 'text'" in error(r)["message"]
    assert client.post("/v1/rpc/_py", headers=op, json={}).status_code == 404
    r = client.post("/v1/rpc/pause_conversation", headers=op, json={"conversation": cid, "reason": "checking"})
    assert r.status_code == 200
    assert client.get("/v1/conversations", headers=op).json()[0]["paused"] is True


def test_events_stream_and_resume(site, client):
    u = h(site, "team_user")
    cid = client.post("/v1/conversations", headers=u, json={"agent": "analyst"}).json()["conversation_id"]
    turn = client.post(f"/v1/conversations/{cid}/messages", headers=u,
                       json={"content": "rainy?", "wait": False}).json()["turn_id"]
    site.llm.script(tool_calls([SQL_CALL]), text("243."))
    with site.as_role("team_user") as c:
        c.execute("CALL pgagent.run_turn(%s)", [turn])

    def read(headers: dict[str, str], **params: Any) -> list[tuple[str, str, Any]]:
        out = []
        with client.stream("GET", f"/v1/turns/{turn}/events", headers=headers, params=params) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for block in r.read().decode().split("\n\n"):
                fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
                if "event" in fields:
                    out.append((fields["event"], fields.get("id"), json.loads(fields["data"])))
        return out

    events = read(u)
    assert [e[0] for e in events] == ["step"] * 6 + ["end"]
    assert [e[2]["kind"] for e in events[:6]] == ["user_message", "llm_call", "tool_call", "tool_result", "llm_call",
                                                  "response"]
    assert events[-1][2]["status"] == "completed" and events[-1][2]["answer"] == "243."
    third = events[2][1]
    resumed = read({**u, "Last-Event-ID": third})
    assert [e[2]["seq"] for e in resumed[:-1]] == [4, 5, 6]
    assert client.get(f"/v1/turns/{turn}/events", headers=h(site, "rival_user")).status_code == 404


def test_openai_compatible_endpoint_with_the_openai_library(site, client):
    openai = pytest.importorskip("openai")
    lib = openai.OpenAI(base_url=str(client.base_url) + "/v1", api_key=site.keys["team_user"], http_client=client)
    site.llm.script(tool_calls([SQL_CALL]), text("There were 243 rainy days."))
    out = lib.chat.completions.create(model="analyst", messages=[{"role": "user", "content": "How rainy was 2013?"}],
                                      user="cust-9")
    assert out.choices[0].message.content == "There were 243 rainy days." and out.model == "analyst"
    assert out.usage.prompt_tokens == 20 and out.usage.completion_tokens == 10
    # the same user continues the same conversation (its history is in the database)
    site.llm.script(text("Yes, about two in three days."))
    raw = lib.chat.completions.with_raw_response.create(
        model="analyst", messages=[{"role": "user", "content": "Is that a lot?"}], user="cust-9")
    conversation = raw.headers["x-pgagent-conversation"]
    assert raw.parse().choices[0].message.content == "Yes, about two in three days."
    history = site.llm.requests[-1]["body"]["messages"]
    assert {"role": "assistant", "content": "There were 243 rainy days."} in history
    # streaming: the text arrives in chunks that add up to the answer
    site.llm.script(text("Rain fell on 243 of 365 days."))
    chunks = list(lib.chat.completions.create(model="analyst", stream=True, user="cust-9",
                                              messages=[{"role": "user", "content": "Say it again."}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Rain fell on 243 of 365 days."
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert int(conversation) == site.conn.execute(
        "SELECT conversation_id FROM pgagent.conversation WHERE user_id = 'cust-9'").fetchone()[0]
    with pytest.raises(openai.NotFoundError):
        lib.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "x"}])


def test_bad_input_gets_a_4xx_with_a_readable_message(site, client):
    u = h(site, "team_user")
    r = client.post("/v1/conversations", headers={**u, "Content-Type": "application/json"}, content=b"{not json")
    assert r.status_code == 400 and error(r)["code"] == "invalid_json"
    r = client.post("/v1/conversations", headers=u, json=[1, 2])
    assert r.status_code == 400 and "JSON object" in error(r)["message"]
    r = client.post("/v1/conversations", headers=u, content=b"x" * (1 << 20 + 1))
    assert r.status_code == 413 and error(r)["code"] == "too_large"
    r = client.get("/v1/turns/not-a-number", headers=u)
    assert r.status_code == 400 and error(r)["code"] == "invalid_request"
    r = client.get("/v1/nowhere", headers=u)
    assert r.status_code == 404 and error(r)["code"] == "not_found"
    r = client.post("/v1/conversations", headers=u, json={"agent": "nobody"})
    assert r.status_code == 404 and "agent 'nobody' does not exist" in error(r)["message"]
    r = client.post("/v1/chat/completions", headers=u, json={"model": "analyst", "messages": []})
    assert r.status_code == 400 and error(r)["code"] == "invalid_argument"
    r = client.get("/v1/conversations?limit=100000", headers=u)
    assert r.status_code == 400


def test_health_ready_metrics_and_openapi(site, client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"status": "ready"}
    u = h(site, "team_user")
    cid = client.post("/v1/conversations", headers=u, json={"agent": "analyst"}).json()["conversation_id"]
    site.llm.script(text("hello"))
    client.post(f"/v1/conversations/{cid}/messages", headers=u, json={"content": "hi"})
    client.get("/v1/agents")
    m = client.get("/metrics").text
    assert 'pgagent_gateway_requests_total{method="POST",route="/v1/conversations/{conversation_id}/messages",' \
           'status="200"} 1.0' in m
    assert 'pgagent_gateway_turns_total{status="completed"} 1.0' in m
    assert 'pgagent_gateway_tokens_total{kind="prompt"} 10.0' in m
    assert 'pgagent_gateway_errors_total{code="unauthenticated"} 1.0' in m
    spec = client.get("/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"] and "/v1/turns/{turn_id}/events" in spec["paths"]
