"""The provenance fstore writes into an exported model's ONNX ``metadata_props``, and reads back.

Reading needs only ONNX Runtime, so ``build`` and ``predict`` run without torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fstore.images.preprocess import Preprocessing

PREFIX = "fstore."


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
        )
