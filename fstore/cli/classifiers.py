"""Click commands for classifiers: ``train svm|head|pca``, ``study layers``, ``zeroshot``,
``classify``.

Each command parses its options into the library's frozen option dataclasses, calls the
library (:mod:`fstore.classifiers`) and prints. Nothing heavy is imported at module level:
scikit-learn, torch, h5py and ONNX Runtime load inside the command bodies. Errors a user can fix
(``FstoreError``) become one line on stderr and exit status 1, also when these commands run on
their own rather than under ``fstore`` (:class:`~fstore.cli.options.FstoreGroup`).

Register them on the main group with ``cli.add_command(train)``, ``cli.add_command(study)``,
``cli.add_command(zeroshot)`` and ``cli.add_command(classify)``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fstore.classifiers.svm_options import SOLVERS
from fstore.cli.options import (
    CommaList,
    FstoreCommand,
    FstoreGroup,
    c_grid_option,
    cv_option,
    hidden_option,
    max_iter_option,
    option_group,
    provider_choice,
    scale_option,
    seed_option,
    store_option,
)

if TYPE_CHECKING:
    from fstore.classifiers.evaluation import TrainingRun
    from fstore.classifiers.protocol import SplitProtocol
    from fstore.store import FeatureSet


# --------------------------------------------------------------------------- shared options

layer_option = click.option(
    "--layer",
    default=None,
    help="Layer to use, or several separated by commas (each l2-normalised, then side by "
    "side) [default: the store's only layer, else fc7].",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON instead of text."
)
# l2 for the SVM: liblinear converges far faster on l2-normalised features; standard for the
# torch head, which is more accurate there and stops early (docs/performance.md).
svm_scale_option = scale_option("l2")
pca_option = click.option(
    "--pca",
    default=None,
    help="Reduce features first: N components or a variance fraction such as 0.95; "
    "also trains on the full features to compare accuracy and time.",
)


def out_option(name: str):
    return click.option(
        "--out",
        type=click.Path(path_type=Path),
        default=Path("runs") / name,
        show_default=True,
        help="Folder for figures (PNG and JSON of their data) and results.",
    )


protocol_options = option_group(
    click.option(
        "--splits",
        default=0,
        show_default=True,
        type=int,
        help="Repeat over K random per-class splits of all images (the store's split is "
        "ignored) and report mean ± std; 0 uses the store's split.",
    ),
    click.option(
        "--per-class",
        default=100,
        show_default=True,
        type=int,
        help="With --splits: training images per class in each random split.",
    ),
)
solver_option = click.option(
    "--solver",
    type=click.Choice(SOLVERS),
    default="auto",
    show_default=True,
    help="kernel: SVC on a precomputed linear kernel (one-vs-one, hinge); primal: LinearSVC "
    "(one-vs-rest, squared hinge); auto: whichever a timed probe finds faster.",
)
#: The SVM's search: ``--C``, ``--cv``, ``--max-iter``, ``--scale``, ``--solver`` (train svm,
#: study layers).
svm_search_options = option_group(
    c_grid_option, cv_option, max_iter_option, svm_scale_option, solver_option
)


@dataclass(frozen=True)
class RunArgs:
    """The values of :func:`run_options`, handed to the command as one ``common`` argument."""

    splits: int
    per_class: int
    seed: int
    out: Path
    as_json: bool
    pca: str | None = None

    @property
    def protocol(self) -> SplitProtocol | None:
        """Random per-class splits (``--splits``), or ``None`` for the store's split."""
        from fstore.classifiers.protocol import SplitProtocol

        return SplitProtocol(self.splits, self.per_class, self.seed) if self.splits else None


