"""ImageNet top-k predictions of the full VGG16 (logits → softmax) through ONNX Runtime.

Class names and preprocessing come from the metadata fstore wrote into the ONNX file at export,
so a cached or given model predicts without torch. Files that cannot be read or decoded are
reported one by one and the others are predicted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fstore.errors import ModelError
from fstore.export.layers import NUM_CLASSES
from fstore.export.metadata import ModelInfo
from fstore.export.weights import WeightsSource
from fstore.images.decode import ImageDecodeError
from fstore.images.preprocess import Preprocessing
from fstore.images.reader import load_image

#: Extensions of the files taken from a folder given to ``predict`` (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
PREDICT_OUTPUTS = ("logits", "prob")
#: torchvision's ImageNet preprocessing at 224 pixels.
IMAGENET_PREPROCESSING = Preprocessing()


@dataclass(frozen=True)
class ClassScore:
    """One ImageNet class of a top-k list."""

    rank: int
    index: int
    name: str
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The network's answer for one image.

    Attributes:
        path: the image file.
        top: the ``k`` most probable classes, most probable first.
        probabilities: softmax over all 1000 classes (float32).
        logits: fc8 before the softmax, or ``None`` when the model has only ``prob``.
        warning: a decode warning (e.g. unreadable EXIF orientation), or ``None``.
    """

    path: Path
    top: tuple[ClassScore, ...]
    probabilities: np.ndarray = field(repr=False)
    logits: np.ndarray | None = field(repr=False)
    warning: str | None = None

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "top": [vars(score) for score in self.top],
            "warning": self.warning,
        }


@dataclass(frozen=True)
class PredictFailure:
    """A path that could not be predicted, and why (missing, empty, truncated, not an image…)."""

    path: Path
    reason: str

    def to_dict(self) -> dict:
        return {"path": str(self.path), "error": self.reason}


@dataclass(frozen=True)
class PredictionReport:
    """Everything :func:`predict` produced, in the order the images were found.

    Attributes:
        items: one :class:`Prediction` or :class:`PredictFailure` per image path.
        model: the ONNX file that ran.
        info: its fstore metadata (weights, preprocessing, class names).
        provider: ``cpu`` or ``cuda``.
    """

    items: tuple[Prediction | PredictFailure, ...]
    model: Path
    info: ModelInfo
    provider: str

    @property
    def predictions(self) -> tuple[Prediction, ...]:
        return tuple(item for item in self.items if isinstance(item, Prediction))

    @property
    def failures(self) -> tuple[PredictFailure, ...]:
        return tuple(item for item in self.items if isinstance(item, PredictFailure))

    def to_dict(self) -> dict:
        return {
            "model": str(self.model),
            "weights": self.info.weights_origin,
            "provider": self.provider,
            "images": [item.to_dict() for item in self.items],
            "predicted": len(self.predictions),
            "failed": len(self.failures),
        }


