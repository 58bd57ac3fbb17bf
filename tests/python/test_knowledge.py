"""Knowledge base (issue 10): chunking, the embedding queue, hybrid search with RRF, updates that
re-embed only changed chunks, the knowledge tool with citations (docs/memory.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest
from psycopg import errors

from pgagent_core.errors import InvalidArgument
from pgagent_core.knowledge import chunk_text
from scripted_llm import embedding, http_error, text, tool_calls

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def unit(*xs: float, dim: int = 8) -> list[float]:
    v = list(xs) + [0.0] * (dim - len(xs))
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


# ------------------------------------------------------------------------------------ chunking

def test_chunks_follow_paragraphs_and_overlap():
    paras = [f"Paragraph {i} " + "word " * 30 for i in range(6)]   # ~165 characters each
    body = "\n\n".join(p.strip() for p in paras)
    chunks = chunk_text(body, size=400, overlap=60)
    assert len(chunks) >= 3
    for s, e, c in chunks:
        assert body[s:e] == c and len(c) <= 400
    assert chunks[0][2].startswith("Paragraph 0") and "Paragraph 1" in chunks[0][2]
    # every paragraph is whole in some chunk, and each chunk after the first repeats the tail of the one before
    for p in paras:
        assert any(p.strip() in c for _, _, c in chunks)
    for (s1, e1, _), (s2, _, c2) in zip(chunks, chunks[1:]):
        assert s2 < e1 and e1 - s2 <= 60 + 40 and c2[0] != " "


def test_a_long_paragraph_is_cut_at_sentences_then_words():
    sentence = "This sentence has exactly seven words here. "
    body = sentence * 40 + "\n\n" + "x" * 50 + " " + "y" * 500
    chunks = chunk_text(body, size=300, overlap=0)
    assert all(len(c) <= 300 for _, _, c in chunks)
    assert all(c.endswith(".") for _, _, c in chunks[:-3])          # sentence boundaries first
    assert "".join(c.replace(" ", "") for _, _, c in chunks) == body.replace(" ", "").replace("\n", "")
    with pytest.raises(InvalidArgument):
        chunk_text(body, size=50)


# ------------------------------------------------------------------------------------ the SQL API

def setup(conn, llm, *, dim_model: bool = True) -> None:
    conn.execute("SELECT pgagent.register_model('chat', base_url => %s, is_default => true, max_retries => 0)",
                 [llm.base_url])
    if dim_model:
        conn.execute("SELECT pgagent.register_model('emb', base_url => %s, kind => 'embedding', is_default => true, "
                     "max_retries => 0)", [llm.base_url])
    conn.execute("SELECT pgagent.create_collection('docs', chunk_size => 300, chunk_overlap => 50)")


CORPUS = [("vacuum", "Postgres vacuum reclaims storage held by dead tuples."),
          ("autovacuum", "The autovacuum daemon needs tuning on busy tables."),
          ("pasta", "Cook the pasta al dente, then add the sauce.")]


def load_corpus(conn, llm) -> dict[str, int]:
    ids = {}
    for title, body in CORPUS:
        ids[title] = conn.execute("SELECT (pgagent.add_document('docs', %s, %s, %s) ->> 'document_id')::bigint",
                                  [title, body, json.dumps({"topic": "cooking" if title == "pasta" else "db"})]).fetchone()[0]
    llm.script_embeddings(embedding(unit(1, 0), unit(0.8, 0.6), unit(0, 0, 1)))   # one batch, chunk order
    r = conn.execute("SELECT pgagent.embed_pending()").fetchone()[0]
    assert r["embedded"] == 3 and r["failed"] == 0
    return ids


def test_hybrid_search_fuses_vector_and_text_ranks(conn, llm):
    setup(conn, llm)
    ids = load_corpus(conn, llm)
    q = unit(0.6, 0.8)          # nearest: autovacuum, then vacuum, then pasta
    def run(mode):
        llm.script_embeddings(embedding(q))
        return conn.execute("SELECT document_id, vector_rank, text_rank, score FROM pgagent.search('docs', "
                            "'vacuum storage', k => 3, mode => %s)", [mode]).fetchall()
    vec = run("vector")
    assert [r[0] for r in vec] == [ids["autovacuum"], ids["vacuum"], ids["pasta"]]
    txt = conn.execute("SELECT document_id FROM pgagent.search('docs', 'vacuum storage', mode => 'text')").fetchall()
    assert [r[0] for r in txt] == [ids["vacuum"]]     # 'autovacuum' is another word
    hyb = run("hybrid")
    assert [r[0] for r in hyb] == [ids["vacuum"], ids["autovacuum"], ids["pasta"]]
    assert [(r[1], r[2]) for r in hyb] == [(2, 1), (1, None), (3, None)]
    assert abs(hyb[0][3] - (1 / 62 + 1 / 61)) < 1e-6 and abs(hyb[1][3] - 1 / 61) < 1e-6   # RRF, k = 60
    # a metadata filter
    llm.script_embeddings(embedding(q))
    rows = conn.execute("SELECT document_id FROM pgagent.search('docs', 'vacuum', filter => '{\"topic\": \"cooking\"}')").fetchall()
    assert [r[0] for r in rows] == [ids["pasta"]]


def test_documents_are_searchable_by_text_before_they_are_embedded(conn, llm):
    setup(conn, llm)
    r = conn.execute("SELECT pgagent.add_document('docs', 'faq', 'Refunds take five business days.')").fetchone()[0]
    assert r["chunks"] == 1 and r["pending"] == 1 and r["changed"]
    assert conn.execute("SELECT pending, embedded FROM pgagent.documents").fetchone() == (1, 0)
    llm.script_embeddings(embedding(unit(1)))
    rows = conn.execute("SELECT title, vector_rank, text_rank FROM pgagent.search('docs', 'refund days')").fetchall()
    assert rows == [("faq", None, 1)]
    conn.execute("SELECT pgagent.embed_pending()")
    assert conn.execute("SELECT pending, embedded FROM pgagent.documents").fetchone() == (0, 1)


def test_an_update_re_embeds_only_changed_chunks(conn, llm):
    setup(conn, llm)
    # no overlap here: with an overlap the chunk after a changed one repeats its tail, and changes too
    conn.execute("SELECT pgagent.create_collection('plain', chunk_size => 300, chunk_overlap => 0)")
    paras = [f"Section {i}. " + ("alpha beta gamma " * 12).strip() + "." for i in range(4)]  # ~215 chars: one chunk each
    conn.execute("SELECT pgagent.add_document('plain', 'manual', %s)", ["\n\n".join(paras)])
    assert conn.execute("SELECT count(*) FROM pgagent.chunk").fetchone()[0] == 4
    conn.execute("SELECT pgagent.embed_pending()")
    before = len([q for q in llm.requests if q["path"].endswith("/embeddings")])
    paras[2] = "Section 2. " + ("delta epsilon zeta " * 11).strip() + "."
    r = conn.execute("SELECT pgagent.add_document('plain', 'manual', %s)", ["\n\n".join(paras)]).fetchone()[0]
    assert (r["version"], r["chunks"], r["reused"], r["pending"]) == (2, 4, 3, 1)
    conn.execute("SELECT pgagent.embed_pending()")
    sent = [q for q in llm.requests if q["path"].endswith("/embeddings")][before:]
    assert len(sent) == 1 and sent[0]["body"]["input"] == [paras[2]]
    # the same body again changes nothing
    r = conn.execute("SELECT pgagent.add_document('plain', 'manual', %s)", ["\n\n".join(paras)]).fetchone()[0]
    assert (r["version"], r["changed"], r["pending"]) == (2, False, 0)


def test_embedding_failures_are_recorded_and_retried(conn, llm):
    setup(conn, llm)
    conn.execute("SELECT pgagent.add_document('docs', 'faq', 'Refunds take five business days.')")
    for _ in range(5):
        llm.script_embeddings(http_error(503, "embedding server down"))
        r = conn.execute("SELECT pgagent.embed_pending()").fetchone()[0]
        assert r["failed"] == 1 and "503" in r["error"]
    assert conn.execute("SELECT pgagent.embed_pending()").fetchone()[0]["failed"] == 0   # gave up after 5
    row = conn.execute("SELECT pending, failed, last_error FROM pgagent.documents").fetchone()
    assert row[0] == 0 and row[1] == 1 and "503" in row[2]


def test_bad_input_is_refused(conn, llm):
    setup(conn, llm)
    for q, state in (("SELECT pgagent.add_document('nope', 't', 'b')", errors.UndefinedObject),
                     ("SELECT pgagent.add_document('docs', 't', '  ')", errors.InvalidParameterValue),
                     ("SELECT pgagent.add_document('docs', 't', 'b', '[1]')", errors.InvalidParameterValue),
                     ("SELECT * FROM pgagent.search('docs', 'x', mode => 'fuzzy')", errors.InvalidParameterValue),
                     ("SELECT pgagent.create_collection('docs')", errors.UniqueViolation),
                     ("SELECT pgagent.create_collection('c2', text_config => 'klingon')", errors.UndefinedObject),
                     ("SELECT pgagent.create_collection('c3', chunk_size => 100, chunk_overlap => 100)",
                      errors.InvalidParameterValue)):
        with pytest.raises(state):
            conn.execute(q)


def test_search_without_an_embedding_model_falls_back_to_text(conn, llm):
    setup(conn, llm, dim_model=False)
    conn.execute("SELECT pgagent.add_document('docs', 'faq', 'Refunds take five business days.')")
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    assert conn.execute("SELECT title FROM pgagent.search('docs', 'refunds')").fetchall() == [("faq",)]
    assert any("ranked by text only" in n for n in notices)
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SELECT * FROM pgagent.search('docs', 'refunds', mode => 'vector')")


def test_the_knowledge_tool_cites_its_sources(conn, llm):
    setup(conn, llm)
    ids = load_corpus(conn, llm)
    conn.execute("SELECT pgagent.register_tool('kb', 'Search the documentation', NULL, kind => 'knowledge', "
                 "config => '{\"collections\": [\"docs\"], \"k\": 2}')")
    conn.execute("SELECT pgagent.create_agent('helper', tools => '{kb}')")
    cid = conn.execute("SELECT pgagent.start_conversation('helper')").fetchone()[0]
    llm.script(tool_calls([("kb", {"query": "vacuum storage"})]), text("Vacuum reclaims storage [1:1]."))
    llm.script_embeddings(embedding(unit(1, 0)))
    r = conn.execute("SELECT pgagent.send_message(%s, 'What does vacuum do?')", [cid]).fetchone()[0]
    assert r["status"] == "completed"
    vac = conn.execute("SELECT chunk_id FROM pgagent.chunk WHERE document_id = %s", [ids["vacuum"]]).fetchone()[0]
    assert r["citations"][0] == {"cite": f"[{ids['vacuum']}:{vac}]", "document_id": ids["vacuum"], "chunk_id": vac,
                                 "title": "vacuum"}
    assert len(r["citations"]) == 2
    res = conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_result'",
                       [r["turn_id"]]).fetchone()[0]["result"]
    assert [x["document_id"] for x in res["results"]] == [ids["vacuum"], ids["autovacuum"]]
    # the model saw the passages and their cite marks
    tool_msg = [m for m in llm.requests[-1]["body"]["messages"] if m["role"] == "tool"][0]["content"]
    assert f"[{ids['vacuum']}:{vac}]" in tool_msg and "reclaims storage" in tool_msg


def test_other_tenants_see_no_documents(cluster, dbname, conn, llm):
    setup(conn, llm)
    conn.execute("SELECT pgagent.add_document('docs', 'secret plan', 'MARK-kb confidential text')")
    conn.execute("CREATE ROLE kb_other LOGIN IN ROLE pgagent_admin")
    try:
        conn.execute("SELECT pgagent.add_tenant('other', 'kb_other')")
        with psycopg.connect(cluster.dsn(dbname, user="kb_other"), autocommit=True) as o:
            for t in ("collection", "document", "chunk", "documents"):
                assert o.execute(f"SELECT count(*) FROM pgagent.{t}").fetchone()[0] == 0, t
            with pytest.raises(errors.UndefinedObject):
                o.execute("SELECT * FROM pgagent.search('docs', 'confidential', mode => 'text')")
            with pytest.raises(errors.InsufficientPrivilege):
                o.execute("UPDATE pgagent.chunk SET content = 'x'")
    finally:
        conn.execute("DROP OWNED BY kb_other")
        conn.execute("DROP ROLE kb_other")


def test_the_worker_drains_the_embedding_queue(dsn, conn, llm):
    setup(conn, llm)
    for i in range(5):
        conn.execute("SELECT pgagent.add_document('docs', %s, %s)", [f"doc {i}", f"Text number {i}."])
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "python")}
    out = subprocess.run([sys.executable, "-m", "pgagent_worker", "worker", "--dsn", dsn, "--once",
                          "--log-format", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert conn.execute("SELECT sum(embedded)::int, sum(pending)::int FROM pgagent.documents").fetchone() == (5, 0)
    events = [json.loads(l) for l in out.stderr.splitlines() if l.startswith("{")]
    assert sum(e.get("embedded", 0) for e in events if e["event"] == "embed") == 5


def test_e5_style_models_embed_queries_and_passages_apart(conn, llm):
    """A model whose params carry input_type gets "passage" for chunks and "query" for searches."""
    conn.execute("SELECT pgagent.register_model('e5', base_url => %s, kind => 'embedding', is_default => true, "
                 "params => '{\"input_type\": \"passage\"}')", [llm.base_url])
    conn.execute("SELECT pgagent.create_collection('docs')")
    conn.execute("SELECT pgagent.add_document('docs', 'faq', 'Refunds take five business days.')")
    conn.execute("SELECT pgagent.embed_pending()")
    conn.execute("SELECT * FROM pgagent.search('docs', 'refund')")
    sent = [q["body"]["input_type"] for q in llm.requests if q["path"].endswith("/embeddings")]
    assert sent == ["passage", "query"]


def test_automatic_retrieval_shows_passages_and_cites_them(conn, llm):
    setup(conn, llm)
    ids = load_corpus(conn, llm)
    conn.execute("SELECT pgagent.create_agent('helper', config => '{\"knowledge\": [\"docs\"], \"knowledge_k\": 2}')")
    cid = conn.execute("SELECT pgagent.start_conversation('helper')").fetchone()[0]
    llm.script(text("Vacuum reclaims storage."), text("Still vacuum."))
    llm.script_embeddings(embedding(unit(1, 0)))
    r = conn.execute("SELECT pgagent.send_message(%s, 'What reclaims storage?')", [cid]).fetchone()[0]
    assert r["status"] == "completed"
    assert [c["document_id"] for c in r["citations"]] == [ids["vacuum"], ids["autovacuum"]]
    system = llm.requests[-1]["body"]["messages"][0]["content"]
    assert r["citations"][0]["cite"] in system and "reclaims storage held by dead tuples" in system
    p = conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'llm_call'", [r["turn_id"]]).fetchone()[0]
    assert [x["chunk_id"] for x in p["passages"]] == [c["chunk_id"] for c in r["citations"]]
    # a collection that is gone: the turn goes on, and the step says why
    conn.execute("SELECT pgagent.update_agent('helper', config => '{\"knowledge\": [\"gone\"]}')")
    r = conn.execute("SELECT pgagent.send_message(%s, 'And now?')", [cid]).fetchone()[0]
    assert r["status"] == "completed" and r["citations"] == []
    p = conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'llm_call'", [r["turn_id"]]).fetchone()[0]
    assert p["passages"] == [] and "collection 'gone' does not exist" in p["knowledge_error"]
