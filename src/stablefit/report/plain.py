"""User text shown as text: control characters made visible, never sent to a terminal raw.

Column names, paths and cell values come from the user's files; an escape sequence among
them would otherwise move the cursor, change colours or retitle the terminal. This module
imports nothing heavy: the entry point uses it for its last-resort messages.
"""

from __future__ import annotations

# Lone surrogates are how Python keeps bytes of a file name that are not UTF-8.
_SURROGATE_BYTES = range(0xDC80, 0xDD00)


def _escape(character: str) -> str:
    code = ord(character)
    if code in _SURROGATE_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    return repr(character)[1:-1] if code < 0x10000 else f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` with every non-printable character written as an escape (``\\x1b``, ``\\n``).

    Examples
    --------
    >>> visible("speed [m/s]")
    'speed [m/s]'
    >>> visible("red\\x1b[31m")
    'red\\\\x1b[31m'
    """
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def visible_lines(text: str) -> str:
    """:func:`visible` for each line of a multi-line text (its line breaks kept)."""
    return "\n".join(visible(line) for line in text.split("\n"))
