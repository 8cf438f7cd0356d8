"""The bottom layer's model runtime: ONNX Runtime sessions, providers, the backend interface,
the uint8 input prefix and the metadata fstore writes into a model."""
