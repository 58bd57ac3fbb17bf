"""Exceptions raised by pgagent_core, with the SQLSTATE they surface as in SQL."""

from __future__ import annotations


class PgAgentError(Exception):
    """Base class. ``sqlstate`` is the SQLSTATE the PL/Python entry points raise it with."""

    sqlstate = "P0001"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InvalidArgument(PgAgentError):
    """Bad argument to a pgagent SQL function (SQLSTATE 22023 invalid_parameter_value)."""

    sqlstate = "22023"


class NotFound(PgAgentError):
    """A referenced object does not exist for this tenant (SQLSTATE 42704 undefined_object)."""

    sqlstate = "42704"


class InvalidState(PgAgentError):
    """The object is in a state that does not allow the call (SQLSTATE 55000 object_not_in_prerequisite_state)."""

    sqlstate = "55000"


class Busy(PgAgentError):
    """Another session is running this turn (SQLSTATE 55P03 lock_not_available)."""

    sqlstate = "55P03"


class Forbidden(PgAgentError):
    """The caller may not act for the tenant that owns the object (SQLSTATE 42501 insufficient_privilege)."""

    sqlstate = "42501"


class ProviderFailed(PgAgentError):
    """A provider call made directly for the caller (not inside a turn, where failures become
    steps) failed (SQLSTATE 58000 system_error)."""

    sqlstate = "58000"
