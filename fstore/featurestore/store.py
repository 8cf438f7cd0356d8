"""The feature store on disk: immutable HDF5 shards, and an index over them that plain h5py reads.

Layout of a store ``fstore.h5``::

    fstore.h5                 the index: keys, labels, split, provenance, and per layer a
                              virtual dataset (N, D) over the shards (see README "Store schema")
    fstore.h5.d/manifest.json what the store is built from (model, layers, preprocessing, ...)
    fstore.h5.d/plans/        the fixed lists of images of every shard, one file per build
    fstore.h5.d/shards/       one HDF5 file per finished shard, never modified

Every file is written under a temporary name, fsynced and renamed into place (see
``../shared/notes/STORE.md``: appending to one HDF5 file in place does not survive ``kill -9``).
The shards and plans are the truth; the index is derived from them and rebuilt atomically, so
it opens at every moment and a reader sees what was committed when it opened it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.errors import StoreError
from fstore.featurestore.features import FeatureSet
from fstore.fsutil import atomic_write_bytes, commit_file, tmp_path_for
from fstore.images.discover import SplitSpec, assign_splits, class_of

FORMAT = "fstore-store"
FORMAT_VERSION = 1
DEFAULT_STORE = "fstore.h5"


def default_store_path() -> Path:
    """``$FSTORE_STORE``, else ``./fstore.h5``."""
    return Path(os.environ.get("FSTORE_STORE") or DEFAULT_STORE)


def sidecar(store: Path) -> Path:
    return store.with_name(store.name + ".d")


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class Manifest:
    """What a store is built from; fixed at its first build, checked by every later one.

    ``fingerprint`` identifies the features: two builds whose fingerprints differ would compute
    different features for the same image, so they may not fill the same store.
    """

    image_root: str
    split_layout: bool
    split: SplitSpec
    layers: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]
    dtype: str
    fingerprint: str
    provenance: dict = field(default_factory=dict)

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "image_root": self.image_root,
            "split_layout": self.split_layout,
            "split": json.loads(self.split.to_json()),
            "layers": list(self.layers),
            "shapes": {k: list(v) for k, v in self.shapes.items()},
            "dtype": self.dtype,
            "fingerprint": self.fingerprint,
            "provenance": self.provenance,
        }
        return json.dumps(data, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise StoreError("not an fstore store manifest")
        return cls(
            d["image_root"],
            d["split_layout"],
            SplitSpec(**d["split"]),
            tuple(d["layers"]),
            {k: tuple(v) for k, v in d["shapes"].items()},
            d["dtype"],
            d["fingerprint"],
            d["provenance"],
        )


def read_manifest(store: Path) -> Manifest | None:
    path = sidecar(store) / "manifest.json"
    if not path.exists():
        return None
    return Manifest.from_json(path.read_text())


def write_manifest(store: Path, manifest: Manifest) -> None:
    atomic_write_bytes(sidecar(store) / "manifest.json", manifest.to_json().encode())


# --------------------------------------------------------------------------- plans


def read_plans(store: Path) -> list[tuple[int, list[list[str]]]]:
    """Every build's plan as (generation, shards), each shard a list of keys, oldest first."""
    folder = sidecar(store) / "plans"
    if not folder.is_dir():
        return []
    plans = []
    for path in sorted(folder.glob("gen-*.json")):
        data = json.loads(path.read_text())
        plans.append((int(data["generation"]), data["shards"]))
    return plans


def write_plan(store: Path, generation: int, shards: list[list[str]]) -> None:
    folder = sidecar(store) / "plans"
    folder.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"generation": generation, "shards": shards})
    atomic_write_bytes(folder / f"gen-{generation:06d}.json", data.encode())


def shard_name(generation: int, index: int) -> str:
    return f"g{generation:06d}-s{index:06d}.h5"


def shard_path(store: Path, name: str) -> Path:
    return sidecar(store) / "shards" / name


# --------------------------------------------------------------------------- shards


