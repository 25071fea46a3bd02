"""Evaluation: judges (``judges``: guidance-loss scores, classifier accuracy, ink mass;
``distances``: KID / FID; ``registry``: judges by name), scoring of (item, method) records
(``scoring``), statistics with confidence intervals (``stats``), the comparison summary and its
files (``summary``, ``writers``, ``plot``, ``side_by_side``: the W&B table), the digits world's
parts (``digits_parts``), and the runs of the digits tuning sweep (``runs``). Nothing is loaded at import."""
