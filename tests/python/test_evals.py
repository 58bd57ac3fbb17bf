"""Evaluation suites and grounded answers (issue 11; docs/evals.md): scoring rules, grounding,
run_eval inline and queued, the comparison views, the sql tool's total_rows / notes / schema
description, and the grounding policy (require_tool) with its recorded guardrail steps."""

from __future__ import annotations

import json

import pytest
from psycopg import errors

from pgagent_core import evals, grounding
from scripted_llm import text, tool_calls


# ------------------------------------------------------------------------------------ scoring (pure)
def test_numbers_are_read_as_written():
    assert evals.numbers("It was 1,234.5 mm on 2012-01-05, -3 C and 25% wetter") == [
        (1234.5, 1, False), (2012.0, 0, False), (1.0, 0, False), (5.0, 0, False), (-3.0, 0, False), (25.0, 0, True)]
    assert evals.numbers("5.8m/s and 12km") == [(5.8, 1, False), (12.0, 0, False)]
    assert evals.numbers("no numbers") == []


@pytest.mark.parametrize("rule,answer,expected,kw,ok", [
    ("exact", "  Setosa. ", "setosa", {}, True),
    ("exact", "It is setosa", "setosa", {}, False),
    ("contains", "The most common species is Setosa.", "setosa", {}, True),
    ("contains", "Versicolor", "color", {}, False),                        # whole words only
    ("contains", "Manchuria and Duluth", '["Duluth", "Manchuria"]', {}, True),
    ("contains", "Only Duluth", '["Duluth", "Manchuria"]', {}, False),
    ("numeric", "The average is 5.84 cm.", "5.843333", {"decimals": 2}, True),
    ("numeric", "The average is 5.8 cm.", "5.843333", {"decimals": 1}, True),
    ("numeric", "The average is 5.9 cm.", "5.843333", {"decimals": 1}, False),
    ("numeric", "The average is 5.8 cm.", "5.843333", {"decimals": 2}, False),   # less precise than asked
    ("numeric", "About 1,461 days", "1461", {}, True),
    ("numeric", "About 1,460 days", "1461", {}, False),
    ("numeric", "About 1,460 days", "1461", {"tolerance": 1}, True),
])
def test_scoring_rules(rule, answer, expected, kw, ok):
    assert evals.score(rule, answer, expected, **kw)[0] is ok


def test_scoring_errors():
    with pytest.raises(ValueError, match="not a number"):
        evals.score("numeric", "5", "five")
    with pytest.raises(ValueError, match="unknown scoring rule"):
        evals.score("fuzzy", "5", "5")


def test_grounding_of_answers():
    ok, d = evals.score("numeric", "The average is 5.84.", "5.8433", decimals=2)
    assert evals.grounded("numeric", "The average is 5.84.", ok, d, ['[{"avg": 5.8433333}]']) is True
    assert evals.grounded("numeric", "The average is 5.84.", ok, d, ['[{"avg": 7.1}]']) is False    # computed elsewhere
    assert evals.grounded("numeric", "The average is 5.84.", ok, d, []) is False                      # no tool ran
    ok, d = evals.score("numeric", "25% of the days", "25")
    assert evals.grounded("numeric", "25% of the days", ok, d, ['{"share": 0.25}']) is True
    ok, d = evals.score("contains", "Setosa", "setosa")
    assert evals.grounded("contains", "Setosa", ok, d, ['[{"species": "setosa"}]']) is True
    assert evals.grounded("contains", "Setosa", ok, d, ['[{"n": 3}]']) is False
    assert evals.grounded("contains", "Hello", True, {}, [], needs_tool=False) is None
    # a wrong answer: grounded when the numbers it states (not those of the question) come from a tool
    assert evals.grounded("numeric", "In 2014 it rained 12 days", False, {}, ['[{"n": 12}]'],
                          question="How many days did it rain in 2014?") is True


def test_judge_reply_parsing():
    assert evals.parse_judge('{"correct": true, "reason": "same value"}') == (True, "same value")
    assert evals.parse_judge('Sure! {"correct": false, "reason": "off by one"}')[0] is False
    assert evals.parse_judge("yes")[0] is None
    req = evals.judge_request("Q?", "A", "ref", "be strict")
    # the reason before the verdict: the judge decides after it has written why
    assert list(req["response_format"]["json_schema"]["schema"]["properties"]) == ["reason", "correct"]
    assert req["response_format"]["json_schema"]["schema"]["required"] == ["reason", "correct"]
    assert "Rubric: be strict" in req["messages"][1]["content"]


