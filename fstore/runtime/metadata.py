"""The provenance fstore writes into an exported model's ONNX ``metadata_props``, and reads back.

Reading needs only ``onnx`` (and not the weights), so ``build`` and ``predict`` run without torch.
A cached model has a copy of its fstore metadata beside it (:func:`props_path`), so reading it
does not parse hundreds of megabytes of weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fstore.errors import ModelError
from fstore.fsutil import atomic_write_bytes
from fstore.images.preprocess import Preprocessing

PREFIX = "fstore."
#: The numeric precisions of an exported model; ``fp32`` is the reference the others derive from.
PRECISIONS = ("fp32", "int8", "fp16")


@dataclass(frozen=True)
class ModelInfo:
    """What an fstore-exported model says about itself.

    Attributes:
        layers: output names, in forward order.
        shapes: per output, the shape of one image's output (batch excluded).
        preprocessing: how images must be prepared for it.
        weights_origin, weights_sha256: where its weights came from.
        precision: ``fp32``, ``fp16`` or ``int8``.
        opset: ONNX opset.
        classes: the 1000 ImageNet class names when ``logits`` or ``prob`` is an output.
        fstore_version: version of fstore that exported it.
        arch: the architecture (``vgg16``, ``resnet50``, ``timm:NAME``), or ``onnx`` for an
            ONNX file fstore annotated.
    """

    layers: tuple[str, ...]
    shapes: dict[str, tuple[int, ...]]
    preprocessing: Preprocessing
    weights_origin: str
    weights_sha256: str
    precision: str
    opset: int
    classes: tuple[str, ...] | None
    fstore_version: str
    arch: str = "vgg16"

    def to_props(self) -> dict[str, str]:
        props = {
            "layers": json.dumps(list(self.layers)),
            "shapes": json.dumps({k: list(v) for k, v in self.shapes.items()}),
            "preprocessing": self.preprocessing.to_json(),
            "weights_origin": self.weights_origin,
            "weights_sha256": self.weights_sha256,
            "precision": self.precision,
            "opset": str(self.opset),
            "fstore_version": self.fstore_version,
            "arch": self.arch,
        }
        if self.classes is not None:
            props["classes"] = json.dumps(list(self.classes))
        return {PREFIX + k: v for k, v in props.items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelInfo | None:
        """Parse metadata written by fstore; ``None`` for a model fstore did not export."""
        if PREFIX + "layers" not in props:
            return None
        p = {k[len(PREFIX) :]: v for k, v in props.items() if k.startswith(PREFIX)}
        classes = tuple(json.loads(p["classes"])) if "classes" in p else None
        return cls(
            layers=tuple(json.loads(p["layers"])),
            shapes={k: tuple(v) for k, v in json.loads(p["shapes"]).items()},
            preprocessing=Preprocessing.from_json(p["preprocessing"]),
            weights_origin=p["weights_origin"],
            weights_sha256=p["weights_sha256"],
            precision=p["precision"],
            opset=int(p["opset"]),
            classes=classes,
            fstore_version=p["fstore_version"],
            arch=p.get("arch", "vgg16"),
        )


def props_path(model: Path) -> Path:
    """Where the copy of a model's fstore metadata lives: ``<model>.meta.json``."""
    return Path(model).with_suffix(".meta.json")


def read_metadata_props(path: Path) -> dict[str, str]:
    """An ONNX file's ``metadata_props``, read without its weights."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf and OS errors alike
        raise ModelError(f"cannot read ONNX model {path}: {exc}") from None
    return {p.key: p.value for p in model.metadata_props}


def read_props(path: Path) -> dict[str, str]:
    """The model's fstore props: from the sidecar when it is at least as new, else the file."""
    sidecar = props_path(path)
    if sidecar.is_file() and sidecar.stat().st_mtime_ns >= Path(path).stat().st_mtime_ns:
        return json.loads(sidecar.read_text())
    return read_metadata_props(path)


def write_props(path: Path, props: dict[str, str]) -> None:
    """Write the sidecar of ``path`` with the ``fstore.`` entries of ``props``."""
    ours = {k: v for k, v in props.items() if k.startswith(PREFIX)}
    atomic_write_bytes(props_path(path), json.dumps(ours, sort_keys=True).encode())


def read_model_info(path: Path) -> ModelInfo:
    """Read fstore's metadata from an ONNX file without loading its weights into a session."""
    info = ModelInfo.from_props(read_props(path))
    if info is None:
        raise ModelError(f"{path} was not exported by fstore (no fstore metadata)")
    return info
