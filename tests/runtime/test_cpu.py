"""FSTORE_CPU=avx2 makes every CPU-dependent choice as on an AVX2-only x86-64 CPU."""

import platform

import pytest

from fstore.errors import FstoreError
from fstore.export.int8 import int8_format
from fstore.runtime import cpu
from fstore.runtime.cpu import CPU_ENV, cpu_flags, has_vnni

VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_int8\n"


@pytest.fixture
def x86(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")


def test_native_reads_the_flags(x86, monkeypatch):
    monkeypatch.setenv(CPU_ENV, "native")
    assert has_vnni(VNNI) is True
    assert int8_format(VNNI) == "u8s8"


def test_avx2_hides_vnni_amx_and_avx512(x86, monkeypatch):
    monkeypatch.setattr(cpu, "_this_cpu", lambda: VNNI)
    monkeypatch.setenv(CPU_ENV, "native")
    assert has_vnni() is True and int8_format() == "u8s8"
    monkeypatch.setenv(CPU_ENV, "avx2")
    assert {"avx", "avx2", "fma"} <= cpu_flags()
    assert not any(f.startswith(("avx512", "amx")) for f in cpu_flags())
    assert has_vnni() is False
    assert int8_format() == "u8u8"
    assert int8_format(VNNI) == "u8s8"  # a text given is read as it is


def test_avx2_is_honoured_on_this_machine_whatever_it_has(x86, monkeypatch):
    monkeypatch.setenv(CPU_ENV, "avx2")
    assert int8_format() == "u8u8"


def test_an_unknown_mode_is_one_line(monkeypatch):
    monkeypatch.setenv(CPU_ENV, "sse9")
    with pytest.raises(FstoreError, match="FSTORE_CPU"):
        cpu_flags(VNNI)


def test_avx2_leaves_bf16_out_of_the_eager_candidates(monkeypatch):
    from fstore.benchmarks.eager import CANDIDATES, candidates

    monkeypatch.setenv(CPU_ENV, "native")
    assert candidates("cpu") == CANDIDATES["cpu"]
    monkeypatch.setenv(CPU_ENV, "avx2")
    assert candidates("cpu") == ("fp32", "fp32-cl")
    assert candidates("cuda") == CANDIDATES["cuda"]
