"""Clustered synthetic features, photo-like generated images and their edited copies, for the
quality tests (imported by them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fstore.store import write_arrays


def clustered(n: int, dim: int, clusters: int, seed: int = 0, spread: float = 0.3) -> np.ndarray:
    """Rows drawn around ``clusters`` random centres (a mixture, not i.i.d. noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    member = rng.integers(0, clusters, n)
    return (centres[member] + spread * rng.normal(size=(n, dim))).astype(np.float32)


def feature_store(path: Path, X: np.ndarray, labels=None, split=None, layer: str = "pooled"):
    """A store of ``X`` written from arrays; classes ``labels`` ('' for none), ``split``."""
    n = len(X)
    labels = [""] * n if labels is None else [str(c) for c in labels]
    split = ["train"] * n if split is None else list(split)
    keys = [f"img_{i:06d}.jpg" for i in range(n)]
    return write_arrays(path, {layer: X}, keys, labels, split)


def photo(seed: int, side: int = 200) -> Image.Image:
    """A grey picture with structure at several scales (smooth shading, texture, hard-edged
    shapes and lines), as a photograph has, so that keypoints and band-pass pixels have
    something to hold."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    img = np.zeros((side, side), np.float32)
    for cells, weight in ((4, 80), (16, 40), (50, 25)):
        small = Image.fromarray(rng.uniform(0, 255, (cells, cells)).astype(np.float32), "F")
        img += weight / 255 * np.asarray(small.resize((side, side), Image.BICUBIC))
    picture = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for _ in range(30):
        x, y = rng.uniform(0, side, 2)
        w, h = rng.uniform(5, 35, 2)
        shade = int(rng.integers(0, 256))
        shape = (draw.rectangle, draw.ellipse, draw.line)[int(rng.integers(3))]
        if shape is draw.line:
            draw.line((x, y, x + w * 2, y - h), fill=shade, width=int(rng.integers(1, 4)))
        else:
            shape((x, y, x + w, y + h), fill=shade)
    return picture.convert("RGB")