@dataclass
class ShardRows:
    """One shard's content: the images stored (with features) and those that failed.

    ``records`` holds per row ``key``, ``sha256``, ``size``, ``mtime_ns``; ``errors`` the same
    fields plus ``reason`` and ``stored`` (True when the image was stored despite the problem,
    e.g. unreadable EXIF orientation).
    """

    keys: list[str]
    sha256: list[str]
    size: list[int]
    mtime_ns: list[int]
    features: dict[str, np.ndarray]
    errors: list[dict] = field(default_factory=list)


def _str_data(values: Iterable[str]) -> np.ndarray:
    return np.array(list(values), dtype=object)


def _write_errors(f, errors: list[dict]) -> None:
    """The ``errors`` group: one entry per bad image (or image stored with a warning)."""
    import h5py

    group = f.create_group("errors")
    for name in ("key", "reason", "sha256"):
        group.create_dataset(name, data=_str_data(e[name] for e in errors),
                             dtype=h5py.string_dtype())  # fmt: skip
    group.create_dataset("stored", data=np.array([e["stored"] for e in errors], bool))
    group.create_dataset("size", data=np.array([e["size"] for e in errors], np.int64))
    group.create_dataset("mtime_ns", data=np.array([e["mtime_ns"] for e in errors], np.int64))


def write_shard(path: Path, rows: ShardRows, dtype: str, attrs: dict) -> None:
    """Write a shard atomically: temporary name, fsync, rename, fsync the folder."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    string = h5py.string_dtype()
    with h5py.File(tmp, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v
        f.create_dataset("keys", data=_str_data(rows.keys), dtype=string)
        f.create_dataset("sha256", data=_str_data(rows.sha256), dtype=string)
        f.create_dataset("size", data=np.asarray(rows.size, dtype=np.int64))
        f.create_dataset("mtime_ns", data=np.asarray(rows.mtime_ns, dtype=np.int64))
        group = f.create_group("features")
        for layer, values in rows.features.items():
            group.create_dataset(layer, data=np.asarray(values, dtype=dtype))  # contiguous
        _write_errors(f, rows.errors)
    commit_file(tmp, path)


@dataclass
class ShardSummary:
    """A finished shard's metadata (everything but the features), as the index needs it."""

    name: str
    keys: list[str]
    sha256: list[str]
    size: np.ndarray
    mtime_ns: np.ndarray
    errors: list[dict]


def _strings(dataset) -> list[str]:
    return [s.decode() if isinstance(s, bytes) else s for s in dataset[()]]


def read_shard_summary(path: Path) -> ShardSummary:
    import h5py

    with h5py.File(path, "r") as f:
        err = f["errors"]
        errors = [
            {
                "key": k,
                "reason": r,
                "sha256": s,
                "stored": bool(st),
                "size": int(sz),
                "mtime_ns": int(mt),
            }
            for k, r, s, st, sz, mt in zip(
                _strings(err["key"]),
                _strings(err["reason"]),
                _strings(err["sha256"]),
                err["stored"][()],
                err["size"][()],
                err["mtime_ns"][()],
            )
        ]
        return ShardSummary(
            path.name,
            _strings(f["keys"]),
            _strings(f["sha256"]),
            f["size"][()],
            f["mtime_ns"][()],
            errors,
        )


def finished_shards(store: Path) -> dict[str, ShardSummary]:
    """Summaries of the shards on disk that belong to a plan, in plan order."""
    summaries = {}
    for generation, shards in read_plans(store):
        for index in range(len(shards)):
            name = shard_name(generation, index)
            path = shard_path(store, name)
            if path.exists():
                summaries[name] = read_shard_summary(path)
    return summaries


def remove_temporaries(store: Path) -> int:
    """Delete temporary files left by a killed writer; returns how many."""
    count = 0
    for folder in (
        sidecar(store),
        sidecar(store) / "shards",
        sidecar(store) / "plans",
        store.parent,
    ):
        if folder.is_dir():
            for tmp in folder.glob(".*.tmp"):
                if folder == store.parent and not tmp.name.startswith(f".{store.name}."):
                    continue
                tmp.unlink(missing_ok=True)
                count += 1
    return count


