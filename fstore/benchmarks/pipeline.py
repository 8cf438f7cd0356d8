"""The pipeline view's no-op models: everything but the model, timed.

The input side (read → decode → batch → write) is measured by replacing the model with one
that does almost nothing: a global average pool of the normalised input, three numbers per
image. ``fstore build`` runs it as an ONNX file given to ``--model``
(:func:`write_noop_model`); the eager ``DataLoader`` runs the same pooling in torch
(:class:`MeanPoolBackend`). What is left is what each pipeline costs around a model.
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


def write_noop_model(path: Path) -> Path:
    """Save :func:`noop_model` to ``path``; returns ``path``."""
    path.write_bytes(noop_model().SerializeToString())
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
