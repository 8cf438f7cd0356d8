"""What the commands write: figures as PNG with their data as JSON, and result JSON.

Every figure ``NAME.png`` has a ``NAME.json`` beside it holding the numbers it shows, so a
figure can be redrawn or checked without reading pixels. Figures are drawn with Matplotlib's
object API on the Agg canvas (no pyplot, no display needed).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from fstore.classifiers.evaluation import TrainingRun
from fstore.classifiers.improvements import Improvements
from fstore.classifiers.pca import PcaProfile
from fstore.classifiers.study import LayerStudy
from fstore.errors import OutputPathError
from fstore.fsutil import atomic_write_bytes, json_text


def to_json(data: Any) -> str:
    """``data`` as JSON text: NumPy values to Python, NaN to null (:func:`.fsutil.json_ready`)."""
    return json_text(data)


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON, atomically."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, to_json(data).encode())
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc}") from None
    return path


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: Path, data: dict) -> list[Path]:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc}") from None
    return [path, write_json(path.with_suffix(".json"), data)]


def confusion_figure(
    path: Path, confusion: np.ndarray, classes: tuple[str, ...] | list[str], title: str
) -> list[Path]:
    """Confusion matrix (rows true, columns predicted), normalised per row, counts written in."""
    confusion = np.asarray(confusion)
    support = confusion.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(support > 0, confusion / np.maximum(support, 1), 0.0)
    n = len(classes)
    side = max(4.0, 0.45 * n + 2.5)
    fig = _figure(side + 1, side)
    ax = fig.subplots()
    image = ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="fraction of the true class")
    ax.set_xticks(range(n), labels=list(classes), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels=list(classes), fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title, fontsize=10)
    if n <= 25:
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(confusion[i, j])),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if rate[i, j] > 0.5 else "black",
                    )
    return _save(
        fig,
        path,
        {
            "figure": "confusion",
            "title": title,
            "classes": list(classes),
            "confusion": confusion,
            "row_normalised": rate,
        },
    )


def variance_figure(path: Path, profile: PcaProfile) -> list[Path]:
    """Explained variance per component (bars) and cumulative (line), 90/95/99 % marked."""
    k = len(profile.explained_variance_ratio)
    x = np.arange(1, k + 1)
    fig = _figure(8, 4.5)
    ax = fig.subplots()
    ax.bar(x, profile.explained_variance_ratio, width=1.0, color="tab:blue", label="per component")
    ax.set_xlabel("component")
    ax.set_ylabel("explained variance ratio")
    twin = ax.twinx()
    twin.plot(x, profile.cumulative, color="tab:red", label="cumulative")
    twin.set_ylim(0, 1.01)
    twin.set_ylabel("cumulative")
    for fraction, count in profile.thresholds.items():
        twin.axhline(fraction, color="grey", lw=0.6, ls=":")
        if count is not None:
            twin.axvline(count, color="grey", lw=0.6, ls="--")
            twin.annotate(
                f"{fraction:.0%}: {count}",
                (count, fraction),
                fontsize=8,
                xytext=(4, -12),
                textcoords="offset points",
            )
    if k > 50:
        ax.set_xscale("log")
    ax.set_title(
        f"PCA of {profile.layer} ({profile.n_samples} {profile.rows} rows, "
        f"{profile.n_features} features, scale {profile.scale})",
        fontsize=10,
    )
    return _save(fig, path, {"figure": "pca_variance", **profile.to_dict()})


def study_figure(path: Path, study: LayerStudy) -> list[Path]:
    """Test accuracy (with std over splits) and fit time per layer."""
    layers = [r.layer for r in study.rows]
    x = np.arange(len(layers))
    fig = _figure(max(5.0, 0.6 * len(layers) + 3), 4.5)
    ax = fig.subplots()
    ax.errorbar(
        x,
        [r.accuracy for r in study.rows],
        yerr=[r.accuracy_std for r in study.rows],
        marker="o",
        color="tab:blue",
        capsize=3,
    )
    ax.set_ylabel("SVM test accuracy", color="tab:blue")
    ax.set_xticks(x, labels=[f"{r.layer}\n{r.dim}" for r in study.rows], fontsize=8)
    ax.set_xlabel("layer (dimension)")
    twin = ax.twinx()
    twin.bar(x, [r.fit_seconds for r in study.rows], alpha=0.25, color="tab:orange")
    twin.set_ylabel("fit time, CV + refit (s)", color="tab:orange")
    ax.set_zorder(twin.get_zorder() + 1)  # the accuracy line above the time bars
    ax.patch.set_visible(False)
    ax.set_title("Linear SVM per layer", fontsize=10)
    return _save(fig, path, {"figure": "layer_study", **study.to_dict()})


def improvements_figure(path: Path, result: Improvements) -> list[Path]:
    """One bar per improvement: mean test accuracy over the K random splits with its sample std
    as error bar (the store's split when there are none), the store's split as a dot, the
    baseline's as a dashed line."""
    data = result.to_dict()
    rows = data["rows"]
    # a row naming several layers wraps at its " + " so the bars keep the figure's width
    labels = [textwrap.fill(r["name"], 34, break_on_hyphens=False) for r in rows]
    lines = np.array([label.count("\n") + 1 for label in labels])
    y = np.cumsum(lines[::-1])[::-1] - lines / 2  # each row as tall as its label, first on top
    standard = [100 * r["accuracy"] for r in rows]
    has_splits = rows[0]["splits_mean"] is not None
    fig = _figure(8, 0.3 * lines.sum() + 0.15 * len(rows) + 1.6)
    ax = fig.subplots()
    if has_splits:
        k = len(rows[0]["splits_accuracies"])
        ax.barh(
            y,
            [100 * r["splits_mean"] for r in rows],
            xerr=[100 * r["splits_std"] for r in rows],
            color="tab:blue",
            alpha=0.45,
            capsize=3,
            label=f"{k} random splits, mean ± std",
        )
    else:
        ax.barh(y, standard, color="tab:blue", alpha=0.45, label="store's split")
    ax.plot(standard, y, "o", color="tab:red", label="store's split")
    ax.axvline(standard[0], color="grey", ls="--", lw=0.8, label="baseline, store's split")
    ax.set_yticks(y, labels=labels, fontsize=8)
    low = min(standard + [100 * (r["splits_mean"] - r["splits_std"]) for r in rows if has_splits])
    ax.set_xlim(max(0.0, low - 2), min(100.0, max(standard) + 2))
    ax.set_xlabel("SVM test accuracy (%)")
    ax.set_title("Improvements over the plain SVM on one layer", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path, {"figure": "improvements", **data})


def write_run(run: TrainingRun, out: Path, save_model: bool = True) -> dict[str, Path]:
    """Write a training run to ``out``: ``confusion.png`` (+ ``.json``), ``result.json`` and,
    for a single split with ``save_model``, the classifier (``classifier.skops`` or
    ``classifier.safetensors``). Returns the paths by role."""
    from fstore.classifiers.persist import classifier_from_run, default_filename, save_classifier

    out = Path(out)
    split = "store split" if run.protocol is None else f"{len(run.fits)} random splits, summed"
    title = (
        f"{run.kind} on {run.layer}: accuracy {run.accuracy_mean:.3f}"
        + (f" ± {run.accuracy_std:.3f}" if len(run.fits) > 1 else "")
        + f" ({split})"
    )
    png, png_json = confusion_figure(out / "confusion.png", run.confusion, run.classes, title)
    paths = {
        "confusion": png,
        "confusion_json": png_json,
        "result": write_json(out / "result.json", run.to_dict()),
    }
    if save_model and len(run.fits) == 1:
        paths["classifier"] = save_classifier(
            classifier_from_run(run), out / default_filename(run.kind)
        )
    return paths
