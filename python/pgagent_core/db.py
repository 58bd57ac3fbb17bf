"""Database access for the loop: a tiny protocol and its PL/Python implementation.

SQL uses PostgreSQL's ``$1, $2 ...`` placeholders with explicit parameter types, which is what
``plpy.prepare`` needs; the psycopg implementation used outside the server rewrites them.
"""

from __future__ import annotations

import json
from contextlib import AbstractContextManager
from typing import Any, Protocol, Sequence

JSON_OIDS = (114, 3802)  # json, jsonb


class Db(Protocol):
    """What the loop needs from a database connection."""

    def all(self, sql: str, types: Sequence[str] = (), args: Sequence[Any] = (), *,
            cache: bool = True) -> list[dict[str, Any]]:
        """Run ``sql`` and return every row as a dict; json/jsonb columns come back decoded.
        ``cache=False`` for one-off SQL (a model's query) that must not fill the plan cache."""

    def commit(self) -> None:
        """Commit the work so far (only in a procedure's non-atomic context)."""

    def subtransaction(self) -> AbstractContextManager[Any]:
        """A savepoint: rolled back if the ``with`` block raises."""

    @property
    def can_commit(self) -> bool:
        """True when :meth:`commit` is allowed (``CALL pgagent.run_turn``), False inside ``send_message``."""

    def notice(self, message: str) -> None:
        """Send ``message`` to the client now, as a NOTICE (streamed answer text)."""


def one(db: Db, sql: str, types: Sequence[str] = (), args: Sequence[Any] = ()) -> dict[str, Any] | None:
    """First row of ``db.all(...)`` or None."""
    rows = db.all(sql, types, args)
    return rows[0] if rows else None


def encode(value: Any, type_name: str = "jsonb") -> Any:
    """Python value -> parameter: dicts and lists become JSON text for ``json``/``jsonb``
    parameters (and for untyped ones); lists stay lists for array types such as ``text[]``."""
    if isinstance(value, dict) or (isinstance(value, list) and not type_name.endswith("[]")):
        return json.dumps(value, default=str)
    return value


class PlpyDb:
    """:class:`Db` over PL/Python's ``plpy``; prepared plans are cached in ``GD`` for the session.

    ``atomic`` is True inside a function (send_message: everything in the caller's transaction)
    and False inside ``CALL pgagent.run_turn`` where :meth:`commit` calls ``plpy.commit()``.
    """

    def __init__(self, plpy: Any, gd: dict, *, atomic: bool) -> None:
        self._plpy = plpy
        self._plans: dict[tuple[str, tuple[str, ...]], Any] = gd.setdefault("pgagent_plans", {})
        self._atomic = atomic

    @property
    def can_commit(self) -> bool:
        """True inside ``CALL pgagent.run_turn`` (a procedure may commit), False in a function."""
        return not self._atomic

    def all(self, sql: str, types: Sequence[str] = (), args: Sequence[Any] = (), *,
            cache: bool = True) -> list[dict[str, Any]]:
        """See :meth:`Db.all`; raises plpy.SPIError (with the server's SQLSTATE) on SQL errors."""
        key = (sql, tuple(types))
        plan = self._plans.get(key) if cache else None
        if plan is None:
            plan = self._plpy.prepare(sql, list(types))
            if cache:
                self._plans[key] = plan
        res = plan.execute([encode(a, t) for a, t in zip(args, types)]) if types else plan.execute()
        if res.nrows() == 0 and not len(res):
            return []
        try:
            names, oids = res.colnames(), res.coltypes()
        except Exception:  # utility statements have no result columns
            return []
        decode = [n for n, o in zip(names, oids) if o in JSON_OIDS]
        rows = [dict(r) for r in res]
        for r in rows:
            for n in decode:
                if r[n] is not None:
                    r[n] = json.loads(r[n])
        return rows

    def commit(self) -> None:
        """``plpy.commit()``; RuntimeError in an atomic (function) context."""
        if self._atomic:
            raise RuntimeError("commit() inside an atomic context")
        self._plpy.commit()

    def subtransaction(self) -> AbstractContextManager[Any]:
        """``plpy.subtransaction()``: a savepoint rolled back if the block raises."""
        return self._plpy.subtransaction()

    def notice(self, message: str) -> None:
        """``plpy.notice(message)``: libpq delivers it to the client while the statement runs
        (psql prints ``NOTICE:  <message>``; drivers have a notice handler). Not sent when the
        session's client_min_messages is above notice."""
        self._plpy.notice(message)
