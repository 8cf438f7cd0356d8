"""The quality tools at scale, on simulated features: the compressed index (build time and peak
memory, query p50 in-process and one CLI call, recall@10 against exact search) and the
candidates of ``duplicates`` generated through it.

The features are a mixture of clusters, each spread over a few directions of its own (data on
which nearest neighbours mean something, unlike i.i.d. noise): ``--rows`` × ``--dim`` float32,
written shard by shard into a store (never more than one shard in memory). Each measured step
runs in its own process, so its peak resident memory (``fstore.fsutil.peak_rss_mib``) is its
own.

    python scripts/benchmarks/quality_scale.py --rows 1000000 --work /tmp/qscale

(``--rows 200000`` for a shorter run; the store is kept and reused by the next run.)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import numpy as np

from fstore.quality.index import IndexOptions

LAYER = "pooled"


def simulated(args, first: int, n: int) -> np.ndarray:
    """Rows ``first .. first+n`` of the mixture (the same rows for the same arguments)."""
    basis_rng = np.random.default_rng(args.seed)
    centres = basis_rng.normal(size=(args.clusters, args.dim)).astype(np.float32)
    bases = basis_rng.normal(size=(args.clusters, args.spread, args.dim)).astype(np.float32)
    bases *= 0.6 / np.sqrt(args.spread)
    rng = np.random.default_rng([args.seed, first])
    c = rng.integers(0, args.clusters, n)
    z = rng.normal(size=(n, args.spread)).astype(np.float32)
    X = centres[c] + np.einsum("ns,nsd->nd", z, bases[c])
    X += 0.05 * rng.normal(size=X.shape).astype(np.float32)
    return X


def write_store(args, store: Path) -> None:
    """A store of the simulated rows, ``--shard-rows`` at a time (the store's own writers)."""
    from fstore.store import catalog
    from fstore.store.catalog import connect, transaction
    from fstore.store.layout import Manifest, sidecar, write_manifest
    from fstore.store.shards import ShardRows, refresh_view, shard_record, write_shard

    manifest = Manifest(
        image_root="", split_layout=True,
        split={"method": "given", "train_per_class": 0, "seed": 0}, layers=(LAYER,),
        shapes={LAYER: (args.dim,)}, dtype="float32", fingerprint="arrays", provenance={},
    )  # fmt: skip
    (sidecar(store) / "shards").mkdir(parents=True)
    write_manifest(store, manifest)
    with closing(connect(store, write=True)) as con:
        for g, first in enumerate(range(0, args.rows, args.shard_rows)):
            n = min(args.shard_rows, args.rows - first)
            keys = [f"train/c/img_{first + i:08d}" for i in range(n)]
            flat = {LAYER: simulated(args, first, n)}
            name = f"g{g + 1:06d}-s000000"
            rows = ShardRows(keys, [""] * n, [0] * n, [0] * n, flat)
            record = shard_record(name, rows, pos=list(range(first, first + n)))
            info = write_shard(store, f"{name}.h5", keys, flat, "float32", record)
            with transaction(con, store):
                catalog.add_plan(con, [name], ((k, "c", "train", name, 0, 0) for k in keys))
                con.executemany(
                    "UPDATE images SET pos = ? WHERE key = ?", zip(range(first, first + n), keys)
                )
            images = [(k, i, "", 0, 0, None) for i, k in enumerate(keys)]
            catalog.commit_shard(con, store, name, info, images)
            del flat, rows
        refresh_view(store, con, manifest)


def step(name: str, args, store: Path) -> dict:
    """One measured step in a fresh process: its result, seconds and peak memory."""
    out = subprocess.run(
        [sys.executable, __file__, "--step", name, "--store", str(store), *args.passed],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


def run_step(name: str, args, store: Path) -> dict:
    from fstore.fsutil import peak_rss_mib

    t0 = time.perf_counter()
    result = STEPS[name](args, store)
    return {**result, "seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()}


def build(args, store: Path) -> dict:
    from fstore.quality.index import IndexOptions, build_index

    options = IndexOptions(kind=args.kind, nlist=args.nlist, nprobe=args.nprobe,
                           train_rows=args.train_rows, rerank=args.rerank)  # fmt: skip
    report = build_index(store, LAYER, options)
    return {"kind": report.kind, "rows": report.rows, "action": report.action}


def queries(args, store: Path) -> dict:
    """Single-query latency through the loaded index, and recall@10 against exact search."""
    from fstore.quality.index import open_index
    from fstore.quality.neighbors import exact_search
    from fstore.quality.rows import RowReader, store_rows

    rows = store_rows(store)
    rng = np.random.default_rng(args.seed + 1)
    picked = np.sort(rng.choice(len(rows), args.queries, replace=False))
    with RowReader(rows, LAYER) as reader:
        Q = reader.read(picked)
    Q += 0.05 * rng.normal(size=Q.shape).astype(np.float32)  # near, not equal, to a row
    t0 = time.perf_counter()
    index = open_index(store, LAYER, rows)
    opened = time.perf_counter() - t0
    times, found = [], []
    for q in Q:
        t = time.perf_counter()
        found.append(index.search(q[None], 10)[1][0])
        times.append(time.perf_counter() - t)
    sample = Q[: args.exact_queries]
    t = time.perf_counter()
    _, exact = exact_search(store, LAYER, sample, 10)
    exact_seconds = time.perf_counter() - t
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(found, exact)])
    return {
        "open_seconds": opened, "p50_ms": 1000 * float(np.median(times)),
        "p95_ms": 1000 * float(np.percentile(times, 95)), "recall_at_10": float(recall),
        "exact_queries": len(sample), "exact_seconds": exact_seconds,
        "key": str(rows.keys[picked[0]]),
    }  # fmt: skip


def candidates(args, store: Path) -> dict:
    """``duplicates``' candidates over every row, through the index, ``--candidate-nprobe``'s
    first value of cells per row."""
    from fstore.quality.duplicates import DuplicateOptions, candidate_pairs
    from fstore.quality.rows import store_rows

    rows = store_rows(store)
    nprobe = int(args.candidate_nprobe.split(",")[0])
    options = DuplicateOptions(use_index=True, nprobe=nprobe)
    pairs, sims = candidate_pairs(store, LAYER, rows, options)
    return {"nprobe": nprobe, "pairs": len(pairs),
            "min_similarity": float(sims.min()) if len(sims) else None}  # fmt: skip


def rate(args, store: Path) -> dict:
    """For each of ``--candidate-nprobe``'s values: queries per second of the candidates'
    search (k + 1 = 6 neighbours, the index's own similarities) over the first
    ``--rate-queries`` rows, and the candidates' recall: of the pairs that exact search finds
    (a row and one of its 5 nearest others at cosine >= 0.75), over the first
    ``--exact-queries`` rows, the share that the index finds too."""
    from fstore.quality.duplicates import DuplicateOptions, near_pairs
    from fstore.quality.index import open_index
    from fstore.quality.neighbors import exact_search
    from fstore.quality.rows import RowReader, store_rows

    rows, options = store_rows(store), DuplicateOptions()
    with RowReader(rows, LAYER) as reader:
        X = reader.read(np.arange(min(args.rate_queries, len(rows))))
    index = open_index(store, LAYER, rows)
    sample = X[: args.exact_queries]
    t0 = time.perf_counter()
    exact_sims, exact = exact_search(store, LAYER, sample, options.k + 1)
    exact_seconds = time.perf_counter() - t0

    def pairs(sims, hits):
        return set(map(tuple, near_pairs(sims, hits, 0, options.min_similarity)[0].tolist()))

    wanted = pairs(exact_sims, exact)
    out = {"queries": len(X), "exact_queries": len(sample), "exact_seconds": exact_seconds,
           "exact_pairs": len(wanted), "by_nprobe": {}}  # fmt: skip
    for nprobe in map(int, args.candidate_nprobe.split(",")):
        t0 = time.perf_counter()
        sims, hits = index.search(X, options.k + 1, rerank=0, nprobe=nprobe)
        seconds = time.perf_counter() - t0
        found = pairs(sims[: len(sample)], hits[: len(sample)])
        out["by_nprobe"][nprobe] = {
            "search_seconds": seconds, "queries_per_s": len(X) / seconds,
            "candidate_recall": len(found & wanted) / max(1, len(wanted)),
        }  # fmt: skip
        print(json.dumps({nprobe: out["by_nprobe"][nprobe]}), file=sys.stderr, flush=True)
    return out


STEPS = {"build": build, "queries": queries, "candidates": candidates, "rate": rate}


def cli_call(store: Path, key: str) -> float:
    command = [str(Path(sys.executable).parent / "fstore"), "neighbors", key, "--store",
               str(store), "--layer", LAYER, "--index", "--json"]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--spread", type=int, default=16, help="Directions of each cluster.")
    parser.add_argument("--shard-rows", type=int, default=50_000)
    parser.add_argument("--kind", default="ivf-sq8", choices=("ivf-sq8", "ivf-pq"))
    # the index's defaults are fstore index's own, re-ranking 100 candidates
    parser.add_argument("--nlist", type=int, default=IndexOptions.nlist, help="0: the rule.")
    parser.add_argument("--nprobe", type=int, default=IndexOptions.nprobe)
    parser.add_argument("--train-rows", type=int, default=IndexOptions.train_rows)
    parser.add_argument("--rerank", type=int, default=100)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=100)
    parser.add_argument("--rate-queries", type=int, default=10_000)
    parser.add_argument(
        "--candidate-nprobe",
        default="4",
        help="IVF cells per row for duplicates' candidates; rate times each of a list (16,4,1).",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/qscale"))
    parser.add_argument(
        "--skip", default="rate", help="Steps left out (build, queries, candidates, rate)."
    )
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args, argv = parser.parse_args(), sys.argv[1:]
    if args.step:
        print(json.dumps(run_step(args.step, args, args.store)))
        return
    args.passed = argv
    store = args.work / f"sim-{args.rows}x{args.dim}.h5"
    out = {"rows": args.rows, "dim": args.dim, "load_before": os.getloadavg()}
    if not store.exists():
        args.work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        write_store(args, store)
        out["write_seconds"] = time.perf_counter() - t0
    for name in STEPS:
        if name not in args.skip.split(","):
            out[name] = step(name, args, store)
            print(json.dumps({name: out[name]}), flush=True)
    if "queries" in out:
        out["cli_seconds"] = [cli_call(store, out["queries"]["key"]) for _ in range(2)]
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
