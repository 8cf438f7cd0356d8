"""The quality commands through the CLI: --json data keyed by store keys, and each user fault
as one line on stderr with exit status 1."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from quality_synthetic import clustered, feature_store

from fstore.cli import cli

pytest.importorskip("faiss")
pytest.importorskip("cleanlab")


@pytest.fixture
def store(tmp_path):
    X = clustered(120, 16, 3, seed=0)
    return feature_store(tmp_path / "s.h5", X, labels=["a", "b", "c"] * 40)


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def one_line_error(code, out, err, *words):
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0]


def test_neighbors_json_gives_store_keys(store):
    code, out, _ = run("neighbors", "train/a/img_000000.jpg", "--store", store, "-k", "3", "--json")
    assert code == 0
    data = json.loads(out)
    hits = data["results"][0]["neighbors"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert all(h["key"].startswith("train/") and h["class"] in "abc" for h in hits)


def test_layer_not_in_store(store):
    one_line_error(
        *run("neighbors", "train/a/img_000000.jpg", "--store", store, "--layer", "fc7"),
        "no layer 'fc7'",
    )
    one_line_error(*run("duplicates", "--store", store, "--layer", "fc7"), "no layer")


def test_query_image_that_does_not_decode(store, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    # a store from arrays has no model to run new images through: refused first, one line
    one_line_error(*run("neighbors", bad, "--store", store), "query")


def test_index_older_than_store(store, tmp_path):
    import shutil

    assert run("index", "--store", store)[0] == 0
    shutil.rmtree(tmp_path / "s.h5.d")
    store.unlink()
    feature_store(store, clustered(130, 16, 3, seed=1), labels=["a", "b"] * 65)
    one_line_error(
        *run("neighbors", "train/a/img_000000.jpg", "--store", store, "--index"),
        "older than store",
        "fstore index",
    )
    assert run("index", "--store", store, "--json")[0] == 0


def test_audit_refuses_a_store_without_labels(tmp_path):
    bare = feature_store(tmp_path / "bare.h5", clustered(60, 8, 2))
    one_line_error(*run("audit", "--store", bare), "no class labels")


def test_audit_json_rows(store):
    code, out, _ = run("audit", "--store", store, "--folds", "3", "--json")
    assert code == 0
    rows = json.loads(out)["issues"]
    assert all(set(r) == {"rank", "key", "given", "suggested", "score"} for r in rows)


def test_without_the_extra_one_line_says_what_to_install(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now fails
    one_line_error(*run("index", "--store", store), "pip install 'fstore[quality]'")
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    one_line_error(*run("audit", "--store", store), "pip install 'fstore[quality]'")


@pytest.mark.slow
def test_image_queries_go_through_the_store_model(tmp_path, config_for, image_folder):
    """A stored image given as a file finds its own key at cosine 1; a file that does not
    decode is one line."""
    from fstore.pipeline.model import build_store

    build_store(config_for(image_folder))
    built = tmp_path / "s.h5"
    image = image_folder / "beta" / "img_002.jpg"
    code, out, _ = run("neighbors", image, "--store", built, "--layer", "fc7", "-k", "2", "--json")
    assert code == 0, out
    first = json.loads(out)["results"][0]["neighbors"][0]
    assert first["key"] == "beta/img_002.jpg" and first["similarity"] == pytest.approx(1, abs=1e-4)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    one_line_error(*run("neighbors", bad, "--store", built, "--layer", "fc7"), "does not decode")


@pytest.mark.slow  # t-SNE and an audit: about 9 s on the shared 2-core machine
def test_map_marks_label_errors_and_says_why_duplicates_are_not(tmp_path):
    """A store written from arrays has no images to verify copies on: the map is drawn with
    the audit's suspected label errors marked, and one line says why duplicates are not."""
    pytest.importorskip("cleanlab")
    from fstore.quality.audit import audit
    from fstore.quality.map import marks

    X = clustered(60, 16, 2, seed=3, spread=0.2)
    labels = np.where(X[:, 0] > np.median(X[:, 0]), "a", "b")
    store = feature_store(tmp_path / "s.h5", X, labels=labels)
    out = tmp_path / "map.png"
    result = CliRunner().invoke(cli, ["map", "--store", str(store), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert "no duplicates marked" in result.stderr and "from arrays" in result.stderr
    assert out.stat().st_size > 0
    assert len(json.loads(result.stdout)["points"]) == 60
    said = []
    marked = marks(store, None, warn=said.append)
    assert marked["label errors"] == {i.key for i in audit(store).issues}
    assert "duplicates" not in marked and len(said) == 1
