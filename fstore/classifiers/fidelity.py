"""How faithful a precision variant is: its features' cosine to fp32's, and the change in
linear-SVM test accuracy they make.

:func:`compare_variant` is the one computation; ``fstore export`` (:func:`fidelity_report`),
``fstore bench`` (:func:`accuracy_change`) and the report's precision section all call it. The
cosine recorded at export (:mod:`fstore.export.precision`) is measured on calibration-like
images; this module needs labels, so it lives above the classifiers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fstore.errors import DatasetError
from fstore.export.onnx_export import export
from fstore.export.precision import describe_fidelity, read_fidelity
from fstore.export.result import ExportResult
from fstore.images.discover import is_split_layout, scan
from fstore.images.preprocess import Preprocessing
from fstore.pipeline.run import extract_features
from fstore.runtime.metadata import read_model_info
from fstore.runtime.weights_source import WeightsSource
from fstore.store import FeatureSet
from fstore.store.labels import class_of, folder_split

if TYPE_CHECKING:
    from fstore.classifiers.protocol import SplitProtocol
    from fstore.classifiers.svm_options import SvmOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Labelled:
    paths: list[Path]
    keys: dict[Path, str]
    classes: list[str]
    split_layout: bool


def _labelled_images(folder: Path, per_class: int | None, seed: int) -> _Labelled:
    """The folder's images grouped by (split, class), at most ``per_class`` of each."""
    root = Path(folder)
    split_layout = is_split_layout(root)
    groups: dict[tuple[str, str], list] = {}
    for item in scan(root):
        key = (folder_split(item.key, split_layout), class_of(item.key, split_layout))
        groups.setdefault(key, []).append(item)
    rng = np.random.default_rng(seed)
    chosen = []
    for key in sorted(groups):
        members = groups[key]
        if per_class is not None and len(members) > per_class:
            members = [members[i] for i in sorted(rng.permutation(len(members))[:per_class])]
        chosen.extend(members)
    classes = sorted({class_of(item.key, split_layout) for item in chosen})
    if len(classes) < 2:
        raise DatasetError(f"{root} needs at least two class folders to train an SVM")
    keys = {item.path: item.key for item in chosen}
    return _Labelled([item.path for item in chosen], keys, classes, split_layout)