def run_options(name: str, pca: bool = True):
    """What every training command ends with: ``--pca`` (unless ``pca`` is false), ``--splits``,
    ``--per-class``, ``--seed``, ``--out`` (default ``runs/NAME``) and ``--json``, passed to the
    command as ``common``, a :class:`RunArgs`."""
    group = option_group(
        *([pca_option] if pca else []), protocol_options, seed_option, out_option(name), json_option
    )
    names = [f.name for f in fields(RunArgs)]

    def decorate(command):
        @functools.wraps(command)
        def collect(**params):
            common = RunArgs(**{k: params.pop(k) for k in names if k in params})
            return command(common=common, **params)

        return group(collect)

    return decorate


def _store(store: Path | None) -> Path:
    from fstore.store import default_store_path

    return store if store is not None else default_store_path()


def _load(store: Path | None, layer: str | None) -> FeatureSet:
    from fstore.classifiers.combine import load_layers

    return load_layers(_store(store), layer)


def _echo_paths(paths) -> None:
    click.echo("wrote " + ", ".join(str(p) for p in paths))


# --------------------------------------------------------------------------- train


@click.group(cls=FstoreGroup)
def train() -> None:
    """Train classifiers on one layer of the feature store (no image decoding).

    Examples:

    \b
      fstore train svm
      fstore train head --hidden 512
      fstore train pca --variance 0.95
    """


def _print_header(run: TrainingRun) -> None:
    first = run.fits[0]
    click.echo(
        f"{run.kind} on {run.layer}: {run.n_features} features, {len(run.classes)} classes, "
        f"{first.n_train} training / {first.evaluation.n_test} test images"
        + (f" per split, {len(run.fits)} random splits" if run.protocol else "")
    )
    if not run.provenance.get("model_sha256"):
        click.echo(
            "warning: the store records no model sha256; the saved classifier cannot be "
            "applied to new images",
            err=True,
        )


def _print_fits(run: TrainingRun) -> None:
    """The SVM's CV table and best C, or the head's epochs, per split."""
    first = run.fits[0]
    if run.kind == "svm" and len(run.fits) == 1:
        best = first.details["best_C"]
        click.echo(f"CV accuracy ({run.options.cv}-fold stratified):")
        click.echo(f"  {'C':>10}  {'mean':>7} ± {'std':<7}")
        for row in first.details["cv"]:
            mark = "*" if row["C"] == best else " "
            click.echo(f"{mark} {row['C']:>10g}  {row['mean']:>7.4f} ± {row['std']:<7.4f}")
        click.echo(f"best C: {best:g} ({_solver_words(first.details)})")
        return
    for fit in run.fits:
        d = fit.details
        if run.kind == "svm":
            what = f"best C {d['best_C']:g}"
        else:
            stop = "stopped early" if d["stopped_early"] else "ran all epochs"
            what = f"{d['epochs_run']} epochs ({stop}), best epoch {d['best_epoch']}"
        click.echo(f"  {fit.split}: {what}, accuracy {fit.evaluation.accuracy:.4f}")


def _solver_words(details: dict) -> str:
    """``kernel solver`` or ``primal solver``, with the probe's estimates when it chose."""
    probe = details.get("probe") or {}
    words = f"{details['solver']} solver"
    if "kernel_s" in probe:
        words += (
            f"; probe estimated kernel {probe['kernel_s']:.1f} s, primal {probe['primal_s']:.1f} s"
        )
    return words


def _print_scores(run: TrainingRun) -> None:
    """Test accuracy (mean ± std over splits), per class, and the PCA comparison."""
    first = run.fits[0]
    if len(run.fits) == 1:
        click.echo(
            f"test accuracy: {run.accuracy_mean:.4f} ({first.evaluation.n_test} images, "
            f"fit {first.fit_seconds:.2f} s)"
        )
    else:
        click.echo(
            f"test accuracy: {run.accuracy_mean:.4f} ± {run.accuracy_std:.4f} over "
            f"{len(run.fits)} splits (fit {run.fit_seconds_mean:.2f} s per split)"
        )
    _print_per_class(run.classes, run.per_class_mean)
    if run.baseline is not None:
        comps = sorted({f.details.get("pca_components") for f in run.fits})
        click.echo(
            f"PCA {run.options.pca} ({', '.join(map(str, comps))} components): accuracy "
            f"{run.accuracy_mean:.4f}, fit {run.fit_seconds_mean:.2f} s; full features "
            f"({run.n_features}): accuracy {run.baseline.accuracy_mean:.4f}, fit "
            f"{run.baseline.fit_seconds_mean:.2f} s"
        )


