"""Headless Chromium for report tests: the page as a reader sees it (text of the
rendered DOM, and a screenshot)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def chromium() -> str:
    """The browser's path; skips the test when none is installed."""
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on PATH (apt-get install -y chromium); .ci/run installs it")


def _run(*args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120, check=True)
    return result.stdout


def rendered_dom(page: Path) -> str:
    """The DOM after Chromium loaded and laid out the page."""
    return _run("--dump-dom", page.resolve().as_uri())


def screenshot(page: Path, out: Path, width: int = 1000, height: int = 1800) -> Path:
    _run(f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri())
    return out


class _Text(HTMLParser):
    """Visible text: no style, script, head title or SVG tooltips."""

    HIDDEN = {"style", "script", "title", "head"}

    def __init__(self):
        super().__init__()
        self.hidden, self.parts = 0, []

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in self.HIDDEN
        if tag in ("tr", "p", "h1", "h2", "li", "g", "br"):
            self.parts.append("\n")

    def handle_endtag(self, tag):
        self.hidden -= tag in self.HIDDEN

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data + " ")


def visible_text(dom: str) -> str:
    parser = _Text()
    parser.feed(dom)
    return "".join(parser.parts)
