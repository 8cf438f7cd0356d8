"""Where fstore keeps what it derives once and reuses: exported models, TensorRT engines."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$FSTORE_CACHE``, else ``$XDG_CACHE_HOME/fstore``, else ``~/.cache/fstore``."""
    if os.environ.get("FSTORE_CACHE"):
        return Path(os.environ["FSTORE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fstore"