def _svm_options(feature_set: FeatureSet, split_layout: bool, seed: int):
    """The SVM options and protocol for a labelled folder: its own split where it has one,
    else one random half of each class."""
    from fstore.classifiers.protocol import SplitProtocol
    from fstore.classifiers.svm_options import SvmOptions

    y, n_classes = feature_set.y, len(feature_set.classes)
    smallest = int(np.bincount(y).min())
    protocol = None
    if split_layout:
        train_counts = int(np.bincount(y[feature_set.split == "train"], minlength=n_classes).min())
    else:
        protocol = SplitProtocol(splits=1, per_class=max(1, smallest // 2), seed=seed)
        train_counts = max(1, smallest // 2)
    return SvmOptions(cv=max(2, min(5, train_counts)), seed=seed), protocol


def compare_variant(
    fp32: FeatureSet,
    variant: FeatureSet,
    options: SvmOptions,
    protocol: SplitProtocol | None = None,
    fp32_accuracy: float | None = None,
) -> dict:
    """The variant's features against fp32's, image by image (matched by key): mean and min
    cosine, max relative error, and the same linear SVM (``options``, ``protocol``) trained on
    each. ``fp32_accuracy`` is fp32's test accuracy when it was already trained with those
    options.

    Returns ``fp32_accuracy``, ``accuracy`` (fractions), ``change_points`` (the variant's
    minus fp32's, in percentage points), the train and test counts and the cosine figures.
    """
    from fstore.classifiers.svm import train_svm
    from fstore.export.precision import compare_features

    order = {k: i for i, k in enumerate(variant.keys)}
    missing = [k for k in fp32.keys if k not in order]
    if missing:
        raise DatasetError(f"the variant has no features of {missing[0]} ({len(missing)} missing)")
    aligned = variant.subset(np.array([order[k] for k in fp32.keys]))
    cosine = compare_features({fp32.layer: fp32.X}, {fp32.layer: aligned.X})[fp32.layer]
    if fp32_accuracy is None:
        fp32_accuracy = train_svm(fp32, options, protocol).accuracy_mean
    run = train_svm(aligned, options, protocol)
    return {
        "layer": fp32.layer,
        "fp32_accuracy": fp32_accuracy,
        "accuracy": run.accuracy_mean,
        "change_points": 100.0 * (run.accuracy_mean - fp32_accuracy),
        "n_train": run.fits[0].n_train,
        "n_test": run.fits[0].evaluation.n_test,
        **cosine,
    }


def _features(model: Path, data: _Labelled, layer: str | None, prep, provider: str):
    layers = (layer,) if layer else read_model_info(model).layers[-1:]
    feats, good, _ = extract_features(
        data.paths, model, layers, provider=provider, preprocessing=prep
    )
    keys = [data.keys[p] for p in good]
    y = np.array([data.classes.index(class_of(k, data.split_layout)) for k in keys], np.int64)
    split = np.array([folder_split(k, data.split_layout) for k in keys], dtype=object)
    return FeatureSet(
        layers[0], feats[layers[0]], y, np.asarray(keys, dtype=object), split, tuple(data.classes)
    )


def accuracy_change(
    fp32_model: Path,
    other_model: Path,
    folder: Path,
    preprocessing: Preprocessing,
    *,
    layer: str | None = None,
    per_class: int | None = None,
    provider: str = "cpu",
    seed: int = 0,
) -> dict:
    """Train the same linear SVM on both models' features of ``folder``; compare test accuracy.

    ``folder`` is a labelled image folder (``<class>/<image>``, or ``train|test/<class>/...``
    whose split is then used; otherwise half of each class trains, drawn with ``seed``).
    ``per_class`` keeps at most that many images per class and split, to bound the time.
    The SVM is fstore's (:func:`fstore.classifiers.svm.train_svm`: grid search over C with
    stratified CV), run with the same seed on both. Returns :func:`compare_variant`'s figures
    and how the folder was split.
    Progress goes to this module's logger.
    """
    data = _labelled_images(folder, per_class, seed)
    features = {}
    for name, model in (("fp32", Path(fp32_model)), ("other", Path(other_model))):
        logger.info("SVM fidelity: features of %d images with the %s model", len(data.paths), name)
        features[name] = _features(model, data, layer, preprocessing, provider)
    options, protocol = _svm_options(features["fp32"], data.split_layout, seed)
    change = compare_variant(features["fp32"], features["other"], options, protocol)
    return {**change, "split": "folders" if data.split_layout else f"random (seed {seed})"}


@dataclass(frozen=True)
class FidelityReport:
    """A variant's recorded cosine fidelity, and its SVM accuracy change when measured."""

    precision: str
    cosine: dict | None
    svm: dict | None

    def lines(self) -> list[str]:
        out = [describe_fidelity(self.cosine)] if self.cosine else []
        if self.svm:
            s = self.svm
            out.append(
                f"SVM test accuracy on {s['layer']}: fp32 {s['fp32_accuracy']:.1%}, "
                f"{self.precision} {s['accuracy']:.1%} ({s['change_points']:+.1f} points)"
            )
        return out


def fidelity_report(variant: ExportResult, images: Path | None = None) -> FidelityReport:
    """What ``fstore export`` shows after a variant: its cosine record, and with a labelled
    ``images`` folder the SVM accuracy change against the (cached) fp32 model."""
    info = variant.info
    if info.precision == "fp32":
        return FidelityReport("fp32", None, None)
    svm = None
    if images is not None:
        base = export(
            info.layers,
            WeightsSource.from_origin(info.weights_origin),
            opset=info.opset,
            preprocessing=info.preprocessing,
        )
        svm = accuracy_change(base.path, variant.path, images, info.preprocessing)
    return FidelityReport(info.precision, read_fidelity(variant.path), svm)
