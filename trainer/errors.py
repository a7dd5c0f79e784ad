"""The one exception type that the trainer raises for a user mistake.

The command line turns it into a one-line ``click.ClickException``; library code never
imports click.
"""

from __future__ import annotations


class TrainerError(Exception):
    """A problem the user can fix (bad option, missing view set, unloadable backbone, ...).

    The message is one line that names the offending item and, where there is one, the fix.
    """
