"""``fstore report`` end to end on small generated images: every section, numbers equal to the
library's own functions on the same store, figures embedded, stages cached and reused."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL

from fstore.report.config import ReportConfig
from fstore.report.render import section_list
from fstore.report.run import run_report
from fstore.runtime.weights_source import WeightsSource

# each builds a store or a report: seconds to minutes (pytest -m slow)
pytestmark = pytest.mark.slow

SECTIONS = (
    "Summary",
    "Network",
    "Sample predictions",
    "Activation maps",
    "Classifiers",
    "PCA",
    "Layer study",
    "Zero-shot",
    "K random splits",
    "Improvements",
    "Precision",
    "Data quality",
    "Provenance",
)
FAST = dict(
    C=(0.1, 1.0),
    cv=2,
    splits=2,
    per_class=3,
    hidden=(16,),
    samples=3,
    views=("flip",),
    cost_images=6,
)


@pytest.fixture(scope="module")
def vgg16_report(split_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("vgg16-report")
    config = ReportConfig(
        images=split_folder,
        out=out,
        weights=WeightsSource("random", seed=0),
        input_size=SMALL.crop,
        precisions=("int8",),
        **FAST,
    )
    return config, run_report(config)


def test_page_has_every_section_and_only_embedded_figures(vgg16_report):
    config, report = vgg16_report
    page = report.files["html"].read_text()
    for title in SECTIONS:
        assert f">{title}</h2>" in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 8  # predictions, maps, confusion, curves, PCA, layers, zero-shot
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    markdown = report.files["markdown"].read_text()
    for title in SECTIONS:
        assert f"## {title}" in markdown
    for link in re.findall(r"\]\((figures/[^)]+)\)", markdown):
        assert (config.out / link).is_file()
    assert json.loads(report.files["json"].read_text())["summary"] == report.data["summary"]


def test_numbers_are_the_librarys_own(vgg16_report):
    from fstore.classifiers.svm import train_svm
    from fstore.classifiers.svm_options import SvmOptions
    from fstore.classifiers.zeroshot import zeroshot_store
    from fstore.export.inspect import inspect_vgg16
    from fstore.store import load_features

    config, report = vgg16_report
    sections = report.data["sections"]
    fs = load_features(config.store_path, "fc6")
    svm = train_svm(fs, SvmOptions(C=config.C, cv=config.cv, seed=0))
    assert report.data["summary"]["svm_accuracy"] == svm.accuracy_mean
    assert sections["svm"]["svm"]["fits"][0]["details"]["cv"] == svm.fits[0].details["cv"]
    reference = inspect_vgg16(None, SMALL.crop)
    assert sections["network"]["total_params"] == reference.total_params == 138_357_544
    assert sections["network"]["fc_params_share"] == pytest.approx(reference.fc_params_share)
    zs = zeroshot_store(config.store_path)
    assert sections["zeroshot"]["accuracy"] == zs.evaluation.accuracy
    assert sections["zeroshot"]["uncovered"] == ["forest"]
    assert [r["layer"] for r in sections["layers"]["rows"]] == ["fc6", "fc7", "logits"]
    assert len(sections["splits"]["fits"]) == 2
    int8 = sections["precision"]["variants"]["int8"]
    assert int8["change_points"] == pytest.approx(100 * (int8["accuracy"] - svm.accuracy_mean))
    assert 0.9 < int8["mean_cosine"] <= 1.0
    assert len(sections["predictions"]["images"]) == 3
    assert all(len(row["top"]) == 5 for row in sections["predictions"]["images"])
    assert sections["activations"]["channels"] == 64


def test_second_run_reuses_every_stage_and_a_changed_option_only_its_stages(vgg16_report):
    config, first = vgg16_report
    again = run_report(config)
    assert all(s["cached"] for s in again.data["sections"].values())
    assert again.data["summary"] == first.data["summary"]
    changed = run_report(replace(config, C=(1.0,)))
    fresh = {name for name, s in changed.data["sections"].items() if not s["cached"]}
    assert fresh == {"svm", "layers", "splits", "improvements", "precision", "quality"}


def test_external_model_report(
    split_folder: Path, external_model: Path, tmp_path: Path, eager_conv1
):
    config = ReportConfig(
        images=split_folder,
        out=tmp_path,
        model=external_model,
        preprocessing=SMALL,
        precisions=("fp16",),
        **FAST,
    )
    report = run_report(config)
    sections = report.data["sections"]
    net = sections["network"]
    assert net["kind"] == "onnx"
    assert {o["name"]: o["size"] for o in net["outputs"]} == {"fc7": 4096, "logits": 1000}
    # Counted from the file's initializers: VGG16's 138,357,544 parameters but the 13,416 biases,
    # all zero at random init and dropped by the exporter, plus 102 values of shape constants.
    assert net["total_params"] == 138_357_544 - 13_416 + 102
    assert report.data["main_layer"] == "fc7"
    assert sections["predictions"]["available"]
    # The first Conv node's output, before the ReLU: torch's features[0] on the same input.
    maps = sections["activations"]
    assert maps["map_shape"] == [32, 32] and maps["channels"] == 64
    from fstore.inspection.featuremaps import first_conv_activations, read_image

    image = split_folder / maps["image"]
    grid = first_conv_activations(image, external_model, SMALL, workdir=tmp_path / "w")
    _, array = read_image(image, SMALL)
    np.testing.assert_allclose(grid.maps, eager_conv1(array), rtol=1e-4, atol=1e-4)
    assert sections["precision"]["variants"]["fp16"]["mean_cosine"] > 0.999
    titles = [title for _, title, _ in section_list(report.data)]
    assert tuple(titles) == SECTIONS


def test_cli_report_reuses_the_stages_and_prints_the_page(vgg16_report, split_folder: Path):
    from click.testing import CliRunner

    from fstore.cli import cli

    config, _ = vgg16_report
    result = CliRunner().invoke(cli, [
        "report", str(split_folder), "--weights", "random", "--seed", "0", "--input-size", "32",
        "--precisions", "int8", "--C", "0.1,1", "--cv", "2", "--splits", "2",
        "--per-class", "3", "--hidden", "16", "--samples", "3", "--views", "flip",
        "--cost-images", "6",
        "--out", str(config.out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(str(config.out / "report.html"))
    assert result.stderr.count(": cached (") == 12


def test_cli_report_model_without_preprocessing_is_one_line(
    external_model: Path, split_folder: Path
):
    from click.testing import CliRunner

    from fstore.cli import cli

    result = CliRunner().invoke(cli, ["report", str(split_folder), "--model", str(external_model)])
    assert result.exit_code == 1
    assert "needs its preprocessing" in result.output and "Traceback" not in result.output


def test_improvements_section_is_train_svm_on_each_rows_layers(vgg16_report):
    """VGG16's rows (fc6@flip, fc7@flip, fc6+fc7 among them) equal ``train_svm`` on the same
    store; the chart is drawn and the page shows every row."""
    import html

    from fstore.classifiers.combine import load_layers
    from fstore.classifiers.protocol import SplitProtocol
    from fstore.classifiers.svm import train_svm
    from fstore.classifiers.svm_options import SvmOptions

    config, report = vgg16_report
    section = report.data["sections"]["improvements"]
    rows = {r["name"]: r for r in section["rows"]}
    assert section["rows"][0]["name"] == "fc6"
    assert {"fc6@flip", "fc7@flip", "fc6 + fc7", "fc6, power", "fc6 + logits"} <= set(rows)
    protocol = SplitProtocol(2, 3, 0)
    assert section["protocol"] == {"splits": 2, "per_class": 3, "seed": 0}
    for row in section["rows"]:
        fs = load_layers(config.store_path, ",".join(row["layers"]))
        options = SvmOptions(C=config.C, cv=config.cv, seed=0, scale=row["scale"])
        assert row["accuracy"] == train_svm(fs, options).accuracy_mean
        splits = train_svm(fs, options, protocol)
        assert (row["splits_mean"], row["splits_std"]) == (
            splits.accuracy_mean,
            splits.accuracy_std,
        )
        assert row["build"] == section["costs"][",".join(row["views"]) or "plain"]
    assert rows["fc6"]["accuracy"] == report.data["summary"]["svm_accuracy"]
    assert section["costs"]["plain"]["images"] == section["costs"]["flip"]["images"] == 6
    assert section["costs"]["plain"]["times_plain"] == 1.0
    chart = Path(section["folder"]) / section["figures"]["chart"]
    assert chart.read_bytes()[:4] == b"\x89PNG"
    page = report.files["html"].read_text()
    assert '<h2 id="improvements">Improvements</h2>' in page
    for name in rows:
        assert f"<td>{html.escape(name)}</td>" in page
    best = report.data["summary"]["best_improvement"]
    assert best["accuracy"] == max(r["accuracy"] for r in section["rows"])
