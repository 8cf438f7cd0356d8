"""The plan stage of ``fstore build``: what the store is, and which images to compute.

The manifest says what decides the features (model, layers, preprocessing, decode mode); a
store refuses to mix features made otherwise. Work is planned before it starts: the images to
compute are cut into shards of fixed lists and the plan is committed to the store's catalog,
so a killed build, run again, finds the shards already computed, skips them and computes the
rest of the same plan.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from fstore import __version__
from fstore.errors import StoreError
from fstore.images.discover import Discovery, ImageItem, SplitSpec, is_split_layout
from fstore.images.preprocess import Preprocessing
from fstore.images.reader import file_sha256, file_stat
from fstore.pipeline.read import Work
from fstore.runtime.metadata import ModelInfo
from fstore.store import catalog, layout
from fstore.store.labels import key_labels


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
        "arch": info.arch if info else None,
        "layers": list(layers),
        "preprocessing": recipe.preprocessing.to_json(),
        "decode": recipe.decode,
        "weights_origin": info.weights_origin if info else "unknown (external model)",
        "weights_sha256": info.weights_sha256 if info else "",
        "precision": info.precision if info else "as given (external model)",
        "storage_dtype": recipe.dtype,
        "fstore_version": __version__,
        "onnxruntime_version": ort.__version__,
        "provider": provider,
    }


def recipe_manifest(
    images: Path, recipe: StoreRecipe, shapes: dict[str, tuple[int, ...]], model_sha: str
) -> layout.Manifest:
    """What a store built from ``images`` with ``recipe`` would be, without its provenance:
    enough to check an existing store against (:func:`check_compatible`)."""
    layers = tuple(shapes)
    split_layout = is_split_layout(images)
    split = recipe.split or SplitSpec("folders" if split_layout else "none")
    return layout.Manifest(
        image_root=str(images.resolve()),
        split_layout=split_layout,
        split=asdict(split),
        layers=layers,
        shapes=shapes,
        dtype=recipe.dtype,
        fingerprint=fingerprint(recipe, model_sha, layers),
    )


def new_manifest(
    images: Path, recipe: StoreRecipe, shapes: dict[str, tuple[int, ...]], provider: str
) -> layout.Manifest:
    """The manifest of a new store built from ``images`` with ``recipe`` (outputs of
    ``shapes``), with its provenance."""
    model_sha = file_sha256(recipe.model.path)
    manifest = recipe_manifest(images, recipe, shapes, model_sha)
    return replace(manifest, provenance=_provenance(recipe, model_sha, manifest.layers, provider))


def model_sha256(con, store: Path, manifest: layout.Manifest, path: Path) -> str:
    """The sha256 of the model file ``path``, checked against the store's.

    The catalog keeps the path, size and mtime of the file whose sha256 the manifest records
    (``meta`` ``model_stat``): while the file keeps them it is not read again, the rule that
    images follow too. A stamp that does not match, whatever its text, only costs a hash.
    """
    stat = path.stat()
    stamp = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    recorded = manifest.provenance.get("model_sha256", "")
    if recorded and catalog.get_meta(con, "model_stat") == stamp:
        return recorded
    sha = file_sha256(path)
    if sha == recorded:
        catalog.set_meta(con, store, "model_stat", stamp)
    return sha


def check_compatible(
    store: Path, old: layout.Manifest, new: layout.Manifest, images: Path | None
) -> None:
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


def _up_to_date(item: ImageItem, record: tuple | None) -> tuple[bool, tuple[int, int] | None]:
    """Whether the catalog's ``record`` (size, mtime_ns, sha256, pending) is this image, and
    the image's (size, mtime) when only its sha256 says so (the catalog takes the new stat)."""
    if record is None:
        return False, None
    size, mtime = (item.size, item.mtime_ns) if item.size >= 0 else file_stat(item.path)
    if (size, mtime) == (record[0], record[1]):
        return True, None
    same = bool(record[2]) and size >= 0 and _safe_sha(item.path) == record[2]
    return same, (size, mtime) if same else None