def test_grounding_policy_unit():
    known = ["How many rainy days in 2014?"]
    assert grounding.check("never", "42", has_tools=True, tool_results=[], context=known) is None
    assert grounding.check("always", "42", has_tools=True, tool_results=[], context=known)["reason"] == "no_tool"
    assert grounding.check("always", "42", has_tools=False, tool_results=[], context=known) is None
    v = grounding.check("auto", "There were 42 rainy days in 2014.", has_tools=True, tool_results=[], context=known)
    assert v["reason"] == "unsupported_numbers" and v["numbers"] == ["42"]           # 2014 is in the question
    assert grounding.check("auto", "There were 42 rainy days in 2014.", has_tools=True,
                           tool_results=['[{"count": 42}]'], context=known) is None
    assert grounding.check("auto", "Hello! How can I help?", has_tools=True, tool_results=[], context=known) is None
    v = grounding.check("auto", "The query failed.", has_tools=True, tool_results=[], context=known,
                        last_error='column "x" does not exist')
    assert v["reason"] == "tool_error" and 'column "x" does not exist' in v["feedback"]
    assert grounding.check("never", "failed", has_tools=True, tool_results=[], context=known, last_error="e") is None
    # an unreadable answer (punctuation, a code expression) is sent back under auto and always, not never
    for bad in ["]", ".0", "orders[2009]['total']", ""]:
        assert grounding.check("auto", bad, has_tools=True, tool_results=[], context=known)["reason"] == "unreadable"
    assert grounding.check("always", "]", has_tools=True, tool_results=['[1]'], context=known)["reason"] == "unreadable"
    assert grounding.check("never", "]", has_tools=True, tool_results=[], context=known) is None
    for fine in ["DISTINCT", "Paris", "2009-03", "There are 3 (three) kinds."]:
        assert not grounding.unreadable(fine)
    # what counts as a result that matched nothing
    assert grounding.empty_notes({"rows": [], "notes": ["n"]}) == ["n"] and grounding.empty_notes({"rows": []}) == []
    assert grounding.empty_notes({"rows": [{"sum": None}], "notes": ["n"]}) == ["n"]
    assert grounding.empty_notes({"rows": [{"sum": None}]}) is None          # nothing the tool could suggest
    assert grounding.empty_notes({"rows": [{"n": 3}], "notes": ["n"]}) is None and grounding.empty_notes("x") is None
    # the feedback on numbers no result shows names the numbers the last result's rows do show
    v = grounding.check("auto", "It was 575,090.", has_tools=True, context=known,
                        tool_results=['{"rows": [{"sum": 57509, "month": "2006-01-01", "d": -3.5}], "total_rows": 1}'])
    assert v["numbers"] == ["575090"] and "The last tool result shows 57509, -3.5: write a value as it is" in v["feedback"]
    assert grounding.result_values("[7, 8.25]") == ["7", "8.25"]
    with pytest.raises(ValueError):
        grounding.check("sometimes", "x", has_tools=True, tool_results=[], context=[])


# ------------------------------------------------------------------------------------ the SQL API
def setup(conn, llm, *, tool_config: str = '{"max_rows": 3}', agent_config: str = "{}", tool_mode: str = "native"):
    conn.execute("""CREATE TABLE public.orders (id int PRIMARY KEY, customer text, amount numeric, shipped date);
                    INSERT INTO public.orders VALUES (1, 'ann', 10.5, '2024-01-03'), (2, 'bob', 20, NULL),
                      (3, 'ann', NULL, '2024-02-01'), (4, 'cy', 7.25, '2024-02-11'), (5, 'bob', 1, '2024-03-01')""")
    conn.execute("SELECT pgagent.register_model('chat', base_url => %s, is_default => true, max_retries => 0, "
                 "tool_mode => %s)", [llm.base_url, tool_mode])
    conn.execute("SELECT pgagent.register_tool('run_sql', 'Run one SELECT.', "
                 "'{\"type\": \"object\", \"properties\": {\"query\": {\"type\": \"string\"}}, \"required\": [\"query\"]}', "
                 "kind => 'sql', config => %s)", [tool_config])
    conn.execute("SELECT pgagent.create_agent('analyst', tools => '{run_sql}', config => %s)", [agent_config])
    conn.execute("SELECT pgagent.create_eval_suite('shop', 'orders questions')")
    conn.execute("SELECT pgagent.add_eval_case('shop', 'How many orders are there?', "
                 "reference_sql => 'SELECT count(*) FROM orders', scoring => 'numeric', name => 'count')")
    conn.execute("SELECT pgagent.add_eval_case('shop', 'Which customer spent the most?', expected => 'bob', "
                 "name => 'top', tags => '{group-by}')")
    conn.execute("SELECT pgagent.add_eval_case('shop', 'Say hello.', expected => 'hello', needs_tool => false, "
                 "name => 'hello')")


def test_run_eval_inline_scores_and_grounds(conn, llm):
    setup(conn, llm)
    llm.script(tool_calls([("run_sql", {"query": "SELECT count(*) FROM orders"})]), text("There are 5 orders."),
               text("bob spent the most."),                       # a right guess: no tool, not grounded
               text("Hello!"))
    run = conn.execute("SELECT pgagent.run_eval('shop', 'analyst', label => 'base')").fetchone()[0]
    rows = conn.execute("""SELECT case_name, expected, correct, grounded, llm_calls, tool_calls, prompt_tokens > 0,
                                  latency_ms >= 0, status FROM pgagent.eval_results WHERE run_id = %s ORDER BY case_name""",
                        [run]).fetchall()
    assert rows == [("count", "5", True, True, 2, 1, True, True, "scored"),
                    ("hello", "hello", True, None, 1, 0, True, True, "scored"),
                    ("top", "bob", True, False, 1, 0, True, True, "scored")]
    r = conn.execute("""SELECT agent, model, label, status, cases, scored, correct, score, grounded_share, llm_calls,
                               length(prompt_version) FROM pgagent.eval_runs WHERE run_id = %s""", [run]).fetchone()
    assert r == ("analyst", "chat", "base", "scored", 3, 3, 3, 1, 0.5, 4, 12)
    # every case had its own conversation, marked with the run
    assert conn.execute("SELECT count(DISTINCT conversation_id) FROM pgagent.conversation "
                        "WHERE (metadata ->> 'eval_run')::bigint = %s", [run]).fetchone()[0] == 3

    # a second run after the data changed: the reference query is run again; a wrong answer, a failed turn
    conn.execute("INSERT INTO orders VALUES (6, 'dee', 100, NULL)")
    llm.script(text("There are 5 orders."), text("bob"), text("hi"))
    run2 = conn.execute("SELECT pgagent.run_eval('shop', 'analyst', label => 'second')").fetchone()[0]
    assert conn.execute("SELECT expected, correct, grounded FROM pgagent.eval_results WHERE run_id = %s "
                        "AND case_name = 'count'", [run2]).fetchone() == ("6", False, False)
    changes = conn.execute("SELECT run_id, previous_run_id, case_name, was_correct, is_correct FROM pgagent.eval_changes "
                           "ORDER BY case_name").fetchall()
    assert changes == [(run2, run, "count", True, False), (run2, run, "hello", True, False)]
    cmp = conn.execute("SELECT case_name, a_correct, b_correct, changed FROM pgagent.eval_compare(%s, %s)",
                       [run, run2]).fetchall()
    assert cmp[:2] == [("count", True, False, True), ("hello", True, False, True)] and cmp[2] == ("top", True, True, False)
    # the prompt version changes with the agent, not between runs of the same agent
    assert conn.execute("SELECT count(DISTINCT prompt_version) FROM pgagent.eval_run").fetchone()[0] == 1
    conn.execute("SELECT pgagent.update_agent('analyst', config => '{\"max_steps\": 5}')")
    llm.script(text("5"), text("bob"), text("hello"))
    conn.execute("SELECT pgagent.run_eval('shop', 'analyst')")
    assert conn.execute("SELECT count(DISTINCT prompt_version) FROM pgagent.eval_run").fetchone()[0] == 2


