"""Compaction: consecutive small shard files copied whole into a segment, which one catalog
transaction then lists in their place; the old files are deleted once the view names the
segments. A kill at any moment leaves a catalog, and a view, that point at files that exist
(docs/store.md)."""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import closing
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np

from fstore.errors import StoreError
from fstore.store.catalog import connect, files, transaction
from fstore.store.files import file_problem, leftovers, set_aside
from fstore.store.layout import Manifest, open_h5, read_manifest, shard_path, sidecar
from fstore.store.lock import StoreLock
from fstore.store.shards import ShardRecord, read_record, refresh_view, write_shard

logger = logging.getLogger(__name__)

SEGMENT_ROWS = 65_536
#: A segment is built in memory, so a group also closes at this size (fc7: 16k rows).
SEGMENT_BYTES = 256 * 2**20
#: Small files are merged even below ``segment_rows`` once there are more than this many.
MAX_SMALL_FILES = 64


@dataclass(frozen=True)
class CompactReport:
    """What a compaction did."""

    files_before: int
    files_after: int
    segments_written: int
    rows_copied: int
    seconds: float


def clean_store(store: Path, con: sqlite3.Connection) -> int:
    """Before a build or compaction: set damaged files aside (their shards are computed again),
    rewrite a view that no longer matches the catalog (so that it names only files that stay),
    and delete what an interrupted writer left (temporaries, files the catalog does not list).
    Returns how many files went."""
    damaged = [info.name for info in files(con).values() if file_problem(store, info, deep=False)]
    if damaged:
        logger.warning("shard files missing or changed, to compute again: %s", ", ".join(damaged))
        set_aside(store, con, damaged)
    manifest = read_manifest(store)
    if manifest is not None:
        refresh_view(store, con, manifest)
    listed = set(files(con))
    doomed = [
        *leftovers(store),
        *(p for p in (sidecar(store) / "shards").glob("*.h5") if p.name not in listed),
    ]
    for path in doomed:
        path.unlink(missing_ok=True)
    return len(doomed)


def plan_compaction(con: sqlite3.Connection, segment_rows: int, max_small: int) -> list[list[str]]:
    """Groups of consecutive small files to merge, each closed at ``segment_rows`` rows (or
    ``SEGMENT_BYTES``); the remainder only when it holds more than ``max_small`` files, so a
    small store keeps its shards and a row is copied a few times at most as a store grows."""
    query = (
        "SELECT f.name, f.rows, f.bytes FROM files f JOIN shards s ON s.file = f.name "
        "GROUP BY f.name HAVING f.rows < ? ORDER BY MIN(s.name)"
    )
    groups, current, rows, size = [], [], 0, 0
    for name, n, nbytes in con.execute(query, (segment_rows,)):
        current.append(name)
        rows, size = rows + n, size + nbytes
        if rows >= segment_rows or size >= SEGMENT_BYTES:
            groups.append(current)
            current, rows, size = [], 0, 0
    if len(current) > max_small:
        groups.append(current)
    return [g for g in groups if len(g) > 1]


def merge(store: Path, con: sqlite3.Connection, manifest: Manifest, group: list[str]) -> int:
    """Copy the files of ``group`` whole into one segment and point their shards at it; the
    caller deletes the old files once the view no longer names them."""
    keys, features, offsets = [], {layer: [] for layer in manifest.layers}, {}
    record: ShardRecord | None = ShardRecord()
    for name in group:
        with open_h5(shard_path(store, name), f"shard {name}", store) as f:
            offsets[name] = len(keys)
            keys.extend(f["keys"].asstr()[()])
            for layer in manifest.layers:
                features[layer].append(f["features"][layer][()])
            part = read_record(f)
        if record is not None and part is not None:
            record.extend(part)
        else:  # a file written without a record: the segment has none either
            record = None
    segment = f"m{group[0].removesuffix('.h5')}-{len(group)}.h5"
    joined = {layer: np.concatenate(parts) for layer, parts in features.items()}
    info = write_shard(store, segment, keys, joined, manifest.dtype, record)
    with transaction(con, store):
        con.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?)", astuple(info))
        con.executemany(
            "UPDATE shards SET file = ?, start = start + ? WHERE file = ?",
            ((segment, offset, name) for name, offset in offsets.items()),
        )
        con.executemany("DELETE FROM files WHERE name = ?", ((n,) for n in group))
    logger.info("compacted %d files (%d rows) into %s", len(group), info.rows, segment)
    return info.rows


def compact_locked(
    store: Path,
    con: sqlite3.Connection,
    manifest: Manifest,
    segment_rows: int = SEGMENT_ROWS,
    max_small: int = MAX_SMALL_FILES,
) -> CompactReport:
    """Compact a store whose lock the caller holds (the end of ``fstore build`` calls this),
    then refresh its view."""
    start = time.perf_counter()
    before = len(files(con))
    groups = plan_compaction(con, segment_rows, max_small)
    copied = sum(merge(store, con, manifest, group) for group in groups)
    refresh_view(store, con, manifest)
    for name in (name for group in groups for name in group):
        shard_path(store, name).unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    return CompactReport(before, len(files(con)), len(groups), copied, seconds)


def compact(
    store: Path, segment_rows: int = SEGMENT_ROWS, max_small: int = MAX_SMALL_FILES
) -> CompactReport:
    """``fstore compact``: merge small shard files into segments, under the store's lock."""
    manifest = read_manifest(store, required=True)
    if segment_rows < 1:
        raise StoreError("--segment-rows must be at least 1")
    with StoreLock(store), closing(connect(store, write=True)) as con:
        clean_store(store, con)
        return compact_locked(store, con, manifest, segment_rows, max_small)
