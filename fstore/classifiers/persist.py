"""Saving trained classifiers without pickle, loading them, and refusing foreign features.

* The SVM (a scikit-learn ``Pipeline``) is saved with skops (``.skops``), whose loader builds
  only types it trusts: a file holding anything else is refused, never executed.
* The head is saved as safetensors (``.safetensors``): its scaler, PCA and layer weights as
  tensors, everything else as JSON metadata. Loading it needs neither torch nor pickle; the
  loaded head predicts in NumPy.

Both record the store's provenance (``model_sha256`` of the ONNX model that computed the
features, preprocessing, layer), and :meth:`SavedClassifier.predict` refuses features that
come from another model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fstore.classifiers.evaluation import TrainingRun, options_dict
from fstore.classifiers.head import forward_numpy, softmax
from fstore.errors import ClassifierError
from fstore.featurestore.features import FeatureSet
from fstore.fsutil import commit_file, tmp_path_for

FORMAT = "fstore-classifier"
FORMAT_VERSION = 1
SUFFIXES = {"svm": ".skops", "head": ".safetensors"}


@dataclass
class HeadPredictor:
    """A trained head pipeline (scale → PCA → layers) as NumPy arrays; predicts without torch.

    ``labels[j]`` is the label (store class index) of output column ``j``.
    """

    scale: str
    coefs: list[np.ndarray]
    intercepts: list[np.ndarray]
    labels: np.ndarray
    scale_mean: np.ndarray | None = None
    scale_scale: np.ndarray | None = None
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None

    @classmethod
    def from_pipeline(cls, pipeline) -> HeadPredictor:
        """From a fitted ``Pipeline(scale, pca, head)`` as :func:`.head.head_pipeline` makes."""
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import Normalizer, StandardScaler

        scaler, reducer, head = pipeline["scale"], pipeline["pca"], pipeline["head"]
        predictor = cls("none", [np.asarray(w) for w in head.coefs_],
                        [np.asarray(b) for b in head.intercepts_], np.asarray(head.classes_))
        if isinstance(scaler, StandardScaler):
            if not (scaler.with_mean and scaler.with_std):
                raise TypeError("cannot save a head pipeline whose StandardScaler skips a step")
            predictor.scale = "standard"
            predictor.scale_mean, predictor.scale_scale = scaler.mean_, scaler.scale_
        elif isinstance(scaler, Normalizer):
            predictor.scale = "l2"
        elif scaler != "passthrough":
            raise TypeError(f"cannot save a head pipeline with scaler {scaler!r}")
        if isinstance(reducer, PCA):
            if reducer.whiten:
                raise TypeError("cannot save a head pipeline with a whitening PCA")
            predictor.pca_mean, predictor.pca_components = reducer.mean_, reducer.components_
        elif reducer != "passthrough":
            raise TypeError(f"cannot save a head pipeline with reducer {reducer!r}")
        return predictor

    def transform(self, X: np.ndarray) -> np.ndarray:
        Z = np.asarray(X, dtype=np.float64)
        if self.scale == "standard":
            Z = (Z - self.scale_mean) / self.scale_scale
        elif self.scale == "l2":
            norms = np.linalg.norm(Z, axis=1, keepdims=True)
            Z = Z / np.where(norms == 0, 1.0, norms)
        if self.pca_components is not None:
            Z = (Z - self.pca_mean) @ self.pca_components.T
        return Z

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(forward_numpy(self.transform(X), self.coefs, self.intercepts))

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.labels[np.argmax(self.predict_proba(X), axis=1)]

    def tensors(self) -> dict[str, np.ndarray]:
        out = {"labels": self.labels.astype(np.int64)}
        for i, (w, b) in enumerate(zip(self.coefs, self.intercepts, strict=True)):
            out[f"head.{i}.weight"], out[f"head.{i}.bias"] = w, b
        for name in ("scale_mean", "scale_scale", "pca_mean", "pca_components"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return {k: np.ascontiguousarray(v) for k, v in out.items()}

    @classmethod
    def from_tensors(cls, scale: str, tensors: dict[str, np.ndarray]) -> HeadPredictor:
        n_layers = sum(1 for k in tensors if k.startswith("head.") and k.endswith(".weight"))
        return cls(scale, [tensors[f"head.{i}.weight"] for i in range(n_layers)],
                   [tensors[f"head.{i}.bias"] for i in range(n_layers)], tensors["labels"],
                   tensors.get("scale_mean"), tensors.get("scale_scale"), tensors.get("pca_mean"),
                   tensors.get("pca_components"))


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
        model: ``model.predict(X)`` gives class indices (``predict_proba`` for the head).
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
        full[:, self.model.labels] = probs
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
    model = HeadPredictor.from_pipeline(fit.model) if run.kind == "head" else fit.model
    metrics = {"test_accuracy": fit.evaluation.accuracy, "n_train": fit.n_train,
               "fit_seconds": fit.fit_seconds, **{k: v for k, v in fit.details.items()
                                                  if k in ("best_C", "best_epoch", "epochs_run")}}
    return SavedClassifier(run.kind, run.layer, tuple(run.classes), run.n_features,
                           dict(run.provenance), options_dict(run.options), model, metrics)


def _header(clf: SavedClassifier) -> dict[str, str]:
    return {"format": FORMAT, "format_version": str(FORMAT_VERSION), "kind": clf.kind,
            "layer": clf.layer, "classes": json.dumps(list(clf.classes)),
            "n_features": str(clf.n_features), "provenance": json.dumps(clf.provenance),
            "options": json.dumps(clf.options), "metrics": json.dumps(clf.metrics)}


def _from_header(header: dict[str, str], model: Any, path: Path) -> SavedClassifier:
    if header.get("format") != FORMAT:
        raise ClassifierError(f"{path} is not an fstore classifier")
    if int(header.get("format_version", "0")) > FORMAT_VERSION:
        raise ClassifierError(f"{path} was saved by a newer fstore; upgrade fstore to use it")
    return SavedClassifier(header["kind"], header["layer"], tuple(json.loads(header["classes"])),
                           int(header["n_features"]), json.loads(header["provenance"]),
                           json.loads(header["options"]), model, json.loads(header["metrics"]))


def default_filename(kind: str) -> str:
    """``classifier.skops`` for the SVM, ``classifier.safetensors`` for the head."""
    return "classifier" + SUFFIXES[kind]


def save_classifier(clf: SavedClassifier, path: Path) -> Path:
    """Write ``clf`` to ``path`` atomically (skops for the SVM, safetensors for the head)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(path)
    if clf.kind == "svm":
        import skops.io as sio

        sio.dump({**_header(clf), "model": clf.model}, tmp)
    elif clf.kind == "head":
        from safetensors.numpy import save_file

        save_file(clf.model.tensors(), str(tmp),
                  metadata={**_header(clf), "scale": clf.model.scale})
    else:
        raise ValueError(f"unknown classifier kind {clf.kind!r}")
    commit_file(tmp, path)
    return path


