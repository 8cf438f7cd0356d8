"""Feeding a CUDA session: pinned host buffers, IO binding, two slots so copies overlap runs.

Each slot owns a pinned host buffer, a device buffer of the same fixed batch shape and an IO
binding with the outputs left on the device. For batch k the host copies the pixels into its
slot's pinned buffer and on to the device while the other slot's batch k−1 runs in a worker
thread (``run_with_iobinding`` releases the GIL: in ONNX Runtime 1.32 another Python thread
kept running throughout it); then it fetches k−1's outputs, once, and
starts k. Short batches are padded with zeros to the fixed shape, so every run has the shape
cuDNN's exhaustive search tuned for, and the padding is cut from the outputs.

Pinning uses the CUDA runtime that onnxruntime-gpu has already loaded (``cudaHostRegister`` on
a NumPy buffer); where that fails the buffers stay pageable, which is slower, not wrong.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

logger = logging.getLogger(__name__)

_CUDART = ("libcudart.so.13", "libcudart.so.12", "libcudart.so")


def _cudart():
    for name in _CUDART:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def pinned_empty(shape: tuple[int, ...], dtype) -> tuple[np.ndarray, bool]:
    """A zeroed host array, page-locked when the CUDA runtime allows; returns (array, pinned)."""
    array = np.zeros(shape, dtype)
    cudart = _cudart()
    if cudart is None:
        return array, False
    status = cudart.cudaHostRegister(
        ctypes.c_void_p(array.ctypes.data), ctypes.c_size_t(array.nbytes), ctypes.c_uint(0)
    )
    if status != 0:
        logger.debug("cudaHostRegister failed (%s); host buffer stays pageable", status)
        return array, False
    return array, True


def unpin(array: np.ndarray) -> None:
    cudart = _cudart()
    if cudart is not None:
        cudart.cudaHostUnregister(ctypes.c_void_p(array.ctypes.data))


class DoubleBufferedRunner:
    """Runs batches of one fixed shape on a CUDA session, copy of k+1 overlapping run of k."""

    def __init__(self, session, input_name: str, outputs: tuple[str, ...], shape, dtype):
        import onnxruntime as ort

        self.session, self.outputs, self.shape = session, outputs, tuple(shape)
        self.host, self.pinned, self.device, self.bindings = [], [], [], []
        for _ in range(2):
            array, pinned = pinned_empty(self.shape, dtype)
            device = ort.OrtValue.ortvalue_from_shape_and_type(self.shape, dtype, "cuda", 0)
            binding = session.io_binding()
            binding.bind_ortvalue_input(input_name, device)
            for name in outputs:
                binding.bind_output(name, "cuda", 0)
            self.host.append(array)
            self.pinned.append(pinned)
            self.device.append(device)
            self.bindings.append(binding)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fstore-cuda")

    @property
    def batch_size(self) -> int:
        return self.shape[0]

    def _stage(self, slot: int, batch: np.ndarray) -> int:
        """Pixels into the slot's pinned buffer (zero padding), then onto the device."""
        n = len(batch)
        self.host[slot][:n] = batch
        self.host[slot][n:] = 0
        self.device[slot].update_inplace(self.host[slot])
        self.bindings[slot].synchronize_inputs()
        return n

    def _run(self, slot: int) -> list[np.ndarray]:
        binding = self.bindings[slot]
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()  # the one device→host fetch of this batch

    def stream(self, batches: Iterable[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """The outputs of each batch, in order; batch k+1 is copied while batch k runs."""
        pending: tuple[Future, int] | None = None
        for k, batch in enumerate(batches):
            slot = k % 2
            n = self._stage(slot, batch)  # the other slot may be running now
            if pending is not None:
                yield self._collect(*pending)
            pending = (self.pool.submit(self._run, slot), n)
        if pending is not None:
            yield self._collect(*pending)

    def _collect(self, future: Future, n: int) -> dict[str, np.ndarray]:
        values = future.result()
        return {name: value[:n] for name, value in zip(self.outputs, values)}

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for array, pinned in zip(self.host, self.pinned):
            if pinned:
                unpin(array)
        self.host, self.pinned = [], []
