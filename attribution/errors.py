"""The user-facing error kinds every layer raises. A leaf: it imports nothing from the project, so the
configuration, the readers and the writers can all raise them without importing each other.

The jobs map both to exit code 2 with one line (``jobs/_cli.py``): the message is the whole answer.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


class InputError(ValueError):
    """The input can't be used as configured; the message names the table, column or file."""
