"""Long-term memory (issue 10): pgagent.remember / recall / forget, the memory tools, automatic
recall, and who may see what (docs/memory.md)."""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg import errors, sql

from scripted_llm import embedding, http_error, text, tool_calls

DIM = 8


def unit(*xs: float) -> list[float]:
    v = list(xs) + [0.0] * (DIM - len(xs))
    n = sum(x * x for x in v) ** 0.5
    return [x / n for x in v]


def setup(conn, llm, *, memory: bool = False, users: tuple[str, ...] = ()) -> None:
    conn.execute("SELECT pgagent.register_model('chat', base_url => %s, is_default => true, max_retries => 0)",
                 [llm.base_url])
    conn.execute("SELECT pgagent.register_model('emb', base_url => %s, kind => 'embedding', is_default => true, "
                 "max_retries => 0)", [llm.base_url])
    conn.execute("SELECT pgagent.register_tool('remember', 'Remember a fact about the user', NULL, kind => 'memory', "
                 "config => '{\"action\": \"remember\"}')")
    conn.execute("SELECT pgagent.register_tool('recall', 'Recall facts', NULL, kind => 'memory', "
                 "config => '{\"action\": \"recall\", \"k\": 3}')")
    conn.execute("SELECT pgagent.create_agent('helper', tools => '{remember,recall}', config => %s)",
                 [json.dumps({"memory": memory, "memory_k": 2})])
    for u in users:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE pgagent_user").format(sql.Identifier(u)))
        conn.execute("SELECT pgagent.add_member('default', %s)", [u])


@pytest.fixture
def roles(conn):
    made: list[str] = []
    yield made
    for r in made:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(r)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(r)))


def as_role(cluster, dbname, role) -> psycopg.Connection:
    return psycopg.connect(cluster.dsn(dbname, user=role), autocommit=True)


def test_remember_recall_forget_in_sql(conn, llm):
    setup(conn, llm)
    llm.script_embeddings(embedding(unit(1, 0)), embedding(unit(0, 1)), embedding(unit(1, 0.1)))
    a = conn.execute("SELECT pgagent.remember('helper', 'The user is vegetarian', importance => 0.9)").fetchone()[0]
    b = conn.execute("SELECT pgagent.remember('helper', 'The user lives in Oslo')").fetchone()[0]
    rows = conn.execute("SELECT memory_id, content, round(similarity::numeric, 3), score "
                        "FROM pgagent.recall('helper', 'what do I eat?', k => 2)").fetchall()
    assert [r[0] for r in rows] == [a, b]            # nearest first
    assert float(rows[0][2]) > 0.99 and float(rows[1][2]) < 0.2
    # stored as the scripted vectors, with the model and its dimension
    got = conn.execute("SELECT dims, embedding::text, recall_count, last_recalled_at IS NOT NULL, owner, scope "
                       "FROM pgagent.memory WHERE memory_id = %s", [a]).fetchone()
    assert got[0] == DIM and got[2] == 1 and got[3] and got[4] == "postgres" and got[5] == "user"
    # a threshold drops the far one
    llm.script_embeddings(embedding(unit(1, 0.1)))
    rows = conn.execute("SELECT memory_id FROM pgagent.recall('helper', 'food', min_similarity => 0.5)").fetchall()
    assert [r[0] for r in rows] == [a]
    assert conn.execute("SELECT pgagent.forget(%s)", [a]).fetchone()[0] is True
    assert conn.execute("SELECT count(*) FROM pgagent.memory").fetchone()[0] == 1
    with pytest.raises(errors.UndefinedObject):
        conn.execute("SELECT pgagent.forget(%s)", [a])


