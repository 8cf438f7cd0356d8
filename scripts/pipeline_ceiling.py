"""The input pipeline's ceiling: ``fstore build`` with a no-op model beside a torchvision
DataLoader (2 worker processes), over the same images, in the same run.

    PYTHONPATH=$PWD python scripts/pipeline_ceiling.py /work/shared/data/scene15 \
        [--decode exact|fast] [--workers N] [--loader-workers 2] [--batch-size 32]

Prints images/s of each and their ratio. The no-op model is a GlobalAveragePool ONNX graph
(``input`` → ``pooled``), so the build's figure is read → decode → batch → write.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path


def write_noop_model(path: Path, size: int = 224) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"])],
        "noop",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 3, 1, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def fstore_ceiling(images: Path, work: Path, args) -> tuple[float, object]:
    from fstore.api import BuildConfig, build
    from fstore.images.preprocess import Preprocessing

    model = write_noop_model(work / "noop.onnx")
    config = BuildConfig(store=work / "noop.h5", images=images, model=model,
                         preprocessing=Preprocessing(), provider="cpu",
                         batch_size=args.batch_size, workers=args.workers, decode=args.decode,
                         threads=args.threads)  # fmt: skip
    start = time.perf_counter()
    report = build(config, progress=False)
    seconds = time.perf_counter() - start
    return report.images_computed / seconds, report


def dataloader_ceiling(images: Path, workers: int, batch: int) -> float:
    import torch
    from PIL import Image
    from torchvision import transforms

    from fstore.images.discover import scan

    paths = [item.path for item in scan(images)]
    tf = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])  # fmt: skip

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return tf(Image.open(paths[i]).convert("RGB"))

    loader = torch.utils.data.DataLoader(Files(), batch_size=batch, num_workers=workers)
    start = time.perf_counter()
    n = sum(len(x) for x in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--decode", default="exact")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    parser.add_argument("--no-loader", action="store_true")
    args = parser.parse_args()
    print(f"cores {len(os.sched_getaffinity(0))}, load {open('/proc/loadavg').read().strip()}")
    with tempfile.TemporaryDirectory(prefix="fstore-ceiling-") as tmp:
        rate, report = fstore_ceiling(args.images, Path(tmp), args)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fstore build, no-op model, decode {args.decode}, {report.workers} threads: "
          f"{rate:.0f} images/s ({report.images_computed} images, {report.errors} bad); "
          f"peak RSS {rss:.0f} MiB")  # fmt: skip
    if not args.no_loader:
        loader = dataloader_ceiling(args.images, args.loader_workers, args.batch_size)
        print(f"torchvision DataLoader, {args.loader_workers} worker processes: "
              f"{loader:.0f} images/s; fstore / DataLoader = {rate / loader:.2f}")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
