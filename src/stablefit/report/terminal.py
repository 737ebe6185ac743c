"""The rich Console stablefit prints with: user text in it is text, never markup.

A column ``speed [m/s]`` stays ``speed [m/s]`` (rich would read ``[m/s]`` as a style, and
``[/kg]`` as a closing tag it cannot match), ``:smile:`` is not an emoji code, and an
escape sequence in a name is shown as ``\\x1b`` instead of reaching the terminal. Styles
are given as ``style=`` arguments or :class:`rich.text.Text` spans, never as markup.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from stablefit.report.plain import visible


class PlainConsole(Console):
    """A :class:`rich.console.Console` without markup, emoji codes or highlighting, which
    shows the control characters of the strings it prints as escapes."""

    def __init__(self, **options: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **options)

    def render_str(self, text: str, **options: Any) -> Text:
        options.update(markup=False, emoji=False, highlight=False)
        return super().render_str(visible(text), **options)


def plain_text(value: str, style: str = "") -> Text:
    """A :class:`rich.text.Text` of user text, its control characters made visible."""
    return Text(visible(value), style=style)
