"""``fstore inspect``: a network's layers with their shapes, parameters and multiply-adds.

VGG16's come from its layer table; any other architecture's from tracing it
(:func:`fstore.export.graph_layers.layer_table`): every fx node, named by its module path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from fstore.export.architectures import Architecture, default_preprocessing, resolve_arch
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
        fc_params_share: fraction of the parameters in fully connected layers (VGG16's fc6,
            fc7 and fc8).
        total_macs: multiply-adds per image of ``input_size`` pixels square.
        arch: the architecture.
        aliases: ``pooled``, ``logits``, ``stageN`` … and the layer each names.
    """

    rows: tuple[LayerRow, ...]
    total_params: int
    fc_params_share: float
    total_macs: int
    input_size: int
    weights_origin: str | None = None
    arch: str = "vgg16"
    aliases: dict[str, str] = field(default_factory=dict)

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


def inspect_arch(
    arch: str | Architecture = "vgg16",
    weights: WeightsSource | None = None,
    input_size: int | None = None,
) -> Inspection:
    """Every addressable layer of ``arch`` at ``input_size`` (default: its weights' crop);
    with ``weights``, the network holds those weights (random, seed 0, otherwise)."""
    arch = resolve_arch(arch)
    size = input_size or default_preprocessing(arch).crop
    if arch.family == "vgg16":
        return inspect_vgg16(weights, size)
    from fstore.export.graph_layers import layer_table
    from fstore.export.weights_loader import load_model

    model, _ = load_model(arch, weights or WeightsSource("random", seed=0))
    table = layer_table(arch, model, size)
    rows = tuple(
        LayerRow(lay.name, lay.kind, lay.shape, lay.params, lay.macs) for lay in table.layers
    )
    linear = sum(row.params for row in rows if row.module == "Linear")
    total = table.total_params
    return Inspection(
        rows,
        total,
        linear / total if total else 0.0,
        sum(row.macs for row in rows),
        input_size=size,
        weights_origin=weights.origin if weights else None,
        arch=arch.name,
        aliases=dict(table.aliases),
    )
