"""The improvements a researcher tries on off-the-shelf features, each trained and measured alike.

An :class:`Improvement` is a set of stored layers (combined as :func:`.combine.combine` does:
each l2-normalised, side by side) and a scaling (``l2`` or ``power``). :func:`improvements_for`
lists the ones a store's layers allow, so a store built with augmented views (layers named
``<layer>@<views>``, e.g. ``pooled@flip``) gets their rows without being asked.
:func:`try_improvements` trains :func:`.svm.train_svm` on each, on the store's split and on K
random splits, with the same options but the scaling: the first row is the baseline, the plain
SVM on one layer, and every row's change is counted against it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fstore.classifiers.combine import JOIN, load_layers
from fstore.classifiers.evaluation import TrainingRun, options_dict
from fstore.classifiers.protocol import SplitProtocol
from fstore.classifiers.svm import train_svm
from fstore.classifiers.svm_options import SvmOptions
from fstore.errors import ClassifierError
from fstore.images.views import MAX, SEPARATOR, split_layers

#: Outputs that hold class scores: combined with the features, never the baseline, never the
#: main features of the report's classifier sections.
CLASS_OUTPUTS = ("logits", "prob")

#: Why each kind of view (the name before any ``:``) may help, in one sentence.
VIEW_REASONS = {
    "flip": "A scene is as likely mirrored as not, so the mean of an image and its mirror "
    "removes a nuisance the SVM would otherwise have to learn from 100 images per class.",
    "crops5": "The mean over the centre and four corner crops sees the whole picture and damps "
    "where the objects happen to sit (Razavian et al. 2014).",
    "scales": "Scene parts appear at many sizes; the mean over input scales pools them "
    "(Herranz et al. 2016).",
}
POWER_REASON = (
    "The signed square root damps the few large activations that dominate a dot product "
    "(power normalisation, Perronnin et al. 2010)."
)


@dataclass(frozen=True)
class Improvement:
    """One row to try: ``layers`` combined (one layer: as stored) and scaled by ``scale``."""

    layers: tuple[str, ...]
    scale: str = "l2"
    reason: str = ""

    @property
    def name(self) -> str:
        joined = f" {JOIN} ".join(self.layers)
        return joined if self.scale == "l2" else f"{joined}, {self.scale}"

    @property
    def views(self) -> tuple[str, ...]:
        """The view sets its layers were averaged over (empty for plain layers)."""
        found = [name.split(SEPARATOR, 1)[1] for name in self.layers if SEPARATOR in name]
        return tuple(dict.fromkeys(found))

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "layers": list(self.layers),
            "scale": self.scale,
            "reason": self.reason,
            "views": list(self.views),
        }


def split_view(layer: str) -> tuple[str, str | None]:
    """``pooled@flip`` → ``("pooled", "flip")``; ``pooled`` → ``("pooled", None)``."""
    base, _, views = layer.partition(SEPARATOR)
    return base, views or None


def _view_reason(views: str) -> str:
    kind = views.split(":", 1)[0]
    if kind.endswith(MAX):
        base = VIEW_REASONS.get(kind.removesuffix(MAX), f"The {views} views.")
        return f"{base} The maximum over the views keeps what any one of them saw strongly."
    return VIEW_REASONS.get(kind, f"The mean of the features over the {views} views.")


def _with_scores(layer: str, held: Sequence[str]) -> tuple[str, ...] | None:
    """``layer`` with the class scores of the same views (or plain ones), if the store has them."""
    base, views = split_view(layer)
    for scores in CLASS_OUTPUTS:
        for name in (f"{scores}{SEPARATOR}{views}" if views else None, scores):
            if name in held:
                return (layer, name)
    return None


def improvements_for(held: Sequence[str], baseline: str) -> list[Improvement]:
    """The rows a store with layers ``held`` allows, the baseline (plain SVM on ``baseline``)
    first: power scaling; all feature layers together; the class scores beside the features;
    then, per view set stored, each feature layer over it and the baseline layer's view with
    power scaling, alone and beside the class scores; last, every view set together."""
    if baseline not in held:
        raise ClassifierError(f"the store has no layer {baseline}; it holds {', '.join(held)}")
    plain, view_sets = split_layers(tuple(held))
    features = [n for n in plain if n not in CLASS_OUTPUTS]
    rows = [
        Improvement(
            (baseline,), reason="The plain SVM on one layer: what each row is measured against."
        ),
        Improvement((baseline,), "power", POWER_REASON),
    ]
    if len(features) > 1:
        why = (
            "Layers of different depth describe an image differently; side by side they may add up."
        )
        rows.append(Improvement(tuple(features), reason=why))
    scored = _with_scores(baseline, plain)
    if scored:
        why = "The ImageNet class scores add what the network concluded to what it saw."
        rows += [Improvement(scored, reason=why), Improvement(scored, "power", why)]
    for views in view_sets:
        why = _view_reason(views)
        for layer in features:
            if f"{layer}{SEPARATOR}{views}" in held:
                rows.append(Improvement((f"{layer}{SEPARATOR}{views}",), reason=why))
        main = f"{baseline}{SEPARATOR}{views}"
        if main in held:
            rows.append(Improvement((main,), "power", f"{why} With power scaling."))
            scored = _with_scores(main, held)
            if scored:
                both = f"{why} With the class scores and power scaling: the gains together."
                rows.append(Improvement(scored, "power", both))
    every = _every_view(baseline, held, view_sets)
    if every:
        rows.append(every)
    return rows


def _every_view(baseline: str, held: Sequence[str], view_sets) -> Improvement | None:
    """With two view sets or more: the baseline layer over each, with the class scores of
    each, side by side and power-scaled (a sum of their kernels, so an ensemble of views)."""
    layers = []
    for views in view_sets:
        main = f"{baseline}{SEPARATOR}{views}"
        if main in held:
            layers += _with_scores(main, held) or (main,)
    if len([n for n in layers if n.startswith(f"{baseline}{SEPARATOR}")]) < 2:
        return None
    why = (
        "Side by side, each view set's unit-length features add their kernels, so the SVM "
        "sees every view set at once."
    )
    return Improvement(tuple(dict.fromkeys(layers)), "power", why)


@dataclass(frozen=True)
class ImprovementResult:
    """One improvement's runs: on the store's split, and on the K random splits (or None)."""

    improvement: Improvement
    standard: TrainingRun
    splits: TrainingRun | None

    def to_dict(self, baseline: ImprovementResult) -> dict:
        accuracy = self.standard.accuracy_mean
        return {
            **self.improvement.to_dict(),
            "n_features": self.standard.n_features,
            "accuracy": accuracy,
            "change_points": 100.0 * (accuracy - baseline.standard.accuracy_mean),
            "splits_mean": self.splits.accuracy_mean if self.splits else None,
            "splits_std": self.splits.accuracy_std if self.splits else None,
            "splits_change_points": (
                100.0 * (self.splits.accuracy_mean - baseline.splits.accuracy_mean)
                if self.splits and baseline.splits
                else None
            ),
            "fit_seconds": self.standard.fit_seconds_mean,
            "best_C": [f.details["best_C"] for f in self.standard.fits],
            "splits_accuracies": self.splits.accuracies.tolist() if self.splits else [],
        }


@dataclass(frozen=True)
class Improvements:
    """The rows of :func:`try_improvements`, the baseline first."""

    rows: tuple[ImprovementResult, ...]
    options: SvmOptions
    protocol: SplitProtocol | None

    @property
    def best(self) -> ImprovementResult:
        """The row with the best accuracy on the store's split (the first of equals)."""
        return max(self.rows, key=lambda r: r.standard.accuracy_mean)

    def to_dict(self) -> dict:
        baseline = self.rows[0]
        return {
            "rows": [r.to_dict(baseline) for r in self.rows],
            "best": self.best.improvement.name,
            "options": options_dict(self.options),
            "protocol": options_dict(self.protocol) if self.protocol else None,
        }


def train_improvement(
    store: Path,
    improvement: Improvement,
    options: SvmOptions | None = None,
    protocol: SplitProtocol | None = None,
) -> ImprovementResult:
    """:func:`.svm.train_svm` on the improvement's layers of ``store``, with its scaling: on the
    store's split, and on ``protocol``'s random splits when given."""
    fs = load_layers(store, ",".join(improvement.layers))
    options = replace(options or SvmOptions(), scale=improvement.scale)
    standard = train_svm(fs, options)
    splits = train_svm(fs, options, protocol) if protocol is not None else None
    return ImprovementResult(improvement, standard, splits)


def try_improvements(
    store: Path,
    improvements: Sequence[Improvement],
    options: SvmOptions | None = None,
    protocol: SplitProtocol | None = None,
    on_row: Callable[[ImprovementResult], None] | None = None,
) -> Improvements:
    """Each improvement trained by :func:`train_improvement`; the first is the baseline the
    others' changes are counted against. ``on_row`` is called as each one finishes."""
    if not improvements:
        raise ClassifierError("no improvement to try")
    options = options or SvmOptions()
    rows = []
    for improvement in improvements:
        row = train_improvement(store, improvement, options, protocol)
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return Improvements(tuple(rows), options, protocol)
