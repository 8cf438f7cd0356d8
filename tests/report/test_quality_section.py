"""The report's Data quality stage on generated images with planted byte copies: its numbers
are the quality library's own, the SVM's accuracy with and without the leaked test images is
the svm stage's classifier scored both ways, thumbnails are embedded, and ``exclude_leaks``
takes the leaked rows out of the sections' features. Only the svm and quality stages run."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import SMALL

from fstore.report.config import ReportConfig
from fstore.report.run import STAGES, build_report_store, make_context, run_stage
from fstore.runtime.weights_source import WeightsSource

LEAKED = ("test/coast/copy.jpg", "test/forest/copy.jpg")
# a store build and the svm and quality stages, twice: minutes on the shared 2-core machine
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quality_run(split_folder: Path, tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("torch")
    pytest.importorskip("cleanlab")
    root = tmp_path_factory.mktemp("quality-report")
    images = root / "images"
    shutil.copytree(split_folder, images)
    shutil.copy(images / "train/coast/img_000.jpg", images / "test/coast/copy.jpg")
    shutil.copy(images / "train/kitchen/img_001.jpg", images / "test/forest/copy.jpg")
    config = ReportConfig(
        images=images, out=root / "out", weights=WeightsSource("random", seed=0),
        input_size=SMALL.crop, layers=("fc7",), C=(1.0,), cv=2, views=(), precisions=(),
    )  # fmt: skip
    build_report_store(config)
    return config, _stages(config)


def _stages(config: ReportConfig):
    ctx = make_context(config)
    for i, stage in enumerate(STAGES):
        if stage[0] in ("svm", "quality"):
            ctx.results[stage[0]] = run_stage(ctx, i + 1, stage)
    return ctx


def test_quality_numbers_are_the_librarys_own(quality_run):
    from fstore.quality.audit import audit
    from fstore.quality.duplicates import duplicates

    config, ctx = quality_run
    s = ctx.results["quality"]
    dup = duplicates(config.store_path, "fc7")
    assert s["duplicates"]["exact_pairs"] == 2
    assert s["duplicates"]["exact_labels"] == {"leak": 1, "leak, conflict": 1}
    assert s["duplicates"]["clusters"] == len(dup.clusters)
    assert s["leaked_test_keys"] == list(LEAKED) == dup.leaked_test_keys()
    leak = s["leak"]
    assert leak["leaked"] == 2 and leak["test_images"] == 14
    # with every test image, the figure is the svm stage's own test accuracy
    assert leak["accuracy_all"] == ctx.results["svm"]["svm"]["accuracy_mean"]
    assert leak["accuracy_all"] * 14 == pytest.approx(
        leak["accuracy_without"] * 12 + leak["accuracy_on_leaked"] * 2
    )
    errors = s["label_errors"]
    reference = audit(config.store_path, "fc7")
    assert errors["keys"] == [i.key for i in reference.issues]
    for row in errors["top"]:
        assert row["example"].split("/")[1] == row["suggested"]


def test_quality_section_embeds_its_thumbnails(quality_run):
    from fstore.report import sections
    from fstore.report.render import _html_block

    _, ctx = quality_run
    s = ctx.results["quality"]
    blocks = sections.quality(s)
    page = "".join(_html_block(b) for b in blocks)
    shown = len(s["shown_clusters"]) + len(s["label_errors"]["top"]) + 1  # + the map
    assert shown >= 3
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == shown
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    assert "test/forest/copy.jpg" in page and "with them" in page
    text = " ".join(b[1] for b in blocks if b[0] == "p")
    assert "2 of the 14 test images have a copy in the training split" in text


def test_exclude_leaks_takes_the_leaked_rows_out_of_the_sections(quality_run):
    config, ctx = quality_run
    cut = _stages(replace(config, exclude_leaks=True))
    assert set(LEAKED) == set(cut.excluded)
    assert not np.isin(cut.features.keys, LEAKED).any()
    assert len(cut.features.keys) == len(ctx.features.keys) - 2
    svm = cut.results["svm"]["svm"]
    assert svm["fits"][0]["n_test"] == 12
    leak = cut.results["quality"]["leak"]
    assert leak["excluded_from_sections"]
    assert svm["accuracy_mean"] == leak["accuracy_without"]
    assert leak["accuracy_all"] == ctx.results["quality"]["leak"]["accuracy_all"]
