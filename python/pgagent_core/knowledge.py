"""Knowledge base: documents cut into chunks, searched by full text and by vector, fused with
Reciprocal Rank Fusion (docs/memory.md#knowledge-base).

* :func:`chunk_text` cuts a text at paragraph boundaries (then sentences, then words) into
  chunks of at most ``size`` characters, each repeating about ``overlap`` characters of the
  one before.
* :func:`store_document` replaces a document's chunks in one statement; a chunk whose text did
  not change keeps its embedding, the others wait for :func:`embed_batch` (run by workers
  through pgagent.embed_pending).
* :func:`search` ranks chunks by pgvector cosine distance and by ``ts_rank_cd`` of
  ``websearch_to_tsquery``; ``hybrid`` fuses both rankings with RRF: score = sum over the
  rankings of 1 / (60 + rank), with k = 60 from Cormack, Clarke and Buettcher, "Reciprocal Rank
  Fusion outperforms Condorcet and individual Rank Learning Methods", SIGIR 2009.

No HTTP here: callers pass embeddings (see loop.embedder).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Callable, Sequence

from . import memory
from .db import Db, one
from .errors import InvalidArgument, NotFound, ProviderFailed

RRF_K = 60              # Cormack et al. 2009
MODES = ("hybrid", "vector", "text")
MAX_ATTEMPTS = 5        # embedding attempts of a chunk before it is left with its error
MAX_BODY = 10_000_000   # characters of one document

_PARAGRAPH = re.compile(r"\n[ \t]*\n+")
_SENTENCE = re.compile(r"(?<=[.!?。])\s+")


def _spans(text: str, pattern: re.Pattern[str], start: int, end: int) -> list[tuple[int, int]]:
    out, pos = [], start
    for m in pattern.finditer(text, start, end):
        if m.start() > pos:
            out.append((pos, m.start()))
        pos = m.end()
    if pos < end:
        out.append((pos, end))
    return out


def _pieces(text: str, size: int) -> list[tuple[int, int]]:
    """Spans of ``text`` of at most ``size`` characters: paragraphs, or the sentences of a long
    paragraph, or word-aligned slices of a long sentence."""
    out: list[tuple[int, int]] = []
    for ps, pe in _spans(text, _PARAGRAPH, 0, len(text)):
        if pe - ps <= size:
            out.append((ps, pe))
            continue
        for ss, se in _spans(text, _SENTENCE, ps, pe):
            while se - ss > size:
                cut = text.rfind(" ", ss + size // 2, ss + size)
                cut = cut if cut > ss else ss + size
                out.append((ss, cut))
                ss = cut
                while ss < se and text[ss].isspace():
                    ss += 1
            if se > ss:
                out.append((ss, se))
    return [(s, e) for s, e in out if text[s:e].strip()]


def chunk_text(text: str, size: int = 1200, overlap: int = 200) -> list[tuple[int, int, str]]:
    """``text`` as chunks ``(char_start, char_end, content)`` (offsets into ``text``; content is
    ``text[start:end]`` stripped). Paragraphs (split at blank lines) are packed whole while the
    chunk stays within ``size`` characters; a longer paragraph is split into sentences, a longer
    sentence at spaces. Each chunk after the first starts up to ``overlap`` characters before the
    end of the previous one, at a word boundary, so a fact cut at a boundary is whole in one of
    them. Raises InvalidArgument (22023) for size < 100 or overlap outside 0..size-1."""
    if not 100 <= size or not 0 <= overlap < size:
        raise InvalidArgument("chunk_size must be at least 100 and chunk_overlap from 0 to chunk_size - 1")
    pieces = _pieces(text, size)
    chunks: list[tuple[int, int, str]] = []
    i = 0
    start = pieces[0][0] if pieces else 0
    while i < len(pieces):
        end, j = pieces[i][1], i + 1
        while j < len(pieces) and pieces[j][1] - start <= size:
            end, j = pieces[j][1], j + 1
        content = text[start:end].strip()
        if content:
            lead = len(text[start:end]) - len(text[start:end].lstrip())
            chunks.append((start + lead, start + lead + len(content), content))
        if j >= len(pieces):
            break
        nxt = pieces[j][0]
        back = max(nxt - overlap, start + 1)
        space = text.find(" ", back, nxt)
        start = space + 1 if 0 <= space and overlap > 0 and pieces[j][1] - (space + 1) <= size else nxt
        i = j
    return chunks


def sha256(text: str) -> bytes:
    """sha256 of the UTF-8 text (the content and body hashes)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


