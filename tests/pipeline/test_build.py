"""Building stores: features against eager torchvision, layouts, bad inputs, increments."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import SMALL, make_image_folder, random_image
from PIL import Image

from fstore.errors import DatasetError, FstoreError, OutputPathError, StoreError, UnknownLayerError
from fstore.images.discover import SplitSpec
from fstore.pipeline.model import build_store
from fstore.runtime.weights_source import WeightsSource
from fstore.store import load_features, store_info, write_arrays


def eager_features(paths: list[Path], layers: tuple[str, ...]) -> dict[str, np.ndarray]:
    torch = pytest.importorskip("torch")
    from torchvision import transforms

    from fstore.export.layers import parse_layers
    from fstore.export.onnx_export import truncated_vgg16
    from fstore.export.weights_loader import load_vgg16

    model, _ = load_vgg16(WeightsSource("random", seed=0))
    module = truncated_vgg16(model, parse_layers(layers))
    tf = transforms.Compose(
        [
            transforms.Resize(SMALL.resize),
            transforms.CenterCrop(SMALL.crop),
            transforms.ToTensor(),
            transforms.Normalize(SMALL.mean, SMALL.std),
        ]
    )
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        out = module(x)
    return {name: o.reshape(len(paths), -1).numpy() for name, o in zip(layers, out)}


@pytest.mark.slow
def test_store_features_equal_eager_torchvision(config_for, tmp_path, image_folder):
    report = build_store(config_for(image_folder))
    assert report.images_computed == 12 and report.errors == 0
    for layer in ("pool5", "fc7"):
        fs = load_features(tmp_path / "s.h5", layer)
        paths = [image_folder / k for k in fs.keys]
        ref = eager_features(paths, ("pool5", "fc7"))[layer]
        cos = (fs.X * ref).sum(1) / (np.linalg.norm(fs.X, axis=1) * np.linalg.norm(ref, axis=1))
        assert fs.X.shape == (12, 512 if layer == "pool5" else 4096)
        assert cos.min() >= 0.9999
        assert list(fs.keys) == sorted(fs.keys)
        assert fs.classes == ("alpha", "beta", "gamma")
        assert [fs.classes[y] for y in fs.y] == [k.split("/")[0] for k in fs.keys]


def test_plain_h5py_reads_the_store(config_for, tmp_path, image_folder):
    build_store(config_for(image_folder))
    os.chdir(tmp_path.parent)  # virtual datasets resolve shards relative to the index file
    with h5py.File(tmp_path / "s.h5", "r") as f:
        fc7 = f["features/fc7"][()]
        assert fc7.shape == (12, 4096) and not np.isnan(fc7).any()
        assert list(f["features/pool5"].attrs["shape"]) == [512, 1, 1]
        assert f["keys"].asstr()[0] == "alpha/img_000.jpg"
        assert set(f["split"].asstr()[()]) == {""}
    np.testing.assert_array_equal(fc7, load_features(tmp_path / "s.h5", "fc7").X)


@pytest.mark.slow
def test_split_layout_and_random_split(config_for, tmp_path):
    root = tmp_path / "scene"
    make_image_folder(root, {"a": 5, "b": 5}, prefix="train")
    make_image_folder(root, {"a": 3, "b": 3}, prefix="test", seed=1)
    build_store(config_for(root))
    fs = load_features(tmp_path / "s.h5", "fc7")
    assert (fs.split == "train").sum() == 10 and (fs.split == "test").sum() == 6
    assert all(k.startswith(s + "/") for k, s in zip(fs.keys, fs.split))

    build_store(config_for(root, tmp_path / "r.h5", split=SplitSpec("random", 2, seed=7)))
    fr = load_features(tmp_path / "r.h5", "fc7")
    for c in range(2):
        assert ((fr.split == "train") & (fr.y == c)).sum() == 2
        assert ((fr.split == "test") & (fr.y == c)).sum() == 6
    again = tmp_path / "r2.h5"
    build_store(config_for(root, again, split=SplitSpec("random", 2, seed=7)))
    np.testing.assert_array_equal(load_features(again, "fc7").split, fr.split)


def bad_files(root: Path) -> dict[str, str]:
    """Write one file of each kind of bad input; returns key -> expected reason fragment."""
    folder = root / "alpha"
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not a picture")
    good = folder / "img_000.jpg"
    data = good.read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    Image.new("1", (20000, 20000)).save(folder / "bomb.png")
    (folder / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    exif = folder / "exif.jpg"
    random_image(np.random.default_rng(5), (40, 30)).save(
        exif, "JPEG", exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff"
    )
    return {
        "alpha/empty.jpg": "empty file",
        "alpha/text.jpg": "not an image",
        "alpha/truncated.jpg": "cannot decode",
        "alpha/photo.heic": "unsupported format",
        "alpha/bomb.png": "decompression bomb",
        "alpha/dangling.jpg": "unreadable",
        "alpha/exif.jpg": "corrupt EXIF",
    }


@pytest.mark.slow
def test_bad_inputs_are_recorded_and_skipped(config_for, tmp_path, image_folder):
    expected = bad_files(image_folder)
    report = build_store(config_for(image_folder))
    assert report.errors == 6
    info = store_info(tmp_path / "s.h5")
    reasons = {e["key"]: e for e in info.errors}
    assert set(reasons) == set(expected)
    for key, fragment in expected.items():
        assert fragment in reasons[key]["reason"], (key, reasons[key])
    assert reasons["alpha/exif.jpg"]["stored"] and not reasons["alpha/empty.jpg"]["stored"]
    fs = load_features(tmp_path / "s.h5", "fc7")
    assert len(fs.keys) == 13 and "alpha/exif.jpg" in set(fs.keys)
    report = build_store(config_for(image_folder))  # nothing changed: bad files are not retried
    assert report.images_computed == 0 and report.errors == 0


@pytest.mark.slow
def test_incremental_build_touches_only_new_and_changed(config_for, tmp_path, image_folder):
    store = tmp_path / "s.h5"
    build_store(config_for(image_folder))
    before = load_features(store, "fc7")
    make_image_folder(image_folder, {"delta": 2}, seed=9)
    changed = image_folder / "beta" / "img_001.jpg"
    random_image(np.random.default_rng(42), (60, 50)).save(changed)
    report = build_store(config_for(image_folder))
    assert report.images_computed == 3 and report.images_done_before == 11
    after = load_features(store, "fc7")
    assert len(after.keys) == 14 and after.classes == ("alpha", "beta", "delta", "gamma")
    old = dict(zip(before.keys, before.X))
    new = dict(zip(after.keys, after.X))
    assert not np.array_equal(old["beta/img_001.jpg"], new["beta/img_001.jpg"])
    for key in old:
        if key != "beta/img_001.jpg":
            np.testing.assert_array_equal(old[key], new[key])
    os.utime(image_folder / "alpha" / "img_000.jpg")  # touched, same bytes: not recomputed
    assert build_store(config_for(image_folder)).images_computed == 0


@pytest.mark.slow
def test_an_extension_adds_rows_and_rewrites_no_earlier_shard(config_for, tmp_path, image_folder):
    from fstore.store import sidecar

    store = tmp_path / "s.h5"
    build_store(config_for(image_folder))
    shards = sidecar(store) / "shards"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards.iterdir()}
    make_image_folder(image_folder, {"delta": 2}, seed=9)
    assert build_store(config_for(image_folder)).images_computed == 2
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards.iterdir()}
    assert {k: after[k] for k in before} == before and len(after) == len(before) + 1


@pytest.mark.slow
def test_a_deleted_image_is_reported_and_leaves_the_store(
    config_for, tmp_path, image_folder, capsys
):
    from fstore.cli.build import _print_build_report

    store = tmp_path / "s.h5"
    build_store(config_for(image_folder))
    n = len(load_features(store, "fc7").keys)
    (image_folder / "beta" / "img_001.jpg").unlink()
    report = build_store(config_for(image_folder))
    assert report.removed == 1 and report.images_computed == 0
    fs = load_features(store, "fc7")
    assert "beta/img_001.jpg" not in set(fs.keys) and len(fs.keys) == n - 1
    assert store_info(store).images == n - 1
    with h5py.File(store, "r") as f:
        assert len(f["keys"]) == n - 1 and "beta/img_001.jpg" not in set(f["keys"].asstr()[()])
    _print_build_report(report)
    assert "1 image no longer in the folder, dropped from the store" in capsys.readouterr().out


@pytest.mark.slow
def test_mixing_models_is_refused(config_for, tmp_path, image_folder):
    build_store(config_for(image_folder))
    with pytest.raises(StoreError, match="another model"):
        build_store(config_for(image_folder, weights=WeightsSource("random", seed=1)))
    with pytest.raises(StoreError, match="holds layers"):
        build_store(config_for(image_folder, layers=("fc7",)))


def test_external_model_with_options(config_for, tmp_path, image_folder, store_model):
    foreign = tmp_path / "foreign.onnx"
    shutil.copyfile(store_model, foreign)  # no metadata sidecar: treated by its graph alone
    report = build_store(config_for(image_folder, model=foreign, layers=None, weights=None))
    assert report.layers == ("pool5", "fc7")
    fs = load_features(tmp_path / "s.h5", "pool5")
    assert fs.shape == (512, 1, 1) and fs.provenance["preprocessing"]


@pytest.mark.parametrize("case", ["missing", "empty", "unwritable", "layer"])
def test_user_errors(config_for, tmp_path, image_folder, case):
    if case == "missing":
        with pytest.raises(DatasetError, match="does not exist"):
            build_store(config_for(tmp_path / "nope"))
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        with pytest.raises(DatasetError, match="no images"):
            build_store(config_for(tmp_path / "empty"))
    elif case == "unwritable":
        with pytest.raises(OutputPathError):
            build_store(config_for(image_folder, store=tmp_path / "no" / "such" / "s.h5"))
    else:
        with pytest.raises(UnknownLayerError, match="valid layers are"):
            build_store(config_for(image_folder, layers=("fc9",)))
    assert not (tmp_path / "s.h5").exists()


def test_float16_storage(config_for, tmp_path, image_folder):
    build_store(config_for(image_folder, dtype="float16"))
    build_store(config_for(image_folder, store=tmp_path / "f32.h5"))
    half, full = load_features(tmp_path / "s.h5", "fc7"), load_features(tmp_path / "f32.h5", "fc7")
    assert half.X.dtype == np.float32
    np.testing.assert_allclose(half.X, full.X, rtol=1e-3, atol=1e-4)


def test_write_arrays_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 5)).astype(np.float32)
    store = write_arrays(
        tmp_path / "a.h5",
        {"fc7": X},
        [f"{i}.jpg" for i in range(6)],
        ["x", "y"] * 3,
        ["train"] * 4 + ["test"] * 2,
        {"model_sha256": "abc"},
    )
    fs = load_features(store)
    np.testing.assert_array_equal(fs.X, X)
    assert list(fs.y) == [0, 1, 0, 1, 0, 1] and list(fs.split[-2:]) == ["test", "test"]
    assert fs.provenance["model_sha256"] == "abc"
    with pytest.raises(FstoreError):
        load_features(store, "pool5")


def test_int8_build_records_precision_and_stays_close(config_for, tmp_path, image_folder):
    build_store(config_for(image_folder, layers=("pool5",), store=tmp_path / "fp32.h5"))
    report = build_store(config_for(image_folder, layers=("pool5",), precision="int8"))
    assert report.images_computed == 12
    int8, fp32 = load_features(tmp_path / "s.h5", "pool5"), load_features(tmp_path / "fp32.h5")
    assert int8.provenance["precision"] == "int8" and fp32.provenance["precision"] == "fp32"
    cos = (int8.X * fp32.X).sum(1) / (
        np.linalg.norm(int8.X, axis=1) * np.linalg.norm(fp32.X, axis=1)
    )
    assert cos.mean() >= 0.99
    with pytest.raises(StoreError, match="another model"):  # precision is part of the features
        build_store(
            config_for(
                image_folder, layers=("pool5",), store=tmp_path / "fp32.h5", precision="int8"
            )
        )


def test_a_build_with_nothing_to_do_looks_at_no_image_again(
    config_for, tmp_path, image_folder, monkeypatch
):
    """Discovery keeps each image's stat; planning trusts it where it matches the store's
    record, so a no-op rebuild neither stats nor hashes an image a second time, while an image
    whose mtime changed is hashed (and, with the same bytes, kept)."""
    from fstore.images.discover import discover
    from fstore.pipeline import plan

    build_store(config_for(image_folder))
    items = discover(image_folder).items
    for item in items:
        info = item.path.stat()
        assert (item.size, item.mtime_ns) == (info.st_size, info.st_mtime_ns)
    looked: list[Path] = []
    real_stat, real_sha = plan.file_stat, plan.file_sha256

    def spy(real):  # the model file is hashed too; count only images
        return lambda p: (looked.append(p) if image_folder in p.parents else None) or real(p)

    monkeypatch.setattr(plan, "file_stat", spy(real_stat))
    monkeypatch.setattr(plan, "file_sha256", spy(real_sha))
    assert build_store(config_for(image_folder)).images_computed == 0
    assert looked == []
    touched = image_folder / "alpha" / "img_001.jpg"
    os.utime(touched, ns=(touched.stat().st_mtime_ns + 10**9,) * 2)
    assert build_store(config_for(image_folder)).images_computed == 0
    assert looked == [touched]


def test_a_model_of_another_input_size_is_one_line(tmp_path, image_folder):
    from click.testing import CliRunner
    from helpers import write_noop_model

    from fstore.cli import cli

    model = write_noop_model(tmp_path / "noop32.onnx", size=32)
    args = ["build", str(image_folder), "--store", str(tmp_path / "s.h5"), "--model", str(model),
            "--size", "24", "--provider", "cpu", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and result.exception is not None
    assert "takes 32x32 pixels, not 24: pass --size 32" in result.output


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_a_precision_for_a_given_model_builds_that_variant_and_keeps_it(
    tmp_path, image_folder, precision
):
    """A foreign file at int8/fp16: annotated with its flags, the variant derived, the store
    says so, and a resume without --precision keeps the variant."""
    from click.testing import CliRunner
    from helpers import write_noop_model

    from fstore.cli import cli
    from fstore.store.layout import read_manifest

    model = write_noop_model(tmp_path / "noop32.onnx", size=32)
    store = tmp_path / "s.h5"
    args = ["build", str(image_folder), "--store", str(store), "--model", str(model),
            "--size", "32", "--provider", "cpu", "--precision", precision, "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    provenance = read_manifest(store).provenance
    assert provenance["precision"] == precision and provenance["model_path"] != str(model)
    again = CliRunner().invoke(cli, ["build", "--store", str(store), "--provider", "cpu"])
    assert again.exit_code == 0, again.output
    assert read_manifest(store).provenance["precision"] == precision
    same = CliRunner().invoke(cli, args[:1] + args[2:])  # IMAGES left out: the store's folder
    assert same.exit_code == 0, same.output
    assert read_manifest(store).provenance["precision"] == precision


def test_a_library_build_of_a_given_model_derives_its_precision(tmp_path, image_folder):
    """build_store, handed a --model file in its config, builds the precision asked for as
    that model's variant, as the CLI does."""
    from helpers import write_noop_model

    from fstore.images.preprocess import Preprocessing
    from fstore.pipeline.config import BuildConfig
    from fstore.store.layout import read_manifest

    model = write_noop_model(tmp_path / "noop32.onnx", size=32)
    store = tmp_path / "s.h5"
    small = Preprocessing(resize=32, crop=32)
    config = BuildConfig(store=store, images=image_folder, model=model, precision="fp16",
                         preprocessing=small, provider="cpu")  # fmt: skip
    assert build_store(config).images_computed == 12
    provenance = read_manifest(store).provenance
    assert provenance["precision"] == "fp16" and provenance["model_path"] != str(model)
