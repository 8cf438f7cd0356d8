"""What every stage of a report reads: the options, the store, its main layer, the cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from fstore.classifiers.improvements import CLASS_OUTPUTS
from fstore.images.preprocess import Preprocessing
from fstore.images.views import SEPARATOR
from fstore.report.config import ReportConfig
from fstore.report.stage_cache import StageCache
from fstore.store import FeatureSet


@dataclass
class Context:
    """One report run over one built store.

    Attributes:
        config: the options.
        store: the store file.
        manifest: the store's manifest (layers, shapes, provenance, fingerprint).
        cache: where stages are cached.
        results: the results of the stages run so far, by stage name.
        excluded: test keys left out of ``features`` (``--exclude-leaks``).
    """

    config: ReportConfig
    store: Path
    manifest: object  # fstore.store.Manifest
    cache: StageCache
    results: dict = field(default_factory=dict)
    excluded: tuple[str, ...] = ()

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self.manifest.layers)

    @property
    def main_layer(self) -> str:
        """The layer the classifier sections use: the first that does not hold class scores
        and is not the mean over views (``pooled@flip``)."""
        plain = self.plain_layers
        return next((n for n in plain if n not in CLASS_OUTPUTS), plain[0])

    @property
    def plain_layers(self) -> tuple[str, ...]:
        """The network's layers as stored, without their means over views (``pooled@flip``)."""
        return tuple(n for n in self.layers if SEPARATOR not in n)

    @property
    def provenance(self) -> dict:
        return dict(self.manifest.provenance)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_json(self.provenance["preprocessing"])

    @property
    def model_path(self) -> Path:
        return Path(self.provenance["model_path"])

    @property
    def image_root(self) -> Path:
        return Path(self.manifest.image_root)

    @cached_property
    def all_features(self) -> FeatureSet:
        """The main layer's features, every row, read once."""
        from fstore.store import load_features

        return load_features(self.store, self.main_layer)

    @cached_property
    def features(self) -> FeatureSet:
        """The main layer's features the sections use: without the ``excluded`` test rows."""
        fs = self.all_features
        if not self.excluded:
            return fs
        return fs.subset(~np.isin(fs.keys.astype(str), np.array(self.excluded, dtype=str)))

    def sample_images(self) -> list[Path]:
        """The first test image of each class (all rows without a test split), up to
        ``config.samples``, as paths."""
        fs = self.features
        test = fs.split == "test"
        rows = test if test.any() else np.ones(len(fs.keys), dtype=bool)
        chosen: list[Path] = []
        for label in range(len(fs.classes)):
            hits = [k for k, y, r in zip(fs.keys, fs.y, rows) if r and y == label]
            if hits and len(chosen) < self.config.samples:
                chosen.append(self.image_root / str(sorted(hits)[0]))
        return chosen
