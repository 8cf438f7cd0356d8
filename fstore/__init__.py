"""fstore: VGG16 features through ONNX Runtime into a crash-safe HDF5 store, and classifiers.

The library in three calls, each imported only when first used (``import fstore`` loads no
torch, ONNX Runtime or h5py)::

    import fstore

    result = fstore.export("fc7", weights)        # VGG16 truncated at fc7, as ONNX
    report = fstore.build(config)                 # images -> feature store
    features = fstore.load_features(store, "fc7") # one layer, labels and split

``fstore.export`` is also the package :mod:`fstore.export`; calling it calls
:func:`fstore.export.onnx_export.export`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

#: Public name → (module, function); the module is imported on first use, by name through
#: importlib. The API sits above every layer, but this file is also the package every module
#: imports ``__version__`` from: an import statement here would make lint-imports see each
#: layer reaching up to build, store and export through it.
_API = {
    "build": ("fstore.build.model", "build"),
    "load_features": ("fstore.store.store", "load_features"),
}

__all__ = ["__version__", "build", "export", "load_features"]


class _ExportPackage(types.ModuleType):
    """The :mod:`fstore.export` package, callable as its main function."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """:func:`fstore.export.onnx_export.export`: VGG16 truncated at layers, as ONNX."""
        return importlib.import_module("fstore.export.onnx_export").export(*args, **kwargs)


class _Fstore(types.ModuleType):
    """The type of the ``fstore`` module: the import system sets ``fstore.export`` to the
    subpackage when it is first imported (by anyone); that package is made callable here, so
    ``fstore.export(...)`` works whichever import came first."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "export" and type(value) is types.ModuleType:
            value.__class__ = _ExportPackage
        super().__setattr__(name, value)


def __getattr__(name: str) -> Any:
    if name == "export":
        return importlib.import_module("fstore.export")
    if name in _API:
        module, function = _API[name]
        return getattr(importlib.import_module(module), function)
    raise AttributeError(f"module 'fstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


sys.modules[__name__].__class__ = _Fstore
