"""fstore's SVM grid against plain scikit-learn, timed in the same run on the same rows.

fstore: ``train_svm`` (its solver chosen by a probe, or ``--solver``). scikit-learn:
``GridSearchCV(Pipeline(Normalizer, SVC(kernel="linear")), n_jobs=-1)`` with the same folds,
refit on all training rows. Both over the same C grid and folds; the store's split.

    .venv/bin/python scripts/benchmarks/svm_speed.py --store /tmp/svm/fc7.h5 --layer fc7
    .venv/bin/python scripts/benchmarks/svm_speed.py --synthetic 1500x4096      # no store needed
    .venv/bin/python scripts/benchmarks/svm_speed.py --store S --layer pooled --no-reference
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

from fstore.classifiers.svm import train_svm
from fstore.classifiers.svm_options import DEFAULT_C, SvmOptions
from fstore.fsutil import peak_rss_mib
from fstore.store import FeatureSet


def synthetic(shape: str, classes: int = 15, seed: int = 0) -> FeatureSet:
    """Post-ReLU-like features of ``classes`` overlapping classes, half training, half test."""
    n, d = (int(v) for v in shape.split("x"))
    rng = np.random.default_rng(seed)
    y = np.arange(2 * n) % classes
    latent = rng.standard_normal((classes, 64))[y] + 1.5 * rng.standard_normal((2 * n, 64))
    X = np.maximum(latent @ rng.standard_normal((64, d)) / 8, 0).astype(np.float32)
    split = np.array(["train", "test"] * n, dtype=object)
    keys = np.array([f"c{c}/{i}.jpg" for i, c in enumerate(y)], dtype=object)
    names = tuple(f"class{c}" for c in range(classes))
    return FeatureSet("synthetic", X, y.astype(np.int64), keys, split, names, (d,), {})


def reference(fs: FeatureSet, options: SvmOptions) -> tuple[float, float, float]:
    """(seconds, best C, test accuracy) of plain scikit-learn."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer
    from sklearn.svm import SVC

    train, test = fs.train, fs.test
    folds = StratifiedKFold(options.cv, shuffle=True, random_state=options.seed)
    search = GridSearchCV(
        make_pipeline(Normalizer(), SVC(kernel="linear")),
        {"svc__C": list(options.C)},
        cv=folds,
        n_jobs=-1,
    )
    start = time.perf_counter()
    search.fit(train.X, train.y)
    seconds = time.perf_counter() - start
    return seconds, search.best_params_["svc__C"], search.score(test.X, test.y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store")
    parser.add_argument("--layer")
    parser.add_argument("--synthetic", help="ROWSxFEATURES of generated features, e.g. 1500x4096")
    parser.add_argument("--solver", default="auto", choices=("auto", "kernel", "primal"))
    parser.add_argument("--cv", type=int, default=5)
    parser.add_argument("--no-reference", action="store_true", help="Skip scikit-learn.")
    args = parser.parse_args()
    if args.synthetic:
        fs = synthetic(args.synthetic)
    else:
        from fstore.classifiers.combine import load_layers

        fs = load_layers(args.store, args.layer)
    options = SvmOptions(C=DEFAULT_C, cv=args.cv, solver=args.solver)
    import fstore.classifiers.kernel  # noqa: F401  (scikit-learn imported before the clocks)
    import fstore.classifiers.primal  # noqa: F401

    n_train = int(np.sum(fs.split == "train"))
    print(f"{fs.layer}: {n_train} training x {fs.X.shape[1]} features, {len(fs.classes)} classes")
    print(f"C grid {list(options.C)} x {options.cv} folds; loadavg {os.getloadavg()}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        run = train_svm(fs, options)
        seconds = time.perf_counter() - start
    fit = run.fits[0]
    print(
        f"fstore   {seconds:7.1f} s  solver {fit.details['solver']}  best C "
        f"{fit.details['best_C']:g}  test accuracy {run.accuracy_mean:.4f}  "
        f"probe {fit.details['probe']}  warnings {len(caught)}"
    )
    if not args.no_reference:
        ref_seconds, ref_C, ref_accuracy = reference(fs, options)
        print(
            f"sklearn  {ref_seconds:7.1f} s  SVC(kernel='linear')  best C {ref_C:g}  "
            f"test accuracy {ref_accuracy:.4f}"
        )
        print(
            f"speed-up {ref_seconds / seconds:.1f}x; accuracy difference "
            f"{100 * (run.accuracy_mean - ref_accuracy):+.2f} points"
        )
    print(f"loadavg after {os.getloadavg()}; peak memory {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