def _print_per_class(classes, accuracies) -> None:
    click.echo("per-class accuracy:")
    width = max(len(c) for c in classes)
    for name, acc in zip(classes, accuracies, strict=True):
        click.echo(f"  {name:<{width}}  " + ("  n/a" if acc != acc else f"{acc:.4f}"))


def _print_run(run: TrainingRun, paths: dict[str, Path], as_json: bool) -> None:
    if as_json:
        from fstore.classifiers.outputs import to_json

        click.echo(to_json({**run.to_dict(), "files": {k: str(v) for k, v in paths.items()}}))
        return
    _print_header(run)
    _print_fits(run)
    _print_scores(run)
    if "classifier" not in paths and run.protocol:
        click.echo(
            "no classifier saved: random splits give no single model "
            "(train without --splits to save one)"
        )
    _echo_paths(paths.values())


@train.command()
@store_option
@layer_option
@svm_search_options
@click.option(
    "--exclude-leaks",
    is_flag=True,
    help="Leave out of the test score the test images with a copy in the training split "
    "(exact or verified near copies, as fstore duplicates finds them; cached beside the "
    "store). The training rows stay the same.",
)
@run_options("svm")
def svm(
    store: Path | None,
    layer: str | None,
    c_grid: tuple[float, ...],
    cv: int,
    max_iter: int,
    scale: str,
    solver: str,
    exclude_leaks: bool,
    common: RunArgs,
) -> None:
    """Linear SVM: grid search over C with stratified k-fold CV, refit, test.

    Saves the classifier (skops, no pickle) with the store's provenance in --out. Fits that
    stop at --max-iter before converging are counted and reported in one line.

    Examples:

    \b
      # C by 5-fold CV on ./fstore.h5's training split, then its test split
      fstore train svm --C 0.01,0.1,1,10 --cv 5
      # EfficientNet-Lite1's pooled features; classifier in runs/lite1-svm
      fstore train svm --store lite1.h5 --layer pooled --out runs/lite1-svm
      # PCA to 95 % of the variance first, compared with all features
      fstore train svm --pca 0.95
      # 10 random splits of 100 training images per class: mean ± std
      fstore train svm --splits 10 --per-class 100
      # test accuracy without the test images that are copies of training images
      fstore train svm --store lite1.h5 --layer pooled --exclude-leaks
    """
    from fstore.classifiers.outputs import write_run
    from fstore.classifiers.protocol import make_splits
    from fstore.classifiers.svm import train_svm, unconverged_line
    from fstore.classifiers.svm_options import SvmOptions
    from fstore.classifiers.transforms import parse_pca

    options = SvmOptions(
        C=c_grid,
        cv=cv,
        scale=scale,
        pca=parse_pca(common.pca),
        seed=common.seed,
        max_iter=max_iter,
        solver=solver,
    )
    fs = _load(store, layer)
    if exclude_leaks:
        fs = _without_leaks(fs, _store(store), layer, common)
    make_splits(fs, common.protocol)  # a split it cannot train on is refused before the fits
    click.echo(
        f"svm on {fs.layer}: {len(options.C)} C values x {cv} folds "
        f"({len(options.C) * cv} fits per split, run in parallel) ...",
        err=True,
    )
    run = train_svm(fs, options, common.protocol)
    _print_run(run, write_run(run, common.out), common.as_json)
    _echo_unconverged(unconverged_line(run))


