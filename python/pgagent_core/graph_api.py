"""SQL API of the knowledge graph (docs/memory.md#knowledge-graph): pgagent.kg_add (operator)
and pgagent.kg_neighbors (user)."""

from __future__ import annotations

from typing import Any

from . import graph
from .db import Db, one
from .errors import NotFound
from .registry import Caller, api, check, obj


@api("operator")
def kg_add(db: Db, gd: dict, c: Caller, subject: str, predicate: str, object: str, subject_type: str = "thing",
           object_type: str = "thing", properties: Any = None, source_document: int | None = None) -> int:
    """Add (or merge) the relation ``subject -predicate-> object`` with its two entities (found or
    created by type and name), optionally citing the document it came from. Returns relation_id.
    Raises 22023 (a bad name, type or predicate), 42704 (no such document)."""
    props = obj(properties, "properties")
    if source_document is not None:
        check(isinstance(source_document, int) and not isinstance(source_document, bool), "source_document must be an id")
        if one(db, "SELECT 1 AS x FROM pgagent.document WHERE tenant_id = $1::uuid AND document_id = $2",
               ["text", "int8"], [c.tenant_id, source_document]) is None:
            raise NotFound(f"document {source_document} does not exist (for this tenant)")
    s = graph.add_entity(db, c.tenant_id, subject, subject_type, {}, created_by=c.role, document_id=source_document)
    o = graph.add_entity(db, c.tenant_id, object, object_type, {}, created_by=c.role, document_id=source_document)
    return graph.add_relation(db, c.tenant_id, s, predicate, o, props, created_by=c.role, document_id=source_document)


@api("user")
def kg_neighbors(db: Db, gd: dict, c: Caller, entity: str, depth: int = 1, entity_type: str | None = None,
                 predicate: str | None = None) -> list[dict[str, Any]]:
    """The entities within ``depth`` (1..5) relations of ``entity`` (by name, case-insensitive;
    ``entity_type`` when names repeat), only along ``predicate`` if given. Raises 22023, 42704."""
    e = graph.find_entity(db, c.tenant_id, graph.entity_name(entity, "entity"), entity_type)
    return graph.neighbors(db, c.tenant_id, e, depth, predicate, graph.MAX_ROWS)
