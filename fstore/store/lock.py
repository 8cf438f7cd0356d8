"""The lock that keeps two writers off one store, and the store's folder."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from fstore.errors import OutputPathError, StoreError
from fstore.store.layout import fault_error, sidecar


class StoreLock:
    """An exclusive lock on a store; its file holds the holder's pid, for the one refused."""

    def __init__(self, store: Path) -> None:
        self.store, self.path = store, sidecar(store) / "lock"

    def __enter__(self) -> StoreLock:
        try:
            self.file = open(self.path, "a+")  # noqa: SIM115 - held until __exit__
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.close()
            holder = self.path.read_text().strip() or "unknown"
            raise StoreError(
                f"another fstore process (pid {holder}) is building or compacting {self.store}; "
                f"nothing was changed: wait for it to finish (or stop it: kill {holder}), "
                "then run this again"
            ) from None
        except OSError as exc:  # a read-only folder, say
            raise fault_error(exc, self.store) from None
        self.file.truncate(0)
        print(os.getpid(), file=self.file, flush=True)
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()  # which releases the lock


def is_locked(store: Path) -> bool:
    """Whether a writer holds the store's lock now."""
    try:
        with open(sidecar(store) / "lock") as file:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # no lock file: no writer ever held it
        return False
    return False


def prepare_store(store: Path) -> None:
    """Make the store's folders (not the folder it goes in), or say in one line why not."""
    if store.is_dir():
        raise OutputPathError(f"store path {store} is a folder; give a file name such as fstore.h5")
    for folder in sidecar(store), sidecar(store) / "shards":
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputPathError(f"cannot create store {store}: {exc.strerror}") from None
