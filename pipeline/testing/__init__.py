"""Builders of tiny, deterministic test data, shared by ``tests/`` and ``bench/``.

- :mod:`pipeline.testing.signals`: voiced clips with known F0 and formants, white noise;
- :mod:`pipeline.testing.corpus_trees`: corpus folders in the real releases' layouts
  (VIVAE, ReCANVo) and WAV bytes, for the importers;
- :mod:`pipeline.testing.corpora`: the toy view-set writer (views already in memory ->
  shards + manifest), the learnable trainer corpus, the perturbation-stage corpus with two
  clips that must fail, and the evaluation corpus built by the real pipeline.

Everything is drawn from seeded generators (``pipeline/rng.py``): the same call writes the
same bytes. Nothing here is imported by the toolkit's own commands.
"""
