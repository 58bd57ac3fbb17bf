"""API keys: looked up by secret name at call time, never stored in steps, redacted from text.

Tenant keys live encrypted in pgagent.secret and are only ever decrypted inside the SECURITY
DEFINER function pgagent._llm_call (see :func:`pgagent_core.pl.llm_call`). For superusers,
:func:`resolve` also reads the server's environment (``os.environ[name]``) and then the setting
``pgagent.secret.<name>`` (development and tests).
"""

from __future__ import annotations

import os
from typing import Any, Iterable

from .db import Db, one


def resolve(db: Db, name: str | None) -> str | None:
    """The value of secret ``name`` from the server environment or the setting
    ``pgagent.secret.<name>``; None when ``name`` is None.

    Raises KeyError(name) when a name is given but found nowhere; the message never contains
    a value.
    """
    if not name:
        return None
    value = os.environ.get(name)
    if value:
        return value
    row = one(db, "SELECT pg_catalog.current_setting('pgagent.secret.' || $1, true) AS v", ["text"], [name])
    if row and row["v"]:
        return row["v"]
    raise KeyError(name)


def redact(value: Any, secrets: Iterable[str | None]) -> Any:
    """``value`` (str, dict or list, recursively) with every occurrence of each secret replaced
    by ``[REDACTED]``. Secrets shorter than 4 characters are ignored (too likely to collide)."""
    keys = [s for s in secrets if s and len(s) >= 4]
    if not keys:
        return value
    if isinstance(value, str):
        for k in keys:
            value = value.replace(k, "[REDACTED]")
        return value
    if isinstance(value, dict):
        return {redact(k, keys): redact(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, keys) for v in value]
    return value
