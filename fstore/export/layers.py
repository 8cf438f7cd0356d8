"""The one table of VGG16's addressable layers.

Every other part of fstore (export, the CLI's choices, error messages, ``fstore inspect`` and the
README) reads layer names, module paths, shapes and costs from here. The numbers are derived
from VGG16's configuration ("D" in Simonyan & Zisserman, 2015) rather than typed in, and the
tests check them against torchvision's real modules.

Conventions:

* ``convX_Y`` is the output *after* its ReLU (torchvision module ``features.<relu index>``).
* ``fc6`` and ``fc7`` are likewise taken after their ReLU (``classifier.1`` / ``classifier.4``);
  dropout is the identity at inference, so nothing between the ReLU and the next layer changes.
* ``logits`` is fc8 before the softmax, ``prob`` is the softmax over the 1000 ImageNet classes.
* Multiply-adds count the convolutions and fully connected layers only (pooling, ReLU and
  softmax are comparisons or elementwise and are not counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fstore.errors import UnknownLayerError

#: VGG16's feature extractor: output channels per conv, ``"M"`` for a 2x2 max-pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, "M",
    512, 512, 512, "M",
    512, 512, 512, "M",
)  # fmt: skip

DEFAULT_INPUT_SIZE = 224
NUM_CLASSES = 1000
_FC_DIMS = (("fc6", 512 * 7 * 7, 4096), ("fc7", 4096, 4096), ("logits", 4096, NUM_CLASSES))


@dataclass(frozen=True)
class Layer:
    """One addressable VGG16 layer.

    Attributes:
        name: paper name (``conv3_2``, ``pool5``, ``fc7``...), also the ONNX output name.
        kind: ``conv``, ``pool``, ``fc``, ``logits`` or ``prob``.
        module: torchvision path of the module whose output is the layer's output.
        param_module: torchvision path of the module holding its weights, or ``None``.
        index: position in the forward pass (0 = first layer).
        in_channels: input channels (or input features for fully connected layers).
        out_channels: output channels (or output features).
    """

    name: str
    kind: str
    module: str
    param_module: str | None
    index: int
    in_channels: int
    out_channels: int

    @property
    def is_spatial(self) -> bool:
        """True for conv and pool layers, whose output is a (C, H, W) map."""
        return self.kind in ("conv", "pool")

    def output_shape(self, input_size: int = DEFAULT_INPUT_SIZE) -> tuple[int, ...]:
        """Output shape for one image of ``input_size`` x ``input_size`` pixels, batch excluded."""
        if not self.is_spatial:
            return (self.out_channels,)
        side = input_size // (2 ** _pools_up_to(self))
        return (self.out_channels, side, side)

    def dim(self, input_size: int = DEFAULT_INPUT_SIZE) -> int:
        """Number of values per image once the output is flattened."""
        n = 1
        for s in self.output_shape(input_size):
            n *= s
        return n

    @property
    def params(self) -> int:
        """Number of learned parameters (weights and biases) of this layer."""
        if self.kind == "conv":
            return self.in_channels * self.out_channels * 9 + self.out_channels
        if self.kind in ("fc", "logits"):
            return self.in_channels * self.out_channels + self.out_channels
        return 0

    def macs(self, input_size: int = DEFAULT_INPUT_SIZE) -> int:
        """Multiply-adds for one image of ``input_size`` x ``input_size`` pixels."""
        if self.kind == "conv":
            _, h, w = self.output_shape(input_size)
            return h * w * self.out_channels * self.in_channels * 9
        if self.kind in ("fc", "logits"):
            return self.in_channels * self.out_channels
        return 0


def _pools_up_to(layer: Layer) -> int:
    return sum(1 for other in LAYERS[: layer.index + 1] if other.kind == "pool")


def _build_table() -> tuple[Layer, ...]:
    layers: list[Layer] = []
    block, conv_in_block, channels, feature_idx = 1, 0, 3, 0
    for item in VGG16_CONFIG:
        if item == "M":
            layers.append(
                Layer(
                    name=f"pool{block}",
                    kind="pool",
                    module=f"features.{feature_idx}",
                    param_module=None,
                    index=len(layers),
                    in_channels=channels,
                    out_channels=channels,
                )
            )
            block, conv_in_block, feature_idx = block + 1, 0, feature_idx + 1
            continue
        conv_in_block += 1
        out = int(item)
        layers.append(
            Layer(
                name=f"conv{block}_{conv_in_block}",
                kind="conv",
                module=f"features.{feature_idx + 1}",
                param_module=f"features.{feature_idx}",
                index=len(layers),
                in_channels=channels,
                out_channels=out,
            )
        )
        channels, feature_idx = out, feature_idx + 2
    classifier_idx = 0
    for name, n_in, n_out in _FC_DIMS:
        is_logits = name == "logits"
        out_idx = classifier_idx if is_logits else classifier_idx + 1
        layers.append(
            Layer(
                name=name,
                kind="logits" if is_logits else "fc",
                module=f"classifier.{out_idx}",
                param_module=f"classifier.{classifier_idx}",
                index=len(layers),
                in_channels=n_in,
                out_channels=n_out,
            )
        )
        classifier_idx += 3  # Linear, ReLU, Dropout
    layers.append(
        Layer(
            name="prob",
            kind="prob",
            module="softmax",
            param_module=None,
            index=len(layers),
            in_channels=NUM_CLASSES,
            out_channels=NUM_CLASSES,
        )
    )
    return tuple(layers)


LAYERS: tuple[Layer, ...] = _build_table()
LAYER_NAMES: tuple[str, ...] = tuple(layer.name for layer in LAYERS)
_BY_NAME = {layer.name: layer for layer in LAYERS}


def get_layer(name: str) -> Layer:
    """Return the layer called ``name``, or raise a one-line error listing the valid names."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownLayerError(
            f"unknown layer {name!r}; valid layers are: {', '.join(LAYER_NAMES)}"
        ) from None


def parse_layers(names: str | Sequence[str]) -> tuple[Layer, ...]:
    """Layer names (or one name) as layers in forward order, without repeats.

    Comma lists are the CLI's to split (``fstore.cli.options.CommaList``); here ``"fc7,pool5"``
    is one unknown name.
    """
    wanted = {names} if isinstance(names, str) else set(names)
    if not wanted:
        raise UnknownLayerError(f"no layer given; valid layers are: {', '.join(LAYER_NAMES)}")
    return tuple(sorted((get_layer(n) for n in wanted), key=lambda layer: layer.index))


def total_params() -> int:
    """All of VGG16's parameters (138,357,544)."""
    return sum(layer.params for layer in LAYERS)


def total_macs(input_size: int = DEFAULT_INPUT_SIZE) -> int:
    """Multiply-adds of a full forward pass for one image."""
    return sum(layer.macs(input_size) for layer in LAYERS)
