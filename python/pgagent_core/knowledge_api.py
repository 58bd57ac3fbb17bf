"""SQL API of the knowledge base (docs/memory.md#knowledge-base): collections (admin),
documents (operator), search (user) and the embedding queue the workers drain (user).
"""

from __future__ import annotations

from typing import Any

from . import knowledge, limits, loop
from .db import Db, one
from .errors import NotFound
from .registry import Caller, api, audit, check, ident, name as valid_name, obj

@api("admin")
def create_collection(db: Db, gd: dict, c: Caller, name: str, description: str | None = None,
                      embedding_model: str | None = None, text_config: str = "english", chunk_size: int = 1200,
                      chunk_overlap: int = 200) -> int:
    """Create a collection (``chunk_size`` and ``chunk_overlap`` in characters; ``text_config`` a
    text search configuration; ``embedding_model`` an embedding model's name, default: the
    tenant's default when a chunk is embedded). Returns collection_id. Audited. Raises 22023,
    42704 (unknown model or text search configuration), 23505 (the name is taken)."""
    valid_name(name, "collection name")
    for v, what, lo, hi in ((chunk_size, "chunk_size", 100, 20000), (chunk_overlap, "chunk_overlap", 0, 19999)):
        check(isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
              f"{what} must be an integer from {lo} to {hi}, not {v!r}")
    check(chunk_overlap < chunk_size, "chunk_overlap must be smaller than chunk_size")
    model_id = None
    if embedding_model is not None:
        row = one(db, "SELECT model_id FROM pgagent.model WHERE tenant_id = $1::uuid AND name = $2 AND kind = 'embedding'",
                  ["text", "text"], [c.tenant_id, embedding_model])
        if row is None:
            raise NotFound(f"embedding model {embedding_model!r} does not exist (for this tenant)")
        model_id = int(row["model_id"])
    check(isinstance(text_config, str) and text_config != "", "text_config must name a text search configuration")
    if one(db, "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_ts_config WHERE cfgname = $1) AS missing", ["text"],
           [text_config])["missing"]:
        raise NotFound(f"text search configuration {text_config!r} does not exist",
                       hint="SELECT cfgname FROM pg_ts_config; (english, simple, german, ...)")
    row = one(db, """INSERT INTO pgagent.collection (tenant_id, name, description, embedding_model_id, text_config,
                                                     chunk_size, chunk_overlap, created_by)
                     VALUES ($1::uuid, $2, $3, $4, $5::regconfig, $6, $7, $8) RETURNING collection_id""",
              ["text", "text", "text", "int8", "text", "int4", "int4", "name"],
              [c.tenant_id, name, description, model_id, text_config, chunk_size, chunk_overlap, c.role])
    audit(db, "collection_created", "collection", row["collection_id"], {"name": name})
    return int(row["collection_id"])


@api("admin")
def drop_collection(db: Db, gd: dict, c: Caller, name: str) -> bool:
    """Delete a collection with its documents and chunks. Audited. Raises 42704."""
    col = knowledge.collection(db, c.tenant_id, name)
    db.all("DELETE FROM pgagent.collection WHERE tenant_id = $1::uuid AND collection_id = $2", ["text", "int8"],
           [c.tenant_id, col["collection_id"]])
    audit(db, "collection_dropped", "collection", col["collection_id"], {"name": name})
    return True


