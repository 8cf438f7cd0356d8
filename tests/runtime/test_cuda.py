"""The CUDA path (``gpu`` marker: skipped without CUDAExecutionProvider).

Written and kept without a GPU in this session: they run where onnxruntime-gpu and a GPU are
(see ../shared/notes/GPU.md for running them on an H100).
"""

from __future__ import annotations

import numpy as np
import pytest

from fstore.export.precision import cosine_rows
from fstore.runtime.session import OrtBackend

pytestmark = pytest.mark.gpu
pytest.importorskip("torch")


def crops(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def test_cuda_features_equal_cpu_features(store_model):
    x = crops(6)
    cpu = OrtBackend.open(store_model, "cpu").run(x)
    gpu = OrtBackend.open(store_model, "cuda")
    assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    out = gpu.run(x)
    for name, ref in cpu.items():
        assert out[name].shape == ref.shape
        assert cosine_rows(out[name], ref).min() >= 0.9999, name


def test_double_buffered_batches_equal_plain_runs(store_model):
    """Uneven batches through pinned buffers and two IO bindings: padding cut, order kept."""
    gpu = OrtBackend.open(store_model, "cuda", batch_size=4)
    batches = [crops(4, 1), crops(3, 2), crops(4, 3), crops(1, 4), crops(9, 5)]
    streamed = list(gpu.run_batches(iter(batches)))
    assert gpu._runner.batch_size == 4 and any(gpu._runner.pinned)
    plain = OrtBackend.open(store_model, "cuda")
    for batch, got in zip(batches, streamed, strict=True):
        for name in gpu.outputs:
            want = plain.session.run([name], {plain.input_name: batch})[0]
            assert got[name].shape == want.shape
            np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5)
    gpu.close()


def test_fp16_on_cuda_keeps_its_fidelity(store_model, small_preprocessing):
    from fstore.export.onnx_export import export
    from fstore.export.precision import AUTO_MIN_COSINE, fidelity_holds
    from fstore.runtime.metadata import read_model_info
    from fstore.runtime.weights_source import WeightsSource

    info = read_model_info(store_model)
    fp16 = export(
        info.layers,
        WeightsSource.from_origin(info.weights_origin),
        preprocessing=small_preprocessing,
        precision="fp16",  # not auto: whether fp16 is fast enough at this size is the GPU's
        provider="cuda",
    )
    assert fp16.info.precision == "fp16" and fidelity_holds(fp16)
    x = crops(8, 7)
    ref = OrtBackend.open(store_model, "cpu").run(x)
    got = OrtBackend.open(fp16.path, "cuda").run(x)
    for name in ref:
        assert cosine_rows(got[name], ref[name]).mean() >= AUTO_MIN_COSINE, name