def failed_path(store: Path, name: str) -> Path:
    return sidecar(store) / "failed" / f"{name}.json"


def record_failed_shard(store: Path, name: str, keys: list[str], reason: str) -> None:
    """Mark a shard as failed (the next build tries it again); shown by ``fstore info``."""
    path = failed_path(store, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps({"shard": name, "reason": reason, "keys": keys}).encode())


def failed_shards(store: Path) -> list[dict]:
    folder = sidecar(store) / "failed"
    if not folder.is_dir():
        return []
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


# --------------------------------------------------------------------------- index


@dataclass
class IndexView:
    """The live rows of a store: for each key, the newest shard row that holds it."""

    keys: list[str]
    sha256: list[str]
    size: list[int]
    mtime_ns: list[int]
    sources: list[tuple[str, int]]  # (shard name, row in shard)
    errors: list[dict]


def live_rows(summaries: Iterable[ShardSummary]) -> IndexView:
    """Resolve shards (in plan order) into live rows: a later record of a key replaces earlier."""
    latest: dict[str, tuple] = {}
    for summary in summaries:
        for row, key in enumerate(summary.keys):
            latest.pop(key, None)
            latest[key] = ("row", summary, row)
        for error in summary.errors:
            if error["stored"]:
                continue  # a warning: the key's row above is the record
            latest.pop(error["key"], None)
            latest[error["key"]] = ("error", error)
    view = IndexView([], [], [], [], [], [])
    warnings = [e for s in summaries for e in s.errors if e["stored"]]
    for key, record in latest.items():
        if record[0] == "error":
            view.errors.append(record[1])
            continue
        _, summary, row = record
        view.keys.append(key)
        view.sha256.append(summary.sha256[row])
        view.size.append(int(summary.size[row]))
        view.mtime_ns.append(int(summary.mtime_ns[row]))
        view.sources.append((summary.name, row))
    live = set(view.keys)
    view.errors.extend(
        w
        for w in warnings
        if w["key"] in live and view.sha256[view.keys.index(w["key"])] == w["sha256"]
    )
    return view


def _runs(sources: list[tuple[str, int]]) -> list[tuple[str, int, int, int]]:
    """Group consecutive rows of one shard: (shard, first shard row, first index row, length)."""
    runs: list[list] = []
    for i, (name, row) in enumerate(sources):
        if runs and runs[-1][0] == name and runs[-1][1] + runs[-1][3] == row:
            runs[-1][3] += 1
        else:
            runs.append([name, row, i, 1])
    return [tuple(r) for r in runs]  # type: ignore[misc]


def write_index(store: Path, manifest: Manifest, summaries: list[ShardSummary]) -> IndexView:
    """Rebuild the index file from the shards, atomically."""
    import h5py

    view = live_rows(summaries)
    n = len(view.keys)
    class_names = [class_of(k, manifest.split_layout) for k in view.keys]
    classes = sorted(set(class_names))
    class_index = {c: i for i, c in enumerate(classes)}
    split = assign_splits(view.keys, class_names, manifest.split, manifest.split_layout)
    string = h5py.string_dtype()
    tmp = tmp_path_for(store)
    with h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["image_root"] = manifest.image_root
        f.attrs["layers"] = json.dumps(list(manifest.layers))
        f.create_dataset("manifest", data=manifest.to_json(), dtype=string)
        f.create_dataset("keys", data=_str_data(view.keys), dtype=string)
        f.create_dataset("sha256", data=_str_data(view.sha256), dtype=string)
        f.create_dataset("size", data=np.asarray(view.size, np.int64))
        f.create_dataset("mtime_ns", data=np.asarray(view.mtime_ns, np.int64))
        f.create_dataset("labels", data=np.asarray([class_index[c] for c in class_names], np.int64))
        f.create_dataset("classes", data=_str_data(classes), dtype=string)
        f.create_dataset("split", data=split, dtype=string)
        group = f.create_group("features")
        runs = _runs(view.sources)
        for layer in manifest.layers:
            dim = int(np.prod(manifest.shapes[layer]))
            layout = h5py.VirtualLayout(shape=(n, dim), dtype=manifest.dtype)
            for name, first, at, length in runs:
                rows_in_shard = len(next(s.keys for s in summaries if s.name == name))
                source = h5py.VirtualSource(
                    f"{sidecar(store).name}/shards/{name}",
                    f"features/{layer}",
                    shape=(rows_in_shard, dim),
                )
                layout[at : at + length] = source[first : first + length]
            dataset = group.create_virtual_dataset(layer, layout, fillvalue=np.nan)
            dataset.attrs["shape"] = np.asarray(manifest.shapes[layer], np.int64)
        failed = failed_shards(store)
        group = f.create_group("failed_shards")
        group.create_dataset("name", data=_str_data(x["shard"] for x in failed), dtype=string)
        group.create_dataset("reason", data=_str_data(x["reason"] for x in failed), dtype=string)
        group.create_dataset("images", data=np.array([len(x["keys"]) for x in failed], np.int64))
        shards = f.create_group("shards")
        shards.create_dataset("name", data=_str_data(s.name for s in summaries), dtype=string)
        shards.create_dataset("rows", data=np.asarray([len(s.keys) for s in summaries], np.int64))
        _write_errors(f, view.errors)
    commit_file(tmp, store)
    return view


