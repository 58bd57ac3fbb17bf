"""``memory`` tools: the agent remembers a fact, or recalls what it remembered (docs/memory.md).

config (schema ``tool.memory``):
  ``action``  ``remember`` (arguments ``content``, optional ``importance`` 0..1) or ``recall``
              (arguments ``query``, optional ``k``).
  ``scope``   (remember) ``user`` (default: the turn's user, in every conversation with the
              agent), ``conversation`` (this conversation only) or ``agent`` (every user).
  ``k``, ``min_similarity`` (recall) defaults: 5 and 0.
  ``model``   the embedding model (default: the tenant's default embedding model).
Registered without ``parameters``, a memory tool gets :func:`PARAMETERS` of its action.
The memory is written in the turn's transaction, with its tool_result step: a turn that dies
before the step commits leaves no memory behind. Recall sees what the turn's user may recall
(pgagent_core.memory.search) and returns ``{"memories": [{memory_id, content, scope,
similarity, score, ...}]}``.
"""

from __future__ import annotations

from typing import Any

from .. import memory
from ..errors import PgAgentError
from . import ToolContext, ToolFailure


def PARAMETERS(action: str | None) -> dict[str, Any] | None:  # noqa: N802 (a constant-like hook)
    """The JSON Schema of the arguments of a memory tool doing ``action`` (None: unknown)."""
    if action == "remember":
        return {"type": "object", "additionalProperties": False, "required": ["content"],
                "properties": {"content": {"type": "string", "minLength": 1, "maxLength": memory.MAX_CONTENT,
                                           "description": "the fact to remember, as one self-contained sentence"},
                               "importance": {"type": "number", "minimum": 0, "maximum": 1,
                                              "description": "how much it matters, 0 to 1 (default 0.5)"}}}
    if action == "recall":
        return {"type": "object", "additionalProperties": False, "required": ["query"],
                "properties": {"query": {"type": "string", "minLength": 1, "description": "what to look for"},
                               "k": {"type": "integer", "minimum": 1, "maximum": memory.MAX_K,
                                     "description": "how many memories at most"}}}
    return None


def check_config(config: dict[str, Any]) -> None:
    """Raises ValueError for a bad config (the schema tool.memory checked the rest)."""
    if config.get("action") not in ("remember", "recall"):
        raise ValueError("config.action must be remember or recall")


def run(ctx: ToolContext, tool: dict[str, Any], args: dict[str, Any]) -> Any:
    """Remember or recall for the turn's user and agent. Raises ToolFailure (no embedding
    model, the embedding provider failed, a bad argument)."""
    cfg = tool["config"]
    if ctx.embedder is None or ctx.agent_id is None or ctx.user is None:
        raise ToolFailure("memory tools run inside a turn only")
    try:
        model, embed = ctx.embedder(cfg.get("model"))
        if cfg["action"] == "remember":
            content = memory.check_content(args.get("content"))
            importance = memory.check_importance(args.get("importance", 0.5))
            mid = memory.store(ctx.db, ctx.gd, tenant_id=ctx.tenant_id, agent_id=ctx.agent_id,
                               scope=cfg.get("scope", "user"), owner=ctx.user, conversation_id=ctx.conversation_id,
                               content=content, importance=importance, model_id=int(model["model_id"]),
                               vector=embed([content], role="passage")[0], created_by=ctx.user,
                               source_turn_id=ctx.turn_id)
            return {"remembered": True, "memory_id": mid}
        query = args.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolFailure("query must be a non-empty text")
        found = memory.search(ctx.db, ctx.gd, tenant_id=ctx.tenant_id, agent_id=ctx.agent_id, owner=ctx.user,
                              conversation_id=ctx.conversation_id, model_id=int(model["model_id"]),
                              vector=embed([query], role="query")[0], k=int(args.get("k") or cfg.get("k", 5)),
                              min_similarity=float(cfg.get("min_similarity", 0.0)))
        return {"memories": found}
    except PgAgentError as e:
        raise ToolFailure(e.message) from None
