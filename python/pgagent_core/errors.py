"""Exceptions raised by pgagent_core, with the SQLSTATE they surface as in SQL.

Every error an API function raises reaches the client as ``ERROR: pgagent: <message>`` with
the SQLSTATE of its class, a DETAIL (the facts) and a HINT (the fix); the table of SQLSTATEs
is in docs/api.md. The PL/Python dispatcher (:func:`pgagent_core.pl.dispatch`) returns
:meth:`PgAgentError.as_dict` and a PL/pgSQL wrapper raises it, so no Python traceback reaches
the client.
"""

from __future__ import annotations

from typing import Any


class PgAgentError(Exception):
    """Base class. ``sqlstate`` is the SQLSTATE the API functions raise it with."""

    sqlstate = "P0001"
    default_hint = "See docs/api.md for the function's arguments."
    default_detail = "The call changed nothing."

    def __init__(self, message: str, *, hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail

    def as_dict(self) -> dict[str, Any]:
        """``{message, sqlstate, detail, hint}`` with the ``pgagent: `` prefix on the message and
        non-empty detail and hint (PL/pgSQL's RAISE refuses NULL options)."""
        msg = self.message if self.message.startswith("pgagent: ") else f"pgagent: {self.message}"
        return {"message": msg, "sqlstate": self.sqlstate, "detail": self.detail or self.default_detail,
                "hint": self.hint or self.default_hint}


class InvalidArgument(PgAgentError):
    """Bad argument to a pgagent SQL function (SQLSTATE 22023 invalid_parameter_value)."""

    sqlstate = "22023"
    default_hint = "Fix the argument named in the message; docs/api.md lists the valid values."
    default_detail = "The arguments were checked before anything was written; nothing changed."


class NotFound(PgAgentError):
    """A referenced object does not exist for this tenant (SQLSTATE 42704 undefined_object)."""

    sqlstate = "42704"
    default_hint = "Check the name or id; objects of other tenants are not visible."
    default_detail = "No object of the tenant this session acts for has that name or id; nothing changed."


class InvalidState(PgAgentError):
    """The object is in a state that does not allow the call (SQLSTATE 55000 object_not_in_prerequisite_state)."""

    sqlstate = "55000"
    default_detail = "The object is not in a state that allows this call; nothing changed."


class Busy(PgAgentError):
    """Another session is running this turn (SQLSTATE 55P03 lock_not_available)."""

    sqlstate = "55P03"
    default_hint = "Wait for the other session to finish, or cancel it with pg_cancel_backend."
    default_detail = "Another backend holds the turn's advisory lock; nothing changed."


class Forbidden(PgAgentError):
    """The caller may not do this (SQLSTATE 42501 insufficient_privilege): not a member of the
    tenant, not in the pgagent group role the function needs, or approving its own call."""

    sqlstate = "42501"
    default_hint = "Ask an admin of the tenant to grant the needed pgagent role (docs/security.md)."
    default_detail = "The calling role (SET ROLE's role, else session_user) lacks the right; nothing changed."


class ProviderFailed(PgAgentError):
    """A provider call made directly for the caller (not inside a turn, where failures become
    steps) failed (SQLSTATE 58000 system_error)."""

    sqlstate = "58000"
    default_hint = "Check the model's base_url, its server and its secret (pgagent.set_secret)."
    default_detail = "The provider's reply is in the message; nothing was recorded."


class InUse(PgAgentError):
    """The object is referenced by agents or history and cannot be deleted (SQLSTATE 2BP01
    dependent_objects_still_exist)."""

    sqlstate = "2BP01"
    default_hint = "Disable it instead (pgagent.disable_*), which keeps the history readable."
    default_detail = "Deleting it would orphan what refers to it; nothing changed."


class Internal(PgAgentError):
    """A bug (SQLSTATE XX000 internal_error); the traceback goes to the server log only."""

    sqlstate = "XX000"
    default_hint = "This is a pgagent bug: the server log has the Python traceback."
    default_detail = "An unexpected error inside pgagent; the transaction is rolled back."
