"""Which duplicate clusters the report shows with thumbnails, and how each is captioned."""

from __future__ import annotations

from fstore.quality.duplicates import Cluster
from fstore.report import sections
from fstore.report.stages_quality import SHOWN_CLUSTERS, _shown


def _cluster(name: str, labels: tuple[str, ...], exact: bool) -> Cluster:
    return Cluster(
        (f"test/a/{name}.jpg", f"train/a/{name}.jpg"), labels, ("a",), ("test", "train"), exact
    )


def test_conflicts_then_leaks_near_copies_before_exact_ones():
    clusters = [_cluster(f"w{i}", ("within-test",), False) for i in range(3)]
    clusters += [_cluster(f"e{i}", ("leak",), True) for i in range(SHOWN_CLUSTERS)]
    clusters += [_cluster("n0", ("leak",), False), _cluster("c0", ("leak", "conflict"), True)]
    clusters += [_cluster("n1", ("leak",), False)]
    shown = [c.keys[0].split("/")[-1] for c in _shown(clusters)]
    assert len(shown) == SHOWN_CLUSTERS
    assert shown[:3] == ["c0.jpg", "n0.jpg", "n1.jpg"]
    assert set(shown[3:]) <= {f"e{i}.jpg" for i in range(SHOWN_CLUSTERS)}


def test_each_shown_cluster_says_whether_its_images_are_exact_copies():
    shown = [_cluster("n0", ("leak",), False).to_dict(), _cluster("e0", ("leak",), True).to_dict()]
    s = {
        "layer": "pooled", "shown_clusters": shown, "folder": "f", "map_seconds": 1.0,
        "figures": {"cluster0": "c0.png", "cluster1": "c1.png", "map": "map.png"},
        "duplicates": {"exact_pairs": 1, "exact_clusters": 1, "exact_labels": {"leak": 1},
                       "clusters": 2, "labels": {"leak": 2}, "cross_split": 2,
                       "candidates": 3, "verified": 1},
        "leak": {"available": False, "reason": "-"},
        "label_errors": {"available": False, "reason": "-"},
    }  # fmt: skip
    captions = [c for b in sections.quality(s) if b[0] == "thumbs" for _, c in b[1]]
    assert captions[0].startswith("leak, near copies: test/a/n0.jpg")
    assert captions[1].startswith("leak, exact copies: test/a/e0.jpg")
