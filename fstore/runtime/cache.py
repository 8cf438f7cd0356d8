"""Where fstore keeps what it derives once and reuses: exported models, TensorRT engines."""

from __future__ import annotations

import os
from pathlib import Path

from fstore.errors import OutputPathError


def cache_dir() -> Path:
    """``$FSTORE_CACHE``, else ``$XDG_CACHE_HOME/fstore``, else ``~/.cache/fstore``: made if
    needed, and a folder fstore can write, else one line saying what to do."""
    if os.environ.get("FSTORE_CACHE"):
        path, named = Path(os.environ["FSTORE_CACHE"]).expanduser(), "FSTORE_CACHE"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path, named = Path(base) / "fstore", "the default"
    why = ""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        why = "not a folder (a file is in the way)"
    except OSError as exc:
        why = f"not usable ({exc.strerror})"
    if not why and not os.access(path, os.W_OK | os.X_OK):
        why = "not writable"
    if why:
        raise OutputPathError(
            f"the cache folder {path} ({named}) is {why}; point FSTORE_CACHE at a writable "
            "folder, e.g. FSTORE_CACHE=/tmp/fstore-cache"
        )
    return path
