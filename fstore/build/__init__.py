"""``fstore build``, the pipeline: model resolution → plan → read → run → write, locally or on Ray.

Entry points: :func:`fstore.build.model.build` (``fstore build`` as one call),
:class:`fstore.build.config.BuildConfig`, and :func:`fstore.build.run.extract_features`
(features of a few images without a store).
"""
