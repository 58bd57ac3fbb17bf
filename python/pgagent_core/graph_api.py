"""SQL API of the knowledge graph (docs/memory.md#knowledge-graph): pgagent.kg_add and
pgagent.kg_extract (operator) and pgagent.kg_neighbors (user)."""

from __future__ import annotations

import time
from typing import Any

from . import graph, loop
from .db import Db, one
from .errors import InvalidArgument, NotFound
from .registry import Caller, api, check, obj

MAX_EXTRACT_CHUNKS = 200

EXTRACTION_SQL = """
INSERT INTO pgagent.kg_extraction (tenant_id, document_id, chunk_seq, model, status, entities, relations, skipped,
                                   error, prompt_tokens, completion_tokens, duration_ms, created_by)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING extraction_id"""


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


@api("operator")
def kg_extract(db: Db, gd: dict, c: Caller, document: int, model: str | None = None,
               max_chunks: int = 20) -> dict[str, Any]:
    """Have the chat model ``model`` (default: the tenant's default chat model) read the first
    ``max_chunks`` (1..200) chunks of knowledge-base document ``document``, one chat call per
    chunk (graph.extraction_request), and add the entities and relations it finds to the
    knowledge graph, citing the document (source_document_id). Every chunk is recorded in
    pgagent.kg_extraction: done (with what it added, tokens and ms) or failed (a provider error,
    a timeout, a reply that is not the JSON asked for: the error says which; nothing of that
    chunk is added, the other chunks still are). All chat calls are made before the first write,
    so no lock on the graph is held during a call. Returns ``{document_id, chunks, done, failed,
    entities, relations, skipped, extraction_ids}`` (entities and relations counted as added or
    merged). Raises 22023 (bad max_chunks), 42704 (no such document or chat model)."""
    check(isinstance(document, int) and not isinstance(document, bool), "document must be an id")
    if isinstance(max_chunks, bool) or not isinstance(max_chunks, int) or not 1 <= max_chunks <= MAX_EXTRACT_CHUNKS:
        raise InvalidArgument(f"max_chunks must be an integer from 1 to {MAX_EXTRACT_CHUNKS}, not {max_chunks!r}")
    doc = one(db, "SELECT title FROM pgagent.document WHERE tenant_id = $1::uuid AND document_id = $2",
              ["text", "int8"], [c.tenant_id, document])
    if doc is None:
        raise NotFound(f"document {document} does not exist (for this tenant)")
    m = loop.chat_model(db, c.tenant_id, model, "chat model")
    chunks = db.all("SELECT seq, content FROM pgagent.chunk WHERE tenant_id = $1::uuid AND document_id = $2 "
                    "ORDER BY seq LIMIT $3", ["text", "int8", "int4"], [c.tenant_id, document, max_chunks])
    results = []
    for ch in chunks:   # the calls first: no graph row is locked while a model answers
        req = graph.extraction_request(doc["title"], ch["content"])
        req["params"] = {**(m.get("params") or {}), **req["params"]}
        t0 = time.monotonic()
        reply, found, error = None, None, None
        try:
            reply = loop.model_chat(db, gd, m, req)
            found = graph.parse_extraction(reply.content)
        except loop.ProviderError as e:
            error = f"the model call failed: {e.message}"
        except InvalidArgument as e:
            error = e.message
        results.append((ch["seq"], reply, found, error, int((time.monotonic() - t0) * 1000)))
    out: dict[str, Any] = {"document_id": document, "chunks": len(chunks), "done": 0, "failed": 0, "entities": 0,
                           "relations": 0, "skipped": 0, "extraction_ids": []}
    ids: dict[tuple[str, str], int] = {}   # (name, type) -> entity_id: each entity upserted once per call

    def entity(name: str, type_: str) -> int:
        if (name, type_) not in ids:
            ids[name, type_] = graph.add_entity(db, c.tenant_id, name, type_, {}, created_by=c.role,
                                                document_id=document)
        return ids[name, type_]

    for seq, reply, found, error, ms in results:
        n_ent = n_rel = 0
        if found is not None:
            for e in found["entities"]:
                entity(e["name"], e["type"])
                n_ent += 1
            for r in found["relations"]:
                graph.add_relation(db, c.tenant_id, entity(r["subject"], r["subject_type"]), r["predicate"],
                                   entity(r["object"], r["object_type"]), {}, created_by=c.role, document_id=document)
                n_rel += 1
        skipped = found["skipped"] if found else 0
        row = one(db, EXTRACTION_SQL, ["text", "int8", "int4", "text", "text", "int4", "int4", "int4", "text", "int4",
                                       "int4", "int4", "name"],
                  [c.tenant_id, document, seq, m["name"], "failed" if error else "done", n_ent, n_rel, skipped, error,
                   reply.prompt_tokens if reply else None, reply.completion_tokens if reply else None, ms, c.role])
        out["failed" if error else "done"] += 1
        out["entities"] += n_ent
        out["relations"] += n_rel
        out["skipped"] += skipped
        out["extraction_ids"].append(int(row["extraction_id"]))
    return out
