"""Each report stage cached in the store's folder, keyed by what decides its result.

A stage's entry is a folder ``<store>.d/report/<stage>-<key>/`` holding ``result.json`` and the
figures the stage drew. The key is the SHA-256 of the store's fingerprint (model, weights,
layers, preprocessing), a digest of its rows (keys, labels, split) and the stage's parameters,
so a second report over the same store reuses every stage whose inputs did not change, and a
changed image folder or option recomputes only what depends on it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from fstore.fsutil import atomic_write_bytes

RESULT = "result.json"


def digest(data: object) -> str:
    """SHA-256 of ``data`` as canonical JSON (non-JSON values by ``str``)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class StageCache:
    """Where the report's stages keep their results for one store's contents."""

    root: Path
    store_key: str
    enabled: bool = True

    def entry(self, stage: str, params: dict) -> Path:
        key = digest({"stage": stage, "store": self.store_key, "params": params})[:16]
        return self.root / f"{stage}-{key}"

    def load(self, folder: Path) -> dict | None:
        """The cached result in ``folder``, or ``None`` (absent, disabled, or unreadable)."""
        path = folder / RESULT
        if not self.enabled or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def start(self, folder: Path) -> Path:
        """An empty folder for a stage about to run (any older partial entry removed)."""
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def save(self, folder: Path, result: dict) -> None:
        """Write ``result`` last, so an entry without it is never taken for a finished one."""
        from fstore.classifiers.outputs import to_json

        atomic_write_bytes(folder / RESULT, to_json(result).encode())
