"""Saving trained classifiers without pickle, loading them, and refusing foreign features.

* The SVM (a scikit-learn ``Pipeline``) is saved with skops (``.skops``), whose loader builds
  only types it trusts: a file holding anything else is refused, never executed.
* The head is saved as safetensors (``.safetensors``): its layer weights as tensors, its
  scaling and PCA (scikit-learn objects) as skops bytes in one more tensor, everything else as
  JSON metadata. Loading it needs neither torch nor pickle: it comes back as the same
  ``Pipeline(scale, pca, head)`` it was trained as, whose head predicts in NumPy.

Both record the store's provenance (``model_sha256`` of the ONNX model that computed the
features, preprocessing, layer), and :meth:`SavedClassifier.predict` refuses features that
come from another model.

Both are sealed: the file's sha256 is written into the file itself (the zip comment of a
``.skops``, a metadata entry of a ``.safetensors``), computed with those 64 digits as zeros.
A file with any byte changed (a truncated copy, a flipped bit, an edited ``classes``) is
refused; a damaged classifier cannot be repaired, only trained again.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fstore.classifiers.evaluation import TrainingRun, options_dict
from fstore.errors import ClassifierError
from fstore.fsutil import commit_file, tmp_path_for
from fstore.store import FeatureSet

FORMAT = "fstore-classifier"
#: 2: the head's scaling and PCA are the scikit-learn objects, saved with skops.
#: 3: the file is sealed with its sha256.
FORMAT_VERSION = 3
_SEAL = b"fstore-sha256:"
_UNSEALED = _SEAL + b"0" * 64
_SEALED = re.compile(re.escape(_SEAL) + rb"[0-9a-f]{64}")
SUFFIXES = {"svm": ".skops", "head": ".safetensors"}
_TRANSFORM = "transform.skops"
#: fstore's own estimator types that a saved classifier may hold, trusted by name: skops
#: builds them from their fitted arrays, as it builds scikit-learn's.
FSTORE_TYPES = [
    "fstore.classifiers.kernel.GramSVC",
    "fstore.classifiers.steps.SignedSqrt",
]


def head_tensors(pipeline) -> dict[str, np.ndarray]:
    """A fitted ``Pipeline(scale, pca, head)`` (:func:`.head.head_pipeline`) as tensors: the
    head's weights and labels, and its scaling and PCA as skops bytes (uint8)."""
    import skops.io as sio

    head = pipeline["head"]
    out = {
        "labels": np.asarray(head.classes_, dtype=np.int64),
        _TRANSFORM: np.frombuffer(sio.dumps(pipeline[:-1]), dtype=np.uint8),
    }
    for i, (w, b) in enumerate(zip(head.coefs_, head.intercepts_, strict=True)):
        out[f"head.{i}.weight"], out[f"head.{i}.bias"] = w, b
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def head_from_tensors(tensors: dict[str, np.ndarray], path: Path):  # -> Pipeline
    """The inverse of :func:`head_tensors`; the scaling and PCA must be types skops trusts."""
    import skops.io as sio
    from sklearn.pipeline import Pipeline

    from fstore.classifiers.head import TorchHeadClassifier

    data = tensors[_TRANSFORM].tobytes()
    _refuse_untrusted(sio.get_untrusted_types(data=data), path)
    transform = sio.loads(data, trusted=FSTORE_TYPES)
    n_layers = sum(1 for k in tensors if k.startswith("head.") and k.endswith(".weight"))
    head = TorchHeadClassifier.from_weights(
        [tensors[f"head.{i}.weight"] for i in range(n_layers)],
        [tensors[f"head.{i}.bias"] for i in range(n_layers)],
        tensors["labels"],
    )
    return Pipeline([*transform.steps, ("head", head)])


def _refuse_untrusted(untrusted: list[str], path: Path) -> None:
    untrusted = [name for name in untrusted if name not in FSTORE_TYPES]
    if untrusted:
        raise ClassifierError(
            f"{path} holds types fstore does not trust "
            f"({', '.join(untrusted[:3])}); refusing to load it"
        )


