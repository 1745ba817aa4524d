"""Render the built book (``_build/html``) in headless Chromium and check every page.

Run after ``make book`` (``make test-html``; ``.ci/run`` does). Skipped when the book is not
built or Chromium is missing (failed instead when ``GUD_REQUIRE_BROWSER=1``, as in the GitHub
workflow). ``GUD_BOOK_HTML`` points the tests at another build.

Chromium loads each page once, at a 1280 px wide viewport, with ``layout.js`` injected, and
dumps the DOM. Per page:

* rendering: the DOM holds the page's title and every figure caption, and no "??" or
  unresolved-reference text; every ``<img>`` points at a non-empty file of the build;
* layout: no notebook output area, table, display equation or code block is wider than the
  content column (its content wider than its box, e.g. a cut-off code line, or its box past the
  column's edges);
* legibility: no text in a numbered figure (``gud.book``) is drawn smaller than ``MIN_TEXT_PX``
  at a 1280 px window, and every numbered figure has a caption that starts with its number;

and over all pages: every chapter (notebook page) has a visible profile banner (class ``gud-profile-banner``),
and no page's text holds process talk (``PROCESS_TALK``). One screenshot goes to
``_build/screenshots/`` as a CI artefact; ``GUD_HTML_SHOTS=DIR`` saves a full-length 1280 px
screenshot of every page there too.
"""

from __future__ import annotations

import functools
import html
import json
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
HTML = Path(os.environ.get("GUD_BOOK_HTML") or REPO / "_build" / "html").resolve()
SHOTS = REPO / "_build" / "screenshots"
LAYOUT_JS = Path(__file__).with_name("layout.js")
WIDTH = 1280  # viewport width, px, for the layout checks and screenshots
MIN_TEXT_PX = 9.0  # smallest text in a figure as drawn at WIDTH (gud.book.MIN_TEXT_PX at save time)
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
]  # fmt: skip
BROKEN = ("broken reference", "??", "Unknown directive", "undefined label", "[?]")
# how the book was made, not what it says: no page may contain these (case-insensitive)
PROCESS_TALK = {
    "the lead": r"\bthe lead\b",
    "when this chapter was written": r"when this chapter was written",
    "available to the authors": r"available to the authors",
    "computed and stored result": r"computed and stored result",
    "/root/": r"/root/",
    "Linux-": r"\bLinux-",
}
REQUIRE_BROWSER = os.environ.get("GUD_REQUIRE_BROWSER", "") not in ("", "0")

if REQUIRE_BROWSER:  # CI: a missing book or browser is a failure, not a skip
    assert (HTML / "index.html").exists(), f"GUD_REQUIRE_BROWSER is set but {HTML} holds no built book"
    assert CHROMIUM is not None, "GUD_REQUIRE_BROWSER is set but no chromium on PATH"
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


class _Rendered:
    """One page as Chromium rendered it: exit status, stderr, dumped DOM, layout report."""

    def __init__(self, done: subprocess.CompletedProcess):
        self.returncode, self.stderr, self.dom = done.returncode, done.stderr, done.stdout
        m = re.search(r'id="gud-layout-report"[^>]*data-report="([^"]*)"', self.dom) or re.search(
            r'data-report="([^"]*)"[^>]*id="gud-layout-report"', self.dom
        )
        self.layout: dict | None = json.loads(html.unescape(m.group(1))) if m else None


def _instrumented(page: Path, folder: Path) -> Path:
    """A copy of ``page`` in ``folder`` that loads everything from the build and runs layout.js."""
    text = page.read_text(encoding="utf-8")
    base = f'<base href="{page.parent.as_uri()}/">'
    text, n = re.subn(r"<head[^>]*>", lambda m: m.group(0) + base, text, count=1)
    assert n == 1, f"{page.name}: no <head>"
    script = f"<script>{LAYOUT_JS.read_text(encoding='utf-8')}</script>"
    at = text.rfind("</body>")
    text = text[:at] + script + text[at:] if at >= 0 else text + script
    copy = folder / page.name
    copy.write_text(text, encoding="utf-8")
    return copy


@functools.cache
def _render(page: Path) -> _Rendered:
    """Chromium renders ``page`` once (1280 px wide) for all the checks below."""
    with tempfile.TemporaryDirectory(prefix="gud-page-") as folder:
        copy = _instrumented(page, Path(folder))
        done = _chromium(f"--window-size={WIDTH},1000", "--virtual-time-budget=5000", "--dump-dom", copy.as_uri())
    rendered = _Rendered(done)
    shots = os.environ.get("GUD_HTML_SHOTS")
    if shots and rendered.layout:
        folder = Path(shots)
        folder.mkdir(parents=True, exist_ok=True)
        shot = folder / (str(page.relative_to(HTML).with_suffix("")).replace(os.sep, "__") + ".png")
        height = min(max(int(rendered.layout["height"]), 800), 16000)
        _chromium(f"--window-size={WIDTH},{height}", "--virtual-time-budget=5000", f"--screenshot={shot}", page.as_uri())
    return rendered


