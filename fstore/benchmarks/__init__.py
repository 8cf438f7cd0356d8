"""``fstore bench``: eager PyTorch against fstore's ONNX Runtime sessions, on the same batches.

* :mod:`.eager`: torchvision VGG16 behind the same ``run(batch)`` interface as ``OrtBackend``,
  and the eager end-to-end loop (``DataLoader`` → model → HDF5).
* :mod:`.inputs`: the benchmark's images (a folder, a subset of one, or generated pictures).
* :mod:`.machine`: what the machine is, its measured GEMM peak, and peak-memory tracking.
* :mod:`.harness`: the timed runs, interleaved, and their statistics.
* :mod:`.report`: Markdown, JSON and a PNG chart.
"""
