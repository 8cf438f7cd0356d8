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
- label errors: precision@75 of ``audit``'s ranking, counting the flipped images only, and
  counting every wrong label (the flipped images and the training copies planted under
  another class than their source's, which are wrong labels too and compete with the flipped
  ones for the first 75 places); reference: cleanlab's ``find_label_issues`` on 5-fold
  standardised logistic-regression probabilities of ``pooled``, its first 75.

Run it with ``python scripts/benchmarks/planted.py --seeds 0,1,2 --work /tmp/planted``
(about 3 min a seed on 2 cores: the build is most of it; ``--reuse`` keeps earlier builds).
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


def plan(source: Path, seed: int, copies: int, flip: float) -> dict:
    """What ``plant`` does to a copy of ``source`` with ``seed``, decided without writing:
    the moves (old key -> new key) of the flipped images, the planted pairs (source key, copy
    key, edits) and the wrong labels (the flipped images, and the copies filed under another
    class than their source's, in the training split)."""
    rng = np.random.default_rng(seed)
    keys = sorted(str(p.relative_to(source)) for p in source.rglob("*.jpg"))
    classes = sorted({k.split("/")[1] for k in keys})
    train = [k for k in keys if k.startswith("train/")]
    flipped_from = rng.choice(train, round(flip * len(train)), replace=False)
    moved = {}
    for key in flipped_from:
        split, cls, name = key.split("/")
        other = rng.choice([c for c in classes if c != cls])
        moved[str(key)] = f"{split}/{other}/flip_{name}"
    kinds = edits.all_edits()
    pairs = []
    for i, key in enumerate(rng.choice(keys, copies, replace=False)):
        src = moved.get(str(key), str(key))
        names = kinds[i % len(kinds)]
        cls = src.split("/")[1]
        if rng.random() < 0.2:
            cls = rng.choice([c for c in classes if c != cls])
        copy = f"{rng.choice(['train', 'test'])}/{cls}/planted_{i:04d}.jpg"
        pairs.append({"source": src, "copy": copy, "edits": "+".join(names)})
    # two flipped images of one name moved into one class: the later replaces the earlier
    flipped = sorted(set(moved.values()))
    crossed = [p["copy"] for p in pairs if p["copy"].startswith("train/")
               and p["copy"].split("/")[1] != str(key_class(p["source"], moved))]  # fmt: skip
    return {"moved": moved, "pairs": pairs, "flipped": flipped, "wrong": sorted(flipped + crossed)}


def key_class(key: str, moved: dict) -> str:
    """The true class of an image: the folder it was in before a flip moved it."""
    original = {new: old for old, new in moved.items()}.get(key, key)  # the later move wins
    return original.split("/")[1]


def plant(source: Path, dest: Path, seed: int, copies: int, flip: float) -> dict:
    """The planted copy of ``source`` in ``dest`` (see ``plan``)."""
    from PIL import Image

    truth = plan(source, seed, copies, flip)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("README*"))
    for old, new in truth["moved"].items():
        (dest / old).rename(dest / new)
    for pair in truth["pairs"]:
        with Image.open(dest / pair["source"]) as img:
            edited = edits.apply(img.convert("RGB"), tuple(pair["edits"].split("+")))
        edited.save(dest / pair["copy"], quality=90)
    return truth


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


