"""How faithful a precision variant is, measured above the layers it needs.

The cosine fidelity of a variant against fp32 is recorded at export
(:mod:`fstore.export.precision`). This module adds what needs the feature store and the
classifiers: the change in linear-SVM test accuracy on a labelled folder
(:func:`accuracy_change`), and :func:`fidelity_report`, the step ``fstore export`` runs after
making a variant.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fstore.errors import DatasetError
from fstore.export.onnx_export import export
from fstore.export.precision import describe_fidelity, read_fidelity
from fstore.export.result import ExportResult
from fstore.images.discover import class_of, folder_split, is_split_layout, scan
from fstore.images.preprocess import Preprocessing
from fstore.pipeline.run import extract_features
from fstore.runtime.metadata import read_model_info
from fstore.runtime.weights_source import WeightsSource
from fstore.store import FeatureSet

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


def _svm_accuracy(feature_set: FeatureSet, split: np.ndarray, split_layout: bool, seed: int):
    from fstore.classifiers.protocol import SplitProtocol
    from fstore.classifiers.svm import SvmOptions, train_svm

    y, n_classes = feature_set.y, len(feature_set.classes)
    smallest = int(np.bincount(y).min())
    protocol = None
    if split_layout:
        train_counts = int(np.bincount(y[split == "train"], minlength=n_classes).min())
    else:
        protocol = SplitProtocol(splits=1, per_class=max(1, smallest // 2), seed=seed)
        train_counts = max(1, smallest // 2)
    options = SvmOptions(cv=max(2, min(5, train_counts)), seed=seed)
    return train_svm(feature_set, options, protocol)


def _features(model: Path, data: _Labelled, layer: str | None, prep, provider: str):
    layers = (layer,) if layer else read_model_info(model).layers[-1:]
    feats, good, _ = extract_features(
        data.paths, model, layers, provider=provider, preprocessing=prep
    )
    keys = [data.keys[p] for p in good]
    y = np.array([data.classes.index(class_of(k, data.split_layout)) for k in keys], np.int64)
    split = np.array([folder_split(k, data.split_layout) for k in keys], dtype=object)
    fs = FeatureSet(
        layers[0], feats[layers[0]], y, np.asarray(keys, dtype=object), split, tuple(data.classes)
    )
    return fs, split


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
    stratified CV), run with the same seed on both. Returns accuracies (fractions) and
    ``change_points``, the other model's accuracy minus fp32's, in percentage points.
    Progress goes to this module's logger.
    """
    data = _labelled_images(folder, per_class, seed)
    accuracies, counts = {}, {}
    for name, model in (("fp32", Path(fp32_model)), ("other", Path(other_model))):
        logger.info("SVM fidelity: features of %d images with the %s model", len(data.paths), name)
        fs, split = _features(model, data, layer, preprocessing, provider)
        run = _svm_accuracy(fs, split, data.split_layout, seed)
        accuracies[name] = run.accuracy_mean
        counts = {"n_train": run.fits[0].n_train, "n_test": run.fits[0].evaluation.n_test}
    return {
        "layer": fs.layer,
        "fp32_accuracy": accuracies["fp32"],
        "other_accuracy": accuracies["other"],
        "change_points": 100.0 * (accuracies["other"] - accuracies["fp32"]),
        "split": "folders" if data.split_layout else f"random (seed {seed})",
        **counts,
    }


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
                f"{self.precision} {s['other_accuracy']:.1%} ({s['change_points']:+.1f} points)"
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
