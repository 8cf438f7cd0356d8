"""``fstore build``, the pipeline: model resolution → plan → read → run → write, locally or on Ray.

Entry points: :func:`fstore.pipeline.model.build_store` (``fstore build`` as one call),
:class:`fstore.pipeline.config.BuildConfig`, and :func:`fstore.pipeline.run.extract_features`
(features of a few images without a store).
"""
