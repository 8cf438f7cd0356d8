"""Report stages that train and test: SVM (and SVM on PCA features), heads, PCA profile, layer
study, zero-shot and K random splits. Every figure is computed by :mod:`fstore.classifiers`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fstore.report.context import Context

logger = logging.getLogger(__name__)


def svm_options(ctx: Context, pca: float | None = None):  # -> SvmOptions
    from fstore.classifiers.svm_options import SvmOptions

    config = ctx.config
    return SvmOptions(C=config.C, cv=config.cv, seed=config.seed, pca=pca)


def _summary(run) -> dict:
    """A training run's JSON (``run.to_dict()``) without the models."""
    data = run.to_dict()
    data["classes"] = list(run.classes)
    return data


def svm(ctx: Context, folder: Path) -> dict:
    """The C grid with CV, test accuracy, per-class accuracy, confusion; and the same SVM on
    PCA features (``train_svm`` with ``pca``: its ``baseline`` is the SVM on all features)."""
    from fstore.classifiers.outputs import write_run
    from fstore.classifiers.svm import train_svm

    run = train_svm(ctx.features, svm_options(ctx, pca=ctx.config.pca))
    full = run.baseline
    paths = write_run(full, folder / "svm")
    pca_paths = write_run(run, folder / "pca-svm", save_model=False)
    return {
        "svm": _summary(full),
        "pca_svm": _summary(run),
        "classifier": str(paths["classifier"].relative_to(folder)),
        "figures": {
            "confusion": "svm/confusion.png",
            "pca_confusion": str(pca_paths["confusion"].relative_to(folder)),
        },
    }


def _learning_curve(path: Path, head, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.subplots()
    epochs = np.arange(1, len(head.loss_curve_) + 1)
    ax.plot(epochs, head.loss_curve_, label="training loss")
    if head.validation_loss_curve_:
        ax.plot(
            epochs[: len(head.validation_loss_curve_)],
            head.validation_loss_curve_,
            label="validation loss",
        )
    ax.axvline(
        head.best_epoch_,
        color="grey",
        ls="--",
        lw=0.8,
        label=f"early-stopping point (epoch {head.best_epoch_})",
    )
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def heads(ctx: Context, folder: Path) -> dict:
    """The linear head and the MLP head: accuracy, epochs, early stopping, learning curves."""
    from fstore.classifiers.head import HeadOptions, train_head

    config = ctx.config
    out: dict = {"figures": {}}
    for name, hidden in (("linear", ()), ("mlp", config.hidden)):
        run = train_head(ctx.features, HeadOptions(hidden=hidden, seed=config.seed))
        head = run.fits[0].model["head"]
        label = "linear head" if not hidden else f"MLP head {'-'.join(map(str, hidden))}"
        _learning_curve(
            folder / f"{name}.png",
            head,
            f"{label} on {run.layer}: test accuracy {run.accuracy_mean:.3f}",
        )
        out[name] = {
            **_summary(run),
            "hidden": list(hidden),
            "loss_curve": list(head.loss_curve_),
            "validation_loss_curve": list(head.validation_loss_curve_),
        }
        out["figures"][name] = f"{name}.png"
    return out


def pca(ctx: Context, folder: Path) -> dict:
    """Explained variance per component and cumulative; components for 90/95/99 %."""
    from fstore.classifiers.outputs import variance_figure
    from fstore.classifiers.pca import PcaOptions, pca_profile

    profile = pca_profile(ctx.features, PcaOptions(variance=ctx.config.pca))
    variance_figure(folder / "pca.png", profile)
    data = profile.to_dict()
    return {**data, "figures": {"variance": "pca.png"}}


def layers(ctx: Context, folder: Path) -> dict:
    """Per stored layer of the network (not its views): dimension, SVM test accuracy and fit
    time."""
    from fstore.classifiers.outputs import study_figure
    from fstore.classifiers.study import study_layers

    result = study_layers(ctx.store, ctx.plain_layers, svm_options(ctx))
    study_figure(folder / "layers.png", result)
    return {**result.to_dict(), "figures": {"layers": "layers.png"}}


def zeroshot(ctx: Context, folder: Path) -> dict:
    """Zero-shot accuracy over the covered classes, per class, and the uncovered classes."""
    from fstore.classifiers.outputs import confusion_figure
    from fstore.classifiers.zeroshot import load_mapping, zeroshot_store

    if "logits" not in ctx.layers:
        return {"available": False, "reason": "the store holds no logits layer"}
    from fstore.errors import ClassifierError

    try:
        result = zeroshot_store(ctx.store, load_mapping(ctx.config.mapping))
    except ClassifierError as exc:  # e.g. a mapping that covers fewer than two classes
        return {"available": False, "reason": str(exc)}
    title = f"zero-shot ({result.mapping}): accuracy {result.evaluation.accuracy:.3f}"
    confusion_figure(folder / "zeroshot.png", result.evaluation.confusion, result.covered, title)
    return {"available": True, **result.to_dict(), "figures": {"confusion": "zeroshot.png"}}


def splits(ctx: Context, folder: Path) -> dict:
    """The SVM over K random per-class splits of all images: mean ± std."""
    from fstore.classifiers.svm import train_svm

    protocol = split_protocol(ctx)
    if protocol is None:
        return {"available": False, "reason": "--splits 0"}
    run = train_svm(ctx.features, svm_options(ctx), protocol)
    return {"available": True, "per_class_asked": ctx.config.per_class, **_summary(run)}


def split_protocol(ctx: Context):  # -> SplitProtocol | None
    """The report's K random splits (None for ``--splits 0``): ``per_class`` training images
    per class, lowered to half the smallest class when that is fewer."""
    from fstore.classifiers.protocol import SplitProtocol

    config = ctx.config
    if config.splits == 0:
        return None
    smallest = int(np.bincount(ctx.features.y).min())
    return SplitProtocol(config.splits, min(config.per_class, smallest // 2), config.seed)
