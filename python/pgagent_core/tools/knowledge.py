"""``knowledge`` tools: search chosen knowledge-base collections (docs/memory.md#knowledge-base).

config (schema ``tool.knowledge``): ``collections`` (names, searched together; the first one's
embedding model and text search configuration are used), ``k`` (default 5), ``mode``
(``hybrid``, the default, ``vector`` or ``text``), ``filter`` (a JSON object the document
metadata must contain). Registered without ``parameters``, the tool takes ``query`` and
optionally ``k``.

Result: ``{"results": [{"cite": "[document_id:chunk_id]", document_id, chunk_id, title,
content, score}], "note"?}``. The chunks a turn's knowledge tools returned are the turn's
citations (loop.summary: ``citations`` in send_message's result). A hybrid search whose query
cannot be embedded ranks by text and says so in ``note``.
"""

from __future__ import annotations

from typing import Any

from .. import knowledge
from ..errors import PgAgentError
from . import ToolContext, ToolFailure

MAX_CONTENT = 4000  # characters of one chunk passed to the model


def PARAMETERS(action: str | None = None) -> dict[str, Any]:  # noqa: N802 (see tools.memory)
    """The JSON Schema of a knowledge tool's arguments."""
    return {"type": "object", "additionalProperties": False, "required": ["query"],
            "properties": {"query": {"type": "string", "minLength": 1,
                                     "description": "what to look for, in a few words or a question"},
                           "k": {"type": "integer", "minimum": 1, "maximum": 20,
                                 "description": "how many passages at most"}}}


def check_config(config: dict[str, Any]) -> None:
    """Raises ValueError for a bad config (the schema tool.knowledge checked the rest)."""
    if not config.get("collections"):
        raise ValueError("config.collections must name at least one collection")


def run(ctx: ToolContext, tool: dict[str, Any], args: dict[str, Any]) -> Any:
    """Search the collections for the argument ``query``. Raises ToolFailure (an unknown
    collection, a bad argument, vector mode without an embedding)."""
    cfg = tool["config"]
    query = args.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolFailure("query must be a non-empty text")
    try:
        if ctx.embedder is None:
            raise ToolFailure("knowledge tools run inside a turn only")
        results, note = knowledge.search_named(
            ctx.db, ctx.gd, ctx.tenant_id, list(cfg["collections"]), query, int(args.get("k") or cfg.get("k", 5)),
            cfg.get("mode", "hybrid"), cfg.get("filter") or {}, embedder=ctx.embedder)
    except PgAgentError as e:
        raise ToolFailure(e.message) from None
    out: dict[str, Any] = {"results": [
        {"cite": f"[{r['document_id']}:{r['chunk_id']}]", "document_id": r["document_id"], "chunk_id": r["chunk_id"],
         "title": r["title"], "content": r["content"][:MAX_CONTENT], "score": r["score"]} for r in results]}
    if note:
        out["note"] = note
    if not results:
        out["note"] = (out.get("note", "") + " " if note else "") + "nothing found"
    return out
