"""The write stage of ``fstore build``: each finished shard to disk, then into the catalog.

Shards are written on a thread of their own, so writing never stalls inference. Each shard is
one HDF5 file built in memory and written atomically (:func:`fstore.store.shards.write_shard`),
then listed in the catalog by one SQLite transaction (:func:`catalog.commit_shard`). A kill
between the two leaves a file the catalog does not list: the next build deletes it and
computes the shard again. A write that fails for a reason the user can fix (a full disk, a
folder that is not writable) is one line saying so; every shard committed before it is safe.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from pathlib import Path

from fstore.store import catalog
from fstore.store.catalog import FileInfo
from fstore.store.layout import Manifest
from fstore.store.shards import ShardRows, shard_record, write_shard


class Writer:
    """Writes finished shards and commits them to the catalog, on its own thread.

    Every catalog change of a build goes through this thread, so one connection serves it.
    """

    def __init__(self, store: Path, manifest: Manifest, con: sqlite3.Connection) -> None:
        self.store, self.manifest, self.con = store, manifest, con
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.shards_written = 0
        self._thread = threading.Thread(target=self._loop, name="fstore-writer", daemon=True)
        self._thread.start()

    def put(self, name: str, rows: ShardRows) -> None:
        """Queue one finished shard (rows with features) for writing."""
        self._queue(self._write, name, rows)

    def add_written(self, name: str, rows: ShardRows, info: FileInfo) -> None:
        """Commit a shard file someone else (a Ray worker) wrote into the store."""
        self._queue(self._commit, name, rows, info)

    def mark_failed(self, name: str, reason: str) -> None:
        """Record a shard that failed every attempt; the next build retries it."""
        self._queue(catalog.mark_failed, self.con, self.store, name, reason)

    def close(self) -> None:
        """Wait for the queued shards; re-raise what failed on the writer's thread."""
        self.queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error

    def _queue(self, *job) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put(job)

    def _write(self, name: str, rows: ShardRows) -> None:
        dtype, record = self.manifest.dtype, shard_record(name, rows)
        info = write_shard(self.store, f"{name}.h5", rows.keys, rows.features, dtype, record)
        self._commit(name, rows, info)

    def _commit(self, name: str, rows: ShardRows, info: FileInfo) -> None:
        notes = {e["key"]: e["reason"] for e in rows.errors}
        stored = zip(rows.keys, range(len(rows.keys)), rows.sha256, rows.size, rows.mtime_ns)
        images = [(*row, notes.get(row[0])) for row in stored] + [
            (e["key"], None, e["sha256"], e["size"], e["mtime_ns"], e["reason"])
            for e in rows.errors
            if not e["stored"]
        ]
        catalog.commit_shard(self.con, self.store, name, info, images)
        self.shards_written += 1

    def _loop(self) -> None:
        while (job := self.queue.get()) is not None:
            if self.error is not None:
                continue
            start = time.perf_counter()
            try:
                job[0](*job[1:])
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
                self.error = exc
            self.seconds += time.perf_counter() - start
