"""The pipeline view's no-op models: everything but the model, timed.

The input side (read → decode → batch → write) is measured by replacing the model with one
that does almost nothing: a global average pool, three numbers per image.

* ``build-noop`` (:func:`pixels_noop_model`): the pool of the uint8 pixels as the reader hands
  them over. fstore normalises inside the model's graph (on a GPU, on the device), so this is
  fstore's input side alone.
* ``build-noop-norm`` (:func:`noop_model` through ``--model`` with ``--mean/--std``): the pool
  of the normalised input, so the graph also casts, scales and transposes every pixel: what
  the normalisation costs when the model runs on the same CPU cores as the decoders.
* the eager ``DataLoader`` normalises in its workers (torchvision's ``ToTensor`` and
  ``Normalize``) and pools in torch (:class:`MeanPoolBackend`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fstore.images.preprocess import Preprocessing

#: The no-op model's only output: the mean of each normalised channel.
NOOP_OUTPUT = "mean_rgb"
NOOP_INPUT = "input"


def noop_model(opset: int = 17):  # -> onnx.ModelProto
    """An ONNX model ``input`` float32 ``(N, 3, H, W)`` → ``mean_rgb`` ``(N, 3)``.

    It has no fstore metadata, so ``build`` treats it as a ``--model`` of the user's.
    """
    from onnx import TensorProto, checker, helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", [NOOP_INPUT], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], [NOOP_OUTPUT], axis=1),
        ],
        "fstore_noop",
        [helper.make_tensor_value_info(NOOP_INPUT, TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info(NOOP_OUTPUT, TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)  # readable by older ONNX Runtime releases
    checker.check_model(model)
    return model


def pixels_noop_model(opset: int = 17):  # -> onnx.ModelProto
    """An ONNX model ``image`` uint8 ``(N, H, W, 3)`` → ``mean_rgb`` ``(N, 3)``: the mean pixel
    value (0-255) of each channel.

    Its metadata says it takes fstore's uint8 input, with the identity as its normalisation
    (mean 0, std 1/255), so ``build`` runs it as it is.
    """
    from onnx import TensorProto, checker, helper

    from fstore.runtime.prefix import IMAGE_INPUT, PROP_INPUT, InputSpec

    graph = helper.make_graph(
        [
            helper.make_node("Transpose", [IMAGE_INPUT], ["nchw"], perm=[0, 3, 1, 2]),
            helper.make_node("Cast", ["nchw"], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], [NOOP_OUTPUT], axis=1),
        ],
        "fstore_pixels_noop",
        [helper.make_tensor_value_info(IMAGE_INPUT, TensorProto.UINT8, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info(NOOP_OUTPUT, TensorProto.FLOAT, ["N", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 9)
    identity = InputSpec(mean=(0.0, 0.0, 0.0), std=(1 / 255, 1 / 255, 1 / 255))
    entry = model.metadata_props.add()
    entry.key, entry.value = PROP_INPUT, identity.to_json()
    checker.check_model(model)
    return model


def write_noop_model(path: Path, pixels: bool = False) -> Path:
    """Save :func:`noop_model` (or :func:`pixels_noop_model`) to ``path``; returns ``path``."""
    model = pixels_noop_model() if pixels else noop_model()
    path.write_bytes(model.SerializeToString())
    return path


@dataclass
class MeanPoolBackend:
    """The same no-op in torch; implements :class:`~fstore.runtime.backend.Backend`.

    ``run`` normalises a ``uint8`` NHWC batch in torch (as the eager backends do);
    ``run_tensor`` takes the ``DataLoader``'s normalised float tensors.
    """

    device: str = "cpu"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def load(self) -> None:
        """Nothing to load: the model has no weights."""

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        from fstore.benchmarks.eager import normalise

        return self.run_tensor(normalise(batch, self.preprocessing, self.device))

    def run_tensor(self, x) -> dict[str, np.ndarray]:  # x: torch.Tensor
        import torch

        with torch.inference_mode():
            pooled = x.to(self.device, non_blocking=True).float().mean(dim=(2, 3))
        return {NOOP_OUTPUT: pooled.cpu().numpy()}

    def synchronize(self) -> None:
        from fstore.benchmarks.eager import synchronize_device

        synchronize_device(self.device)

    def describe(self) -> dict[str, str]:
        return {
            "name": "no-op (mean of each channel)",
            "provider": self.device,
            "precision": "fp32",
        }