def find_images(inputs: Iterable[Path]) -> list[Path | PredictFailure]:
    """Expand ``inputs``: a file is kept as given, a folder is walked for image files.

    Paths that do not exist and folders without images become :class:`PredictFailure` entries,
    so they are reported in place rather than stopping the run.
    """
    found: list[Path | PredictFailure] = []
    for path in inputs:
        path = Path(path)
        if path.is_dir():
            images = sorted(
                p for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )  # fmt: skip
            found.extend(images or [PredictFailure(path, "folder holds no image files")])
        elif path.exists():
            found.append(path)
        else:
            found.append(PredictFailure(path, "no such file or folder"))
    return found


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in float64 without overflow, returned as float32."""
    x = logits.astype(np.float64)
    x = np.exp(x - x.max(axis=-1, keepdims=True))
    return (x / x.sum(axis=-1, keepdims=True)).astype(np.float32)


def top_k(probabilities: np.ndarray, classes: Sequence[str], k: int) -> tuple[ClassScore, ...]:
    """The ``k`` most probable classes of one image, most probable first (ties: lower index)."""
    order = np.argsort(-probabilities, kind="stable")[:k]
    return tuple(
        ClassScore(rank, int(i), classes[i], float(probabilities[i]))
        for rank, i in enumerate(order, start=1)
    )


class Predictor:
    """A loaded ImageNet classifier: an fstore-exported ONNX model with ``logits`` or ``prob``.

    Create with :meth:`load` (an fstore export) or :meth:`for_weights` (exported and cached on
    first use); :meth:`run` maps a preprocessed batch to logits and probabilities.
    """

    def __init__(self, backend, path: Path, info: ModelInfo) -> None:  # backend: OrtBackend
        self.backend = backend
        self.path = path
        self.info = info
        self.classes: tuple[str, ...] = info.classes  # type: ignore[assignment]

    @classmethod
    def load(cls, path: Path, provider: str = "cpu") -> Predictor:
        """Load an fstore export that outputs ``logits`` and/or ``prob``."""
        from fstore.featurestore.runtime import OrtBackend

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        probe = OrtBackend.load(path, provider)
        info = ModelInfo.from_props(probe.metadata)
        if info is None:
            raise ModelError(
                f"{path} was not exported by fstore (no fstore metadata); "
                "export one with: fstore export --layers logits,prob"
            )
        outputs = tuple(name for name in PREDICT_OUTPUTS if name in probe.outputs)
        if not outputs or info.classes is None:
            raise ModelError(
                f"{path} has no 'logits' or 'prob' output (its outputs are: "
                f"{', '.join(probe.outputs)}); export one with: fstore export --layers logits,prob"
            )
        if len(info.classes) != NUM_CLASSES:
            raise ModelError(f"{path} names {len(info.classes)} classes, expected {NUM_CLASSES}")
        return cls(replace(probe, outputs=outputs), path, info)

    @classmethod
    def for_weights(cls, weights: WeightsSource,
                    preprocessing: Preprocessing = IMAGENET_PREPROCESSING, provider: str = "cpu",
                    log: Callable[[str], None] = lambda _: None) -> Predictor:
        """The full network for ``weights``, from the model cache (exported there if missing)."""
        from fstore.export.onnx_export import ensure_model

        return cls.load(ensure_model(PREDICT_OUTPUTS, weights, preprocessing, log=log), provider)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.info.preprocessing

    @property
    def provider(self) -> str:
        return self.backend.provider

    def run(self, batch: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Logits (``None`` if the model lacks them) and probabilities of an NCHW float32 batch."""
        out = self.backend.run(batch)
        logits = out.get("logits")
        probabilities = out["prob"] if "prob" in out else softmax(logits)
        return logits, probabilities


def predict(images: Iterable[Path], predictor: Predictor, top: int = 5,
            batch_size: int = 8) -> PredictionReport:
    """Top-``top`` ImageNet classes of every image in ``images`` (files or folders to walk).

    Unreadable or undecodable files become :class:`PredictFailure` items; the others are
    predicted in batches of ``batch_size``.
    """
    if not 1 <= top <= NUM_CLASSES:
        raise ValueError(f"top must lie in 1..{NUM_CLASSES}, got {top}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    spec = predictor.preprocessing
    items: list[Prediction | PredictFailure | None] = []
    pending: list[tuple[int, Path, np.ndarray, str | None]] = []

    def flush() -> None:
        if not pending:
            return
        logits, probs = predictor.run(np.stack([array for _, _, array, _ in pending]))
        for row, (slot, path, _, warning) in enumerate(pending):
            items[slot] = Prediction(
                path, top_k(probs[row], predictor.classes, top), probs[row],
                None if logits is None else logits[row], warning,
            )
        pending.clear()

    for entry in find_images(images):
        if isinstance(entry, PredictFailure):
            items.append(entry)
            continue
        try:
            array, warning = load_image(entry.read_bytes(), spec)
        except ImageDecodeError as exc:
            items.append(PredictFailure(entry, str(exc)))
            continue
        except OSError as exc:
            items.append(PredictFailure(entry, f"cannot read: {exc.strerror or exc}"))
            continue
        items.append(None)
        pending.append((len(items) - 1, entry, array, warning))
        if len(pending) == batch_size:
            flush()
    flush()
    return PredictionReport(tuple(items), predictor.path, predictor.info,  # type: ignore[arg-type]
                            predictor.provider)
