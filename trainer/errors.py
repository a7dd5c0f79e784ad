"""The trainer's base of the errors it raises for a user mistake.

A :class:`~pipeline.errors.NCoreError`, like every pipeline error: the command line
(``pipeline/cli.py``'s ``Commands``) turns any of them into one line on stderr and exit 1,
so a pipeline error raised under the trainer reaches the user as it is, never re-raised
as a TrainerError. Library code never imports click.
"""

from __future__ import annotations

from pipeline.errors import NCoreError


class TrainerError(NCoreError):
    """A problem the user can fix (bad option, missing view set, unloadable backbone, ...).

    The message is one line that names the offending item and, where there is one, the fix.
    """
