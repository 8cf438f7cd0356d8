"""LinearSVC fits that stop at --max-iter: counted inside the joblib workers, said once."""

from __future__ import annotations

import re
import warnings

import pytest
from click.testing import CliRunner
from synthetic_features import gaussian_classes, write_feature_sets

from fstore.classifiers.convergence import summary
from fstore.classifiers.svm import grid_search, train_svm, unconverged_line
from fstore.classifiers.svm_options import SvmOptions
from fstore.cli.classifiers import study, train

RAW = ("ConvergenceWarning", "failed to converge")
SUMMARY = re.compile(r"^note: (\d+) of (\d+) LinearSVC fits stopped at --max-iter (\d+) ")


@pytest.fixture
def fresh_workers():
    """joblib's worker processes started inside the test, so that they write to the stderr
    capfd captures (workers kept from earlier tests write to an earlier stderr)."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)
    yield
    get_reusable_executor().shutdown(wait=True)


@pytest.fixture
def hard():
    """Overlapping classes, unscaled: LinearSVC needs far more than 2 iterations."""
    return gaussian_classes(n_train=25, n_test=15, dim=10, separation=1.5, seed=4)


def test_grid_search_counts_every_fit_and_prints_nothing(hard, fresh_workers, capfd):
    options = SvmOptions(
        C=(0.01, 1.0, 100.0, 1000.0), cv=3, scale="none", max_iter=2, solver="primal"
    )
    search = grid_search(hard.train.X, hard.train.y, options)
    assert search.fits == 4 * 3 + 1
    assert search.unconverged == 13  # two iterations are too few for every fit
    err = capfd.readouterr().err
    assert not any(word in err for word in RAW), err


def test_converged_fits_are_not_counted(hard):
    options = SvmOptions(C=(0.01, 0.1), cv=3, scale="l2", max_iter=10_000, solver="primal")
    run = train_svm(hard, options)
    assert run.fits[0].details["convergence_warnings"] == 0
    assert run.fits[0].details["fits"] == 7
    assert unconverged_line(run) is None


def test_counts_equal_a_sequential_count(hard):
    """The workers' count equals LinearSVC's own n_iter_ >= max_iter on the same folds."""
    from fstore.classifiers.primal import svm_pipeline
    from fstore.classifiers.search import folds

    options = SvmOptions(C=(0.001, 1.0, 1000.0), cv=3, scale="none", max_iter=30, solver="primal")
    X, y = hard.train.X, hard.train.y
    expected = 0
    for C in options.C:
        for train_rows, _ in folds(options).split(X, y):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                svc = svm_pipeline(options, C).fit(X[train_rows], y[train_rows])["svc"]
            expected += int(svc.n_iter_ >= options.max_iter)
    search = grid_search(X, y, options)
    refit = int(search.model["svc"].n_iter_ >= options.max_iter)
    assert search.unconverged == expected + refit
    assert 0 < search.unconverged < search.fits  # some converge, some do not


def test_train_svm_says_it_once(hard, tmp_path, fresh_workers, capfd):
    store = write_feature_sets(tmp_path / "hard.h5", [hard])
    args = "svm --C 0.01,1,100,1000 --cv 3 --scale none --max-iter 2 --solver primal".split()
    result = CliRunner().invoke(train, [*args, "--store", str(store), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, result.stderr
    assert SUMMARY.match(notes[0]).groups() == ("13", "13", "2")
    assert "raise --max-iter" in notes[0] and "--scale l2" in notes[0]
    assert not any(word in result.stderr for word in RAW)
    err = capfd.readouterr().err  # the worker processes' own stderr
    assert not any(word in err for word in RAW), err


def test_study_layers_says_it_once(hard, tmp_path, fresh_workers, capfd):
    from dataclasses import replace

    store = write_feature_sets(tmp_path / "hard.h5", [replace(hard, layer="fc6"), hard])
    args = "layers --C 1,1000 --cv 3 --scale none --max-iter 2 --solver primal".split()
    result = CliRunner().invoke(study, [*args, "--store", str(store), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1, result.stderr
    assert SUMMARY.match(notes[0]).groups() == ("14", "14", "2")  # 2 layers x (2 x 3 + 1)
    err = capfd.readouterr().err
    assert not any(word in err for word in RAW), err


def test_summary_line():
    assert summary(0, 36, 1000, "l2") is None
    line = summary(5, 36, 1000, "l2")
    assert line.startswith("note: 5 of 36 LinearSVC fits stopped at --max-iter 1000")
    assert "--scale l2" not in line and "\n" not in line
    assert "--scale l2" in summary(5, 36, 1000, "standard")
