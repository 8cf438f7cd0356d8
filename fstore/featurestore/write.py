"""The write stage of ``fstore build``: finished shards to disk, the index after them.

Shards are written on a thread of their own (temporary name, fsync, rename), so writing never
stalls inference; the index is rebuilt from the shards on disk. ``StoreLock`` keeps two builds
off one store.
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading
import time
from pathlib import Path

import numpy as np

from fstore.errors import OutputPathError, StoreError
from fstore.featurestore import store as st


class Writer:
    """Writes finished shards and rebuilds the index on its own thread."""

    def __init__(
        self,
        store: Path,
        manifest: st.Manifest,
        summaries: list[st.ShardSummary],
        index_every: float,
    ) -> None:
        self.store, self.manifest, self.summaries = store, manifest, summaries
        self.index_every = index_every
        self.queue: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.shards_written = 0
        self._last_index = 0.0
        self._thread = threading.Thread(target=self._loop, name="fstore-writer", daemon=True)
        self._thread.start()

    def put(self, name: str, rows: st.ShardRows) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((name, rows))

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join()
        if self.error is not None:
            raise self.error
        start = time.perf_counter()
        st.write_index(self.store, self.manifest, self._ordered())
        self.seconds += time.perf_counter() - start

    def _ordered(self) -> list[st.ShardSummary]:
        return sorted(self.summaries, key=lambda s: s.name)

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            try:
                start = time.perf_counter()
                name, rows = item
                path = st.shard_path(self.store, name)
                generation, index = name[1:7], name[9:15]
                st.write_shard(
                    path,
                    rows,
                    self.manifest.dtype,
                    {
                        "generation": int(generation),
                        "index": int(index),
                        "fingerprint": self.manifest.fingerprint,
                    },
                )
                self.summaries.append(
                    st.ShardSummary(
                        name,
                        rows.keys,
                        rows.sha256,
                        np.asarray(rows.size, np.int64),
                        np.asarray(rows.mtime_ns, np.int64),
                        rows.errors,
                    )
                )
                st.failed_path(self.store, name).unlink(missing_ok=True)
                self.shards_written += 1
                if time.perf_counter() - self._last_index >= self.index_every:
                    st.write_index(self.store, self.manifest, self._ordered())
                    self._last_index = time.perf_counter()
                self.seconds += time.perf_counter() - start
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
                self.error = exc


class StoreLock:
    """An exclusive lock on a store, so two builds never fill it at once."""

    def __init__(self, store: Path) -> None:
        self.path = st.sidecar(store) / "lock"
        self.fd: int | None = None

    def __enter__(self) -> StoreLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise StoreError(f"another build is running on {self.path.parent}") from None
        return self

    def __exit__(self, *exc) -> None:
        assert self.fd is not None
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def prepare_store(store: Path) -> None:
    parent = store.parent if str(store.parent) else Path(".")
    if store.is_dir():
        raise OutputPathError(f"store path {store} is a folder; give a file name such as fstore.h5")
    if not parent.is_dir():
        raise OutputPathError(f"cannot create store {store}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"cannot create store {store}: folder {parent} is not writable")
    try:
        (st.sidecar(store) / "shards").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create store {store}: {exc.strerror}") from None