@dataclass
class SavedClassifier:
    """A trained classifier with what it needs to be applied safely.

    Attributes:
        kind: ``svm`` or ``head``.
        layer: the layer whose features it takes.
        classes: class names; predictions are indices into it.
        n_features: features per row it expects.
        provenance: the provenance of the store it was trained from (``model_sha256``...).
        options: the training options, as a dict.
        model: a fitted scikit-learn ``Pipeline``; ``model.predict(X)`` gives class indices
            (and ``predict_proba`` for the head).
        metrics: test accuracy at training time and the like, for the record.
    """

    kind: str
    layer: str
    classes: tuple[str, ...]
    n_features: int
    provenance: dict
    options: dict
    model: Any
    metrics: dict = field(default_factory=dict)

    @property
    def model_sha256(self) -> str:
        return str(self.provenance.get("model_sha256", ""))

    def check_model(self, model_sha256: str | None) -> None:
        """Raise ``ClassifierError`` unless features from model ``model_sha256`` may be used."""
        if not self.model_sha256:
            raise ClassifierError(
                "this classifier records no model sha256 (its store had no provenance), so "
                "fstore cannot check that features come from the same model; retrain it on a "
                "store built by fstore build"
            )
        if model_sha256 != self.model_sha256:
            raise ClassifierError(
                f"this classifier was trained on features of model {self.model_sha256[:12]}…, "
                f"not of model {(model_sha256 or 'unknown')[:12]}…; apply it to features of "
                "the model its store was built with, or retrain it"
            )

    def _checked(self, X: np.ndarray, model_sha256: str | None) -> np.ndarray:
        self.check_model(model_sha256)
        X = np.asarray(X)
        X = X.reshape(len(X), -1)
        if X.shape[1] != self.n_features:
            raise ClassifierError(
                f"this classifier takes {self.n_features} {self.layer} features per image, "
                f"got {X.shape[1]}"
            )
        return X

    def predict(self, X: np.ndarray, model_sha256: str | None) -> np.ndarray:
        """Class indices for features ``X`` computed by the model with hash ``model_sha256``."""
        return np.asarray(self.model.predict(self._checked(X, model_sha256)), dtype=np.int64)

    def predict_proba(self, X: np.ndarray, model_sha256: str | None) -> np.ndarray | None:
        """Class probabilities ``(N, len(classes))`` for the head; None for the SVM."""
        if self.kind != "head":
            return None
        probs = self.model.predict_proba(self._checked(X, model_sha256))
        full = np.zeros((len(probs), len(self.classes)))
        full[:, self.model.classes_] = probs
        return full

    def predict_features(self, fs: FeatureSet) -> np.ndarray:
        """Class indices for a feature set, checking its layer and model."""
        if fs.layer != self.layer:
            raise ClassifierError(f"this classifier takes {self.layer} features, not {fs.layer}")
        return self.predict(fs.X, fs.provenance.get("model_sha256"))


def classifier_from_run(run: TrainingRun) -> SavedClassifier:
    """The model of a single-split training run, ready to save."""
    if len(run.fits) != 1:
        raise ClassifierError(
            f"a run over {len(run.fits)} random splits has no single model to save; "
            "train without --splits to save a classifier"
        )
    fit = run.fits[0]
    kept = ("best_C", "best_epoch", "epochs_run")
    metrics = {
        "test_accuracy": fit.evaluation.accuracy,
        "n_train": fit.n_train,
        "fit_seconds": fit.fit_seconds,
        **{k: v for k, v in fit.details.items() if k in kept},
    }
    return SavedClassifier(
        kind=run.kind,
        layer=run.layer,
        classes=tuple(run.classes),
        n_features=run.n_features,
        provenance=dict(run.provenance),
        options=options_dict(run.options),
        model=fit.model,
        metrics=metrics,
    )


def _header(clf: SavedClassifier) -> dict[str, str]:
    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "kind": clf.kind,
        "layer": clf.layer,
        "classes": json.dumps(list(clf.classes)),
        "n_features": str(clf.n_features),
        "provenance": json.dumps(clf.provenance),
        "options": json.dumps(clf.options),
        "metrics": json.dumps(clf.metrics),
    }


def _retrain(kind: str | None) -> str:
    return f"train it again with fstore train {kind if kind in SUFFIXES else 'svm'}"


def _check_header(header: dict[str, str], path: Path, data: bytes) -> None:
    if header.get("format") != FORMAT:
        raise ClassifierError(f"{path} is not an fstore classifier")
    try:
        version = int(header.get("format_version", "0"))
    except ValueError:
        version = 0
    kind = header.get("kind")
    if version > FORMAT_VERSION:
        raise ClassifierError(f"{path} was saved by a newer fstore; upgrade fstore to use it")
    if version < FORMAT_VERSION:
        what = "a head" if kind == "head" else "a classifier"
        raise ClassifierError(
            f"{path} is {what} saved by an older fstore (format {version}); {_retrain(kind)}"
        )
    if not _seal_holds(data):
        raise ClassifierError(_damaged(path, kind, "its sha256 does not match its bytes"))


