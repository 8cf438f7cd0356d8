"""Several layers as one feature set: each l2-normalised on its own, then side by side.

Normalising each layer first keeps a layer from outweighing the others by its scale or its
width (``pooled`` and ``logits`` of EfficientNet-Lite1 differ in both). The combination is
named with ``+`` (``pooled+logits``); ``classify`` splits that name to compute each layer of a
new image and combines them with the same :func:`combine`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np

from fstore.errors import ClassifierError
from fstore.store import FeatureSet

JOIN = "+"


def layer_names(text: str, held: Collection[str] = ()) -> list[str]:
    """``pooled,logits`` or ``pooled+logits`` as ``["pooled", "logits"]``.

    A name in ``held`` (the store's layers) stays whole even if it holds a ``+``, as a view
    layer may (``pooled@scales:240+320``): between commas, the longest run of ``+``-joined
    parts that ``held`` names is one layer.
    """
    names = []
    for item in text.split(","):
        parts = [part.strip() for part in item.split(JOIN)]
        start = 0
        while start < len(parts):
            stop = next(
                (s for s in range(len(parts), start, -1) if JOIN.join(parts[start:s]) in held),
                start + 1,
            )
            names.append(JOIN.join(parts[start:stop]))
            start = stop
    names = [name for name in names if name]
    if len(set(names)) != len(names):
        raise ClassifierError(f"--layer {text} names a layer twice")
    return names


def combine(parts: Sequence[np.ndarray]) -> np.ndarray:
    """``np.hstack`` of the parts (rows aligned), each row of each part to unit l2 length
    (a zero row stays zero); a single part comes back as it is."""
    if len(parts) == 1:
        return parts[0]
    unit = []
    for X in parts:
        X = np.asarray(X, dtype=np.float32).reshape(len(X), -1)
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        unit.append(X / np.where(norms == 0, 1, norms))
    return np.hstack(unit)


def load_layers(store: Path, layer: str | None) -> FeatureSet:
    """One layer of the store, or the combination of the layers ``layer`` names with commas
    (a name the store holds as it is, ``+`` included, is one layer)."""
    from fstore.store import load_features, store_layers

    store = Path(store)
    held = store_layers(store)
    if layer is None or layer in held:
        return load_features(store, layer)
    names = layer_names(layer, held)
    if len(names) == 1:
        return load_features(store, names[0])
    sets = [load_features(store, name) for name in names]
    first = sets[0]
    for fs in sets[1:]:
        if not np.array_equal(fs.keys, first.keys):
            raise ClassifierError(
                f"layers {first.layer} and {fs.layer} hold different images; "
                "rebuild the store so that every layer has every image"
            )
    X = combine([fs.X for fs in sets])
    return FeatureSet(
        layer=JOIN.join(names),
        X=X,
        y=first.y,
        keys=first.keys,
        split=first.split,
        classes=first.classes,
        shape=(X.shape[1],),
        provenance=first.provenance,
    )
