"""``fstore build --engine ray --workers-write``: the option reaches ``RayOptions``, and on a
local Ray the actors write the shard files while the command's process writes only the index."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_image_folder, write_noop_model

from fstore.cli import cli
from fstore.cli.build import build
from fstore.pipeline import write
from fstore.pipeline.config import BuildConfig
from fstore.store import load_features, sidecar
from fstore.store.verify import verify


def config_of(*args: str):
    """The ``BuildConfig`` that ``fstore build ARGS`` would run."""
    params = build.make_context("build", list(args)).params
    skipped = ("images", "quiet", "as_json", "size", "resize", "mean", "std")
    options = {k: v for k, v in params.items() if k not in skipped}
    return BuildConfig.from_options(images=params["images"], preprocessing=None, **options)


def test_workers_write_reaches_ray_options_and_help_says_when():
    help_text = CliRunner().invoke(cli, ["build", "--help"]).output
    assert "--workers-write" in help_text and "shares" in help_text
    config = config_of("imgs", "--engine", "ray", "--workers-write")
    assert config.engine == "ray" and config.ray.workers_write is True
    assert config_of("imgs", "--engine", "ray").ray.workers_write is False
    refused = CliRunner().invoke(cli, ["build", "imgs", "--workers-write", "--model", "m.onnx"])
    assert refused.exit_code != 0
    assert (
        refused.output.strip() == "Error: --workers-write needs --engine ray (Ray actors "
        "write the shard files)"
    )


@pytest.mark.slow
def test_workers_write_on_local_ray_through_the_cli(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    images = tmp_path / "images"
    make_image_folder(images, {"a": 6, "b": 5}, size=(40, 36))
    model = write_noop_model(tmp_path / "noop.onnx")
    common = ["--model", str(model), "--size", "32", "--provider", "cpu", "--batch-size", "2",
              "--shard-size", "4", "--quiet"]  # fmt: skip
    runner = CliRunner()
    local = runner.invoke(cli, ["build", str(images), "--store", str(tmp_path / "l.h5"), *common])
    assert local.exit_code == 0, local.output
    written_here = []
    real = write.write_shard
    monkeypatch.setattr(
        write, "write_shard", lambda *a, **k: written_here.append(a) or real(*a, **k)
    )
    ray_store = tmp_path / "r.h5"
    result = runner.invoke(cli, ["build", str(images), "--store", str(ray_store), *common,
                                 "--engine", "ray", "--workers-write", "--num-workers", "2",
                                 "--cpus-per-worker", "0.5"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert written_here == []  # the actors wrote every shard file; this process only the catalog
    assert len(list((sidecar(ray_store) / "shards").glob("g*.h5"))) == 3
    x, y = load_features(tmp_path / "l.h5"), load_features(ray_store)
    assert list(x.keys) == list(y.keys) and len(x.keys) == 11
    np.testing.assert_allclose(x.X, y.X, rtol=1e-6, atol=1e-7)
    assert verify(ray_store).ok
