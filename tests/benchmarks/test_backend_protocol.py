"""Every backend the benchmark times implements the one ``Backend`` Protocol, for real."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fstore.runtime.backend import Backend

torch = pytest.importorskip("torch")


def _specs(bench_model, eager_state: Path, bench_prep) -> dict:
    from fstore.benchmarks.pipeline import NOOP_OUTPUT
    from fstore.benchmarks.systems import BackendSpec

    common = {"provider": "cpu", "threads": 1, "preprocessing": bench_prep}
    return {
        "eager-fp32": BackendSpec("eager", eager_state, ("pool5",), variant="fp32", **common),
        "eager-best": BackendSpec("eager", eager_state, ("pool5",), variant="bf16-cl", **common),
        "ort-fp32": BackendSpec("ort", bench_model.path, ("pool5",), variant="fp32", **common),
        "noop": BackendSpec("noop", None, (NOOP_OUTPUT,), **common),
    }


@pytest.mark.parametrize(
    "system",
    [  # the eager systems load VGG16 in torch: seconds
        pytest.param("eager-fp32", marks=pytest.mark.slow),
        pytest.param("eager-best", marks=pytest.mark.slow),
        "ort-fp32",
        "noop",
    ],
)
def test_each_backend_implements_the_protocol(
    system: str, bench_model, eager_state: Path, bench_prep, uint8_batch: np.ndarray
) -> None:
    backend = _specs(bench_model, eager_state, bench_prep)[system].make()
    assert isinstance(backend, Backend)
    backend.load()  # idempotent: loading again keeps the loaded model
    out = backend.run(uint8_batch)
    assert backend.synchronize() is None
    assert len(out) == 1
    (value,) = out.values()
    assert isinstance(value, np.ndarray) and value.shape[0] == len(uint8_batch)
    assert np.isfinite(value).all() and value.std() > 0
    described = backend.describe()
    assert {"name", "provider", "precision"} <= set(described)
    assert described["provider"] == "cpu"


def test_a_backend_without_the_protocol_is_told_apart() -> None:
    class RunOnly:
        def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
            return {}

    assert not isinstance(RunOnly(), Backend)


def test_eager_fp32_and_onnx_runtime_agree_on_uint8_batches(
    bench_model, eager_state: Path, bench_prep, uint8_batch: np.ndarray
) -> None:
    from fstore.export.onnx_export import VERIFY_TOLERANCE
    from fstore.export.result import relative_error

    specs = _specs(bench_model, eager_state, bench_prep)
    eager = specs["eager-fp32"].make().run(uint8_batch)["pool5"]
    ort = specs["ort-fp32"].make().run(uint8_batch)["pool5"]
    assert relative_error(eager, ort) <= VERIFY_TOLERANCE


def test_the_no_op_backend_returns_each_channels_mean(bench_prep, uint8_batch: np.ndarray) -> None:
    from fstore.benchmarks.pipeline import NOOP_OUTPUT, MeanPoolBackend

    got = MeanPoolBackend("cpu", bench_prep).run(uint8_batch)[NOOP_OUTPUT]
    pixels = uint8_batch.astype(np.float64) / 255.0
    expected = (pixels.mean(axis=(1, 2)) - np.array(bench_prep.mean)) / np.array(bench_prep.std)
    np.testing.assert_allclose(got, expected, atol=1e-5)
