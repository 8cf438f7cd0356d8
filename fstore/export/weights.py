"""Loading VGG16's weights: ImageNet (torchvision download), a local file, or a seed.

:class:`~fstore.runtime.weights.WeightsSource` (the description) lives in the runtime layer.

Imports torch lazily: only export, bench and the eager reference need it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from fstore.errors import MissingDependencyError, WeightsError
from fstore.runtime.weights import WeightsSource

if TYPE_CHECKING:
    import torch

__all__ = ["WeightsSource", "load_vgg16", "require_torch"]

IMAGENET_FILE = "vgg16-397923af.pth"


def require_torch() -> None:
    """Raise a one-line error when torch/torchvision (the ``export`` extra) are missing."""
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "this command needs torch and torchvision: pip install 'fstore[torch]'"
        ) from None


def torch_checkpoint_path() -> Path:
    """Where torchvision expects the downloaded ImageNet weights."""
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


def _imagenet_state_dict() -> dict[str, torch.Tensor]:
    from torchvision.models import VGG16_Weights

    try:
        return VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
    except Exception as exc:  # noqa: BLE001 - urllib, ssl and socket errors all mean "offline"
        raise WeightsError(
            f"cannot download the ImageNet VGG16 weights ({type(exc).__name__}); offline? "
            f"pass --weights PATH with a VGG16 state_dict, or place {IMAGENET_FILE} "
            f"at {torch_checkpoint_path()}"
        ) from None


def _file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot read weights file {path}: {first_line}") from None
    if (
        isinstance(loaded, dict)
        and "state_dict" in loaded
        and isinstance(loaded["state_dict"], dict)
    ):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise WeightsError(f"weights file {path} does not hold a state_dict of tensors")
    return loaded


def check_state_dict(
    state_dict: dict[str, torch.Tensor], reference: dict[str, torch.Tensor], source: str
) -> None:
    """Raise a ``WeightsError`` naming the first key that does not fit VGG16."""
    for key, ref in reference.items():
        if key not in state_dict:
            raise WeightsError(f"{source} is not a VGG16 state_dict: key {key!r} is missing")
        if tuple(state_dict[key].shape) != tuple(ref.shape):
            raise WeightsError(
                f"{source} is not a VGG16 state_dict: {key!r} has shape "
                f"{tuple(state_dict[key].shape)}, expected {tuple(ref.shape)}"
            )
    for key in state_dict:
        if key not in reference:
            raise WeightsError(f"{source} is not a VGG16 state_dict: unexpected key {key!r}")


def load_vgg16(source: WeightsSource) -> tuple[torch.nn.Module, str]:
    """Build torchvision's VGG16 in eval mode with the given weights; returns (model, sha256)."""
    require_torch()
    import torch
    from torchvision.models import vgg16

    if source.kind == "random":
        torch.manual_seed(source.seed)
        model = vgg16(weights=None)
    else:
        model = vgg16(weights=None)
        state = (
            _imagenet_state_dict()
            if source.kind == "imagenet"
            else _file_state_dict(
                source.path  # type: ignore[arg-type]
            )
        )
        check_state_dict(state, model.state_dict(), str(source.path or "ImageNet weights"))
        model.load_state_dict({k: v.float() for k, v in state.items()})
    model.eval()
    return model, state_dict_sha256(model.state_dict())
