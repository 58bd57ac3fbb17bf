"""The registry of SQL API functions and the helpers every API module shares.

An API module (``pl`` for the core API, ``ops`` for operator interventions, ``budget``,
``hooks``, ...) registers each function with :func:`api`; ``pl.dispatch`` (the body of
``pgagent._py``) looks it up in :data:`API`, checks the caller (:class:`Caller`) and runs it with
the extension owner's rights, so every query must name ``c.tenant_id`` explicitly. This module
imports nothing of pgagent but :mod:`db`, :mod:`errors` and :mod:`limits`, so API modules can
import it without importing each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from . import limits
from .db import Db, one
from .errors import InvalidArgument, NotFound

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


@dataclass
class Caller:
    """Who calls: ``role`` (SET ROLE's role, else session_user), ``session_user``, whether that
    role is a superuser, and the tenant it acts for (uuid text)."""

    role: str
    session_user: str
    superuser: bool
    tenant_id: str


#: name -> (group, reentrant, function): what pgagent._py may run.
API: dict[str, tuple[str, bool, Callable[..., Any]]] = {}


def api(group: str, *, reentrant: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an API function callable through ``pl.dispatch`` by members of
    ``pgagent_<group>`` (viewer < user < operator < admin); ``reentrant`` ones may also be
    called while a turn runs. The function is called as ``fn(db, gd, caller, **named_args)``."""
    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        API[fn.__name__] = (group, reentrant, fn)
        return fn
    return deco


def audit(db: Db, action: str, object_type: str, object_id: Any, payload: dict[str, Any] | None = None) -> None:
    """Append an event (actor: the calling role) to the tenant's hash-chained audit log
    (pgagent._audit). ``action`` matches ``^[a-z][a-z0-9_]*$``."""
    db.all("SELECT pgagent._audit($1, $2, $3, $4)", ["text", "text", "text", "jsonb"],
           [action, object_type, None if object_id is None else str(object_id), limits.clean_json(payload or {})])


def check(cond: bool, message: str, hint: str | None = None) -> None:
    """Raise InvalidArgument (22023) with ``message`` unless ``cond``."""
    if not cond:
        raise InvalidArgument(message, hint=hint)


def valid(fn: Callable[[], Any], what: str) -> Any:
    """Run a validator that raises ValueError; report it as InvalidArgument (22023) naming ``what``."""
    try:
        return fn()
    except ValueError as e:
        msg = str(e)
        raise InvalidArgument(msg if msg.startswith(what) else f"{what}: {msg}") from None


def obj(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a JSON object (NULL -> {}); InvalidArgument (22023) otherwise or when nested
    deeper than limits.MAX_DEPTH."""
    value = {} if value is None else value
    check(isinstance(value, dict), f"{what} must be a JSON object", f"Pass e.g. '{{}}'::jsonb for {what}.")
    valid(lambda: limits.check_depth(value, what=what), what)
    return value


def name(value: Any, what: str, pattern: re.Pattern[str] = NAME_RE) -> str:
    """``value`` if it is a string matching ``pattern``; InvalidArgument (22023) otherwise."""
    check(isinstance(value, str) and bool(pattern.match(value)), f"{what} {value!r} is not a valid name",
          f"A {what} matches {pattern.pattern}.")
    return value


def ident(value: Any, what: str) -> int:
    """``value`` as a positive bigint id; InvalidArgument (22023) for NULL or anything else."""
    check(isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2 ** 63,
          f"{what} must be a positive id, not {value!r}", f"Pass the {what}'s id (a bigint).")
    return value


def row_of(db: Db, c: Caller, table: str, idcol: str, value: Any, what: str) -> dict[str, Any]:
    """The caller's tenant's row of ``pgagent.<table>`` whose ``idcol`` is ``value``, as a dict
    (to_jsonb). Raises InvalidArgument (22023) for a bad id, NotFound (42704) when the tenant
    has no such row (another tenant's id looks the same as a missing one)."""
    ident(value, what)
    r = one(db, f"SELECT pg_catalog.to_jsonb(x) AS r FROM pgagent.{table} x "
                f"WHERE x.tenant_id = $1::uuid AND x.{idcol} = $2", ["text", "int8"], [c.tenant_id, value])
    if r is None:
        raise NotFound(f"{what} {value} does not exist (for this tenant)")
    return r["r"]