def load_classifier(path: Path) -> SavedClassifier:
    """Read a classifier written by :func:`save_classifier`; untrusted content is refused."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"no classifier file at {path} (train one with fstore train svm)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":  # a zip archive: skops
        return _load_skops(path)
    return _load_safetensors(path)


def _load_skops(path: Path) -> SavedClassifier:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    if untrusted:
        raise ClassifierError(f"{path} holds types fstore does not trust "
                              f"({', '.join(untrusted[:3])}); refusing to load it")
    try:
        data = sio.load(path, trusted=None)
    except Exception as exc:  # noqa: BLE001 - any failure means an unreadable file
        raise ClassifierError(f"cannot read classifier {path}: {exc}") from None
    if not isinstance(data, dict) or "model" not in data:
        raise ClassifierError(f"{path} is not an fstore classifier")
    return _from_header({k: v for k, v in data.items() if k != "model"}, data["model"], path)


def _load_safetensors(path: Path) -> SavedClassifier:
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="np") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ClassifierError(f"{path} is not a classifier file fstore can read: {exc}") from None
    if header.get("format") != FORMAT or header.get("kind") != "head":
        raise ClassifierError(f"{path} is not an fstore classifier")
    model = HeadPredictor.from_tensors(header.get("scale", "none"), tensors)
    return _from_header(header, model, path)
