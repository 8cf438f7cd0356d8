"""Where a store's files are, what its manifest says, and how a file reaches the disk: each
HDF5 file is built in memory, then written whole (temporary name, fsync, rename), so no HDF5
write meets a full disk (docs/store.md)."""

from __future__ import annotations

import errno
import json
import os
import resource
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from fstore.errors import StoreError
from fstore.fsutil import commit_file, tmp_path_for

FORMAT = "fstore-store"
FORMAT_VERSION = 4


def default_store_path() -> Path:
    """``$FSTORE_STORE``, else ``./fstore.h5``."""
    return Path(os.environ.get("FSTORE_STORE") or "fstore.h5")


def sidecar(store: Path) -> Path:
    return store.with_name(store.name + ".d")


def shard_path(store: Path, name: str) -> Path:
    return sidecar(store) / "shards" / name


@dataclass(frozen=True)
class Manifest:
    """What a store is built from, fixed at its first build. Builds whose ``fingerprint``
    differs would compute other features, so they may not fill the same store."""

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


def read_manifest(store: Path, required: bool = False) -> Manifest | None:
    """The store's manifest; ``None`` where there is none, or an error if ``required``."""
    path = sidecar(store) / "manifest.json"
    if not path.exists():
        if required:
            raise StoreError(
                f"no store at {store} (build one with: fstore build IMAGES --layer fc7)"
            )
        return None
    try:
        d = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise StoreError(
            f"store {store} has an unreadable manifest {path} ({exc}); build it again into a "
            "new store (--store)"
        ) from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
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
    ((errno.EACCES, errno.EPERM), ("SQLITE_CANTOPEN", "SQLITE_PERM"),
     "the store's folder is not writable", "make it writable"),
    ((errno.EFBIG,), ("SQLITE_TOOBIG",), "a file size limit was reached", "raise the limit"),
)  # fmt: skip


def fault_error(exc: BaseException, store: Path) -> BaseException:
    """A one-line :class:`StoreError` for an OS fault the user can fix (found in ``exc`` or
    what caused it); else ``exc`` itself (a bug keeps its traceback)."""
    cause: BaseException | None = exc
    while cause is not None:
        code = getattr(cause, "errno", None)
        sqlite = getattr(cause, "sqlite_errorname", "")  # sqlite3 errors carry no errno
        for codes, names, reason, fix in _FAULTS:
            if code in codes or sqlite.startswith(names):
                return StoreError(
                    f"{reason} while writing {store}; nothing is lost (every finished shard is "
                    f"committed); {fix}, then run the same fstore build again to resume"
                )
        cause = cause.__cause__ or cause.__context__
    return exc


def write_file(path: Path, data: bytes, store: Path) -> None:
    """Write ``data`` to ``path`` atomically; a fault leaves nothing behind."""
    tmp = tmp_path_for(path)
    try:
        tmp.write_bytes(data)
        commit_file(tmp, path)
    except OSError as exc:
        raise fault_error(exc, store) from None
    finally:  # after the rename, there is nothing left to delete
        tmp.unlink(missing_ok=True)


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
    except OSError as exc:
        how = "is missing" if isinstance(exc, FileNotFoundError) else "does not open"
        damaged = StoreError(f"store {store} is damaged: {what} {how}; {fix}")
        raise too_many_files(exc, what) or damaged from None


#: What reading a shard file's rows raises when the file is damaged under an intact header.
READ_ERRORS = (OSError, KeyError, ValueError, IndexError)


def unreadable_shard(store: Path, name: str, exc: Exception) -> StoreError:
    """The one line for a shard file whose rows do not read."""
    return StoreError(
        f"store {store} is damaged: shard {name} does not read ({exc}); run: "
        f"fstore verify --store {store}, then fstore build to recompute it"
    )


def too_many_files(exc: OSError, what: str) -> StoreError | None:
    """The one line for an open that failed on the open-file limit; None for other errors."""
    if exc.errno != errno.EMFILE and "Too many open files" not in str(exc):
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return StoreError(
        f"cannot open {what}: too many open files (RLIMIT_NOFILE is {soft}; fstore reads one "
        "shard at a time, so other open files use it up); raise it, e.g. ulimit -n 4096"
    )


def store_bytes(store: Path) -> int:
    """The bytes a store takes on disk: its view and everything in its folder."""
    return sum(p.stat().st_size for p in [store, *sidecar(store).rglob("*")] if p.is_file())
