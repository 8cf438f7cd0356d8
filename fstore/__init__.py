"""fstore: VGG16 features through ONNX Runtime into a crash-safe HDF5 store, and classifiers.

The library in three calls, each imported only when first used (``import fstore`` loads no
torch, ONNX Runtime or h5py)::

    import fstore

    result = fstore.export_model("fc7", weights)       # VGG16 truncated at fc7, as ONNX
    report = fstore.build_store(config)                # images -> feature store
    features = fstore.load_features(store, "fc7")      # one layer, labels and split

``fstore.export``, ``fstore.pipeline`` and ``fstore.store`` are the packages behind them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name → (module, function). The modules are imported by name on first use: an import
#: statement here would make every module that imports ``__version__`` load the whole library.
_API = {
    "export_model": ("fstore.export.onnx_export", "export"),
    "build_store": ("fstore.pipeline.model", "build_store"),
    "load_features": ("fstore.store", "load_features"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, function = _API[name]
        return getattr(importlib.import_module(module), function)
    raise AttributeError(f"module 'fstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
