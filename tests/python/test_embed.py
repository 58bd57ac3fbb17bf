"""pgagent.embed: texts to pgvector vectors through an OpenAI-compatible /embeddings endpoint."""

from __future__ import annotations

import pytest
from psycopg import errors

from scripted_llm import embedding, http_error


def register(conn, llm, **kw) -> None:
    conn.execute("SELECT pgagent.register_model('emb', base_url => %s, kind => 'embedding', is_default => true, "
                 "params => '{\"dimensions\": 8}', max_retries => 0, secret_name => %s)",
                 [llm.base_url, kw.get("secret_name")])


def test_embed_returns_a_vector_per_text(conn, llm):
    register(conn, llm)
    v = conn.execute("SELECT vector_dims(pgagent.embed('rain in Seattle'))").fetchone()[0]
    assert v == 8
    a1, a2, b = (conn.execute("SELECT pgagent.embed(%s)::text", [t]).fetchone()[0]
                 for t in ("rain", "rain", "sunshine"))
    assert a1 == a2 and a1 != b  # the scripted server's vectors are a deterministic function of the text
    rows = conn.execute("SELECT vector_dims(v) FROM pgagent.embed(ARRAY['a', 'b', 'c']) AS v").fetchall()
    assert rows == [(8,), (8,), (8,)]
    body = llm.requests[-1]["body"]
    assert body["input"] == ["a", "b", "c"] and body["dimensions"] == 8
    # usable with pgvector operators straight away
    d = conn.execute("SELECT pgagent.embed('x') <=> pgagent.embed('x')").fetchone()[0]
    assert d == pytest.approx(0.0, abs=1e-6)


def test_embed_order_and_errors(conn, llm):
    register(conn, llm)
    llm.script_embeddings(embedding([1, 0, 0], [0, 1, 0]))
    rows = [r[0] for r in conn.execute("SELECT v::text FROM pgagent.embed(ARRAY['first', 'second']) AS v")]
    assert rows == ["[1,0,0]", "[0,1,0]"]
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SELECT pgagent.embed('x', model => 'nope')")
    with pytest.raises(errors.InvalidParameterValue):
        conn.execute("SELECT pgagent.embed('')")
    conn.execute("UPDATE pgagent.model SET base_url = 'http://127.0.0.1:9/v1'")
    with pytest.raises(errors.SystemError) as e:
        conn.execute("SELECT pgagent.embed('x')")
    assert "embedding with 'emb' failed" in str(e.value) and "cannot reach" in str(e.value)


def test_keyed_embedding_model_goes_through_llm_call(conn, llm):
    register(conn, llm, secret_name="EMB_KEY")
    conn.execute("SELECT set_config('pgagent.secret.EMB_KEY', 'sk-emb-0123456789', false)")
    assert conn.execute("SELECT vector_dims(pgagent.embed('hi'))").fetchone()[0] == 8
    assert llm.requests[-1]["headers"]["authorization"] == "Bearer sk-emb-0123456789"
    llm.script_embeddings(http_error(401, body="bad key sk-emb-0123456789"))
    with pytest.raises(errors.SystemError) as e:
        conn.execute("SELECT pgagent.embed('hi')")
    assert "sk-emb-0123456789" not in str(e.value) and "[REDACTED]" in str(e.value)
