"""SQL API of evaluation suites (docs/evals.md): suites and cases (operator), runs against an
agent (operator: they spend the tenant's LLM budget), scoring. Scoring rules and grounding are
in :mod:`pgagent_core.evals`.

A run makes one conversation per case (metadata ``{"eval_run": run_id, "eval_case": case_id}``)
as the calling role. ``queue => false`` answers every case in the caller's transaction (as
pgagent.send_message does) and scores it; ``queue => true`` enqueues the turns for workers
(``pgagent worker``) and :func:`score_eval` scores each one once it has finished.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from . import evals, limits, loop, pl
from .db import Db, one
from .errors import InvalidArgument, NotFound
from .registry import Caller, api, audit, check, obj
from .registry import name as valid_name
from .tools import ToolFailure
from .tools.sql import sandbox

REFERENCE_TIMEOUT_MS = 10000
MAX_REFERENCE_ROWS = 50
MAX_CASES = 10000


def _suite(db: Db, c: Caller, name: str) -> dict[str, Any]:
    row = one(db, "SELECT suite_id, name, config FROM pgagent.eval_suite WHERE tenant_id = $1::uuid AND name = $2",
              ["text", "text"], [c.tenant_id, name])
    if row is None:
        raise NotFound(f"eval suite {name!r} does not exist (for this tenant)",
                       hint="Create it with pgagent.create_eval_suite(name).")
    return row


def reference(db: Db, sql: str, search_path: str) -> list[Any]:
    """The values of a reference query's one column (up to 50 rows), run as pgagent_sandbox
    read-only with a 10 s timeout. Raises InvalidArgument (22023) when the query fails, returns
    no row or more than one column."""
    try:
        res = sandbox(db, sql.strip().rstrip(";"), [], search_path, MAX_REFERENCE_ROWS, REFERENCE_TIMEOUT_MS)["rows"]
    except ToolFailure as e:
        raise InvalidArgument(f"reference_sql failed: {e}",
                              hint="It runs as pgagent_sandbox with the suite's config.search_path; grant SELECT "
                                   "on what it reads.") from None
    if not res:
        raise InvalidArgument("reference_sql returned no row")
    if any(len(r) != 1 for r in res):
        raise InvalidArgument("reference_sql must return exactly one column",
                              hint="Select the answer's value only, e.g. SELECT count(*) FROM t.")
    return [next(iter(r.values())) for r in res[:MAX_REFERENCE_ROWS]]


def _expected_text(values: list[Any]) -> str:
    texts = [v if isinstance(v, str) else json.dumps(v) for v in values]
    return texts[0] if len(texts) == 1 else json.dumps(texts)


@api("operator")
def create_eval_suite(db: Db, gd: dict, c: Caller, name: str, description: str | None = None,
                      config: Any = None) -> int:
    """Create an eval suite. config: ``search_path`` (schemas reference queries see, default
    public), ``judge_model`` (the chat model that grades llm-scored cases; default the tenant's
    default model). Returns suite_id. Audited. Raises 22023, 23505 (the name is taken)."""
    valid_name(name, "suite name")
    cfg = limits.clean_json(obj(config, "config"))
    unknown = set(cfg) - {"search_path", "judge_model"}
    check(not unknown, f"config has unknown keys: {', '.join(sorted(unknown))}",
          "Known keys: search_path, judge_model.")
    check(isinstance(cfg.get("search_path", "public"), str), "config.search_path must be a string such as 'public'")
    check(isinstance(cfg.get("judge_model", ""), str), "config.judge_model must name a chat model")
    row = one(db, """INSERT INTO pgagent.eval_suite (tenant_id, name, description, config, created_by)
                     VALUES ($1::uuid, $2, $3, $4, $5) RETURNING suite_id""",
              ["text", "text", "text", "jsonb", "name"], [c.tenant_id, name, limits.clean_text(description), cfg, c.role])
    audit(db, "eval_suite_created", "eval_suite", row["suite_id"], {"name": name})
    return int(row["suite_id"])


@api("operator")
def drop_eval_suite(db: Db, gd: dict, c: Caller, name: str) -> bool:
    """Delete a suite with its cases, runs and results (the runs' conversations stay). Audited. 42704."""
    s = _suite(db, c, name)
    db.all("DELETE FROM pgagent.eval_suite WHERE tenant_id = $1::uuid AND suite_id = $2", ["text", "int8"],
           [c.tenant_id, s["suite_id"]])
    audit(db, "eval_suite_dropped", "eval_suite", s["suite_id"], {"name": name})
    return True


@api("operator")
def add_eval_case(db: Db, gd: dict, c: Caller, suite: str, question: str, expected: str | None = None,
                  reference_sql: str | None = None, scoring: str = "contains", tolerance: float | None = None,
                  decimals: int | None = None, rubric: str | None = None, needs_tool: bool = True,
                  name: str | None = None, tags: list[str] | None = None) -> int:
    """Add a case to a suite: a question and its reference answer, ``expected`` (text) or
    ``reference_sql`` (one column, run as pgagent_sandbox when the case is scored; it is run
    once now to check it), scored by ``scoring`` (exact, numeric, contains or llm; see
    pgagent_core.evals) with ``tolerance`` (absolute) or ``decimals`` for numeric, and ``rubric``
    for llm. ``needs_tool => false`` marks a question the agent should answer without a tool
    (not graded for grounding). Returns case_id. Raises 22023 (a bad rule, value or reference
    query; the message says which), 42704 (no such suite), 23505 (the case name is taken)."""
    s = _suite(db, c, suite)
    check(isinstance(question, str) and question.strip() != "", "question must be a non-empty text")
    check(scoring in evals.RULES, f"scoring must be one of {', '.join(evals.RULES)}, not {scoring!r}")
    check(expected is not None or reference_sql is not None or (scoring == "llm" and rubric),
          "a case needs expected, reference_sql, or (scoring llm) a rubric")
    check(tolerance is None or (isinstance(tolerance, (int, float)) and tolerance >= 0), "tolerance must be >= 0")
    check(decimals is None or (isinstance(decimals, int) and 0 <= decimals <= 10), "decimals must be 0 to 10")
    check(scoring == "numeric" or (tolerance is None and decimals is None),
          "tolerance and decimals apply to scoring numeric only")
    check(tags is None or (isinstance(tags, list) and all(isinstance(t, str) for t in tags)), "tags must be texts")
    values = [expected] if expected is not None else None
    if reference_sql is not None:
        check(isinstance(reference_sql, str) and reference_sql.strip() != "", "reference_sql must be a query")
        values = reference(db, reference_sql, s["config"].get("search_path", "public"))
    if scoring == "numeric" and values is not None:
        try:
            evals.score("numeric", "", values)
        except ValueError as e:
            raise InvalidArgument(str(e), hint="Use scoring contains or exact for a text answer.") from None
    if name is None:
        n = one(db, "SELECT count(*) AS n FROM pgagent.eval_case WHERE tenant_id = $1::uuid AND suite_id = $2",
                ["text", "int8"], [c.tenant_id, s["suite_id"]])["n"]
        check(int(n) < MAX_CASES, f"a suite holds at most {MAX_CASES} cases")
        name = f"case_{int(n) + 1}"
    valid_name(name, "case name")
    row = one(db, """INSERT INTO pgagent.eval_case (tenant_id, suite_id, name, question, expected, reference_sql, scoring,
                                                    tolerance, decimals, rubric, needs_tool, tags, created_by)
                     VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING case_id""",
              ["text", "int8", "text", "text", "text", "text", "text", "float8", "int4", "text", "bool", "text[]", "name"],
              [c.tenant_id, s["suite_id"], name, limits.clean_text(question), limits.clean_text(expected),
               reference_sql, scoring, tolerance, decimals, limits.clean_text(rubric), bool(needs_tool), tags or [],
               c.role])
    return int(row["case_id"])


AGENT_SQL = """
SELECT a.agent_id, a.name, m.name AS model, m.model_name, coalesce(p.system_prompt, '') AS system_prompt,
       a.config, (SELECT coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(t.name, t.description, t.config)
                                                       ORDER BY t.name), '[]')
                    FROM pgagent.agent_tool x JOIN pgagent.tool t ON t.tenant_id = x.tenant_id AND t.tool_id = x.tool_id
                   WHERE x.tenant_id = a.tenant_id AND x.agent_id = a.agent_id) AS tools
  FROM pgagent.agent a
  JOIN pgagent.model m ON m.tenant_id = a.tenant_id AND m.model_id = a.model_id
  LEFT JOIN pgagent.persona p ON p.tenant_id = a.tenant_id AND p.persona_id = a.persona_id
 WHERE a.tenant_id = $1::uuid AND a.name = $2"""


@api("operator")
def run_eval(db: Db, gd: dict, c: Caller, suite: str, agent: str, label: str | None = None,
             queue: bool = False) -> int:
    """Run every case of ``suite`` against ``agent``: one new conversation per case, started as
    the caller. ``queue => false``: answered and scored now, in the caller's transaction (like
    send_message); ``queue => true``: enqueued for workers, scored by pgagent.score_eval. The
    run keeps the agent's model and a prompt version (the first 12 hex digits of the SHA-256 of
    its persona prompt, config and tools). Returns run_id. Raises 42704 (suite or agent), 22023."""
    s = _suite(db, c, suite)
    a = one(db, AGENT_SQL, ["text", "text"], [c.tenant_id, agent])
    if a is None:
        raise NotFound(f"agent {agent!r} does not exist (for this tenant)")
    cases = db.all("""SELECT case_id, name, question FROM pgagent.eval_case WHERE tenant_id = $1::uuid AND suite_id = $2
                       ORDER BY case_id""", ["text", "int8"], [c.tenant_id, s["suite_id"]])
    check(bool(cases), f"eval suite {suite!r} has no cases", "Add some with pgagent.add_eval_case.")
    snapshot = {"system_prompt": a["system_prompt"], "config": a["config"], "tools": a["tools"], "model": a["model"]}
    version = hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()[:12]
    run = one(db, """INSERT INTO pgagent.eval_run (tenant_id, suite_id, agent_id, agent_name, model_name, prompt_version,
                                                   label, queued, snapshot, created_by)
                     VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING run_id""",
              ["text", "int8", "int8", "text", "text", "text", "text", "bool", "jsonb", "name"],
              [c.tenant_id, s["suite_id"], a["agent_id"], a["name"], a["model_name"] or a["model"], version,
               limits.clean_text(label), bool(queue), snapshot, c.role])
    run_id = int(run["run_id"])
    for case in cases:
        conv = pl.start_conversation(db, gd, c, agent, title=f"eval {suite} #{run_id}: {case['name']}",
                                     metadata={"eval_run": run_id, "eval_case": int(case["case_id"])})
        if queue:
            turn_id = pl.enqueue_message(db, gd, c, conv, case["question"])
        else:
            turn_id = pl._new_turn(db, gd, c, conv, case["question"], None, "running")
            loop.drive(db, gd, pl._locked(db, gd, c, turn_id))
        db.all("""INSERT INTO pgagent.eval_result (tenant_id, run_id, case_id, conversation_id, turn_id)
                  VALUES ($1::uuid, $2, $3, $4, $5)""", ["text", "int8", "int8", "int8", "int8"],
               [c.tenant_id, run_id, case["case_id"], conv, turn_id])
    if not queue:
        score_eval(db, gd, c, run_id)
    return run_id


PENDING_SQL = """
SELECT r.case_id, r.turn_id, k.question, k.expected, k.reference_sql, k.scoring, k.tolerance, k.decimals, k.rubric,
       k.needs_tool, t.status AS turn_status, t.answer, t.error,
       (SELECT count(*) FROM pgagent.step s WHERE s.tenant_id = t.tenant_id AND s.turn_id = t.turn_id) AS steps,
       pg_catalog.date_part('epoch', t.finished_at - coalesce(t.started_at, t.created_at)) * 1000 AS latency_ms
  FROM pgagent.eval_result r
  JOIN pgagent.eval_case k ON k.tenant_id = r.tenant_id AND k.case_id = r.case_id
  LEFT JOIN pgagent.turn t ON t.tenant_id = r.tenant_id AND t.turn_id = r.turn_id
 WHERE r.tenant_id = $1::uuid AND r.run_id = $2 AND r.status = 'pending'
 ORDER BY r.case_id"""

USAGE_SQL = """
SELECT count(*) FILTER (WHERE kind = 'llm_call') AS llm_calls, count(*) FILTER (WHERE kind = 'tool_call') AS tool_calls,
       coalesce(sum(prompt_tokens), 0) AS prompt_tokens, coalesce(sum(completion_tokens), 0) AS completion_tokens,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd,
       coalesce(pg_catalog.jsonb_agg(payload -> 'result') FILTER (WHERE kind = 'tool_result'
                                                               AND NOT coalesce((payload ->> 'is_error')::boolean, false)),
                '[]') AS results
  FROM pgagent.step WHERE tenant_id = $1::uuid AND turn_id = $2"""

TERMINAL = ("completed", "failed", "cancelled")


def _judge(db: Db, gd: dict, c: Caller, suite_cfg: dict[str, Any], question: str, answer: str | None,
           expected: Any, rubric: str | None) -> tuple[bool | None, dict[str, Any]]:
    name = suite_cfg.get("judge_model")
    model = loop.chat_model(db, c.tenant_id, name, "judge model",
                            hint="Set the suite's config.judge_model, or register a default model.")
    req = evals.judge_request(question, answer, expected, rubric)
    req["params"] = {**(model.get("params") or {}), **req["params"]}
    try:
        reply = loop.model_chat(db, gd, model, req)
    except loop.ProviderError as e:
        return None, {"judge_error": e.message}
    ok, reason = evals.parse_judge(reply.content)
    return ok, {"judge": {"model": model["name"], "correct": ok, "reason": reason,
                          "prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}}


@api("operator")
def score_eval(db: Db, gd: dict, c: Caller, run: int) -> dict[str, Any]:
    """Score the run's cases whose turns have finished (completed, failed or cancelled; a turn
    that did not complete is wrong) and, once none is left, mark the run scored. Safe to call
    again. Returns ``{run_id, status, cases, scored, pending, correct}``. Raises 42704."""
    r = one(db, """SELECT r.run_id, r.status, s.config FROM pgagent.eval_run r
                     JOIN pgagent.eval_suite s ON s.tenant_id = r.tenant_id AND s.suite_id = r.suite_id
                    WHERE r.tenant_id = $1::uuid AND r.run_id = $2 FOR UPDATE OF r""", ["text", "int8"], [c.tenant_id, run])
    if r is None:
        raise NotFound(f"eval run {run} does not exist (for this tenant)")
    for p in db.all(PENDING_SQL, ["text", "int8"], [c.tenant_id, run]):
        if p["turn_status"] is not None and p["turn_status"] not in TERMINAL:
            continue
        u = one(db, USAGE_SQL, ["text", "int8"], [c.tenant_id, p["turn_id"]]) if p["turn_id"] else None
        detail: dict[str, Any] = {"turn_status": p["turn_status"]}
        if p["reference_sql"] is not None:
            try:
                values = reference(db, p["reference_sql"], r["config"].get("search_path", "public"))
            except InvalidArgument as e:
                values, detail["reference_error"] = None, e.message
        else:
            values = [p["expected"]] if p["expected"] is not None else []
        answer = p["answer"] if p["turn_status"] == "completed" else None
        correct: bool | None = False
        if answer is None:
            detail["why"] = p["error"] or f"the turn ended {p['turn_status'] or 'deleted'}"
        elif values is None:
            correct = None
        elif p["scoring"] == "llm":
            correct, extra = _judge(db, gd, c, r["config"], p["question"], answer, values, p["rubric"])
            detail.update(extra)
        else:
            try:
                correct, extra = evals.score(p["scoring"], answer, values, tolerance=p["tolerance"],
                                             decimals=p["decimals"])
                detail.update(extra)
            except ValueError as e:
                correct, detail["score_error"] = None, str(e)
        evidence = [json.dumps(x) for x in (u["results"] if u else [])]
        ground = None
        if answer is not None and correct is not None:
            ground = evals.grounded(p["scoring"], answer, bool(correct), detail, evidence, p["question"],
                                    bool(p["needs_tool"]))
        db.all("""UPDATE pgagent.eval_result SET status = 'scored', answer = $3, expected = $4, correct = $5, grounded = $6,
                         detail = $7, steps = $8, llm_calls = $9, tool_calls = $10, prompt_tokens = $11,
                         completion_tokens = $12, cost_usd = $13, latency_ms = $14, scored_at = pg_catalog.now()
                   WHERE tenant_id = $1::uuid AND run_id = $2 AND case_id = $15""",
               ["text", "int8", "text", "text", "bool", "bool", "jsonb", "int4", "int4", "int4", "int8", "int8",
                "float8", "float8", "int8"],
               [c.tenant_id, run, answer, None if values is None else _expected_text(values), correct, ground,
                limits.clean_json(detail), p["steps"], u["llm_calls"] if u else None, u["tool_calls"] if u else None,
                u["prompt_tokens"] if u else None, u["completion_tokens"] if u else None, u["cost_usd"] if u else None,
                p["latency_ms"], p["case_id"]])
    st = one(db, """SELECT count(*) AS cases, count(*) FILTER (WHERE status = 'scored') AS scored,
                           count(*) FILTER (WHERE correct) AS correct
                      FROM pgagent.eval_result WHERE tenant_id = $1::uuid AND run_id = $2""", ["text", "int8"],
             [c.tenant_id, run])
    status = r["status"]
    if st["scored"] == st["cases"] and status != "scored":
        db.all("""UPDATE pgagent.eval_run SET status = 'scored', finished_at = pg_catalog.now()
                   WHERE tenant_id = $1::uuid AND run_id = $2""", ["text", "int8"], [c.tenant_id, run])
        status = "scored"
    return {"run_id": run, "status": status, "cases": int(st["cases"]), "scored": int(st["scored"]),
            "pending": int(st["cases"]) - int(st["scored"]), "correct": int(st["correct"])}
