"""Knowledge graph (docs/memory.md#knowledge-graph): typed entities and relations with
provenance, written by pgagent.kg_add, read with pgagent.kg_neighbors (a recursive CTE,
pgagent._kg_walk) and by ``graph`` tools (tools.graph).
"""

from __future__ import annotations

import re
from typing import Any

from . import limits
from .db import Db, one
from .errors import InvalidArgument, NotFound

TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_DEPTH = 5
MAX_ROWS = 1000

ENTITY_SQL = """
INSERT INTO pgagent.kg_entity AS e (tenant_id, name, type, properties, source_document_id, source_turn_id, created_by)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7)
ON CONFLICT (tenant_id, type, name) DO UPDATE
   SET properties = e.properties || excluded.properties, updated_at = pg_catalog.now()
RETURNING entity_id"""

RELATION_SQL = """
INSERT INTO pgagent.kg_relation AS r (tenant_id, subject_id, predicate, object_id, properties, source_document_id,
                                      source_turn_id, created_by)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (tenant_id, subject_id, predicate, object_id) DO UPDATE SET properties = r.properties || excluded.properties
RETURNING relation_id"""

WALK_SQL = """
SELECT depth, entity_id, entity, type, predicate, direction, from_entity, path
  FROM pgagent._kg_walk($1::uuid, $2, $3, $4) LIMIT $5"""


def kind(value: Any, what: str) -> str:
    """A type or predicate name (lower case, ``^[a-z][a-z0-9_]{0,62}$``); 22023 otherwise."""
    if not isinstance(value, str) or not TYPE_RE.match(value):
        raise InvalidArgument(f"{what} {value!r} must match {TYPE_RE.pattern} (e.g. person, works_for)")
    return value


def entity_name(value: Any, what: str) -> str:
    """An entity's name: 1 to 500 characters; 22023 otherwise."""
    if not isinstance(value, str) or not value.strip() or len(value) > 500:
        raise InvalidArgument(f"{what} must be a name of 1 to 500 characters")
    return limits.clean_text(value.strip()) or ""


def add_entity(db: Db, tenant_id: str, name: str, type_: str, properties: dict[str, Any], *, created_by: str,
               document_id: int | None = None, turn_id: int | None = None) -> int:
    """Upsert an entity (by type and name; properties are merged); returns entity_id."""
    return int(one(db, ENTITY_SQL, ["text", "text", "text", "jsonb", "int8", "int8", "name"],
                   [tenant_id, entity_name(name, "entity"), kind(type_, "type"), properties, document_id, turn_id,
                    created_by])["entity_id"])


def add_relation(db: Db, tenant_id: str, subject: int, predicate: str, obj: int, properties: dict[str, Any], *,
                 created_by: str, document_id: int | None = None, turn_id: int | None = None) -> int:
    """Upsert a relation subject -predicate-> object (properties merged); returns relation_id."""
    return int(one(db, RELATION_SQL, ["text", "int8", "text", "int8", "jsonb", "int8", "int8", "name"],
                   [tenant_id, subject, kind(predicate, "predicate"), obj, properties, document_id, turn_id,
                    created_by])["relation_id"])


def find_entity(db: Db, tenant_id: str, name: str, type_: str | None = None) -> int:
    """The entity named ``name`` (case-insensitive; of ``type_`` if given). Raises NotFound
    (42704) or InvalidArgument (22023: several types share the name; give the type)."""
    rows = db.all("SELECT entity_id, type FROM pgagent.kg_entity WHERE tenant_id = $1::uuid AND lower(name) = lower($2) "
                  "AND ($3::text IS NULL OR type = $3) ORDER BY entity_id LIMIT 5", ["text", "text", "text"],
                  [tenant_id, name, type_])
    if not rows:
        raise NotFound(f"no entity named {name!r}" + (f" of type {type_}" if type_ else ""))
    if len(rows) > 1:
        raise InvalidArgument(f"several entities are named {name!r} (types {', '.join(r['type'] for r in rows)}); "
                              "give the type")
    return int(rows[0]["entity_id"])


def neighbors(db: Db, tenant_id: str, entity_id: int, depth: int, predicate: str | None = None,
              limit: int = 200) -> list[dict[str, Any]]:
    """What is within ``depth`` (1..5) relations of the entity, either direction, each entity once
    at its shortest distance: ``[{depth, entity_id, entity, type, predicate, direction (out |
    in), from_entity, path}]``. Raises InvalidArgument (22023) for a bad depth."""
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise InvalidArgument(f"depth must be an integer from 1 to {MAX_DEPTH}, not {depth!r}")
    if predicate is not None:
        kind(predicate, "predicate")
    return db.all(WALK_SQL, ["text", "int8", "int4", "text", "int4"],
                  [tenant_id, entity_id, depth, predicate, min(max(int(limit), 1), MAX_ROWS)])
