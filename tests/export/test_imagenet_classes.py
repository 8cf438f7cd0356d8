"""The built-in ImageNet names are torchvision's, in its order, for every ImageNet-1k weight."""

import pytest

from fstore.export.imagenet_classes import IMAGENET_CLASSES


@pytest.mark.parametrize("model", ["vgg16", "resnet18", "efficientnet_b0", "convnext_tiny"])
def test_builtin_names_are_torchvisions(model):
    models = pytest.importorskip("torchvision.models")
    weights = models.get_model_weights(model).DEFAULT
    assert IMAGENET_CLASSES == tuple(weights.meta["categories"])
