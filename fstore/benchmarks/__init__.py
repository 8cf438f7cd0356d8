"""``fstore bench``: eager PyTorch against fstore's ONNX Runtime sessions, on the same batches.

* :mod:`.config`: what a run is asked to measure (one frozen ``BenchConfig``).
* :mod:`.systems`: which systems are timed and how each backend is built; every backend
  implements :class:`fstore.runtime.backend.Backend`.
* :mod:`.eager`: torchvision VGG16 behind that Protocol, and the eager end-to-end loop
  (``DataLoader`` → model → HDF5).
* :mod:`.pipeline`: the no-op models of the pipeline view (the input side alone).
* :mod:`.views`: model only, end to end and pipeline, each timed interleaved; peak memory.
* :mod:`.statistics`: medians with their spread, ratios, share of the GEMM peak.
* :mod:`.inputs`: the benchmark's images (a folder, a subset of one, or generated pictures).
* :mod:`.machine`: what the machine is, its measured GEMM peak, and peak-memory tracking.
* :mod:`.harness`: :func:`~fstore.benchmarks.harness.run_bench`, the views composed.
* :mod:`.result` and :mod:`.summary`: what was measured, targets, Markdown, JSON and a chart.
"""
