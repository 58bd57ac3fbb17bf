"""``function`` tools: call a named SQL function with the validated arguments, as a chosen role.

config:
  ``function``  the function's name, optionally schema-qualified (``myschema.fn``); it must
                resolve to exactly one function.
  ``run_as``    the role the call runs as (default ``pgagent_sandbox``). The admin who registers
                the tool must be a member of it (or a superuser); it may not be a superuser or
                have BYPASSRLS, and it must be allowed to EXECUTE the function.
Arguments are passed by name (JSON values converted to the parameter types with
jsonb_to_record, so arrays, json and composite types work) and the result is returned with
to_jsonb. The call goes through ``pgagent._run_as_<role oid>``: a SECURITY DEFINER function
owned by the run_as role (created on first use, EXECUTE for nobody else), so the function runs
with that role's rights, never the extension owner's, and cannot SET ROLE back. It runs in a
subtransaction with the tool's deadline (a raising function becomes a readable tool failure),
and its writes commit atomically with the tool_result step.
"""

from __future__ import annotations

from typing import Any

from ..db import Db, one
from ..errors import Forbidden, InvalidArgument, NotFound
from . import ToolContext, ToolFailure
from ._spi import guarded

DEFAULT_RUN_AS = "pgagent_sandbox"
RUNNER_SQL = "SELECT pgagent._runner($1) AS fn"
SIGNATURE_SQL = """
SELECT p.oid::regproc::text AS name, p.oid::regprocedure::text AS signature, p.prokind,
       coalesce(p.proargnames[1:p.pronargs], '{}') AS argnames,
       coalesce(array(SELECT pg_catalog.format_type(t, NULL)
                      FROM unnest(p.proargtypes) WITH ORDINALITY AS a(t, i) ORDER BY i), '{}') AS argtypes
  FROM pg_catalog.pg_proc p WHERE p.oid = pg_catalog.to_regproc($1)"""


def check_config(config: dict[str, Any]) -> None:
    """Raises ValueError for a bad config."""
    if not isinstance(config.get("function"), str) or not config["function"]:
        raise ValueError("config.function (the SQL function to call) is required")
    if "run_as" in config and (not isinstance(config["run_as"], str) or not config["run_as"]):
        raise ValueError("config.run_as must be a role name")


def check_registration(db: Db, registrar: str, superuser: bool, config: dict[str, Any]) -> None:
    """At register_tool: the function exists (exactly one), the run_as role exists, the
    registering role may designate it (member of it, or superuser), it is neither a superuser
    nor BYPASSRLS, and it may EXECUTE the function. Raises NotFound (42704), Forbidden (42501),
    InvalidArgument (22023)."""
    fn, role = config["function"], config.get("run_as", DEFAULT_RUN_AS)
    try:
        sig = one(db, SIGNATURE_SQL, ["text"], [fn])
    except Exception as e:  # to_regproc raises for "ambiguous"? (it returns NULL), or a syntax error in the name
        raise InvalidArgument(f"config.function {fn!r} is not a function name: {e}") from None
    if sig is None:
        raise NotFound(f"function {fn!r} does not exist or is ambiguous (overloaded)",
                       hint="Create it first, give its schema (myschema.fn), or drop the other overloads.")
    if sig["prokind"] != "f":
        raise InvalidArgument(f"{fn!r} is not a plain function (prokind {sig['prokind']})")
    check_run_as(db, registrar, superuser, role, sig["signature"], "config.run_as")