REPLACE_CHUNKS_SQL = """
WITH old AS (
  SELECT DISTINCT ON (c.content_hash) c.content_hash, c.embedding, c.dims, c.embedding_model_id, c.embedded_at
    FROM pgagent.chunk c
   WHERE c.tenant_id = $1::uuid AND c.document_id = $2 AND c.embedding IS NOT NULL
   ORDER BY c.content_hash, c.chunk_id),
del AS (DELETE FROM pgagent.chunk c WHERE c.tenant_id = $1::uuid AND c.document_id = $2 RETURNING 1),
ins AS (
  INSERT INTO pgagent.chunk (tenant_id, document_id, collection_id, seq, content, content_hash, char_start, char_end,
                             text_config, embedding, dims, embedding_model_id, embedded_at)
  SELECT $1::uuid, $2, $3, n.seq, n.content, pg_catalog.decode(n.hash, 'hex'), n.char_start, n.char_end,
         $5::regconfig, o.embedding, o.dims, o.embedding_model_id, o.embedded_at
    FROM pg_catalog.jsonb_to_recordset($4) AS n(seq integer, content text, hash text, char_start integer,
                                                char_end integer)
    LEFT JOIN old o ON o.content_hash = pg_catalog.decode(n.hash, 'hex')
  RETURNING embedding IS NOT NULL AS reused)
SELECT (SELECT pg_catalog.count(*) FROM del)::int AS removed, (SELECT pg_catalog.count(*) FROM ins)::int AS chunks,
       (SELECT pg_catalog.count(*) FROM ins WHERE reused)::int AS reused"""


def store_chunks(db: Db, tenant_id: str, document_id: int, collection: dict[str, Any], body: str) -> dict[str, int]:
    """Replace the chunks of a document with those of ``body`` (the collection's chunk_size,
    chunk_overlap, text_config); unchanged chunks keep their embeddings. Returns ``{removed,
    chunks, reused}`` (the rest wait for embedding)."""
    parts = chunk_text(body, int(collection["chunk_size"]), int(collection["chunk_overlap"]))
    rows = [{"seq": n, "content": c, "hash": sha256(c).hex(), "char_start": s, "char_end": e}
            for n, (s, e, c) in enumerate(parts, 1)]
    return one(db, REPLACE_CHUNKS_SQL, ["text", "int8", "int8", "jsonb", "text"],
               [tenant_id, document_id, int(collection["collection_id"]), rows, collection["text_config"]])


