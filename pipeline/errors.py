"""The one root of every error the toolkit raises for a problem the user can fix.

:class:`NCoreError` is the root; each stage has its own base below it,
:class:`PipelineError` here and ``TrainerError`` (``trainer/errors.py``), and each module
keeps its own subclass (``ManifestError``, ``ShardError``, ``DatasetError``,
``AudioError``, ``PerturbationError``, ``SplitError``, ``InspectError``, ``PrepError``,
...), so a message names where it comes from. The message is one line naming the
offending item and, where there is one, the fix. Both command lines (``ncore-prep``,
``ncore-train``) print any :class:`NCoreError` as that line and exit 1
(``pipeline/cli.py``'s :class:`~pipeline.cli.Commands`), so the trainer lets a pipeline
error through as it is instead of catching it to raise its own.
"""

from __future__ import annotations


class NCoreError(Exception):
    """A problem the user can fix (bad input, bad data, bad option); one-line message."""


class PipelineError(NCoreError, ValueError):
    """Input or data the pipeline cannot use; the message is one line naming the item.

    Also a ``ValueError``: callers that read a record guard with ``except ValueError``
    (``pipeline/qa.py`` skips a view set whose failures it cannot read that way)."""