def _damaged(path: Path, kind: str | None, why: str) -> str:
    return f"classifier {path} is damaged ({why}); it cannot be repaired: {_retrain(kind)}"


def _seal(path: Path) -> None:
    """Write the file's sha256 in place of the zeros it was saved with."""
    data = path.read_bytes()
    assert data.count(_UNSEALED) == 1, "a classifier file is saved with one seal"
    digest = hashlib.sha256(data).hexdigest().encode()
    with open(path, "r+b") as f:
        f.seek(data.index(_UNSEALED) + len(_SEAL))
        f.write(digest)


def _seal_holds(data: bytes) -> bool:
    seals = _SEALED.findall(data)
    if len(seals) != 1:
        return False
    digest = seals[0][len(_SEAL) :]
    return hashlib.sha256(data.replace(seals[0], _UNSEALED)).hexdigest().encode() == digest


def _from_header(header: dict[str, str], model: Any, path: Path) -> SavedClassifier:
    try:
        return _parse_header(header, model)
    except (KeyError, ValueError, TypeError) as exc:  # sealed, yet not what fstore writes
        raise ClassifierError(_damaged(path, header.get("kind"), repr(exc))) from None


def _parse_header(header: dict[str, str], model: Any) -> SavedClassifier:
    return SavedClassifier(
        kind=header["kind"],
        layer=header["layer"],
        classes=tuple(json.loads(header["classes"])),
        n_features=int(header["n_features"]),
        provenance=json.loads(header["provenance"]),
        options=json.loads(header["options"]),
        model=model,
        metrics=json.loads(header["metrics"]),
    )


def default_filename(kind: str) -> str:
    """``classifier.skops`` for the SVM, ``classifier.safetensors`` for the head."""
    return "classifier" + SUFFIXES[kind]


def save_classifier(clf: SavedClassifier, path: Path) -> Path:
    """Write ``clf`` to ``path`` atomically (skops for the SVM, safetensors for the head)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    if clf.kind == "svm":
        import zipfile

        import skops.io as sio

        sio.dump({**_header(clf), "model": clf.model}, tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.comment = _UNSEALED
    elif clf.kind == "head":
        from safetensors.numpy import save_file

        header = {**_header(clf), "seal": _UNSEALED.decode()}
        save_file(head_tensors(clf.model), str(tmp), metadata=header)
    else:
        raise ValueError(f"unknown classifier kind {clf.kind!r}")
    _seal(tmp)
    commit_file(tmp, path)
    return path


def load_classifier(path: Path) -> SavedClassifier:
    """Read a classifier written by :func:`save_classifier`; untrusted content is refused, and
    so is a damaged file (one line saying to train it again)."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"no classifier file at {path} (train one with fstore train svm)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ClassifierError(f"cannot read classifier {path}: {exc.strerror}") from None
    if data[:4] == b"PK\x03\x04":  # a zip archive: skops
        return _load_skops(path, data)
    return _load_safetensors(path, data)


def _load_skops(path: Path, data: bytes) -> SavedClassifier:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # noqa: BLE001 - any failure means a damaged archive
        raise ClassifierError(_damaged(path, "svm", type(exc).__name__)) from None
    _refuse_untrusted(untrusted, path)
    try:
        loaded = sio.loads(data, trusted=FSTORE_TYPES)
    except Exception as exc:  # noqa: BLE001 - any failure means an unreadable file
        raise ClassifierError(_damaged(path, "svm", f"{type(exc).__name__}: {exc}")) from None
    if not isinstance(loaded, dict) or "model" not in loaded:
        raise ClassifierError(f"{path} is not an fstore classifier")
    header = {k: v for k, v in loaded.items() if k != "model"}
    _check_header(header, path, data)
    return _from_header(header, loaded["model"], path)


def _load_safetensors(path: Path, data: bytes) -> SavedClassifier:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        tensors = load(data)
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")]).get("__metadata__")
    except (SafetensorError, ValueError, TypeError, AttributeError) as exc:
        raise ClassifierError(
            f"{path} is not a classifier file fstore can read ({exc}); if it was one, it is "
            f"damaged and cannot be repaired: {_retrain('head')}"
        ) from None
    header = header if isinstance(header, dict) else {}
    if header.get("kind") != "head":
        raise ClassifierError(f"{path} is not an fstore classifier")
    _check_header(header, path, data)
    try:
        model = head_from_tensors(tensors, path)
    except ClassifierError:
        raise
    except Exception as exc:  # noqa: BLE001 - sealed, yet not what fstore writes
        raise ClassifierError(_damaged(path, "head", f"{type(exc).__name__}: {exc}")) from None
    return _from_header(header, model, path)