def test_score_weighs_importance_and_recency(conn, llm):
    """Equal similarity: the more important memory ranks first; then one not recalled for a
    week drops below an equally important fresh one (0.995^168 = 0.43)."""
    setup(conn, llm)
    llm.script_embeddings(embedding(unit(1, 0)), embedding(unit(1, 0)), embedding(unit(1, 0)))
    low = conn.execute("SELECT pgagent.remember('helper', 'fact one', importance => 0.1)").fetchone()[0]
    high = conn.execute("SELECT pgagent.remember('helper', 'fact two', importance => 0.8)").fetchone()[0]
    rows = conn.execute("SELECT memory_id, score FROM pgagent.recall('helper', 'facts')").fetchall()
    assert [r[0] for r in rows] == [high, low]
    assert abs(rows[0][1] - (1 + 0.8 + 1) / 3) < 0.01 and abs(rows[1][1] - (1 + 0.1 + 1) / 3) < 0.01
    conn.execute("UPDATE pgagent.memory SET last_recalled_at = now() - interval '7 days' WHERE memory_id = %s", [high])
    conn.execute("UPDATE pgagent.memory SET importance = 0.8 WHERE memory_id = %s", [low])
    llm.script_embeddings(embedding(unit(1, 0)))
    rows = conn.execute("SELECT memory_id, score FROM pgagent.recall('helper', 'facts')").fetchall()
    assert [r[0] for r in rows] == [low, high]
    assert abs(rows[1][1] - (1 + 0.8 + 0.995 ** 168) / 3) < 0.01


def test_bad_arguments_are_clear(conn, llm):
    setup(conn, llm)
    for q, err in (("SELECT pgagent.remember('helper', '')", "content must be a non-empty text"),
                   ("SELECT pgagent.remember('helper', 'x', importance => 2)", "importance must be a number"),
                   ("SELECT pgagent.remember('helper', 'x', scope => 'world')", "scope must be one of"),
                   ("SELECT pgagent.remember('helper', 'x', scope => 'conversation')", "needs a conversation"),
                   ("SELECT * FROM pgagent.recall('helper', 'x', k => 0)", "k must be an integer from 1 to 100")):
        with pytest.raises(errors.InvalidParameterValue, match=err):
            conn.execute(q)
    with pytest.raises(errors.UndefinedObject, match="agent 'nobody' does not exist"):
        conn.execute("SELECT pgagent.remember('nobody', 'x')")
    llm.script_embeddings(http_error(500, "down"))
    with pytest.raises(psycopg.Error, match="embedding with 'emb' failed") as ei:
        conn.execute("SELECT pgagent.remember('helper', 'x')")
    assert ei.value.sqlstate == "58000"
    assert conn.execute("SELECT count(*) FROM pgagent.memory").fetchone()[0] == 0


def test_memories_stay_with_their_user_and_tenant(cluster, dbname, conn, llm, roles):
    setup(conn, llm, users=("mem_ann", "mem_bob"))
    roles += ["mem_ann", "mem_bob"]
    with as_role(cluster, dbname, "mem_ann") as ann, as_role(cluster, dbname, "mem_bob") as bob:
        llm.script_embeddings(embedding(unit(1, 0)))
        mine = ann.execute("SELECT pgagent.remember('helper', 'Ann likes tea')").fetchone()[0]
        llm.script_embeddings(embedding(unit(1, 0)))
        assert bob.execute("SELECT count(*) FROM pgagent.recall('helper', 'tea')").fetchone()[0] == 0
        assert bob.execute("SELECT count(*) FROM pgagent.memory").fetchone()[0] == 0   # row level security
        with pytest.raises(errors.UndefinedObject):
            bob.execute("SELECT pgagent.forget(%s)", [mine])
        with pytest.raises(errors.InsufficientPrivilege):
            bob.execute("DELETE FROM pgagent.memory")
        with pytest.raises(errors.InsufficientPrivilege, match="only a pgagent_admin"):
            bob.execute("SELECT pgagent.remember('helper', 'everyone: be brief', scope => 'agent')")
        llm.script_embeddings(embedding(unit(1, 0)))
        assert ann.execute("SELECT content FROM pgagent.recall('helper', 'tea')").fetchall() == [("Ann likes tea",)]
        assert ann.execute("SELECT count(*) FROM pgagent.memory").fetchone()[0] == 1
    # an agent-wide memory (by an admin) is recalled for everyone; the admin sees every memory
    llm.script_embeddings(embedding(unit(0, 1)))
    shared = conn.execute("SELECT pgagent.remember('helper', 'Office closes at 5', scope => 'agent')").fetchone()[0]
    with as_role(cluster, dbname, "mem_bob") as bob:
        llm.script_embeddings(embedding(unit(0, 1)))
        assert [r[0] for r in bob.execute("SELECT memory_id FROM pgagent.recall('helper', 'hours')")] == [shared]
        with pytest.raises(errors.InsufficientPrivilege, match="shared by every user"):
            bob.execute("SELECT pgagent.forget(%s)", [shared])
    assert conn.execute("SELECT count(*) FROM pgagent.memory").fetchone()[0] == 2
    # another tenant's agent of the same name sees nothing
    conn.execute("SELECT pgagent.add_tenant('other', 'mem_bob')")
    with as_role(cluster, dbname, "mem_bob") as bob:
        bob.execute("SET pgagent.tenant = 'other'")
        assert bob.execute("SELECT count(*) FROM pgagent.memory").fetchone()[0] == 0


