"""The content-addressed cache of exported models.

A model is found by what determines its bytes: the architecture, the weights' sha256, the
layers, the opset, the precision and the preprocessing (recorded in the model's metadata; its
crop is the input size; its input is uint8 pixels, see :mod:`fstore.runtime.prefix`).
``aliases.json`` maps an architecture and a weights source that is cheap to name
(``resnet50|random:seed=0``, a file path with its size and mtime) to the weights' sha256, so
a command whose model is cached never needs torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fstore.fsutil import atomic_write_bytes
from fstore.images.preprocess import Preprocessing
from fstore.runtime.cache import cache_dir
from fstore.runtime.prefix import PREFIX_VERSION


def model_key(
    arch: str,
    weights_sha256: str,
    layers: tuple[str, ...],
    opset: int,
    precision: str,
    preprocessing: Preprocessing,
) -> str:
    """The cache key of an exported model."""
    text = json.dumps(
        {
            "arch": arch,
            "weights": weights_sha256,
            "layers": list(layers),
            "opset": opset,
            "precision": precision,
            "preprocessing": preprocessing.fingerprint_fields(),
            "uint8_input": PREFIX_VERSION,  # models before the uint8 prefix are not reused
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def model_path(key: str, arch: str = "vgg16") -> Path:
    """The cached model's file, named by its architecture and key."""
    slug = arch.replace(":", "-").replace("/", "-")
    return cache_dir() / "models" / f"{slug}-{key}.onnx"


def alias_key(arch: str, weights_alias: str) -> str:
    """The alias of ``arch`` with weights named ``weights_alias``."""
    return f"{arch}|{weights_alias}"


def _aliases_path() -> Path:
    return cache_dir() / "aliases.json"


def lookup_alias(alias: str) -> str | None:
    """The weights' sha256 recorded for ``alias``, if any."""
    try:
        return json.loads(_aliases_path().read_text()).get(alias)
    except (OSError, ValueError):
        return None


def record_alias(alias: str, weights_sha256: str) -> None:
    path = _aliases_path()
    try:
        aliases = json.loads(path.read_text())
    except (OSError, ValueError):
        aliases = {}
    aliases[alias] = weights_sha256
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(aliases, indent=1, sort_keys=True).encode())
