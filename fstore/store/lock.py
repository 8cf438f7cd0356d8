"""Holding a store while writing it: the lock that keeps two writers off one store, and the
store's folder."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from fstore.errors import OutputPathError, StoreError
from fstore.store.layout import sidecar


class StoreLock:
    """An exclusive lock on a store, so two builds never fill it at once.

    The holder writes its pid into the lock file, so the one refused can name it.
    """

    def __init__(self, store: Path) -> None:
        self.store = store
        self.path = sidecar(store) / "lock"
        self.fd: int | None = None

    def __enter__(self) -> StoreLock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            holder = self.path.read_text().strip() or "unknown"
            raise StoreError(
                f"another fstore process (pid {holder}) is building or compacting {self.store}; "
                f"nothing was changed: wait for it to finish (or stop it: kill {holder}), "
                "then run this again"
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
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
        (sidecar(store) / "shards").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create store {store}: {exc.strerror}") from None