def check_run_as(db: Db, registrar: str, superuser: bool, role: str, signature: str, what: str) -> None:
    """``role`` (named by ``what`` in messages) may run function ``signature`` on behalf of
    ``registrar``: it exists, is neither a superuser nor BYPASSRLS, ``registrar`` is a member of
    it (or a superuser, or the role is pgagent_sandbox), and it may EXECUTE the function. Used
    by function tools and policy hooks (pgagent.add_hook). Raises NotFound (42704), Forbidden
    (42501)."""
    r = one(db, """SELECT r.rolsuper, r.rolbypassrls,
                          pg_catalog.pg_has_role($2, r.oid, 'MEMBER') AS mine,
                          pg_catalog.has_function_privilege(r.oid, $3::regprocedure, 'EXECUTE') AS can_execute
                     FROM pg_catalog.pg_roles r WHERE r.rolname = $1""", ["name", "name", "text"],
            [role, registrar, signature])
    if r is None:
        raise NotFound(f'{what}: role "{role}" does not exist', hint="CREATE ROLE it first (NOLOGIN is enough).")
    if r["rolsuper"] or r["rolbypassrls"]:
        raise Forbidden(f'{what}: role "{role}" is a superuser or has BYPASSRLS',
                        hint="Tools and hooks run with the least rights they need: use a role made for them.")
    if not (superuser or r["mine"] or role == DEFAULT_RUN_AS):
        raise Forbidden(f'{what}: role "{registrar}" is not a member of "{role}" and may not lend its rights',
                        hint=f"GRANT {role} TO {registrar}, or use another role.")
    if not r["can_execute"]:
        raise Forbidden(f'{what}: role "{role}" may not execute {signature}',
                        hint=f"GRANT EXECUTE ON FUNCTION {signature} TO {role} (and what it uses).")


def _ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (embedded double quotes doubled, as quote_ident does)."""
    return '"' + name.replace('"', '""') + '"'


def _signature(ctx: ToolContext, fn: str) -> dict[str, Any]:
    key = ("pgagent_fn_sig", fn)
    sig = ctx.gd.get(key)
    if sig is None:
        sig = one(ctx.db, SIGNATURE_SQL, ["text"], [fn])
        if sig is None:
            raise ToolFailure(f"function {fn!r} does not exist or is ambiguous")
        ctx.gd[key] = sig
    return sig


#: The parameter through which a function tool receives the call's idempotency key.
IDEMPOTENCY_ARG = "idempotency_key"


def run(ctx: ToolContext, tool: dict[str, Any], args: dict[str, Any]) -> Any:
    """The function's result as JSON. Raises ToolFailure. A function with a parameter named
    ``idempotency_key`` gets ``ctx.idempotency_key`` there (whatever the model passed): the same
    on every run of one call, so the function can dedupe, e.g. with a unique constraint."""
    fn = tool["config"]["function"]
    role = tool["config"].get("run_as", DEFAULT_RUN_AS)
    sig = _signature(ctx, fn)
    if IDEMPOTENCY_ARG in sig["argnames"] and ctx.idempotency_key:
        args = {**args, IDEMPOTENCY_ARG: ctx.idempotency_key}
    names = [n for n in sig["argnames"] if n in args]
    unknown = set(args) - set(sig["argnames"])
    if unknown:
        raise ToolFailure(f"{fn} has no parameter(s) {sorted(unknown)}")
    coldefs = ", ".join(f"{_ident(n)} {t}" for n, t in zip(sig["argnames"], sig["argtypes"]) if n in names)
    call_args = ", ".join(f"{_ident(n)} => r.{_ident(n)}" for n in names)
    if names:
        call = (f"SELECT pg_catalog.to_jsonb({sig['name']}({call_args})) "
                f"FROM pg_catalog.jsonb_to_record($1::jsonb) AS r({coldefs})")
    else:
        call = f"SELECT pg_catalog.to_jsonb({sig['name']}())"
    try:
        runner = one(ctx.db, RUNNER_SQL, ["name"], [role])["fn"]
    except Exception as e:
        raise ToolFailure(f"cannot run as role {role!r}: {getattr(e, 'args', [e])[0]}") from None

    def body() -> Any:
        return ctx.db.all(f"SELECT {runner}($1, $2) AS result", ["text", "jsonb"], [call, args])[0]["result"]

    return guarded(ctx.db, int(tool["timeout_ms"]), body, rollback=False)


__all__ = ["DEFAULT_RUN_AS", "check_config", "check_run_as", "check_registration", "run", "Forbidden", "InvalidArgument", "NotFound"]
