"""The improvements a store's layers allow, and their figures: each row is ``train_svm`` on the
row's combined layers with the row's scaling, on fabricated stores holding view layers."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_features import gaussian_classes, write_feature_sets

from fstore.classifiers.combine import layer_names, load_layers
from fstore.classifiers.improvements import (
    Improvement,
    improvements_for,
    train_improvement,
    try_improvements,
)
from fstore.classifiers.protocol import SplitProtocol
from fstore.classifiers.svm import train_svm
from fstore.classifiers.svm_options import SvmOptions
from fstore.errors import ClassifierError

SCALES = "scales:240+320"
OPTIONS = SvmOptions(C=(0.1, 1.0), cv=3)


def names(rows: list[Improvement]) -> list[str]:
    return [r.name for r in rows]


def test_rows_for_a_model_with_views_of_its_outputs():
    held = ["pooled", "logits", "pooled@flip", "logits@flip", f"pooled@{SCALES}",
            f"logits@{SCALES}"]  # fmt: skip
    rows = improvements_for(held, "pooled")
    assert names(rows) == [
        "pooled",
        "pooled, power",
        "pooled + logits",
        "pooled + logits, power",
        "pooled@flip",
        "pooled@flip, power",
        "pooled@flip + logits@flip, power",
        f"pooled@{SCALES}",
        f"pooled@{SCALES}, power",
        f"pooled@{SCALES} + logits@{SCALES}, power",
        f"pooled@flip + logits@flip + pooled@{SCALES} + logits@{SCALES}, power",
    ]
    assert rows[0].reason.startswith("The plain SVM on one layer")
    assert all(r.reason for r in rows) and rows[4].views == ("flip",) and rows[0].views == ()
    assert rows[7].reason != rows[4].reason and "Herranz" in rows[7].reason


def test_rows_for_vgg16_name_each_fc_layer_over_its_views_and_both_together():
    held = ["fc6", "fc7", "logits", "fc6@flip", "fc7@flip", "logits@flip"]
    got = names(improvements_for(held, "fc6"))
    assert got[0] == "fc6"
    assert {"fc6@flip", "fc7@flip", "fc6 + fc7"} <= set(got)
    assert "fc6@flip + logits@flip, power" in got
    assert got[-1] == "fc6@flip + logits@flip, power"  # one view set: no row of every set
    # Without class scores or views: the baseline and its power scaling alone.
    assert names(improvements_for(["fc7"], "fc7")) == ["fc7", "fc7, power"]
    maxed = improvements_for(["fc7", "fc7@crops5-max"], "fc7")
    assert maxed[2].name == "fc7@crops5-max" and "maximum over the views" in maxed[2].reason
    with pytest.raises(ClassifierError, match="no layer fc8"):
        improvements_for(["fc7"], "fc8")


@pytest.fixture
def view_store(tmp_path):
    """``pooled``, ``logits`` and their means over two view sets, one named with a ``+``."""
    sets = [
        gaussian_classes(n_train=12, n_test=6, dim=dim, separation=sep, seed=seed, layer=layer)
        for layer, dim, sep, seed in (
            ("pooled", 16, 1.2, 0),
            ("logits", 10, 0.8, 1),
            ("pooled@flip", 16, 1.5, 2),
            ("logits@flip", 10, 1.0, 3),
            (f"pooled@{SCALES}", 16, 1.4, 4),
            (f"logits@{SCALES}", 10, 0.9, 5),
        )
    ]
    return write_feature_sets(tmp_path / "views.h5", sets)


def unit(X):
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_view_layers_with_a_plus_in_their_name_combine_as_hstack_of_unit_parts(view_store):
    from fstore.store import load_features, store_layers

    held = store_layers(view_store)
    pooled, logits = f"pooled@{SCALES}", f"logits@{SCALES}"
    assert layer_names(f"{pooled},{logits}", held) == [pooled, logits]
    assert layer_names(f"{pooled}+{logits}", held) == [pooled, logits]
    assert layer_names("pooled+logits@flip", held) == ["pooled", "logits@flip"]
    both = load_layers(view_store, f"{pooled}+{logits}")
    expected = np.hstack([unit(load_features(view_store, n).X) for n in (pooled, logits)])
    np.testing.assert_allclose(both.X, expected, rtol=1e-6, atol=1e-7)
    assert load_layers(view_store, pooled).layer == pooled  # one layer, as stored


@pytest.mark.slow
def test_each_row_is_train_svm_on_its_layers_with_its_scaling(view_store):
    from fstore.store import store_layers

    protocol = SplitProtocol(splits=3, per_class=6, seed=0)
    rows = improvements_for(store_layers(view_store), "pooled")
    result = try_improvements(view_store, rows, OPTIONS, protocol)
    data = result.to_dict()
    assert [r["name"] for r in data["rows"]] == names(rows)
    base = data["rows"][0]["accuracy"]
    for row in data["rows"]:
        fs = load_layers(view_store, ",".join(row["layers"]))
        options = SvmOptions(C=OPTIONS.C, cv=OPTIONS.cv, scale=row["scale"])
        standard, splits = train_svm(fs, options), train_svm(fs, options, protocol)
        assert row["accuracy"] == standard.accuracy_mean
        assert row["best_C"] == [f.details["best_C"] for f in standard.fits]
        assert row["splits_mean"] == splits.accuracy_mean
        assert row["splits_std"] == splits.accuracy_std
        assert row["splits_accuracies"] == splits.accuracies.tolist()
        assert row["change_points"] == pytest.approx(100 * (row["accuracy"] - base))
    best = max(data["rows"], key=lambda r: r["accuracy"])
    assert data["best"] == result.best.improvement.name == best["name"]


def test_a_row_trains_with_its_own_scaling_and_no_splits_without_a_protocol(view_store):
    plain = train_improvement(view_store, Improvement(("pooled",)), OPTIONS)
    power = train_improvement(view_store, Improvement(("pooled",), "power"), OPTIONS)
    assert plain.splits is None and power.standard.options.scale == "power"
    assert plain.standard.options.scale == "l2"
    assert power.standard.fits[0].model["scale"]["sqrt"] is not None


def test_figure_draws_every_row_with_its_error_bar(view_store, tmp_path):
    from fstore.classifiers.outputs import improvements_figure

    rows = [Improvement(("pooled",)), Improvement(("pooled@flip",), "power")]
    result = try_improvements(view_store, rows, OPTIONS, SplitProtocol(2, 6, 0))
    png, data = improvements_figure(tmp_path / "chart.png", result)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import json

    drawn = json.loads(data.read_text())
    assert [r["name"] for r in drawn["rows"]] == ["pooled", "pooled@flip, power"]
    assert drawn["rows"][1]["splits_std"] == result.rows[1].splits.accuracy_std
    with pytest.raises(ClassifierError, match="no improvement"):
        try_improvements(view_store, [], OPTIONS)
