"""Eager PyTorch behind the same small interface as ``OrtBackend``: ``run(batch) -> dict``.

Two variants of torchvision's VGG16, cut at the same layers as the ONNX model
(:func:`fstore.export.onnx_export.truncated_vgg16`), always under ``torch.inference_mode``:

* ``fp32``: the plain reference, float32 NCHW;
* ``best``: what a PyTorch user would reach for to go faster: ``channels_last`` memory format
  with bf16 autocast on CPU, or fp16 autocast with ``cudnn.benchmark`` on CUDA.

:func:`eager_store` is the eager end-to-end path: a torchvision-style dataset over the same
files ``build`` reads, a ``DataLoader`` with worker processes, the model, and the features
written to an HDF5 file.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fstore.errors import FstoreError
from fstore.export.layers import parse_layers
from fstore.images.preprocess import Preprocessing

if TYPE_CHECKING:
    import torch

EAGER_VARIANTS = ("fp32", "best")


def best_variant_description(device: str) -> str:
    """What the ``best`` variant does on ``device``."""
    if device == "cuda":
        return "fp16 autocast, channels_last, cudnn.benchmark"
    return "bf16 autocast, channels_last"


def best_variant_dtype(device: str) -> str:
    """The arithmetic the ``best`` variant's convolutions and GEMMs run in."""
    return "fp16" if device == "cuda" else "bf16"


@dataclass
class EagerBackend:
    """A truncated torchvision VGG16 that runs NumPy batches like ``OrtBackend``.

    Create with :meth:`from_model`. ``outputs`` are the layer names returned, in order;
    ``provider`` is the device (``cpu`` or ``cuda``), named as ``OrtBackend`` names it.
    """

    module: Any  # torch.nn.Module
    outputs: tuple[str, ...]
    provider: str
    variant: str
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_model(
        cls,
        model: torch.nn.Module,
        layers: tuple[str, ...],
        device: str = "cpu",
        variant: str = "fp32",
    ) -> EagerBackend:
        """Cut ``model`` (a full VGG16) at ``layers`` and prepare it as ``variant`` on ``device``.

        The ``best`` variant works on a copy, so the fp32 one keeps NCHW weights.
        """
        import torch

        from fstore.export.onnx_export import truncated_vgg16

        if variant not in EAGER_VARIANTS:
            raise FstoreError(
                f"unknown eager variant {variant!r}; choose from {', '.join(EAGER_VARIANTS)}"
            )
        chosen = parse_layers(layers)
        module = truncated_vgg16(model, chosen)
        if variant == "best":
            module = copy.deepcopy(module).to(memory_format=torch.channels_last)
        module = module.to(device).eval()
        return cls(module, tuple(layer.name for layer in chosen), device, variant)

    @classmethod
    def from_state_dict(
        cls, path: Path, layers: tuple[str, ...], device: str = "cpu", variant: str = "fp32"
    ) -> EagerBackend:
        """Build the truncated model from a saved state_dict without random initialisation.

        The module is made on the ``meta`` device and the weights are memory-mapped from the
        file, which is how a careful eager pipeline loads a model.
        """
        import torch
        from torchvision.models import vgg16

        from fstore.export.onnx_export import truncated_vgg16

        chosen = parse_layers(layers)
        with torch.device("meta"):
            module = truncated_vgg16(vgg16(weights=None), chosen)
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        module.load_state_dict(state, assign=True)
        if variant == "best":
            module = module.to(memory_format=torch.channels_last)
        module = module.to(device).eval()
        return cls(module, tuple(layer.name for layer in chosen), device, variant)

    def _autocast(self):
        import contextlib

        import torch

        if self.variant != "best":
            return contextlib.nullcontext()
        if self.provider == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one float32 NCHW batch; returns ``{layer: float32 array}``."""
        import torch

        return self.run_tensor(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)))

    def run_tensor(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        """Run a float32 NCHW tensor (on the CPU, pinned or not); outputs come back as NumPy."""
        import torch

        if self.provider == "cuda":
            # cudnn.benchmark is global: on for the best variant only, so fp32 stays the plain one
            torch.backends.cudnn.benchmark = self.variant == "best"
            x = x.to("cuda", non_blocking=True)
        if self.variant == "best":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            values = self.module(x)
        return {name: value.float().cpu().numpy() for name, value in zip(self.outputs, values)}

    def synchronize(self) -> None:
        """Wait for queued GPU work (outputs copied to the host already imply it)."""
        if self.provider == "cuda":
            import torch

            torch.cuda.synchronize()


def save_state_dict(backend: EagerBackend, path: Path) -> Path:
    """The truncated model's weights, for :meth:`EagerBackend.from_state_dict`."""
    import torch

    module = backend.module
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    torch.save(state, path)
    return path


