"""The feature store's format: manifest, shard files, the index over them, reads, verify, compact.

What other packages use is imported from here, so the modules below can change without them::

    from fstore.store import FeatureSet, load_features
"""

from fstore.store.features import FeatureSet
from fstore.store.store import (
    DEFAULT_STORE,
    Manifest,
    default_store_path,
    iter_features,
    load_features,
    read_manifest,
    resolve_layer,
    sidecar,
    store_info,
    store_layers,
)

__all__ = [
    "DEFAULT_STORE",
    "FeatureSet",
    "Manifest",
    "default_store_path",
    "iter_features",
    "load_features",
    "read_manifest",
    "resolve_layer",
    "sidecar",
    "store_info",
    "store_layers",
]
