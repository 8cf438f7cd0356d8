"""A 2-D map of a layer: PCA to 50 dimensions, then scikit-learn's t-SNE (Barnes-Hut), drawn
coloured by class with duplicates and suspected label errors marked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class MapResult:
    """Each row's 2-D position, with its key and class; ``png`` the picture drawn, if any."""

    layer: str
    keys: np.ndarray
    labels: np.ndarray
    xy: np.ndarray
    png: str
    seconds: float

    def to_dict(self) -> dict:
        points = [
            {"key": str(k), "class": str(c), "x": float(x), "y": float(y)}
            for k, c, (x, y) in zip(self.keys, self.labels, self.xy)
        ]
        return {"layer": self.layer, "png": self.png, "seconds": self.seconds, "points": points}


def embed(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE positions of the rows (PCA to 50 dimensions first, as t-SNE's authors advise)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    X = np.asarray(X, np.float32)
    if X.shape[1] > 50 and len(X) > 50:
        X = PCA(50, random_state=seed).fit_transform(X)
    perplexity = min(30.0, max(2.0, (len(X) - 1) / 3))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(X)


def draw(result: MapResult, out: Path, marked: dict[str, set[str]]) -> None:
    """The map as a PNG: one colour per class; ``marked`` names key sets drawn with a marker
    on top (``duplicates``, ``label errors``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 7), dpi=110)
    classes = sorted(set(result.labels))
    cmap = plt.get_cmap("tab20", max(len(classes), 1))
    for i, name in enumerate(classes):
        at = result.labels == name
        ax.scatter(*result.xy[at].T, s=4, color=cmap(i), label=name or "(none)", alpha=0.7)
    for (name, keys), marker in zip(marked.items(), ("o", "x", "^")):
        at = np.isin(result.keys, list(keys))
        # an open circle shows the class colour inside it; a cross has no face
        style = {"facecolors": "none", "edgecolors": "black"} if marker == "o" else {"c": "black"}
        ax.scatter(*result.xy[at].T, s=28, marker=marker, linewidths=0.8, label=name, **style)
    ax.set_xticks([]), ax.set_yticks([])
    ax.set_title(f"t-SNE of {result.layer}")
    ax.legend(fontsize=6, markerscale=2, loc="best", ncol=2)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def marks(store: Path | str, layer: str | None, warn=print) -> dict[str, set[str]]:
    """The keys to mark: every image in a duplicate cluster, every suspected label error
    (results cached beside the store); what ``duplicates`` or ``audit`` refuses is not
    marked, and ``warn`` says why in one line."""
    from fstore.errors import FstoreError
    from fstore.quality.cache import cached_audit_issues, cached_duplicates

    out: dict[str, set[str]] = {}
    try:
        out["duplicates"] = {k for c in cached_duplicates(store, layer).clusters for k in c.keys}
    except FstoreError as exc:  # e.g. a store written from arrays: no images to verify
        warn(f"no duplicates marked: {exc}")
    try:
        out["label errors"] = {i["key"] for i in cached_audit_issues(store, layer)}
    except FstoreError as exc:
        warn(f"no label errors marked: {exc}")
    return out


def layer_map(
    store: Path | str,
    layer: str | None = None,
    out: Path | None = None,
    marked: dict[str, set[str]] | None = None,
    seed: int = 0,
) -> MapResult:
    """The t-SNE map of a layer; with ``out``, drawn there as a PNG."""
    import time

    from fstore.store import load_features

    t0 = time.perf_counter()
    features = load_features(store, layer)
    labels = np.asarray(features.classes, dtype=object)[features.y]
    xy = embed(features.X, seed)
    result = MapResult(features.layer, features.keys, labels, xy, str(out or ""), 0.0)
    if out is not None:
        draw(result, Path(out), marked or {})
    return MapResult(**{**result.__dict__, "seconds": time.perf_counter() - t0})