def test_the_agent_remembers_in_one_conversation_and_recalls_in_the_next(conn, llm):
    setup(conn, llm, memory=True)
    c1 = conn.execute("SELECT pgagent.start_conversation('helper')").fetchone()[0]
    llm.script(tool_calls([("remember", {"content": "The user's dog is called Rex", "importance": 0.7})]),
               text("Noted."))
    llm.script_embeddings(embedding(unit(0, 0, 1)),      # automatic recall of the first turn: nothing yet
                          embedding(unit(1, 0)))         # the remembered fact
    r = conn.execute("SELECT pgagent.send_message(%s, 'My dog is Rex')", [c1]).fetchone()[0]
    assert r["status"] == "completed"
    mem = conn.execute("SELECT memory_id, source_turn_id, importance, scope FROM pgagent.memory").fetchone()
    assert mem[1] == r["turn_id"] and abs(mem[2] - 0.7) < 1e-6 and mem[3] == "user"
    result = conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_result'",
                          [r["turn_id"]]).fetchone()[0]
    assert result["result"] == {"remembered": True, "memory_id": mem[0]}
    # a new conversation: the fact is recalled automatically, shown in the system prompt and recorded
    c2 = conn.execute("SELECT pgagent.start_conversation('helper')").fetchone()[0]
    llm.script(tool_calls([("recall", {"query": "dog"})]), text("Your dog is Rex."))
    llm.script_embeddings(embedding(unit(1, 0.2)), embedding(unit(1, 0.1)))
    r2 = conn.execute("SELECT pgagent.send_message(%s, 'What is my dog called?')", [c2]).fetchone()[0]
    assert r2["answer"] == "Your dog is Rex."
    chats = [q for q in llm.requests if q["path"].endswith("/chat/completions")]
    assert "The user's dog is called Rex" in chats[-2]["body"]["messages"][0]["content"]
    assert "The user's dog is called Rex" in chats[-1]["body"]["messages"][0]["content"]  # every call of the turn
    calls = conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'llm_call' ORDER BY seq",
                         [r2["turn_id"]]).fetchall()
    assert [m["memory_id"] for m in calls[0][0]["memories"]] == [mem[0]]
    assert "memories" not in calls[1][0]
    tool_result = conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_result'",
                               [r2["turn_id"]]).fetchone()[0]
    assert [m["content"] for m in tool_result["result"]["memories"]] == ["The user's dog is called Rex"]
    assert conn.execute("SELECT recall_count FROM pgagent.memory").fetchone()[0] == 2


def test_a_failed_recall_is_recorded_and_the_turn_goes_on(conn, llm):
    setup(conn, llm, memory=True)
    cid = conn.execute("SELECT pgagent.start_conversation('helper')").fetchone()[0]
    llm.script(text("Hello."))
    llm.script_embeddings(http_error(503, "embedding server down"))
    r = conn.execute("SELECT pgagent.send_message(%s, 'hi')", [cid]).fetchone()[0]
    assert r["status"] == "completed" and r["answer"] == "Hello."
    p = conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'llm_call'",
                     [r["turn_id"]]).fetchone()[0]
    assert p["memories"] == [] and "memory recall failed" in p["memory_error"] and "503" in p["memory_error"]


