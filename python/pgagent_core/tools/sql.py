"""``sql`` tools: a read-only query, with a timeout and a row cap, whose rows come back as JSON.

config:
  ``query``   a fixed SQL query using $1..$n; ``args`` names the arguments that fill them, in
              order. Without ``query`` the model supplies the SQL in an argument named
              ``query`` (an analyst tool).
  ``max_rows`` cap on returned rows (default 100); ``truncated: true`` tells the model more exist.
  ``search_path`` the schemas the query sees (default ``public``).
The statement runs as a subquery (so it must be one SELECT/VALUES/TABLE; data-modifying
statements and CTEs are refused by the parser) inside a subtransaction that is always rolled
back, so nothing it calls can leave writes behind, and is cancelled after the tool's timeout_ms.
It runs as the role ``pgagent_sandbox`` (through the SECURITY DEFINER function
pgagent._sandbox_query, owned by that role): it sees only what that role was granted, never
pgagent's own tables, and cannot switch roles.
"""

from __future__ import annotations

from typing import Any

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


def run(ctx: ToolContext, tool: dict[str, Any], args: dict[str, Any]) -> dict[str, Any]:
    """Rows of the query as {"rows": [...], "row_count": n, "truncated": bool}. Raises ToolFailure."""
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

    def body() -> Any:
        # pgagent._sandbox_query is SECURITY DEFINER owned by the role pgagent_sandbox: the query
        # runs with the sandbox's privileges only and cannot SET ROLE back (see docs/security.md).
        return ctx.db.all(SANDBOX_SQL, ["text", "jsonb", "text", "int4"],
                          [query, texts, search_path, max_rows])[0]["rows"]

    rows = guarded(ctx.db, int(tool["timeout_ms"]), body, rollback=True)
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    return {"rows": rows, "row_count": len(rows), "truncated": truncated}