def test_run_eval_queued_for_workers(conn, llm):
    setup(conn, llm)
    run = conn.execute("SELECT pgagent.run_eval('shop', 'analyst', queue => true)").fetchone()[0]
    turns = [r[0] for r in conn.execute("SELECT turn_id FROM pgagent.eval_result WHERE run_id = %s ORDER BY case_id",
                                        [run])]
    assert conn.execute("SELECT count(*) FROM pgagent.turn WHERE turn_id = ANY(%s) AND status = 'queued'",
                        [turns]).fetchone()[0] == 3
    assert conn.execute("SELECT pgagent.score_eval(%s)", [run]).fetchone()[0] == {
        "run_id": run, "status": "running", "cases": 3, "scored": 0, "pending": 3, "correct": 0}
    llm.script(tool_calls([("run_sql", {"query": "SELECT count(*) AS n FROM orders"})]), text("5 orders"))
    conn.execute("CALL pgagent.run_turn(%s)", [turns[0]])
    assert conn.execute("SELECT pgagent.score_eval(%s)", [run]).fetchone()[0]["scored"] == 1
    llm.script(text("ann"))
    conn.execute("CALL pgagent.run_turn(%s)", [turns[1]])
    conn.execute("SELECT pgagent.cancel_turn(%s)", [turns[2]])
    s = conn.execute("SELECT pgagent.score_eval(%s)", [run]).fetchone()[0]
    assert s == {"run_id": run, "status": "scored", "cases": 3, "scored": 3, "pending": 0, "correct": 1}
    rows = conn.execute("SELECT case_name, correct, answer, detail ->> 'why' IS NOT NULL FROM pgagent.eval_results "
                        "WHERE run_id = %s ORDER BY case_name", [run]).fetchall()
    assert rows == [("count", True, "5 orders", False), ("hello", False, None, True), ("top", False, "ann", False)]
    assert conn.execute("SELECT status, finished_at IS NOT NULL FROM pgagent.eval_run WHERE run_id = %s",
                        [run]).fetchone() == ("scored", True)


def test_llm_judge(conn, llm):
    setup(conn, llm)
    conn.execute("SELECT pgagent.create_eval_suite('judged')")
    conn.execute("SELECT pgagent.add_eval_case('judged', 'Describe the orders table.', scoring => 'llm', "
                 "rubric => 'Mentions customers and amounts.')")
    llm.script(text("It lists customers with amounts and dates."), text('{"correct": true, "reason": "covers both"}'))
    run = conn.execute("SELECT pgagent.run_eval('judged', 'analyst')").fetchone()[0]
    correct, detail = conn.execute("SELECT correct, detail FROM pgagent.eval_results WHERE run_id = %s", [run]).fetchone()
    assert correct is True and detail["judge"]["reason"] == "covers both" and detail["judge"]["model"] == "chat"
    judge_body = llm.requests[-1]["body"]
    assert judge_body["response_format"]["json_schema"]["name"] == "grade" and judge_body["temperature"] == 0
    assert "Mentions customers and amounts." in judge_body["messages"][1]["content"]


def test_bad_cases_are_refused(conn, llm):
    setup(conn, llm)
    for sql, state, match in (
            ("SELECT pgagent.add_eval_case('shop', 'q', expected => 'x', scoring => 'fuzzy')", errors.InvalidParameterValue, "scoring"),
            ("SELECT pgagent.add_eval_case('shop', 'q')", errors.InvalidParameterValue, "needs expected"),
            ("SELECT pgagent.add_eval_case('shop', 'q', reference_sql => 'SELECT id, amount FROM orders')", errors.InvalidParameterValue, "one column"),
            ("SELECT pgagent.add_eval_case('shop', 'q', reference_sql => 'SELECT nope FROM orders')", errors.InvalidParameterValue, "reference_sql failed"),
            ("SELECT pgagent.add_eval_case('shop', 'q', reference_sql => 'SELECT 1 WHERE false')", errors.InvalidParameterValue, "no row"),
            ("SELECT pgagent.add_eval_case('shop', 'q', expected => 'five', scoring => 'numeric')", errors.InvalidParameterValue, "not a number"),
            ("SELECT pgagent.add_eval_case('shop', 'q', expected => '5', tolerance => 1)", errors.InvalidParameterValue, "numeric only"),
            ("SELECT pgagent.add_eval_case('nosuite', 'q', expected => '5')", errors.UndefinedObject, "does not exist"),
            ("SELECT pgagent.add_eval_case('shop', 'q', expected => '5', name => 'count')", errors.UniqueViolation, None),
            ("SELECT pgagent.run_eval('shop', 'nobody')", errors.UndefinedObject, "agent"),
            ("SELECT pgagent.create_eval_suite('x', config => '{\"judge\": 1}')", errors.InvalidParameterValue, "unknown keys"),
            ("SELECT pgagent.score_eval(999999)", errors.UndefinedObject, "does not exist")):
        with pytest.raises(state, match=match):
            conn.execute(sql)
    # a reference query cannot write or read what the sandbox may not
    with pytest.raises(errors.InvalidParameterValue, match="reference_sql failed"):
        conn.execute("SELECT pgagent.add_eval_case('shop', 'q', reference_sql => 'SELECT count(*) FROM pgagent.secret')")
    assert conn.execute("SELECT count(*) FROM pgagent.eval_case").fetchone()[0] == 3
    assert conn.execute("SELECT pgagent.drop_eval_suite('shop')").fetchone()[0] is True
    assert conn.execute("SELECT count(*) FROM pgagent.eval_case").fetchone()[0] == 0


