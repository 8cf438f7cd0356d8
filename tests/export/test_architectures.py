"""Any torchvision or timm backbone, cut at its own layers, against eager PyTorch.

Each family is exported at a small input size with random weights (narrow instances where the
family allows) and every output is compared with the full eager network on the same pixels:
module outputs caught by forward hooks, ``pooled`` as the input of the logits layer (timm's
``forward_head(pre_logits=True)``), ``logits`` as ``model(x)``. The reference never goes through
fstore's cut (``create_feature_extractor``), so a wrong cut fails. Tolerance: the project's
``relative_error`` (max |ORT - eager| / max |eager|) <= 1e-4 per layer.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from fstore.errors import FstoreError, UnknownLayerError
from fstore.export.architectures import (
    Architecture,
    UnknownArchError,
    default_preprocessing,
    resolve_arch,
)
from fstore.export.result import relative_error
from fstore.images.preprocess import Preprocessing, to_float
from fstore.runtime.weights_source import WeightsSource

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

SEED0 = WeightsSource("random", seed=0)
TOLERANCE = 1e-4


def _small(arch: Architecture, crop: int) -> Preprocessing:
    own = default_preprocessing(arch)
    return Preprocessing(crop + crop // 8, crop, own.mean, own.std, own.interpolation)


def _vit_with_a_random_head(**kw):
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(**kw)
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zeroes it
    return model


def _narrow_convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    sizes = [CNBlockConfig(16, 32, 1), CNBlockConfig(32, 64, 1), CNBlockConfig(64, 128, 1)]
    return ConvNeXt([*sizes, CNBlockConfig(128, None, 1)], num_classes=10)


def _narrow_resnet():
    from torchvision.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10)


def _narrow(name: str, base: str, builder) -> Architecture:
    return Architecture(f"{base}-narrow-test", base, "torchvision", builder=builder)


def _eager(model, arch, x, modules: dict[str, str], pooled: str | None):
    """Module outputs by hook (``NAME`` -> module path), pooled and logits from the full net."""
    caught = {}
    named = dict(model.named_modules())
    handles = [
        named[path].register_forward_hook(lambda _m, _i, out, key=key: caught.__setitem__(key, out))
        for key, path in modules.items()
    ]
    if pooled is not None:
        handles.append(
            named[pooled].register_forward_hook(
                lambda _m, inputs, _o: caught.__setitem__("pooled", inputs[0])
            )
        )
    with torch.inference_mode():
        caught["logits"] = model(x)
        if arch.family == "timm":
            caught["timm_pre_logits"] = model.forward_head(
                model.forward_features(x), pre_logits=True
            )
    for handle in handles:
        handle.remove()
    return caught


def _check_parity(arch, prep, layers, modules, pooled_module, reduce=None):
    import onnxruntime as ort

    from fstore.export.onnx_export import export
    from fstore.export.weights_loader import load_model

    result = export(layers, SEED0, arch=arch, preprocessing=prep)
    assert result.info.layers and set(result.info.layers) == set(layers)
    assert result.info.arch == arch.name and result.info.preprocessing == prep
    assert all(err <= TOLERANCE for err in result.errors.values()), result.errors
    pixels = np.random.default_rng(5).integers(0, 256, (3, prep.crop, prep.crop, 3), np.uint8)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = dict(zip(result.info.layers, session.run(list(result.info.layers), {"image": pixels})))
    model, _ = load_model(arch, SEED0)
    eager = _eager(model, arch, torch.from_numpy(to_float(pixels, prep)), modules, pooled_module)
    if arch.family == "timm":
        assert relative_error(eager["pooled"].numpy(), eager["timm_pre_logits"].numpy()) == 0
    for name in layers:
        reference = eager[name.partition(":")[0]]
        how = (reduce or {}).get(name)
        if how == "cls":
            reference = reference[:, 0]
        elif how == "mean":
            reference = reference[:, 1:].mean(dim=1)
        reference = reference.numpy()
        assert got[name].shape == reference.shape, name
        assert got[name].shape[1:] == tuple(result.info.shapes[name]), name
        assert relative_error(got[name], reference) <= TOLERANCE, name
    return result


def test_resnet_stages_pooled_and_logits_equal_eager():
    arch = _narrow("resnet", "resnet18", _narrow_resnet)
    _check_parity(
        arch,
        _small(arch, 64),
        ["stage2", "layer3", "pooled", "logits"],
        {"stage2": "layer1", "layer3": "layer3"},
        "fc",
    )


@pytest.mark.slow
def test_timm_vit_tokens_are_reduced_by_their_name():
    arch = resolve_arch("timm:test_vit")
    prep = default_preprocessing(arch)
    assert (prep.crop, prep.interpolation) == (160, "bicubic")
    _check_parity(
        arch,
        _small(arch, 160),
        ["blocks.1", "blocks.3:mean", "pooled", "logits"],
        {"blocks.1": "blocks.1", "blocks.3": "blocks.3"},
        "head",
        reduce={"blocks.1": "cls", "blocks.3:mean": "mean"},
    )


FAMILIES = {
    "efficientnet": (lambda: resolve_arch("efficientnet_b0"), ["features.3", "pooled"],
                     {"features.3": "features.3"}, "classifier.1"),
    "mobilenet_v3": (lambda: _narrow("mnv3", "mobilenet_v3_large", partial(
        torchvision.models.mobilenet_v3_large, width_mult=0.25, num_classes=10)),
        ["stage3", "pooled", "logits"], {"stage3": "features.6"}, "classifier.3"),
    "convnext": (lambda: _narrow("convnext", "convnext_tiny", _narrow_convnext),
                 ["stage2", "pooled", "logits"], {"stage2": "features.3"}, "classifier.2"),
    "regnet": (lambda: _narrow("regnet", "regnet_y_400mf", partial(
        torchvision.models.regnet_y_400mf, num_classes=10)),
        ["trunk_output.block2", "pooled", "logits"],
        {"trunk_output.block2": "trunk_output.block2"}, "fc"),
    "timm_efficientnet": (lambda: resolve_arch("timm:test_efficientnet"),
                          ["stage3", "pooled", "logits"], {"stage3": "blocks.2"}, "classifier"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_equals_eager(family):
    make, layers, modules, head = FAMILIES[family]
    arch = make()
    _check_parity(arch, _small(arch, 64), layers, modules, head)


@pytest.mark.slow
def test_torchvision_vit_blocks_and_class_token():
    builder = partial(
        _vit_with_a_random_head,
        image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=10,
    )  # fmt: skip
    arch = _narrow("vit", "vit_b_16", builder)
    _check_parity(
        arch,
        Preprocessing(36, 32),
        ["block1", "block3:mean", "pooled", "logits"],
        {"block1": "encoder.layers.encoder_layer_0", "block3": "encoder.layers.encoder_layer_2"},
        "heads.head",
        reduce={"block1": "cls", "block3:mean": "mean"},
    )


# --------------------------------------------------------------------------- names and faults


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(UnknownArchError, match="close names: resnet50") as info:
        resolve_arch("resnet5O")
    assert "\n" not in str(info.value)


def test_unknown_timm_architecture_suggests_close_names():
    pytest.importorskip("timm")
    with pytest.raises(UnknownArchError, match="close names: timm:test_vit"):
        resolve_arch("timm:test_vitt")


def test_timm_missing_is_one_line(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_timm(name, *args, **kw):
        if name == "timm" or name.startswith("timm."):
            raise ImportError(name)
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_timm)
    with pytest.raises(FstoreError, match=r"needs timm.*pip install 'fstore\[timm\]'"):
        resolve_arch("timm:test_vit")


@pytest.fixture(scope="module")
def resnet_table():
    from fstore.export.graph_layers import layer_table

    arch = resolve_arch("resnet50")
    return layer_table(arch, arch.create(), 64)


def test_unknown_layer_lists_the_valid_ones(resnet_table):
    with pytest.raises(UnknownLayerError) as info:
        resnet_table.select(["layer9"])
    message = str(info.value)
    assert "unknown layer 'layer9' of resnet50" in message and "\n" not in message
    assert "pooled, logits, stage1" in message and "layer4.2.relu_2" in message
    with pytest.raises(UnknownLayerError, match="not a token output"):
        resnet_table.select(["layer1:cls"])


def test_resnet50_aliases_are_its_stages(resnet_table):
    aliases = resnet_table.aliases
    assert aliases["pooled"] == "flatten" and aliases["logits"] == "fc"
    assert [aliases[f"stage{i}"] for i in range(2, 6)] == [
        "layer1.2.relu_2", "layer2.3.relu_2", "layer3.5.relu_2", "layer4.2.relu_2",
    ]  # fmt: skip
    assert resnet_table.choose("layer2").node == "layer2.3.relu_2"


def test_default_preprocessing_is_the_weights_own():
    tv = default_preprocessing(resolve_arch("efficientnet_b0"))
    weights = torchvision.models.EfficientNet_B0_Weights.DEFAULT.transforms()
    assert (tv.resize, tv.crop, tv.interpolation) == (
        weights.resize_size[0], weights.crop_size[0], "bicubic"
    )  # fmt: skip
    assert default_preprocessing(resolve_arch("vgg16"), 320) == Preprocessing(366, 320)


def test_default_preprocessing_of_a_timm_model_is_its_data_config():
    pytest.importorskip("timm")
    timm_prep = default_preprocessing(resolve_arch("timm:efficientnet_lite1"))
    assert (timm_prep.resize, timm_prep.crop, timm_prep.interpolation) == (272, 240, "bicubic")


def test_timm_transforms_equal_fstore_preprocessing_on_pil():
    """timm's own eval transform of its data config against fstore's on the same picture."""
    timm = pytest.importorskip("timm")
    from helpers import random_image

    from fstore.export.architectures import timm_data_config
    from fstore.images.preprocess import preprocess

    arch = resolve_arch("timm:efficientnet_lite1")
    transform = timm.data.create_transform(**timm_data_config(arch))
    image = random_image(np.random.default_rng(0), (500, 333))
    ours = preprocess(image, default_preprocessing(arch))
    assert np.abs(ours - transform(image).numpy()).max() <= 1e-5


def test_inspect_resnet50_counts_every_parameter_once():
    from fstore.export.inspect import inspect_arch

    result = inspect_arch("resnet50", input_size=64)
    reference = torchvision.models.resnet50()
    assert result.total_params == sum(p.numel() for p in reference.parameters()) == 25_557_032
    rows = {row.name: row for row in result.rows}
    assert rows["conv1"].params == 64 * 3 * 7 * 7 and rows["conv1"].module == "Conv2d"
    assert rows["conv1"].macs == 32 * 32 * 64 * 3 * 7 * 7  # 64 px: a 32x32 output
    assert rows["fc"].macs == 2048 * 1000 and rows["fc"].output_shape == (1000,)
    assert rows["layer4.2.relu_2"].output_shape == (2048, 2, 2)
    assert result.aliases["pooled"] == "flatten" and result.arch == "resnet50"
    assert result.fc_params_share == pytest.approx(2_049_000 / 25_557_032)


# --------------------------------------------------------------------------- int8 and fp16

VARIANT_CASES = {
    "resnet": (lambda: _narrow("resnet", "resnet18", _narrow_resnet), ["stage2", "pooled"], 64),
    "mobilenet_v3": (FAMILIES["mobilenet_v3"][0], ["stage3", "pooled"], 64),
    "convnext": (FAMILIES["convnext"][0], ["stage2", "pooled"], 64),
    "regnet": (FAMILIES["regnet"][0], ["trunk_output.block2", "pooled"], 64),
    "vit": (lambda: _narrow("vit", "vit_b_16", partial(
        _vit_with_a_random_head, image_size=32, patch_size=8, num_layers=3, num_heads=2,
        hidden_dim=32, mlp_dim=64, num_classes=10)), ["block2", "pooled"], 32),
    "timm_efficientnet": (FAMILIES["timm_efficientnet"][0], ["stage3", "pooled"], 64),
    "timm_vit": (lambda: resolve_arch("timm:test_vit"), ["blocks.2:mean", "pooled"], 160),
}  # fmt: skip
#: A floor for int8 with random weights and generated calibration pictures (measured 0.978 to
#: 0.9999 across these families): a quantization with wrong ranges or scales falls far below.
INT8_FLOOR = 0.97


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(VARIANT_CASES))
def test_int8_and_fp16_of_every_family_record_their_fidelity(case, tmp_path):
    """torchvision's EfficientNet is left out here: its random initialisation shrinks the pooled
    features to about 1e-13, below float16's smallest value, so fp16 gives zeros (timm's
    EfficientNet stands for the family)."""
    from helpers import make_image_folder

    from fstore.export.onnx_export import export
    from fstore.export.precision import export_variant, fidelity_holds, read_fidelity

    make, layers, crop = VARIANT_CASES[case]
    arch = make()
    base = export(layers, SEED0, arch=arch, preprocessing=_small(arch, crop))
    images = tmp_path / "images"
    make_image_folder(images, {"a": 12, "b": 12}, size=(crop + 30, crop + 20))
    for precision, floor in (("fp16", 0.9999), ("int8", INT8_FLOOR)):
        variant = export_variant(base, precision, calibration=images, calibration_count=8)
        record = read_fidelity(variant.path)
        assert variant.info.precision == precision and record["source"] == "held-out"
        assert set(record["layers"]) == set(base.info.layers)
        means = [row["mean_cosine"] for row in record["layers"].values()]
        assert min(means) >= floor, record
        assert fidelity_holds(variant) == (min(means) >= 0.999)
