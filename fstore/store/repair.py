"""``fstore verify --repair``: what can be fixed in place is fixed, under the store's lock.

* A damaged or lost catalog is built again from the shard files alone: each holds its images'
  keys and a ``record`` of what the catalog said of them (:class:`.shards.ShardRecord`); the
  newest shard of a key wins, classes and splits follow the store's rule, and images no longer
  in the image folder are left out. The old catalog is kept in ``damaged/``.
* Damaged shard files are moved to ``damaged/``; the next build computes their images again.
  Without a catalog to check them against, a file is damaged when it does not read or its
  content no longer matches the checksum written into it (:func:`.shards.content_sha256`).
* Temporary files left by an interrupted writer are deleted.
* The view is rewritten.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import astuple, dataclass, field
from pathlib import Path

from fstore.store.catalog import FileInfo, connect, transaction
from fstore.store.files import Problem, leftovers, set_aside, sha256
from fstore.store.labels import key_labels
from fstore.store.layout import Manifest, sidecar
from fstore.store.lock import StoreLock
from fstore.store.shards import (
    RecordRow,
    RecordShard,
    ShardRecord,
    content_intact,
    read_record,
    refresh_view,
)


@dataclass
class Repair:
    """What a repair did: one phrase per action, and the shard files moved aside."""

    actions: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)


def repair_store(
    store: Path,
    manifest: Manifest,
    problems: list[Problem],
    folder_keys: Callable[[], set[str] | None] | None = None,
) -> Repair:
    """Fix ``problems`` (found by :func:`.verify.check`) in place."""
    done, kinds = Repair(), {p.kind for p in problems}
    with StoreLock(store):
        if "catalog" in kinds:
            keys = folder_keys() if folder_keys else None
            done.actions.append(rebuild_catalog(store, manifest, keys))
        with closing(connect(store, write=True)) as con:
            damaged = {p.file for p in problems if p.kind == "file"}
            if damaged and "catalog" not in kinds:
                done.moved = set_aside(store, con, damaged)
                done.actions.append(f"{len(damaged)} damaged shard file(s) set aside")
            gone = leftovers(store)
            for path in gone:
                path.unlink(missing_ok=True)
            if gone:
                done.actions.append(f"{len(gone)} temporary file(s) deleted")
            if refresh_view(store, con, manifest, force=bool(kinds - {"leftover"})):
                done.actions.append(f"view {store.name} rewritten")
    return done


def catalog_lost(store: Path) -> bool:
    """Whether the catalog is gone while shard files remain (a build then rebuilds it first,
    rather than computing every image again)."""
    folder = sidecar(store)
    return not (folder / "catalog.sqlite").exists() and any((folder / "shards").glob("*.h5"))


def _read_index(path: Path) -> tuple[list[str], ShardRecord]:
    """A shard file's keys and record (a file without one is taken as one shard of its name,
    whose images' files the next build hashes again); ``ValueError`` for a file whose content
    is not what it was written with."""
    import h5py

    with h5py.File(path, "r") as f:
        if content_intact(f) is False:
            raise ValueError(f"{path.name} does not hold what it was written with")
        keys = list(f["keys"].asstr()[()])
        record = read_record(f)
    if record is None:
        unknown = RecordRow(pos=0, sha256="", size=-1, mtime_ns=-1, warning=None)
        record = ShardRecord([RecordShard(path.stem, 0, len(keys))], [unknown] * len(keys))
    if len(record.rows) != len(keys):
        raise ValueError(f"{len(keys)} keys, {len(record.rows)} recorded rows")
    return keys, record


def _set_catalog_aside(store: Path) -> str:
    aside = sidecar(store) / "damaged"
    aside.mkdir(exist_ok=True)
    name = f"catalog-{time.strftime('%Y%m%d-%H%M%S')}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        path = sidecar(store) / f"catalog.sqlite{suffix}"
        if path.exists():
            os.replace(path, aside / f"{name}{suffix}")
    return name


def _gather(store: Path) -> tuple[dict, dict, dict, list[str]]:
    """From every shard file: key → (shard, row or None, record entry), shard → (file, start,
    rows), file → FileInfo; and the damaged files (moved aside)."""
    found, placed, infos, unread = {}, {}, {}, []
    for path in sorted((sidecar(store) / "shards").glob("*.h5")):
        try:
            keys, record = _read_index(path)
        except (OSError, KeyError, ValueError, TypeError):
            unread.append(path.name)
            continue
        for name, start, rows in record.shards:
            if name in placed:  # also in a segment whose old files a compaction left
                continue
            placed[name] = (path.name, start, rows)
            for at in range(start, start + rows):
                if keys[at] not in found or found[keys[at]][0] < name:
                    found[keys[at]] = (name, at - start, record.rows[at])
        for bad in record.bad:
            mine = placed.get(bad.shard, ("",))[0] == path.name
            if mine and (bad.key not in found or found[bad.key][0] < bad.shard):
                entry = RecordRow(0, bad.sha256, bad.size, bad.mtime_ns, warning=bad.reason)
                found[bad.key] = (bad.shard, None, entry)
        stat = path.stat()
        infos[path.name] = FileInfo(path.name, len(keys), stat.st_size, sha256(path),
                                    stat.st_mtime_ns)  # fmt: skip
    return found, placed, infos, unread


def _image_row(key: str, label: str, split: str, shard: str, row: int | None, r: RecordRow):
    """The catalog's images row (its column order) of an image found in a shard file."""
    return (key, r.pos, label, split, shard, row, r.sha256, r.size, r.mtime_ns, r.warning)


def rebuild_catalog(store: Path, manifest: Manifest, folder_keys: set[str] | None) -> str:
    """A new catalog from the shard files (see the module docstring); returns what was done."""
    old = _set_catalog_aside(store)
    found, placed, infos, unread = _gather(store)
    aside = sidecar(store) / "damaged"
    for name in unread:
        os.replace(sidecar(store) / "shards" / name, aside / name)
    keys = sorted(k for k in found if folder_keys is None or k in folder_keys)
    classes, split = key_labels(keys, manifest.split_layout, manifest.split)
    shards = sorted({found[k][0] for k in keys})
    used = sorted({placed[s][0] for s in shards})
    with closing(connect(store, write=True)) as con, transaction(con, store):
        con.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?)",
                        (astuple(infos[f]) for f in used))  # fmt: skip
        con.executemany("INSERT INTO shards VALUES (?, ?, ?, ?, NULL)",
                        ((s, *placed[s]) for s in shards))  # fmt: skip
        con.executemany(
            "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (_image_row(k, c, s, *found[k]) for k, c, s in zip(keys, classes, split)),
        )  # fmt: skip
    unread_note = f", {len(unread)} damaged file(s) set aside" if unread else ""
    return (
        f"catalog rebuilt from {len(used)} shard file(s), {len(keys)} images{unread_note} "
        f"(the old one kept as damaged/{old})"
    )
