"""The statistics layer, torch-free, below both stages (``pipeline/`` and ``trainer/``).

One implementation of each: :mod:`~pipeline.stats.metrics` (accuracy, balanced accuracy /
UAR, macro F1), :mod:`~pipeline.stats.probe` (the probe estimator, the held-out probe,
one-hot), :mod:`~pipeline.stats.crossfit` (stratified cross-fitting, the cross-validated
probe), :mod:`~pipeline.stats.bootstrap` (the percentile bootstrap over clips and the
paired difference) and :mod:`~pipeline.stats.protocol` (originals / views / transfer, the
other-label reference). ``trainer/probes.py`` and ``pipeline/selectivity/`` use these; the
layout test (tests/test_layout.py) keeps scikit-learn's estimators and the bootstrap's
resampling here and torch out.
"""
