"""The run stage streams batches through ``backend.run_batches`` and pairs each output with its
batch, also when the backend pulls the next batch before it answers (as the CUDA runner does)
and when whole batches hold only bad images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fstore.images.discover import ImageItem
from fstore.images.reader import Decoded
from fstore.pipeline.read import Batch
from fstore.pipeline.run import ShardAssembler, StageTimes, stream_batches


class LaggingBackend:
    """Answers batch k only after pulling batch k+1; its feature is the image's pixel value."""

    outputs = ("id",)

    def __init__(self) -> None:
        self.pulled_ahead = 0

    def run_batches(self, batches):
        pending = None
        for pixels in batches:
            output = {"id": pixels[:, 0, 0, :1].astype(np.float32)}
            if pending is not None:
                self.pulled_ahead += 1
                yield pending
            pending = output
        if pending is not None:
            yield pending

    def run(self, pixels):  # pragma: no cover - the stream never calls it
        raise AssertionError("run() called although the stream ran the batch")


def _batch(ids: list[int], bad: set[int], shard: str, last: bool) -> Batch:
    decoded, good = [], []
    for i in ids:
        item = ImageItem(f"img{i:03d}.jpg", Path(f"img{i:03d}.jpg"))
        if i in bad:
            decoded.append(Decoded(item, None, "", 1, 1, error="not an image"))
        else:
            pixels = np.full((4, 4, 3), i, np.uint8)
            decoded.append(Decoded(item, pixels, f"sha{i}", 1, 1))
            good.append(pixels)
    stack = np.stack(good) if good else np.zeros((0, 4, 4, 3), np.uint8)
    return Batch(shard, decoded, last, stack)


def test_outputs_stay_with_their_batches():
    bad = {4, 5, 6, 7, 9, 20, 21, 22, 23}  # batch 1 and batch 5 hold only bad images
    ids = list(range(24))
    batches = [
        _batch(ids[k * 4 : (k + 1) * 4], bad, "s0" if k < 3 else "s1", last=k in (2, 5))
        for k in range(6)
    ]
    backend = LaggingBackend()
    assembler = ShardAssembler(backend, {"id": 1})
    shards = []
    for batch, output in stream_batches(iter(batches), backend, assembler.times):
        assert (output is None) == (not batch.good)
        rows = assembler.add(batch, output)
        if rows is not None:
            shards.append(rows)
    assert backend.pulled_ahead == 3  # four batches had good images: it really ran ahead
    assert len(shards) == 2
    for rows in shards:
        ids_of_keys = [int(k[3:6]) for k in rows.keys]
        assert ids_of_keys == [float(v) for v in rows.features["id"][:, 0]]
    assert [int(k[3:6]) for k in shards[0].keys + shards[1].keys] == [
        i for i in ids if i not in bad
    ]
    assert [e["key"] for e in shards[1].errors] == [f"img{i:03d}.jpg" for i in (20, 21, 22, 23)]
    assert assembler.times.errors == len(bad)


def test_nothing_good_yields_every_batch_without_output():
    batches = [_batch([0, 1], {0, 1}, "s0", False), _batch([2], {2}, "s0", True)]
    got = list(stream_batches(iter(batches), LaggingBackend(), StageTimes()))
    assert [(b.decoded[0].item.key, out) for b, out in got] == [
        ("img000.jpg", None),
        ("img002.jpg", None),
    ]
