"""The feature store: the build pipeline (plan → read → run → write), the store, reads."""
