"""SQL API of long-term memory (docs/memory.md): pgagent.remember, pgagent.recall,
pgagent.forget. Members of pgagent_user; each works on the caller's own memories (and the
agent's shared ones), as the agent would in the caller's turns. Tenant admins read every
memory of the tenant through the table pgagent.memory (row level security) and may forget any.
"""

from __future__ import annotations

from typing import Any

from . import loop, memory
from .db import Db, one
from .errors import Forbidden, NotFound
from .registry import Caller, api, audit, check, ident

AGENT_SQL = "SELECT agent_id FROM pgagent.agent WHERE tenant_id = $1::uuid AND name = $2"


def _agent_id(db: Db, c: Caller, agent: Any) -> int:
    check(isinstance(agent, str) and agent != "", "agent must be the name of an agent")
    row = one(db, AGENT_SQL, ["text", "text"], [c.tenant_id, agent])
    if row is None:
        raise NotFound(f"agent {agent!r} does not exist (for this tenant)",
                       hint="List them with SELECT name FROM pgagent.agent;")
    return int(row["agent_id"])


def _conversation(db: Db, c: Caller, agent_id: int, conversation: Any) -> int | None:
    if conversation is None:
        return None
    ident(conversation, "conversation")
    row = one(db, "SELECT agent_id FROM pgagent.conversation WHERE tenant_id = $1::uuid AND conversation_id = $2",
              ["text", "int8"], [c.tenant_id, conversation])
    if row is None or int(row["agent_id"]) != agent_id:
        raise NotFound(f"conversation {conversation} of this agent does not exist (for this tenant)")
    return int(conversation)


@api("user")
def remember(db: Db, gd: dict, c: Caller, agent: str, content: str, scope: str = "user", importance: float = 0.5,
             conversation: int | None = None, model: str | None = None) -> int:
    """Store a memory of ``agent`` for the caller (scope ``user``: recalled in every
    conversation of the caller with the agent; ``conversation``: in ``conversation`` only;
    ``agent``: for every user of the agent, admins only), embedded by ``model`` (default: the
    tenant's default embedding model); ``importance`` 0..1. Returns memory_id. Raises 22023
    (bad arguments), 42501 (scope agent without pgagent_admin), 42704 (unknown agent,
    conversation or embedding model), 58000 (the embedding provider failed)."""
    agent_id = _agent_id(db, c, agent)
    check(scope in memory.SCOPES, f"scope must be one of {', '.join(memory.SCOPES)}, not {scope!r}")
    content, importance = memory.check_content(content), memory.check_importance(importance)
    conv = _conversation(db, c, agent_id, conversation)
    check(scope != "conversation" or conv is not None, "scope conversation needs a conversation")
    if scope == "agent" and not _is_admin(db):
        raise Forbidden("only a pgagent_admin may write memories every user of the agent recalls (scope agent)",
                        hint="Use scope user (the default) for your own memories.")
    m, embed = loop.embedder(db, gd, c.tenant_id, model)
    return memory.store(db, gd, tenant_id=c.tenant_id, agent_id=agent_id, scope=scope, owner=c.role,
                        conversation_id=conv, content=content, importance=importance, model_id=int(m["model_id"]),
                        vector=embed([content], role="passage")[0], created_by=c.role)


@api("user")
def recall(db: Db, gd: dict, c: Caller, agent: str, query: str, k: int = 5, min_similarity: float = 0.0,
           conversation: int | None = None, model: str | None = None) -> list[dict[str, Any]]:
    """The ``k`` memories of ``agent`` most relevant to ``query`` that the caller's turns would
    recall (in ``conversation``, if given: its conversation memories too), best first, as
    ``[{memory_id, scope, content, importance, similarity, score, created_at}]``
    (pgagent_core.memory: score = (similarity + importance + recency) / 3). Counts as a recall
    (last_recalled_at). Raises 22023, 42704, 58000."""
    agent_id = _agent_id(db, c, agent)
    check(isinstance(query, str) and query.strip() != "", "query must be a non-empty text")
    check(isinstance(min_similarity, (int, float)) and not isinstance(min_similarity, bool)
          and -1 <= min_similarity <= 1, "min_similarity must be a number from -1 to 1")
    conv = _conversation(db, c, agent_id, conversation)
    m, embed = loop.embedder(db, gd, c.tenant_id, model)
    return memory.search(db, gd, tenant_id=c.tenant_id, agent_id=agent_id, owner=c.role, conversation_id=conv,
                         model_id=int(m["model_id"]), vector=embed([query], role="query")[0], k=k,
                         min_similarity=float(min_similarity))


def _is_admin(db: Db) -> bool:
    return bool(one(db, "SELECT pgagent._outer_is_member('pgagent_admin') AS a")["a"])


@api("user")
def forget(db: Db, gd: dict, c: Caller, memory_id: int) -> bool:
    """Delete a memory: the caller's own (scope user or conversation), or any memory of the
    tenant for a pgagent_admin (audited as memory_forgotten). Returns true. Raises 22023 (bad
    id), 42704 (no such memory the caller may see: another user's looks the same as a missing
    one), 42501 (a shared agent memory, for a non-admin)."""
    ident(memory_id, "memory_id")
    row = one(db, "SELECT owner::text AS owner, scope, agent_id FROM pgagent.memory "
                  "WHERE tenant_id = $1::uuid AND memory_id = $2", ["text", "int8"], [c.tenant_id, memory_id])
    admin = _is_admin(db)
    if row is None or (row["owner"] is not None and row["owner"] != c.role and not admin):
        raise NotFound(f"memory {memory_id} does not exist (for you in this tenant)")
    if row["owner"] is None and not admin:
        raise Forbidden(f"memory {memory_id} is shared by every user of the agent; only a pgagent_admin may forget it")
    db.all("DELETE FROM pgagent.memory WHERE tenant_id = $1::uuid AND memory_id = $2", ["text", "int8"],
           [c.tenant_id, memory_id])
    if admin and row["owner"] != c.role:
        audit(db, "memory_forgotten", "memory", memory_id, {"owner": row["owner"], "scope": row["scope"],
                                                            "agent_id": row["agent_id"]})
    return True
