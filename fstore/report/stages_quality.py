"""The report's Data quality stage: duplicate clusters, train↔test leakage and its effect on the
SVM's test accuracy, the top suspected label errors, the 2-D map. Every figure is computed by
:mod:`fstore.quality`; this module only picks what to show and draws the thumbnails."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from fstore.report.context import Context

logger = logging.getLogger(__name__)

#: Duplicate clusters and suspected label errors shown with thumbnails.
SHOWN_CLUSTERS = 12
SHOWN_ISSUES = 20
#: Thumbnail height in pixels.
THUMB = 96


def strip(paths: list[Path], out: Path, height: int = THUMB) -> None:
    """The images side by side, each scaled to ``height``, as one small PNG."""
    from PIL import Image

    tiles = []
    for path in paths:
        with Image.open(path) as img:
            img = img.convert("RGB")
            tiles.append(img.resize((max(1, round(img.width * height / img.height)), height)))
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + 4 * (len(tiles) - 1), height), "white")
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width + 4
    canvas.save(out, optimize=True)


def _shown(clusters) -> list:
    """Conflicts first, then leaks, then the rest; within each, near copies before exact ones
    (a checksum finds those, the sample should show what only the features find)."""
    order = sorted(
        clusters, key=lambda c: ("conflict" not in c.labels, "leak" not in c.labels, c.exact)
    )
    return order[:SHOWN_CLUSTERS]


def leak_effect(ctx: Context, leaked: tuple[str, ...]) -> dict:
    """The svm stage's classifier on every test image and on those without a copy in the
    training split: the test set changes, the model does not."""
    from fstore.classifiers.persist import load_classifier

    svm = ctx.results["svm"]
    test = ctx.all_features.test
    if not len(test.keys):
        return {"available": False, "reason": "the store has no test split"}
    clf = load_classifier(Path(svm["folder"]) / svm["classifier"])
    right = clf.predict_features(test) == test.y
    leak = np.isin(test.keys.astype(str), np.array(leaked, dtype=str))
    return {
        "available": True,
        "test_images": int(len(right)),
        "leaked": int(leak.sum()),
        "accuracy_all": float(right.mean()),
        "accuracy_without": float(right[~leak].mean()) if (~leak).any() else None,
        "accuracy_on_leaked": float(right[leak].mean()) if leak.any() else None,
        "excluded_from_sections": bool(ctx.excluded),
    }


def _label_errors(ctx: Context, folder: Path) -> dict:
    """cleanlab's ranked suspected label errors; each of the first ones beside the training
    image that the out-of-fold model finds most typical of its suggested class."""
    from fstore.errors import FstoreError
    from fstore.quality.audit import audit

    try:
        result = audit(ctx.store, ctx.main_layer)
    except FstoreError as exc:  # too few images of a class for the folds, no labels
        return {"available": False, "reason": str(exc)}
    names = list(result.classes)
    given = np.array([names.index(str(c)) for c in _given(ctx, result.keys)])
    top, figures = [], {}
    for i, issue in enumerate(result.issues[:SHOWN_ISSUES]):
        c = names.index(issue.suggested)
        of_class = np.flatnonzero(given == c)
        example = str(result.keys[of_class[result.probabilities[of_class, c].argmax()]])
        strip([ctx.image_root / issue.key, ctx.image_root / example], folder / f"issue{i}.png")
        top.append({**issue.to_dict(), "example": example})
        figures[f"issue{i}"] = f"issue{i}.png"
    return {
        "available": True,
        "audited": len(result.keys),
        "count": len(result.issues),
        "keys": [i.key for i in result.issues],
        "top": top,
        "figures": figures,
    }


def _given(ctx: Context, keys: np.ndarray) -> list[str]:
    fs = ctx.all_features
    label = dict(zip(fs.keys.astype(str), np.asarray(fs.classes, dtype=object)[fs.y]))
    return [label[str(k)] for k in keys]


def quality(ctx: Context, folder: Path) -> dict:
    """Duplicates (cached beside the store), the leak's effect on the SVM's test accuracy,
    suspected label errors, and the map with both marked."""
    from fstore.quality.cache import cached_duplicates
    from fstore.quality.map import layer_map

    dup = cached_duplicates(ctx.store, ctx.main_layer)
    figures: dict[str, str] = {}
    shown = []
    for i, cluster in enumerate(_shown(dup.clusters)):
        strip([ctx.image_root / k for k in cluster.keys], folder / f"cluster{i}.png")
        shown.append(cluster.to_dict())
        figures[f"cluster{i}"] = f"cluster{i}.png"
    leaked = tuple(dup.leaked_test_keys())
    errors = _label_errors(ctx, folder)
    figures.update(errors.pop("figures", {}))
    marked = {
        "duplicates": {k for c in dup.clusters for k in c.keys},
        "label errors": set(errors.get("keys", [])),
    }
    mapped = layer_map(ctx.store, ctx.main_layer, out=folder / "map.png", marked=marked)
    figures["map"] = "map.png"
    return {
        "layer": dup.layer,
        "duplicates": {
            "exact_clusters": len(dup.exact),
            "exact_pairs": sum(len(c.keys) - 1 for c in dup.exact),
            "exact_labels": _labels(dup.exact),
            "clusters": len(dup.clusters),
            "labels": _labels(dup.clusters),
            "cross_split": sum("leak" in c.labels for c in dup.clusters),
            "candidates": dup.candidates,
            "verified": dup.verified,
            "seconds": dup.seconds,
        },
        "shown_clusters": shown,
        "leaked_test_keys": list(leaked),
        "leak": leak_effect(ctx, leaked),
        "label_errors": errors,
        "map_seconds": mapped.seconds,
        "figures": figures,
    }


def _labels(clusters) -> dict[str, int]:
    """Clusters per label set (``leak, conflict`` counted apart from ``leak``)."""
    return dict(Counter(", ".join(c.labels) for c in clusters))
