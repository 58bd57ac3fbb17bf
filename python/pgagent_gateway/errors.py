"""Errors of the gateway as JSON: ``{"error": {"code", "type", "message", "hint"?, "sqlstate"?}}``
(``type`` repeats ``code``, where OpenAI client libraries look for it) with a
stable ``code`` and an HTTP status; never a stack trace.

A database error keeps pgagent's message and hint (they are written for the caller) and maps its
SQLSTATE to a status: 22xxx/42601 -> 400 invalid_argument, 42501 -> 403 forbidden, 42704/42P01 ->
404 not_found, 55000 -> 409 invalid_state, 55P03 -> 409 busy, 23505 -> 409 conflict, 53xxx/57014
-> 503 unavailable; anything else -> 500 database_error with the message only.
"""

from __future__ import annotations

from typing import Any

import psycopg

_BY_STATE = {"42501": (403, "forbidden"), "42704": (404, "not_found"), "42P01": (404, "not_found"),
             "42883": (404, "not_found"), "55000": (409, "invalid_state"), "55P03": (409, "busy"),
             "23505": (409, "conflict"), "57014": (503, "unavailable"), "42601": (400, "invalid_argument")}


class HttpError(Exception):
    """An error response: ``status``, stable ``code``, readable ``message`` and optional extras."""

    def __init__(self, status: int, code: str, message: str, *, hint: str | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.hint = status, code, message, hint
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        err: dict[str, Any] = {"code": self.code, "type": self.code, "message": self.message}
        if self.hint:
            err["hint"] = self.hint
        err.update(self.extra)
        return {"error": err}


def from_database(e: psycopg.Error) -> HttpError:
    """The HttpError for a database error (see the module doc)."""
    state = e.sqlstate or ""
    diag = e.diag
    message = (diag.message_primary or str(e).splitlines()[0] if str(e) else "database error").removeprefix("pgagent: ")
    status, code = _BY_STATE.get(state, (None, None))
    if status is None:
        if state.startswith("22"):
            status, code = 400, "invalid_argument"
        elif state.startswith("53") or state.startswith("08"):
            status, code = 503, "unavailable"
        else:
            status, code = 500, "database_error"
    return HttpError(status, code, message, hint=diag.message_hint, sqlstate=state or None)
