"""Loading a network's weights: ImageNet (torchvision's weights API, timm's hub), a file, a seed.

:class:`~fstore.runtime.weights_source.WeightsSource` (the description) lives in the runtime
layer. A file is a ``state_dict`` saved by ``torch.save`` (or a checkpoint holding one under
``state_dict``) or a safetensors file. Weights that do not fit the architecture are a one-line
``WeightsError`` naming the first key that does not fit.

Imports torch lazily: only export, inspect, bench and the eager reference need it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from fstore.errors import WeightsError
from fstore.export.architectures import (
    VGG16,
    Architecture,
    require_timm,
    require_torch,
    resolve_arch,
)
from fstore.runtime.weights_source import WeightsSource

if TYPE_CHECKING:
    import torch

IMAGENET_FILE = "vgg16-397923af.pth"
_OFFLINE = "offline? pass --weights PATH with its state_dict or safetensors file"


def torch_checkpoint_path() -> Path:
    """Where torchvision expects the downloaded VGG16 ImageNet weights."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """A hash of the weights' values, independent of how the file was written."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def imagenet_origin(arch: Architecture) -> str:
    """What ``--weights imagenet`` names for ``arch``, recorded as provenance."""
    if arch.family == "vgg16":
        return WeightsSource("imagenet").origin
    if arch.family == "timm":
        import timm

        cfg = timm.get_pretrained_cfg(arch.model_name)
        return f"imagenet:timm/{cfg.hf_hub_id or arch.model_name}" if cfg else "imagenet:timm"
    from torchvision.models import get_model_weights

    return f"imagenet:{get_model_weights(arch.model_name).DEFAULT}"


def _torchvision_imagenet(arch: Architecture) -> dict[str, torch.Tensor]:
    from torchvision.models import VGG16_Weights, get_model_weights

    weights = (
        VGG16_Weights.IMAGENET1K_V1
        if arch.family == "vgg16"
        else get_model_weights(arch.model_name).DEFAULT
    )
    try:
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # noqa: BLE001 - urllib, ssl and socket errors all mean "offline"
        where = (
            f", or place {IMAGENET_FILE} at {torch_checkpoint_path()}" if arch.name == VGG16 else ""
        )
        raise WeightsError(
            f"cannot download the ImageNet weights of {arch.name} ({weights}: "
            f"{type(exc).__name__}); {_OFFLINE}{where}"
        ) from None


def _timm_imagenet(arch: Architecture) -> torch.nn.Module:
    import timm

    try:
        return timm.create_model(arch.model_name, pretrained=True).eval()
    except Exception as exc:  # noqa: BLE001 - hub, http and file errors all mean "not at hand"
        raise WeightsError(
            f"cannot download the ImageNet weights of {arch.name} from timm's hub "
            f"({type(exc).__name__}); {_OFFLINE}"
        ) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save`` state_dict (or checkpoint) or a safetensors file."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch and safetensors raise many types
        raise WeightsError(f"cannot read weights file {path}: {_first_line(exc)}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise WeightsError(f"weights file {path} does not hold a state_dict of tensors")
    return loaded


def check_state_dict(
    state_dict: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor],
    source: str,
    arch: str = VGG16,
) -> None:
    """Raise a ``WeightsError`` naming the first key that does not fit ``arch``."""
    what = f"{source} does not fit {arch}"
    for key, ref in reference.items():
        if key not in state_dict:
            raise WeightsError(f"{what}: key {key!r} is missing")
        if tuple(state_dict[key].shape) != tuple(ref.shape):
            raise WeightsError(
                f"{what}: {key!r} has shape {tuple(state_dict[key].shape)}, "
                f"expected {tuple(ref.shape)}"
            )
    for key in state_dict:
        if key not in reference:
            raise WeightsError(f"{what}: unexpected key {key!r}")


def load_model(arch: Architecture | str, source: WeightsSource) -> tuple[torch.nn.Module, str]:
    """The network ``arch`` in eval mode with the given weights; returns (model, sha256)."""
    require_torch()
    import torch

    arch = resolve_arch(arch)
    if arch.family == "timm":
        require_timm(arch.name)
    if source.kind == "random":
        torch.manual_seed(source.seed)
        model = arch.create()
    elif source.kind == "imagenet" and arch.family == "timm":
        model = _timm_imagenet(arch)
    else:
        torch.manual_seed(0)  # buffers a state_dict does not hold are the same every time
        model = arch.create()
        state = (
            _torchvision_imagenet(arch)
            if source.kind == "imagenet"
            else read_state_dict(source.path)  # type: ignore[arg-type]
        )
        name = str(source.path or "ImageNet weights")
        check_state_dict(state, model.state_dict(), name, arch.name)
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in state.items()})
    model.eval()
    return model, state_dict_sha256(model.state_dict())


def load_vgg16(source: WeightsSource) -> tuple[torch.nn.Module, str]:
    """torchvision's VGG16 in eval mode with the given weights; returns (model, sha256)."""
    return load_model(VGG16, source)
