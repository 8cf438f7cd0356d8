"""The built-in ImageNet names are torchvision's, in its order."""

import pytest

from fstore.inspection.imagenet_classes import IMAGENET_CLASSES


def test_builtin_names_are_torchvisions():
    models = pytest.importorskip("torchvision.models")
    assert IMAGENET_CLASSES == tuple(models.VGG16_Weights.IMAGENET1K_V1.meta["categories"])
