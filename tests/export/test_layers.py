"""The layer table against torchvision's real VGG16."""

from __future__ import annotations

import pytest

from fstore.errors import UnknownLayerError
from fstore.export.layers import (
    LAYER_NAMES,
    LAYERS,
    get_layer,
    parse_layers,
    total_macs,
    total_params,
)


def test_names_in_forward_order():
    convs = [f"conv{b}_{i}" for b, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, n + 1)]
    assert [n for n in LAYER_NAMES if n.startswith("conv")] == convs
    assert LAYER_NAMES[-4:] == ("fc6", "fc7", "logits", "prob")
    assert [layer.index for layer in LAYERS] == list(range(len(LAYERS)))


def test_params_and_modules_match_torchvision():
    torch = pytest.importorskip("torch")
    from torchvision.models import vgg16

    model = vgg16()
    assert total_params() == sum(p.numel() for p in model.parameters()) == 138_357_544
    modules = dict(model.named_modules())
    for layer in LAYERS:
        if layer.param_module:
            assert layer.params == sum(p.numel() for p in modules[layer.param_module].parameters())
        if layer.kind in ("conv", "fc"):
            assert isinstance(modules[layer.module], torch.nn.ReLU), layer.name
        if layer.kind == "pool":
            assert isinstance(modules[layer.module], torch.nn.MaxPool2d)


@pytest.mark.parametrize("size", [224, 64])
def test_shapes_match_real_outputs(size):
    torch = pytest.importorskip("torch")
    from torchvision.models import vgg16

    model = vgg16().eval()
    captured = {}
    modules = dict(model.named_modules())

    def hook(name: str):
        def record(module, inputs, output) -> None:  # returns None: the output is unchanged
            captured.setdefault(name, tuple(output.shape[1:]))

        return record

    for layer in LAYERS[:-1]:
        modules[layer.module].register_forward_hook(hook(layer.name))
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    for layer in LAYERS[:-1]:
        assert captured[layer.name] == layer.output_shape(size), layer.name


def test_macs_per_image():
    conv = sum(layer.macs() for layer in LAYERS if layer.kind == "conv")
    assert conv == 15_346_630_656  # the published 15.3 G multiply-adds of VGG16's convolutions
    assert total_macs() == conv + 25088 * 4096 + 4096 * 4096 + 4096 * 1000


def test_unknown_layer_lists_valid_names():
    with pytest.raises(UnknownLayerError) as err:
        get_layer("fc9")
    assert "fc9" in str(err.value) and "conv1_1" in str(err.value) and "prob" in str(err.value)


def test_parse_layers_orders_and_dedups():
    assert [layer.name for layer in parse_layers(("fc7", "pool5", "fc7"))] == ["pool5", "fc7"]
    assert [layer.name for layer in parse_layers("conv1_1")] == ["conv1_1"]  # one name
    with pytest.raises(UnknownLayerError, match="no layer given"):
        parse_layers(())


def test_parse_layers_leaves_comma_lists_to_the_cli():
    """One comma parser: ``CommaList`` splits ``--layers``; the library takes names."""
    with pytest.raises(UnknownLayerError, match="fc7,pool5"):
        parse_layers("fc7,pool5")
