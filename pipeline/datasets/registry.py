"""The registered corpora, in the order ``--help`` shows them.

A corpus module exposes a :class:`~pipeline.datasets.base.DatasetSpec`; adding a corpus
means adding its spec to :data:`REGISTRY` here.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.datasets import csvcorpus, recanvo, synthetic, vivae
from pipeline.datasets.base import DatasetSpec

REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        synthetic.SPEC,
        vivae.SPEC,
        recanvo.SPEC,
        recanvo.BALANCED_SPEC,
        csvcorpus.SPEC,
    )
}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add (or replace) a corpus; returns ``spec``."""
    REGISTRY[spec.name] = spec
    return spec


def dataset_names() -> list[str]:
    return list(REGISTRY)


def default_data_dir(spec: DatasetSpec) -> Path:
    return Path("data") / spec.folder