def _without_leaks(fs: FeatureSet, store: Path, layer: str | None, common: RunArgs):
    """``fs`` without its leaked test images (one line on stderr says how many)."""
    from fstore.errors import ClassifierError
    from fstore.quality.leaks import exclude_leaks

    if common.protocol is not None:
        raise ClassifierError(
            "--exclude-leaks applies to the store's train/test split, not to --splits"
        )
    # the duplicates' candidates come from one stored layer: the first one asked for
    first = layer.split(",")[0] if layer else None
    click.echo("finding test images copied in the training split ...", err=True)
    result = exclude_leaks(fs, store, first)
    click.echo(
        f"--exclude-leaks: {len(result.excluded)} leaked test images left out of the score",
        err=True,
    )
    return result.features


def _echo_unconverged(line: str | None) -> None:
    if line:
        click.echo(line, err=True)


@train.command()
@store_option
@layer_option
@hidden_option()
@click.option("--epochs", default=100, show_default=True, type=int, help="Most epochs.")
@click.option(
    "--patience",
    default=10,
    show_default=True,
    type=int,
    help="Epochs without a lower validation loss before stopping.",
)
@click.option("--lr", default=1e-3, show_default=True, type=float, help="AdamW learning rate.")
@click.option(
    "--weight-decay", default=1e-4, show_default=True, type=float, help="AdamW weight decay."
)
@click.option("--batch-size", default=64, show_default=True, type=int)
@click.option(
    "--validation",
    default=0.1,
    show_default=True,
    type=float,
    help="Fraction of the training split held out for early stopping.",
)
@click.option(
    "--threads",
    default=1,
    show_default=True,
    type=int,
    help="Torch threads while training; 0 for torch's default. One is fastest for small heads.",
)
@scale_option("standard")
@run_options("head")
def head(
    store: Path | None,
    layer: str | None,
    hidden: tuple[int, ...],
    epochs: int,
    patience: int,
    lr: float,
    weight_decay: float,
    batch_size: int,
    validation: float,
    threads: int,
    scale: str,
    common: RunArgs,
) -> None:
    """Torch linear or MLP head, early-stopped on a held-out validation part.

    Deterministic for a --seed. Saves the classifier (safetensors) with the store's
    provenance in --out. Needs torch.

    Examples:

    \b
      # a linear head
      fstore train head
      # one hidden layer of 512, at most 100 epochs, patience 10
      fstore train head --hidden 512 --epochs 100 --patience 10
      fstore train head --store lite1.h5 --layer pooled --hidden 1024,256
    """
    from fstore.classifiers.head import HeadOptions, train_head
    from fstore.classifiers.outputs import write_run
    from fstore.classifiers.transforms import parse_pca

    options = HeadOptions(
        hidden=hidden,
        epochs=epochs,
        patience=patience,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
        validation_fraction=validation,
        seed=common.seed,
        threads=threads or None,
        scale=scale,
        pca=parse_pca(common.pca),
    )
    run = train_head(_load(store, layer), options, common.protocol)
    _print_run(run, write_run(run, common.out), common.as_json)


