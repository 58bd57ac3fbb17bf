"""``graph`` tools: the knowledge graph's neighbourhood of an entity (docs/memory.md#knowledge-graph).

config (schema ``tool.graph``): ``depth`` (default 2, at most 5), ``max_rows`` (default 50).
Registered without ``parameters``, the tool takes ``entity`` and optionally ``depth`` and
``predicate``. Result: ``{"entity", "neighbors": [{depth, entity, type, predicate, direction,
from_entity}], "truncated"}``; an unknown entity is a readable tool error.
"""

from __future__ import annotations

from typing import Any

from .. import graph
from ..errors import PgAgentError
from . import ToolContext, ToolFailure


def PARAMETERS(action: str | None = None) -> dict[str, Any]:  # noqa: N802 (see tools.memory)
    """The JSON Schema of a graph tool's arguments."""
    return {"type": "object", "additionalProperties": False, "required": ["entity"],
            "properties": {"entity": {"type": "string", "minLength": 1, "description": "the entity's name"},
                           "depth": {"type": "integer", "minimum": 1, "maximum": graph.MAX_DEPTH,
                                     "description": "how many relations away"},
                           "predicate": {"type": "string", "description": "follow only this relation"}}}


def check_config(config: dict[str, Any]) -> None:
    """Nothing beyond the schema tool.graph."""


def run(ctx: ToolContext, tool: dict[str, Any], args: dict[str, Any]) -> Any:
    """The neighbourhood of the argument ``entity``. Raises ToolFailure (unknown entity, bad
    argument)."""
    cfg = tool["config"]
    limit = int(cfg.get("max_rows", 50))
    try:
        e = graph.find_entity(ctx.db, ctx.tenant_id, graph.entity_name(args.get("entity"), "entity"))
        rows = graph.neighbors(ctx.db, ctx.tenant_id, e, int(args.get("depth") or cfg.get("depth", 2)),
                               args.get("predicate"), limit + 1)
    except PgAgentError as err:
        raise ToolFailure(err.message) from None
    return {"entity": args.get("entity"), "truncated": len(rows) > limit,
            "neighbors": [{k: r[k] for k in ("depth", "entity", "type", "predicate", "direction", "from_entity")}
                          for r in rows[:limit]]}
