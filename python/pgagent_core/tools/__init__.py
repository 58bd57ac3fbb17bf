"""Tool kinds. Each kind is one module exposing ``check_config(config) -> None`` (raises
ValueError for a bad config, used by register_tool) and ``run(ctx, tool, args) -> Any`` (a
JSON-able result; raises ToolFailure for a readable failure), and optionally ``describe(db, gd,
tool) -> str | None`` (more description for the model when a turn starts). Adding a kind =
adding a module and a line in :data:`KINDS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from ..db import Db

KINDS: dict[str, str] = {"sql": "sql", "function": "function", "http": "http", "memory": "memory",
                         "knowledge": "knowledge", "graph": "graph", "agent": "agent", "handoff": "handoff"}


class ToolFailure(Exception):
    """A tool ran and failed in a way the model should be told about (the message is shown).
    ``details`` (JSON-able) are recorded in the tool_result step beside the message, e.g. the
    http kind's method, url and status."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


@dataclass
class ToolContext:
    """What a tool run may use: the database, the tenant and turn it runs for."""

    db: Db
    tenant_id: str
    turn_id: int
    gd: dict
    #: ``pgagent-<tenant_id>-<step_id of the tool_call>``: the same for every run of one call
    #: (a re-run after a crash included), different for every call. Not the model's tool_call_id,
    #: which models reuse (``call_0`` in every turn). See docs/durability.md.
    idempotency_key: str = ""
    #: the turn's agent, the role it runs for (its created_by) and its conversation
    agent_id: int | None = None
    user: str | None = None
    conversation_id: int | None = None
    #: ``embedder(model name or None) -> (model row, embed(texts, params))`` (loop.embedder)
    embedder: Callable[[str | None], Any] | None = None


def kind_module(kind: str) -> ModuleType:
    """The module implementing ``kind``. Raises KeyError for an unknown kind."""
    return importlib.import_module(f"{__name__}.{KINDS[kind]}")


def run(ctx: ToolContext, tool: dict[str, Any], args: dict[str, Any]) -> Any:
    """Run ``tool`` (a pgagent.tool row) with validated ``args``. Raises ToolFailure."""
    try:
        mod = kind_module(tool["kind"])
    except KeyError:
        raise ToolFailure(f"tool kind {tool['kind']!r} is not supported by this pgagent version") from None
    return mod.run(ctx, tool, args)


def describe(db: Db, gd: dict, tool: dict[str, Any]) -> str | None:
    """Extra description of ``tool`` for the model, computed when a turn starts, from its kind's
    optional ``describe(db, gd, tool)`` (e.g. the tables a ``sql`` tool may read); None if the
    kind has none. May raise what the kind's describe raises (ToolFailure, SQL errors)."""
    try:
        fn = getattr(kind_module(tool["kind"]), "describe", None)
    except KeyError:
        return None
    return fn(db, gd, tool) if fn is not None else None
