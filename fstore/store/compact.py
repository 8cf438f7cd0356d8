"""Compaction: many small shard files merged into few large segments, crash-safe.

A build writes one file per shard (256 images by default), so a store of millions of images
would hold thousands of files. Compaction merges small files into segments of at least
``segment_rows`` rows, keeping every row and its plan order, the way shards are written:
temporary file, fsync, rename; then the index; then the old files are deleted. A ``kill -9`` at
any moment leaves a store that opens: a segment is only ever renamed in whole, and while both
a segment and the files it replaces exist, the segment wins (:func:`store.load_state`) and the
next build or compaction deletes the others. ``fstore compact`` also folds the index's journal
into its base (:func:`store.commit_index`), so that plain h5py sees every row.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fstore.errors import StoreError
from fstore.fsutil import fsync_path, tmp_path_for
from fstore.store import store as st
from fstore.store.lock import StoreLock, write_failure

logger = logging.getLogger(__name__)

SEGMENT_ROWS = 65_536
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
    index: str = ""  # what the index commit did: "fold", "journal" or "current"


def _crash_point(name: str) -> None:
    """``kill -9`` of this process at a named step, for the crash tests only."""
    if os.environ.get("FSTORE_TEST_KILL_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def plan_compaction(
    state: st.StoreState, segment_rows: int = SEGMENT_ROWS, max_small: int = MAX_SMALL_FILES
) -> list[list[str]]:
    """Groups of small files (fewer than ``segment_rows`` rows) to merge, in plan order.

    Greedy: consecutive small files until a group reaches ``segment_rows``. The remainder is
    merged only when it holds more than ``max_small`` files, so a small store keeps its
    shards, and every row is copied a few times at most as a store grows.
    """
    first = {}
    for part in state.parts.values():
        first.setdefault(part.file, part.name)
    small = sorted((f for f in state.files if state.files[f].rows < segment_rows),
                   key=lambda f: first.get(f, f))  # fmt: skip
    groups, current, rows = [], [], 0
    for name in small:
        current.append(name)
        rows += state.files[name].rows
        if rows >= segment_rows:
            groups.append(current)
            current, rows = [], 0
    if len(current) > max_small:
        groups.append(current)
    return [g for g in groups if len(g) > 1]


def write_segment(
    store: Path, manifest: st.Manifest, parts: list[st.Part], files: dict[str, st.FileInfo]
) -> tuple[st.FileInfo, list[st.Part]]:
    """One segment holding ``parts`` (in plan order) copied from their files, committed
    atomically; returns its catalog entry and the parts as they sit in it."""
    import h5py

    parts = sorted(parts, key=lambda p: p.name)
    name = st.segment_name(parts[0].name, len(parts))
    path = st.shard_path(store, name)
    tmp = tmp_path_for(path)
    columns = st.concat_rows(parts)
    n = len(columns.keys)
    string = h5py.string_dtype()
    try:
        with st.create_h5(tmp) as f:
            f.attrs["fingerprint"] = manifest.fingerprint
            st.write_columns(f, columns)
            f.create_dataset("parts/name", data=st.str_data(p.name for p in parts), dtype=string)
            f.create_dataset("parts/rows", data=np.array([len(p.keys) for p in parts], np.int64))
            f.create_dataset("parts/errors", data=np.array([len(p.errors) for p in parts]))
            for layer in manifest.layers:
                dim = int(np.prod(manifest.shapes[layer]))
                target = f.create_dataset(f"features/{layer}", (n, dim), dtype=manifest.dtype)
                _copy_layer(store, layer, parts, files, target)
        info = st.commit_hashed(tmp, path, n)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    moved, offset = [], 0
    for part in parts:
        moved.append(replace(part, file=name, offset=offset))
        offset += len(part.keys)
    return info, moved


def _copy_layer(store: Path, layer: str, parts: list[st.Part], files: dict, target) -> None:
    """Copy each part's rows of one layer, one source file open at a time."""
    at = 0
    by_file: dict[str, list[tuple[st.Part, int]]] = {}
    for part in parts:
        by_file.setdefault(part.file, []).append((part, at))
        at += len(part.keys)
    for file, placed in by_file.items():
        with st.open_shard(store, files[file]) as source:
            dataset = source["features"][layer]
            for part, start in placed:
                rows = len(part.keys)
                if rows:
                    target[start : start + rows] = dataset[part.offset : part.offset + rows]


def compact_locked(
    store: Path,
    segment_rows: int | None = None,
    max_small: int | None = None,
    *,
    state: st.StoreState | None = None,
    manifest: st.Manifest | None = None,
    fold: bool = False,
) -> CompactReport:
    """Compact a store whose lock the caller holds (the end of ``fstore build`` calls this),
    and write its index if it is not current.

    ``None`` takes the module's ``SEGMENT_ROWS`` and ``MAX_SMALL_FILES``. ``state``: the
    store's state as the caller (a build's writer) holds it, temporaries already removed;
    ``manifest``: the one to write into the index (else the store's); ``fold``: fold the
    index's journal into its base (``fstore compact`` does).
    """
    start = time.perf_counter()
    segment_rows = SEGMENT_ROWS if segment_rows is None else segment_rows
    max_small = MAX_SMALL_FILES if max_small is None else max_small
    if state is None:
        st.remove_temporaries(store)
    manifest = manifest or st.read_manifest(store)
    if manifest is None:
        raise StoreError(f"no store at {store} to compact")
    state = st.load_state(store) if state is None else state
    before = len(state.files)
    groups = plan_compaction(state, segment_rows, max_small)
    copied = 0
    for group in groups:
        parts = [p for p in state.parts.values() if p.file in group]
        try:
            info, moved = write_segment(store, manifest, parts, state.files)
        except (OSError, RuntimeError) as exc:
            raise write_failure(exc, f"a segment ({len(group)} shards)", store, state) from None
        logger.info("compacted %d files (%d rows) into %s", len(group), info.rows, info.name)
        for name in group:
            del state.files[name]
        state.files[info.name] = info
        state.parts.update({p.name: p for p in moved})
        copied += info.rows
        _crash_point("segment")
    try:  # a journal entry for what changed, or a fold (a no-op when the index is current)
        index = st.commit_index(store, manifest, state.ordered(), state.files, final=True,
                                fold=fold)  # fmt: skip
    except (OSError, RuntimeError) as exc:
        raise write_failure(exc, "the index", store, state) from None
    _crash_point("index")
    _delete(store, [name for group in groups for name in group])
    seconds = time.perf_counter() - start
    return CompactReport(before, len(state.files), len(groups), copied, seconds, index)


def _delete(store: Path, names: list[str]) -> None:
    for i, name in enumerate(names):
        st.shard_path(store, name).unlink(missing_ok=True)
        if i == 0:
            _crash_point("delete")
    if names:
        fsync_path(st.sidecar(store) / "shards")


def compact(
    store: Path, segment_rows: int = SEGMENT_ROWS, max_small: int = MAX_SMALL_FILES
) -> CompactReport:
    """``fstore compact``: merge small shard files into segments, under the store's lock."""
    if not st.sidecar(store).is_dir():
        raise StoreError(f"no store at {store} (build one with: fstore build IMAGES --layer fc7)")
    if segment_rows < 1:
        raise StoreError("--segment-rows must be at least 1")
    with StoreLock(store):
        return compact_locked(store, segment_rows, max_small, fold=True)
