"""A corruption campaign against a store and its classifiers, in the spirit of SQLite's and
git's own: one fault per trial, drawn with a seed, then every read is checked.

Each trial copies a reference store (24 tiny images, a no-op model, 6 shard files) and puts
one fault into it: random bytes flipped in the catalog, a shard file or the view, a random
catalog row edited, or a classifier file (an SVM ``.skops``, a head ``.safetensors``) flipped,
truncated or its ``classes`` edited. Then:

* a store: the reads (``load_features``, ``store_info``, the view through plain h5py) either
  equal the reference's, or ``fstore verify`` exits 1; then ``fstore verify --repair`` and
  ``fstore build`` must give reads equal to the reference's and a store that verifies;
* a classifier: it loads and predicts as the reference does, or it is refused (one line).

Counted: trials, faults detected, silent differences (reads differ while verify says ok, or
a classifier loads and predicts otherwise) and tracebacks (any exception that is not fstore's
one-line error); both must be 0. Also counted: the damaged views on which plain h5py's own
process died (the HDF5 library, reading a damaged virtual dataset; fstore's reads go through
the shard files and never read the view's data). Run it with
``python scripts/benchmarks/corruption.py --trials 200 --seed 0 --workdir DIR``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from fstore.cli import cli
from fstore.errors import FstoreError
from fstore.store import load_features, sidecar, store_info

# the sibling benchmark's store makers, found beside this file when it is imported by path too
sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import noop_model, tiny_images  # noqa: E402

STORE_FAULTS = ("catalog bytes", "catalog row", "shard bytes", "view bytes")
CLASSIFIER_FAULTS = ("classifier bytes", "classifier truncated", "classifier classes")
FAULTS = STORE_FAULTS + CLASSIFIER_FAULTS


@dataclass
class Outcome:
    """What one trial found."""

    fault: str
    detail: str
    verdict: str  # harmless | detected-restored | refused | silent | traceback | not-restored
    note: str = ""
    h5py_died: bool = False  # plain h5py's process died reading the damaged view


@dataclass
class Campaign:
    trials: list[Outcome] = field(default_factory=list)

    def figures(self) -> dict:
        verdicts = Counter(t.verdict for t in self.trials)
        return {
            "trials": len(self.trials),
            "faults": dict(Counter(t.fault for t in self.trials)),
            "detected": verdicts["detected-restored"] + verdicts["refused"]
            + verdicts["not-restored"],
            "harmless": verdicts["harmless"],
            "restored": verdicts["detected-restored"],
            "refused": verdicts["refused"],
            "silent_differences": verdicts["silent"],
            "tracebacks": verdicts["traceback"],
            "not_restored": verdicts["not-restored"],
            "plain_h5py_died": sum(t.h5py_died for t in self.trials),
        }  # fmt: skip


# ----------------------------------------------------------------------------- the reference


@dataclass(frozen=True)
class Reference:
    images: Path
    model: Path
    store: Path
    classifiers: dict  # kind -> path
    reads: tuple
    predictions: dict  # kind -> (classes, predictions)


def build_args(images: Path, store: Path, model: Path) -> list[str]:
    return ["build", str(images), "--store", str(store), "--model", str(model), "--size", "8",
            "--provider", "cpu", "--batch-size", "4", "--shard-size", "4", "--threads", "1",
            "--workers", "1", "--quiet"]  # fmt: skip


def run_cli(args: list[str]):
    """``fstore ARGS`` in this process; a non-``SystemExit`` exception is a traceback."""
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        tb = "".join(traceback.format_exception(result.exception))
        raise RuntimeError(f"traceback from fstore {' '.join(args[:2])}:\n{tb}")
    return result


def reads(store: Path) -> tuple:
    """Everything a user reads of a store: fstore's reads (which may refuse, in one line:
    ``FstoreError``) and the view through plain h5py (whose errors on a damaged file are
    h5py's own, loud, and read here as ``None``)."""
    fs, info = load_features(store, "noop"), store_info(store)
    return (list(fs.keys), fs.X.tobytes(), fs.y.tolist(), list(fs.split), fs.classes,
            info.images, info.class_counts, info.errors, info.pending, view(store))  # fmt: skip


_VIEW_READ = """
import pickle, sys
import h5py
try:
    with h5py.File(sys.argv[1], "r") as f:
        read = (list(f["keys"].asstr()[()]), f["labels"][()].tolist(),
                list(f["split"].asstr()[()]), f["features/noop"][()].tobytes())
except Exception:  # any error of plain h5py is loud, not silent
    read = None
sys.stdout.buffer.write(pickle.dumps(read))
"""
#: What :func:`view` returns when plain h5py's process died reading the view.
H5PY_DIED = "plain h5py died"


def view(store: Path) -> tuple | str | None:
    """The view as plain h5py reads it, in a process of its own: the HDF5 library can die
    (SIGSEGV) reading a damaged virtual dataset, which is loud too, but would end the
    campaign. ``None`` for an h5py error, :data:`H5PY_DIED` for a death."""
    import pickle
    import subprocess

    child = subprocess.run([sys.executable, "-c", _VIEW_READ, str(store)], capture_output=True)
    return pickle.loads(child.stdout) if child.returncode == 0 else H5PY_DIED


def classifiers(folder: Path, store: Path) -> dict[str, Path]:
    """An SVM and a head trained on the reference store, saved as fstore saves them."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    from fstore.classifiers.head import TorchHeadClassifier
    from fstore.classifiers.persist import SavedClassifier, save_classifier

    fs = load_features(store, "noop")
    rng = np.random.default_rng(0)
    svm = Pipeline([("scale", StandardScaler()), ("svm", LinearSVC(C=1.0))]).fit(fs.X, fs.y)
    classes = np.unique(fs.y)
    weights = [rng.normal(size=(len(classes), fs.X.shape[1])).astype(np.float32)]
    head = TorchHeadClassifier.from_weights(weights, [np.zeros(len(classes), np.float32)], classes)
    head_pipe = Pipeline([("scale", StandardScaler().fit(fs.X)), ("head", head)])
    provenance = {"model_sha256": "ab" * 32}
    paths = {}
    for kind, model in (("svm", svm), ("head", head_pipe)):
        clf = SavedClassifier(kind, "noop", fs.classes, fs.X.shape[1], provenance, {}, model)
        suffix = ".skops" if kind == "svm" else ".safetensors"
        paths[kind] = save_classifier(clf, folder / f"classifier{suffix}")
    return paths


def predictions(path: Path, X: np.ndarray) -> tuple:
    from fstore.classifiers.persist import load_classifier

    clf = load_classifier(path)
    return clf.classes, clf.predict(X, "ab" * 32).tolist()


def reference(workdir: Path) -> Reference:
    images = tiny_images(workdir / "images", 24)
    model = noop_model(workdir / "noop.onnx")
    store = workdir / "ref" / "s.h5"
    store.parent.mkdir()
    result = run_cli(build_args(images, store, model))
    assert result.exit_code == 0, result.output
    paths = classifiers(workdir, store)
    X = load_features(store, "noop").X
    return Reference(images, model, store, paths, reads(store),
                     {k: predictions(p, X) for k, p in paths.items()})  # fmt: skip


# ----------------------------------------------------------------------------- the faults


def flip_bytes(path: Path, rng: np.random.Generator) -> str:
    data = bytearray(path.read_bytes())
    count = int(rng.integers(1, 5))
    at = sorted(int(a) for a in rng.integers(0, len(data), size=count))
    for a in at:
        data[a] ^= int(rng.integers(1, 256))
    path.write_bytes(bytes(data))
    return f"{path.name}: {count} byte(s) at {at} of {len(data)}"


#: (table, column, key column): the columns a random edit may change
COLUMNS = (
    ("images", "class", "key"), ("images", "split", "key"), ("images", "row", "key"),
    ("images", "pos", "key"), ("images", "shard", "key"), ("images", "key", "key"),
    ("images", "sha256", "key"), ("images", "error", "key"),
    ("shards", "file", "name"), ("shards", "start", "name"), ("shards", "rows", "name"),
    ("files", "rows", "name"), ("files", "sha256", "name"), ("files", "name", "name"),
)  # fmt: skip


def edit_row(path: Path, rng: np.random.Generator) -> str:
    """One catalog cell set to another row's value, or changed a little (a change that breaks
    a unique key is drawn again)."""
    while True:
        table, column, key = COLUMNS[int(rng.integers(len(COLUMNS)))]
        con = sqlite3.connect(path)
        try:
            rows = con.execute(f"SELECT {key}, {column} FROM {table}").fetchall()
            target, value = rows[int(rng.integers(len(rows)))]
            other = _edited(value, rows[int(rng.integers(len(rows)))][1], rng)
            with con:
                con.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (other, target))
            return f"{table}.{column} of {target!r}: {value!r} -> {other!r}"
        except sqlite3.IntegrityError:
            continue
        finally:
            con.close()


def _edited(value, other, rng: np.random.Generator):
    if other != value and rng.random() < 0.5:
        return other
    if isinstance(value, int):
        return value + int(rng.choice([-1, 1, 7]))
    if isinstance(value, str) and value:
        i = int(rng.integers(len(value)))
        return value[:i] + chr(ord(value[i]) ^ 1) + value[i + 1 :]
    return "edited"


def store_fault(fault: str, store: Path, rng: np.random.Generator) -> str:
    folder = sidecar(store)
    if fault == "catalog bytes":
        return flip_bytes(folder / "catalog.sqlite", rng)
    if fault == "catalog row":
        return edit_row(folder / "catalog.sqlite", rng)
    if fault == "shard bytes":
        shards = sorted((folder / "shards").glob("*.h5"))
        return flip_bytes(shards[int(rng.integers(len(shards)))], rng)
    return flip_bytes(store, rng)


def classifier_fault(fault: str, path: Path, rng: np.random.Generator) -> str:
    if fault == "classifier bytes":
        return flip_bytes(path, rng)
    data = path.read_bytes()
    if fault == "classifier truncated":
        keep = int(rng.integers(0, len(data)))
        path.write_bytes(data[:keep])
        return f"{path.name}: {keep} of {len(data)} bytes kept"
    return edit_classes(path)


def swap_classes(path: Path, first: str, second: str) -> None:
    """``first`` and ``second`` swapped in a classifier file's class list as a careful hand
    would: the file stays well formed (a safetensors header keeps its length prefix right, a
    skops zip is written again)."""

    def swap(text: bytes) -> bytes:
        a, b = first.encode(), second.encode()
        swapped = text.replace(a, b"\0").replace(b, a).replace(b"\0", b)
        assert swapped != text, f"no {first} or {second} to swap"
        return swapped

    if path.suffix == ".safetensors":
        data = path.read_bytes()
        size = int.from_bytes(data[:8], "little")
        header = swap(data[8 : 8 + size])
        path.write_bytes(len(header).to_bytes(8, "little") + header + data[8 + size :])
        return
    import zipfile

    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
        comment = z.comment
    members["schema.json"] = swap(members["schema.json"])
    with zipfile.ZipFile(path, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
        z.comment = comment


def edit_classes(path: Path) -> str:
    """The store's first two classes swapped in the file's class list."""
    swap_classes(path, "class00", "class01")
    where = "header" if path.suffix == ".safetensors" else "schema, the zip rewritten"
    return f"{path.name}: classes class00 and class01 swapped in its {where}"


# ----------------------------------------------------------------------------- a trial


def store_trial(ref: Reference, fault: str, rng, workdir: Path) -> Outcome:
    folder = workdir / "trial"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(ref.store.parent, folder)
    store = folder / ref.store.name
    detail = store_fault(fault, store, rng)
    try:
        got = reads(store)
        same, died = got == ref.reads, got[-1] == H5PY_DIED
    except FstoreError:  # refused in one line: verify must then say so
        same, died = False, view(store) == H5PY_DIED
    verified = run_cli(["verify", "--store", str(store)])
    if verified.exit_code == 0:
        verdict = "harmless" if same else "silent"
        return Outcome(fault, detail, verdict, verified.output[-300:], died)
    run_cli(["verify", "--repair", "--store", str(store)])
    run_cli(build_args(ref.images, store, ref.model))
    again = run_cli(["verify", "--store", str(store)])
    restored = again.exit_code == 0 and reads(store) == ref.reads
    verdict = "detected-restored" if restored else "not-restored"
    last = verified.output.strip().splitlines()[-1][:300]
    return Outcome(fault, detail, verdict, last, died)


def classifier_trial(ref: Reference, fault: str, rng, workdir: Path) -> Outcome:
    from fstore.classifiers.persist import load_classifier

    kind = ("svm", "head")[int(rng.integers(2))]
    path = workdir / f"trial{ref.classifiers[kind].suffix}"
    shutil.copy(ref.classifiers[kind], path)
    detail = classifier_fault(fault, path, rng)
    try:
        load_classifier(path)
    except FstoreError as exc:
        return Outcome(fault, detail, "refused", str(exc)[:300])
    X = load_features(ref.store, "noop").X
    same = predictions(path, X) == ref.predictions[kind]
    return Outcome(fault, detail, "harmless" if same else "silent")


def trial(ref: Reference, seed: int, workdir: Path) -> Outcome:
    rng = np.random.default_rng(seed)
    fault = FAULTS[int(rng.integers(len(FAULTS)))]
    run = store_trial if fault in STORE_FAULTS else classifier_trial
    try:
        return run(ref, fault, rng, workdir)
    except Exception as exc:  # noqa: BLE001 - a traceback is what the campaign counts
        note = "".join(traceback.format_exception(exc))[-1500:]
        return Outcome(fault, f"seed {seed}", "traceback", note)


def campaign(trials: int, seed: int, workdir: Path) -> Campaign:
    ref = reference(workdir)
    result = Campaign()
    for n in range(trials):
        result.trials.append(trial(ref, seed + n, workdir))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--show", action="store_true", help="print every trial")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fstore-corruption-"))
    workdir.mkdir(parents=True, exist_ok=True)
    result = campaign(args.trials, args.seed, workdir)
    for t in result.trials:
        if args.show or t.verdict in ("silent", "traceback", "not-restored"):
            print(f"{t.verdict:18} {t.fault:22} {t.detail}\n    {t.note}")
    print(json.dumps(result.figures(), indent=1))


if __name__ == "__main__":
    main()