def image_transform(preprocessing: Preprocessing):  # -> torchvision.transforms.Compose
    """torchvision's transforms equal to fstore's preprocessing (the tests check they agree)."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(
                preprocessing.resize,
                interpolation=transforms.InterpolationMode.BILINEAR,
                antialias=True,
            ),
            transforms.CenterCrop(preprocessing.crop),
            transforms.ToTensor(),
            transforms.Normalize(preprocessing.mean, preprocessing.std),
        ]
    )


class FileDataset:
    """Image files through torchvision's transforms: ``(tensor, index, ok)`` per file.

    A file that cannot be decoded gives a zero tensor and ``ok`` false (``build`` skips such
    files too). Defined at module level so that worker processes can unpickle it under any
    start method.
    """

    def __init__(self, paths: list[Path], preprocessing: Preprocessing) -> None:
        self.paths = list(paths)
        self.preprocessing = preprocessing
        self.transform = image_transform(preprocessing)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch
        from torchvision.datasets.folder import default_loader

        try:
            return self.transform(default_loader(str(self.paths[i]))), i, True
        except Exception:  # noqa: BLE001 - a bad file is skipped, as build skips it
            side = self.preprocessing.crop
            return torch.zeros(3, side, side), i, False


@dataclass
class EagerStoreReport:
    """What :func:`eager_store` did and how long each part took (seconds)."""

    images: int
    errors: int
    seconds: float
    load_seconds: float
    wait_seconds: float
    inference_seconds: float
    write_seconds: float


def eager_store(
    paths: list[Path],
    keys: list[str],
    out: Path,
    state_dict: Path,
    layers: tuple[str, ...],
    preprocessing: Preprocessing,
    *,
    device: str = "cpu",
    variant: str = "fp32",
    batch_size: int = 32,
    workers: int = 2,
    start_method: str | None = None,
) -> EagerStoreReport:
    """Images on disk → eager model → features in the HDF5 file ``out``.

    Images are read and transformed by ``workers`` ``DataLoader`` processes (started with
    ``start_method``, default the interpreter's); a file that cannot be decoded is skipped (as
    ``build`` skips it). ``out`` holds one float32 ``(N, D)`` dataset per layer and the ``keys``
    of the N images, in order.
    """
    import h5py
    from torch.utils.data import DataLoader

    start = time.perf_counter()
    backend = EagerBackend.from_state_dict(state_dict, layers, device, variant)
    load_seconds = time.perf_counter() - start
    loader = DataLoader(
        FileDataset(paths, preprocessing),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device == "cuda",
        multiprocessing_context=start_method if workers else None,
    )
    wait = infer = write = 0.0
    written = errors = 0
    with h5py.File(out, "w") as f:
        datasets: dict[str, Any] = {}
        good_keys: list[str] = []
        tick = time.perf_counter()
        for x, index, ok in loader:
            now = time.perf_counter()
            wait += now - tick
            result = backend.run_tensor(x)
            backend.synchronize()
            after = time.perf_counter()
            infer += after - now
            mask = ok.numpy().astype(bool)
            n = int(mask.sum())
            errors += len(mask) - n
            for name, value in result.items():
                rows = value[mask].reshape(n, -1)
                if name not in datasets:
                    datasets[name] = f.create_dataset(
                        name,
                        shape=(0, rows.shape[1]),
                        maxshape=(None, rows.shape[1]),
                        dtype="float32",
                        chunks=True,
                    )
                ds = datasets[name]
                ds.resize(written + n, axis=0)
                ds[written : written + n] = rows
            good_keys.extend(keys[int(i)] for i, good in zip(index, mask) if good)
            written += n
            tick = time.perf_counter()
            write += tick - after
        f.create_dataset("keys", data=np.array(good_keys, dtype=object), dtype=h5py.string_dtype())
    return EagerStoreReport(
        written, errors, time.perf_counter() - start, load_seconds, wait, infer, write
    )


def read_eager_store(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Keys and per-layer features written by :func:`eager_store`."""
    import h5py

    with h5py.File(path, "r") as f:
        keys = [k.decode() if isinstance(k, bytes) else str(k) for k in f["keys"][()]]
        feats = {name: f[name][()] for name in f if name != "keys"}
    return keys, feats