def label_figures(store: Path, truth: dict) -> dict:
    """precision@75 of ``audit``'s ranking and of the issue's reference (cleanlab's
    ``find_label_issues`` on 5-fold standardised logistic-regression probabilities, ranked by
    self-confidence), counting as right the flipped labels only, and all wrong labels (the
    flipped ones and the copies planted under another class)."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fstore.quality.audit import audit

    start = time.perf_counter()
    result = audit(store, "pooled")
    seconds = time.perf_counter() - start
    ours = [str(result.keys[i]) for i in result.ranking()[:75]]
    fs = training_features(store)
    y = np.searchsorted(np.unique(fs.y), fs.y)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    probs = cross_val_predict(reference, fs.X, y, cv=folds, method="predict_proba")
    ranked = find_label_issues(y, probs, return_indices_ranked_by="self_confidence")
    theirs = [str(fs.keys[i]) for i in ranked[:75]]
    flipped, wrong = set(truth["flipped"]), set(truth["wrong"])
    return {
        "precision_at_75": sum(k in flipped for k in ours) / 75,
        "precision_at_75_wrong": sum(k in wrong for k in ours) / 75,
        "reference_precision_at_75": sum(k in flipped for k in theirs) / 75,
        "reference_precision_at_75_wrong": sum(k in wrong for k in theirs) / 75,
        "issues": len(result.issues),
        "flipped": len(flipped),
        "wrong": len(wrong),
        "seconds": seconds,
    }


def training_features(store: Path):
    from fstore.store import load_features

    fs = load_features(store, "pooled")
    return fs.subset(fs.split == "train")


def thumbnails(images: Path, pairs: list, out: Path, shown: int = 12) -> None:
    """``shown`` pairs spread evenly over ``pairs``, each a strip, and one sheet of them all
    (``other-pairs.png``, two columns)."""
    from PIL import Image

    from fstore.report.stages_quality import strip

    out.mkdir(parents=True, exist_ok=True)
    picked = pairs[:: max(1, len(pairs) // shown)][:shown]
    strips = []
    for i, pair in enumerate(picked):
        strip([images / k for k in pair], out / f"other{i:03d}.png")
        strips.append(Image.open(out / f"other{i:03d}.png"))
    if not strips:
        return
    w, h = max(s.width for s in strips), max(s.height for s in strips)
    sheet = Image.new("RGB", (2 * w + 8, ((len(strips) + 1) // 2) * (h + 8)), "white")
    for i, s in enumerate(strips):
        sheet.paste(s, ((i % 2) * (w + 8), (i // 2) * (h + 8)))
    sheet.save(out / "other-pairs.png", optimize=True)


def built(store: Path, images: Path) -> bool:
    """Whether ``store`` holds exactly the images of the planted copy ``images``."""
    from fstore.errors import FstoreError
    from fstore.store import load_features

    if not images.is_dir() or not store.exists():
        return False
    try:
        keys = set(map(str, load_features(store, "pooled").keys))
    except FstoreError:  # an unfinished or damaged store is built again
        return False
    return keys == {str(p.relative_to(images)) for p in images.rglob("*.jpg")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, default=SHARED / "data" / "scene15")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--flip", type=float, default=0.05)
    parser.add_argument("--show", type=int, default=400, help="Other pairs listed (at most).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/planted"))
    parser.add_argument("--out", type=Path, default=Path("planted-results"))
    parser.add_argument(
        "--reuse", action="store_true",
        help="Keep a seed's planted copy and store from an earlier run when the store holds "
        "every image of the copy (the planting is the same for the same seed and options).",
    )  # fmt: skip
    args = parser.parse_args()
    runs = []
    for seed in map(int, args.seeds.split(",")):
        images, store = args.work / f"scene15-{seed}", args.work / f"lite1-{seed}.h5"
        truth = plan(args.images, seed, args.copies, args.flip)
        run = {"seed": seed, "build_seconds": None}
        if not (args.reuse and built(store, images)):
            for old in args.work.glob(f"lite1-{seed}.h5*"):
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            truth = plant(args.images, images, seed, args.copies, args.flip)
            run["build_seconds"] = build_store(images, store)
        run["duplicates"] = duplicate_figures(store, truth["pairs"], args.show)
        run["labels"] = label_figures(store, truth)
        run["load_average"] = os.getloadavg()
        thumbnails(images, run["duplicates"]["other_sample"], args.out / f"seed{seed}")
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
            "label_precision_at_75_wrong": lambda r: r["labels"]["precision_at_75_wrong"],
            "reference_precision_at_75": lambda r: r["labels"]["reference_precision_at_75"],
            "reference_precision_at_75_wrong": (
                lambda r: r["labels"]["reference_precision_at_75_wrong"]
            ),
        }.items()
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "planted.json").write_text(json.dumps({"mean": mean, "runs": runs}, indent=1))
    print(json.dumps({"mean": mean}, indent=1))


if __name__ == "__main__":
    main()
