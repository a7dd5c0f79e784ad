"""The one base class of every error the pipeline raises for bad input or bad data.

Each module keeps its own subclass (``ManifestError``, ``ShardError``, ``DatasetError``,
``AudioError``, ``PerturbationError``, ``SplitError``, ``InspectError``, ``PrepError``), so
a message names where it comes from, and a command catches :class:`PipelineError` alone.
"""

from __future__ import annotations


class PipelineError(ValueError):
    """Input or data the pipeline cannot use; the message is one line naming the item."""