# ------------------------------------------------------------------------------------ the sql tool
def test_sql_results_say_how_many_rows_and_warn_about_nulls(conn, llm):
    setup(conn, llm)
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(tool_calls([("run_sql", {"query": "SELECT customer FROM orders"}),
                           ("run_sql", {"query": "SELECT id, amount FROM orders ORDER BY amount DESC"}),
                           ("run_sql", {"query": "SELECT id, amount FROM orders ORDER BY amount DESC NULLS LAST"})]),
               text("done"))
    conn.execute("SELECT pgagent.send_message(%s, 'q')", [cid])
    res = [r[0] for r in conn.execute("SELECT payload -> 'result' FROM pgagent.step WHERE kind = 'tool_result' ORDER BY seq")]
    assert res[0]["row_count"] == 3 and res[0]["total_rows"] == 5 and res[0]["truncated"] is True
    assert "returned 5 rows; only the first 3 are shown" in res[0]["notes"][0]
    # the model is shown the notes before the rows (a small model reads a result from its start)
    shown = [m["content"] for m in llm.requests[-1]["body"]["messages"] if m["role"] == "tool"]
    assert len(shown) == 3 and shown[0].startswith('{"notes":["The query returned 5 rows')
    assert all(list(json.loads(t)) == ["notes", "rows", "row_count", "truncated", "total_rows"] for t in shown)
    assert res[1]["rows"][0] == {"id": 3, "amount": None} and any("NULLs first" in n for n in res[1]["notes"])
    assert res[2]["rows"][0] == {"id": 2, "amount": 20} and not any("NULLs" in n for n in res[2].get("notes", []))
    # the model sees the notes
    assert "the answer to how many is 5, not 3" in json.dumps(llm.requests[-1]["body"]["messages"])


