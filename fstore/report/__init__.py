"""``fstore report``: the whole transfer-learning study of an image folder in one call.

The package imports nothing itself (``fstore report --help`` stays light).
:func:`fstore.report.run.run_report` builds the store if needed (:func:`fstore.build_store`),
runs every stage (network, sample predictions, activation maps, SVM, heads, PCA, layer study,
zero-shot, random splits, improvements, int8/fp16 fidelity, data quality, provenance) through
the library's own functions, caches each stage in the store's folder, and writes
``report.html`` (self-contained, figures embedded as base64 PNG), ``report.md`` and
``report.json``.

Options travel in one frozen :class:`fstore.report.config.ReportConfig`.
"""