@train.command("pca")
@store_option
@layer_option
@click.option(
    "--components",
    default=None,
    type=int,
    help="Compute only the N leading components (faster on wide layers).",
)
@click.option(
    "--variance",
    default=None,
    type=float,
    help="Also report the components needed for this variance fraction.",
)
@scale_option("standard", help="Scaling before PCA (standard, as train head does).")
@click.option(
    "--plot",
    type=click.Path(path_type=Path),
    default=None,
    help="Where to write the variance plot [default: OUT/pca.png].",
)
@out_option("pca")
@json_option
def pca_command(
    store: Path | None,
    layer: str | None,
    components: int | None,
    variance: float | None,
    scale: str,
    plot: Path | None,
    out: Path,
    as_json: bool,
) -> None:
    """Explained variance per component and cumulative, components for 90/95/99 %.

    Examples:

    \b
      fstore train pca --variance 0.95 --plot pca.png
      # only the 100 leading components (faster on wide layers)
      fstore train pca --store lite1.h5 --layer pooled --components 100
    """
    from fstore.classifiers.outputs import to_json, variance_figure
    from fstore.classifiers.pca import PcaOptions, pca_profile

    options = PcaOptions(components=components, variance=variance, scale=scale)
    profile = pca_profile(_load(store, layer), options)
    paths = variance_figure(plot or out / "pca.png", profile)
    if as_json:
        click.echo(to_json({**profile.to_dict(), "files": [str(p) for p in paths]}))
        return
    k = len(profile.explained_variance_ratio)
    click.echo(
        f"PCA of {profile.layer}: {profile.n_samples} {profile.rows} rows, "
        f"{profile.n_features} features, scale {profile.scale}, {k} components computed"
    )
    click.echo(f"  {'component':>9}  {'variance':>8}  {'cumulative':>10}")
    for i in range(min(k, 10)):
        click.echo(
            f"  {i + 1:>9}  {profile.explained_variance_ratio[i]:>8.4f}  "
            f"{profile.cumulative[i]:>10.4f}"
        )
    for fraction, count in profile.thresholds.items():
        click.echo(
            f"components for {fraction:.0%} of the variance: "
            + (str(count) if count is not None else f"more than {k}")
        )
    _echo_paths(paths)


# --------------------------------------------------------------------------- study


@click.group(cls=FstoreGroup)
def study() -> None:
    """Studies across the store's layers.

    Examples:

    \b
      fstore study layers --store lite1.h5
    """


@study.command("layers")
@store_option
@click.option(
    "--layers",
    "layer_names",
    type=CommaList(str),
    default=None,
    help="Comma-separated layers [default: every layer in the store].",
)
@svm_search_options
@run_options("study", pca=False)
def study_layers_command(
    store: Path | None,
    layer_names: tuple[str, ...] | None,
    c_grid: tuple[float, ...],
    cv: int,
    max_iter: int,
    scale: str,
    solver: str,
    common: RunArgs,
) -> None:
    """Per layer: dimension, linear-SVM test accuracy and training time; table and plot.

    Examples:

    \b
      fstore study layers --store lite1.h5
      fstore study layers --store lite1.h5 --layers pooled,logits --C 0.1,1
    """
    from fstore.classifiers.outputs import study_figure, to_json, write_json
    from fstore.classifiers.study import study_layers
    from fstore.classifiers.svm_options import SvmOptions

    options = SvmOptions(
        C=c_grid, cv=cv, scale=scale, seed=common.seed, max_iter=max_iter, solver=solver
    )

    def progress(row) -> None:
        click.echo(f"{row.layer}: accuracy {row.accuracy:.4f} in {row.fit_seconds:.1f} s", err=True)

    result = study_layers(_store(store), layer_names, options, common.protocol, on_row=progress)
    paths = [
        *study_figure(common.out / "study.png", result),
        write_json(common.out / "result.json", result.to_dict()),
    ]
    if common.as_json:
        click.echo(to_json({**result.to_dict(), "files": [str(p) for p in paths]}))
    else:
        click.echo(f"{'layer':<8} {'dim':>9} {'accuracy':>17} {'fit s':>8}  best C")
        for r in result.rows:
            acc = f"{r.accuracy:.4f}" + (f" ± {r.accuracy_std:.4f}" if common.splits > 1 else "")
            best = ",".join(f"{c:g}" for c in r.best_C)
            click.echo(f"{r.layer:<8} {r.dim:>9} {acc:>17} {r.fit_seconds:>8.2f}  {best}")
        _echo_paths(paths)
    _echo_unconverged(result.unconverged_line())


# --------------------------------------------------------------------------- zeroshot


