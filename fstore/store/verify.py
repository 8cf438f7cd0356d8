"""``fstore verify``: everything a read serves is checked against what it must be.

* the catalog: SQLite's own integrity check, every image's shard listed, every class and split
  what the store's rule gives for its key (:mod:`.labels`);
* every file the catalog lists: there, with its recorded size and sha256, its rows, finite
  values, and each image's row holding that image (its key, and what the file's ``record``
  says of it: position, sha256, warning; a bad image's reason);
* the view ``fstore.h5``: there, written for this catalog and this folder, its bytes as
  written, its keys, labels and splits the catalog's;
* no temporary file left by an interrupted writer (unless a writer holds the lock now).

A store with images not computed yet is not ok either. ``repair`` (:mod:`.repair`) fixes what
can be fixed in place; the next build computes what it set aside.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.errors import StoreError
from fstore.store import catalog
from fstore.store.catalog import FileInfo, connect, counts, files
from fstore.store.files import Problem, file_problem, leftovers, sha256
from fstore.store.labels import key_labels
from fstore.store.layout import Manifest, read_manifest, shard_path, sidecar
from fstore.store.lock import is_locked
from fstore.store.reads import _table, view_problem
from fstore.store.shards import ShardRecord, read_record

#: Rows read at a time when checking values (bounded memory whatever the layer size).
CHECK_ROWS = 4096


@dataclass
class VerifyReport:
    """What ``fstore verify`` found (and, with ``repair``, what it did first)."""

    store: str
    files: int
    rows: int
    problems: list[Problem] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    pending: int = 0
    repaired: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.pending

    def summary(self) -> str:
        """One line: the verdict (the first problem) and what to run."""
        build = f"fstore build --store {self.store}"
        done = f"repaired ({'; '.join(self.repaired)}); " if self.repaired else ""
        if self.problems:
            first, more = self.problems[0], len(self.problems) - 1
            also = f" (and {more} more problem(s))" if more else ""
            fix = f"run: fstore verify --repair --store {self.store}, then {build}"
            if self.repaired:
                fix = "it could not be repaired in place: build the store again into a new one"
            return f"{done}{first.file}: {first.what}{also}; {fix}"
        if self.pending:
            return (
                f"{done}incomplete: {self.pending} planned images are not computed yet; run "
                f"{build} to finish"
            )
        return f"{done}ok: {self.files} files, {self.rows} rows; catalog, files and view checked"


@dataclass
class _FileRows:
    """A shard file as read: its keys and record."""

    keys: list[str]
    record: ShardRecord | None


def _read_file(path: Path, info: FileInfo, layers, values: bool) -> _FileRows | str:
    """A file's keys and record, after checking its row counts (and values): or what is wrong."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            keys = list(f["keys"].asstr()[()])
            for layer in layers:
                dataset = f["features"][layer]
                if dataset.shape[0] != info.rows or len(keys) != info.rows:
                    return f"{layer} has {dataset.shape[0]} rows, the catalog recorded {info.rows}"
                chunks = (dataset[at : at + CHECK_ROWS] for at in range(0, info.rows, CHECK_ROWS))
                if values and not all(np.isfinite(chunk).all() for chunk in chunks):
                    return f"{layer} holds NaN or Inf"
            return _FileRows(keys, read_record(f))
    except (OSError, KeyError, ValueError, TypeError) as exc:
        return f"does not read ({type(exc).__name__}: {exc})"


_FILE_ROWS = (
    "SELECT i.key, i.pos, i.sha256, i.error, i.row, s.name, s.start, s.rows FROM images i "
    "JOIN shards s ON s.name = i.shard WHERE s.file = ?"
)


def _cross_check(con: sqlite3.Connection, name: str, read: _FileRows) -> str:
    """The first catalog row of file ``name`` that disagrees with the file ('' when none)."""
    record, keys, used = read.record, read.keys, set()
    placed = {s: (start, rows) for s, start, rows in record.shards} if record else None
    bad = {(e.key, e.shard): (e.reason, e.sha256) for e in record.bad} if record else None
    for key, pos, sha, error, row, shard, start, rows in con.execute(_FILE_ROWS, (name,)):
        if placed is not None and placed.get(shard) != (start, rows):
            return f"shard {shard} at rows {start}+{rows} in the catalog, {placed.get(shard)} here"
        if row is None:
            if error is None:
                return f"image {key} has neither a row nor a reason"
            if bad is not None and bad.get((key, shard)) != (error, sha):
                return f"bad image {key}: the catalog's reason or sha256 is not the file's"
            continue
        at = start + row
        if not 0 <= row < rows or at >= len(keys) or at in used:
            return f"image {key} points at row {row} of shard {shard}, which it cannot hold"
        used.add(at)
        if keys[at] != key:
            return f"row {at} holds {keys[at]}, the catalog says {key}"
        kept = record.rows[at] if record is not None else None
        if kept is not None and (pos, sha, error) != (kept.pos, kept.sha256, kept.warning):
            return f"image {key}: its position, sha256 or warning in the catalog is not the file's"
    return ""