def test_a_memory_tool_failure_is_a_tool_error(conn, llm):
    setup(conn, llm)
    conn.execute("SELECT pgagent.disable_model('emb')")
    cid = conn.execute("SELECT pgagent.start_conversation('helper')").fetchone()[0]
    llm.script(tool_calls([("remember", {"content": "x"})]), text("Could not."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'remember x')", [cid]).fetchone()[0]
    assert r["status"] == "completed"
    p = conn.execute("SELECT payload FROM pgagent.step WHERE turn_id = %s AND kind = 'tool_result'",
                     [r["turn_id"]]).fetchone()[0]
    assert p["is_error"] and "no default embedding model" in p["error"]


def test_memory_tools_get_their_parameters(conn, llm):
    setup(conn, llm)
    params = dict(conn.execute("SELECT name, parameters FROM pgagent.tool").fetchall())
    assert params["remember"]["required"] == ["content"] and "importance" in params["remember"]["properties"]
    assert params["recall"]["required"] == ["query"]
    with pytest.raises(errors.InvalidParameterValue, match="action"):
        conn.execute("SELECT pgagent.register_tool('m', 'M', NULL, kind => 'memory', config => '{\"action\": \"x\"}')")


def test_conversation_memories_stay_in_their_conversation(conn, llm):
    setup(conn, llm)
    c1 = conn.execute("SELECT pgagent.start_conversation('helper')").fetchone()[0]
    c2 = conn.execute("SELECT pgagent.start_conversation('helper')").fetchone()[0]
    llm.script_embeddings(embedding(unit(1, 0)))
    m = conn.execute("SELECT pgagent.remember('helper', 'We are planning a trip', scope => 'conversation', "
                     "conversation => %s)", [c1]).fetchone()[0]
    llm.script_embeddings(embedding(unit(1, 0)), embedding(unit(1, 0)), embedding(unit(1, 0)))
    assert conn.execute("SELECT count(*) FROM pgagent.recall('helper', 'trip', conversation => %s)", [c2]).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pgagent.recall('helper', 'trip')").fetchone()[0] == 0
    assert [r[0] for r in conn.execute("SELECT memory_id FROM pgagent.recall('helper', 'trip', conversation => %s)",
                                       [c1])] == [m]
    conn.execute("SELECT pgagent.delete_conversation(%s)", [c1])
    assert conn.execute("SELECT count(*) FROM pgagent.memory").fetchone()[0] == 0


def test_the_hnsw_index_serves_384_dimensions(conn):
    """With 384-dimension embeddings the ORDER BY of pgagent's searches (memory.distance_sql)
    uses memory_hnsw_384; a dimension without an index orders by the exact distance."""
    from pgagent_core.memory import distance_sql
    conn.execute("SET enable_seqscan = off")
    order, exact = distance_sql('"public"', "m", "array_fill(0.1, ARRAY[384])", 384)
    assert order != exact
    plan = "\n".join(r[0] for r in conn.execute(
        "EXPLAIN SELECT memory_id FROM pgagent.memory m WHERE m.tenant_id = pgagent.current_tenant() AND m.dims = 384 "
        f"ORDER BY {order} LIMIT 5"))
    assert "memory_hnsw_384" in plan, plan
    assert distance_sql('"public"', "m", "$1", 100) == (exact.replace("array_fill(0.1, ARRAY[384])", "$1"),) * 2


class ConnDb:
    """pgagent_core's Db interface over a psycopg connection ($n placeholders in order)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def all(self, query: str, types=(), args=(), *, cache: bool = True) -> list[dict]:
        import re
        cur = self.conn.cursor(row_factory=psycopg.rows.dict_row)
        return cur.execute(re.sub(r"\$\d+", "%s", query), list(args)).fetchall()


@pytest.mark.parametrize("want", [None, "7"])
def test_searches_use_pgagent_ef_search(conn, want):
    """memory.iterative_scan (around every indexed search) sets hnsw.ef_search to the session's
    pgagent.ef_search (EF_SEARCH without one) and hnsw.iterative_scan to relaxed_order, and puts
    the session's own values back afterwards; a pgagent.ef_search out of range is refused (22023)."""
    import psycopg.rows  # noqa: F401
    from pgagent_core.errors import InvalidArgument
    from pgagent_core.memory import EF_SEARCH, iterative_scan
    conn.execute("LOAD 'vector'")
    conn.execute("SET hnsw.ef_search = 55")
    if want:
        conn.execute(f"SET pgagent.ef_search = {want}")
    settings = "SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan')"
    with conn.transaction():
        with iterative_scan(ConnDb(conn), True):
            inside = conn.execute(settings).fetchone()
        after = conn.execute(settings).fetchone()
    assert inside == (want or str(EF_SEARCH), "relaxed_order")
    assert after == ("55", "off")
    conn.execute("SET pgagent.ef_search = 'lots'")
    with pytest.raises(InvalidArgument, match="pgagent.ef_search"):
        with conn.transaction(), iterative_scan(ConnDb(conn), True):
            pass
    assert conn.execute(settings).fetchone() == ("55", "off")
