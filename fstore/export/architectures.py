"""The architectures fstore exports: VGG16 (the default), torchvision's classifiers, timm's.

A name is ``vgg16``, a torchvision classification model (``resnet50``, ``convnext_tiny``,
``efficientnet_b0``, ``mobilenet_v3_large``, ``regnet_y_800mf``, ``vit_b_16``, …) or
``timm:NAME`` for any model of timm (an optional extra). :func:`resolve_arch` turns a name into
an :class:`Architecture`, or a one-line error that suggests close names. An architecture knows
how to build its network (:meth:`Architecture.create`) and the preprocessing its weights were
trained with (:func:`default_preprocessing`): torchvision's ``weights.transforms()``, or timm's
data config (``pretrained_cfg``: input size, ``crop_pct``, interpolation, mean, std).

VGG16 keeps its own layer table (:mod:`fstore.export.layers`); every other network is cut at
its own fx node names (:mod:`fstore.export.graph_layers`). Torch, torchvision and timm are
imported inside the functions.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fstore.errors import FstoreError, MissingDependencyError
from fstore.export.imagenet_classes import IMAGENET_CLASSES
from fstore.images.preprocess import Preprocessing

if TYPE_CHECKING:
    import torch

VGG16 = "vgg16"
TIMM_PREFIX = "timm:"


class UnknownArchError(FstoreError, ValueError):
    """An architecture name that neither torchvision nor timm has."""


@dataclass(frozen=True)
class Architecture:
    """A network fstore can export.

    Attributes:
        name: how it is named in the cache and the model's metadata (``resnet50``,
            ``timm:efficientnet_lite1``).
        model_name: its name in its family's registry (``resnet50``, ``efficientnet_lite1``).
        family: ``vgg16``, ``torchvision`` or ``timm``.
        builder: builds the network with random weights; ``None`` for the registry's
            constructor. A narrow instance of a family (tests) passes its own, under its own
            ``name``, and keeps the family's preprocessing and layer rules.
    """

    name: str
    model_name: str
    family: str
    builder: Callable[[], torch.nn.Module] | None = None

    def create(self) -> torch.nn.Module:
        """The network with freshly initialised weights (seed them before), in eval mode."""
        if self.builder is not None:
            return self.builder().eval()
        if self.family == "timm":
            import timm

            return timm.create_model(self.model_name, pretrained=False).eval()
        from torchvision.models import get_model

        return get_model(self.model_name, weights=None).eval()


def require_torch() -> None:
    """Raise a one-line error when torch/torchvision (the ``torch`` extra) are missing."""
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "this command needs torch and torchvision: pip install 'fstore[torch]'"
        ) from None


def require_timm(name: str) -> None:
    try:
        import timm  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"{name} needs timm, which is not installed: pip install 'fstore[timm]'"
        ) from None


def torchvision_names() -> list[str]:
    """torchvision's image classification models (``torchvision.models``' own namespace)."""
    import torchvision.models

    return sorted(torchvision.models.list_models(module=torchvision.models))


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
    return f"; close names: {', '.join(close)}" if close else ""


def _timm_arch(name: str) -> Architecture:
    model_name = name[len(TIMM_PREFIX) :]
    require_timm(name)
    import timm

    known = timm.list_models()
    if model_name not in known:
        close = _suggest(model_name, known).replace(": ", ": timm:").replace(", ", ", timm:")
        raise UnknownArchError(f"unknown architecture {name!r}: timm has no {model_name}{close}")
    return Architecture(name, model_name, "timm")


def resolve_arch(name: str | Architecture) -> Architecture:
    """The architecture called ``name``, or a one-line ``UnknownArchError`` with close names."""
    if isinstance(name, Architecture):
        return name
    if name == VGG16:
        return Architecture(VGG16, VGG16, "vgg16")
    if name.startswith(TIMM_PREFIX):
        return _timm_arch(name)
    require_torch()
    known = torchvision_names()
    if name in known:
        return Architecture(name, name, "torchvision")
    hint = _suggest(name, known)
    try:
        import timm

        if name in timm.list_models():
            hint += f"; timm has it: --arch {TIMM_PREFIX}{name}"
    except ImportError:
        pass
    raise UnknownArchError(
        f"unknown architecture {name!r}: not vgg16, a torchvision classification model or "
        f"timm:NAME{hint}"
    )


def _torchvision_weights(arch: Architecture):
    """The torchvision weights enum entry whose transforms the model takes."""
    from torchvision.models import get_model_weights

    return get_model_weights(arch.model_name).DEFAULT


def timm_data_config(arch: Architecture) -> dict:
    """timm's data config of the architecture's pretrained weights (``resolve_data_config``)."""
    import timm
    from timm.data import resolve_data_config

    cfg = timm.get_pretrained_cfg(arch.model_name)
    return resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg else {}, use_test_size=True)


def _from_timm(config: dict, arch: Architecture) -> Preprocessing:
    if config.get("crop_mode", "center") != "center":
        raise FstoreError(
            f"{arch.name} crops by {config['crop_mode']!r}; fstore does a centre crop only"
        )
    size = int(config["input_size"][-1])
    return Preprocessing(
        resize=math.floor(size / config["crop_pct"]),  # timm's transforms_factory rule
        crop=size,
        mean=tuple(float(v) for v in config["mean"]),
        std=tuple(float(v) for v in config["std"]),
        interpolation=config["interpolation"],
    )


def _from_torchvision(arch: Architecture) -> Preprocessing:
    transforms = _torchvision_weights(arch).transforms()
    return Preprocessing(
        resize=int(transforms.resize_size[0]),
        crop=int(transforms.crop_size[0]),
        mean=tuple(float(v) for v in transforms.mean),
        std=tuple(float(v) for v in transforms.std),
        interpolation=transforms.interpolation.value,
    )


def default_preprocessing(arch: Architecture, input_size: int | None = None) -> Preprocessing:
    """The preprocessing the architecture's pretrained weights were evaluated with.

    ``input_size`` rescales it to another crop, the resize keeping its ratio to the crop (as
    timm's ``crop_pct`` does); mean, std and interpolation stay the weights'.
    """
    if arch.family == "vgg16":
        own = Preprocessing()
    elif arch.family == "timm":
        own = _from_timm(timm_data_config(arch), arch)
    else:
        own = _from_torchvision(arch)
    return own if input_size is None else own.at_crop(input_size)


def class_names(num_outputs: int) -> tuple[str, ...] | None:
    """ImageNet-1k's class names when the logits have 1000 values (torchvision's order, which
    every torchvision ImageNet-1k weight and timm's ImageNet-1k heads share), else ``None``."""
    return IMAGENET_CLASSES if num_outputs == len(IMAGENET_CLASSES) else None


def tracer_options(arch: Architecture) -> dict | None:
    """fx tracer options: timm's leaf modules and wrapped functions, which fx cannot trace."""
    if arch.family != "timm":
        return None
    from timm.layers import get_notrace_functions, get_notrace_modules

    return {
        "leaf_modules": list(get_notrace_modules()),
        "autowrap_functions": list(get_notrace_functions()),
    }


def classifier_module(arch: Architecture, model: torch.nn.Module) -> str | None:
    """The qualified name of the layer that computes the logits: timm's ``get_classifier()``,
    else the model's last ``Linear`` (torchvision's heads end with one)."""
    import torch

    modules = list(model.named_modules())
    if arch.family == "timm":
        head = model.get_classifier()
        return next((name for name, module in modules if module is head), None)
    linears = [name for name, module in modules if isinstance(module, torch.nn.Linear)]
    return linears[-1] if linears else None


def prefix_tokens(arch: Architecture, model: torch.nn.Module) -> tuple[int, bool]:
    """(tokens before the patch tokens, whether the first is a class token) of a ViT."""
    if arch.family == "timm":
        count = int(getattr(model, "num_prefix_tokens", 0) or 0)
        return count, bool(getattr(model, "cls_token", None) is not None)
    has_cls = getattr(model, "class_token", None) is not None
    return int(has_cls), has_cls
