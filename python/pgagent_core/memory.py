"""Long-term memory: store a text with its embedding, and find the memories relevant to a text.

A memory belongs to a tenant and an agent and has a scope: ``conversation`` (recalled in that
conversation only), ``user`` (in every conversation of its owner with the agent) or ``agent``
(for every user of the agent). Embeddings are pgvector vectors of any dimension; a search uses
the same embedding model that wrote the memory, and the partial HNSW index of its dimension
(``memory_hnsw_<dims>``, cosine) where there is one (docs/memory.md).

Recall score (docs/memory.md), after "Generative Agents" (Park et al., 2023, sec. 4.1: the sum of
relevance, recency and importance, each in [0, 1], equal weights, recency decaying by 0.995 per
hour since the memory was last retrieved)::

    similarity = 1 - cosine distance                     (in [-1, 1]; >= min_similarity to qualify)
    recency    = 0.995 ** hours since last_recalled_at (else created_at)
    score      = (similarity + importance + recency) / 3

The ``CANDIDATES`` x k nearest by similarity that pass ``min_similarity`` are ranked by score and
the best k returned; recalling a memory stamps ``last_recalled_at`` and counts it.

This module does no HTTP: callers pass the query's embedding (see loop.embedder).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from .db import Db, one
from .errors import InvalidArgument
from .limits import clean_text

SCOPES = ("conversation", "user", "agent")
INDEXED_DIMS = (384, 768, 1024, 1536)  # = the memory_hnsw_<dims> indexes of sql/10_tables.sql
#: hnsw.ef_search of pgagent's searches unless the session sets pgagent.ef_search (memory_hnsw_384
#: at 1,000,000 rows: recall@10 about 0.95 at 200; bench/results.md "Memory and knowledge search")
EF_SEARCH = 200
CANDIDATES = 4          # nearest neighbours fetched per memory returned, before ranking by score
RECENCY_DECAY = 0.995   # per hour (Park et al. 2023)
MAX_CONTENT = 20000     # characters (the table's CHECK)
MAX_K = 100

VECTOR_SCHEMA_SQL = """
SELECT n.nspname AS schema FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname = 'vector'"""


def vector_schema(db: Db, gd: dict) -> str:
    """The schema pgvector is installed in, quoted for SQL (cached for the session)."""
    s = gd.get("pgagent_vector_schema")
    if s is None:
        name = one(db, VECTOR_SCHEMA_SQL)["schema"]
        s = gd["pgagent_vector_schema"] = '"' + name.replace('"', '""') + '"'
    return s


def distance_sql(vs: str, alias: str, param: str, dims: int) -> tuple[str, str]:
    """``(order, exact)``: the SQL expression to ORDER BY for the nearest rows of ``alias`` to the
    vector parameter ``param``, and the exact cosine distance. For an indexed dimension
    (INDEXED_DIMS) the order is the HNSW index's expression (both sides cast to
    ``halfvec(dims)``: sql/10_tables.sql indexes half-precision copies, half the size of
    ``vector``'s), while similarities are computed from the stored single-precision vectors."""
    exact = f"{alias}.embedding OPERATOR({vs}.<=>) {param}::{vs}.vector"
    if dims not in INDEXED_DIMS:
        return exact, exact
    return (f"{alias}.embedding::{vs}.halfvec({dims}) OPERATOR({vs}.<=>) {param}::{vs}.halfvec({dims})", exact)


@contextmanager
def iterative_scan(db: Db, on: bool) -> Iterator[None]:
    """With ``on``, run the block with ``hnsw.iterative_scan = relaxed_order`` (pgvector 0.8: an
    HNSW scan keeps going until enough rows pass the query's filters) and ``hnsw.ef_search`` set
    to the session's ``pgagent.ef_search`` (a placeholder setting, 1..1000; default EF_SEARCH:
    pgvector's own default of 40 finds about two thirds of the true 10 nearest among 1,000,000
    memories, 200 about 0.95, bench/results.md); put both back afterwards, error or not. One
    statement each way. Without ``on``, do nothing. Raises InvalidArgument (22023) for a
    pgagent.ef_search that is not an integer from 1 to 1000."""
    if not on:
        yield
        return
    old = one(db, """SELECT pg_catalog.current_setting('hnsw.iterative_scan', true) AS it,
                            pg_catalog.current_setting('hnsw.ef_search', true) AS ef,
                            pg_catalog.current_setting('pgagent.ef_search', true) AS want""")
    want = (old["want"] or "").strip() or str(EF_SEARCH)
    if not want.isdigit() or not 1 <= int(want) <= 1000:
        raise InvalidArgument(f"pgagent.ef_search must be an integer from 1 to 1000, not {old['want']!r}")
    db.all("SELECT pg_catalog.set_config('hnsw.iterative_scan', 'relaxed_order', true), "
           "pg_catalog.set_config('hnsw.ef_search', $1, true)", ["text"], [str(int(want))])
    try:
        yield
    finally:
        db.all("SELECT pg_catalog.set_config('hnsw.iterative_scan', $1, true), "
               "pg_catalog.set_config('hnsw.ef_search', $2, true)", ["text", "text"],
               [old["it"] or "off", old["ef"] or "40"])