# --------------------------------------------------------------------------- reading


def _open_index(store: Path):
    import h5py

    if not store.exists():
        raise StoreError(f"no store at {store} (build one with: fstore build IMAGES --layer fc7)")
    try:
        f = h5py.File(store, "r")
    except OSError as exc:
        raise StoreError(f"cannot open store {store}: {exc}") from None
    if f.attrs.get("format") != FORMAT:
        f.close()
        raise StoreError(f"{store} is not an fstore store")
    return f


def store_layers(store: Path) -> list[str]:
    """The layers a store holds, in forward order."""
    with _open_index(store) as f:
        return json.loads(f.attrs["layers"])


def resolve_layer(store: Path, layer: str | None) -> str:
    """``layer`` if the store has it; without one, the store's only layer, else ``fc7``."""
    layers = store_layers(store)
    if layer is None:
        if len(layers) == 1:
            return layers[0]
        if "fc7" in layers:
            return "fc7"
        raise StoreError(
            f"store {store} holds several layers ({', '.join(layers)}): pick one with --layer"
        )
    if layer not in layers:
        raise StoreError(f"store {store} has no layer {layer!r}; it holds: {', '.join(layers)}")
    return layer


def _check_shards(store: Path, f) -> None:
    for name in _strings(f["shards/name"]):
        if not shard_path(store, name).exists():
            raise StoreError(f"store {store} is damaged: shard {name} is missing")


def load_features(
    store: Path, layer: str | None = None, rows: np.ndarray | None = None
) -> FeatureSet:
    """One layer's features (float32) with labels, keys and split; only that layer is read.

    ``rows`` optionally selects rows (sorted indices read fastest).
    """
    layer = resolve_layer(store, layer)
    with _open_index(store) as f:
        _check_shards(store, f)
        dataset = f["features"][layer]
        n, dim = dataset.shape
        index = np.arange(n) if rows is None else np.asarray(rows)
        X = np.empty((len(index), dim), dtype=np.float32)
        if rows is None and n:
            if dataset.dtype == np.float32:
                dataset.read_direct(X)
            else:
                X[...] = dataset[()]
        elif len(index):
            X[...] = dataset[np.sort(index)][np.argsort(np.argsort(index))]
        manifest = Manifest.from_json(_scalar_str(f["manifest"]))
        return FeatureSet(
            layer=layer,
            X=X,
            y=f["labels"][()][index],
            keys=np.asarray(_strings(f["keys"]), dtype=object)[index],
            split=np.asarray(_strings(f["split"]), dtype=object)[index],
            classes=tuple(_strings(f["classes"])),
            shape=tuple(int(s) for s in dataset.attrs["shape"]),
            provenance=dict(manifest.provenance),
        )


