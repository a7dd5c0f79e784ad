"""Corpus importers: the registry face of :mod:`pipeline.datasets`.

- :mod:`~pipeline.datasets.base`: the shared records (:class:`Candidate`, :class:`Listing`,
  :class:`DatasetSpec`, :class:`ImportSummary`) and :class:`DatasetError`;
- one module per corpus (``synthetic``, ``vivae``, ``recanvo``, ``csvcorpus``), each
  listing its files and exposing a spec;
- :mod:`~pipeline.datasets.registry`: the registered corpora;
- :mod:`~pipeline.datasets.importer`: :func:`build_manifest`, the one path from a listing
  to a manifest (decoding, failures, vocabularies, splits).
"""

from __future__ import annotations

from pipeline.datasets.base import (
    IMPORT_STAGE,
    Candidate,
    DatasetError,
    DatasetSpec,
    ImportSummary,
    Listing,
    failure_category,
    safe_id,
)
from pipeline.datasets.importer import (
    build_manifest,
    decode_candidates,
    save_manifest_keeping_views,
)
from pipeline.datasets.registry import REGISTRY, dataset_names, default_data_dir, register

__all__ = [
    "IMPORT_STAGE",
    "REGISTRY",
    "Candidate",
    "DatasetError",
    "DatasetSpec",
    "ImportSummary",
    "Listing",
    "build_manifest",
    "dataset_names",
    "decode_candidates",
    "default_data_dir",
    "failure_category",
    "register",
    "safe_id",
    "save_manifest_keeping_views",
]
