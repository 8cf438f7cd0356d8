"""Looking inside the network: ImageNet top-k predictions, feature maps and first-layer filters.

* :mod:`fstore.inspection.prediction`: :class:`Predictor` and :func:`predict` (ONNX Runtime only).
* :mod:`fstore.inspection.featuremaps`: :func:`activations` and :func:`filters` return arrays.
* :mod:`fstore.inspection.figures`: draws those arrays with matplotlib's Agg canvas.

Importing this package imports neither torch, ONNX Runtime nor matplotlib.
"""

from fstore.inspection.featuremaps import (
    ActivationGrid,
    FilterGrid,
    InspectionError,
    activations,
    filters,
    first_conv_weights,
    normalise_maps,
)
from fstore.inspection.figures import activation_figure, filter_figure, save_figure
from fstore.inspection.prediction import (
    ClassScore,
    PredictFailure,
    Prediction,
    PredictionReport,
    Predictor,
    find_images,
    predict,
)

__all__ = [
    "ActivationGrid",
    "ClassScore",
    "FilterGrid",
    "InspectionError",
    "Prediction",
    "PredictionReport",
    "Predictor",
    "PredictFailure",
    "activation_figure",
    "activations",
    "filter_figure",
    "filters",
    "find_images",
    "first_conv_weights",
    "normalise_maps",
    "predict",
    "save_figure",
]
