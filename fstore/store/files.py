"""One shard file's bytes against the catalog, and what is done with a damaged one.

Below verify, repair and compact, which all ask these questions: a module of its own so that
none of them imports another for them.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fstore.fsutil import tmp_paths_of
from fstore.store.catalog import FileInfo, transaction
from fstore.store.layout import shard_path, sidecar


@dataclass(frozen=True)
class Problem:
    """One thing wrong: where (``catalog``, ``view fstore.h5``, a shard file, a temporary
    file), what, and its ``kind`` (catalog, file, view, leftover), which decides the repair."""

    file: str
    what: str
    kind: str = "file"


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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


def set_aside(store: Path, con: sqlite3.Connection, names) -> list[str]:
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


def leftovers(store: Path) -> list[Path]:
    """Temporary files an interrupted writer left: in the store's folders, and the view's
    beside the store."""
    folder = sidecar(store)
    return [
        *tmp_paths_of(store),
        *folder.glob(".*.tmp"),
        *(folder / "shards").glob(".*.tmp"),
    ]
