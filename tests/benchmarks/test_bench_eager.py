"""Eager backends and the eager end-to-end loop against fstore's ONNX Runtime path; machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fstore.benchmarks import machine
from fstore.export.calibration import decode_inputs
from fstore.export.onnx_export import VERIFY_TOLERANCE
from fstore.export.precision import compare_features
from fstore.export.result import relative_error
from fstore.fsutil import peak_rss_mib

torch = pytest.importorskip("torch")


@pytest.fixture
def batch(uint8_batch):
    return uint8_batch


def test_model_inputs_are_the_readers_uint8_batches(batch: np.ndarray, bench_prep) -> None:
    assert batch.dtype == np.uint8 and batch.shape == (4, bench_prep.crop, bench_prep.crop, 3)
    assert batch.std() > 0


def test_normalising_in_torch_equals_fstore_preprocessing(
    bench_folder: Path, batch: np.ndarray, bench_prep
) -> None:
    from fstore.benchmarks.eager import normalise

    reference = decode_inputs(sorted(bench_folder.rglob("*.jpg"))[:4], bench_prep)
    np.testing.assert_allclose(normalise(batch, bench_prep, "cpu").numpy(), reference, atol=1e-5)


def test_eager_fp32_matches_onnx_runtime_and_every_variant_is_close(
    bench_model, eager_state: Path, batch: np.ndarray, bench_prep
) -> None:
    from fstore.benchmarks.eager import CANDIDATES, VARIANTS, EagerBackend
    from fstore.benchmarks.systems import BackendSpec

    ort = BackendSpec("ort", bench_model.path, ("pool5",), "cpu", preprocessing=bench_prep)
    reference = ort.make().run(batch)
    fp32 = EagerBackend(eager_state, ("pool5",), preprocessing=bench_prep)
    fp32.load()
    got = fp32.run(batch)
    assert set(got) == {"pool5"} and got["pool5"].dtype == np.float32
    assert relative_error(got["pool5"], reference["pool5"]) <= VERIFY_TOLERANCE
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for name in CANDIDATES["cpu"]:
        variant = EagerBackend(eager_state, ("pool5",), variant=name, preprocessing=bench_prep)
        variant.load()
        weight = variant.module.features[0].weight
        how = VARIANTS[name]
        assert weight.is_contiguous(memory_format=torch.channels_last) == how.channels_last
        assert weight.dtype == (torch.float32 if how.autocast else dtypes[how.dtype])
        out = variant.run(batch)["pool5"]
        assert out.dtype == np.float32
        assert compare_features(reference, {"pool5": out})["pool5"]["mean_cosine"] > 0.99, name
        assert variant.describe()["precision"] == how.dtype


def test_state_dict_loading_equals_the_in_memory_model(
    full_vgg16, eager_state: Path, batch: np.ndarray
) -> None:
    from fstore.benchmarks.eager import EagerBackend

    direct = EagerBackend.from_model(full_vgg16, ("pool5",)).run(batch)
    loaded = EagerBackend(eager_state, ("pool5",))
    loaded.load()
    loaded.load()  # idempotent
    np.testing.assert_array_equal(direct["pool5"], loaded.run(batch)["pool5"])


def test_unknown_eager_variant_is_a_user_error(eager_state: Path) -> None:
    from fstore.benchmarks.eager import EagerBackend
    from fstore.errors import FstoreError

    with pytest.raises(FstoreError, match="unknown eager variant 'fast'"):
        EagerBackend(eager_state, ("pool5",), variant="fast")


def test_eager_store_writes_the_features_build_writes(
    bench_model, eager_state: Path, bench_folder: Path, bench_prep, tmp_path: Path
) -> None:
    from fstore.benchmarks.eager import EagerBackend, LoaderOptions, eager_store, read_eager_store
    from fstore.pipeline.config import BuildConfig
    from fstore.pipeline.model import build_store
    from fstore.store import load_features

    paths = sorted(bench_folder.rglob("*.jpg"))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    keys = [p.relative_to(bench_folder).as_posix() for p in paths] + ["bad.jpg"]
    report = eager_store(
        paths + [tmp_path / "bad.jpg"],
        keys,
        tmp_path / "eager.h5",
        EagerBackend(eager_state, ("pool5",), preprocessing=bench_prep),
        LoaderOptions(bench_prep, batch_size=5, workers=1),
    )
    assert (report.images, report.errors) == (18, 1)
    assert report.seconds >= report.inference_seconds > 0
    got_keys, feats = read_eager_store(tmp_path / "eager.h5")
    assert got_keys == keys[:-1] and feats["pool5"].shape == (18, 512)

    build_store(
        BuildConfig(
            store=tmp_path / "s.h5",
            images=bench_folder,
            model=bench_model.path,
            provider="cpu",
            batch_size=4,
            decode="exact",  # torchvision's path, as the eager store reads
        ),
        progress=False,
    )
    fs = load_features(tmp_path / "s.h5", "pool5")
    assert list(fs.keys) == got_keys
    assert relative_error(feats["pool5"], fs.X) <= VERIFY_TOLERANCE


def test_torchvision_transform_equals_fstore_preprocessing(bench_folder: Path, bench_prep) -> None:
    from PIL import Image

    from fstore.benchmarks.eager import image_transform
    from fstore.images.preprocess import preprocess

    path = sorted(bench_folder.rglob("*.jpg"))[0]
    with Image.open(path) as image:
        ours = preprocess(image.convert("RGB"), bench_prep)
        theirs = image_transform(bench_prep)(image.convert("RGB")).numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_machine_facts_come_from_the_libraries() -> None:
    import os

    import psutil

    assert machine.usable_cores() == len(os.sched_getaffinity(0))
    assert machine._memory_total_gib() == pytest.approx(psutil.virtual_memory().total / 2**30)
    assert set(machine.cpu_flags()) <= set(machine._FLAGS_OF_INTEREST)
    assert 0 < machine.rss_mib() <= peak_rss_mib() + 1


def test_machine_info_names_cpu_cores_and_versions() -> None:
    info = machine.machine_info()
    assert info["cpu"] and info["usable_cores"] >= 1 and info["cores"] >= info["usable_cores"]
    assert info["versions"]["onnxruntime"] != "absent"
    assert "CPUExecutionProvider" in info["onnxruntime_providers"]


def test_memory_of_a_fresh_process() -> None:
    use = machine.measure_in_subprocess(np.ones, (64, 1024, 1024), np.uint8)  # 64 MiB written
    assert 60 <= use["extra_mib"] <= 200
    assert use["peak_mib"] >= use["start_mib"] + use["extra_mib"] - 1
    with pytest.raises(RuntimeError, match="ValueError"):
        machine.measure_in_subprocess(np.ones, (-1,))
