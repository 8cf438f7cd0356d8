"""Where a store's files are, what its manifest says, and how a file reaches the disk.

Layout of a store ``fstore.h5``::

    fstore.h5                    a view for plain h5py: keys, labels, split, one dataset per
                                 layer (virtual, over the shards); rewritten when a build ends
    fstore.h5.d/manifest.json    what the store is built from (model, layers, preprocessing)
    fstore.h5.d/catalog.sqlite   the truth: files, shards, one row per image (SQLite, WAL)
    fstore.h5.d/shards/*.h5      HDF5 files, never modified once written
    fstore.h5.d/lock             held by the one process that writes the store

Every HDF5 file is built in memory (h5py's ``core`` driver, no backing store), then its bytes
are written to a temporary name with plain Python I/O, fsynced and renamed. So no HDF5 write
ever meets a full disk, and a kill leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from fstore.errors import StoreError
from fstore.fsutil import commit_file, tmp_path_for

FORMAT = "fstore-store"
FORMAT_VERSION = 3
DEFAULT_STORE = "fstore.h5"


def default_store_path() -> Path:
    """``$FSTORE_STORE``, else ``./fstore.h5``."""
    return Path(os.environ.get("FSTORE_STORE") or DEFAULT_STORE)


def sidecar(store: Path) -> Path:
    return store.with_name(store.name + ".d")


def shard_path(store: Path, name: str) -> Path:
    return sidecar(store) / "shards" / name


@dataclass(frozen=True)
class Manifest:
    """What a store is built from; fixed at its first build, checked by every later one.

    ``fingerprint`` identifies the features: two builds whose fingerprints differ would compute
    different features for the same image, so they may not fill the same store. ``split`` is
    how images were assigned to train and test (``{"method": "folders", ...}``).
    """

    image_root: str
    split_layout: bool
    split: dict
    layers: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]
    dtype: str
    fingerprint: str
    provenance: dict = field(default_factory=dict)

    def to_json(self) -> str:
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}
        return json.dumps(data, indent=1, sort_keys=True)


def read_manifest(store: Path) -> Manifest | None:
    """The store's manifest; ``None`` where there is none."""
    path = sidecar(store) / "manifest.json"
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    if d.get("format") != FORMAT:
        raise StoreError(f"{path} is not an fstore store manifest")
    if d.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"store {store} has format {d.get('format_version')}, not this fstore's "
            f"{FORMAT_VERSION}; build it again into a new store (--store)"
        )
    d = {f.name: d[f.name] for f in fields(Manifest)}
    shapes = {k: tuple(v) for k, v in d.pop("shapes").items()}
    return Manifest(**{**d, "layers": tuple(d["layers"]), "shapes": shapes})


def write_manifest(store: Path, manifest: Manifest) -> None:
    write_file(sidecar(store) / "manifest.json", manifest.to_json().encode(), store)


# (errno values, SQLite's result codes, what happened, what to do)
_FAULTS = (
    ((errno.ENOSPC, errno.EDQUOT), ("SQLITE_FULL",), "the disk is full", "free some space"),
    ((errno.EROFS,), ("SQLITE_READONLY",), "the store's folder is read-only", "make it writable"),
    (
        (errno.EACCES, errno.EPERM),
        ("SQLITE_CANTOPEN", "SQLITE_PERM"),
        "the store's folder is not writable",
        "make it writable",
    ),
    ((errno.EFBIG,), ("SQLITE_TOOBIG",), "a file size limit was reached", "raise the limit"),
)


def fault(exc: BaseException | None) -> tuple[str, str] | None:
    """(what happened, what to do) for an OS error the user can fix; None for anything else."""
    while exc is not None:
        code = getattr(exc, "errno", None)
        sqlite = getattr(exc, "sqlite_errorname", "")  # sqlite3 errors carry no errno
        for codes, names, reason, fix in _FAULTS:
            if code in codes or sqlite.startswith(names):
                return reason, fix
        exc = exc.__cause__ or exc.__context__
    return None


def fault_error(exc: BaseException, store: Path) -> BaseException:
    """A one-line :class:`StoreError` for a fault the user can fix; else ``exc`` itself (a bug
    keeps its traceback)."""
    found = fault(exc)
    if found is None:
        return exc
    return StoreError(
        f"{found[0]} while writing {store}; nothing is lost (every finished shard is committed); "
        f"{found[1]}, then run the same fstore build again to resume"
    )


def write_file(path: Path, data: bytes, store: Path) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, fsync, rename, fsync the folder);
    a fault the user can fix is one line, and leaves nothing behind."""
    tmp = tmp_path_for(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        commit_file(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise fault_error(exc, store) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def h5_bytes(fill) -> bytes:
    """The bytes of an HDF5 file that ``fill(f)`` writes, built in memory."""
    import h5py

    with h5py.File(f"mem-{id(fill)}.h5", "w", driver="core", backing_store=False) as f:
        fill(f)
        f.flush()
        return f.id.get_file_image()


def open_h5(path: Path, what: str, store: Path):
    """Open an HDF5 file of the store for reading; a missing or unreadable file is one line."""
    import h5py

    fix = f"run: fstore verify --store {store}, then fstore build --store {store} to repair it"
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise StoreError(f"store {store} is damaged: {what} is missing; {fix}") from None
    except OSError as exc:
        too_many = too_many_files(exc, what)
        raise too_many or StoreError(
            f"store {store} is damaged: {what} does not open; {fix}"
        ) from None


def too_many_files(exc: OSError, what: str) -> StoreError | None:
    """The one line for an open that failed on the open-file limit; None for other errors."""
    if exc.errno != errno.EMFILE and "Too many open files" not in str(exc):
        return None
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return StoreError(
        f"cannot open {what}: too many open files (RLIMIT_NOFILE is {soft}; fstore reads one "
        "shard at a time, so other open files use it up); raise it, e.g. ulimit -n 4096"
    )


def store_bytes(store: Path) -> int:
    """The bytes a store takes on disk: its view and everything in its folder."""
    folder = sidecar(store)
    files = folder.rglob("*") if folder.is_dir() else ()
    own = store.stat().st_size if store.exists() else 0
    return own + sum(p.stat().st_size for p in files if p.is_file())
