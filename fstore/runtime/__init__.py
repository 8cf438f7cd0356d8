"""The bottom layer's model runtime: ONNX Runtime sessions and the backend interface."""
