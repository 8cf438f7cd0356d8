"""A saved classifier applied to new images, through the model and preprocessing of its store.

The ONNX model is the one the classifier's store was built with (its path is in the store's
provenance; another path may be given). Its sha256 must be the one the classifier recorded,
otherwise the features would come from another model and the classifier refuses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fstore.classifiers.persist import SavedClassifier, load_classifier
from fstore.errors import ClassifierError
from fstore.images.discover import image_files


@dataclass(frozen=True)
class ClassifiedImage:
    """One image's predicted class; ``probability`` for the head, None for the SVM."""

    path: Path
    label: str
    probability: float | None

    def to_dict(self) -> dict:
        return {"path": str(self.path), "class": self.label, "probability": self.probability}


@dataclass(frozen=True)
class Classification:
    """Predictions for the images that could be read, and (path, reason) for the others."""

    classifier: str
    model_path: Path
    predictions: tuple[ClassifiedImage, ...]
    failed: tuple[tuple[Path, str], ...]

    def to_dict(self) -> dict:
        return {
            "classifier": self.classifier,
            "model_path": str(self.model_path),
            "predictions": [p.to_dict() for p in self.predictions],
            "failed": [{"path": str(p), "reason": r} for p, r in self.failed],
        }


def expand_images(paths: list[Path]) -> list[Path]:
    """Image files given, and the image files under folders given, in a stable order."""
    out: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            out.extend(image_files(path))
        elif path.exists():
            out.append(path)
        else:
            raise ClassifierError(f"no such image or folder: {path}")
    if not out:
        raise ClassifierError(f"no images found in {', '.join(map(str, paths))}")
    return out


def resolve_model(clf: SavedClassifier, model_path: Path | None) -> tuple[Path, str]:
    """The ONNX model to extract features with and its sha256, checked against ``clf``."""
    from fstore.images.reader import file_sha256

    recorded = clf.provenance.get("model_path", "")
    path = Path(model_path) if model_path else Path(recorded) if recorded else None
    if path is None:
        raise ClassifierError(
            "this classifier does not record the path of its model; "
            "pass --model PATH to the ONNX model its store was built with"
        )
    if not path.is_file():
        raise ClassifierError(
            f"model {path} is not there; pass --model PATH to the ONNX model "
            "the classifier's store was built with"
        )
    sha = file_sha256(path)
    clf.check_model(sha)
    return path, sha


def classify_images(
    paths: list[Path],
    classifier: Path,
    model_path: Path | None = None,
    provider: str = "cpu",
    batch_size: int = 16,
) -> Classification:
    """Predict the class of each image (files, or folders searched for images)."""
    from fstore.classifiers.combine import combine, layer_names
    from fstore.images.preprocess import Preprocessing
    from fstore.pipeline.run import extract_features

    clf = load_classifier(classifier)
    model, sha = resolve_model(clf, model_path)
    images = expand_images(paths)
    preprocessing = None
    if clf.provenance.get("preprocessing"):
        preprocessing = Preprocessing.from_json(clf.provenance["preprocessing"])
    layers = tuple(layer_names(clf.layer))
    features, good, bad = extract_features(
        images,
        model,
        layers,
        provider=provider,
        batch_size=batch_size,
        preprocessing=preprocessing,
    )
    good_set = set(good)
    failed = tuple((p, r) for p, r in bad if p not in good_set)
    if not good:
        return Classification(str(classifier), model, (), failed)
    X = combine([features[name].reshape(len(good), -1) for name in layers])
    labels = clf.predict(X, sha)
    probs = clf.predict_proba(X, sha)
    predictions = tuple(
        ClassifiedImage(path, clf.classes[label], None if probs is None else float(probs[i, label]))
        for i, (path, label) in enumerate(zip(good, labels, strict=True))
    )
    return Classification(str(classifier), model, predictions, failed)
