"""Providers: TensorRT only when its libraries load, an opt-in with a one-line error, no banner."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from fstore.errors import ProviderError
from fstore.runtime import providers
from fstore.runtime.session import captured_output

TRT = "TensorrtExecutionProvider"


@pytest.fixture
def ort_lists_tensorrt(monkeypatch):
    """What an onnxruntime-gpu wheel says on a machine without TensorRT's libraries."""
    listed = [TRT, "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(providers, "available_providers", lambda: listed)
    monkeypatch.setattr(providers, "_loads", lambda names: False)
    providers.tensorrt_libraries_load.cache_clear()
    yield
    providers.tensorrt_libraries_load.cache_clear()


def test_tensorrt_absent_is_a_one_line_error(ort_lists_tensorrt):
    assert not providers.has_provider("tensorrt")
    with pytest.raises(ProviderError) as err:
        providers.resolve_provider("tensorrt")
    assert "\n" not in str(err.value) and "--provider cuda" in str(err.value)
    assert providers.resolve_provider("cuda") == "cuda"  # CUDA itself is still offered


def test_cuda_sessions_never_list_tensorrt(ort_lists_tensorrt):
    names = [p[0] if isinstance(p, tuple) else p for p in providers.provider_list("cuda")]
    assert names == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    options = dict(providers.provider_list("cuda")[0][1])
    assert options["prefer_nhwc"] == "1" and options["cudnn_conv_algo_search"] == "EXHAUSTIVE"


def test_tensorrt_is_fp16_with_an_engine_cache_under_fstore_cache(isolated_cache):
    (name, options), cuda, cpu = providers.provider_list("tensorrt")
    assert name == TRT and cuda[0] == "CUDAExecutionProvider" and cpu == "CPUExecutionProvider"
    assert options["trt_fp16_enable"] == "1" and options["trt_engine_cache_enable"] == "1"
    assert options["trt_engine_cache_path"].startswith(str(isolated_cache))


def test_libraries_really_absent_here_are_detected():
    """This machine has no TensorRT: the check loads libraries rather than trusting ORT's list."""
    providers.tensorrt_libraries_load.cache_clear()
    assert providers._loads(("libnvinfer-does-not-exist.so.1",)) is False
    if not providers._loads(providers.TENSORRT_LIBRARIES[0]):
        assert providers.tensorrt_libraries_load() is False


def test_native_output_during_session_creation_is_caught(capfd):
    with captured_output() as caught:
        os.write(2, b"*************** EP Error ***************\n")
        os.write(1, b"Falling back to ['CPUExecutionProvider']\n")
    out, err = capfd.readouterr()
    assert "EP Error" not in out + err and "Falling back" not in out + err
    assert "EP Error" in caught[0]


def test_no_banner_reaches_the_user_with_tensorrt_listed_but_absent(store_model):
    """A whole process (fds 1 and 2 captured): ``--provider tensorrt`` and ``cuda`` attempts."""
    script = textwrap.dedent(f"""
        import onnxruntime as ort
        from fstore.runtime import providers
        from fstore.runtime.session import OrtBackend
        from fstore.errors import FstoreError
        ort.get_available_providers = lambda: [
            "{TRT}", "CUDAExecutionProvider", "CPUExecutionProvider"]
        for provider in ("tensorrt", "cuda"):
            try:
                OrtBackend.open({str(store_model)!r}, provider)
                print("LOADED", provider)
            except FstoreError as exc:
                print("ERROR", provider, exc)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "EP Error" not in text and "Falling back" not in text and "Traceback" not in text
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("ERROR tensorrt TensorRT was asked for")
    # no CUDA here: ORT would silently run on the CPU; fstore says so instead
    assert lines[1].startswith("ERROR cuda ONNX Runtime could not start CUDAExecutionProvider")


def test_session_threads_sleep_rather_than_spin_and_use_the_usable_cores(monkeypatch):
    """Spinning intra-op threads would take the cores the decode threads need."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2})
    options = providers.session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 3
    assert providers.session_options(threads=1).intra_op_num_threads == 1
