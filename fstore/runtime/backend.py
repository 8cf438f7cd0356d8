"""The one interface every inference backend implements: ONNX Runtime and eager PyTorch alike.

``fstore build``, ``fstore bench`` and the inspection commands drive a backend only through these
four methods, so the benchmark times every system on the same reader and the same batches.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """A model ready to run batches.

    ``run`` takes one batch as the reader produces it (``uint8``, ``(N, H, W, 3)``, RGB) and
    returns one array per requested layer, ``(N, ...)``, on the host. ``synchronize`` waits for
    work queued on a device (a no-op on the CPU), so a timer around ``run`` + ``synchronize``
    measures the work itself. ``describe`` names the system for reports and provenance.
    """

    def load(self) -> None:
        """Create the session / move the model to its device; idempotent."""

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Features of one batch, one array per layer."""

    def synchronize(self) -> None:
        """Block until queued device work has finished."""

    def describe(self) -> dict[str, str]:
        """What this backend is: ``name``, ``provider``, ``precision`` and anything else useful."""
