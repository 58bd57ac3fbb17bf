"""Knowledge graph (issue 10): kg_add with provenance, kg_neighbors (recursive CTE, both
directions, no cycles, shortest distance), the graph tool, tenancy (docs/memory.md)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from scripted_llm import http_error, text, tool_calls

EDGES = [("Ada", "works_for", "Acme", "person", "company"),
         ("Bob", "works_for", "Acme", "person", "company"),
         ("Acme", "located_in", "Oslo", "company", "city"),
         ("Oslo", "located_in", "Norway", "city", "country"),
         ("Ada", "knows", "Bob", "person", "person"),
         ("Norway", "has_capital", "Oslo", "country", "city")]   # a cycle Oslo <-> Norway


@pytest.fixture
def graph(conn):
    doc = None
    conn.execute("SELECT pgagent.create_collection('notes')")
    doc = conn.execute("SELECT (pgagent.add_document('notes', 'staff', 'Ada and Bob work for Acme in Oslo.') "
                       "->> 'document_id')::bigint").fetchone()[0]
    for s, p, o, st, ot in EDGES:
        conn.execute("SELECT pgagent.kg_add(%s, %s, %s, subject_type => %s, object_type => %s, source_document => %s)",
                     [s, p, o, st, ot, doc])
    return doc


def test_neighbourhood_by_depth(conn, graph):
    one = conn.execute("SELECT name, type, relation, direction FROM pgagent.kg_neighbors('ada')").fetchall()
    assert sorted(one) == [("Acme", "company", "works_for", "out"), ("Bob", "person", "knows", "out")]
    two = conn.execute("SELECT hops, name, from_name, path FROM pgagent.kg_neighbors('Ada', depth => 2)").fetchall()
    assert [(d, e) for d, e, _, _ in two] == [(1, "Acme"), (1, "Bob"), (2, "Oslo")]   # Bob once, at depth 1
    assert two[2][2] == "Acme" and two[2][3] == ["Ada", "Acme", "Oslo"]
    # the cycle does not loop; Norway is reached at depth 3 by both edges but listed once
    three = conn.execute("SELECT name, hops FROM pgagent.kg_neighbors('Ada', depth => 5)").fetchall()
    assert sorted(three) == [("Acme", 1), ("Bob", 1), ("Norway", 3), ("Oslo", 2)]
    # one predicate only; incoming relations
    assert conn.execute("SELECT name FROM pgagent.kg_neighbors('Acme', predicate => 'works_for')").fetchall() == \
        [("Ada",), ("Bob",)]
    assert {r[0] for r in conn.execute("SELECT direction FROM pgagent.kg_neighbors('Acme')")} == {"in", "out"}


def test_provenance_and_merging(conn, graph):
    assert conn.execute("SELECT count(*) FROM pgagent.kg_entity WHERE source_document_id = %s", [graph]).fetchone()[0] == 5
    rid = conn.execute("SELECT pgagent.kg_add('Ada', 'works_for', 'Acme', 'person', 'company', '{\"since\": 2021}')").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM pgagent.kg_relation").fetchone()[0] == len(EDGES)   # merged, not added
    assert conn.execute("SELECT properties FROM pgagent.kg_relation WHERE relation_id = %s", [rid]).fetchone()[0] == {"since": 2021}
    conn.execute("SELECT pgagent.delete_document(%s)", [graph])
    assert conn.execute("SELECT count(*) FROM pgagent.kg_relation WHERE source_document_id IS NULL").fetchone()[0] == len(EDGES)


def test_bad_input(conn, graph):
    for q, state in (("SELECT pgagent.kg_add('a', 'Works For', 'b')", errors.InvalidParameterValue),
                     ("SELECT pgagent.kg_add('a', 'x', 'b', subject_type => 'Person!')", errors.InvalidParameterValue),
                     ("SELECT pgagent.kg_add('', 'x', 'b')", errors.InvalidParameterValue),
                     ("SELECT pgagent.kg_add('a', 'x', 'b', source_document => 99999)", errors.UndefinedObject),
                     ("SELECT * FROM pgagent.kg_neighbors('nobody')", errors.UndefinedObject),
                     ("SELECT * FROM pgagent.kg_neighbors('Ada', depth => 6)", errors.InvalidParameterValue)):
        with pytest.raises(state):
            conn.execute(q)
    conn.execute("SELECT pgagent.kg_add('Mercury', 'orbits', 'Sun', 'planet', 'star')")
    conn.execute("SELECT pgagent.kg_add('Mercury', 'is_a', 'Metal', 'element', 'thing')")
    with pytest.raises(errors.InvalidParameterValue, match="give the type"):
        conn.execute("SELECT * FROM pgagent.kg_neighbors('Mercury')")
    assert conn.execute("SELECT name FROM pgagent.kg_neighbors('Mercury', entity_type => 'planet')").fetchall() == [("Sun",)]


def test_the_graph_tool(conn, llm, graph):
    conn.execute("SELECT pgagent.register_model('chat', base_url => %s, is_default => true)", [llm.base_url])
    conn.execute("SELECT pgagent.register_tool('graph', 'Who is related to whom', NULL, kind => 'graph', "
                 "config => '{\"depth\": 1, \"max_rows\": 1}')")
    conn.execute("SELECT pgagent.create_agent('helper', tools => '{graph}')")
    cid = conn.execute("SELECT pgagent.start_conversation('helper')").fetchone()[0]
    llm.script(tool_calls([("graph", {"entity": "acme"})]), tool_calls([("graph", {"entity": "Zed"})]), text("done"))
    r = conn.execute("SELECT pgagent.send_message(%s, 'Who works at Acme?')", [cid]).fetchone()[0]
    assert r["status"] == "completed"
    res = [p for (p,) in conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_result' "
                                      "ORDER BY seq", [r["turn_id"]])]
    assert res[0]["result"]["truncated"] is True and len(res[0]["result"]["neighbors"]) == 1
    assert res[0]["result"]["neighbors"][0]["depth"] == 1
    assert res[1]["is_error"] and "no entity named 'Zed'" in res[1]["error"]


def test_other_tenants_see_no_graph(cluster, dbname, conn, graph):
    conn.execute("CREATE ROLE kg_other LOGIN IN ROLE pgagent_admin")
    try:
        conn.execute("SELECT pgagent.add_tenant('other', 'kg_other')")
        with psycopg.connect(cluster.dsn(dbname, user="kg_other"), autocommit=True) as o:
            assert o.execute("SELECT count(*) FROM pgagent.kg_entity").fetchone()[0] == 0
            with pytest.raises(errors.UndefinedObject):
                o.execute("SELECT * FROM pgagent.kg_neighbors('Ada')")
            # the walk itself is internal: not callable with another tenant's id
            tid, ada = conn.execute("SELECT tenant_id, entity_id FROM pgagent.kg_entity WHERE name = 'Ada'").fetchone()
            with pytest.raises(errors.InsufficientPrivilege):
                o.execute("SELECT count(*) FROM pgagent._kg_walk(%s, %s, 3)", [tid, ada])
    finally:
        conn.execute("DROP OWNED BY kg_other")
        conn.execute("DROP ROLE kg_other")


def test_kg_extract_adds_what_the_model_finds_and_records_every_chunk(conn, llm):
    """pgagent.kg_extract: one chat call per chunk asking for EXTRACTION_SCHEMA's JSON; what a
    good reply names is added citing the document; a malformed reply and a provider error are
    recorded as failed chunks that add nothing, and the other chunks still count."""
    import json
    conn.execute("SELECT pgagent.register_model('chat', base_url => %s, is_default => true, max_retries => 0)",
                 [llm.base_url])
    conn.execute("SELECT pgagent.create_collection('notes', chunk_size => 200, chunk_overlap => 0)")
    body = "\n\n".join(["Ada Lovelace works for Acme Analytics, a company in Oslo. " * 2,
                        "Bob Builder is a friend of Ada Lovelace and lives in Bergen. " * 2,
                        "The weather was fine and nothing else happened that day at all. " * 2])
    doc = conn.execute("SELECT (pgagent.add_document('notes', 'staff', %s) ->> 'document_id')::bigint",
                       [body]).fetchone()[0]
    assert conn.execute("SELECT count(*) FROM pgagent.chunk WHERE document_id = %s", [doc]).fetchone()[0] == 3
    good = {"entities": [{"name": "Ada Lovelace", "type": "Person"}, {"name": "Acme Analytics", "type": "company"},
                         {"name": "Oslo", "type": "city"}],
            "relations": [{"subject": "Ada Lovelace", "predicate": "Works For", "object": "Acme Analytics"},
                          {"subject": "Acme Analytics", "predicate": "located_in", "object": "Oslo"},
                          {"subject": "Ada Lovelace", "predicate": "!!!", "object": "Oslo"}]}
    llm.script(text("Here it is: " + json.dumps(good), prompt_tokens=120, completion_tokens=60),
               text('{"entities": [{"name": "Bob"}], "relations": []}'),
               http_error(500, "down"))
    r = conn.execute("SELECT pgagent.kg_extract(%s)", [doc]).fetchone()[0]
    assert {k: r[k] for k in ("chunks", "done", "failed", "entities", "relations", "skipped")} == \
        {"chunks": 3, "done": 1, "failed": 2, "entities": 3, "relations": 2, "skipped": 1}
    # the requests: one per chunk, in order, each asking for the JSON schema with the chunk's text
    chats = [q["body"] for q in llm.requests if q["path"].endswith("/chat/completions")]
    assert len(chats) == 3
    assert chats[0]["response_format"]["json_schema"]["name"] == "knowledge_graph"
    assert "Ada Lovelace works for Acme" in chats[0]["messages"][-1]["content"]
    assert "Bob Builder" in chats[1]["messages"][-1]["content"]
    # what was added cites the document; types and predicates became lower-case names
    assert sorted(conn.execute("SELECT name, type FROM pgagent.kg_entity WHERE source_document_id = %s",
                               [doc]).fetchall()) == [("Acme Analytics", "company"), ("Ada Lovelace", "person"),
                                                      ("Oslo", "city")]
    assert conn.execute("SELECT name, relation FROM pgagent.kg_neighbors('ada lovelace', depth => 2)").fetchall() == \
        [("Acme Analytics", "works_for"), ("Oslo", "located_in")]
    assert conn.execute("SELECT count(*) FROM pgagent.kg_entity WHERE name LIKE 'Bob%'").fetchone()[0] == 0
    # every chunk is recorded, failures with a readable reason
    rows = conn.execute("SELECT chunk_seq, status, entities, relations, skipped, error, prompt_tokens, model "
                        "FROM pgagent.kg_extraction WHERE document_id = %s ORDER BY chunk_seq", [doc]).fetchall()
    assert [x[:5] for x in rows] == [(1, "done", 3, 2, 1), (2, "failed", 0, 0, 0), (3, "failed", 0, 0, 0)]
    assert rows[0][6] == 120 and rows[0][7] == "chat" and rows[0][5] is None
    assert "not the extraction JSON" in rows[1][5] and "'type' is a required property" in rows[1][5]
    assert rows[2][5].startswith("the model call failed") and "500" in rows[2][5]
    assert r["extraction_ids"] == [x[0] for x in conn.execute(
        "SELECT extraction_id FROM pgagent.kg_extraction WHERE document_id = %s ORDER BY chunk_seq", [doc])]
    # max_chunks bounds the calls
    llm.script(text(json.dumps({"entities": [], "relations": []})))
    r = conn.execute("SELECT pgagent.kg_extract(%s, max_chunks => 1)", [doc]).fetchone()[0]
    assert (r["chunks"], r["done"], r["entities"]) == (1, 1, 0)
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SELECT pgagent.kg_extract(%s, model => 'nope')", [doc])
