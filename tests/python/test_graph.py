"""Knowledge graph (issue 10): kg_add with provenance, kg_neighbors (recursive CTE, both
directions, no cycles, shortest distance), the graph tool, tenancy (docs/memory.md)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from scripted_llm import text, tool_calls

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
