"""The write stage of ``fstore build``: finished shards to disk, the index after them.

Shards are written on a thread of their own (temporary name, fsync, rename), so writing never
stalls inference. The index is committed (:func:`store.commit_index`: a journal entry holding
only the shards written since the last commit, or now and then a fold that rewrites the base)
at most every ``index_every`` seconds and after 50 times its last cost has passed (so for at
most 1/50 of the time), then once at the end (by the compaction step); readers see a consistent
index at every moment. ``StoreLock`` keeps two builds off one store and names the one that
holds it.

Why the index is not updated in place (appending the new shards' rows): HDF5 does not survive
``kill -9`` of a process modifying a file (``../shared/notes/STORE.md``: unflushed files no
longer open, flushed ones sometimes open with unreadable data; SWMR cannot create datasets and
needs readers that open with ``swmr=True``). The index must open after any kill, so its base
is only ever replaced by rename and its journal only grows by renamed entries.

A write that fails for a reason the user can fix (a full disk, a folder that is not writable)
ends in one line saying what happened, what is safe and what to run (:func:`write_failure`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

from fstore.store import store as st
from fstore.store.lock import write_failure

logger = logging.getLogger(__name__)

#: The index is rewritten during a build only after this many times its last cost has passed.
INDEX_COST_FACTOR = 50.0


class Writer:
    """Writes finished shards and rewrites the index on its own thread.

    ``summaries`` is accepted for older callers and ignored: the writer reads the store's
    state itself (:func:`store.load_state`).
    """

    def __init__(
        self, store: Path, manifest: st.Manifest, summaries=None, index_every: float = 2.0
    ) -> None:
        self.store, self.manifest = store, manifest
        self.state = summaries if isinstance(summaries, st.StoreState) else st.load_state(store)
        self.index_every = index_every
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.shards_written = 0
        self._last_index, self._index_cost = time.perf_counter(), 0.0
        self._last_fold, self._fold_cost = self._last_index, 0.0
        self._thread = threading.Thread(target=self._loop, name="fstore-writer", daemon=True)
        self._thread.start()

    def put(self, name: str, rows: st.ShardRows) -> None:
        """Queue one finished shard (rows with features) for writing."""
        if self.error is not None:
            raise self.error
        self.queue.put((name, rows))

    def add_written(self, part: st.Part, info: st.FileInfo) -> None:
        """Record a shard file someone else (a Ray worker) wrote and committed into the store."""
        if self.error is not None:
            raise self.error
        self.queue.put((part, info))

    def close(self, index: bool = True) -> None:
        """Wait for the queued shards, then commit the index as at the end of a build.

        ``index=False`` leaves that to the caller, who commits it from :attr:`state`: the
        build's compaction commits the index once, instead of twice. Until then the shard files
        are the truth, as after a kill.
        """
        self.queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error
        if index:  # also when current: a small store folds a pending journal
            start = time.perf_counter()
            self.write_index(final=True)
            self.seconds += time.perf_counter() - start

    def write_index(self, final: bool = False, may_fold: bool = True) -> str:
        """Commit the index: a journal entry with the shards written since the last commit, or
        a fold (:func:`store.commit_index`, which says which it did)."""
        try:
            done = st.commit_index(self.store, self.manifest, self.state.ordered(),
                                   self.state.files, final=final, may_fold=may_fold)  # fmt: skip
        except (OSError, RuntimeError) as exc:
            raise write_failure(exc, "the index", self.store, self.state) from None
        return done

    def _add(self, part: st.Part, info: st.FileInfo) -> None:
        self.state.parts[part.name] = part
        self.state.files[info.name] = info
        st.failed_path(self.store, part.name).unlink(missing_ok=True)
        self.shards_written += 1

    def _write(self, name: str, rows: st.ShardRows) -> None:
        generation, index = st.parse_shard_name(name)
        attrs = {"generation": generation, "index": index,
                 "fingerprint": self.manifest.fingerprint}  # fmt: skip
        try:
            info = st.write_shard(st.shard_path(self.store, name), rows, self.manifest.dtype, attrs)
        except (OSError, RuntimeError) as exc:
            raise write_failure(exc, f"shard {name}", self.store, self.state) from None
        part = st.Part(rows.keys, rows.sha256, rows.size, rows.mtime_ns, errors=rows.errors,
                       name=name, file=name)  # fmt: skip
        self._add(part, info)

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                start = time.perf_counter()
                if isinstance(item[0], st.Part):
                    self._add(*item)
                else:
                    self._write(*item)
                self._maybe_index()
                self.seconds += time.perf_counter() - start
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
                self.error = exc

    def _maybe_index(self) -> None:
        """Commit the index when ``index_every`` and 50x its last cost have both passed; a fold
        (a rewrite of the whole base) only once 50x the last fold's cost has passed too, so
        that folds take at most 1/50 of a build however large the store grows."""
        now = time.perf_counter()
        if now - self._last_index < max(self.index_every, INDEX_COST_FACTOR * self._index_cost):
            return
        may_fold = now - self._last_fold >= INDEX_COST_FACTOR * self._fold_cost
        done = self.write_index(may_fold=may_fold)
        self._last_index = time.perf_counter()
        self._index_cost = self._last_index - now
        if done == "fold":
            self._last_fold, self._fold_cost = self._last_index, self._index_cost