@api("operator")
def add_document(db: Db, gd: dict, c: Caller, collection: str, title: str, body: str,
                 metadata: Any = None) -> dict[str, Any]:
    """Add a document to a collection, or update the one with the same title: its text is cut
    into chunks at once (searchable by full text now), and the chunks whose text is new wait for
    a worker to embed them (pgagent.embed_pending; the documents view shows progress). Returns
    ``{document_id, version, changed, chunks, reused, pending}`` (changed: the body is new or
    different; reused: chunks of a changed body that kept their embedding; an unchanged body
    keeps every chunk). Raises 22023 (empty or over 10,000,000 characters, metadata not an object),
    42704 (no such collection)."""
    col = knowledge.collection(db, c.tenant_id, collection)
    check(isinstance(title, str) and title.strip() != "" and len(title) <= 1000, "title must be 1 to 1000 characters")
    check(isinstance(body, str) and body.strip() != "", "body must be a non-empty text")
    check(len(body) <= knowledge.MAX_BODY, f"body is longer than {knowledge.MAX_BODY} characters")
    meta = limits.clean_json(obj(metadata, "metadata"))
    body = limits.clean_text(body) or ""
    h = knowledge.sha256(body)
    title = limits.clean_text(title) or ""
    row = one(db, """
WITH prev AS (SELECT p.body_hash FROM pgagent.document p
               WHERE p.tenant_id = $1::uuid AND p.collection_id = $2 AND p.title = $3)
INSERT INTO pgagent.document AS d (tenant_id, collection_id, title, body, metadata, body_hash, created_by)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7)
ON CONFLICT (tenant_id, collection_id, title) DO UPDATE
   SET body = excluded.body, metadata = excluded.metadata, body_hash = excluded.body_hash,
       version = d.version + (d.body_hash IS DISTINCT FROM excluded.body_hash)::int, updated_at = pg_catalog.now()
RETURNING d.document_id, d.version, (SELECT p.body_hash FROM prev p) IS DISTINCT FROM $6 AS changed""",
              ["text", "int8", "text", "text", "jsonb", "bytea", "name"],
              [c.tenant_id, col["collection_id"], title, body, meta, h, c.role])
    doc = int(row["document_id"])
    stored = knowledge.store_chunks(db, c.tenant_id, doc, col, body) if row["changed"] else None
    counts = one(db, """SELECT pg_catalog.count(*)::int AS chunks, (pg_catalog.count(*) FILTER (WHERE embedding IS NULL))::int AS pending
                          FROM pgagent.chunk WHERE tenant_id = $1::uuid AND document_id = $2""",
                 ["text", "int8"], [c.tenant_id, doc])
    if counts["pending"]:
        db.all("SELECT pg_catalog.pg_notify('pgagent_queue_' || events_key, 'embed') FROM pgagent.tenant "
               "WHERE tenant_id = $1::uuid", ["text"], [c.tenant_id])
    return {"document_id": doc, "version": int(row["version"]), "changed": bool(row["changed"]),
            "chunks": counts["chunks"], "reused": 0 if stored is None else stored["reused"],
            "pending": counts["pending"]}


@api("operator")
def delete_document(db: Db, gd: dict, c: Caller, document_id: int) -> bool:
    """Delete a document and its chunks. Raises 22023, 42704."""
    ident(document_id, "document_id")
    rows = db.all("DELETE FROM pgagent.document WHERE tenant_id = $1::uuid AND document_id = $2 RETURNING 1",
                  ["text", "int8"], [c.tenant_id, document_id])
    if not rows:
        raise NotFound(f"document {document_id} does not exist (for this tenant)")
    return True


@api("user")
def search(db: Db, gd: dict, c: Caller, collection: str, query: str, k: int = 5, mode: str = "hybrid",
           filter: Any = None) -> list[dict[str, Any]]:
    """The ``k`` chunks of ``collection`` that best answer ``query`` (mode hybrid: RRF of vector
    and full-text ranks; vector; text), with their document's title and metadata; ``filter``: a
    JSON object the document metadata must contain. A hybrid search whose query cannot be
    embedded ranks by text and says so in a NOTICE. Raises 22023, 42704, 58000."""
    results, note = knowledge.search_named(db, gd, c.tenant_id, [collection], query, k, mode, obj(filter, "filter"),
                                           embedder=lambda name: loop.embedder(db, gd, c.tenant_id, name))
    if note:
        db.notice(note)
    return results


@api("user")
def embed_pending(db: Db, gd: dict, c: Caller, tenant: str | None = None, batch: int = 32) -> dict[str, Any]:
    """Worker: embed up to ``batch`` (1..256) chunks waiting for an embedding, in the first
    tenant the caller may act for that has some (optionally only ``tenant``, a name or id).
    Returns ``{tenant_id, embedded, failed, collection_id}`` (zeros when nothing waits). The
    worker calls it until it returns no work. Raises 22023."""
    check(isinstance(batch, int) and not isinstance(batch, bool) and 1 <= batch <= 256,
          "batch must be an integer from 1 to 256")
    row = one(db, """
SELECT t.tenant_id::text AS tenant_id FROM pgagent.tenant t
 WHERE ($1::text IS NULL OR t.name = $1 OR t.tenant_id::text = $1) AND pgagent._may_act(t.tenant_id)
   AND EXISTS (SELECT 1 FROM pgagent.chunk c WHERE c.tenant_id = t.tenant_id AND c.embedding IS NULL
                  AND c.embed_attempts < $2)
 ORDER BY t.name LIMIT 1""", ["text", "int4"], [tenant, knowledge.MAX_ATTEMPTS])
    if row is None:
        return {"tenant_id": None, "embedded": 0, "failed": 0, "collection_id": None}
    tid = row["tenant_id"]

    def embedder(model_id: int | None) -> Any:
        name = None if model_id is None else one(
            db, "SELECT name FROM pgagent.model WHERE tenant_id = $1::uuid AND model_id = $2", ["text", "int8"],
            [tid, model_id])["name"]
        return loop.embedder(db, gd, tid, name)

    return {"tenant_id": tid, **knowledge.embed_batch(db, gd, tid, batch, embedder)}
