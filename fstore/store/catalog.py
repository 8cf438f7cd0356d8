"""The catalog: one SQLite database (WAL, ``synchronous=FULL``), the truth of a store.

It holds the files, the planned shards (``file`` NULL until computed; then its ``rows`` sit in
``file`` from ``start`` on) and one row per image: class and split (decided at plan time),
folder order ``pos``, where its features are (``row`` NULL: not computed, or unreadable with an
``error``) and what the file was (size, mtime, sha256). Every change is one transaction, and a
shard file is on disk before the transaction that lists it, so a kill leaves a catalog that is
right. ``meta`` counts commits (``version``) and plans (``generation``).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path

from fstore.errors import StoreError
from fstore.store.layout import fault_error, sidecar, too_many_files

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    name TEXT PRIMARY KEY, rows INTEGER NOT NULL, bytes INTEGER NOT NULL, sha256 TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    name TEXT PRIMARY KEY, file TEXT, start INTEGER, rows INTEGER, failed TEXT);
CREATE TABLE IF NOT EXISTS images (
    key TEXT PRIMARY KEY, pos INTEGER, class TEXT, split TEXT, shard TEXT NOT NULL,
    row INTEGER, sha256 TEXT, size INTEGER, mtime_ns INTEGER, error TEXT);
CREATE INDEX IF NOT EXISTS images_pos ON images(pos);
CREATE INDEX IF NOT EXISTS images_shard ON images(shard);
"""

#: A stored row: the image's features are in ``file`` at ``row`` (plan order in the file).
ROWS_QUERY = """
SELECT i.pos, i.key, i.class, i.split, s.file, s.start + i.row FROM images i
JOIN shards s ON s.name = i.shard WHERE i.row IS NOT NULL AND s.file IS NOT NULL
"""


def connect(store: Path, write: bool = False) -> sqlite3.Connection:
    """The store's catalog; ``write``: create it if needed (the caller holds the lock).

    ``isolation_level=None``: transactions are opened explicitly (:func:`transaction`).
    """
    path = sidecar(store) / "catalog.sqlite"
    if not write and not path.exists():
        raise StoreError(f"no store at {store} (build one with: fstore build IMAGES --layer fc7)")
    try:
        if write:
            con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.executescript(SCHEMA)
        else:  # in a read-only folder SQLite cannot make the WAL's shared-memory file; no
            # writer can be there either, so the database is read as immutable
            how = "mode=ro" if os.access(path.parent, os.W_OK) else "immutable=1"
            con = sqlite3.connect(
                f"{path.resolve().as_uri()}?{how}", uri=True, isolation_level=None
            )
        con.execute("SELECT 1 FROM meta LIMIT 1")
    except sqlite3.DatabaseError as exc:
        _raise_if_out_of_files(path)
        error = fault_error(exc, store) if write else exc
        if error is exc:
            raise StoreError(f"store {store} has an unreadable catalog ({exc})") from None
        raise error from None
    return con


def _raise_if_out_of_files(path: Path) -> None:
    """SQLite says only "unable to open database file"; the OS says why."""
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        if (error := too_many_files(exc, f"the catalog of {path.parent}")) is not None:
            raise error from None


