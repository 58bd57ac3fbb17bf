"""``function`` tools: call a named SQL function with the validated arguments.

config: ``function``: the function's name, optionally schema-qualified (``myschema.fn``); it
must resolve to exactly one function. Arguments are passed by name (JSON values converted to
the parameter types with jsonb_to_record, so arrays, json and composite types work). The
result is returned with to_jsonb. The call runs in a subtransaction (a raising function
becomes a readable tool failure) and its writes commit with the turn.
"""

from __future__ import annotations

from typing import Any

from ..db import one
from . import ToolContext, ToolFailure
from ._spi import guarded


def check_config(config: dict[str, Any]) -> None:
    """Raises ValueError for a bad config."""
    if not isinstance(config.get("function"), str) or not config["function"]:
        raise ValueError("config.function (the SQL function to call) is required")


def _signature(ctx: ToolContext, fn: str) -> dict[str, Any]:
    key = ("pgagent_fn_sig", fn)
    sig = ctx.gd.get(key)
    if sig is None:
        sig = one(ctx.db, """
            SELECT p.oid::regproc::text AS name,
                   coalesce(p.proargnames[1:p.pronargs], '{}') AS argnames,
                   coalesce(array(SELECT pg_catalog.format_type(t, NULL)
                                  FROM unnest(p.proargtypes) WITH ORDINALITY AS a(t, i) ORDER BY i), '{}') AS argtypes
              FROM pg_catalog.pg_proc p WHERE p.oid = pg_catalog.to_regproc($1)""", ["text"], [fn])
        if sig is None:
            raise ToolFailure(f"function {fn!r} does not exist or is ambiguous")
        ctx.gd[key] = sig
    return sig


def run(ctx: ToolContext, tool: dict[str, Any], args: dict[str, Any]) -> Any:
    """The function's result as JSON. Raises ToolFailure."""
    fn = tool["config"]["function"]
    sig = _signature(ctx, fn)
    names = [n for n in sig["argnames"] if n in args]
    unknown = set(args) - set(sig["argnames"])
    if unknown:
        raise ToolFailure(f"{fn} has no parameter(s) {sorted(unknown)}")
    coldefs = ", ".join(f'"{n}" {t}' for n, t in zip(sig["argnames"], sig["argtypes"]) if n in names)
    call_args = ", ".join(f'"{n}" => r."{n}"' for n in names)
    if names:
        sql = (f"SELECT pg_catalog.to_jsonb({sig['name']}({call_args})) AS result "
               f"FROM pg_catalog.jsonb_to_record($1::jsonb) AS r({coldefs})")
        types, values = ["jsonb"], [args]
    else:
        sql, types, values = f"SELECT pg_catalog.to_jsonb({sig['name']}()) AS result", [], []

    def body() -> Any:
        return ctx.db.all(sql, types, values)[0]["result"]

    return guarded(ctx.db, int(tool["timeout_ms"]), body, rollback=False)