@dataclass(frozen=True)
class Plan:
    """The work of this build and what the folder no longer holds."""

    work: Work
    removed: int


def shard_name(generation: int, index: int) -> str:
    return f"g{generation:06d}-s{index:06d}"


def _changes(con, found: Discovery) -> tuple[list[int], list[tuple], list[str]]:
    """What the folder changed since the catalog's records: the indices (into ``found.rows``)
    of images to compute, (size, mtime_ns, key) of images whose stat moved but not their
    sha256, and the keys that left the folder.

    An image whose key, size and mtime the catalog holds is up to date (or planned and
    waiting). A folder that did not change is found so in one comparison of the rows, both in
    key order (SQLite's binary order of UTF-8 text is the order of code points); otherwise two
    set differences leave the other images, each then looked up alone.
    """
    held = catalog.stats(con)
    if held == found.rows:
        return [], [], []
    fresh = set(found.rows).difference(held)
    removed = sorted({row[0] for row in held}.difference(row[0] for row in found.rows))
    candidates = sorted(found.index(key) for key, _, _ in fresh)
    known = catalog.records(con, (found.rows[i][0] for i in candidates))
    todo, touched = [], []
    for i in candidates:
        key = found.rows[i][0]
        record = known.get(key)
        if record is not None and record[3]:
            continue  # planned and waiting: the shard it waits for reads it as it is then
        same, stat = _up_to_date(found.item(i), record)
        if stat is not None:
            touched.append((*stat, key))
        elif not same:
            todo.append(i)
    return todo, touched, removed


def _moved(con, keys: list[str], split: list[str]) -> list[tuple[str, str]]:
    """(split, key) of the images whose split the store's rule now gives otherwise."""
    held = catalog.splits(con)
    return [(s, k) for k, s in zip(keys, split) if k in held and held[k] != s]


def _pending_work(con, found: Discovery) -> Work:
    """Every shard not yet computed, with its images (as discovered, where the folder still
    holds them)."""

    def item(key: str) -> ImageItem:
        i = found.index(key)
        return ImageItem(key, Path(found.root) / key) if i is None else found.item(i)

    shards = [(name, [item(k) for k in keys]) for name, keys in catalog.pending_shards(con)]
    pending, total = sum(len(s) for _, s in shards), len(found.rows)
    return Work(shards, max(0, total - pending), total)


def plan_work(
    store: Path, con, found: Discovery, shard_size: int, manifest: layout.Manifest
) -> Plan:
    """Plan new and changed images into new shards, in one catalog transaction, and return
    every shard not yet computed (earlier plans' first: a killed build resumes them).

    An image is up to date when the catalog's record of its key has the same size and mtime,
    or else the same sha256. An image that left the folder leaves the store. The catalog
    changes only where the folder did, so the plan's transaction is as large as the change.
    """
    todo, touched, removed = _changes(con, found)
    labels = todo or removed  # a random split draws over each whole class
    keys = found.keys if labels else []
    classes, split = key_labels(keys, manifest.split_layout, manifest.split) if labels else ([], [])
    moved = _moved(con, keys, split) if labels else []
    last = con.execute("SELECT MAX(name) FROM shards").fetchone()[0]
    generation = int(last[1:7]) + 1 if last else 1  # see shard_name
    names = [shard_name(generation, n) for n in range((len(todo) + shard_size - 1) // shard_size)]
    with catalog.transaction(con, store):
        con.executemany("UPDATE images SET size = ?, mtime_ns = ? WHERE key = ?", touched)
        con.executemany("DELETE FROM images WHERE key = ?", ((k,) for k in removed))
        con.executemany("UPDATE images SET split = ? WHERE key = ?", moved)
        planned = []
        for n, i in enumerate(todo):
            key, size, mtime_ns = found.rows[i]
            planned.append((key, classes[i], split[i], names[n // shard_size], size, mtime_ns))
        catalog.add_plan(con, names, planned)
    return Plan(_pending_work(con, found), len(removed))
