"""fstore: VGG16 features through ONNX Runtime into a crash-safe HDF5 store, and classifiers."""

__version__ = "0.1.0"
