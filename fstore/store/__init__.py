"""The feature store's format: manifest, catalog, shard files, reads, verify, compact.

What other packages use is imported from here, so the modules below can change without them::

    from fstore.store import FeatureSet, load_features
"""

from fstore.store.arrays import write_arrays
from fstore.store.features import FeatureSet
from fstore.store.layout import (
    DEFAULT_STORE,
    Manifest,
    default_store_path,
    read_manifest,
    sidecar,
)
from fstore.store.reads import (
    StoreInfo,
    iter_features,
    load_features,
    resolve_layer,
    store_info,
    store_layers,
)

__all__ = [
    "DEFAULT_STORE",
    "FeatureSet",
    "Manifest",
    "StoreInfo",
    "default_store_path",
    "iter_features",
    "load_features",
    "read_manifest",
    "resolve_layer",
    "sidecar",
    "store_info",
    "store_layers",
    "write_arrays",
]
