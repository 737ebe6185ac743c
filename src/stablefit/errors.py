"""Errors stablefit raises for input it cannot use.

Every message names what is wrong (the column, the rows), and how to fix it. The command
line turns a :class:`StablefitInputError` into a short message and exit code 2.
"""

from __future__ import annotations


class StablefitInputError(ValueError):
    """Input that stablefit cannot use: the message says what, where and the fix."""


class StablefitWarning(UserWarning):
    """A hazard in the data or the fit that the user should know about."""
