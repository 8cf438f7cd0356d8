"""Questions asked of a built store: nearest neighbours, duplicates and leakage, suspected label
errors, a 2-D map. Each is a library function returning plain data keyed by the store's keys
(the image paths relative to the image folder); ``fstore.cli.quality`` only prints them.

The store is read through :mod:`fstore.store` (streamed by shard where the data may be large);
faiss, cleanlab and scikit-learn's t-SNE are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fstore.errors import MissingDependencyError

#: The install line that brings the optional libraries this package uses.
INSTALL = "pip install 'fstore[quality]'"


def require(module: str) -> ModuleType:
    """Import ``module`` (``faiss``, ``cleanlab``), or say in one line what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"this command needs {module}, from fstore's optional extra: {INSTALL}"
        ) from None
