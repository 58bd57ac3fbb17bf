"""``sql`` tools: a read-only query, with a timeout and a row cap, whose rows come back as JSON.

config:
  ``query``   a fixed SQL query using $1..$n; ``args`` names the arguments that fill them, in
              order. Without ``query`` the model supplies the SQL in an argument named
              ``query`` (an analyst tool).
  ``max_rows`` cap on returned rows (default 100); ``truncated: true`` tells the model more exist.
  ``search_path`` the schemas the query sees (default ``public``).
  ``hints``   (default true) add ``total_rows`` and ``notes`` (:func:`result_notes`; the model
              sees them before the rows) to results, and a hint (:func:`error_hint`) to the
              errors of common mistakes.
  ``schema``  (default false) show the model the tables the sandbox may read, with column
              types, sample values and which have NULLs, when the model writes the query
              (:func:`describe`, cached per backend and refreshed on DDL). Off by default: on
              the embedded 1.5 B model it lowered the public eval suite's score (bench/eval.md).
  ``autofix`` (default true; with ``hints``) when a model-written query fails and its hint has
              a fix that changes only the form of what was asked (:class:`Hint` ``certain``), or
              it matched nothing and one text value differs only in case, run the fixed query
              (at most 3 fixes per call) and return its rows with a note saying so and
              ``corrected`` (each error and the query run).
  ``examples`` (default false) add few-shot query examples (:data:`EXAMPLES`) to the
              description of a tool whose query the model writes.
The statement runs as a subquery (so it must be one SELECT/VALUES/TABLE; data-modifying
statements and CTEs are refused by the parser) inside a subtransaction that is always rolled
back, so nothing it calls can leave writes behind, and is cancelled after the tool's timeout_ms.
It runs as the role ``pgagent_sandbox`` (through the SECURITY DEFINER function
pgagent._sandbox_query, owned by that role): it sees only what that role was granted, never
pgagent's own tables, and cannot switch roles.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, NamedTuple

from ..db import Db
from ..errors import Forbidden, NotFound
from . import ToolContext, ToolFailure
from ._spi import guarded

DEFAULT_MAX_ROWS = 100
SANDBOX_SQL = """
SELECT pgagent._sandbox_query($1, ARRAY(SELECT a.v FROM pg_catalog.jsonb_array_elements_text($2) WITH ORDINALITY AS a(v, i)
                                         ORDER BY a.i), $3, $4) AS rows"""


def check_config(config: dict[str, Any]) -> None:
    """Raises ValueError for a bad config."""
    q = config.get("query")
    if q is not None and (not isinstance(q, str) or not q.strip()):
        raise ValueError("config.query must be a non-empty string")
    args = config.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise ValueError("config.args must be an array of argument names")
    sp = config.get("search_path", "public")
    if not isinstance(sp, str):
        raise ValueError("config.search_path must be a string such as 'public' or 'demo, public'")
    mr = config.get("max_rows", DEFAULT_MAX_ROWS)
    if not isinstance(mr, int) or isinstance(mr, bool) or not 1 <= mr <= 100000:
        raise ValueError("config.max_rows must be an integer between 1 and 100000")


def check_registration(db: Db, registrar: str, superuser: bool, config: dict[str, Any]) -> None:
    """At register_tool: every schema of config.search_path exists and the sandbox role may use
    it (USAGE). Raises NotFound (42704) or Forbidden (42501) naming the schema and the GRANT."""
    names = [n.strip().strip('"') for n in str(config.get("search_path", "public")).split(",") if n.strip()]
    for row in db.all("""SELECT n.name, s.oid IS NOT NULL AS found,
                                s.oid IS NOT NULL AND pg_catalog.has_schema_privilege('pgagent_sandbox', s.oid, 'USAGE') AS usable
                           FROM unnest($1::text[]) AS n(name) LEFT JOIN pg_catalog.pg_namespace s ON s.nspname = n.name""",
                      ["text[]"], [names]):
        if not row["found"]:
            raise NotFound(f"config.search_path: schema {row['name']!r} does not exist",
                           hint="Create it, or name the schemas the tool's queries read.")
        if not row["usable"]:
            raise Forbidden(f"config.search_path: the sandbox role may not use schema {row['name']!r}",
                            detail="sql tools run as pgagent_sandbox, which sees only what it is granted.",
                            hint=f"GRANT USAGE ON SCHEMA {row['name']} TO pgagent_sandbox; and SELECT on the "
                                 "tables the tool may read.")


def sandbox(db: Db, query: str, args: list[str | None], search_path: str, max_rows: int,
            timeout_ms: int) -> dict[str, Any]:
    """Run one read query as pgagent_sandbox (pgagent._sandbox_query, SECURITY DEFINER owned by
    that role: the sandbox's privileges only, no SET ROLE back; docs/security.md), with $1..$n
    from ``args`` (texts), in a subtransaction that is always rolled back and cancelled after
    ``timeout_ms`` ms. Returns ``{"rows": up to max_rows + 1 rows, "total": rows the query
    returns, counted up to 100,001}``. Raises ToolFailure (the server's message, or "timed out")."""
    return guarded(db, timeout_ms, lambda: db.all(SANDBOX_SQL, ["text", "jsonb", "text", "int4"],
                                                  [query, args, search_path, max_rows])[0]["rows"], rollback=True)


def run(ctx: ToolContext, tool: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Rows of the query as ``{"rows": [...], "row_count": rows shown, "truncated": bool,
    "total_rows": rows the query returns (counted up to 100,000), "notes": [...]}`` (total_rows and
    notes unless config ``hints`` is false; see :func:`result_notes`), and ``"corrected": [{"error",
    "query"}]`` when config ``autofix`` ran a fixed query (each run has the tool's timeout_ms).
    Raises ToolFailure (with a HINT for common mistakes)."""
    config = tool.get("config") or {}
    max_rows = int(config.get("max_rows", DEFAULT_MAX_ROWS))
    query = config.get("query")
    params: list[Any] = []
    if query is None:
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolFailure("argument 'query' (an SQL SELECT) is required")
    else:
        params = [args.get(name) for name in config.get("args", [])]
    query = query.strip().rstrip(";").strip()
    if ";" in query.replace("';'", ""):
        raise ToolFailure("only one SQL statement is allowed")
    if len(params) > 20:
        raise ToolFailure("at most 20 query arguments are supported")
    texts = [None if p is None else (p if isinstance(p, str) else str(p)) for p in params]
    search_path = str(config.get("search_path", "public"))

    hints = config.get("hints", True)
    autofix = hints and config.get("autofix", True) and config.get("query") is None
    tables = _lazy(lambda: _tables(ctx.db, search_path))
    ran, corrections = query, []
    while True:
        try:
            res = sandbox(ctx.db, ran, texts, search_path, max_rows, int(tool["timeout_ms"]))
            break
        except ToolFailure as e:
            try:
                hint = error_hint(str(e), ran, tables) if hints else None
            except Exception as he:   # noqa: BLE001 - a hint is optional; a statement timeout is not
                if getattr(he, "sqlstate", None) == "57014":
                    raise
                hint = None
            if autofix and hint is not None and hint.fix and hint.certain and len(corrections) < MAX_FIXES:
                corrections.append((str(e), hint.fix))
                ran = hint.fix
                continue
            if hint is None:
                raise
            text = hint.text + (f" Try: {hint.fix}" if hint.fix else "")
            raise ToolFailure(f"{e} HINT: {text[:1].upper()}{text[1:]}") from None
    rows, total = res["rows"], int(res["total"])
    looked_up = None   # value_notes of the query that ran, when it matched nothing
    if config.get("query") is None and hints and (total == 0 or nothing_matched(rows, total)):
        looked_up = value_notes(ctx.db, ran, search_path, int(tool["timeout_ms"]), tables)
    if autofix and looked_up and len(corrections) < MAX_FIXES:
        fixes = [f for _, f in looked_up if f]
        if len(fixes) == 1:
            try:
                fixed = sandbox(ctx.db, fixes[0], texts, search_path, max_rows, int(tool["timeout_ms"]))
            except ToolFailure:
                fixed = None
            if fixed is not None and int(fixed["total"]) > 0 and not nothing_matched(fixed["rows"], int(fixed["total"])):
                corrections.append(("matched no row: a text value differs only in case", fixes[0]))
                ran, res, looked_up = fixes[0], fixed, None
                rows, total = res["rows"], int(res["total"])
    if autofix and len(rows) == 1 and total == 1 and len(corrections) < MAX_FIXES and _whole(rows[0]) \
            and (fix := _percent_fix(ran)):
        try:
            fixed = sandbox(ctx.db, fix, texts, search_path, max_rows, int(tool["timeout_ms"]))
            corrections.append(("divided integers, which drops the fraction", fix))
            ran, res = fix, fixed
            rows, total = res["rows"], int(res["total"])
        except ToolFailure:
            pass
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    out: dict[str, Any] = {"rows": rows, "row_count": len(rows), "truncated": truncated}
    if hints:
        out["total_rows"] = total if total <= COUNT_CAP else f"more than {COUNT_CAP}"
        notes = [f"Your query {why if why.startswith(('matched ', 'divided ')) else 'failed: ' + why}; corrected, it ran as: "
                 f"{fix}. These rows are the corrected query's." for why, fix in corrections[-1:]]
        notes += result_notes(ran, rows, truncated, total)
        notes += [n for n, _ in looked_up or []]
        if notes:
            out["notes"] = notes   # the model is shown them first (loop.result_text)
        if corrections:
            out["corrected"] = [{"error": why, "query": fix} for why, fix in corrections]
    return out


MAX_FIXES = 3   # corrections of one call (config autofix): e.g. a year, then a value's case


def _lazy(fn: Callable[[], Tables]) -> Callable[[], Tables]:
    """``fn`` called at most once (the catalog is read only for an error or an empty result)."""
    memo: list[Tables] = []

    def get() -> Tables:
        if not memo:
            memo.append(fn())
        return memo[0]
    return get


COUNT_CAP = 100000
_TEMPORAL = r"(date|timestamp(?: with(?:out)? time zone)?|time(?: with(?:out)? time zone)?|interval)"
_NUMBER = r"(integer|bigint|smallint|numeric|double precision|real)"
_CMP_TEMPORAL_NUMBER = re.compile(rf"operator does not exist: (?:{_TEMPORAL} \S+ {_NUMBER}|{_NUMBER} \S+ {_TEMPORAL})")
_CMP_TEXT_NUMBER = re.compile(rf"operator does not exist: (?:(text|character varying) \S+ {_NUMBER}|{_NUMBER} \S+ (text|character varying))")
_GROUP_BY = re.compile(r'column "([^"]+)" must appear in the GROUP BY clause')
_NO_COLUMN = re.compile(r'column (?:"([^"]+)"|[\w$]+\.([\w$]+)|([\w$]+)) does not exist')
_NO_TABLE = re.compile(r'relation "([^"]+)" does not exist')
_FROM = re.compile(r'\b(?:from|join)\s+((?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?)', re.I)


Tables = list[tuple[str, list[str], list[str]]]


def _tables(db: Db, search_path: str) -> Tables:
    """(table name, column names, column types) of the tables of ``search_path`` that
    pgagent_sandbox may read (at most 30), for :func:`error_hint` and :func:`value_notes`."""
    path = [n.strip().strip('"') for n in search_path.split(",") if n.strip()]
    return [(t["name"], [c[0] for c in t["columns"]], [c[1] for c in t["columns"]])
            for t in db.all(CATALOG_SQL, ["text[]"], [path])[:MAX_TABLES]]


def _named(query: str) -> dict[str, str]:
    """The tables a query names after FROM or JOIN: lower-case name -> the name as written."""
    return {n.split(".")[-1].strip('"').lower(): n for n in _FROM.findall(query)}


def _year_fix(query: str, columns: list[str]) -> str:
    """``query`` with each comparison of one of the date/timestamp ``columns`` with a four-digit
    number (``year = 2017``, ``d BETWEEN 2001 AND 2003``) made a comparison of its year."""
    for col in columns:
        ref = rf'((?:[\w$]+\.)?(?:"{re.escape(col)}"|\b{re.escape(col)}\b))'
        query = re.sub(ref + r"\s*(=|<>|!=|<=|>=|<|>)\s*(\d{4})\b", r"extract(year FROM \1) \2 \3", query)
        query = re.sub(ref + r"\s+(between\s+\d{4}\s+and\s+\d{4})\b", r"extract(year FROM \1) \2", query,
                       flags=re.I)
    return query


def nothing_matched(rows: list[dict[str, Any]], total: int) -> bool:
    """A result that looks like aggregates over no rows: one row whose values are all NULL or 0
    (``sum`` of nothing is NULL, ``count`` 0)."""
    return total == 1 and bool(rows) and all(v is None or v == 0 for v in rows[0].values())


_TEXT_EQ = re.compile(r"""((?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?)\s*(?:=|i?like)\s*'((?:[^']|'')*)'""", re.I)


def value_notes(db: Db, query: str, search_path: str, timeout_ms: int,
                tables: Callable[[], Tables] | None = None) -> list[tuple[str, str | None]]:
    """For a query that matched no rows (or whose one row is all NULL or 0,
    :func:`nothing_matched`): the values a text comparison of it (``col = 'x'``,
    ``col LIKE 'x'``; at most 3) may have meant, from the tables the query names, matched
    case-insensitively or as a substring (``source = 'renewables'`` -> the table has
    'Renewables'). Each lookup runs as pgagent_sandbox, as the query did. Returns notes (may be
    empty) as (note, the query with the value fixed when exactly one value differs only in case,
    else None); a failed lookup is left out. ``tables``: the readable tables, when already read."""
    pairs = _TEXT_EQ.findall(query)[:3]
    if not pairs:
        return []
    named = _named(query)
    try:
        known = [(t, cols) for t, cols, _ in (tables or (lambda: _tables(db, search_path)))() if t.lower() in named]
    except Exception:   # noqa: BLE001 - a hint is optional
        return []
    notes = []
    for ref, literal in pairs:
        col, lit = ref.split(".")[-1].strip('"'), literal.replace("''", "'")
        for table, cols in known:
            if col not in cols:
                continue
            q = (f"SELECT DISTINCT {_ident(col)}::text AS v FROM {_ident(table)} WHERE pg_catalog.lower("
                 f"{_ident(col)}::text) = pg_catalog.lower($1) OR pg_catalog.strpos(pg_catalog.lower({_ident(col)}::text), "
                 "pg_catalog.lower($1)) > 0 ORDER BY 1 LIMIT 5")
            try:
                vals = [r["v"] for r in sandbox(db, q, [lit], search_path, 5, timeout_ms)["rows"]]
            except ToolFailure:
                continue
            vals = [v for v in vals if v != lit]
            if vals:
                shown = ", ".join("'" + str(v).replace("'", "''") + "'" for v in vals)
                same = [v for v in vals if str(v).lower() == lit.lower()]
                fix = (query.replace(f"'{literal}'", "'" + str(same[0]).replace("'", "''") + "'")
                       if len(same) == 1 else None)
                notes.append((f"{col} = '{literal}' matches no row of {table}, but {col} has {shown}."
                              + (f" Try: {fix}" if fix else ""), fix))
    return notes


class Hint(NamedTuple):
    """What :func:`error_hint` found: ``text`` (a sentence or two), ``fix`` (the query fixed, or
    None) and ``certain`` (the fix is what the query can only have meant: config ``autofix``
    runs it)."""
    text: str
    fix: str | None = None
    certain: bool = False


def error_hint(message: str, query: str = "", tables: Callable[[], Tables] | None = None) -> Hint | None:
    """A hint for the SQL mistakes small models make most, added to the error a failed query
    returns (config ``hints``): a date or timestamp compared with a number (a year) or with a
    'YYYY-MM' month, text compared with a number, a column selected beside an aggregate without
    GROUP BY, a FROM inside a function call's parentheses or two FROMs in one SELECT (a syntax
    error at FROM), and, with ``tables`` (called only then: the readable tables and their
    columns), an unknown column (the tables that have it, the columns of the tables the query
    names) or an unknown table (the tables there are). Where the fix is mechanical the Hint
    carries the query fixed (shown as "Try: ..."); ``certain`` marks the fixes that change only
    the form of what was asked (a year or month of a date column, ``SELECT a, max(b) FROM t``
    as the row with the largest b, a call closed before FROM, two FROMs as two subqueries), not a
    fix that picks another table. None when the message is none of these. Shapes: PostgreSQL's
    message text in."""
    if tables is not None and (m := _NO_COLUMN.search(message)):
        col = next(g for g in m.groups() if g)
        known = tables()
        named = _named(query)
        having = [t for t, cols, _ in known if col in cols]
        elsewhere = having and named and not any(t.lower() in named for t in having)
        mine = [(t, cols, types) for t, cols, types in known if t.lower() in named]
        move = elsewhere and len(having) == 1
        parts = [f"column {col} is in table {having[0]}, not in {' or '.join(sorted(named))}: write FROM {having[0]}."
                 if move else f"{' and '.join(t for t, _, _ in mine)} {'has' if len(mine) == 1 else 'have'} no column {col}."
                 if mine else f"tables with a column {col}: {', '.join(having)}." if having else f"no table has a column {col}."]
        parts += [f"The columns of {t} are " + ", ".join(f"{c} ({typ})" for c, typ in list(zip(cols, types))[:MAX_COLUMNS])
                  + "." for t, cols, types in mine]
        fixed, certain = query, False
        if move and len(named) == 1:
            written = next(iter(named.values()))
            fixed = re.sub(rf"\b(from|join)\s+{re.escape(written)}(?![\w$])", lambda m: f"{m.group(1)} {having[0]}",
                           query, flags=re.I)
        elif col.lower() == "year" and len(mine) == 1:
            # a year asked of a table that has a date: the year of its one date or timestamp column
            dates = [c for c, typ in zip(mine[0][1], mine[0][2]) if typ.startswith(("date", "timestamp"))]
            if len(dates) == 1:
                fixed = re.sub(r"(?<![\w$.(])year\b(?!\s*\()", f"extract(year FROM {dates[0]})", query, flags=re.I)
                certain = True
        return Hint(" ".join(parts), fixed if fixed != query else None, certain)
    if tables is not None and (m := _NO_TABLE.search(message)):
        names = [t for t, _, _ in tables()]
        return Hint(f"the tables you can read are {', '.join(names)}." if names else "you can read no tables.")
    bad_month = _BAD_MONTH.search(message)
    if bad_month or _CMP_TEMPORAL_NUMBER.search(message):
        text = ("a date or timestamp column cannot be compared with a number or a month. To filter on a year write "
                "extract(year FROM <column>) = 2017; on a month date_trunc('month', <column>) = DATE '2017-03-01'; "
                "to compare with a day write <column> = DATE '2017-01-01'.")
        fixed = None
        if tables is not None:
            named = _named(query)
            temporal = [c for t, cols, types in tables() if t.lower() in named
                        for c, typ in zip(cols, types) if typ.startswith(("date", "timestamp"))]
            fixed = _month_fix(query, temporal) if bad_month else _year_fix(query, temporal)
        return Hint(text, fixed if fixed and fixed != query else None, True)
    if _CMP_TEXT_NUMBER.search(message):
        return Hint("a text column cannot be compared with a number: quote the value ('42') or cast the column.")
    if _SYNTAX_AT_FROM.search(message):
        return _from_hint(query)
    m = _GROUP_BY.search(message)
    if m:
        return Hint(f"to get the row with the largest or smallest value, do not mix {m.group(1)} with an aggregate: "
                    "write SELECT ... ORDER BY <column> DESC NULLS LAST LIMIT 1; else add the column to GROUP BY.",
                    _extreme_fix(query), True)
    return None


_BAD_MONTH = re.compile(r'invalid input syntax for type (?:date|timestamp[^:]*): "\d{4}-\d{1,2}"')


def _month_fix(query: str, columns: list[str]) -> str:
    """``query`` with each comparison of one of the date/timestamp ``columns`` with a month
    literal (``month = '2006-01'``) made a comparison of its month
    (``date_trunc('month', month) = DATE '2006-01-01'``)."""
    for col in columns:
        ref = rf'((?:[\w$]+\.)?(?:"{re.escape(col)}"|\b{re.escape(col)}\b))'
        query = re.sub(ref + r"\s*(=|<>|!=)\s*'(\d{4})-(\d{1,2})'(?:::date)?",
                       lambda m: f"date_trunc('month', {m.group(1)}) {m.group(2)} DATE '{m.group(3)}-{int(m.group(4)):02d}-01'",
                       query)
    return query


_SYNTAX_AT_FROM = re.compile(r'syntax error at or near "from"', re.I)
_FROM_KW = re.compile(r"\bfrom\b", re.I)
_OPERATOR = re.compile(r"\s([-+*/])\s")
_INSIDE_FROM_OK = re.compile(r"\b(extract|substring|trim|overlay|position)\s*\($", re.I)


def _depths(query: str) -> list[int]:
    """The parenthesis depth at each character of ``query`` (quoted strings count as depth -1)."""
    out, depth, quoted = [], 0, False
    for ch in query:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        out.append(-1 if quoted else depth)
    return out


def _from_hint(query: str) -> Hint | None:
    """A hint for a syntax error at FROM: a FROM inside a function call's parentheses
    (``round(100.0 * a / b FROM t, 1)``: the call must close first) or two FROMs in one SELECT
    (two values combined: each must be a subquery). With the query fixed where the shape is
    clear (certain: the query fixed asks the same)."""
    q = query.strip()
    depth = _depths(q)
    froms = [m.start() for m in _FROM_KW.finditer(q) if depth[m.start()] >= 0]
    for pos in froms:
        if depth[pos] < 1:
            continue
        # the call whose parenthesis holds this FROM
        opened = max(i for i in range(pos) if q[i] == "(" and depth[i] == depth[pos])
        if _INSIDE_FROM_OK.search(q[:opened + 1]) or re.match(r"\(\s*select\b", q[opened:], re.I):
            continue
        closes = next((i for i in range(pos, len(q)) if q[i] == ")" and depth[i] == depth[pos] - 1), None)
        hint = ("a FROM is inside the parentheses of a function call: close the call before FROM, as in "
                "SELECT round(avg(x), 1) FROM t WHERE ...")
        if closes is not None and depth[pos] == 1 and not q[closes + 1:].strip():
            inner = q[pos:closes]
            cut = [i for i in range(len(inner)) if inner[i] == "," and depth[pos + i] == depth[pos]]
            rest, args = (inner[:cut[-1]], inner[cut[-1]:]) if cut else (inner, "")
            return Hint(hint, f"{q[:pos].rstrip()}{args}) {rest.strip()}", True)
        return Hint(hint)
    top = [pos for pos in froms if depth[pos] == 0]
    if len(top) >= 2:
        hint = ("a SELECT has one FROM. To compute with values from two queries, write each as a subquery in "
                "parentheses: SELECT (SELECT ... FROM ... WHERE ...) - (SELECT ... FROM ... WHERE ...).")
        ops = [m for m in _OPERATOR.finditer(q, top[0], top[1]) if depth[m.start()] == 0]
        # the operator that joins the two queries: the first whose right side is not a number
        # (in "WHERE year = 2010 - sum(x) FROM t ..." it is the "-" before sum(x))
        ops = [m for m in ops if not re.match(r"[\d.]", q[m.end():])]
        if ops and re.match(r"select\s", q, re.I):
            op = ops[0]
            left, right = q[:op.start()].strip(), q[op.end():].strip()
            if not re.match(r"select\s", right, re.I):
                right = "SELECT " + right
            return Hint(hint, f"SELECT ({left}) {op.group(1)} ({right})", True)
        return Hint(hint)
    return None


_EXTREME = re.compile(
    r"^select\s+(?:(?P<c1>[\w$.\"]+)\s*,\s*(?P<f1>max|min)\s*\(\s*(?P<v1>[\w$.\"]+)\s*\)(?:\s+as\s+[\w$\"]+)?"
    r"|(?P<f2>max|min)\s*\(\s*(?P<v2>[\w$.\"]+)\s*\)(?:\s+as\s+[\w$\"]+)?\s*,\s*(?P<c2>[\w$.\"]+))"
    r"\s+(?P<rest>from\s.+)$", re.I | re.S)
_CLAUSES = re.compile(r"\b(group\s+by|having|union|intersect|except|window)\b", re.I)
_ORDER_LIMIT = re.compile(r"\s+(order\s+by|limit|offset)\b.*$", re.I | re.S)


def _extreme_fix(query: str) -> str | None:
    """``SELECT a, max(b) FROM t [WHERE ...]`` (no GROUP BY: an error) as the query that was
    meant, the row with the largest ``b``: ``SELECT a, b FROM t [WHERE ...] ORDER BY b DESC
    NULLS LAST LIMIT 1`` (min: ASC; an ORDER BY or LIMIT of its own is replaced). None for any
    other shape (GROUP BY, HAVING, set operations, more columns)."""
    m = _EXTREME.match(query.strip())
    if not m or _CLAUSES.search(m.group("rest")):
        return None
    col, fn, val = (m.group("c1"), m.group("f1"), m.group("v1")) if m.group("c1") else \
        (m.group("c2"), m.group("f2"), m.group("v2"))
    order = "DESC NULLS LAST" if fn.lower() == "max" else "ASC NULLS LAST"
    rest = _ORDER_LIMIT.sub("", m.group("rest").strip())   # its own ORDER BY / LIMIT are replaced
    return f"SELECT {col}, {val} {rest} ORDER BY {val} {order} LIMIT 1"
_DESC = re.compile(r"\bdesc\b", re.I)
_GROUPED = re.compile(r"\bgroup\s+by\b", re.I)
_ORDERED = re.compile(r"\border\s+by\b", re.I)
_NULLS = re.compile(r"\bnulls\s+(first|last)\b", re.I)
_DIVIDES = re.compile(r"[\w)\s]/[\s\w(]")
_STRINGS = re.compile(r"'(?:[^']|'')*'")


def _whole(row: dict[str, Any]) -> bool:
    """A row with a whole-number (JSON integer) value."""
    return any(isinstance(v, int) and not isinstance(v, bool) for v in row.values())


_PERCENT = re.compile(r"(\*\s*)100\b(?!\.)|\b100(?!\.)(\s*\*)")


def _percent_fix(query: str) -> str | None:
    """A percentage computed with integers (``count(*) * 100 / count(*)``, a whole number: the
    fraction dropped) with the ``100`` of its select list as ``100.0``; None when the select list
    has no division or no integer 100 beside a ``*``."""
    span = _select_span(query)
    sel = query[span[0]:span[1]] if span else ""
    if not span or not _DIVIDES.search(_STRINGS.sub("''", sel)) or not _PERCENT.search(sel):
        return None
    fixed = _PERCENT.sub(lambda m: f"{m.group(1)}100.0" if m.group(1) is not None else f"100.0{m.group(2)}", sel)
    return query[:span[0]] + fixed + query[span[1]:]


def _select_span(query: str) -> tuple[int, int] | None:
    """Where a query's select list is: from after its first SELECT to its first FROM outside
    parentheses and string literals (or the end). None when the query does not start with SELECT."""
    q = _STRINGS.sub(lambda m: "'" + " " * (len(m.group(0)) - 2) + "'", query)   # same length
    depth = _depths(q)
    start = re.match(r"\s*select\b", q, re.I)
    if not start:
        return None
    end = next((m.start() for m in _FROM_KW.finditer(q) if depth[m.start()] == 0), len(q))
    return start.end(), end


def select_list(query: str) -> str:
    """The text of a query's select list (:func:`_select_span`), or "" when there is none."""
    span = _select_span(query)
    return query[span[0]:span[1]] if span else ""


def result_notes(query: str, rows: list[dict[str, Any]], truncated: bool, total: int) -> list[str]:
    """Notes that keep a model from misreading a result (config ``hints``, default on): the rows
    shown are not all of them (answer counts with COUNT(*), not by counting rows); no rows
    matched; grouped rows without ORDER BY are in no particular order; a one-row result of a
    division that is a whole number (integer division drops the fraction); a DESC sort put NULLs
    first (PostgreSQL sorts NULL as larger than any value)."""
    notes = []
    if total == 0:
        notes.append("No rows matched. Before you answer that there is no such data, check the query's conditions "
                     "(text values are case-sensitive; compare a date column with a date or extract(year FROM ...)) "
                     "and run it again.")
    if truncated:
        shown = len(rows)
        n = total if total <= COUNT_CAP else f"more than {COUNT_CAP}"
        notes.append(f"The query returned {n} rows; only the first {shown} are shown: the answer to how many is "
                     f"{n}, not {shown}. To count, rank or sum use COUNT(*), aggregates or LIMIT in SQL.")
    if len(rows) > 1 and _GROUPED.search(query) and not _ORDERED.search(query):
        notes.append("These rows are in no particular order (the query has no ORDER BY): to find the largest or "
                     "smallest, ORDER BY the value (DESC NULLS LAST for the largest) and LIMIT 1.")
    if len(rows) == 1 and _DIVIDES.search(_STRINGS.sub("''", select_list(query))) \
            and any(isinstance(v, int) and not isinstance(v, bool) for v in rows[0].values()):
        notes.append("The query divides with / and the result is a whole number: PostgreSQL's division of two "
                     "integers drops the fraction (7 / 2 = 3). If you need decimals, multiply by 100.0 or 1.0 "
                     "before dividing and run it again.")
    if rows and _DESC.search(query) and not _NULLS.search(query) and any(v is None for v in rows[0].values()):
        notes.append("The first row has NULL values: with ORDER BY ... DESC PostgreSQL sorts NULLs first. "
                     "Add NULLS LAST or WHERE <column> IS NOT NULL if you want the largest values.")
    return notes


# ---------------------------------------------------------------------------- schema for the model

CATALOG_SQL = """
SELECT n.nspname AS schema, c.relname AS name, c.reltuples::float8 AS reltuples,
       c.xmin::text || '/' || c.relfilenode::text AS version,
       pg_catalog.jsonb_agg(pg_catalog.jsonb_build_array(a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
                                                         t.typcategory, a.xmin::text) ORDER BY a.attnum) AS columns
  FROM pg_catalog.pg_namespace n
  JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
 WHERE n.nspname = ANY($1)
   AND pg_catalog.has_schema_privilege('pgagent_sandbox', n.oid, 'USAGE')
   AND pg_catalog.has_column_privilege('pgagent_sandbox', c.oid, a.attnum, 'SELECT')
 GROUP BY c.oid, n.nspname, c.relname, c.reltuples, c.xmin::text, c.relfilenode
 ORDER BY pg_catalog.array_position($1, n.nspname::text), c.relname
 LIMIT 31"""

MAX_TABLES = 30
MAX_COLUMNS = 40
STATS_MAX_ROWS = 1_000_000   # larger tables are described by their columns only
STATS_TTL_S = 600.0          # NULL counts, ranges and samples are refreshed at least this often
SAMPLES = 8                  # a text column with at most this many distinct values lists them all


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _stats_query(schema: str, table: str, columns: list[list[str]]) -> str:
    """One query (run as the sandbox) giving, per column, whether it has NULLs and its first
    distinct values (up to 9, in the table's order; text, enums and booleans in sorted order)."""
    rel = f"{_ident(schema)}.{_ident(table)}"
    parts = []
    for i, (col, _type, cat, _x) in enumerate(columns):
        c = _ident(col)
        text = cat in ("S", "E", "B")
        order = "v" if text else "pg_catalog.min(r)"
        n = SAMPLES + 1 if text else 3
        # the first distinct values in the table's order (text: sorted), from at most 1,000 rows
        parts.append(f"'c{i}', pg_catalog.jsonb_build_object("
                     f"'nulls', EXISTS (SELECT FROM {rel} WHERE {c} IS NULL), "
                     f"'values', (SELECT pg_catalog.jsonb_agg(v ORDER BY k) FROM (SELECT v, {order} AS k FROM "
                     f"(SELECT x.{c}::text AS v, pg_catalog.row_number() OVER () AS r FROM "
                     f"(SELECT {c} FROM {rel} WHERE {c} IS NOT NULL LIMIT 1000) AS x) AS y "
                     f"GROUP BY v ORDER BY {order} LIMIT {n}) AS s))")
    return f"SELECT pg_catalog.jsonb_build_object({', '.join(parts)}) AS stats"


def _column_text(col: list[str], st: dict[str, Any] | None) -> str:
    name, typ, cat = col[0], col[1], col[2]
    text = f"{name} {typ}"
    if not st:
        return text
    extra = []
    vals = [str(v)[:40] for v in st.get("values") or []]
    if vals and cat in ("S", "E") and len(vals) <= SAMPLES:
        extra.append("one of " + ", ".join("'" + v.replace("'", "''") + "'" for v in vals))
    elif vals and cat in ("S", "E"):
        extra.append("e.g. " + ", ".join("'" + v.replace("'", "''") + "'" for v in vals[:3]))
    elif vals:
        extra.append("e.g. " + ", ".join(vals[:3]))
    if st.get("nulls"):
        extra.append("some NULL")
    return text + (f" ({'; '.join(extra)})" if extra else "")


def describe(db: Db, gd: dict, tool: dict[str, Any]) -> str | None:
    """What a model-written ``sql`` tool adds to its description (text, several lines): the
    tables it can read (config ``schema``, default off: :func:`schema_text`) and few-shot query
    examples (config ``examples``, default off: :data:`EXAMPLES`). None for a tool that writes
    its own query or has neither on. Raises what :func:`schema_text` raises (catalog errors)."""
    config = tool.get("config") or {}
    if config.get("query") is not None:
        return None
    parts = [text for text in (schema_text(db, gd, tool) if config.get("schema", False) else None,
                               EXAMPLES if config.get("examples", False) else None) if text]
    return "\n".join(parts) or None


# Few-shot examples for a model that writes the query (config ``examples``): SQL idioms on a
# made-up table, none of them about any real table. Each answers a kind of question small
# models get wrong in one query: a year of a date column, the largest with NULLs last, a
# difference of two values (one statement), a percentage (no integer division), a filter before
# ranking, and "the largest fall" (the most negative change).
EXAMPLES = """Examples of questions and the one query that answers each, on a table sales(region text, amount integer, sold date, change integer):
- Total sales in 2021? SELECT sum(amount) FROM sales WHERE extract(year FROM sold) = 2021
- Which region sold the most? SELECT region FROM sales GROUP BY region ORDER BY sum(amount) DESC NULLS LAST LIMIT 1
- In which year did region 'North' sell the most? SELECT extract(year FROM sold) AS year FROM sales WHERE region = 'North' GROUP BY 1 ORDER BY sum(amount) DESC NULLS LAST LIMIT 1
- How much more was sold in 2021 than in 2020? SELECT (SELECT sum(amount) FROM sales WHERE extract(year FROM sold) = 2021) - (SELECT sum(amount) FROM sales WHERE extract(year FROM sold) = 2020) AS difference
- What percent of sales in 2021 were over 100? SELECT round(100.0 * count(*) FILTER (WHERE amount > 100) / count(*), 1) AS percent FROM sales WHERE extract(year FROM sold) = 2021
- Which month had the largest fall? SELECT sold FROM sales ORDER BY change ASC NULLS LAST LIMIT 1 (a fall is a negative change)"""


def schema_text(db: Db, gd: dict, tool: dict[str, Any]) -> str:
    """The tables a model-written ``sql`` tool can read, as text for its description (config
    ``schema``, default off): each
    table of the tool's search_path that pgagent_sandbox may SELECT (at most 30, 40 columns each)
    with, per column, the type, sample values (text with at most 8 distinct values: all of them,
    the values a filter must use; else 3 examples) and whether it has NULLs. No row counts,
    minima or maxima: they would answer questions the model must look up (an answer read from a
    summary is a guess once the data changes). The samples come from queries run as
    pgagent_sandbox over at most 1,000 rows per column (tables over 1,000,000 estimated rows:
    types only), cached in the backend per table version (a DDL change invalidates them) for at
    most 10 minutes. A failed sample query leaves that table's types only. Returns one line per table."""
    config = tool.get("config") or {}
    path = [n.strip().strip('"') for n in str(config.get("search_path", "public")).split(",") if n.strip()]
    tables = db.all(CATALOG_SQL, ["text[]"], [path])
    cache = gd.setdefault("pgagent_schema_stats", {})
    now = time.monotonic()
    lines = []
    for t in tables[:MAX_TABLES]:
        cols = t["columns"][:MAX_COLUMNS]
        key = (t["schema"], t["name"], t["version"], tuple(c[3] for c in cols))
        hit = cache.get(key)
        if hit is None or now - hit[0] > STATS_TTL_S:
            stats = None
            if t["reltuples"] <= STATS_MAX_ROWS:
                q = _stats_query(t["schema"], t["name"], cols)
                try:
                    stats = sandbox(db, q, [], str(config.get("search_path", "public")), 1,
                                    int(tool["timeout_ms"]))["rows"][0]["stats"]
                except (ToolFailure, IndexError, KeyError):
                    stats = None
            if len(cache) > 500:
                cache.clear()
            hit = cache[key] = (now, stats)
        stats = hit[1] or {}
        name = t["name"] if t["schema"] == path[0] else f"{t['schema']}.{t['name']}"
        cols_text = ", ".join(_column_text(c, stats.get(f"c{i}")) for i, c in enumerate(cols))
        more = f", ... {len(t['columns']) - len(cols)} more columns" if len(t["columns"]) > len(cols) else ""
        lines.append(f"Table {name}: {cols_text}{more}.")
    if not lines:
        return "No table can be read (grant SELECT to pgagent_sandbox)."
    if len(tables) > MAX_TABLES:
        lines.append(f"(More tables: only the first {MAX_TABLES} are listed.)")
    return "\n".join(lines)

