"""ImageNet top-k predictions (logits → softmax) through ONNX Runtime, for VGG16 or any model.

For an fstore export, class names and preprocessing come from the metadata fstore wrote into the
ONNX file, so a cached or given model predicts without torch. Any other ONNX model predicts too
when it has a class output (``logits``, ``prob``, or its only output) and is given its
preprocessing; its class names are ImageNet's (:data:`IMAGENET_CLASSES`, built in) or a file of
names, one a line. Files that cannot be read or decoded are reported one by one and the others
are predicted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from fstore.errors import ModelError
from fstore.export.imagenet_classes import IMAGENET_CLASSES
from fstore.export.layers import NUM_CLASSES
from fstore.images.decode import ImageDecodeError
from fstore.images.discover import image_files
from fstore.images.preprocess import Preprocessing
from fstore.images.reader import ImageReader
from fstore.runtime.metadata import ModelInfo
from fstore.runtime.weights_source import WeightsSource

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
            images = image_files(path)
            found.extend(images or [PredictFailure(path, "folder holds no image files")])
        elif path.exists():
            found.append(path)
        else:
            found.append(PredictFailure(path, "no such file or folder"))
    return found


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (scipy's, in float64), returned as float32."""
    from scipy.special import softmax as scipy_softmax

    return scipy_softmax(np.asarray(logits, dtype=np.float64), axis=-1).astype(np.float32)


