"""What names a model's weights: ``imagenet``, ``random`` with a seed, or a file.

Only the description lives here (parsing, provenance text and its inverse, cache alias), so the
feature store can name and resume weights without torch; loading them is
:func:`fstore.export.weights_loader.load_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fstore.errors import WeightsError

_IMAGENET_ORIGIN = "imagenet:VGG16_Weights.IMAGENET1K_V1"


@dataclass(frozen=True)
class WeightsSource:
    """The user's ``--weights`` choice: ``imagenet``, ``random`` (with ``seed``) or a file path."""

    kind: str  # "imagenet" | "random" | "file"
    path: Path | None = None
    seed: int = 0

    @classmethod
    def parse(cls, text: str, seed: int = 0) -> WeightsSource:
        if text == "imagenet":
            return cls("imagenet")
        if text == "random":
            return cls("random", seed=seed)
        path = Path(text).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights {text!r} are neither 'imagenet', 'random' nor a readable file"
            )
        return cls("file", path=path.resolve())

    @classmethod
    def from_origin(cls, origin: str) -> WeightsSource:
        """The inverse of :attr:`origin`: the source a store's provenance names."""
        if origin.startswith("random:seed="):
            return cls("random", seed=int(origin.split("=", 1)[1]))
        if origin.startswith("file:"):
            return cls("file", path=Path(origin[len("file:") :]))
        return cls("imagenet")

    @property
    def origin(self) -> str:
        """A short human-readable description recorded as provenance."""
        if self.kind == "imagenet":
            return _IMAGENET_ORIGIN
        if self.kind == "random":
            return f"random:seed={self.seed}"
        return f"file:{self.path}"

    def alias(self) -> str:
        """A key that identifies these exact weights without loading them (for the model cache)."""
        if self.kind == "file":
            assert self.path is not None
            st = self.path.stat()
            return f"file:{self.path}:{st.st_size}:{st.st_mtime_ns}"
        return self.origin