_ORPHANS = (
    ("SELECT key FROM images WHERE shard NOT IN (SELECT name FROM shards) LIMIT 1",
     "image {} belongs to no planned shard"),
    ("SELECT name FROM shards WHERE file IS NOT NULL AND file NOT IN (SELECT name FROM files) "
     "LIMIT 1", "shard {} is in a file the catalog does not list"),
)  # fmt: skip


def catalog_problem(con: sqlite3.Connection, manifest: Manifest) -> str:
    """What is wrong inside the catalog ('' when nothing): SQLite's integrity check, shards
    that are not there, classes and splits that are not what the store's rule gives."""
    verdict = con.execute("PRAGMA integrity_check(1)").fetchone()[0]
    if verdict != "ok":
        return f"SQLite's integrity check fails ({verdict})"
    for query, what in _ORPHANS:
        if found := con.execute(query).fetchone():
            return what.format(found[0])
    rows = con.execute("SELECT key, class, split FROM images ORDER BY key").fetchall()
    keys = [r[0] for r in rows]
    classes, split = key_labels(keys, manifest.split_layout, manifest.split)
    for (key, c, s), want_c, want_s in zip(rows, classes, split):
        if (c, s) != (want_c, want_s):
            return f"image {key} is recorded as class {c!r}, split {s!r}; its key gives {want_c!r}, {want_s!r}"  # noqa: E501
    return ""


def view_content_problem(store: Path, con: sqlite3.Connection) -> str:
    """Whether the view's bytes are those written, and its rows the catalog's ('' when so)."""
    import h5py

    if (recorded := catalog.get_meta(con, "view_sha256")) and sha256(store) != recorded:
        return "its bytes changed since it was written (sha256)"
    t = _table(con)
    try:
        with h5py.File(store, "r") as f:
            same = (
                list(f["keys"].asstr()[()]) == list(t["keys"])
                and list(f["split"].asstr()[()]) == list(t["split"])
                and list(f["classes"].asstr()[()]) == list(t["classes"])
                and np.array_equal(f["labels"][()], t["labels"])
            )
    except (OSError, KeyError, ValueError, TypeError) as exc:
        return f"does not read ({type(exc).__name__})"
    return "" if same else "its keys, labels or splits differ from the catalog's"


def _check_files(store: Path, con, infos, manifest: Manifest, values: bool) -> list[Problem]:
    problems = []
    for info in infos.values():
        path = shard_path(store, info.name)
        read = file_problem(store, info) or _read_file(path, info, manifest.layers, values)
        if isinstance(read, str):
            problems.append(Problem(info.name, read))
        elif what := _cross_check(con, info.name, read):
            problems.append(Problem("catalog", f"disagrees with {info.name}: {what}", "catalog"))
    return problems


def check(store: Path, manifest: Manifest, values: bool = True) -> VerifyReport:
    """Every check of the module docstring, in that order; nothing is changed."""
    report = VerifyReport(str(store), 0, 0)
    try:
        con = connect(store)
        with closing(con):
            infos, n = files(con), counts(con)
    except (StoreError, *catalog.DAMAGE) as exc:
        report.problems.append(Problem("catalog", f"does not read ({exc})", "catalog"))
        return report
    report.files, report.rows, report.pending = len(infos), n["stored"], n["pending"]
    with closing(connect(store)) as con:
        try:
            if what := catalog_problem(con, manifest):
                report.problems.append(Problem("catalog", what, "catalog"))
            report.problems += _check_files(store, con, infos, manifest, values)
            # an unfinished store's view is written by the build that finishes it
            view = view_problem(store, con)
            view = view or (not report.pending and view_content_problem(store, con))
        except catalog.DAMAGE as exc:
            report.problems.append(Problem("catalog", f"does not read ({exc})", "catalog"))
            return report
    if view:
        report.problems.append(Problem(f"view {store.name}", view, "view"))
    folder = sidecar(store) / "shards"
    report.unlisted = sorted(p.name for p in folder.glob("*.h5") if p.name not in infos)
    if not is_locked(store):  # a writer at work has temporaries of its own
        report.problems += [
            Problem(p.name, "a temporary file left by an interrupted writer", "leftover")
            for p in leftovers(store)
        ]
    return report


def verify(
    store: Path,
    values: bool = True,
    repair: bool = False,
    folder_keys: Callable[[], set[str] | None] | None = None,
) -> VerifyReport:
    """Check a store (see the module docstring); ``repair`` first fixes what it finds, then
    checks again. ``folder_keys`` gives the keys of the image folder, so that a catalog
    rebuilt from the shards holds only images still there (``None``: every image)."""
    store = Path(store)
    manifest = read_manifest(store, required=True)
    report = check(store, manifest, values)
    if not (repair and report.problems):
        return report
    from fstore.store.repair import repair_store

    done = repair_store(store, manifest, report.problems, folder_keys)
    after = check(store, manifest, values)
    after.repaired, after.moved = done.actions, done.moved
    return after