def class_names(spec: str | Path | None) -> tuple[str, ...] | None:
    """``imagenet`` → the built-in 1000 names; a file → its non-empty lines; ``None`` → None."""
    if spec is None:
        return None
    if str(spec) == "imagenet":
        return IMAGENET_CLASSES
    try:
        names = tuple(line.strip() for line in Path(spec).read_text().splitlines())
    except OSError as exc:
        raise ModelError(
            f"cannot read class names from {spec}: {exc.strerror or exc}; give "
            "'imagenet' or a text file with one class name a line"
        ) from None
    return tuple(name for name in names if name)


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
    first use); :meth:`run` maps a batch of uint8 crops to logits and probabilities.
    """

    def __init__(self, backend, path: Path, info: ModelInfo) -> None:  # backend: OrtBackend
        self.backend = backend
        self.path = path
        self.info = info
        self.classes: tuple[str, ...] = info.classes  # type: ignore[assignment]

    @classmethod
    def load(
        cls,
        path: Path,
        provider: str = "cpu",
        *,
        classes: tuple[str, ...] | None = None,
        preprocessing: Preprocessing | None = None,
    ) -> Predictor:
        """Load an fstore export with ``logits``/``prob``, or any ONNX model with a class output.

        ``classes`` (names, index = output position) replaces the model's own; a model without
        fstore metadata needs ``preprocessing`` and defaults to ImageNet's names.
        """
        from fstore.runtime.session import OrtBackend

        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        probe = OrtBackend.open(path, provider)
        info = ModelInfo.from_props(probe.metadata)
        if info is None:
            return cls._load_external(probe, path, classes, preprocessing)
        outputs = tuple(name for name in PREDICT_OUTPUTS if name in probe.outputs)
        if not outputs:
            raise ModelError(
                f"{path} has no 'logits' or 'prob' output (its outputs are: "
                f"{', '.join(probe.outputs)}); export one with: fstore export --layers logits,prob"
            )
        # an annotated ONNX file carries its preprocessing but no class names: ImageNet's
        info = replace(info, classes=classes or info.classes or IMAGENET_CLASSES)
        if len(info.classes) != NUM_CLASSES:
            raise ModelError(f"{path} names {len(info.classes)} classes, expected {NUM_CLASSES}")
        return cls(replace(probe, outputs=outputs), path, info)

    @classmethod
    def _load_external(
        cls, probe, path: Path, classes: tuple[str, ...] | None, preprocessing: Preprocessing | None
    ) -> Predictor:
        """A model fstore did not export: its ``logits``, ``prob`` or only output is the class
        output, read as logits unless named ``prob``."""
        if preprocessing is None:
            raise ModelError(
                f"{path} carries no fstore metadata; give its preprocessing "
                "(--size, --resize, --mean, --std)"
            )
        names = [n for n in PREDICT_OUTPUTS if n in probe.outputs] or list(probe.outputs)
        if len(names) != 1 and "logits" not in names:
            raise ModelError(
                f"{path} has several outputs ({', '.join(probe.outputs)}) and none "
                "is called logits or prob; fstore cannot tell which gives classes"
            )
        output = "logits" if "logits" in names else names[0]
        # Loaded again with its preprocessing, the model is wrapped to take uint8 pixels.
        backend = replace(probe, outputs=(output,), preprocessing=preprocessing)
        side = preprocessing.crop
        width = backend.run(np.zeros((1, side, side, 3), np.uint8))[output].reshape(1, -1).shape[1]
        classes = classes or (IMAGENET_CLASSES if width == NUM_CLASSES else None)
        if classes is None or len(classes) != width:
            raise ModelError(
                f"{path}'s output {output!r} has {width} values but "
                f"{len(classes or ())} class names were given; pass --classes "
                "imagenet (for 1000) or a file with one name per output"
            )
        info = ModelInfo(
            layers=(output,),
            shapes={},
            preprocessing=preprocessing,
            weights_origin=f"external model {path.name}",
            weights_sha256="",
            precision="unknown",
            opset=0,
            classes=tuple(classes),
            fstore_version="",
        )
        return cls(backend, path, info)

    @classmethod
    def for_weights(
        cls,
        weights: WeightsSource,
        preprocessing: Preprocessing = IMAGENET_PREPROCESSING,
        provider: str = "cpu",
    ) -> Predictor:
        """The full network for ``weights``, from the model cache (exported there if missing)."""
        from fstore.export.onnx_export import ensure_model

        return cls.load(ensure_model(PREDICT_OUTPUTS, weights, preprocessing), provider)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.info.preprocessing

    @property
    def provider(self) -> str:
        return self.backend.provider

    def run(self, batch: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Logits (``None`` if the model lacks them) and probabilities of a uint8 NHWC batch."""
        out = {k: v.reshape(len(batch), -1) for k, v in self.backend.run(batch).items()}
        if "prob" in out:
            return out.get("logits"), out["prob"]
        logits = out[self.backend.outputs[0]] if "logits" not in out else out["logits"]
        return logits, softmax(logits)


def predict(
    images: Iterable[Path], predictor: Predictor, top: int = 5, batch_size: int = 8
) -> PredictionReport:
    """Top-``top`` ImageNet classes of every image in ``images`` (files or folders to walk).

    Unreadable or undecodable files become :class:`PredictFailure` items; the others are
    predicted in batches of ``batch_size``.
    """
    if not 1 <= top <= NUM_CLASSES:
        raise ValueError(f"top must lie in 1..{NUM_CLASSES}, got {top}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    reader = ImageReader(predictor.preprocessing)
    items: list[Prediction | PredictFailure | None] = []
    pending: list[tuple[int, Path, np.ndarray, str | None]] = []

    def flush() -> None:
        if not pending:
            return
        logits, probs = predictor.run(np.stack([array for _, _, array, _ in pending]))
        for row, (slot, path, _, warning) in enumerate(pending):
            items[slot] = Prediction(
                path,
                top_k(probs[row], predictor.classes, top),
                probs[row],
                None if logits is None else logits[row],
                warning,
            )
        pending.clear()

    for entry in find_images(images):
        if isinstance(entry, PredictFailure):
            items.append(entry)
            continue
        try:
            array, warning = reader.decode(entry.read_bytes())
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
    return PredictionReport(
        tuple(items),
        predictor.path,
        predictor.info,  # type: ignore[arg-type]
        predictor.provider,
    )
