"""``fstore inspect``: VGG16's layers with their shapes, parameters and multiply-adds."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fstore.export.layers import DEFAULT_INPUT_SIZE, LAYERS
from fstore.export.weights_loader import load_vgg16
from fstore.runtime.weights_source import WeightsSource


@dataclass(frozen=True)
class LayerRow:
    name: str
    module: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


@dataclass(frozen=True)
class Inspection:
    """The layer table and its totals.

    Attributes:
        rows: one per addressable layer.
        total_params: all parameters; counted from real weights when ``weights_origin`` is set.
        fc_params_share: fraction of the parameters in fc6, fc7 and fc8.
        total_macs: multiply-adds per image of ``input_size`` pixels square.
    """

    rows: tuple[LayerRow, ...]
    total_params: int
    fc_params_share: float
    total_macs: int
    input_size: int
    weights_origin: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def inspect_vgg16(
    weights: WeightsSource | None = None, input_size: int = DEFAULT_INPUT_SIZE
) -> Inspection:
    """The layer table; with ``weights``, parameter counts are taken from the loaded tensors."""
    counts = {layer.name: layer.params for layer in LAYERS}
    origin = None
    if weights is not None:
        model, _ = load_vgg16(weights)
        modules = dict(model.named_modules())
        for layer in LAYERS:
            if layer.param_module is not None:
                counts[layer.name] = sum(
                    p.numel() for p in modules[layer.param_module].parameters()
                )
        origin = weights.origin
    rows = tuple(
        LayerRow(
            layer.name,
            layer.module,
            layer.output_shape(input_size),
            counts[layer.name],
            layer.macs(input_size),
        )
        for layer in LAYERS
    )
    total = sum(r.params for r in rows)
    fc = sum(r.params for r, layer in zip(rows, LAYERS) if layer.kind in ("fc", "logits"))
    return Inspection(rows, total, fc / total, sum(r.macs for r in rows), input_size, origin)
