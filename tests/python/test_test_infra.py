"""Self-tests of the test infrastructure: ``scripts/pgcluster.py`` and
``tests/python/scripted_llm.py``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pgcluster import Cluster, ClusterError, _pid_alive  # noqa: E402
from scripted_llm import (  # noqa: E402
    ScriptedLLM, embedding, hang, http_error, raw, text, tool_calls,
)


# ------------------------------------------------------------------ pgcluster
def test_cluster_lifecycle() -> None:
    cluster = Cluster()
    with cluster:
        base, pid = cluster.base_dir, cluster.pid
        assert pid is not None and _pid_alive(pid)
        assert os.path.basename(base).startswith("pgagent-cluster-")
        assert cluster.host == base
        assert os.path.exists(os.path.join(base, f".s.PGSQL.{cluster.port}"))
        assert os.path.isfile(cluster.log_path)

        # Unix socket
        with psycopg.connect(cluster.dsn(), connect_timeout=10) as conn:
            row = conn.execute(
                "select current_user, inet_server_addr() is null, "
                "current_setting('fsync'), current_setting('listen_addresses'), "
                "current_setting('shared_preload_libraries'), "
                "current_setting('server_version_num')::int / 10000").fetchone()
            assert row == ("postgres", True, "off", "127.0.0.1", "", 15)

        # TCP 127.0.0.1
        with psycopg.connect(cluster.dsn(tcp=True), connect_timeout=10) as conn:
            addr = conn.execute("select host(inet_server_addr()), inet_server_port()").fetchone()
            assert addr == ("127.0.0.1", cluster.port)
        dsn = f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            assert conn.execute("select 1").fetchone() == (1,)

        # createdb + psql helper
        cluster.createdb("infra test")
        with psycopg.connect(cluster.dsn("infra test")) as conn:
            assert conn.execute("select current_database()").fetchone() == ("infra test",)
        res = cluster.psql("-Atc", "select current_database()", dbname="infra test")
        assert res.returncode == 0 and res.stdout == "infra test\n"
        bad = cluster.psql("-c", "select nope")
        assert bad.returncode != 0 and "nope" in bad.stderr

    assert not os.path.exists(base)
    assert not _pid_alive(pid)
    cluster.stop()  # idempotent


def test_cluster_keep_and_refuses_nonempty_dir(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("x")
    with pytest.raises(ClusterError, match="not empty"):
        Cluster(str(tmp_path)).start()
    assert (tmp_path / "precious").exists()

    cluster = Cluster(keep=True).start()
    try:
        base = cluster.base_dir
        pid = cluster.pid
        cluster.stop()
        assert pid is not None and not _pid_alive(pid)
        assert os.path.isfile(cluster.log_path)
    finally:
        cluster.stop(keep=False)
    assert not os.path.exists(base)


@pytest.mark.parametrize("python", ["/usr/bin/python3", sys.executable])
def test_cluster_cli(python: str, request: pytest.FixtureRequest) -> None:
    if not os.path.exists(python):
        pytest.skip(f"{python} missing")
    # pytest's tmp_path lives under a 0700 dir the postgres user cannot traverse
    holder = Path(tempfile.mkdtemp(prefix="pgcluster-cli-test-"))
    os.chmod(holder, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(holder, ignore_errors=True))
    base = holder / "cl"
    script = str(ROOT / "scripts" / "pgcluster.py")
    out = subprocess.run([python, script, "start", "--dir", str(base)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    env = dict(line.split("=", 1) for line in out.stdout.splitlines())
    try:
        assert env["PGHOST"] == str(base) and env["PGUSER"] == "postgres"
        port = int(env["PGPORT"])
        with psycopg.connect(host=env["PGHOST"], port=port, user="postgres",
                             dbname="postgres") as conn:
            assert conn.execute("select 2").fetchone() == (2,)
        # the output is shell-evaluable
        sh = subprocess.run(["bash", "-c", 'eval "$1"; echo "$PGHOST:$PGPORT"', "_", out.stdout],
                            capture_output=True, text=True, timeout=60)
        assert sh.stdout.strip() == f"{base}:{port}"
        # a second start into the same (non-empty) dir is refused
        again = subprocess.run([python, script, "start", "--dir", str(base)],
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 1 and "not empty" in again.stderr
    finally:
        stop = subprocess.run([python, script, "stop", "--dir", str(base)],
                              capture_output=True, text=True, timeout=120)
    assert stop.returncode == 0, stop.stderr
    assert not base.exists()


# --------------------------------------------------------------- scripted_llm
@pytest.fixture
def llm() -> Iterator[ScriptedLLM]:
    with ScriptedLLM() as server:
        yield server


def _chat(llm: ScriptedLLM, **extra: object) -> requests.Response:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], **extra}
    return requests.post(f"{llm.base_url}/chat/completions", json=body,
                         headers={"Authorization": "Bearer sk-test"}, timeout=10)


def _messages(llm: ScriptedLLM) -> requests.Response:
    body = {"model": "claude-test", "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}]}
    return requests.post(f"{llm.anthropic_base_url}/v1/messages", json=body,
                         headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
                         timeout=10)


def test_llm_urls(llm: ScriptedLLM) -> None:
    assert llm.base_url == f"http://127.0.0.1:{llm.port}/v1"
    assert llm.anthropic_base_url == f"http://127.0.0.1:{llm.port}"


def test_openai_replies_in_order(llm: ScriptedLLM) -> None:
    llm.script(
        tool_calls([("run_sql", {"query": "select 1"}), ("search", {"q": "x"})],
                   content="thinking", prompt_tokens=7, completion_tokens=3),
        tool_calls([("run_sql", '{"query": "sel')]),  # malformed arguments
        text("the answer", prompt_tokens=20, completion_tokens=4),
    )
    assert llm.remaining == 3

    r1 = _chat(llm, tools=[{"type": "function", "function": {"name": "run_sql"}}])
    assert r1.status_code == 200
    j1 = r1.json()
    choice = j1["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    msg = choice["message"]
    assert msg["role"] == "assistant" and msg["content"] == "thinking"
    assert [c["id"] for c in msg["tool_calls"]] == ["call_1", "call_2"]
    assert msg["tool_calls"][0]["type"] == "function"
    assert msg["tool_calls"][0]["function"]["name"] == "run_sql"
    assert json.loads(msg["tool_calls"][0]["function"]["arguments"]) == {"query": "select 1"}
    assert j1["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert j1["model"] == "gpt-test"

    msg2 = _chat(llm).json()["choices"][0]["message"]
    assert msg2["tool_calls"][0]["id"] == "call_3"
    assert msg2["tool_calls"][0]["function"]["arguments"] == '{"query": "sel'
    assert msg2["content"] is None

    j3 = _chat(llm).json()
    assert j3["choices"][0]["finish_reason"] == "stop"
    assert j3["choices"][0]["message"] == {"role": "assistant", "content": "the answer"}
    assert j3["usage"]["total_tokens"] == 24
    assert llm.remaining == 0

    reqs = llm.requests
    assert len(reqs) == 3
    assert reqs[0]["path"] == "/v1/chat/completions" and reqs[0]["method"] == "POST"
    assert reqs[0]["body"]["tools"][0]["function"]["name"] == "run_sql"
    assert reqs[0]["body"]["messages"] == [{"role": "user", "content": "hi"}]
    assert reqs[0]["headers"]["authorization"] == "Bearer sk-test"


def test_anthropic_replies_in_order(llm: ScriptedLLM) -> None:
    llm.script(
        tool_calls([("run_sql", {"query": "select 1"})], content="let me check"),
        text("done", prompt_tokens=11, completion_tokens=2),
    )
    j1 = _messages(llm).json()
    assert j1["type"] == "message" and j1["role"] == "assistant"
    assert j1["stop_reason"] == "tool_use"
    assert j1["content"] == [
        {"type": "text", "text": "let me check"},
        {"type": "tool_use", "id": "toolu_1", "name": "run_sql", "input": {"query": "select 1"}},
    ]
    assert j1["usage"] == {"input_tokens": 10, "output_tokens": 5}

    j2 = _messages(llm).json()
    assert j2["stop_reason"] == "end_turn"
    assert j2["content"] == [{"type": "text", "text": "done"}]
    assert j2["usage"] == {"input_tokens": 11, "output_tokens": 2}

    reqs = llm.requests
    assert [r["path"] for r in reqs] == ["/v1/messages", "/v1/messages"]
    assert reqs[0]["headers"]["x-api-key"] == "k"
    assert reqs[0]["body"]["max_tokens"] == 100


def test_queue_shared_across_apis(llm: ScriptedLLM) -> None:
    llm.script(text("one"), text("two"))
    assert _messages(llm).json()["content"][0]["text"] == "one"
    assert _chat(llm).json()["choices"][0]["message"]["content"] == "two"


def test_errors_raw_and_exhaustion(llm: ScriptedLLM) -> None:
    llm.script(
        http_error(500),
        http_error(429, retry_after=2),
        http_error(503, body="plain text outage"),
        raw("this is not json"),
        raw('{"id": "x", "object": "chat.completion"}'),
        http_error(529),
    )
    r = _chat(llm)
    assert r.status_code == 500 and "error" in r.json()
    r = _chat(llm)
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert r.json()["error"]["type"] == "rate_limit_error"
    r = _chat(llm)
    assert r.status_code == 503 and r.text == "plain text outage"
    r = _chat(llm)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    r = _chat(llm)
    assert r.status_code == 200 and "choices" not in r.json()
    r = _messages(llm)
    assert r.status_code == 529 and r.json()["type"] == "error"

    r = _chat(llm)
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "script_exhausted"
    assert "exhausted" in r.json()["error"]["message"]
    r = _messages(llm)
    assert r.status_code == 500 and r.json()["error"]["type"] == "script_exhausted"
    assert len(llm.requests) == 8

    llm.script(text("after reset?"))
    llm.reset()
    assert llm.requests == [] and llm.remaining == 0
    llm.script(tool_calls([("a", {})]))
    assert _chat(llm).json()["choices"][0]["message"]["tool_calls"][0]["id"] == "call_1"


def test_bad_requests_do_not_consume_script(llm: ScriptedLLM) -> None:
    llm.script(text("kept"))
    r = requests.post(f"{llm.base_url}/chat/completions", data="not json", timeout=10)
    assert r.status_code == 400
    r = requests.post(f"{llm.base_url}/nowhere", json={}, timeout=10)
    assert r.status_code == 404
    assert llm.remaining == 1
    assert llm.requests[0]["body"] is None and llm.requests[0]["raw_body"] == "not json"


def test_embeddings(llm: ScriptedLLM) -> None:
    url = f"{llm.base_url}/embeddings"
    a = requests.post(url, json={"model": "e", "input": ["x", "y"]}, timeout=10).json()
    b = requests.post(url, json={"model": "e", "input": "x", "dimensions": 4}, timeout=10).json()
    assert [d["index"] for d in a["data"]] == [0, 1]
    assert len(a["data"][0]["embedding"]) == 16
    assert a["data"][0]["embedding"] != a["data"][1]["embedding"]
    assert len(b["data"][0]["embedding"]) == 4
    again = requests.post(url, json={"model": "e", "input": ["x", "y"]}, timeout=10).json()
    assert again["data"] == a["data"]
    llm.script_embeddings(embedding([1.0, 0.0]), http_error(500))
    c = requests.post(url, json={"model": "e", "input": "z"}, timeout=10).json()
    assert c["data"][0]["embedding"] == [1.0, 0.0]
    assert requests.post(url, json={"model": "e", "input": "z"}, timeout=10).status_code == 500
    assert llm.remaining == 0  # chat queue untouched


def test_hang_other_requests_not_blocked(llm: ScriptedLLM) -> None:
    llm.script(hang(0.5, then=text("late")), text("fast"))

    results: dict[str, str] = {}

    def slow() -> None:
        results["slow"] = _chat(llm).json()["choices"][0]["message"]["content"]

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.1)  # let the hang request pop its reply first
    t0 = time.monotonic()
    assert _chat(llm).json()["choices"][0]["message"]["content"] == "fast"
    assert time.monotonic() - t0 < 0.4
    t.join(5)
    assert results["slow"] == "late"


def test_hang_timeout_and_fast_stop() -> None:
    llm = ScriptedLLM().start()
    url = f"{llm.base_url}/chat/completions"
    try:
        llm.script(hang(5))
        t0 = time.monotonic()
        with pytest.raises(requests.exceptions.Timeout):
            requests.post(url, json={"model": "m", "messages": []}, timeout=0.5)
        assert time.monotonic() - t0 < 1.5
    finally:
        t1 = time.monotonic()
        llm.stop()
        stop_time = time.monotonic() - t1
    assert stop_time < 2.0
    llm.stop()  # idempotent
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(url, json={}, timeout=1)


def test_stop_aborts_in_flight_hang() -> None:
    llm = ScriptedLLM().start()
    url = f"{llm.base_url}/chat/completions"
    llm.script(hang(30))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            requests.post(url, json={"model": "m", "messages": []}, timeout=20)
        except requests.exceptions.RequestException as exc:
            errors.append(exc)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    llm.stop()
    t.join(5)
    assert time.monotonic() - t0 < 2.0
    assert not t.is_alive()
    assert errors and isinstance(errors[0], requests.exceptions.ConnectionError)