@click.command(cls=FstoreCommand)
@store_option
@click.option(
    "--mapping",
    type=click.Path(path_type=Path),
    default=None,
    help='JSON file {"class": [ImageNet ids...]} [default: built-in 15-Scene mapping].',
)
@out_option("zeroshot")
@json_option
def zeroshot(store: Path | None, mapping: Path | None, out: Path, as_json: bool) -> None:
    """No training: classify with ImageNet logits restricted to a class mapping.

    Softmax over the kept logits, probability summed per target class. The store must hold
    the logits layer. Accuracy is over the classes the mapping covers; the others are named.

    Examples:

    \b
      # 15-Scene's built-in mapping, on a store that holds logits
      fstore zeroshot --store lite1.h5
      fstore zeroshot --store lite1.h5 --json
    """
    from fstore.classifiers.outputs import confusion_figure, to_json, write_json
    from fstore.classifiers.zeroshot import load_mapping, zeroshot_store

    result = zeroshot_store(_store(store), load_mapping(mapping))
    title = f"zero-shot ({result.mapping}): accuracy {result.evaluation.accuracy:.3f}"
    confusion = result.evaluation.confusion
    paths = [
        *confusion_figure(out / "confusion.png", confusion, result.covered, title),
        write_json(out / "result.json", result.to_dict()),
    ]
    if as_json:
        click.echo(to_json({**result.to_dict(), "files": [str(p) for p in paths]}))
        return
    ev = result.evaluation
    click.echo(
        f"zero-shot with the {result.mapping} mapping on the {result.rows} rows: "
        f"{len(result.covered)} classes covered"
    )
    click.echo(f"accuracy over the covered classes: {ev.accuracy:.4f} ({ev.n_test} images)")
    width = max(len(c) for c in result.covered)
    for name, acc in zip(result.covered, ev.per_class, strict=True):
        click.echo(f"  {name:<{width}}  " + ("  n/a" if acc != acc else f"{acc:.4f}"))
    if result.uncovered:
        click.echo(
            f"not covered (no ImageNet counterpart in the mapping; {result.n_skipped} "
            f"images left out): {', '.join(result.uncovered)}"
        )
    _echo_paths(paths)


# --------------------------------------------------------------------------- classify


@click.command(cls=FstoreCommand)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--classifier",
    "classifier_path",
    required=True,
    type=click.Path(path_type=Path),
    help="A classifier saved by fstore train (classifier.skops / .safetensors).",
)
@click.option(
    "--model",
    "model_path",
    type=click.Path(path_type=Path),
    default=None,
    help="The ONNX model the classifier's store was built with "
    "[default: the path recorded in the classifier].",
)
@provider_choice(default="cpu", help="ONNX Runtime execution provider.")
@click.option("--batch-size", default=16, show_default=True, type=int)
@json_option
def classify(
    images: tuple[Path, ...],
    classifier_path: Path,
    model_path: Path | None,
    provider: str,
    batch_size: int,
    as_json: bool,
) -> None:
    """Predict the class of IMAGES (files or folders) with a trained classifier.

    Features are computed by the same ONNX model and preprocessing as the classifier's store;
    a classifier trained on another model's features is refused.

    Examples:

    \b
      # an SVM on EfficientNet-Lite1 features, then new pictures through it
      fstore train svm --store lite1.h5 --layer pooled --out runs/lite1-svm
      fstore classify ../shared/data/scene15/test/kitchen \\
          --classifier runs/lite1-svm/classifier.skops
    """
    from fstore.classifiers.predict import classify_images

    result = classify_images(list(images), classifier_path, model_path, provider, batch_size)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        for p in result.predictions:
            prob = "" if p.probability is None else f"\t{p.probability:.4f}"
            click.echo(f"{p.path}\t{p.label}{prob}")
    for path, reason in result.failed:
        click.echo(f"skipped {path}: {reason}", err=True)
    if not result.predictions:
        raise click.ClickException("no image could be read; nothing classified")
