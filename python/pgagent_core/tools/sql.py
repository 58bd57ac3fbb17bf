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
from typing import Any, Callable

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
    notes unless config ``hints`` is false; see :func:`result_notes`). Raises ToolFailure."""
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
    try:
        res = sandbox(ctx.db, query, texts, search_path, max_rows, int(tool["timeout_ms"]))
    except ToolFailure as e:
        hint = error_hint(str(e), query, lambda: _tables(ctx.db, search_path)) if hints else None
        if hint:
            raise ToolFailure(f"{e} HINT: {hint[:1].upper()}{hint[1:]}") from None
        raise
    rows, total = res["rows"], int(res["total"])
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    out: dict[str, Any] = {"rows": rows, "row_count": len(rows), "truncated": truncated}
    if hints:
        out["total_rows"] = total if total <= COUNT_CAP else f"more than {COUNT_CAP}"
        notes = result_notes(query, rows, truncated, total)
        if config.get("query") is None and (total == 0 or nothing_matched(rows, total)):
            notes += value_notes(ctx.db, query, search_path, int(tool["timeout_ms"]))
        if notes:
            out["notes"] = notes   # the model is shown them first (loop.result_text)
    return out


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


def value_notes(db: Db, query: str, search_path: str, timeout_ms: int) -> list[str]:
    """For a query that matched no rows (or whose one row is all NULL or 0,
    :func:`nothing_matched`): the values a text comparison of it (``col = 'x'``,
    ``col LIKE 'x'``; at most 3) may have meant, from the tables the query names, matched
    case-insensitively or as a substring (``source = 'renewables'`` -> the table has
    'Renewables'). Each lookup runs as pgagent_sandbox, as the query did. Returns notes (may be
    empty); a failed lookup is left out."""
    pairs = _TEXT_EQ.findall(query)[:3]
    if not pairs:
        return []
    named = _named(query)
    try:
        known = [(t, cols) for t, cols, _ in _tables(db, search_path) if t.lower() in named]
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
                fix = (" Try: " + query.replace(f"'{literal}'", "'" + str(same[0]).replace("'", "''") + "'")
                       if len(same) == 1 else "")
                notes.append(f"{col} = '{literal}' matches no row of {table}, but {col} has {shown}.{fix}")
    return notes


def error_hint(message: str, query: str = "", tables: Callable[[], Tables] | None = None) -> str | None:
    """A hint for the SQL mistakes small models make most, added to the error a failed query
    returns (config ``hints``): a date or timestamp compared with a number (a year), text
    compared with a number, a column selected beside an aggregate without GROUP BY, and, with
    ``tables`` (called only then: the readable tables and their columns), an unknown column (the
    tables that have it, the columns of the tables the query names) or an unknown table (the
    tables there are). Where the fix is mechanical (a column of another table when the query names
    one; a date column compared with a year) the hint ends with the query fixed ("Try: ...").
    None when the message is none of these. Shapes: PostgreSQL's message text in, a sentence or
    two out."""
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
        fixed = query
        if move and len(named) == 1:
            written = next(iter(named.values()))
            fixed = re.sub(rf"\b(from|join)\s+{re.escape(written)}(?![\w$])", lambda m: f"{m.group(1)} {having[0]}",
                           query, flags=re.I)
        elif col.lower() == "year" and len(mine) == 1:
            # a year asked of a table that has a date: the year of its one date or timestamp column
            dates = [c for c, typ in zip(mine[0][1], mine[0][2]) if typ.startswith(("date", "timestamp"))]
            if len(dates) == 1:
                fixed = re.sub(r"(?<![\w$.(])year\b(?!\s*\()", f"extract(year FROM {dates[0]})", query, flags=re.I)
        if fixed != query:
            parts.append(f"Try: {fixed}")
        return " ".join(parts)
    if tables is not None and (m := _NO_TABLE.search(message)):
        names = [t for t, _, _ in tables()]
        return (f"the tables you can read are {', '.join(names)}." if names else "you can read no tables.")
    if _CMP_TEMPORAL_NUMBER.search(message):
        hint = ("a date or timestamp column cannot be compared with a number. To filter on a year write "
                "extract(year FROM <column>) = 2017; to compare with a day write <column> = DATE '2017-01-01'.")
        if tables is not None:
            named = _named(query)
            temporal = [c for t, cols, types in tables() if t.lower() in named
                        for c, typ in zip(cols, types) if typ.startswith(("date", "timestamp"))]
            fixed = _year_fix(query, temporal)
            if fixed != query:
                hint += f" Try: {fixed}"
        return hint
    if _CMP_TEXT_NUMBER.search(message):
        return "a text column cannot be compared with a number: quote the value ('42') or cast the column."
    m = _GROUP_BY.search(message)
    if m:
        return (f"to get the row with the largest or smallest value, do not mix {m.group(1)} with an aggregate: "
                "write SELECT ... ORDER BY <column> DESC NULLS LAST LIMIT 1; else add the column to GROUP BY.")
    return None
_DESC = re.compile(r"\bdesc\b", re.I)
_GROUPED = re.compile(r"\bgroup\s+by\b", re.I)
_ORDERED = re.compile(r"\border\s+by\b", re.I)
_NULLS = re.compile(r"\bnulls\s+(first|last)\b", re.I)


def result_notes(query: str, rows: list[dict[str, Any]], truncated: bool, total: int) -> list[str]:
    """Notes that keep a model from misreading a result (config ``hints``, default on): the rows
    shown are not all of them (answer counts with COUNT(*), not by counting rows); no rows
    matched; grouped rows without ORDER BY are in no particular order; a DESC sort put NULLs first
    (PostgreSQL sorts NULL as larger than any value)."""
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
    """The tables a model-written ``sql`` tool can read, as text for its description (config
    ``schema``, default off; only for a tool whose query the model writes): each
    table of the tool's search_path that pgagent_sandbox may SELECT (at most 30, 40 columns each)
    with, per column, the type, sample values (text with at most 8 distinct values: all of them,
    the values a filter must use; else 3 examples) and whether it has NULLs. No row counts,
    minima or maxima: they would answer questions the model must look up (an answer read from a
    summary is a guess once the data changes). The samples come from queries run as
    pgagent_sandbox over at most 1,000 rows per column (tables over 1,000,000 estimated rows:
    types only), cached in the backend per table version (a DDL change invalidates them) for at
    most 10 minutes. A failed sample query leaves that table's types only. Returns None when the
    tool writes its own query or its schema is off."""
    config = tool.get("config") or {}
    if not config.get("schema", False) or config.get("query") is not None:
        return None
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

