"""Test-time views stored as layers (``--views``): geometry, means, resume, errors.

References: torchvision's own ``Resize``/``CenterCrop``/``FiveCrop``/``hflip`` on the PIL image,
run through the same ONNX model by hand, averaged with NumPy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import SMALL, make_image_folder
from PIL import Image

from fstore.cli import cli
from fstore.errors import FstoreError, StoreError
from fstore.images.decode import decode_source
from fstore.images.preprocess import Preprocessing
from fstore.images.views import parse_views, plan_views, split_layers, view_crops, view_layers
from fstore.pipeline import run as run_stage
from fstore.pipeline.model import build_store
from fstore.pipeline.run import time_views
from fstore.store import load_features

LAYERS = ("pool5", "fc7")
VIEWS = ("flip", "crops5", "scales:32+44", "crops5-max")
#: Same pixels through the same model in another row of another batch: ONNX Runtime's CPU
#: kernels give each row the same arithmetic, up to float32 reordering in the batched GEMMs.
FEATURE_RTOL, FEATURE_ATOL = 1e-5, 1e-5


def torchvision_views(path: Path, name: str, spec: Preprocessing = SMALL) -> list[np.ndarray]:
    """The uint8 crops of view set ``name`` for one image, by torchvision on the PIL image."""
    pytest.importorskip("torchvision")
    from torchvision import transforms
    from torchvision.transforms import functional as F

    image, name = Image.open(path).convert("RGB"), name.removesuffix("-max")
    plain = transforms.Compose([transforms.Resize(spec.resize), transforms.CenterCrop(spec.crop)])
    if name == "flip":
        crops = [plain(image), F.hflip(plain(image))]
    elif name == "crops5":
        crops = list(transforms.FiveCrop(spec.crop)(transforms.Resize(spec.resize)(image)))
    else:
        sizes = [int(s) for s in name.partition(":")[2].split("+")]
        crops = [transforms.CenterCrop(spec.crop)(transforms.Resize(s)(image)) for s in sizes]
    return [np.asarray(c) for c in crops]


def by_hand(model: Path, paths: list[Path], name: str, layers: tuple[str, ...] = LAYERS,
            spec: Preprocessing = SMALL) -> dict[str, np.ndarray]:  # fmt: skip
    """Each layer's mean (max for ``-max``) over view set ``name``: every view run alone
    through the model."""
    from fstore.runtime.session import OrtBackend

    backend = OrtBackend.open(model, "cpu", outputs=layers, preprocessing=spec)
    means = {layer: [] for layer in layers}
    for path in paths:
        outputs = [backend.run(crop[None]) for crop in torchvision_views(path, name, spec)]
        for layer in layers:
            per_view = np.stack([o[layer].reshape(-1) for o in outputs])
            pooled = per_view.max(axis=0) if name.endswith("-max") else per_view.mean(axis=0)
            means[layer].append(pooled)
    return {layer: np.stack(rows) for layer, rows in means.items()}


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    make_image_folder(root, {"a": 3, "b": 3})
    Image.open(root / "a" / "img_000.jpg").save(root / "a" / "png.png")  # Pillow's own route
    return root


def test_parse_views_checks_and_spells_names_one_way():
    assert parse_views("flip, crops5,scales:0240+320,flip") == ("flip", "crops5", "scales:240+320")
    assert parse_views("scales:0240+320-max,flip-max") == ("scales:240+320-max", "flip-max")
    assert parse_views(("crops5",)) == ("crops5",)
    assert parse_views("") == ()
    for bad in ("flop", "scales:", "scales:a+b", "crops10", "flip-min"):
        with pytest.raises(FstoreError) as err:
            parse_views(bad)
        assert "\n" not in str(err.value)


def test_layers_and_view_sets_round_trip():
    stored = view_layers(LAYERS, ("flip", "scales:240+320"))
    assert stored == (
        "pool5", "fc7", "pool5@flip", "fc7@flip", "pool5@scales:240+320", "fc7@scales:240+320"
    )  # fmt: skip
    assert split_layers(stored) == (LAYERS, ("flip", "scales:240+320"))


def test_shared_views_are_cut_once():
    plan = plan_views(("flip", "crops5", "scales:37+44"), SMALL)
    assert len(plan.views) == 1 + 1 + 4 + 1  # plain, mirror, 4 corners, short side 44
    assert dict(plan.sets) == {"flip": (0, 1), "crops5": (2, 3, 4, 5, 0), "scales:37+44": (0, 6)}
    with pytest.raises(FstoreError, match="smaller than the model's input"):
        plan_views(("scales:20+44",), SMALL)


@pytest.mark.parametrize("name", VIEWS)
@pytest.mark.parametrize("image", ["a/img_000.jpg", "a/png.png"])
def test_view_crops_are_torchvisions_crops(images, name, image):
    plan = plan_views((name,), SMALL)
    data = (images / image).read_bytes()
    crops = view_crops(decode_source(data, SMALL, "exact"), plan.views, SMALL)
    rows = dict(plan.sets)[name]
    expected = torchvision_views(images / image, name)
    assert len(rows) == len(expected)
    for row, reference in zip(rows, expected):
        np.testing.assert_array_equal(crops[row], reference)


@pytest.mark.parametrize("name", VIEWS)
@pytest.mark.parametrize("size", [(48, 40), (200, 160)])  # OpenCV and box; DCT-scaled by 1/2
def test_fast_view_crops_are_close_to_torchvisions(tmp_path, name, size):
    """The tolerance of fast decoding's plain crop (tests/images/test_decode.py): cosine of
    the uint8 crops >= 0.995, mean absolute difference <= 4 grey levels."""
    path = make_image_folder(tmp_path, {"a": 1}, size=size)[0]
    plan = plan_views((name,), SMALL)
    crops = view_crops(decode_source(path.read_bytes(), SMALL, "fast", plan.largest), plan.views,
                       SMALL)  # fmt: skip
    for row, reference in zip(dict(plan.sets)[name], torchvision_views(path, name)):
        fast, exact = crops[row].astype(float).ravel(), reference.astype(float).ravel()
        assert fast @ exact / (np.linalg.norm(fast) * np.linalg.norm(exact)) >= 0.995
        assert np.abs(fast - exact).mean() <= 4


def symmetric_image(path: Path) -> None:
    """A left-right symmetric picture whose plain crop is centred to the pixel: 48x40 is
    resized to 44x37 and cropped at left 6, so both margins are 6."""
    rng = np.random.default_rng(3)
    half = rng.integers(0, 256, size=(40, 24, 3), dtype=np.uint8)
    Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1)).save(path)


def test_flip_of_a_symmetric_image_equals_the_plain_view(config_for, tmp_path):
    root = tmp_path / "sym"
    (root / "a").mkdir(parents=True)
    symmetric_image(root / "a" / "mirror.png")
    build_store(config_for(root, views=("flip",), decode="exact"))
    for layer in LAYERS:
        plain = load_features(tmp_path / "s.h5", layer).X
        flip = load_features(tmp_path / "s.h5", f"{layer}@flip").X
        np.testing.assert_allclose(flip, plain, rtol=FEATURE_RTOL, atol=FEATURE_ATOL)


@pytest.mark.parametrize("decode", ["exact", "fast"])
def test_crops5_of_a_constant_image_equals_the_plain_view(config_for, tmp_path, decode):
    root = tmp_path / "flat"
    (root / "a").mkdir(parents=True)
    Image.new("RGB", (60, 45), (90, 140, 30)).save(root / "a" / "flat.jpg", quality=95)
    build_store(config_for(root, views=("crops5",), decode=decode))
    for layer in LAYERS:
        plain = load_features(tmp_path / "s.h5", layer).X
        crops = load_features(tmp_path / "s.h5", f"{layer}@crops5").X
        np.testing.assert_allclose(crops, plain, rtol=FEATURE_RTOL, atol=FEATURE_ATOL)


@pytest.mark.slow
def test_view_layers_are_the_mean_over_views_run_by_hand(config_for, store_model, tmp_path, images):
    report = build_store(config_for(images, views=VIEWS, decode="exact"))
    assert report.views == VIEWS
    assert report.layers == view_layers(LAYERS, VIEWS)
    assert set(report.view_costs) == {"plain", *VIEWS}
    assert len(plan_views(VIEWS, SMALL).views) == 8  # crops5-max reuses crops5's views
    assert report.view_costs["crops5"]["views"] == 5
    for name in VIEWS:
        keys = load_features(tmp_path / "s.h5", "fc7").keys
        expected = by_hand(store_model, [images / k for k in keys], name)
        for layer in LAYERS:
            fs = load_features(tmp_path / "s.h5", f"{layer}@{name}")
            assert list(fs.keys) == list(keys)
            np.testing.assert_allclose(fs.X, expected[layer], rtol=FEATURE_RTOL, atol=FEATURE_ATOL)


@pytest.mark.slow
def test_plain_layers_of_a_store_with_views_equal_a_plain_build(config_for, tmp_path, images):
    build_store(config_for(images, store=tmp_path / "plain.h5", decode="fast"))
    build_store(config_for(images, store=tmp_path / "views.h5", decode="fast", views=("flip",)))
    for layer in LAYERS:
        plain = load_features(tmp_path / "plain.h5", layer).X
        views = load_features(tmp_path / "views.h5", layer).X
        np.testing.assert_allclose(views, plain, rtol=FEATURE_RTOL, atol=FEATURE_ATOL)


@pytest.mark.slow
def test_interrupted_build_with_views_resumes_to_the_same_features(
    config_for, tmp_path, images, monkeypatch
):
    reference = tmp_path / "reference.h5"
    build_store(config_for(images, store=reference, views=VIEWS, batch_size=2, shard_size=2))
    add, calls = run_stage.ShardAssembler.add, []

    def add_then_stop(self, batch, result=None):
        calls.append(batch.shard)
        if len(calls) == 3:  # two shards (one batch of two each) are handed over
            raise KeyboardInterrupt
        return add(self, batch, result)

    monkeypatch.setattr(run_stage.ShardAssembler, "add", add_then_stop)
    with pytest.raises(KeyboardInterrupt):
        build_store(config_for(images, views=VIEWS, batch_size=2, shard_size=2))
    monkeypatch.setattr(run_stage.ShardAssembler, "add", add)
    # a bare resume: the store says which layers and views it holds
    report = build_store(config_for(images, layers=None, batch_size=2, shard_size=2))
    assert report.images_done_before == 4 and report.images_computed == 3
    assert report.layers == view_layers(LAYERS, VIEWS)
    for layer in report.layers:
        done, ref = load_features(tmp_path / "s.h5", layer), load_features(reference, layer)
        assert list(done.keys) == list(ref.keys)
        np.testing.assert_allclose(done.X, ref.X, rtol=FEATURE_RTOL, atol=FEATURE_ATOL)


@pytest.mark.slow
def test_views_a_store_was_not_built_with_are_refused_like_layers(config_for, tmp_path, images):
    build_store(config_for(images, views=("flip",)))
    with pytest.raises(StoreError, match="build another store"):
        build_store(config_for(images, views=("flip", "crops5")))
    plain = tmp_path / "plain.h5"
    build_store(config_for(images, store=plain))
    with pytest.raises(StoreError, match="build another store"):
        build_store(config_for(images, store=plain, views=("flip",)))


@pytest.mark.slow
def test_ray_worker_computes_the_view_layers_of_a_local_build(config_for, store_model, images):
    """The Ray actor's class, called in this process: the same rows as the local engine."""
    from fstore.pipeline.ray_engine import ShardWorker
    from fstore.store.layout import read_manifest

    build_store(config_for(images, views=("crops5",), decode="exact"))
    store = config_for(images).store
    manifest = read_manifest(store)
    keys = list(load_features(store, "fc7").keys)
    worker = ShardWorker(
        store_model.read_bytes(), LAYERS, "cpu", 1, preprocessing=SMALL.to_json(),
        batch_size=4, decode_workers=1,
        dims={k: int(np.prod(v)) for k, v in manifest.shapes.items()}, decode="exact",
        views=("crops5",),
    )  # fmt: skip
    _, rows, _ = worker.compute("shard", [(key, str(images / key)) for key in keys])
    for layer in view_layers(LAYERS, ("crops5",)):
        expected = load_features(store, layer).X
        np.testing.assert_allclose(rows.features[layer], expected, rtol=FEATURE_RTOL,
                                   atol=FEATURE_ATOL)  # fmt: skip


