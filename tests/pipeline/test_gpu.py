"""The CUDA path: one-line error without CUDA; on a GPU, IO-bound runs equal the CPU's."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from fstore.errors import ProviderError
from fstore.pipeline.model import build_store
from fstore.runtime.providers import resolve_provider
from fstore.runtime.session import OrtBackend
from fstore.store import load_features

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_auto_picks_what_is_there():
    assert resolve_provider("auto") == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_provider("cpu") == "cpu"


@pytest.mark.skipif(HAS_CUDA, reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_a_clear_error(config_for, image_folder):
    with pytest.raises(ProviderError, match="--provider cpu"):
        resolve_provider("cuda")
    with pytest.raises(ProviderError):
        build_store(config_for(image_folder, provider="cuda"))


@pytest.mark.gpu
def test_cuda_io_binding_equals_cpu(store_model):
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    cpu = OrtBackend.open(store_model, "cpu").run(x)
    gpu = OrtBackend.open(store_model, "cuda")
    assert gpu.provider == "cuda"
    assert gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    out = gpu.run(x)
    for name, ref in cpu.items():
        scale = np.abs(ref).max()
        assert np.abs(out[name] - ref).max() / scale <= 1e-3, name


@pytest.mark.gpu
def test_cuda_build_equals_cpu_build(config_for, tmp_path, image_folder):
    build_store(config_for(image_folder, store=tmp_path / "cpu.h5", provider="cpu"))
    report = build_store(
        config_for(image_folder, store=tmp_path / "gpu.h5", provider="cuda", batch_size=5)
    )  # 12 images: the last batch is padded to 5
    assert report.provider == "cuda"
    cpu, gpu = load_features(tmp_path / "cpu.h5", "fc7"), load_features(tmp_path / "gpu.h5", "fc7")
    assert list(cpu.keys) == list(gpu.keys)
    cos = (cpu.X * gpu.X).sum(1) / (np.linalg.norm(cpu.X, axis=1) * np.linalg.norm(gpu.X, axis=1))
    assert cos.min() >= 0.9999
