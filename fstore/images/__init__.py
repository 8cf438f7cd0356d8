"""The one image reader: discovery, decode (exact and fast), preprocessing, batches of uint8.

Bottom layer: imports only ``fstore.errors``/``fstore.fsutil`` and third-party libraries.
"""