def test_sql_errors_and_empty_results_carry_hints(conn, llm):
    setup(conn, llm, tool_config='{"max_rows": 3, "autofix": false}')   # hints only: autofix would run the fixes
    conn.execute("CREATE TABLE public.customers (name text, city text)")
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(tool_calls([("run_sql", {"query": "SELECT amount FROM orders WHERE shipped = 2024"}),
                           ("run_sql", {"query": "SELECT city FROM orders o WHERE o.id = 1"}),
                           ("run_sql", {"query": "SELECT * FROM order_lines"}),
                           ("run_sql", {"query": "SELECT customer, max(amount) FROM orders"}),
                           ("run_sql", {"query": "SELECT id FROM orders WHERE customer = 'Ann'"})]),
               text("done"))
    conn.execute("SELECT pgagent.send_message(%s, 'q')", [cid])
    out = [r[0] for r in conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'tool_result' ORDER BY seq")]
    errs = [o.get("error") or "" for o in out]
    assert "operator does not exist: date = integer HINT: A date or timestamp column cannot be compared with a " \
           "number or a month. To filter on a year write extract(year FROM <column>) = 2017" in errs[0]
    # where the fix is mechanical the hint ends with the query fixed
    assert errs[0].endswith("Try: SELECT amount FROM orders WHERE extract(year FROM shipped) = 2024")
    assert errs[1].endswith("Try: SELECT city FROM customers o WHERE o.id = 1")
    # an unknown column: which readable tables have it, and the columns of the table the query names
    assert 'column "city" does not exist HINT: Column city is in table customers, not in orders: write FROM ' \
           "customers. The columns of orders are id (integer), customer (text), amount (numeric), shipped (date)." in errs[1]
    assert "HINT: The tables you can read are customers, orders." in errs[2]
    assert "ORDER BY <column> DESC NULLS LAST LIMIT 1" in errs[3]
    assert out[4]["result"]["total_rows"] == 0 and out[4]["result"]["notes"][0].startswith("No rows matched.")
    # the value a text comparison that matched nothing may have meant, looked up as the sandbox
    assert out[4]["result"]["notes"][1] == ("customer = 'Ann' matches no row of orders, but customer has 'ann'. "
                                            "Try: SELECT id FROM orders WHERE customer = 'ann'")
    # the model sees them
    assert "Column city is in table customers, not in orders" in json.dumps(llm.requests[-1]["body"]["messages"])


def test_sql_hints_for_a_year_a_group_and_an_aggregate_over_nothing(conn, llm):
    setup(conn, llm, tool_config='{"max_rows": 3, "autofix": false}')
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(tool_calls([("run_sql", {"query": "SELECT sum(amount) FROM orders WHERE year = 2024"}),
                           ("run_sql", {"query": "SELECT customer, sum(amount) FROM orders GROUP BY customer"}),
                           ("run_sql", {"query": "SELECT customer, sum(amount) FROM orders GROUP BY customer "
                                                 "ORDER BY 2 DESC NULLS LAST"}),
                           ("run_sql", {"query": "SELECT sum(amount) FROM orders WHERE customer = 'CY'"})]),
               text("done"))
    conn.execute("SELECT pgagent.send_message(%s, 'q')", [cid])
    out = [r[0] for r in conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'tool_result' ORDER BY seq")]
    # a year asked of a table with one date column
    assert out[0]["error"].endswith("HINT: Orders has no column year. The columns of orders are id (integer), "
                                    "customer (text), amount (numeric), shipped (date). "
                                    "Try: SELECT sum(amount) FROM orders WHERE extract(year FROM shipped) = 2024")
    assert any("no particular order" in n for n in out[1]["result"]["notes"])
    assert not any("no particular order" in n for n in out[2]["result"].get("notes", []))
    # one row of NULLs (an aggregate over nothing) is checked as an empty result is
    assert out[3]["result"]["rows"] == [{"sum": None}]
    assert out[3]["result"]["notes"] == ["customer = 'CY' matches no row of orders, but customer has 'cy'. "
                                         "Try: SELECT sum(amount) FROM orders WHERE customer = 'cy'"]


def test_sql_hints_fix_a_from_inside_a_call_two_froms_and_an_aggregate_beside_a_column(conn, llm):
    setup(conn, llm, tool_config='{"max_rows": 3, "autofix": false}')
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    bad = ["SELECT round(100.0 * sum(amount) / count(*) FROM orders WHERE customer = 'ann', 1)",
           "SELECT sum(amount) FROM orders WHERE id = 2 - sum(amount) FROM orders WHERE id = 1",
           "SELECT customer, max(amount) FROM orders WHERE id < 5",
           "SELECT count(*) * 100 / (SELECT count(*) FROM orders) AS pct FROM orders WHERE amount > 10",
           "SELECT 100.0 * count(*) / 3 AS pct FROM orders WHERE amount > 10",
           "SELECT count(*) AS n FROM orders WHERE amount / 2 > 5"]
    llm.script(tool_calls([("run_sql", {"query": q}) for q in bad]), text("done"))
    conn.execute("SELECT pgagent.send_message(%s, 'q')", [cid])
    out = [r[0] for r in conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'tool_result' ORDER BY seq")]
    tries = [o["error"].split(" Try: ")[1] for o in out[:3]]
    assert "HINT: A FROM is inside the parentheses of a function call" in out[0]["error"]
    assert tries[0] == "SELECT round(100.0 * sum(amount) / count(*), 1) FROM orders WHERE customer = 'ann'"
    assert "HINT: A SELECT has one FROM" in out[1]["error"]
    assert tries[1] == ("SELECT (SELECT sum(amount) FROM orders WHERE id = 2) - "
                        "(SELECT sum(amount) FROM orders WHERE id = 1)")
    assert tries[2] == "SELECT customer, amount FROM orders WHERE id < 5 ORDER BY amount DESC NULLS LAST LIMIT 1"
    # integer division: a whole-number result of a division gets a note; a numeric one does not
    assert out[3]["result"]["rows"] == [{"pct": 40}]
    assert any("drops the fraction (7 / 2 = 3)" in n for n in out[3]["result"]["notes"])
    assert "notes" not in out[4]["result"]
    assert out[5]["result"]["rows"] == [{"n": 2}] and "notes" not in out[5]["result"]   # the / is not in the select list
    # the fixed queries run and give what was meant
    llm.script(tool_calls([("run_sql", {"query": q}) for q in tries]), text("done"))
    conn.execute("SELECT pgagent.send_message(%s, 'q2')", [cid])
    fixed = [r[0] for r in conn.execute("""SELECT payload -> 'result' -> 'rows' FROM pgagent.step
                                            WHERE kind = 'tool_result' ORDER BY step_id DESC LIMIT 3""")][::-1]
    assert fixed == [[{"round": 525.0}], [{"?column?": 9.5}], [{"customer": "bob", "amount": 20}]]


def test_autofix_runs_the_mechanical_fix_and_says_so(conn, llm):
    setup(conn, llm, tool_config='{}')   # autofix is on by default
    conn.execute("CREATE TABLE public.customers (name text, city text)")
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(tool_calls([("run_sql", {"query": "SELECT customer, max(amount) FROM orders WHERE shipped = 2024"}),
                           ("run_sql", {"query": "SELECT id FROM orders WHERE customer = 'Ann' ORDER BY id"}),
                           ("run_sql", {"query": "SELECT city FROM orders"}),
                           ("run_sql", {"query": "SELECT id FROM orders WHERE customer = 'dan'"}),
                           ("run_sql", {"query": "SELECT count(*) FILTER (WHERE customer = 'bob') * 100 / count(*) "
                                                 "AS pct FROM orders WHERE amount / 2 > 0"})]),
               text("done"))
    conn.execute("SELECT pgagent.send_message(%s, 'q')", [cid])
    out = [r[0] for r in conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'tool_result' ORDER BY seq")]
    # two fixes in a row: the year of a date column, then the row with the largest value
    r = out[0]["result"]
    assert r["rows"] == [{"customer": "ann", "amount": 10.5}]
    assert [c["query"] for c in r["corrected"]] == [
        "SELECT customer, max(amount) FROM orders WHERE extract(year FROM shipped) = 2024",
        "SELECT customer, amount FROM orders WHERE extract(year FROM shipped) = 2024 ORDER BY amount DESC NULLS LAST LIMIT 1"]
    assert "operator does not exist: date = integer" in r["corrected"][0]["error"]
    assert r["notes"][0].startswith("Your query failed: GroupingError (42803)") and \
        r["notes"][0].endswith("corrected, it ran as: SELECT customer, amount FROM orders WHERE extract(year FROM shipped) "
                               "= 2024 ORDER BY amount DESC NULLS LAST LIMIT 1. These rows are the corrected query's.")
    # a text value that differs only in case
    assert out[1]["result"]["rows"] == [{"id": 1}, {"id": 3}]
    assert out[1]["result"]["corrected"] == [{"error": "matched no row: a text value differs only in case",
                                              "query": "SELECT id FROM orders WHERE customer = 'ann' ORDER BY id"}]
    # a fix that picks another table is only suggested; a value with no near match is left alone
    assert out[2]["is_error"] and out[2]["error"].endswith("Try: SELECT city FROM customers")
    assert out[3]["result"]["rows"] == [] and "corrected" not in out[3]["result"]
    # a percentage of integers (2 * 100 / 4 would be 50 either way: here 2 of 4 is exact, so check the query)
    assert out[4]["result"]["corrected"] == [{"error": "divided integers, which drops the fraction",
                                              "query": "SELECT count(*) FILTER (WHERE customer = 'bob') * 100.0 / "
                                                       "count(*) AS pct FROM orders WHERE amount / 2 > 0"}]
    assert out[4]["result"]["rows"] == [{"pct": 50.0}] and isinstance(out[4]["result"]["rows"][0]["pct"], float)
    assert out[4]["result"]["notes"][0].startswith("Your query divided integers, which drops the fraction; corrected")
    # turned off: only suggested
    conn.execute("""SELECT pgagent.update_tool('run_sql', config => '{"autofix": false}')""")
    llm.script(tool_calls([("run_sql", {"query": "SELECT amount FROM orders WHERE shipped = 2024"})]), text("done"))
    conn.execute("SELECT pgagent.send_message(%s, 'q2')", [cid])
    last = conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'tool_result' ORDER BY step_id DESC LIMIT 1").fetchone()[0]
    assert last["is_error"] and "Try: SELECT amount FROM orders WHERE extract(year FROM shipped) = 2024" in last["error"]


def test_few_shot_examples_are_an_option_of_the_sql_tool(conn, llm):
    setup(conn, llm, tool_config='{"examples": true}')
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(text("a"))
    conn.execute("SELECT pgagent.send_message(%s, 'q')", [cid])
    d = tool_description(llm)
    assert d.startswith("Run one SELECT.\nExamples of questions and the one query that answers each, on a table sales(")
    assert "SELECT (SELECT sum(amount) FROM sales WHERE extract(year FROM sold) = 2021) - (SELECT" in d
    conn.execute("""SELECT pgagent.update_tool('run_sql', config => '{"examples": false}')""")
    llm.script(text("b"))
    conn.execute("SELECT pgagent.send_message(%s, 'q2')", [cid])
    assert tool_description(llm) == "Run one SELECT."


def test_sql_hints_can_be_turned_off(conn, llm):
    setup(conn, llm, tool_config='{"max_rows": 3, "hints": false}')
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(tool_calls([("run_sql", {"query": "SELECT customer FROM orders"})]), text("done"))
    conn.execute("SELECT pgagent.send_message(%s, 'q')", [cid])
    res = conn.execute("SELECT payload -> 'result' FROM pgagent.step WHERE kind = 'tool_result'").fetchone()[0]
    assert set(res) == {"rows", "row_count", "truncated"}
    llm.script(tool_calls([("run_sql", {"query": "SELECT amount FROM orders WHERE shipped = 2024"})]), text("done"))
    conn.execute("SELECT pgagent.send_message(%s, 'q')", [cid])
    err = conn.execute("SELECT payload ->> 'error' FROM pgagent.step WHERE kind = 'tool_result' ORDER BY step_id DESC LIMIT 1").fetchone()[0]
    assert "date = integer" in err and "HINT" not in err


def tool_description(llm) -> str:
    tools = llm.requests[-1]["body"]["tools"]
    return tools[0]["function"]["description"]


def test_the_sql_tool_describes_the_tables_it_can_read(conn, llm):
    setup(conn, llm, tool_config='{"max_rows": 3, "schema": true}')
    conn.execute("CREATE TABLE public.secret_notes (x text); REVOKE SELECT ON public.secret_notes FROM pgagent_sandbox")
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(text("a"))
    conn.execute("SELECT pgagent.send_message(%s, 'q')", [cid])
    d = tool_description(llm)
    assert conn.execute("SELECT payload ->> 'tool_notes_error' FROM pgagent.step WHERE kind = 'llm_call'").fetchone()[0] is None
    assert d.startswith("Run one SELECT.\nTable orders: ")
    # samples in the table's order (text: all values when few, quoted as SQL literals); no row
    # counts, minima or maxima: they would answer questions the model must look up
    assert "Table orders: id integer (e.g. 1, 2, 3), customer text (one of 'ann', 'bob', 'cy'), " \
           "amount numeric (e.g. 10.5, 20, 7.25; some NULL), shipped date (e.g. 2024-01-03, 2024-02-01, 2024-02-11; " \
           "some NULL)." in d
    assert "secret_notes" not in d and "eval_case" not in d
    # recorded with the turn's first llm_call
    notes = conn.execute("SELECT payload -> 'tool_notes' ->> 'run_sql' FROM pgagent.step WHERE kind = 'llm_call'").fetchone()[0]
    assert notes in d
    # DDL refreshes it for the next turn
    conn.execute("ALTER TABLE orders ADD COLUMN region text DEFAULT 'north'")
    llm.script(text("b"))
    conn.execute("SELECT pgagent.send_message(%s, 'q2')", [cid])
    assert "region text (one of 'north')" in tool_description(llm)


def test_schema_description_is_off_by_default_and_for_fixed_queries(conn, llm):
    setup(conn, llm, tool_config='{}')
    conn.execute("""SELECT pgagent.register_tool('fixed', 'Orders of a customer.',
                      '{"type": "object", "properties": {"c": {"type": "string"}}, "required": ["c"]}', kind => 'sql',
                      config => '{"query": "SELECT id FROM orders WHERE customer = $1", "args": ["c"], "schema": true}')""")
    conn.execute("SELECT pgagent.update_agent('analyst', tools => '{run_sql,fixed}')")
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(text("a"))
    conn.execute("SELECT pgagent.send_message(%s, 'q')", [cid])
    assert [t["function"]["description"] for t in llm.requests[-1]["body"]["tools"]] == \
        ["Orders of a customer.", "Run one SELECT."]
    assert conn.execute("SELECT payload ? 'tool_notes' FROM pgagent.step WHERE kind = 'llm_call'").fetchone()[0] is False


# ------------------------------------------------------------------------------------ grounding policy
def test_require_tool_always_sends_an_unlooked_answer_back_once(conn, llm):
    setup(conn, llm, agent_config='{"require_tool": "always"}')
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(text("There are 4 orders."), tool_calls([("run_sql", {"query": "SELECT count(*) FROM orders"})]),
               text("There are 5 orders."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'How many orders?')", [cid]).fetchone()[0]
    assert r["answer"] == "There are 5 orders."
    kinds = [k for k, in conn.execute("SELECT kind FROM pgagent.step ORDER BY seq")]
    assert kinds == ["user_message", "llm_call", "guardrail", "llm_call", "tool_call", "tool_result", "llm_call", "response"]
    g = conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'guardrail'").fetchone()[0]
    assert g["guard"] == "grounding" and g["reason"] == "no_tool" and g["answer"] == "There are 4 orders."
    # the model saw its answer and the feedback
    msgs = llm.requests[1]["body"]["messages"]
    assert msgs[-2] == {"role": "assistant", "content": "There are 4 orders."}
    assert msgs[-1]["role"] == "user" and msgs[-1]["content"] == grounding.NO_TOOL
    # at most grounding_retries times: the answer after the last send-back is accepted
    conn.execute("""SELECT pgagent.update_agent('analyst', config => '{"require_tool": "always", "grounding_retries": 1}')""")
    llm.script(text("Hello."), text("Hello again."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'Hi')", [cid]).fetchone()[0]
    assert r["answer"] == "Hello again." and r["llm_calls"] == 2


def test_require_tool_auto_checks_numbers(conn, llm):
    setup(conn, llm, agent_config='{"require_tool": "auto"}')
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(text("Hello!"))           # no numbers: accepted at once
    assert conn.execute("SELECT pgagent.send_message(%s, 'Hi')", [cid]).fetchone()[0]["answer"] == "Hello!"
    llm.script(tool_calls([("run_sql", {"query": "SELECT sum(amount) FROM orders"})]), text("The total is 38.75."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'Total amount in 2024?')", [cid]).fetchone()[0]
    assert r["answer"] == "The total is 38.75." and r["llm_calls"] == 2           # 38.75 is in the tool result
    # sent back at most grounding_retries (default 2) times; the answer after that is accepted
    llm.script(text("About 40 per order."), text("About 40 per order."), text("About 40 per order."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'Average?')", [cid]).fetchone()[0]
    assert r["answer"] == "About 40 per order." and r["llm_calls"] == 3
    g = conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'guardrail' AND turn_id = %s", [r["turn_id"]]).fetchall()
    assert [(p["reason"], p["numbers"]) for p, in g] == [("unsupported_numbers", ["40"])] * 2


def test_an_answer_right_after_a_failed_call_is_sent_back(conn, llm):
    setup(conn, llm, agent_config='{"require_tool": "auto"}')
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(tool_calls([("run_sql", {"query": "SELECT totl FROM orders"})]),
               text("The query failed because of an error."),
               tool_calls([("run_sql", {"query": "SELECT count(*) FROM orders"})]), text("There are 5 orders."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'How many orders?')", [cid]).fetchone()[0]
    assert r["answer"] == "There are 5 orders."
    g = conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'guardrail'").fetchone()[0]
    assert g["reason"] == "tool_error" and "totl" in g["feedback"] and g["answer"] == "The query failed because of an error."


def test_an_answer_right_after_an_empty_result_is_sent_back_with_its_notes(conn, llm):
    setup(conn, llm, tool_config='{"max_rows": 3, "autofix": false}', agent_config='{"require_tool": "auto"}')
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(tool_calls([("run_sql", {"query": "SELECT amount FROM orders WHERE customer = 'BOB'"})]),
               text("Bob has no orders."),
               tool_calls([("run_sql", {"query": "SELECT amount FROM orders WHERE customer = 'bob'"})]),
               text("Bob's orders were 20 and 1."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'What did bob spend?')", [cid]).fetchone()[0]
    assert r["answer"] == "Bob's orders were 20 and 1."
    g = conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'guardrail'").fetchone()[0]
    assert g["reason"] == "empty_result" and g["answer"] == "Bob has no orders."
    assert g["feedback"].startswith("Your last query returned no rows. No rows matched.")
    assert "customer = 'BOB' matches no row of orders, but customer has 'bob'. Try: SELECT" in g["feedback"]
    # an aggregate over no rows (one row of NULLs or zeros) with nothing the tool could suggest: accepted
    llm.script(tool_calls([("run_sql", {"query": "SELECT count(*) FROM orders WHERE customer = 'zed'"})]),
               text("Zed has 0 orders."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'How many orders has zed?')", [cid]).fetchone()[0]
    assert r["answer"] == "Zed has 0 orders." and r["llm_calls"] == 2
    # ... but sent back when the tool found the value the query may have meant
    llm.script(tool_calls([("run_sql", {"query": "SELECT count(*) FROM orders WHERE customer = 'Cy'"})]),
               text("Cy has 0 orders."),
               tool_calls([("run_sql", {"query": "SELECT count(*) FROM orders WHERE customer = 'cy'"})]),
               text("Cy has 1 order."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'How many orders has Cy?')", [cid]).fetchone()[0]
    assert r["answer"] == "Cy has 1 order." and r["llm_calls"] == 4
    g = conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'guardrail' AND turn_id = %s", [r["turn_id"]]).fetchone()[0]
    assert g["reason"] == "empty_result" and "Try: SELECT count(*) FROM orders WHERE customer = 'cy'" in g["feedback"]


def test_self_check_asks_once_after_a_tool_result(conn, llm):
    setup(conn, llm, agent_config='{"self_check": true}')
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(text("Hello!"))   # no tool result: no check
    assert conn.execute("SELECT pgagent.send_message(%s, 'Hi')", [cid]).fetchone()[0]["llm_calls"] == 1
    llm.script(tool_calls([("run_sql", {"query": "SELECT round(avg(amount), 2) FROM orders"})]),
               text("The average is 9.69."), text("The average is 9.69."))
    r = conn.execute("SELECT pgagent.send_message(%s, 'Average amount?')", [cid]).fetchone()[0]
    assert r["answer"] == "The average is 9.69." and r["llm_calls"] == 3
    g = conn.execute("SELECT payload FROM pgagent.step WHERE kind = 'guardrail'").fetchall()
    assert [p["guard"] for p, in g] == ["self_check"] and g[0][0]["feedback"] == grounding.SELF_CHECK
    assert llm.requests[-1]["body"]["messages"][-1] == {"role": "user", "content": grounding.SELF_CHECK}


def test_require_tool_always_in_json_schema_mode_offers_no_answer_first(conn, llm):
    setup(conn, llm, agent_config='{"require_tool": "always"}', tool_mode="json_schema")
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(text('{"tool": "run_sql", "arguments": {"query": "SELECT count(*) FROM orders"}}'),
               text('{"answer": "5 orders"}'))
    r = conn.execute("SELECT pgagent.send_message(%s, 'How many orders?')", [cid]).fetchone()[0]
    assert r["answer"] == "5 orders"
    first, second = (q["body"]["response_format"]["json_schema"]["schema"]["oneOf"] for q in llm.requests[-2:])
    assert not any("answer" in o["properties"] for o in first)
    assert any("answer" in o["properties"] for o in second)


def test_after_a_send_back_a_json_schema_reply_must_call_a_tool(conn, llm):
    setup(conn, llm, agent_config='{"require_tool": "auto"}', tool_mode="json_schema")
    cid = conn.execute("SELECT pgagent.start_conversation('analyst')").fetchone()[0]
    llm.script(text('{"answer": "There are 7 orders."}'),
               text('{"tool": "run_sql", "arguments": {"query": "SELECT count(*) FROM orders"}}'),
               text('{"answer": "There are 5 orders."}'))
    r = conn.execute("SELECT pgagent.send_message(%s, 'How many orders?')", [cid]).fetchone()[0]
    assert r["answer"] == "There are 5 orders."
    offered = [["answer" in o["properties"] for o in q["body"]["response_format"]["json_schema"]["schema"]["oneOf"]]
               for q in llm.requests[-3:]]
    assert [any(o) for o in offered] == [True, False, True]   # no answer right after the send-back


# ------------------------------------------------------------------------------------ the public suite
def test_the_public_suite_scores_an_oracle_right(conn, llm):
    """Every case of bench/evalsuite.py (make eval) through the scripted server: an agent that
    runs each reference query and answers with its value scores 100 %, all grounded; one that
    answers every data question without a tool scores the same values but none grounded. This
    proves the suite's queries run, its rules accept right answers, and grounding tells them apart."""
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2] / "bench"))
    import evalsuite

    evalsuite.load(conn)
    conn.execute("SELECT pgagent.register_model('chat', base_url => %s, is_default => true, max_retries => 0)",
                 [llm.base_url])
    conn.execute("SELECT pgagent.register_tool('run_sql', 'Run one SELECT. ' || %s, "
                 "'{\"type\": \"object\", \"properties\": {\"query\": {\"type\": \"string\"}}, \"required\": [\"query\"]}', "
                 "kind => 'sql', config => '{\"search_path\": \"evaldata\", \"max_rows\": 20}')", [evalsuite.tables_note(conn)])
    conn.execute("SELECT pgagent.create_agent('analyst', tools => '{run_sql}')")
    evalsuite.define(conn)
    assert len(evalsuite.CASES) >= 40 and len({t for *_, tags in evalsuite.CASES for t in tags}) >= 10
    conn.execute("SET search_path = evaldata, public")
    values = [conn.execute(ref).fetchall() for _, _, ref, *_ in evalsuite.CASES]
    conn.execute("RESET search_path")
    assert all(len(v) == 1 for v in values)      # one answer each (no ties)

    def no_tool_replies():   # the answers, then the judge's verdicts (cases are scored after all ran)
        out = [text(expected if expected else "Hello! I am a data analyst.") for _, _, expected, _, _ in evalsuite.NO_TOOL]
        return out + [text('{"correct": true, "reason": "a greeting"}') for *_, s, _ in evalsuite.NO_TOOL if s == "llm"]

    replies = []
    for (name, q, ref, *_), v in zip(evalsuite.CASES, values):
        replies += [tool_calls([("run_sql", {"query": ref})]), text(f"The answer is {v[0][0]}.")]
    llm.script(*replies, *no_tool_replies())
    run = conn.execute("SELECT pgagent.run_eval('public', 'analyst', label => 'oracle')").fetchone()[0]
    wrong = conn.execute("SELECT case_name, answer, expected, detail FROM pgagent.eval_results "
                         "WHERE run_id = %s AND NOT (correct AND grounded IS DISTINCT FROM false)", [run]).fetchall()
    assert wrong == []
    assert conn.execute("SELECT cases, score, grounded_share FROM pgagent.eval_runs WHERE run_id = %s",
                        [run]).fetchone() == (len(evalsuite.CASES) + len(evalsuite.NO_TOOL), 1, 1)

    llm.script(*[text(f"The answer is {v[0][0]}.") for v in values], *no_tool_replies())
    run = conn.execute("SELECT pgagent.run_eval('public', 'analyst', label => 'guesses')").fetchone()[0]
    assert conn.execute("SELECT score, grounded_share FROM pgagent.eval_runs WHERE run_id = %s", [run]).fetchone() == (1, 0)
