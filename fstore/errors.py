"""Errors a user can cause and fix.

Every exception here carries a message that says what went wrong and what to do; the CLI prints
it on one line and exits non-zero. Anything that is not an ``FstoreError`` is a bug and keeps
its traceback.
"""

from __future__ import annotations


class FstoreError(Exception):
    """Base class for errors caused by the user's input or environment."""


class UnknownLayerError(FstoreError, ValueError):
    """A layer name that is not in the model's layer table."""


class WeightsError(FstoreError):
    """Weights that cannot be obtained, read, or that do not fit VGG16."""


class OutputPathError(FstoreError):
    """A path fstore must write to cannot be written."""


class ProviderError(FstoreError):
    """An ONNX Runtime execution provider was asked for but is not available."""


class DatasetError(FstoreError):
    """An image folder that is missing, empty or laid out in a way fstore cannot read."""


class StoreError(FstoreError):
    """A feature store that is missing, corrupt, or built with another model or preprocessing."""


class ModelError(FstoreError):
    """An ONNX model that fstore cannot use as asked."""


class ClassifierError(FstoreError):
    """A classifier that cannot be trained or applied as asked."""


class MissingDependencyError(FstoreError):
    """An optional dependency (torch, a GPU build of ONNX Runtime, …) that is not installed."""