PAGES = _pages() if HTML.exists() else []


def _id(page: Path) -> str:
    return str(page.relative_to(HTML))


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_page_renders(page: Path):
    static = _parse(page.read_text(encoding="utf-8"))
    done = _render(page)
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _parse(done.dom)
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
        assert "mjx-container" in done.dom, f"{page.name}: maths not typeset (MathJax missing?)"
    for bad in BROKEN:
        assert bad not in visible, f"{page.name}: {bad!r} in the rendered text"

    for src in static.imgs + dom.imgs:
        url = urlparse(src)
        if url.scheme in ("data",):
            continue
        assert url.scheme in ("", "file"), f"{page.name}: image from outside the book: {src}"
        target = Path(unquote(url.path)) if url.scheme == "file" else (page.parent / unquote(url.path)).resolve()
        assert target.is_file() and target.stat().st_size > 0, f"{page.name}: image {src} missing or empty"


def _describe(item: dict) -> str:
    cell = f"code cell {item['cell']} ({item.get('source', '')[:60]!r})" if item.get("cell") else "text"
    return (
        f"  {item['element']} in section #{item.get('section') or '?'}, {cell}: +{item['overflow']} px: "
        f"{item['how']}; starts {item.get('text', '')[:60]!r}"
    )


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_layout_fits(page: Path):
    """No output area, table or display equation wider than the content column at 1280 px."""
    done = _render(page)
    assert done.returncode == 0, done.stderr[-2000:]
    report = done.layout
    assert report is not None, f"{page.name}: layout.js left no report (script blocked or page never loaded)"
    assert report["innerWidth"] == WIDTH, f"viewport {report['innerWidth']} px, not {WIDTH}: check --window-size"
    problems = [_describe(item) for item in report["overflow"]]
    if report["docWidth"] > WIDTH + 1:
        problems.append(f"  the whole page is {report['docWidth']} px wide: it scrolls sideways at {WIDTH} px")
    column = report["column"]
    assert not problems, (
        f"{page.name}: {len(problems)} element(s) wider than the content column "
        f"({column['element']}, {column['width']} px at a {WIDTH} px viewport):\n" + "\n".join(problems)
    )


@pytest.mark.parametrize("page", PAGES, ids=_id)
def test_figures_legible_and_numbered(page: Path):
    """Every numbered figure shows its text at ``MIN_TEXT_PX`` or more at 1280 px, and its
    caption starts with "Figure <chapter>.<n>." matching its anchor ``#fig-<chapter>-<n>``."""
    done = _render(page)
    report = done.layout or {}
    small = [f"  #{f['id']}: {f['minTextPx']:.1f} px (drawn {f['shown']} px wide, natural {f['natural']:.0f} px)"
             for f in report.get("figures", []) if f["minTextPx"] < MIN_TEXT_PX - 0.05]
    assert not small, f"{page.name}: figure text under {MIN_TEXT_PX:g} px at {WIDTH} px:\n" + "\n".join(small)
    text = page.read_text(encoding="utf-8")
    for m in re.finditer(r'<figure class="gud-figure" id="fig-([\w-]+?)-(\d+[a-z]?)">.*?<figcaption[^>]*>(.*?)</figcaption>',
                         text, flags=re.S):
        caption = _norm(re.sub(r"<[^>]+>", "", m.group(3)))
        assert re.match(rf"Figure [A-Z]\d?\.{m.group(2)}\. \S", caption), (
            f"{page.name}: figure #fig-{m.group(1)}-{m.group(2)} has caption {caption[:60]!r}")


def test_profile_banners():
    """Every chapter (a page built from a notebook) shows a visible element of class
    ``gud-profile-banner`` naming the profile, data and compute of what it shows."""
    missing, hidden = [], []
    chapters = [p for p in PAGES if (REPO / "book" / f"{p.stem}.ipynb").exists()]
    assert chapters, "no chapter pages found"
    for page in chapters:
        report = _render(page).layout or {}
        banners = report.get("banners", [])
        if not banners:
            missing.append(_id(page))
        elif not any(b["visible"] for b in banners):
            hidden.append(_id(page))
    assert not missing and not hidden, (
        f"{len(missing)} of {len(chapters)} chapters have no profile banner (an element of class "
        f"'gud-profile-banner'): {', '.join(missing) or '-'}; banner present but not visible: {', '.join(hidden) or '-'}"
    )


def test_no_process_talk():
    """No page's text says how it was made (the authors' process, machine paths, platform strings)."""
    found = []
    for page in PAGES:
        text = re.sub(r"\s+", " ", " ".join(_parse(page.read_text(encoding="utf-8")).text))
        for name, pattern in PROCESS_TALK.items():
            for m in re.finditer(pattern, text, flags=re.I):
                found.append(f"  {_id(page)}: {name!r} in {text[max(0, m.start() - 60) : m.end() + 60]!r}")
    assert not found, f"process talk on {len(found)} place(s):\n" + "\n".join(found)


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
