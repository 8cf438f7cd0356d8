"""``activations``: feature-map tiles and conv1_1 filters, checked against eager torchvision."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from inspection_helpers import SMALL, eager_input, relative_error, write_image
from PIL import Image

from fstore.errors import OutputPathError, UnknownLayerError
from fstore.export.layers import get_layer
from fstore.export.model_cache import alias_key, lookup_alias
from fstore.inspection.featuremaps import (
    InspectionError,
    activations,
    filters,
    first_conv_weights,
    normalise_maps,
)
from fstore.inspection.figures import activation_figure, filter_figure, save_figure
from fstore.runtime.weights_source import WeightsSource


def eager_maps(model, layer: str, x: np.ndarray) -> np.ndarray:
    """The layer's output for one image, from torchvision's modules run eagerly."""
    import torch

    stop = int(get_layer(layer).module.split(".")[1])
    with torch.inference_mode():
        return model.features[: stop + 1](torch.from_numpy(x)).numpy()[0]


def reference_tiles(maps: np.ndarray) -> np.ndarray:
    """Per-channel min-max scaling written out plainly, a constant channel giving zeros."""
    tiles = np.zeros(maps.shape, dtype=np.float64)
    for c, m in enumerate(maps.astype(np.float64)):
        if m.max() > m.min():
            tiles[c] = (m - m.min()) / (m.max() - m.min())
    return tiles


def check_tiles(tiles: np.ndarray, expected_maps: np.ndarray) -> None:
    """``tiles[c]`` is the normalised eager activation of channel ``c``.

    Min-max scaling divides by each channel's range, so a channel whose range is tiny compared
    with the layer's largest value amplifies float32 rounding; those are only checked in [0, 1].
    """
    expected = reference_tiles(expected_maps)
    spans = np.ptp(expected_maps.reshape(len(expected_maps), -1), axis=1)
    solid = spans > 1e-2 * np.abs(expected_maps).max()
    assert solid.sum() >= len(expected_maps) // 4, "too few channels to compare"
    np.testing.assert_allclose(tiles[solid], expected[solid], rtol=0, atol=1e-3)
    assert ((tiles >= 0) & (tiles <= 1)).all()
    dead = spans == 0
    assert (tiles[dead] == 0).all()


@pytest.fixture
def image(tmp_path):
    return write_image(tmp_path / "scene.jpg", 7, (60, 45))


@pytest.mark.parametrize("layer", ["conv2_2", "pool3"])
def test_tiles_are_normalised_eager_activations(small_model, eager_vgg16, image, layer):
    grid = activations(image, layer, model=small_model.path, channels=None)
    channels, side = get_layer(layer).out_channels, get_layer(layer).output_shape(32)[1]
    assert grid.maps.shape == grid.tiles.shape == (channels, side, side)
    assert grid.channels == channels
    expected = eager_maps(eager_vgg16, layer, eager_input(image))
    assert relative_error(grid.maps, expected) <= 1e-4
    check_tiles(grid.tiles, expected)
    assert grid.image.shape == (32, 32, 3) and grid.image.dtype == np.uint8


def test_conv1_through_cache_and_channel_limit(conv1_model, eager_vgg16, image):
    """``weights=`` goes through ``ensure_model(("conv1_1",))``; ``channels`` keeps the first N."""
    grid = activations(
        image, "conv1_1", weights=WeightsSource("random", seed=0), preprocessing=SMALL, channels=10
    )
    assert grid.tiles.shape == (10, 32, 32)
    expected = eager_maps(eager_vgg16, "conv1_1", eager_input(image))
    assert relative_error(grid.maps, expected[:10]) <= 1e-4
    check_tiles(grid.tiles, expected[:10])
    full = activations(image, "conv1_1", model=conv1_model, channels=64)
    np.testing.assert_array_equal(full.tiles[:10], grid.tiles)
    # the picture is the crop the network saw: resized so the short side is 37, centre 32
    assert grid.image.shape == (32, 32, 3)


def test_normalise_maps_is_min_max_per_channel():
    maps = np.stack(
        [np.arange(6.0).reshape(2, 3) - 2, np.full((2, 3), 3.5), np.array([[0, 0, 0], [0, 0, 4.0]])]
    ).astype(np.float32)
    tiles = normalise_maps(maps)
    np.testing.assert_allclose(tiles[0], (np.arange(6.0).reshape(2, 3)) / 5)
    np.testing.assert_array_equal(tiles[1], np.zeros((2, 3)))
    np.testing.assert_array_equal(tiles[2], [[0, 0, 0], [0, 0, 1]])


def test_figure_holds_one_tile_per_channel(conv1_model, image, tmp_path):
    grid = activations(image, "conv1_1", model=conv1_model, channels=12)
    fig = activation_figure(grid)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 12 + 1  # the input image, then one tile per channel
    assert drawn[0].get_title() == "input"
    np.testing.assert_array_equal(np.asarray(drawn[0].images[0].get_array()), grid.image)
    for c, ax in enumerate(drawn[1:]):
        assert ax.get_title() == str(c)
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), grid.tiles[c])
        assert ax.images[0].get_clim() == (0.0, 1.0)
    out = save_figure(fig, tmp_path / "maps.png")
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.size[0] > 200
    with pytest.raises(OutputPathError, match="cannot write a picture as .xyz"):
        save_figure(fig, tmp_path / "maps.xyz")
    with pytest.raises(OutputPathError, match="does not exist"):
        save_figure(fig, tmp_path / "no" / "maps.png")


def test_filters_read_from_onnx_equal_torch_weights(conv1_model, small_model, eager_vgg16):
    expected = eager_vgg16.features[0].weight.detach().numpy()
    np.testing.assert_array_equal(first_conv_weights(conv1_model), expected)
    np.testing.assert_array_equal(first_conv_weights(small_model.path), expected)
    grid = filters(model=conv1_model)
    assert grid.tiles.shape == (64, 3, 3, 3)  # filter, height, width, RGB
    for f in (0, 17, 63):
        kernel = expected[f].astype(np.float64)
        scaled = (kernel - kernel.min()) / (kernel.max() - kernel.min())
        np.testing.assert_allclose(grid.tiles[f], scaled.transpose(1, 2, 0), atol=1e-6)
    fig = filter_figure(grid)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 64 and [ax.get_title() for ax in drawn] == [str(i) for i in range(64)]
    np.testing.assert_array_equal(np.asarray(drawn[5].images[0].get_array()), grid.tiles[5])


def test_bad_layer_channels_and_image_are_one_line_errors(conv1_model, image, tmp_path, cli):
    with pytest.raises(UnknownLayerError, match="no feature maps; choose a conv or pool layer"):
        activations(image, "fc7", model=conv1_model)
    with pytest.raises(UnknownLayerError, match="unknown layer 'conv9_9'"):
        activations(image, "conv9_9", model=conv1_model)
    with pytest.raises(InspectionError, match="has 64 channels"):
        activations(image, "conv1_1", model=conv1_model, channels=65)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"GIF89a nope")
    with pytest.raises(InspectionError, match="cannot use image"):
        activations(broken, "conv1_1", model=conv1_model)
    with pytest.raises(InspectionError, match="cannot read image"):  # before any export
        activations(tmp_path / "absent.jpg", "conv1_1", weights=WeightsSource("random", seed=99))
    assert lookup_alias(alias_key("vgg16", "random:seed=99")) is None
    result = CliRunner().invoke(
        cli, ["activations", str(image), "--layer", "fc7", "--model", str(conv1_model)]
    )
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message.startswith("Error: layer 'fc7' has no feature maps") and "\n" not in message
    missing = CliRunner().invoke(cli, ["activations", "--model", str(conv1_model)])
    assert missing.exit_code == 2 and "give an IMAGE, or --filters" in missing.stderr


def test_cli_writes_grid_and_filters(cli, conv1_model, image, tmp_path):
    out = tmp_path / "grid.png"
    result = CliRunner().invoke(
        cli,
        [
            "activations",
            str(image),
            "--layer",
            "conv1_1",
            "--channels",
            "6",
            "--model",
            str(conv1_model),
            "--provider",
            "cpu",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "6 channel(s) of 32x32" in result.stdout
    with Image.open(out) as picture:
        assert picture.format == "PNG"
    filt = tmp_path / "filters.png"
    result = CliRunner().invoke(
        cli, ["activations", "--filters", "--model", str(conv1_model), "-o", str(filt)]
    )
    assert result.exit_code == 0, result.output
    assert "64 conv1_1 filters of 3x3" in result.stdout
    with Image.open(filt) as picture:
        assert picture.format == "PNG"