@contextmanager
def transaction(con: sqlite3.Connection, store: Path) -> Iterator[sqlite3.Connection]:
    """One SQLite transaction, which bumps the catalog's version if it changed anything (so an
    unchanged store keeps its view); a fault is one line."""
    try:
        con.execute("BEGIN IMMEDIATE")
        before = con.total_changes
        try:
            yield con
            if con.total_changes != before:
                con.execute(
                    "INSERT INTO meta VALUES ('version', 1) "
                    "ON CONFLICT(key) DO UPDATE SET value = value + 1"
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    except sqlite3.DatabaseError as exc:
        raise fault_error(exc, store) from None


def meta(con: sqlite3.Connection, key: str) -> int:
    """A counter of ``meta``: ``version`` (commits) or ``generation`` (plans)."""
    row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class FileInfo:
    """A shard or segment file as the catalog records it (``verify`` checks it)."""

    name: str
    rows: int
    bytes: int
    sha256: str
    mtime_ns: int


def files(con: sqlite3.Connection) -> dict[str, FileInfo]:
    return {r[0]: FileInfo(*r) for r in con.execute("SELECT * FROM files")}


def records(con: sqlite3.Connection) -> dict[str, tuple]:
    """key → (size, mtime_ns, sha256, pending) of every image the catalog holds."""
    query = (
        "SELECT i.key, i.size, i.mtime_ns, i.sha256, s.file IS NULL FROM images i "
        "JOIN shards s ON s.name = i.shard"
    )
    return {r[0]: r[1:] for r in con.execute(query)}


def add_plan(con: sqlite3.Connection, shards: dict[str, list[tuple[str, int, int]]]) -> None:
    """Plan shards (name → images as (key, size, mtime_ns)): each image now waits for its new
    shard (an older row of a changed image is no longer its row)."""
    con.executemany("INSERT INTO shards (name) VALUES (?)", ((name,) for name in shards))
    con.executemany(
        "INSERT INTO images (key, shard, size, mtime_ns) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(key) DO UPDATE SET shard = excluded.shard, row = NULL, sha256 = NULL, "
        "error = NULL, size = excluded.size, mtime_ns = excluded.mtime_ns",
        ((key, name, size, mtime) for name, items in shards.items() for key, size, mtime in items),
    )


def set_order(con: sqlite3.Connection, rows: Iterable[tuple[str, int, str, str]]) -> None:
    """(key, pos, class, split) of every image: its place in the folder, its label and split."""
    con.executemany(
        "UPDATE images SET pos = ?, class = ?, split = ? WHERE key = ?",
        ((pos, cls, split, key) for key, pos, cls, split in rows),
    )


def pending_shards(con: sqlite3.Connection) -> list[tuple[str, list[str]]]:
    """Every planned shard not yet computed, oldest first, with its images in plan order."""
    query = (
        "SELECT s.name, i.key FROM shards s JOIN images i ON i.shard = s.name "
        "WHERE s.file IS NULL ORDER BY s.name, i.rowid"
    )
    shards: dict[str, list[str]] = {}
    for name, key in con.execute(query):
        shards.setdefault(name, []).append(key)
    return list(shards.items())


def commit_shard(con: sqlite3.Connection, store: Path, name: str, f: FileInfo, images) -> None:
    """List shard ``name``'s written file and its ``images`` (key, row in the file or None,
    sha256, size, mtime_ns, error or None), in one transaction."""
    with transaction(con, store):
        con.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)", astuple(f))
        con.execute(
            "UPDATE shards SET file = ?, start = 0, rows = ?, failed = NULL WHERE name = ?",
            (f.name, f.rows, name),
        )
        sql = (
            "UPDATE images SET row=?, sha256=?, size=?, mtime_ns=?, error=? WHERE key=? AND shard=?"
        )
        con.executemany(sql, ((*entry[1:], entry[0], name) for entry in images))


def mark_failed(con: sqlite3.Connection, store: Path, name: str, reason: str) -> None:
    """A shard whose computation failed: the next build tries it again."""
    with transaction(con, store):
        con.execute("UPDATE shards SET failed = ? WHERE name = ?", (reason, name))


def counts(con: sqlite3.Connection) -> dict[str, int]:
    """Images planned, stored (with features), pending (not computed yet) and unreadable."""
    row = con.execute(
        "SELECT COUNT(*), COUNT(i.row), SUM(s.file IS NULL), "
        "SUM(s.file IS NOT NULL AND i.row IS NULL) FROM images i JOIN shards s ON s.name = i.shard"
    ).fetchone()
    return {"planned": row[0], "stored": row[1], "pending": row[2] or 0, "bad": row[3] or 0}


def forget_files(con: sqlite3.Connection, store: Path, names: Iterable[str]) -> None:
    """Files that are gone or damaged: their shards become not computed, so the next build
    computes their images again."""
    with transaction(con, store):
        for name in names:
            shards = "SELECT name FROM shards WHERE file = ?"
            con.execute(f"UPDATE images SET row = NULL WHERE shard IN ({shards})", (name,))
            con.execute("UPDATE shards SET file = NULL, start = NULL WHERE file = ?", (name,))
            con.execute("DELETE FROM files WHERE name = ?", (name,))
