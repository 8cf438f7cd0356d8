"""The plan stage of ``fstore build``: what the store is, and which images to compute.

The manifest says what decides the features (model, layers, preprocessing, decode mode); a
store refuses to mix features made otherwise. Work is planned before it starts: the images to
compute are cut into shards of fixed lists and the plan is saved, so a killed build, run
again, finds the shards already on disk, skips them and computes the rest of the same plan.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fstore import __version__
from fstore.build.read import Work
from fstore.errors import StoreError
from fstore.images.discover import ImageItem, SplitSpec, is_split_layout
from fstore.images.preprocess import Preprocessing
from fstore.images.reader import file_sha256, file_stat
from fstore.runtime.metadata import ModelInfo
from fstore.store import store as st


@dataclass(frozen=True)
class ResolvedModel:
    """The ONNX file a build runs, its fstore metadata (``None`` for a foreign model), layers.

    ``given``: the user named the file (``--model``); the store remembers it, so a later bare
    ``fstore build`` resumes with the same file.
    """

    path: Path
    info: ModelInfo | None
    layers: tuple[str, ...]
    given: bool = False


@dataclass(frozen=True)
class StoreRecipe:
    """What decides a store's features, besides the model file itself."""

    model: ResolvedModel
    preprocessing: Preprocessing
    decode: str
    dtype: str
    split: SplitSpec | None


def fingerprint(recipe: StoreRecipe, model_sha: str, layers: tuple[str, ...]) -> str:
    """What decides the features: weights, layers, precision, preprocessing, decode mode.

    ``exact`` decoding is today's (and earlier versions') path, so it adds nothing: stores built
    before decode modes existed keep their fingerprint.
    """
    info = recipe.model.info
    if info is not None:
        parts = {"weights": info.weights_sha256, "precision": info.precision}
    else:
        parts = {"model": model_sha}
    parts.update(
        {"layers": list(layers), "preprocessing": recipe.preprocessing.fingerprint_fields()}
    )
    if recipe.decode != "exact":
        parts["decode"] = recipe.decode
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _provenance(recipe: StoreRecipe, model_sha: str, layers: tuple[str, ...], provider: str):
    import onnxruntime as ort

    info, model = recipe.model.info, recipe.model
    return {
        "model_path": str(model.path.resolve()),
        "model_given": model.given,
        "model_sha256": model_sha,
        "layers": list(layers),
        "preprocessing": recipe.preprocessing.to_json(),
        "decode": recipe.decode,
        "weights_origin": info.weights_origin if info else "unknown (external model)",
        "weights_sha256": info.weights_sha256 if info else "",
        "precision": info.precision if info else "unknown",
        "storage_dtype": recipe.dtype,
        "fstore_version": __version__,
        "onnxruntime_version": ort.__version__,
        "provider": provider,
    }


def new_manifest(
    images: Path, recipe: StoreRecipe, shapes: dict[str, tuple[int, ...]], provider: str
) -> st.Manifest:
    """The manifest of a store built from ``images`` with ``recipe`` (outputs of ``shapes``)."""
    layers = tuple(shapes)
    model_sha = file_sha256(recipe.model.path)
    split_layout = is_split_layout(images)
    split = recipe.split or SplitSpec("folders" if split_layout else "none")
    return st.Manifest(
        image_root=str(images.resolve()),
        split_layout=split_layout,
        split=split,
        layers=layers,
        shapes=shapes,
        dtype=recipe.dtype,
        fingerprint=fingerprint(recipe, model_sha, layers),
        provenance=_provenance(recipe, model_sha, layers, provider),
    )


def check_compatible(store: Path, old: st.Manifest, new: st.Manifest, images: Path | None) -> None:
    """Refuse to add features made another way (model, layers, preprocessing, decode, dtype)."""
    if old.layers != new.layers:
        raise StoreError(
            f"store {store} holds layers {', '.join(old.layers)}, not {', '.join(new.layers)}; "
            "build another store (--store) for other layers"
        )
    if old.fingerprint != new.fingerprint:
        raise StoreError(
            f"store {store} was built with another model, preprocessing or decode mode "
            f"(weights {old.provenance.get('weights_origin')}, decode "
            f"{old.provenance.get('decode', 'exact')}); refusing to mix features: "
            "use --store for a new store"
        )
    if old.dtype != new.dtype:
        raise StoreError(f"store {store} stores {old.dtype}, not {new.dtype}")
    if images is not None and str(images.resolve()) != old.image_root:
        raise StoreError(f"store {store} is built from {old.image_root}, not {images}")


def _safe_sha(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def _known(summaries: Iterable[st.Part]) -> dict[str, tuple]:
    """key → (size, mtime_ns, sha256) of every image the store has a record of: the newest
    record of each key (in plan order), a stored row or an image recorded as bad.

    Built with dict updates, not by resolving the live rows (:func:`store.live_rows`): a
    build with nothing to do spends its planning here.
    """
    known: dict[str, tuple] = {}
    for part in summaries:
        known.update(zip(part.keys, zip(part.size, part.mtime_ns, part.sha256)))
        known.update(
            (e["key"], (e["size"], e["mtime_ns"], e["sha256"]))
            for e in part.errors
            if not e["stored"]
        )
    return known


def _up_to_date(item: ImageItem, record: tuple | None) -> bool:
    """Whether the store's ``record`` is this image: the stat discovery kept (else a fresh one)
    matches the recorded size and mtime, or else the file's sha256 does."""
    if record is None:
        return False
    size, mtime = (item.size, item.mtime_ns) if item.size >= 0 else file_stat(item.path)
    if (size, mtime) == (record[0], record[1]):
        return True
    return bool(record[2]) and size >= 0 and _safe_sha(item.path) == record[2]


def plan_work(
    store: Path,
    root: Path,
    items: list[ImageItem],
    shard_size: int,
    state: st.StoreState | None = None,
) -> Work:
    """Resume unfinished shards of earlier plans, then plan new and changed images.

    An image is up to date when the store's record of its key has the same size and mtime, or
    else the same sha256. Everything else goes into a new plan, saved before work starts.
    ``state``: the store's state if the caller has read it (else it is read here).
    """
    by_key = {item.key: item for item in items}
    summaries = state if state is not None else st.load_state(store)
    known = _known(summaries.values())
    shards: list[tuple[str, list[ImageItem]]] = []
    planned: set[str] = set()
    plans = st.read_plans(store)
    for generation, plan in plans:
        for index, keys in enumerate(plan):
            name = st.shard_name(generation, index)
            if name in summaries:
                continue
            shards.append((name, [by_key.get(k) or ImageItem(k, root / k) for k in keys]))
            planned.update(keys)
    todo = []
    for it in items:
        record = known.get(it.key)
        if record is not None and record[0] == it.size and record[1] == it.mtime_ns:
            continue  # the stat discovery kept matches the store's record: no second look
        if it.key not in planned and not _up_to_date(it, record):
            todo.append(it)
    if todo:
        generation = max((g for g, _ in plans), default=0) + 1
        chunks = [todo[i : i + shard_size] for i in range(0, len(todo), shard_size)]
        st.write_plan(store, generation, [[it.key for it in chunk] for chunk in chunks])
        shards.extend((st.shard_name(generation, i), chunk) for i, chunk in enumerate(chunks))
    pending = sum(len(s) for _, s in shards)
    return Work(shards, max(0, len(items) - pending), len(items))