def search(db: Db, gd: dict, *, tenant_id: str, collections: Sequence[dict[str, Any]], query: str, k: int = 5,
           mode: str = "hybrid", vector: Sequence[float] | None = None, model_id: int | None = None,
           filter: dict[str, Any] | None = None, candidates: int | None = None) -> list[dict[str, Any]]:
    """The ``k`` best chunks of ``collections`` (rows with collection_id and text_config) for
    ``query``: ``[{chunk_id, document_id, collection, title, seq, content, metadata, score,
    vector_rank, text_rank, similarity, text_score}]``, best first. ``vector`` (the query's
    embedding by ``model_id``) is needed for modes vector and hybrid (hybrid without it ranks by
    text only). ``filter``: a JSON object the document's metadata must contain. Each ranking
    looks at ``candidates`` chunks (default max(4k, 40)). The text query is
    ``websearch_to_tsquery`` in the first collection's text configuration. Raises
    InvalidArgument (22023) for a bad mode or k."""
    if mode not in MODES:
        raise InvalidArgument(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= memory.MAX_K:
        raise InvalidArgument(f"k must be an integer from 1 to {memory.MAX_K}, not {k!r}")
    n = candidates or max(4 * k, 40)
    ids = [int(c["collection_id"]) for c in collections]
    use_vec = mode in ("vector", "hybrid") and vector is not None
    use_txt = mode in ("text", "hybrid")
    vs = memory.vector_schema(db, gd)
    dims = len(vector) if use_vec else 0
    order, dist = memory.distance_sql(vs, "c", "$5", dims)
    vec_sql = f"""
  SELECT x.chunk_id, pg_catalog.row_number() OVER (ORDER BY x.dist, x.chunk_id) AS rank, 1 - x.dist AS similarity
    FROM (SELECT c.chunk_id, ({dist}) AS dist
            FROM pgagent.chunk c JOIN pgagent.document d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id
           WHERE c.tenant_id = $1::uuid AND c.collection_id = ANY($2) AND c.dims = {dims} AND c.embedding_model_id = $6
             AND d.metadata @> $4
           ORDER BY {order} LIMIT $7) x""" if use_vec else """
  SELECT NULL::int8 AS chunk_id, NULL::int8 AS rank, NULL::float8 AS similarity WHERE false"""
    txt_sql = """
  SELECT y.chunk_id, pg_catalog.row_number() OVER (ORDER BY y.r DESC, y.chunk_id) AS rank, y.r AS text_score
    FROM (SELECT c.chunk_id, pg_catalog.ts_rank_cd(c.tsv, tq.q) AS r
            FROM pgagent.chunk c JOIN pgagent.document d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id,
                 pg_catalog.websearch_to_tsquery($8::regconfig, $3) AS tq(q)
           WHERE c.tenant_id = $1::uuid AND c.collection_id = ANY($2) AND c.tsv @@ tq.q AND d.metadata @> $4
           ORDER BY 2 DESC, c.chunk_id LIMIT $7) y""" if use_txt else """
  SELECT NULL::int8 AS chunk_id, NULL::int8 AS rank, NULL::float4 AS text_score WHERE false"""
    rrf = f"coalesce(1.0 / ({RRF_K} + v.rank), 0) + coalesce(1.0 / ({RRF_K} + t.rank), 0)"
    score = {"hybrid": rrf, "vector": "v.similarity", "text": "t.text_score"}[mode]
    # planned for each call (cache=False): a cached plan turns generic after five runs in a session,
    # and the generic plan of an ORDER BY distance LIMIT $n cannot use the HNSW index (a sort of every
    # candidate row: 4.1-4.6 s instead of 37-41 ms per hybrid search over 100,000 chunks)
    with memory.iterative_scan(db, use_vec and dims in memory.INDEXED_DIMS):
        rows = db.all(f"""
WITH v AS ({vec_sql}), t AS ({txt_sql}),
f AS (SELECT coalesce(v.chunk_id, t.chunk_id) AS chunk_id, v.rank AS vector_rank, t.rank AS text_rank,
             v.similarity, t.text_score, ({score})::float8 AS score
        FROM v FULL JOIN t ON t.chunk_id = v.chunk_id)
SELECT f.chunk_id, c.document_id, col.name AS collection, d.title, c.seq, c.content, d.metadata, f.score,
       f.vector_rank, f.text_rank, f.similarity::float8 AS similarity, f.text_score::float8 AS text_score
  FROM f JOIN pgagent.chunk c ON c.tenant_id = $1::uuid AND c.chunk_id = f.chunk_id
  JOIN pgagent.document d ON d.tenant_id = c.tenant_id AND d.document_id = c.document_id
  JOIN pgagent.collection col ON col.tenant_id = c.tenant_id AND col.collection_id = c.collection_id
 WHERE f.score IS NOT NULL
 ORDER BY f.score DESC, f.chunk_id LIMIT $9""",
                      ["text", "int8[]", "text", "jsonb", "text", "int8", "int4", "text", "int4"],
                      [tenant_id, ids, query, filter or {}, memory.literal(vector) if use_vec else None, model_id,
                       n, collections[0]["text_config"], k], cache=False)
    out = []
    for r in rows:
        out.append({"chunk_id": int(r["chunk_id"]), "document_id": int(r["document_id"]),
                    "collection": r["collection"], "title": r["title"], "seq": int(r["seq"]), "content": r["content"],
                    "metadata": r["metadata"], "score": round(float(r["score"]), 6),
                    "vector_rank": None if r["vector_rank"] is None else int(r["vector_rank"]),
                    "text_rank": None if r["text_rank"] is None else int(r["text_rank"]),
                    "similarity": None if r["similarity"] is None else round(float(r["similarity"]), 4),
                    "text_score": None if r["text_score"] is None else round(float(r["text_score"]), 4)})
    return out


COLLECTION_SQL = """
SELECT collection_id, name, text_config::text AS text_config, chunk_size, chunk_overlap, embedding_model_id
  FROM pgagent.collection WHERE tenant_id = $1::uuid AND name = $2"""


def collection(db: Db, tenant_id: str, name: Any) -> dict[str, Any]:
    """The tenant's collection ``name``. Raises InvalidArgument (22023: not a name), NotFound (42704)."""
    if not isinstance(name, str) or name == "":
        raise InvalidArgument("collection must be the name of a collection")
    row = one(db, COLLECTION_SQL, ["text", "text"], [tenant_id, name])
    if row is None:
        raise NotFound(f"collection {name!r} does not exist (for this tenant)",
                       hint="Create it with pgagent.create_collection, or list them: SELECT name FROM pgagent.collection;")
    return row


def search_named(db: Db, gd: dict, tenant_id: str, names: Sequence[str], query: Any, k: int, mode: str,
                 filter: dict[str, Any] | None, *, embedder: Callable[[str | None], Any]
                 ) -> tuple[list[dict[str, Any]], str | None]:
    """Search the named collections (:func:`search`); the query is embedded (role "query") with
    the first collection's embedding model through ``embedder(model name or None) -> (model row,
    embed)`` (loop.embedder). Returns (results, note): in hybrid mode a query that cannot be
    embedded (no model, the provider failed) is ranked by text and the note says why. Raises
    InvalidArgument (22023), NotFound (42704), ProviderFailed (58000: vector mode)."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidArgument("query must be a non-empty text")
    if mode not in MODES:
        raise InvalidArgument(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    cols = [collection(db, tenant_id, n) for n in names]
    vector, model_id, note = None, None, None
    if mode != "text":
        try:
            first = cols[0]["embedding_model_id"]
            mname = None if first is None else one(
                db, "SELECT name FROM pgagent.model WHERE tenant_id = $1::uuid AND model_id = $2", ["text", "int8"],
                [tenant_id, first])["name"]
            m, embed = embedder(mname)
            vector, model_id = embed([query], role="query")[0], int(m["model_id"])
        except (NotFound, ProviderFailed) as e:
            if mode == "vector":
                raise
            note = f"vector search unavailable, ranked by text only: {e.message}"
    return search(db, gd, tenant_id=tenant_id, collections=cols, query=query, k=k, mode=mode, vector=vector,
                  model_id=model_id, filter=filter), note


def prompt_section(passages: list[dict[str, Any]]) -> str:
    """The system-prompt section that shows retrieved passages to the model, with cite marks."""
    parts = [f"{p['cite']} ({p['title']}):\n{p['content']}" for p in passages]
    return ("Passages from the knowledge base that may answer the user. Answer from them, and end with the cite "
            "mark, such as [12:34], of the passage you used:\n\n" + "\n\n".join(parts))


PENDING_SQL = """
SELECT c.chunk_id, c.content, c.collection_id
  FROM pgagent.chunk c
 WHERE c.tenant_id = $1::uuid AND c.embedding IS NULL AND c.embed_attempts < $3
   AND c.collection_id = (SELECT p.collection_id FROM pgagent.chunk p
                           WHERE p.tenant_id = $1::uuid AND p.embedding IS NULL AND p.embed_attempts < $3
                           ORDER BY p.chunk_id LIMIT 1)
 ORDER BY c.chunk_id
 LIMIT $2
   FOR UPDATE OF c SKIP LOCKED"""


def embed_batch(db: Db, gd: dict, tenant_id: str, batch: int,
                embedder: Callable[[int | None], tuple[dict[str, Any], Callable[..., list[list[float]]]]]
                ) -> dict[str, Any]:
    """Embed up to ``batch`` chunks of the tenant that have no embedding yet (those of one
    collection, oldest first; rows locked FOR UPDATE SKIP LOCKED, so concurrent workers take
    different chunks) with the collection's embedding model (``embedder(model_id or None)``
    returns (model row, embed)). A failure is recorded on the chunks (embed_attempts + 1,
    embed_error); a chunk is tried at most MAX_ATTEMPTS times. Returns ``{embedded, failed,
    collection_id}``."""
    rows = db.all(PENDING_SQL, ["text", "int4", "int4"], [tenant_id, batch, MAX_ATTEMPTS])
    if not rows:
        return {"embedded": 0, "failed": 0, "collection_id": None}
    cid = int(rows[0]["collection_id"])
    ids = [int(r["chunk_id"]) for r in rows]
    try:
        col = one(db, "SELECT embedding_model_id FROM pgagent.collection WHERE tenant_id = $1::uuid AND collection_id = $2",
                  ["text", "int8"], [tenant_id, cid])
        model, embed = embedder(None if col["embedding_model_id"] is None else int(col["embedding_model_id"]))
        vectors = embed([r["content"] for r in rows], role="passage")
    except Exception as e:  # the provider failed, no model: record it on the chunks, never lose them
        msg = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
        db.all("UPDATE pgagent.chunk SET embed_attempts = embed_attempts + 1, embed_error = $3 "
               "WHERE tenant_id = $1::uuid AND chunk_id = ANY($2)", ["text", "int8[]", "text"], [tenant_id, ids, msg[:2000]])
        return {"embedded": 0, "failed": len(ids), "collection_id": cid, "error": msg}
    vs = memory.vector_schema(db, gd)
    db.all(f"""
UPDATE pgagent.chunk c SET embedding = x.v::{vs}.vector, dims = x.d, embedding_model_id = $3,
       embedded_at = pg_catalog.now(), embed_error = NULL
  FROM pg_catalog.jsonb_to_recordset($2) AS x(id int8, v text, d int4)
 WHERE c.tenant_id = $1::uuid AND c.chunk_id = x.id""", ["text", "jsonb", "int8"],
           [tenant_id, [{"id": i, "v": memory.literal(v), "d": len(v)} for i, v in zip(ids, vectors)],
            int(model["model_id"])])
    return {"embedded": len(ids), "failed": 0, "collection_id": cid}