@dataclass(frozen=True)
class StoreInfo:
    """What ``fstore info`` reports about a store."""

    path: str
    image_root: str
    images: int
    classes: tuple[str, ...]
    class_counts: dict[str, int]
    splits: dict[str, int]
    layers: dict[str, dict]
    dtype: str
    shards: int
    errors: list[dict]
    provenance: dict
    size_bytes: int
    failed_shards: list[dict] = field(default_factory=list)


def store_info(store: Path) -> StoreInfo:
    """Summarise a store: images, classes, splits, layers and shapes, provenance, errors, size."""
    with _open_index(store) as f:
        manifest = Manifest.from_json(_scalar_str(f["manifest"]))
        labels = f["labels"][()]
        classes = tuple(_strings(f["classes"]))
        split = _strings(f["split"])
        err = f["errors"]
        errors = [
            {"key": k, "reason": r, "stored": bool(s)}
            for k, r, s in zip(_strings(err["key"]), _strings(err["reason"]), err["stored"][()])
        ]
        n_shards = len(f["shards/name"])
        failed = []
        if "failed_shards" in f:
            g = f["failed_shards"]
            failed = [{"shard": n, "reason": r, "images": int(k)}
                      for n, r, k in zip(_strings(g["name"]), _strings(g["reason"]),
                                         g["images"][()])]  # fmt: skip
    size = store.stat().st_size
    shards_dir = sidecar(store)
    if shards_dir.is_dir():
        size += sum(p.stat().st_size for p in shards_dir.rglob("*") if p.is_file())
    return StoreInfo(
        path=str(store),
        image_root=manifest.image_root,
        images=len(labels),
        classes=classes,
        class_counts={c: int((labels == i).sum()) for i, c in enumerate(classes)},
        splits={s or "(none)": split.count(s) for s in sorted(set(split))},
        layers={
            layer: {
                "shape": list(manifest.shapes[layer]),
                "dim": int(np.prod(manifest.shapes[layer])),
            }
            for layer in manifest.layers
        },
        dtype=manifest.dtype,
        shards=n_shards,
        failed_shards=failed,
        errors=errors,
        provenance=manifest.provenance,
        size_bytes=size,
    )


def _scalar_str(dataset) -> str:
    value = dataset[()]
    return value.decode() if isinstance(value, bytes) else value


# --------------------------------------------------------------------------- direct writing


def write_arrays(
    store: Path,
    features: dict[str, np.ndarray],
    keys: list[str],
    class_per_row: list[str],
    split: list[str],
    provenance: dict | None = None,
    dtype: str = "float32",
) -> Path:
    """Write a complete store from arrays (one shard); for tests and for importing features.

    Keys become ``<split or 'all'>/<class>/<key>`` so that the stored class and split are the
    given ones. ``features[layer]`` is ``(N, ...)``; its trailing shape is recorded.
    """
    if store.exists() or sidecar(store).exists():
        raise StoreError(f"{store} already exists; write_arrays only creates new stores")
    n = len(keys)
    full_keys = [f"{s or 'none'}/{c}/{k}" for k, c, s in zip(keys, class_per_row, split)]
    shapes = {
        layer: tuple(int(d) for d in np.asarray(v).shape[1:]) for layer, v in features.items()
    }
    spec = SplitSpec("folders") if all(split) else SplitSpec("none")
    manifest = Manifest(
        image_root="",
        split_layout=True,
        split=spec,
        layers=tuple(features),
        shapes=shapes,
        dtype=dtype,
        fingerprint="arrays",
        provenance=dict(provenance or {}),
    )
    sidecar(store).mkdir(parents=True)
    write_manifest(store, manifest)
    write_plan(store, 1, [full_keys])
    rows = ShardRows(
        full_keys,
        [""] * n,
        [0] * n,
        [0] * n,
        {k: np.asarray(v).reshape(n, -1) for k, v in features.items()},
    )
    path = shard_path(store, shard_name(1, 0))
    write_shard(path, rows, dtype, {"generation": 1, "index": 0})
    write_index(store, manifest, [read_shard_summary(path)])
    return store
