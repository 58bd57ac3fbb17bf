"""Knowledge graph (docs/memory.md#knowledge-graph): typed entities and relations with
provenance, written by pgagent.kg_add and pgagent.kg_extract (a chat model reads a document's
chunks: :func:`extraction_request`, :func:`parse_extraction`), read with pgagent.kg_neighbors (a
recursive CTE, pgagent._kg_walk) and by ``graph`` tools (tools.graph).
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from . import limits
from .db import Db, one
from .errors import InvalidArgument, NotFound

TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
MAX_DEPTH = 5
MAX_ROWS = 1000
#: entities and relations taken from one chunk's extraction (the rest are counted as skipped)
MAX_EXTRACTED = 50

EXTRACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "entities": {"type": "array", "items": {
            "type": "object", "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
            "required": ["name", "type"], "additionalProperties": False}},
        "relations": {"type": "array", "items": {
            "type": "object",
            "properties": {"subject": {"type": "string"}, "predicate": {"type": "string"}, "object": {"type": "string"}},
            "required": ["subject", "predicate", "object"], "additionalProperties": False}}},
    "required": ["entities", "relations"], "additionalProperties": False}
EXTRACTION_FORMAT = {"type": "json_schema", "json_schema": {"name": "knowledge_graph", "strict": True,
                                                            "schema": EXTRACTION_SCHEMA}}
EXTRACTION_SYSTEM = (
    "You extract a knowledge graph from a text. Reply with JSON only, in this shape: "
    '{"entities": [{"name": "Ada Lovelace", "type": "person"}], '
    '"relations": [{"subject": "Ada Lovelace", "predicate": "worked_with", "object": "Charles Babbage"}]}. '
    "Types and predicates are lower-case words joined by underscores (person, company, product, place, "
    "works_for, located_in, part_of). Use only facts the text states; name each entity as the text does.")

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


def extraction_request(title: str, text: str) -> dict[str, Any]:
    """The chat request (``{messages, tools, params, response_format}``, temperature 0) that asks a
    model for the entities and relations of one chunk ``text`` of the document ``title``, as
    EXTRACTION_SCHEMA's JSON."""
    return {"messages": [{"role": "system", "content": EXTRACTION_SYSTEM},
                         {"role": "user", "content": f"Document: {title}\n\n{text}"}],
            "tools": [], "params": {"temperature": 0}, "response_format": EXTRACTION_FORMAT}


def _slug(value: str) -> str | None:
    """``value`` as a type or predicate name (``Works For`` -> ``works_for``), None if impossible."""
    slug = re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")[:63].rstrip("_")
    return slug if TYPE_RE.match(slug) else None


def parse_extraction(content: str | None) -> dict[str, Any]:
    """The graph in a model's extraction reply: ``{entities: [{name, type}], relations: [{subject,
    predicate, object, subject_type, object_type}], skipped}``. Types and predicates are turned
    into lower-case names (``Works For`` -> ``works_for``; a type that cannot be one becomes
    ``thing``), a relation's entity types are taken from ``entities`` (``thing`` otherwise);
    items with an empty or over-long name or an unusable predicate, and those beyond
    MAX_EXTRACTED, are dropped and counted in ``skipped``. Raises InvalidArgument (22023) when
    the reply holds no JSON object of EXTRACTION_SCHEMA's shape (the message quotes its start)."""
    text = (content or "").strip()
    m = re.search(r"\{.*\}", text, re.S)
    if m is None:
        raise InvalidArgument(f"the model's reply holds no JSON object: {text[:200]!r}")
    try:
        data = json.loads(m.group(0))
        jsonschema.validate(data, EXTRACTION_SCHEMA)
    except (ValueError, jsonschema.ValidationError) as e:
        why = e.message if isinstance(e, jsonschema.ValidationError) else "not JSON"
        raise InvalidArgument(f"the model's reply is not the extraction JSON ({why[:200]}): {text[:200]!r}") from None
    skipped, types, entities = 0, {}, []
    for e in data["entities"]:
        name = e["name"].strip()
        if not name or len(name) > 500 or len(entities) >= MAX_EXTRACTED:
            skipped += 1
            continue
        t = _slug(e["type"]) or "thing"
        types.setdefault(name.lower(), t)
        entities.append({"name": name, "type": t})
    relations = []
    for r in data["relations"]:
        subj, obj_, pred = r["subject"].strip(), r["object"].strip(), _slug(r["predicate"])
        if (not subj or not obj_ or len(subj) > 500 or len(obj_) > 500 or pred is None
                or len(relations) >= MAX_EXTRACTED):
            skipped += 1
            continue
        relations.append({"subject": subj, "predicate": pred, "object": obj_,
                          "subject_type": types.get(subj.lower(), "thing"),
                          "object_type": types.get(obj_.lower(), "thing")})
    return {"entities": entities, "relations": relations, "skipped": skipped}
