"""``fstore verify``: check every stored file against what the catalog recorded.

For each shard or segment file the catalog lists: it is present, has the recorded size and
sha256, opens, and holds the recorded number of rows in every layer; its features hold no NaN
or Inf (a CNN's outputs are finite; such values mean damage). Every shard's rows lie inside its
file. A store with planned images not yet computed is not ok: it is unfinished. ``repair``
moves damaged files aside into ``fstore.h5.d/damaged/`` and marks their shards as not
computed, so that the next ``fstore build`` recomputes their images.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.store.catalog import FileInfo, connect, counts, files, forget_files, transaction
from fstore.store.layout import read_manifest, shard_path, sidecar
from fstore.store.lock import StoreLock

logger = logging.getLogger(__name__)

#: Rows read at a time when checking values (bounded memory whatever the layer size).
CHECK_ROWS = 4096


@dataclass(frozen=True)
class Problem:
    """One damaged file (or the store itself): its name and what is wrong with it."""

    file: str
    what: str


@dataclass
class VerifyReport:
    """What ``fstore verify`` found."""

    store: str
    files: int
    rows: int
    problems: list[Problem] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    pending: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.pending

    def summary(self) -> str:
        """One line: the verdict and what to run."""
        if self.ok:
            return f"ok: {self.files} files, {self.rows} rows, sizes, sha256 and values checked"
        if not self.problems:
            return (
                f"incomplete: {self.pending} planned images are not computed yet; run the same "
                "fstore build to finish"
            )
        names = ", ".join(sorted({p.file for p in self.problems}))
        if self.moved:
            return (
                f"{len(self.moved)} damaged file(s) moved aside ({names}); run fstore build "
                f"--store {self.store} to recompute their images"
            )
        return (
            f"{len(self.problems)} problem(s) in {names}; run fstore verify --repair "
            f"--store {self.store}, then fstore build --store {self.store} to recompute "
            "them"
        )


def _check_file(store: Path, info: FileInfo, layers: tuple[str, ...], values: bool) -> str:
    """What is wrong with one file ('' when nothing)."""
    path = shard_path(store, info.name)
    if not path.exists():
        return "missing"
    data = path.read_bytes()
    if len(data) != info.bytes:
        return f"{len(data)} bytes, the catalog recorded {info.bytes} (truncated or replaced)"
    if hashlib.sha256(data).hexdigest() != info.sha256:
        return "sha256 differs from the catalog's (the file was changed)"
    import h5py

    try:
        with h5py.File(path, "r") as f:
            for layer in layers:
                dataset = f["features"][layer]
                if dataset.shape[0] != info.rows:
                    return f"{layer} has {dataset.shape[0]} rows, the catalog recorded {info.rows}"
                if values and not _finite(dataset):
                    return f"{layer} holds NaN or Inf"
    except (OSError, KeyError, ValueError) as exc:
        return f"does not read ({type(exc).__name__}: {exc})"
    return ""


def _finite(dataset) -> bool:
    return all(
        np.isfinite(dataset[start : start + CHECK_ROWS]).all()
        for start in range(0, dataset.shape[0], CHECK_ROWS)
    )


def verify(store: Path, values: bool = True, repair: bool = False) -> VerifyReport:
    """Check a store's files (see the module docstring); ``repair`` moves damaged ones aside."""
    manifest = read_manifest(store)
    layers = manifest.layers if manifest else ()
    with closing(connect(store)) as con:
        infos, n = files(con), counts(con)
        overflow = con.execute(
            "SELECT s.name FROM shards s JOIN files f ON f.name = s.file "
            "WHERE s.start + s.rows > f.rows"
        ).fetchall()
    report = VerifyReport(str(store), len(infos), n["stored"], pending=n["pending"])
    for info in infos.values():
        what = _check_file(store, info, layers, values)
        if what:
            report.problems.append(Problem(info.name, what))
    report.problems += [Problem(name, "its rows lie past its file's end") for (name,) in overflow]
    folder = sidecar(store) / "shards"
    report.unlisted = sorted(p.name for p in folder.glob("*.h5") if p.name not in infos)
    if repair and report.problems:
        report.moved = _repair(store, {p.file for p in report.problems} & set(infos))
    return report


def _repair(store: Path, names: set[str]) -> list[str]:
    with StoreLock(store), closing(connect(store, write=True)) as con:
        return set_aside(store, con, names)


def set_aside(store: Path, con: sqlite3.Connection, names: Iterable[str]) -> list[str]:
    """Move damaged files into ``damaged/`` and mark their shards as not computed; returns
    the files moved (a missing one is only forgotten)."""
    names = sorted(names)
    forget_files(con, store, names)
    folder = sidecar(store) / "damaged"
    moved = [name for name in names if shard_path(store, name).exists()]
    for name in moved:
        folder.mkdir(exist_ok=True)
        os.replace(shard_path(store, name), folder / name)
        logger.info("moved damaged %s to %s", name, folder)
    return moved


def changed_files(store: Path, con: sqlite3.Connection) -> list[str]:
    """Files that are missing or hold other bytes than the catalog recorded: a stat each, and
    a hash only where the mtime moved (a touched file with the same bytes is kept)."""
    changed = []
    for info in files(con).values():
        try:
            stat = shard_path(store, info.name).stat()
        except FileNotFoundError:
            changed.append(info.name)
            continue
        if stat.st_size != info.bytes:
            changed.append(info.name)
        elif stat.st_mtime_ns != info.mtime_ns:
            data = shard_path(store, info.name).read_bytes()
            if hashlib.sha256(data).hexdigest() != info.sha256:
                changed.append(info.name)
            else:
                with transaction(con, store):
                    con.execute(
                        "UPDATE files SET mtime_ns = ? WHERE name = ?",
                        (stat.st_mtime_ns, info.name),
                    )
    return changed
