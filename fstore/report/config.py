"""The one options dataclass of ``fstore report``, from the command line to the library."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fstore.classifiers.svm_options import DEFAULT_C
from fstore.errors import FstoreError
from fstore.export.calibration import DEFAULT_CALIBRATION_COUNT
from fstore.images.preprocess import Preprocessing, PreprocessingFlags, for_options
from fstore.images.views import parse_views
from fstore.runtime.weights_source import WeightsSource

#: Layers a VGG16 report stores when none are given: fc6, fc7 for the layer study, logits for
#: the zero-shot section.
VGG16_LAYERS = ("fc6", "fc7", "logits")
PRECISIONS = ("int8", "fp16")
#: The views a report builds for its Improvements section: the mirror image, which costs one
#: more pass of the model (the corner crops cost five, a second scale more than one).
DEFAULT_VIEWS = ("flip",)


@dataclass(frozen=True)
class ReportConfig:
    """Everything ``fstore report`` is asked to do.

    Attributes:
        images: the image folder (``<class>/<image>`` or ``train|test/<class>/<image>``).
        out: folder for ``report.html``, ``report.md``, ``report.json`` and ``figures/``.
        store: the feature store (built or extended when needed); default ``OUT/fstore.h5``.
        model: any ONNX image model instead of VGG16 (its outputs are the layers).
        preprocessing: ``model``'s preprocessing (a VGG16 report uses ``input_size``).
        weights, input_size: VGG16's weights and input side (ignored with ``model``).
        layers: layers to store; the first that is not logits/prob feeds the classifiers.
        C, cv: the SVM's grid and folds; ``pca``: variance kept for the SVM on PCA features.
        hidden: the MLP head's hidden layer sizes (the linear head is always trained too).
        splits, per_class: K random splits with ``per_class`` training images per class
            (lowered to half the smallest class when that is fewer).
        precisions: precision variants measured against fp32 (``int8``, ``fp16``).
        calibration_count: images an int8 variant of a ``model`` is calibrated on.
        mapping: zero-shot mapping file (``None``: the built-in 15-Scene mapping).
        samples: images shown with their top-5 predictions.
        views: augmented views the build stores as ``<layer>@<views>`` layers (their mean), one
            Improvements row set each; ``flip`` doubles the model's work. ``None``:
            :data:`DEFAULT_VIEWS` for a new store, an existing store's own (as ``build``).
        cost_images: images of the sample each view set's build cost is measured on.
        seed, provider, batch_size, threads: as for ``build`` and ``train``.
        use_cache: reuse cached stages (``False`` recomputes every stage).
        exclude_leaks: leave the test images with a copy in the training split out of every
            section's test rows (the Data quality section gives the accuracy both ways).
    """

    images: Path
    out: Path = Path("report")
    store: Path | None = None
    model: Path | None = None
    preprocessing: Preprocessing | None = None
    weights: WeightsSource | None = None
    input_size: int = 224
    layers: tuple[str, ...] | None = None
    C: tuple[float, ...] = DEFAULT_C
    cv: int = 5
    pca: float = 0.95
    hidden: tuple[int, ...] = (512,)
    splits: int = 10
    per_class: int = 100
    precisions: tuple[str, ...] = PRECISIONS
    calibration_count: int = DEFAULT_CALIBRATION_COUNT
    mapping: Path | None = None
    samples: int = 15
    views: tuple[str, ...] | None = None
    cost_images: int = 240
    seed: int = 0
    provider: str = "cpu"
    batch_size: int = 32
    threads: int | None = None
    use_cache: bool = True
    exclude_leaks: bool = False

    def __post_init__(self) -> None:
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise FstoreError(
                f"unknown precision {unknown[0]!r}; choose from {', '.join(PRECISIONS)}"
            )
        if self.model is not None and self.preprocessing is None and not _carries(self.model):
            raise FstoreError(
                "a --model needs its preprocessing: --size (and --resize, --mean, --std as its "
                "documentation gives them), or annotate it once: fstore export --onnx FILE ..."
            )
        if self.splits < 0 or self.samples < 0:
            raise FstoreError("--splits and --samples cannot be negative")
        if self.cost_images < 1:
            raise FstoreError("--cost-images must be at least 1")
        if self.views is not None:
            object.__setattr__(self, "views", parse_views(self.views))  # checked, canonical

    @property
    def store_path(self) -> Path:
        return self.store if self.store is not None else Path(self.out) / "fstore.h5"

    @property
    def wanted_views(self) -> tuple[str, ...]:
        """The views to ask the build for (empty: the store's own, as ``build`` reads it)."""
        if self.views is not None:
            return self.views
        from fstore.store.layout import sidecar

        started = self.store_path.exists() or sidecar(self.store_path).exists()
        return () if started else DEFAULT_VIEWS

    @property
    def wanted_layers(self) -> tuple[str, ...] | None:
        """The layers to store: the given ones, VGG16's default, or all of a model's outputs."""
        if self.layers:
            return self.layers
        return None if self.model is not None else VGG16_LAYERS

    @property
    def vgg16_weights(self) -> WeightsSource:
        """The VGG16 weights (ImageNet's when none were given, as ``build`` does)."""
        return self.weights or WeightsSource("imagenet")

    def vgg16_preprocessing(self) -> Preprocessing:
        """torchvision's ImageNet preprocessing scaled to ``input_size``."""
        return for_options(self.input_size)

    @classmethod
    def from_options(
        cls,
        *,
        images: Path,
        weights: str,
        seed: int,
        model: Path | None,
        preprocessing: PreprocessingFlags | None,
        c_grid: tuple[float, ...],
        no_cache: bool,
        **settings,
    ) -> ReportConfig:
        """The config of ``fstore report``'s options, as click hands them over: ``weights`` as
        its text (ignored with a ``model``), ``c_grid`` as ``--C``, ``no_cache``;
        ``settings`` are the options that are fields already."""
        return cls(
            images=images,
            model=model,
            preprocessing=preprocessing.standalone() if preprocessing else None,
            weights=None if model else WeightsSource.parse(weights, seed),
            C=tuple(c_grid),
            seed=seed,
            use_cache=not no_cache,
            **settings,
        )


def _carries(model: Path) -> bool:
    """Whether ``model`` carries its preprocessing (an fstore export or an annotated file)."""
    from fstore.errors import ModelError
    from fstore.runtime.metadata import read_model_info

    try:
        read_model_info(model)
    except ModelError:
        return False
    return True