def literal(vector: Sequence[float]) -> str:
    """A pgvector text literal ``[x,y,...]``."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def check_content(content: Any) -> str:
    """``content`` cleaned; raises InvalidArgument (22023) unless it is 1..20,000 characters."""
    if not isinstance(content, str) or not content.strip():
        raise InvalidArgument("content must be a non-empty text")
    content = clean_text(content) or ""
    if len(content) > MAX_CONTENT:
        raise InvalidArgument(f"content is {len(content)} characters; a memory holds at most {MAX_CONTENT}")
    return content


def check_importance(importance: Any) -> float:
    """``importance`` as a float; raises InvalidArgument (22023) unless it is a number in 0..1."""
    if isinstance(importance, bool) or not isinstance(importance, (int, float)) or not 0 <= importance <= 1:
        raise InvalidArgument(f"importance must be a number from 0 to 1, not {importance!r}")
    return float(importance)


def store(db: Db, gd: dict, *, tenant_id: str, agent_id: int, scope: str, owner: str | None,
          conversation_id: int | None, content: str, importance: float, model_id: int,
          vector: Sequence[float], created_by: str, source_turn_id: int | None = None) -> int:
    """Insert one memory (``owner`` is dropped for scope agent, ``conversation_id`` used for
    scope conversation only); returns its memory_id. Raises InvalidArgument (22023) for a bad
    scope."""
    if scope not in SCOPES:
        raise InvalidArgument(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    if scope == "conversation" and conversation_id is None:
        raise InvalidArgument("a memory of scope conversation needs a conversation")
    vs = vector_schema(db, gd)
    row = one(db, f"""
INSERT INTO pgagent.memory (tenant_id, agent_id, scope, owner, conversation_id, content, embedding, dims,
                            embedding_model_id, importance, source_turn_id, created_by)
VALUES ($1::uuid, $2, $3, $4, $5, $6, $7::{vs}.vector, $8, $9, $10, $11, $12)
RETURNING memory_id""", ["text", "int8", "text", "name", "int8", "text", "text", "int4", "int8", "float4", "int8", "name"],
              [tenant_id, agent_id, scope, None if scope == "agent" else owner,
               conversation_id if scope == "conversation" else None, content, literal(vector), len(vector),
               model_id, importance, source_turn_id, created_by])
    return int(row["memory_id"])


def search(db: Db, gd: dict, *, tenant_id: str, agent_id: int, owner: str, conversation_id: int | None,
           model_id: int, vector: Sequence[float], k: int = 5, min_similarity: float = 0.0,
           scopes: Sequence[str] = SCOPES, touch: bool = True) -> list[dict[str, Any]]:
    """The ``k`` memories of ``agent_id`` that ``owner`` may recall in ``conversation_id``
    (scope agent; scope user owned by ``owner``; scope conversation of that conversation owned
    by ``owner``) embedded by ``model_id``, most relevant first (module docstring: similarity
    at least ``min_similarity``, ranked by score). Each is ``{memory_id, scope, content,
    importance, similarity, score, created_at}`` (scores rounded to 4 places). With ``touch``
    their last_recalled_at and recall_count are updated. Uses the HNSW index of the vector's
    dimension if there is one (with pgvector's iterative scan, so the filters do not starve
    it). Raises InvalidArgument (22023) for k outside 1..100."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidArgument(f"k must be an integer from 1 to {MAX_K}, not {k!r}")
    vs, dims = vector_schema(db, gd), len(vector)
    order, dist = distance_sql(vs, "m", "$6", dims)
    # planned for each call (cache=False): a cached plan turns generic after five runs in a session,
    # and the generic plan of an ORDER BY distance LIMIT $n cannot use the HNSW index (a sort of every
    # candidate row: knowledge.search over 100,000 chunks took 4.1-4.6 s instead of 37-41 ms)
    with iterative_scan(db, dims in INDEXED_DIMS):
        rows = db.all(f"""
WITH near AS (
  SELECT m.memory_id, m.scope, m.content, m.importance, m.created_at, m.last_recalled_at,
         1 - ({dist}) AS similarity
    FROM pgagent.memory m
   WHERE m.tenant_id = $1::uuid AND m.agent_id = $2 AND m.embedding_model_id = $3 AND m.dims = {dims}
     AND m.scope = ANY($7::text[])
     AND (m.owner IS NULL OR (m.owner = $4 AND (m.conversation_id IS NULL OR m.conversation_id = $5)))
   ORDER BY {order}
   LIMIT $8)
SELECT memory_id, scope, content, importance::float8 AS importance, similarity,
       (similarity + importance + pg_catalog.power({RECENCY_DECAY},
          extract(epoch FROM pg_catalog.now() - coalesce(last_recalled_at, created_at)) / 3600.0)) / 3.0 AS score,
       created_at
  FROM near WHERE similarity >= $9
 ORDER BY score DESC, memory_id DESC LIMIT $10""",
                      ["text", "int8", "int8", "name", "int8", "text", "text[]", "int4", "float8", "int4"],
                      [tenant_id, agent_id, model_id, owner, conversation_id, literal(vector), list(scopes),
                       k * CANDIDATES, float(min_similarity), k], cache=False)
    out = [{"memory_id": int(r["memory_id"]), "scope": r["scope"], "content": r["content"],
            "importance": round(float(r["importance"]), 4), "similarity": round(float(r["similarity"]), 4),
            "score": round(float(r["score"]), 4), "created_at": str(r["created_at"])} for r in rows]
    if touch and out:
        db.all("""UPDATE pgagent.memory SET last_recalled_at = pg_catalog.now(), recall_count = recall_count + 1
                   WHERE tenant_id = $1::uuid AND memory_id = ANY($2::int8[])""",
               ["text", "int8[]"], [tenant_id, [m["memory_id"] for m in out]])
    return out


def prompt_section(memories: list[dict[str, Any]]) -> str:
    """The system-prompt section that shows recalled memories to the model."""
    lines = [f"- {m['content']}" for m in memories]
    return "Things you remember (from earlier conversations; use them if they help):\n" + "\n".join(lines)
