"""Running one statement of a tool inside a subtransaction with a deadline."""

from __future__ import annotations

from typing import Any, Callable

from ..cancel import cancel_after
from . import ToolFailure

QUERY_CANCELED = "57014"


class _Rollback(Exception):
    pass


def guarded(ctx_db: Any, timeout_ms: int, body: Callable[[], Any], *, rollback: bool) -> Any:
    """Run ``body()`` in a subtransaction, cancelled after ``timeout_ms`` ms.

    With ``rollback=True`` the subtransaction is always rolled back (nothing the body wrote
    survives). An SQL error becomes ToolFailure with the server's message; a cancel becomes
    ToolFailure("timed out after N ms").
    """
    result: list[Any] = []
    try:
        with ctx_db.subtransaction():
            with cancel_after(timeout_ms) as deadline:
                result.append(body())
            if deadline.fired:
                # The timer fired as the statement finished: absorb the pending cancel here.
                ctx_db.all("SELECT pg_catalog.pg_sleep(0.01)")
            if rollback:
                raise _Rollback
    except _Rollback:
        pass
    except Exception as e:  # plpy.SPIError and subclasses; psycopg errors outside the server
        state = getattr(e, "sqlstate", None) or getattr(getattr(e, "diag", None), "sqlstate", None)
        if state == QUERY_CANCELED:
            raise ToolFailure(f"timed out after {timeout_ms} ms") from None
        msg = getattr(e, "message", None) or str(e)
        detail = f" ({state})" if state else ""
        raise ToolFailure(f"{type(e).__name__}{detail}: {msg}".strip()) from None
    return result[0] if result else None
