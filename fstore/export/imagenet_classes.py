"""The 1000 ImageNet-1k class names in torchvision's order (index = class id).

The names are package data, ``imagenet_classes.txt`` beside this module, one a line: a copy of the
categories of torchvision's ImageNet-1k weights (torchvision 0.29.1; every such weight and timm's
ImageNet-1k heads share them), so that naming a 1000-way output needs no torch. A test checks the
copy against torchvision where it is installed.
"""

from importlib.resources import files

IMAGENET_CLASSES: tuple[str, ...] = tuple(
    files(__package__).joinpath("imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
)
