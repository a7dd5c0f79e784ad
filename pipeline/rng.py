"""Stable, explicit randomness.

Every random draw in the toolkit comes from a generator seeded from stable identifiers
(global seed, perturbation kind, clip id, view index, epoch, ...). Python's ``hash()`` of a
string changes per process, so seeds go through hashlib instead.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_seed(*parts: object) -> int:
    """A 64-bit seed derived from ``parts`` that is identical in every process and platform.

    Parts are converted with ``str`` and joined with an unambiguous separator, so
    ``stable_seed(1, "a")`` and ``stable_seed("1", "a")`` are equal on purpose (ids in the
    manifest are strings) while ``stable_seed("1a")`` differs.
    """
    payload = "\x1f".join(f"{len(str(p))}:{p}" for p in parts).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(payload, digest_size=8).digest(), "little")


def make_rng(*parts: object) -> np.random.Generator:
    """A numpy Generator seeded with :func:`stable_seed` of ``parts``."""
    return np.random.default_rng(stable_seed(*parts))
