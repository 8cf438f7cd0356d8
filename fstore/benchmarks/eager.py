"""Eager PyTorch behind fstore's :class:`~fstore.runtime.backend.Backend` Protocol.

torchvision's VGG16, cut at the same layers as the ONNX model
(:func:`fstore.export.onnx_export.truncated_vgg16`), always under ``torch.inference_mode``, in
one of the :data:`VARIANTS`: ``fp32`` (the plain reference, float32 NCHW) or what a PyTorch
user reaches for to go faster (``channels_last``, bf16 or fp16 by autocast or in the
weights). Which of them is fastest depends on the machine: the benchmark measures it
(:mod:`.variants`).

``run`` takes the reader's ``uint8`` NHWC RGB batches and does the cast, the scaling to [0, 1]
and the mean/std normalisation itself, in torch, on its device, as part of its timed work (the
ONNX Runtime path does the same in its graph).

:func:`eager_store` is the eager end-to-end path: a torchvision-style dataset over the same
files ``build`` reads, a ``DataLoader`` with worker processes, the model, and the features
written to an HDF5 file.
"""

from __future__ import annotations

import contextlib
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


@dataclass(frozen=True)
class Variant:
    """How eager PyTorch runs the model: memory layout and arithmetic.

    ``dtype`` is what its convolutions and GEMMs run in (the GEMM peak it is compared with):
    through ``torch.autocast`` (``autocast``, weights cast on every call) or with the model's
    weights converted once (``module.to(dtype)``). On CUDA, every variant but ``fp32`` also
    turns ``cudnn.benchmark`` on.
    """

    name: str
    channels_last: bool
    dtype: str = "fp32"
    autocast: bool = False

    def describe(self, device: str) -> str:
        arithmetic = self.dtype
        if self.dtype != "fp32":
            arithmetic += " autocast" if self.autocast else " weights"
        parts = [arithmetic, "channels_last" if self.channels_last else "NCHW"]
        if device == "cuda" and self.name != "fp32":
            parts.append("cudnn.benchmark")
        return ", ".join(parts)


VARIANTS = {
    v.name: v
    for v in (
        Variant("fp32", channels_last=False),
        Variant("fp32-cl", channels_last=True),
        Variant("bf16-autocast-cl", channels_last=True, dtype="bf16", autocast=True),
        Variant("bf16-cl", channels_last=True, dtype="bf16"),
        Variant("fp16-autocast-cl", channels_last=True, dtype="fp16", autocast=True),
        Variant("fp16-cl", channels_last=True, dtype="fp16"),
    )
}
#: The variants a PyTorch user would try on each device; the benchmark keeps the fastest.
CANDIDATES = {
    "cpu": ("fp32", "fp32-cl", "bf16-autocast-cl", "bf16-cl"),
    "cuda": ("fp32", "fp32-cl", "fp16-autocast-cl", "fp16-cl"),
}


def candidates(provider: str) -> tuple[str, ...]:
    """:data:`CANDIDATES` of ``provider``; without bf16 under ``FSTORE_CPU=avx2``, where an
    AVX2-only CPU has no bf16 kernels (:mod:`fstore.runtime.cpu`)."""
    from fstore.runtime.cpu import cpu_mode

    names = CANDIDATES[provider]
    if provider == "cpu" and cpu_mode() == "avx2":
        names = tuple(n for n in names if VARIANTS[n].dtype != "bf16")
    return names


