"""Render the built book (``_build/html``) in headless Chromium and check every page.

Run after ``make book`` (``make test-html``; ``.ci/run`` does). Skipped when the book is not
built or Chromium is missing. Per page: Chromium loads it and dumps the DOM; the DOM must hold
the page's title and every figure caption, and no "??" or unresolved-reference text; every
``<img>`` must point at a non-empty file of the build. One screenshot goes to
``_build/screenshots/`` as a CI artefact.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

REPO = Path(__file__).resolve().parents[2]
HTML = REPO / "_build" / "html"
SHOTS = REPO / "_build" / "screenshots"
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
]  # fmt: skip
BROKEN = ("broken reference", "??", "Unknown directive", "undefined label", "[?]")

pytestmark = [
    pytest.mark.skipif(not (HTML / "index.html").exists(), reason="book not built: run `make book` first"),
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)"),
]


def _pages() -> list[Path]:
    skip = {"genindex.html", "search.html"}
    pages = [p for p in HTML.rglob("*.html") if not {"_static", "_sources"} & set(p.parts) and p.name not in skip]
    return sorted(p for p in pages if 'http-equiv="Refresh"' not in p.read_text(encoding="utf-8")[:500])


class _Page(HTMLParser):
    """Collects the title, <h1> text, figure captions, <img> sources and visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.title = ""
        self.h1: list[str] = []
        self.captions: list[str] = []
        self.imgs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs).get("src") or "")
        elif tag == "h1":
            self.h1.append("")
            self.stack.append(tag)
        elif tag not in ("br", "hr", "meta", "link", "input", "source", "wbr"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data):
        if any(t in self.stack for t in ("script", "style", "noscript", "template")):
            return
        if "title" in self.stack:
            self.title += data
        if "h1" in self.stack:
            self.h1[-1] += data
        if "figcaption" in self.stack:
            self.captions.append(data)
        self.text.append(data)


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(s)).strip().replace("¶", "").replace("#", "").strip()


def _chromium(*args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="gud-chromium-") as profile:
        return subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args],
            check=False, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip


@pytest.mark.parametrize("page", _pages() if HTML.exists() else [], ids=lambda p: str(p.relative_to(HTML)))
def test_page_renders(page: Path):
    static = _parse(page.read_text(encoding="utf-8"))
    done = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _parse(done.stdout)
    visible = _norm(" ".join(dom.text))
    assert len(visible) > 100, f"{page.name}: almost no text rendered"

    headings = [h for h in map(_norm, static.h1) if h]
    assert headings, f"{page.name}: no <h1> heading"
    for heading in headings:
        assert heading in visible, f"{page.name}: heading {heading!r} not in the rendered page"
    for caption in map(_norm, static.captions):
        # MathJax replaces \(...\) by rendered maths: check the longest plain-text piece
        pieces = [p.strip() for p in re.split(r"\\\(.*?\\\)|\\\[.*?\\\]", caption)]
        text = max(pieces, key=len, default="")[:60]
        if text:
            assert text in visible, f"{page.name}: figure caption text {text!r} not rendered"
    if 'class="math notranslate' in page.read_text(encoding="utf-8"):  # maths: MathJax (shipped offline) typesets it
        assert "mjx-container" in done.stdout, f"{page.name}: maths not typeset (MathJax missing?)"
    for bad in BROKEN:
        assert bad not in visible, f"{page.name}: {bad!r} in the rendered text"

    for src in static.imgs + dom.imgs:
        url = urlparse(src)
        if url.scheme in ("data",):
            continue
        assert url.scheme in ("", "file"), f"{page.name}: image from outside the book: {src}"
        target = Path(unquote(url.path)) if url.scheme == "file" else (page.parent / unquote(url.path)).resolve()
        assert target.is_file() and target.stat().st_size > 0, f"{page.name}: image {src} missing or empty"


def test_screenshot():
    page = HTML / "book" / "intro.html"
    if not page.exists():
        page = HTML / "index.html"
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / f"{page.stem}.png"
    if shot.exists():
        os.remove(shot)
    done = _chromium("--window-size=1280,1600", "--virtual-time-budget=5000", f"--screenshot={shot}", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
