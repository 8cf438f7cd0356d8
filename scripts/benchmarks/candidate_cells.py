"""How many IVF cells ``duplicates`` must search on a real store: for each ``--nprobe``, the
share of exact search's candidate pairs that the index finds, and how many of the verified
duplicate pairs (within the clusters ``duplicates`` reports) it keeps.

    python scripts/benchmarks/candidate_cells.py /tmp/q/lite1.h5 --layer pooled

Builds an ``ivf-sq8`` index beside the store (``<store>.index/``, replacing one there).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from fstore.quality.duplicates import DuplicateOptions, candidate_pairs, duplicates
from fstore.quality.index import IndexOptions, build_index
from fstore.quality.rows import store_rows


def pair_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("store")
    parser.add_argument("--layer", default=None)
    parser.add_argument("--nlist", type=int, default=0, help="0: fstore index's rule.")
    parser.add_argument("--nprobe", default="1,2,4,8,16")
    args = parser.parse_args()
    out = {"store": args.store, "load_before": os.getloadavg()}
    rows = store_rows(args.store)
    t0 = time.perf_counter()
    result = duplicates(args.store, args.layer, progress=False)
    out["duplicates_seconds"] = time.perf_counter() - t0
    layer, position = result.layer, rows.position()
    copies = set()
    for cluster in result.clusters:
        at = sorted(position[k] for k in cluster.keys)
        copies |= {(a, b) for i, a in enumerate(at) for b in at[i + 1 :]}
    exact = pair_set(candidate_pairs(args.store, layer, rows, DuplicateOptions())[0])
    reachable = copies & exact  # pairs joined only through a third image are no candidates
    report = build_index(args.store, layer, IndexOptions(kind="ivf-sq8", nlist=args.nlist))
    out.update(exact_candidates=len(exact), copy_pairs=len(copies), reachable=len(reachable))
    out["index"] = {"kind": report.kind, "rows": report.rows, "seconds": report.seconds}
    out["by_nprobe"] = {}
    for nprobe in map(int, args.nprobe.split(",")):
        options = DuplicateOptions(use_index=True, nprobe=nprobe)
        found = pair_set(candidate_pairs(args.store, layer, rows, options)[0])
        out["by_nprobe"][nprobe] = {
            "candidate_recall": len(found & exact) / max(1, len(exact)),
            "copies_found": len(found & reachable),
        }
        print(json.dumps({nprobe: out["by_nprobe"][nprobe]}), flush=True)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