def test_unknown_view_is_one_line_and_exit_1(tmp_path, images):
    result = CliRunner().invoke(
        cli, ["build", str(images), "--store", str(tmp_path / "s.h5"), "--views", "flip,spin"]
    )
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "unknown view set 'spin'" in result.output
    assert not (tmp_path / "s.h5").exists()


SHARED = Path(
    os.environ.get("FSTORE_SHARED") or Path(__file__).resolve().parents[2].parent / "shared"
)
LITE1_MODEL = SHARED / "models" / "efficientnet_lite1.onnx"
SCENE15 = SHARED / "data" / "scene15"
LITE1 = Preprocessing(resize=274, crop=240)  # ImageNet's mean and std, as the model README says
#: EfficientNet-Lite1's pooled/logits reach about 10 and 20; one run of 8 views against eight
#: runs of one differ by float32 reordering in ONNX Runtime's batched kernels.
LITE1_RTOL, LITE1_ATOL = 1e-4, 1e-4


@pytest.mark.real
@pytest.mark.skipif(not (LITE1_MODEL.is_file() and SCENE15.is_dir()), reason="needs ../shared")
def test_lite1_view_layers_through_the_cli_are_the_mean_over_views_by_hand(tmp_path):
    root = tmp_path / "scene"
    for folder in sorted((SCENE15 / "train").iterdir())[:2]:
        (root / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.jpg"))[:2]:
            (root / folder.name / image.name).symlink_to(image)
    store, views = tmp_path / "lite1.h5", "flip,crops5,scales:240+320"
    result = CliRunner().invoke(cli, [
        "build", str(root), "--store", str(store), "--model", str(LITE1_MODEL), "--size", "240",
        "--resize", "274", "--layer", "pooled,logits", "--views", views, "--decode", "exact",
        "--quiet",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "crops5 5 views" in result.output
    keys = load_features(store, "pooled").keys
    for name in parse_views(views):
        expected = by_hand(LITE1_MODEL, [root / k for k in keys], name, ("pooled", "logits"), LITE1)
        for layer in ("pooled", "logits"):
            got = load_features(store, f"{layer}@{name}").X
            np.testing.assert_allclose(got, expected[layer], rtol=LITE1_RTOL, atol=LITE1_ATOL)


@pytest.mark.slow
def test_features_outside_a_store_name_view_layers_too(config_for, store_model, tmp_path, images):
    """``classify`` computes a classifier's layers with ``extract_features``; a view layer
    comes out as the build stored it."""
    from fstore.pipeline.run import extract_features

    build_store(config_for(images, views=("crops5",), decode="exact"))
    keys = load_features(tmp_path / "s.h5", "fc7").keys
    features, good, _ = extract_features(
        [images / k for k in keys], store_model, ("fc7@crops5", "pool5"), preprocessing=SMALL
    )
    assert list(features) == ["fc7@crops5", "pool5"] and good == [images / k for k in keys]
    for layer in features:
        stored = load_features(tmp_path / "s.h5", layer).X
        np.testing.assert_allclose(features[layer], stored, rtol=FEATURE_RTOL, atol=FEATURE_ATOL)


def test_each_view_set_is_timed_alone_on_its_own_views():
    """The cost line's figures come from running each set's views by themselves."""
    plan = plan_views(("flip", "crops5"), SMALL)
    pixels = np.arange(3 * len(plan.views), dtype=np.uint8)[:, None, None, None]
    pixels = np.broadcast_to(pixels, (3 * len(plan.views), SMALL.crop, SMALL.crop, 3))
    pixels = pixels.reshape(3, len(plan.views), SMALL.crop, SMALL.crop, 3)
    seen = []

    class Recorder:
        def run(self, batch):
            seen.append(batch[:, 0, 0, 0].tolist())
            return {}

    costs = time_views(Recorder(), pixels, plan, repeats=1)
    assert list(costs) == ["plain", "flip", "crops5"]
    assert [c["views"] for c in costs.values()] == [1, 2, 5]
    for (name, rows), ran in zip((("plain", (0,)), *plan.sets), seen, strict=True):
        assert ran == [int(v) for v in pixels[:, list(rows), 0, 0, 0].ravel()]
        assert costs[name]["images_per_second"] == pytest.approx(
            3 / costs[name]["inference_seconds"]
        )
