"""The feature store's format (docs/store.md); other packages import from here."""

from fstore.store.layout import (
    Manifest,
    default_store_path,
    read_manifest,
    sidecar,
)
from fstore.store.reads import (
    FeatureSet,
    StoreInfo,
    iter_features,
    load_features,
    store_info,
    store_layers,
)
from fstore.store.shards import write_arrays

__all__ = [
    "FeatureSet",
    "Manifest",
    "StoreInfo",
    "default_store_path",
    "iter_features",
    "load_features",
    "read_manifest",
    "sidecar",
    "store_info",
    "store_layers",
    "write_arrays",
]
