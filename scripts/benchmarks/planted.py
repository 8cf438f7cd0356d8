"""Planted faults in a copy of 15-Scene: does ``duplicates`` find planted near copies, and does
``audit`` rank flipped labels first? Mean over planting seeds, beside the naive references
computed in the same run.

For each seed: copy the image folder, plant ``--copies`` edited copies (one or two of the edits
of :mod:`fstore.quality.edits`) of random images into a random split, most in their source's
class and some in another, and move ``--flip`` of the training images into another class;
build an EfficientNet-Lite1 ``pooled`` store of the copy; then

- duplicates: recall (planted pairs inside one cluster) and the other pairs found (pairs of
  a cluster that are not planted ones: 15-Scene's own near copies among them; at most
  ``--show`` of them are listed, with thumbnails in ``--out``); reference: every pair at
  cosine ≥ 0.90 (brute force);
- label errors: precision@75 (flipped images among the first 75); reference: cleanlab on
  5-fold logistic-regression probabilities of ``pooled`` (what ``audit`` uses by default).

Run it with ``python scripts/benchmarks/planted.py --seeds 0,1,2 --work /tmp/planted``
(about 3 min a seed on 2 cores: the build is most of it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from fstore.quality import edits

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
LITE1 = SHARED / "models" / "efficientnet_lite1.onnx"


def plant(source: Path, dest: Path, seed: int, copies: int, flip: float) -> dict:
    """The planted copy of ``source`` in ``dest``: planted pairs (source key, copy key) and the
    keys whose class was flipped."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("README*"))
    keys = sorted(str(p.relative_to(dest)) for p in dest.rglob("*.jpg"))
    classes = sorted({k.split("/")[1] for k in keys})
    train = [k for k in keys if k.startswith("train/")]
    flipped_from = rng.choice(train, round(flip * len(train)), replace=False)
    flipped, moved = [], {}
    for key in flipped_from:
        split, cls, name = key.split("/")
        other = rng.choice([c for c in classes if c != cls])
        new = f"{split}/{other}/flip_{name}"
        (dest / key).rename(dest / new)
        flipped.append(new)
        moved[key] = new
    kinds = edits.all_edits()
    pairs = []
    for i, key in enumerate(rng.choice(keys, copies, replace=False)):
        src = moved.get(str(key), str(key))
        names = kinds[i % len(kinds)]
        cls = src.split("/")[1]
        if rng.random() < 0.2:
            cls = rng.choice([c for c in classes if c != cls])
        copy = f"{rng.choice(['train', 'test'])}/{cls}/planted_{i:04d}.jpg"
        with Image.open(dest / src) as img:
            edits.apply(img.convert("RGB"), names).save(dest / copy, quality=90)
        pairs.append({"source": src, "copy": copy, "edits": "+".join(names)})
    return {"pairs": pairs, "flipped": flipped}


def build_store(images: Path, store: Path) -> float:
    from fstore.images.preprocess import Preprocessing
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store

    start = time.perf_counter()
    prep = Preprocessing(resize=274, crop=240)  # ImageNet mean and std are the defaults
    build_store(BuildConfig(store=store, images=images, model=LITE1, preprocessing=prep,
                      layers=("pooled",), provider="cpu"))  # fmt: skip
    return time.perf_counter() - start


def duplicate_figures(store: Path, planted: list[dict], show: int) -> dict:
    from fstore.quality.duplicates import duplicates
    from fstore.quality.rows import unit_rows
    from fstore.store import load_features

    start = time.perf_counter()
    result = duplicates(store, "pooled")
    seconds = time.perf_counter() - start
    found = [set(c.keys) for c in result.clusters]
    known = {frozenset((p["source"], p["copy"])) for p in planted}
    hit = [p for p in planted if any({p["source"], p["copy"]} <= c for c in found)]
    cluster_pairs = {frozenset((a, b)) for c in found for a in c for b in c if a < b}
    other = sorted(tuple(sorted(p)) for p in cluster_pairs - known)
    fs = load_features(store, "pooled")
    X = unit_rows(fs.X)
    sims = X @ X.T
    np.fill_diagonal(sims, -1)
    a, b = np.nonzero(np.triu(sims >= 0.90))
    naive = {frozenset((str(fs.keys[i]), str(fs.keys[j]))) for i, j in zip(a, b)}
    missed = [p for p in planted if p not in hit]
    return {
        "recall": len(hit) / len(planted),
        "other_pairs": len(other),
        "other_sample": other[:show],
        "missed": missed,
        "naive_recall": len(known & naive) / len(known),
        "naive_other_pairs": len(naive - known),
        "seconds": seconds,
        "candidates": result.candidates,
    }


def label_figures(store: Path, flipped: list[str]) -> dict:
    from fstore.quality.audit import audit

    start = time.perf_counter()
    result = audit(store, "pooled")
    seconds = time.perf_counter() - start
    top = [i.key for i in result.issues[:75]]
    return {
        "precision_at_75": sum(k in set(flipped) for k in top) / 75,
        "issues": len(result.issues),
        "flipped": len(flipped),
        "seconds": seconds,
    }


def thumbnails(images: Path, pairs: list, out: Path) -> None:
    from fstore.report.stages_quality import strip

    out.mkdir(parents=True, exist_ok=True)
    for i, pair in enumerate(pairs):
        strip([images / k for k in pair], out / f"other{i:03d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=SHARED / "data" / "scene15")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--show", type=int, default=400, help="Other pairs listed (at most).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/planted"))
    parser.add_argument("--out", type=Path, default=Path("planted-results"))
    args = parser.parse_args()
    runs = []
    for seed in map(int, args.seeds.split(",")):
        images, store = args.work / f"scene15-{seed}", args.work / f"lite1-{seed}.h5"
        for old in args.work.glob(f"lite1-{seed}.h5*"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        truth = plant(args.images, images, seed, args.copies, args.flip)
        run = {"seed": seed, "build_seconds": build_store(images, store)}
        run["duplicates"] = duplicate_figures(store, truth["pairs"], args.show)
        run["labels"] = label_figures(store, truth["flipped"])
        run["load_average"] = os.getloadavg()
        thumbnails(images, run["duplicates"]["other_sample"][:24], args.out / f"seed{seed}")
        brief = {**run, "duplicates": {k: v for k, v in run["duplicates"].items()
                                       if k not in ("other_sample", "missed")}}  # fmt: skip
        print(json.dumps(brief, default=str), flush=True)
        runs.append(run)
    mean = {
        name: float(np.mean([get(r) for r in runs]))
        for name, get in {
            "duplicates_recall": lambda r: r["duplicates"]["recall"],
            "duplicates_other_pairs": lambda r: r["duplicates"]["other_pairs"],
            "naive_cosine090_recall": lambda r: r["duplicates"]["naive_recall"],
            "naive_cosine090_other_pairs": lambda r: r["duplicates"]["naive_other_pairs"],
            "label_precision_at_75": lambda r: r["labels"]["precision_at_75"],
        }.items()
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "planted.json").write_text(json.dumps({"mean": mean, "runs": runs}, indent=1))
    print(json.dumps({"mean": mean}, indent=1))


if __name__ == "__main__":
    main()
