"""The catalog: one SQLite database (WAL, ``synchronous=FULL``), the truth of a store. Every
change is one transaction, and a shard file is on disk before the transaction that lists it,
so a kill leaves a catalog that is right. Its tables are described in docs/store.md."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path

from fstore.errors import StoreError
from fstore.store.layout import fault_error, sidecar, too_many_files

# ``images`` is clustered on its key, and key order is the folder's (a build's ``pos`` is 0;
# ``write_arrays`` keeps its given order in ``pos``): nothing is renumbered as images come and go.
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    name TEXT PRIMARY KEY, rows INTEGER NOT NULL, bytes INTEGER NOT NULL, sha256 TEXT NOT NULL,
    mtime_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    name TEXT PRIMARY KEY, file TEXT, start INTEGER, rows INTEGER, failed TEXT);
CREATE TABLE IF NOT EXISTS images (
    key TEXT PRIMARY KEY, pos INTEGER NOT NULL, class TEXT NOT NULL, split TEXT NOT NULL,
    shard TEXT NOT NULL, row INTEGER, sha256 TEXT, size INTEGER, mtime_ns INTEGER, error TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS images_order ON images(pos, key);
CREATE INDEX IF NOT EXISTS images_shard ON images(shard);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

#: Stored rows in order: the image's features are in ``file`` at ``row``. CROSS JOIN keeps
#: ``images`` the outer loop, so rows come in index order and a page stops at its LIMIT.
ROW_COLUMNS = "i.pos, i.key, i.class, i.split, s.file, s.start + i.row"
STORED_ROWS = (
    "FROM images i CROSS JOIN shards s ON s.name = i.shard "
    "WHERE i.row IS NOT NULL AND s.file IS NOT NULL"
)
ROWS_QUERY = f"SELECT {ROW_COLUMNS} {STORED_ROWS}"
ORDER = "ORDER BY i.pos, i.key"

#: What reading a damaged catalog raises: SQLite's errors, and text that is not UTF-8.
DAMAGE = (sqlite3.DatabaseError, UnicodeDecodeError)

#: SQLite's page cache for a writer, in KiB: large B-trees are updated in place, not re-read.
CACHE_KIB = 256 * 1024


def connect(store: Path, write: bool = False) -> sqlite3.Connection:
    """The store's catalog; ``write``: create it if needed (the caller holds the lock)."""
    path = sidecar(store) / "catalog.sqlite"
    if not write and not path.exists():
        raise StoreError(f"no store at {store} (build one with: fstore build IMAGES --layer fc7)")
    try:
        if write:
            # a write (INSERT, UPDATE, DELETE) opens a transaction; see transaction()
            con = sqlite3.connect(path, isolation_level="IMMEDIATE", check_same_thread=False)
            con.executescript(
                f"PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
                f"PRAGMA cache_size=-{CACHE_KIB}; {SCHEMA}"
            )
        else:  # in a read-only folder SQLite cannot make the WAL's shared-memory file, and no
            # writer can be there either: the database is then read as immutable
            how = "mode=ro" if os.access(path.parent, os.W_OK) else "immutable=1"
            uri = f"{path.resolve().as_uri()}?{how}"
            con = sqlite3.connect(uri, uri=True, isolation_level=None)
        con.execute("SELECT 1 FROM images LIMIT 1")
        if write:  # the catalog's identity, which its view records (see identity)
            with con:
                con.execute("INSERT OR IGNORE INTO meta VALUES ('id', ?)", (uuid.uuid4().hex,))
    except DAMAGE as exc:
        error = fault_error(exc, store) if write else exc
        try:  # SQLite says only "unable to open database file"; the OS says why
            os.close(os.open(path, os.O_RDONLY))
        except OSError as os_exc:
            error = too_many_files(os_exc, f"the catalog of {store}") or error
        if error is exc:
            error = StoreError(f"store {store} has an unreadable catalog ({exc})")
        raise error from None
    return con


@contextmanager
def transaction(con: sqlite3.Connection, store: Path) -> Iterator[sqlite3.Connection]:
    """One transaction, which counts itself in :func:`version` if it changed anything (an
    unchanged store keeps its view); a fault the user can fix is one line."""
    before = con.total_changes
    try:
        with con:  # commits, or rolls back on any exception
            yield con
            if con.total_changes != before:
                con.execute(f"PRAGMA user_version = {version(con) + 1}")
    except sqlite3.DatabaseError as exc:
        raise fault_error(exc, store) from None


def version(con: sqlite3.Connection) -> int:
    """How many transactions changed the catalog (SQLite's ``user_version``)."""
    return con.execute("PRAGMA user_version").fetchone()[0]


