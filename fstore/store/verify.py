"""``fstore verify``: every file the catalog lists is there, with its recorded size, sha256 and
rows, and finite values; a store with images not computed yet is not ok. ``repair`` moves
damaged files into ``damaged/``, so the next build recomputes their images."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.store.catalog import FileInfo, connect, counts, files, transaction
from fstore.store.layout import read_manifest, shard_path, sidecar
from fstore.store.lock import StoreLock

#: Rows read at a time when checking values (bounded memory whatever the layer size).
CHECK_ROWS = 4096


@dataclass(frozen=True)
class Problem:
    """One damaged file and what is wrong with it."""

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
        names = ", ".join(sorted({p.file for p in self.problems}))
        then = f"fstore build --store {self.store} to recompute"
        if self.moved:
            return (
                f"{len(self.moved)} damaged file(s) moved aside ({names}); run {then} their images"
            )
        if self.problems:
            repair = f"fstore verify --repair --store {self.store}"
            return f"{len(self.problems)} problem(s) in {names}; run {repair}, then {then} them"
        if self.pending:
            finish = "run the same fstore build to finish"
            return f"incomplete: {self.pending} planned images are not computed yet; {finish}"
        return f"ok: {self.files} files, {self.rows} rows, sizes, sha256 and values checked"


def file_problem(store: Path, info: FileInfo, deep: bool = True) -> str:
    """What is wrong with one file's bytes ('' when nothing): a stat, then a hash (without
    ``deep``, only where the mtime moved: a touched file with the same bytes is fine)."""
    path = shard_path(store, info.name)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return "missing"
    if stat.st_size != info.bytes:
        return f"{stat.st_size} bytes, the catalog recorded {info.bytes} (truncated or replaced)"
    if (deep or stat.st_mtime_ns != info.mtime_ns) and sha256(path) != info.sha256:
        return "sha256 differs from the catalog's (the file was changed)"
    return ""


def _h5_problem(path: Path, info: FileInfo, layers: tuple[str, ...], values: bool) -> str:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            for layer in layers:
                dataset = f["features"][layer]
                if dataset.shape[0] != info.rows:
                    return f"{layer} has {dataset.shape[0]} rows, the catalog recorded {info.rows}"
                chunks = (dataset[at : at + CHECK_ROWS] for at in range(0, info.rows, CHECK_ROWS))
                if values and not all(np.isfinite(chunk).all() for chunk in chunks):
                    return f"{layer} holds NaN or Inf"
    except (OSError, KeyError, ValueError) as exc:
        return f"does not read ({type(exc).__name__}: {exc})"
    return ""


def verify(store: Path, values: bool = True, repair: bool = False) -> VerifyReport:
    """Check a store's files (see the module docstring); ``repair`` moves damaged ones aside."""
    layers = read_manifest(store, required=True).layers
    with closing(connect(store)) as con:
        infos, n = files(con), counts(con)
    report = VerifyReport(str(store), len(infos), n["stored"], pending=n["pending"])
    for info in infos.values():
        path = shard_path(store, info.name)
        if what := file_problem(store, info) or _h5_problem(path, info, layers, values):
            report.problems.append(Problem(info.name, what))
    folder = sidecar(store) / "shards"
    report.unlisted = sorted(p.name for p in folder.glob("*.h5") if p.name not in infos)
    if repair and report.problems:
        with StoreLock(store), closing(connect(store, write=True)) as con:
            report.moved = set_aside(store, con, {p.file for p in report.problems} & set(infos))
    return report


def set_aside(store: Path, con: sqlite3.Connection, names: Iterable[str]) -> list[str]:
    """Move damaged files into ``damaged/`` and mark their shards as not computed; returns
    the files moved (a missing one is only forgotten)."""
    names = sorted(names)
    with transaction(con, store):
        for name in names:
            shards = "SELECT name FROM shards WHERE file = ?"
            con.execute(f"UPDATE images SET row = NULL WHERE shard IN ({shards})", (name,))
            con.execute("UPDATE shards SET file = NULL, start = NULL WHERE file = ?", (name,))
            con.execute("DELETE FROM files WHERE name = ?", (name,))
    folder = sidecar(store) / "damaged"
    moved = [name for name in names if shard_path(store, name).exists()]
    for name in moved:
        folder.mkdir(exist_ok=True)
        os.replace(shard_path(store, name), folder / name)
    return moved


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
