"""Views of an image for test-time augmentation: the sets, their crops, and their layers.

A build asked for view sets (``--views flip,crops5,scales:240+320``) decodes each image once,
cuts every view the sets need from the decoded pixels, runs them through the model in the same
batch as the plain view, and stores for each model layer ``L`` and set ``V`` a layer
``L@V`` holding the mean of ``L`` over ``V``'s views. The plain layer ``L`` is always stored.

With the model's preprocessing ``Resize(R)`` + ``CenterCrop(C)`` (torchvision's geometry,
:mod:`fstore.images.preprocess`), the sets are:

* ``flip``: the plain crop and its mirror image (left-right), 2 views.
* ``crops5``: torchvision's ``FiveCrop(C)`` of the picture resized to short side ``R``: its
  top-left, top-right, bottom-left and bottom-right ``C``-squares and its centre one (the
  plain crop), 5 views.
* ``scales:A+B+…``: for each short side ``s`` in ``A, B, …``: the picture resized to short
  side ``s`` (aspect kept, as ``Resize(s)``), then its centre ``C``-square (``CenterCrop(C)``);
  one view per size. ``s = R`` is the plain crop; every ``s`` must be at least ``C``.

A set name ending in ``-max`` (``flip-max``, ``crops5-max``) stores the element-wise maximum
over its views instead of the mean. A view that two sets share (the plain crop) is computed
once.

With ``fast`` decoding a JPEG is DCT-scaled no further than the largest short side any view
needs, so in a store with a scale above ``R`` the plain layer can differ from a plain build's
(within fast decoding's tolerance: its crop is cut from more pixels); with ``exact`` decoding
it is the same.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fstore.errors import FstoreError
from fstore.images.decode import Source
from fstore.images.preprocess import Preprocessing, resized_size

#: Between a model layer and a view set in a stored layer's name: ``pooled@flip``.
SEPARATOR = "@"
VIEW_SETS = ("flip", "crops5", "scales:A+B")
#: After a set's name: pool its views by their maximum, not their mean.
MAX = "-max"
_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


@dataclass(frozen=True)
class View:
    """One crop: the short side the picture is resized to, where the crop sits, mirrored."""

    scale: int
    anchor: str = "centre"  # or one of the corners (FiveCrop's)
    flip: bool = False

    def offsets(self, size: tuple[int, int], crop: int) -> tuple[int, int] | None:
        """(left, top) of the crop in a resized picture of ``size`` (w, h); ``None``: centre."""
        if self.anchor == "centre":
            return None
        w, h = size
        vertical, horizontal = self.anchor.split("-")
        return (0 if horizontal == "left" else w - crop, 0 if vertical == "top" else h - crop)


def _scales(name: str) -> tuple[int, ...]:
    text = name.partition(":")[2]
    try:
        sizes = tuple(int(part) for part in text.split("+"))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise FstoreError(f"view set {name!r} needs short sides, e.g. scales:240+320")
    return sizes


def _canonical(name: str) -> str:
    name = name.strip()
    base = name.removesuffix(MAX)
    pooling = name[len(base) :]
    if base in ("flip", "crops5"):
        return name
    if base.startswith("scales:"):
        return "scales:" + "+".join(str(s) for s in _scales(base)) + pooling
    choices = ", ".join(VIEW_SETS)
    raise FstoreError(f"unknown view set {name!r}; choose from {choices} (each also as NAME{MAX})")


def parse_views(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """View set names from ``flip,crops5,scales:240+320`` (or a sequence of names), checked,
    in a canonical spelling (``scales:0240`` is ``scales:240``), without repeats."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = [_canonical(part) for part in parts if part.strip()]
    return tuple(dict.fromkeys(names))


def set_views(name: str, spec: Preprocessing) -> tuple[View, ...]:
    """The views of the set ``name`` for a model with preprocessing ``spec``."""
    name = name.removesuffix(MAX)
    plain = View(spec.resize)
    if name == "flip":
        return (plain, View(spec.resize, flip=True))
    if name == "crops5":
        return tuple(View(spec.resize, corner) for corner in _CORNERS) + (plain,)
    sizes = _scales(_canonical(name))
    if min(sizes) < spec.crop:
        raise FstoreError(
            f"view set {name}: a short side of {min(sizes)} is smaller than the model's input "
            f"({spec.crop}); use sizes of at least {spec.crop}"
        )
    return tuple(View(s) for s in sizes)


@dataclass(frozen=True)
class ViewPlan:
    """The distinct views a build runs per image (the plain crop first) and, per view set,
    which of them it averages."""

    views: tuple[View, ...]
    sets: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def largest(self) -> int:
        """The longest short side any view resizes to (what a fast decode must keep)."""
        return max(view.scale for view in self.views)

    def pool(self, outputs: dict[str, np.ndarray], images: int) -> dict[str, np.ndarray]:
        """Each model layer's ``(images × views, …)`` output → the stored layers: ``L`` (the
        plain view) and ``L@V`` (the mean over ``V``'s views), each ``(images, features)``."""
        count = len(self.views)
        per_view = {k: v[: images * count].reshape(images, count, -1) for k, v in outputs.items()}
        pooled = {layer: x[:, 0] for layer, x in per_view.items()}
        for name, rows in self.sets:
            for layer, x in per_view.items():
                views = x[:, list(rows)]
                pooled[f"{layer}{SEPARATOR}{name}"] = (
                    views.max(axis=1) if name.endswith(MAX) else views.mean(axis=1)
                )
        return pooled


def plan_views(names: tuple[str, ...], spec: Preprocessing) -> ViewPlan:
    """The views that the sets ``names`` need, each once, for preprocessing ``spec``."""
    views: dict[View, int] = {View(spec.resize): 0}
    sets = []
    for name in names:
        rows = tuple(views.setdefault(view, len(views)) for view in set_views(name, spec))
        sets.append((name, rows))
    return ViewPlan(tuple(views), tuple(sets))


def view_crops(source: Source, views: tuple[View, ...], spec: Preprocessing) -> np.ndarray:
    """One decoded picture's views as a uint8 ``(views, crop, crop, 3)`` stack."""
    out = np.empty((len(views), spec.crop, spec.crop, 3), np.uint8)
    for row, view in enumerate(views):
        at = replace(spec, resize=view.scale)
        crop = source.crop(at, view.offsets(resized_size(source.full, at), spec.crop))
        out[row] = crop[:, ::-1] if view.flip else crop
    return out


def view_layers(layers: tuple[str, ...], views: tuple[str, ...]) -> tuple[str, ...]:
    """The stored layers of model ``layers`` with view sets ``views``: plain, then ``L@V``."""
    return tuple(layers) + tuple(f"{layer}{SEPARATOR}{v}" for v in views for layer in layers)


def split_layers(stored: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(model layers, view sets) of a store's layers, the inverse of :func:`view_layers`."""
    layers = tuple(name for name in stored if SEPARATOR not in name)
    views = (name.partition(SEPARATOR)[2] for name in stored if SEPARATOR in name)
    return layers, tuple(dict.fromkeys(views))
