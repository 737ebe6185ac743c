"""Opening a report in real headless Chromium (Debian's ``chromium``, driven by Playwright).

:class:`Browser` opens a page from disk with a fresh profile and records everything that
would betray a broken or unsafe report: console errors, uncaught exceptions, dialogs
(``alert``), and every request the page makes (each one is aborted and recorded, so a
request to the network fails the test even on a machine that has a network). It counts
a chart's marks by the SVG ids the charts give them and saves a screenshot.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Flags for a headless browser in a container with no network.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)

# Marks inside an SVG group: <use> of a shared marker, or paths drawn one by one (those in
# <defs> are definitions, not marks).
_COUNT_MARKS = """(selector) => {
  let total = 0;
  for (const group of document.querySelectorAll(selector)) {
    const own = [...group.querySelectorAll('use, path')].filter(e => !e.closest('defs'));
    total += Math.max(own.length, 1);
  }
  return total;
}"""
_CHART_SIZES = """() => [...document.querySelectorAll('figure.chart')].map(f => {
  const box = f.querySelector('svg').getBoundingClientRect();
  return [f.dataset.chart, box.width, box.height];
})"""


def chromium_path() -> str:
    """Debian's chromium (``STABLEFIT_CHROMIUM`` overrides); the test command installs it."""
    found = os.environ.get("STABLEFIT_CHROMIUM") or shutil.which("chromium")
    if not found:
        raise RuntimeError(
            "chromium is not installed: apt-get install -y chromium (the README's test "
            "command does it)"
        )
    return found


@dataclass
class OpenedPage:
    """A report as the browser showed it, and what the page tried to do."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def marks(self, selector: str) -> int:
        """Marks drawn by the SVG groups matching ``selector``."""
        return int(self.page.evaluate(_COUNT_MARKS, selector))

    def count(self, selector: str) -> int:
        return int(self.page.evaluate("(s) => document.querySelectorAll(s).length", selector))

    def chart_sizes(self) -> dict[str, tuple[float, float]]:
        return {name: (w, h) for name, w, h in self.page.evaluate(_CHART_SIZES)}

    def text(self) -> str:
        return str(self.page.evaluate("() => document.body.innerText"))

    def svg_texts(self) -> list[str]:
        return list(
            self.page.evaluate(
                "() => [...document.querySelectorAll('svg text')].map(t => t.textContent)"
            )
        )

    def assert_clean(self, *, own_url: str | None = None) -> None:
        """No console error, no uncaught exception, no dialog, no request but the page's."""
        assert self.console_errors == []
        assert self.page_errors == []
        assert self.dialogs == []
        assert [url for url in self.requests if url != own_url] == []


class Browser:
    """One headless Chromium with a fresh profile; pages open from disk or from a string."""

    def __init__(self, profile: Path) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        self.context = self._playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium_path(),
            headless=True,
            args=list(CHROMIUM_FLAGS),
            viewport={"width": 1280, "height": 900},
        )

    def _watched(self) -> OpenedPage:
        page = self.context.new_page()
        opened = OpenedPage(page)
        page.on(
            "console",
            lambda m: opened.console_errors.append(m.text) if m.type == "error" else None,
        )
        page.on("pageerror", lambda error: opened.page_errors.append(str(error)))

        def dialog(d: Any) -> None:
            opened.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)

        def route(r: Any) -> None:
            opened.requests.append(r.request.url)
            # The page itself is read from disk; anything else is refused.
            if r.request.url.startswith("file://") and r.request.resource_type == "document":
                r.continue_()
            else:
                r.abort()

        page.route("**/*", route)
        return opened

    def open_file(self, path: Path) -> OpenedPage:
        opened = self._watched()
        opened.page.goto(path.resolve().as_uri(), wait_until="load")
        return opened

    def open_html(self, html: str) -> OpenedPage:
        opened = self._watched()
        opened.page.set_content(html, wait_until="load")
        return opened

    def close(self) -> None:
        self.context.close()
        self._playwright.stop()