def get_meta(con: sqlite3.Connection, name: str) -> str:
    """A value of the ``meta`` table ('' when absent, or in a catalog without the table)."""
    try:
        row = con.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    except sqlite3.OperationalError:  # a catalog written before the table existed
        return ""
    return row[0] if row else ""


def set_meta(con: sqlite3.Connection, store: Path, name: str, value: str) -> None:
    """Record a fact about the store's files that is not part of its rows: it does not count
    as a change in :func:`version` (the view that it describes stays current)."""
    try:
        with con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))
    except sqlite3.DatabaseError as exc:
        raise fault_error(exc, store) from None


def identity(con: sqlite3.Connection) -> tuple[str, int]:
    """The catalog's (id, :func:`version`), which its view records. The id is a random name
    given to a catalog when it is created: a view written for another catalog (one deleted
    and built again, or another store's) does not match it. One query, as every read asks."""
    try:
        found = con.execute(
            "SELECT (SELECT value FROM meta WHERE name = 'id'), user_version "
            "FROM pragma_user_version"
        ).fetchone()
    except sqlite3.OperationalError:  # a catalog written before the meta table existed
        return "", version(con)
    return found[0] or "", found[1]


@dataclass(frozen=True)
class FileInfo:
    """A shard or segment file as the catalog records it."""

    name: str
    rows: int
    bytes: int
    sha256: str
    mtime_ns: int


def files(con: sqlite3.Connection) -> dict[str, FileInfo]:
    return {r[0]: FileInfo(*r) for r in con.execute("SELECT * FROM files")}


def stats(con: sqlite3.Connection) -> list[tuple[str, int, int]]:
    """(key, size, mtime_ns) of every image the catalog holds, in key order: all a build needs
    to find the images that did not change (one scan of the table clustered on its key)."""
    return con.execute("SELECT key, size, mtime_ns FROM images ORDER BY key").fetchall()


#: SQLite's default limit on a statement's parameters is 32,766 (999 before 3.32).
_IN_CHUNK = 900


def records(con: sqlite3.Connection, keys: Iterable[str]) -> dict[str, tuple]:
    """key → (size, mtime_ns, sha256, pending, split) of the ``keys`` that the catalog holds."""
    keys, found = list(keys), {}
    for at in range(0, len(keys), _IN_CHUNK):
        chunk = keys[at : at + _IN_CHUNK]
        query = (
            "SELECT i.key, i.size, i.mtime_ns, i.sha256, s.file IS NULL, i.split FROM images i "
            f"JOIN shards s ON s.name = i.shard WHERE i.key IN ({','.join('?' * len(chunk))})"
        )
        found.update((r[0], r[1:]) for r in con.execute(query, chunk))
    return found


def splits(con: sqlite3.Connection) -> dict[str, str]:
    """key → split of every image the catalog holds."""
    return dict(con.execute("SELECT key, split FROM images"))


def add_plan(con: sqlite3.Connection, names: Iterable[str], images: Iterable[tuple]) -> None:
    """Plan shards ``names`` and their ``images`` as (key, class, split, shard, size, mtime_ns).
    Each image now waits for its new shard (an older row of a changed image is not its row)."""
    con.executemany("INSERT INTO shards (name) VALUES (?)", ((name,) for name in names))
    con.executemany(
        "INSERT INTO images (key, pos, class, split, shard, size, mtime_ns) "
        "VALUES (?, 0, ?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET shard = excluded.shard, "
        "split = excluded.split, row = NULL, sha256 = NULL, error = NULL, size = excluded.size, "
        "mtime_ns = excluded.mtime_ns",
        images,
    )


def pending_shards(con: sqlite3.Connection) -> list[tuple[str, list[str]]]:
    """Every planned shard not yet computed, oldest first, with its images in key order."""
    query = (
        "SELECT s.name, i.key FROM shards s JOIN images i ON i.shard = s.name "
        "WHERE s.file IS NULL ORDER BY s.name, i.key"
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


def unfinished(con: sqlite3.Connection) -> bool:
    """Whether planned shards are not computed yet (the images ``counts`` calls pending)."""
    return con.execute("SELECT EXISTS (SELECT 1 FROM shards WHERE file IS NULL)").fetchone()[0]


def counts(con: sqlite3.Connection) -> dict[str, int]:
    """Images planned, stored (with features), pending (not computed yet) and unreadable."""
    row = con.execute(
        "SELECT COUNT(*), COUNT(i.row), SUM(s.file IS NULL), "
        "SUM(s.file IS NOT NULL AND i.row IS NULL) FROM images i JOIN shards s ON s.name = i.shard"
    ).fetchone()
    return {"planned": row[0], "stored": row[1], "pending": row[2] or 0, "bad": row[3] or 0}