def _torch_dtype(name: str):  # -> torch.dtype
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def normalise(batch: np.ndarray, preprocessing: Preprocessing, device: str) -> torch.Tensor:
    """``uint8`` NHWC RGB → float32 NCHW on ``device``: ``ToTensor`` + ``Normalize``, in torch.

    The result is a channels-last view (the permuted NHWC memory); callers pick their layout.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.uint8)).to(device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def synchronize_device(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


@dataclass
class EagerBackend:
    """A truncated torchvision VGG16; implements :class:`~fstore.runtime.backend.Backend`.

    Made from a saved state_dict (``state_dict``, loaded by :meth:`load`) or from a model in
    memory (:meth:`from_model`). ``layers`` are the layer names returned, in order; ``device``
    is ``cpu`` or ``cuda``, named as ONNX Runtime's provider is.
    """

    state_dict: Path | None
    layers: tuple[str, ...]
    device: str = "cpu"
    variant: str = "fp32"
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    module: Any = None  # torch.nn.Module once loaded

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise FstoreError(
                f"unknown eager variant {self.variant!r}; choose from {', '.join(VARIANTS)}"
            )
        self.layers = tuple(layer.name for layer in parse_layers(self.layers))

    @property
    def how(self) -> Variant:
        return VARIANTS[self.variant]

    @classmethod
    def from_model(
        cls, model: torch.nn.Module, layers: tuple[str, ...], **options: Any
    ) -> EagerBackend:
        """Cut ``model`` (a full VGG16) at ``layers``; ``options`` are the other fields.

        Any variant but ``fp32`` works on a copy, so ``model`` keeps its fp32 NCHW weights.
        """
        import copy

        from fstore.export.onnx_export import truncated_vgg16

        backend = cls(None, layers, **options)
        module = truncated_vgg16(model, parse_layers(layers))
        if backend.how.channels_last or backend.how.dtype != "fp32":
            module = copy.deepcopy(module)
        backend.module = backend._prepare(module)
        return backend

    def _prepare(self, module: torch.nn.Module) -> torch.nn.Module:
        import torch

        if self.how.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if not self.how.autocast:
            module = module.to(_torch_dtype(self.how.dtype))
        return module.to(self.device).eval()

    def load(self) -> None:
        """Build the truncated model and memory-map its weights from ``state_dict``.

        The module is made on the ``meta`` device, without random initialisation, which is how
        a careful eager pipeline loads a model.
        """
        if self.module is not None:
            return
        import torch
        from torchvision.models import vgg16

        from fstore.export.onnx_export import truncated_vgg16

        with torch.device("meta"):
            module = truncated_vgg16(vgg16(weights=None), parse_layers(self.layers))
        state = torch.load(self.state_dict, map_location="cpu", mmap=True, weights_only=True)
        module.load_state_dict(state, assign=True)
        self.module = self._prepare(module)

    def _autocast(self):
        import torch

        if not self.how.autocast:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=_torch_dtype(self.how.dtype))

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Features of one ``uint8`` NHWC RGB batch; returns ``{layer: float32 array}``."""
        return self.run_tensor(normalise(batch, self.preprocessing, self.device))

    def run_tensor(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        """Run a normalised float32 NCHW tensor (any device); outputs come back as NumPy."""
        import torch

        if self.device == "cuda":
            # cudnn.benchmark is global: off for fp32, so the reference stays the plain one
            torch.backends.cudnn.benchmark = self.variant != "fp32"
            x = x.to("cuda", non_blocking=True)
        layout = torch.channels_last if self.how.channels_last else torch.contiguous_format
        x = x.contiguous(memory_format=layout)
        if not self.how.autocast:
            x = x.to(_torch_dtype(self.how.dtype))
        with torch.inference_mode(), self._autocast():
            values = self.module(x)
        return {name: value.float().cpu().numpy() for name, value in zip(self.layers, values)}

    def synchronize(self) -> None:
        """Wait for queued GPU work (outputs copied to the host already imply it)."""
        synchronize_device(self.device)

    def describe(self) -> dict[str, str]:
        return {
            "name": f"eager PyTorch VGG16 {self.variant}",
            "provider": self.device,
            "precision": self.how.dtype,
            "variant": self.how.describe(self.device),
            "layers": ",".join(self.layers),
        }


def save_state_dict(backend: EagerBackend, path: Path) -> Path:
    """The truncated model's weights, for :meth:`EagerBackend.load`."""
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


@dataclass(frozen=True)
class LoaderOptions:
    """How the eager side reads images: torchvision's transforms in ``DataLoader`` workers.

    ``workers`` processes are started with ``start_method`` (default: the interpreter's).
    """

    preprocessing: Preprocessing
    batch_size: int = 32
    workers: int = 2
    start_method: str | None = None


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


class _FeatureFile:
    """One growing float32 ``(N, D)`` dataset per layer in an open HDF5 file."""

    def __init__(self, f: Any) -> None:
        self.f, self.datasets, self.written = f, {}, 0

    def append(self, result: dict[str, np.ndarray], mask: np.ndarray) -> int:
        n = int(mask.sum())
        for name, value in result.items():
            rows = value[mask].reshape(n, -1)
            if name not in self.datasets:
                self.datasets[name] = self.f.create_dataset(
                    name,
                    shape=(0, rows.shape[1]),
                    maxshape=(None, rows.shape[1]),
                    dtype="float32",
                    chunks=True,
                )
            ds = self.datasets[name]
            ds.resize(self.written + n, axis=0)
            ds[self.written : self.written + n] = rows
        self.written += n
        return n


def eager_store(
    paths: list[Path], keys: list[str], out: Path, backend: Any, loader: LoaderOptions
) -> EagerStoreReport:
    """Images on disk → eager model → features in the HDF5 file ``out``.

    ``backend`` is an :class:`EagerBackend` (or anything with ``load``, ``run_tensor`` and
    ``synchronize``), loaded here so that its load is timed. Images are read and transformed by
    ``loader.workers`` ``DataLoader`` processes; a file that cannot be decoded is skipped (as
    ``build`` skips it). ``out`` holds one float32 ``(N, D)`` dataset per layer and the ``keys``
    of the N images, in order.
    """
    import h5py
    from torch.utils.data import DataLoader

    start = time.perf_counter()
    backend.load()
    load_seconds = time.perf_counter() - start
    batches = DataLoader(
        FileDataset(paths, loader.preprocessing),
        batch_size=loader.batch_size,
        shuffle=False,
        num_workers=loader.workers,
        pin_memory=backend.describe()["provider"] == "cuda",
        multiprocessing_context=loader.start_method if loader.workers else None,
    )
    wait = infer = write = 0.0
    errors = 0
    with h5py.File(out, "w") as f:
        features, good_keys = _FeatureFile(f), []
        tick = time.perf_counter()
        for x, index, ok in batches:
            now = time.perf_counter()
            wait += now - tick
            result = backend.run_tensor(x)
            backend.synchronize()
            after = time.perf_counter()
            infer += after - now
            mask = ok.numpy().astype(bool)
            errors += len(mask) - features.append(result, mask)
            good_keys.extend(keys[int(i)] for i, good in zip(index, mask) if good)
            tick = time.perf_counter()
            write += tick - after
        f.create_dataset("keys", data=np.array(good_keys, dtype=object), dtype=h5py.string_dtype())
    return EagerStoreReport(
        images=features.written,
        errors=errors,
        seconds=time.perf_counter() - start,
        load_seconds=load_seconds,
        wait_seconds=wait,
        inference_seconds=infer,
        write_seconds=write,
    )


def read_eager_store(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """Keys and per-layer features written by :func:`eager_store`."""
    import h5py

    with h5py.File(path, "r") as f:
        keys = [k.decode() if isinstance(k, bytes) else str(k) for k in f["keys"][()]]
        feats = {name: f[name][()] for name in f if name != "keys"}
    return keys, feats
