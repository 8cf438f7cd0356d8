"""The int8 format follows the CPU: U8S8 only where int8 dot products cannot saturate."""

import platform

import pytest

from fstore.export.int8 import int8_format
from fstore.export.precision import variant_tag

AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
VNNI = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512_vnni\n"


@pytest.fixture
def x86(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")


def test_avx2_without_vnni_quantizes_weights_unsigned(x86):
    assert int8_format(AVX2) == "u8u8"
    assert int8_format(AVX2.replace("avx2", "avx2 avx_vnni")) == "u8s8"
    assert int8_format(VNNI) == "u8s8"


def test_other_architectures_keep_u8s8(monkeypatch):
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert int8_format(AVX2) == "u8s8"


def test_the_cache_key_of_an_int8_model_names_its_format(x86, monkeypatch):
    import fstore.export.precision as precision

    monkeypatch.setattr(precision, "int8_format", lambda: "u8u8")
    u8u8 = variant_tag("int8")
    monkeypatch.setattr(precision, "int8_format", lambda: "u8s8")
    assert variant_tag("int8") != u8u8
    assert u8u8.startswith("int8-u8u8-percentile-")
