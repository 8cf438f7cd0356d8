"""Real weights: EfficientNet-Lite1 (ImageNet-trained) on 600 15-Scene images, marked ``real``.

Runs where ``../shared/models/efficientnet_lite1.onnx`` and ``../shared/data/scene15`` lie
beside the repository (CI has them; ``FSTORE_SHARED`` points elsewhere) and skips cleanly
otherwise. One ``fstore report`` over 20 training and 20 test images per class gives the store
and every figure checked here; about 50 s on 2 cores.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fstore.images.preprocess import Preprocessing

SHARED = Path(
    os.environ.get("FSTORE_SHARED") or Path(__file__).resolve().parents[1].parent / "shared"
)
MODEL = SHARED / "models" / "efficientnet_lite1.onnx"
DATA = SHARED / "data" / "scene15"
#: The model's preprocessing, as ../shared/models/README.md gives it.
LITE1 = Preprocessing(resize=274, crop=240, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
PER_SPLIT = 20

pytestmark = [
    pytest.mark.real,
    pytest.mark.slow,  # its fixture builds a Lite1 store of 600 images
    pytest.mark.skipif(
        not (MODEL.is_file() and DATA.is_dir()),
        reason=f"needs {MODEL} and {DATA} (the shared folder beside the clone)",
    ),
]


@pytest.fixture(scope="module")
def subset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train|test/<class>/``: the first 20 images (by name) of each class and split, linked."""
    root = tmp_path_factory.mktemp("scene15-600")
    for split in ("train", "test"):
        for folder in sorted((DATA / split).iterdir()):
            target = root / split / folder.name
            target.mkdir(parents=True)
            for image in sorted(folder.glob("*.jpg"))[:PER_SPLIT]:
                (target / image.name).symlink_to(image)
    return root


@pytest.fixture(scope="module")
def report(subset: Path, tmp_path_factory: pytest.TempPathFactory):
    from fstore.report.config import ReportConfig
    from fstore.report.run import run_report

    config = ReportConfig(
        images=subset,
        out=tmp_path_factory.mktemp("real-report"),
        model=MODEL,
        preprocessing=LITE1,
        layers=("pooled", "logits"),
        C=(0.1, 1.0, 10.0),
        cv=3,
        hidden=(64,),
        splits=2,
        per_class=10,
        precisions=("int8",),
        calibration_count=16,
        samples=3,
    )
    return config, run_report(config)


def test_features_equal_onnx_runtime_on_torchvision_preprocessing(report):
    """fstore's features against plain ONNX Runtime fed by torchvision's transforms: ``exact``
    decoding through the in-graph normalisation equals them; the store (``fast``, the default)
    keeps the fidelity rule that made it the default (mean cosine >= 0.995)."""
    transforms = pytest.importorskip("torchvision.transforms")
    import onnxruntime as ort
    from PIL import Image

    from fstore.export.precision import cosine_rows
    from fstore.images.reader import ImageReader
    from fstore.runtime.session import OrtBackend
    from fstore.store import load_features

    config, _ = report
    fs = load_features(config.store_path, "pooled")
    pick = np.arange(0, len(fs.keys), len(fs.keys) // 15)  # one image of each class
    prepare = transforms.Compose([
        transforms.Resize(LITE1.resize), transforms.CenterCrop(LITE1.crop),
        transforms.ToTensor(), transforms.Normalize(LITE1.mean, LITE1.std),
    ])  # fmt: skip
    batch = np.stack(
        [prepare(Image.open(config.images / k).convert("RGB")).numpy() for k in fs.keys[pick]]
    )
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["pooled"], {"input": batch})
    reader = ImageReader(LITE1, "exact")
    pixels = np.stack([reader.decode((config.images / k).read_bytes())[0] for k in fs.keys[pick]])
    exact = OrtBackend.open(MODEL, "cpu", outputs=("pooled",), preprocessing=LITE1).run(pixels)
    assert cosine_rows(exact["pooled"], expected).min() >= 0.9999
    stored = cosine_rows(fs.X[pick], expected)
    assert stored.mean() >= 0.995 and stored.min() >= 0.98


def test_svm_and_int8_on_real_weights(report):
    """int8 by fstore's recipe, calibrated on 16 images, against fp32 on the 600 images.

    Measured (fresh cache, onnxruntime 1.32, U8S8 on a VNNI CPU): mean / min cosine 0.9956 /
    0.9829 and +0.33 points. Over all 4,485 images the recipe gives 0.9956 / 0.9713 with U8S8
    and 0.9953 / 0.9779 with U8U8, the format of x86 CPUs without VNNI, so the issue's bar
    (mean 0.99, min 0.95) holds for both. 300 test images make one image 0.33 points.
    """
    _, result = report
    assert result.data["summary"]["svm_accuracy"] >= 0.7
    int8 = result.data["sections"]["precision"]["variants"]["int8"]
    assert abs(int8["change_points"]) <= 1.0
    assert int8["mean_cosine"] >= 0.99
    assert int8["min_cosine"] >= 0.95


def test_report_page_has_every_section(report):
    from fstore.report.render import section_list

    _, result = report
    page = result.files["html"].read_text()
    for anchor, title, _ in section_list(result.data):
        assert f'<h2 id="{anchor}">{title}</h2>' in page
    assert result.data["sections"]["zeroshot"]["available"]
    assert result.data["sections"]["predictions"]["available"]


def test_svm_grid_equals_scikit_learn_on_fstore_features(report):
    """fstore's default C grid and 5 folds on its own stored ``pooled`` features (300 × 1,280,
    fewer rows than features, so the kernel solver) against plain scikit-learn's
    ``GridSearchCV(SVC(kernel="linear"))`` on the same l2-normalised rows and folds."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer
    from sklearn.svm import SVC

    from fstore.classifiers.svm import train_svm
    from fstore.classifiers.svm_options import SvmOptions
    from fstore.store import load_features

    config, _ = report
    fs = load_features(config.store_path, "pooled")
    options = SvmOptions(seed=0)
    fit = train_svm(fs, options).fits[0]
    assert fit.details["solver"] == "kernel"
    train, test = fs.train, fs.test
    folds = StratifiedKFold(options.cv, shuffle=True, random_state=options.seed)
    grid = {"svc__C": list(options.C)}
    reference = GridSearchCV(make_pipeline(Normalizer(), SVC(kernel="linear")), grid, cv=folds)
    reference.fit(train.X, train.y)
    assert fit.details["best_C"] == reference.best_params_["svc__C"]
    sklearn_accuracy = reference.score(test.X, test.y)
    assert abs(fit.evaluation.accuracy - sklearn_accuracy) <= 0.003  # the 0.3 points
