"""``fstore verify``: check every stored file against what the index recorded.

For each shard or segment file the index lists: it is present, has the recorded size and
sha256, opens, and holds the recorded number of rows in every layer; its features hold no NaN
or Inf (a CNN's outputs are finite; such values mean damage, or a store read wrongly). Every
row of the index must point inside its file. ``repair`` moves damaged files aside into
``fstore.h5.d/damaged/`` so that the next ``fstore build`` recomputes their images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.store import store as st
from fstore.store.lock import StoreLock

logger = logging.getLogger(__name__)

#: Rows read at a time when checking values (bounded memory whatever the layer size).
CHECK_ROWS = 4096


@dataclass(frozen=True)
class Problem:
    """One damaged file: its name and what is wrong with it."""

    file: str
    what: str


@dataclass
class VerifyReport:
    """What ``fstore verify`` found."""

    store: str
    files: int
    rows: int
    problems: list[Problem] = field(default_factory=list)
    unindexed: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One line: the verdict and what to run."""
        if self.ok:
            return f"ok: {self.files} files, {self.rows} rows, sizes, sha256 and values checked"
        names = ", ".join(sorted({p.file for p in self.problems}))
        if self.moved:
            return (f"{len(self.moved)} damaged file(s) moved aside ({names}); run fstore build "
                    f"--store {self.store} to recompute their images")  # fmt: skip
        return (f"{len(self.problems)} problem(s) in {names}; run fstore verify --repair "
                f"--store {self.store}, then fstore build --store {self.store} to recompute "
                "them")  # fmt: skip


def _check_file(store: Path, info: st.FileInfo, layers: tuple[str, ...], values: bool) -> str:
    """What is wrong with one file ('' when nothing)."""
    path = st.shard_path(store, info.name)
    if not path.exists():
        return "missing"
    size = path.stat().st_size
    if size != info.size:
        return f"{size} bytes, the index recorded {info.size} (truncated or replaced)"
    if st.file_sha256(path) != info.sha256:
        return "sha256 differs from the index's (the file was changed)"
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if len(f["keys"]) != info.rows:
                return f"{len(f['keys'])} keys, the index recorded {info.rows} rows"
            for layer in layers:
                dataset = f["features"][layer]
                if dataset.shape[0] != info.rows:
                    return f"{layer} has {dataset.shape[0]} rows, the index recorded {info.rows}"
                if values and not _finite(dataset):
                    return f"{layer} holds NaN or Inf"
    except (OSError, KeyError, ValueError) as exc:
        return f"does not read ({type(exc).__name__}: {exc})"
    return ""


def _finite(dataset) -> bool:
    for start in range(0, dataset.shape[0], CHECK_ROWS):
        if not np.isfinite(dataset[start : start + CHECK_ROWS]).all():
            return False
    return True


def verify(store: Path, values: bool = True, repair: bool = False) -> VerifyReport:
    """Check a store's files (see the module docstring); ``repair`` moves damaged ones aside."""
    with st.reading(store) as index:
        file_ids, file_rows = index.source_file[()], index.source_row[()]
        layers, infos = tuple(index.manifest.layers), index.files
    report = VerifyReport(str(store), len(infos), len(file_ids))
    for info in infos:
        what = _check_file(store, info, layers, values)
        if what:
            report.problems.append(Problem(info.name, what))
    limits = np.array([i.rows for i in infos], np.int64)
    if len(file_ids) and (file_rows >= limits[file_ids]).any():
        report.problems.append(Problem(st.DEFAULT_STORE, "index rows point past their files"))
    report.unindexed = sorted(set(_listing(store)) - {info.name for info in infos})
    if repair and report.problems:
        with StoreLock(store):
            report.moved = _move_aside(store, {p.file for p in report.problems})
    return report


def _listing(store: Path) -> list[str]:
    folder = st.sidecar(store) / "shards"
    return [p.name for p in folder.glob("*.h5")] if folder.is_dir() else []


def _move_aside(store: Path, names: set[str]) -> list[str]:
    folder = st.sidecar(store) / "damaged"
    folder.mkdir(exist_ok=True)
    moved = []
    for name in sorted(names):
        path = st.shard_path(store, name)
        if path.exists():
            os.replace(path, folder / name)
            moved.append(name)
            logger.info("moved damaged %s to %s", name, folder)
    return moved
