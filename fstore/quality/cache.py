"""Results of ``duplicates`` and ``audit`` kept beside the store, keyed by what decides them.

An entry is ``<store>.d/quality/<name>-<key>.json``. The key is the SHA-256 of the rows' keys
and sha256 (in the store's order), the digest of the shard files, the layer, the options and
the results' format,
so a deleted, added or changed image, a compaction or a rebuilt layer gives another key: a
stale entry is never served, it is simply not found, and the result is computed again.
``train svm --exclude-leaks``, ``map`` and the report share these entries.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path

from fstore.fsutil import atomic_write_bytes
from fstore.quality.rows import store_rows

#: Changes when what the functions return changes, so that no entry of an earlier fstore is
#: served.
RESULTS_FORMAT = 2


def entry(store: Path, name: str, layer: str, options: object) -> Path:
    """The file that holds ``name``'s result for the store's current rows."""
    from fstore.store import sidecar

    rows = store_rows(store)
    params = asdict(options) if is_dataclass(options) else options
    text = json.dumps(
        [
            RESULTS_FORMAT,
            rows.keys.tolist(),
            rows.sha256.tolist(),
            rows.files_digest,
            layer,
            params,
        ],
        sort_keys=True,
        default=str,
    )
    key = hashlib.sha256(text.encode()).hexdigest()[:20]
    return sidecar(Path(store)) / "quality" / f"{name}-{key}.json"


def cached(path: Path, compute: Callable[[], dict]) -> dict:
    """The JSON in ``path``, or ``compute()`` written there first (atomically)."""
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # a damaged entry is recomputed
    data = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(data).encode())
    return data


def cached_duplicates(store: Path | str, layer: str | None = None, options=None):
    """:func:`~fstore.quality.duplicates.duplicates`, from the cache when the rows and options
    are those it was computed for."""
    from fstore.quality.duplicates import DuplicateOptions, DuplicateResult, duplicates
    from fstore.store import read_manifest
    from fstore.store.reads import pick_layer

    store, options = Path(store), options or DuplicateOptions()
    layer = pick_layer(store, read_manifest(store, required=True), layer)
    path = entry(store, "duplicates", layer, {**asdict(options), "workers": None})
    return DuplicateResult.from_dict(
        cached(path, lambda: duplicates(store, layer, options).to_dict())
    )


def cached_audit_issues(store: Path | str, layer: str | None = None, options=None) -> list[dict]:
    """The ranked suspected label errors of :func:`~fstore.quality.audit.audit` (as dicts),
    from the cache when the rows and options are those they were computed for."""
    from fstore.quality.audit import METHOD, AuditOptions, audit
    from fstore.store import read_manifest
    from fstore.store.reads import pick_layer

    store, options = Path(store), options or AuditOptions()
    layer = pick_layer(store, read_manifest(store, required=True), layer)
    path = entry(store, "audit", layer, {**asdict(options), "method": METHOD})
    return cached(path, lambda: audit(store, layer, options).to_dict())["issues"]
