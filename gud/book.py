"""What every chapter notebook does besides its own plots: the preamble, loading results,
the profile banner, HTML tables and figures.

A chapter is::

    from gud import book
    ch = book.chapter("e1")           # profile, configuration (collapsed), threads, plot style
    result = ch.result()              # stored result, computed here when the profile allows it
    ...plots of result.metrics / result.arrays, saved with ch.figure(fig, "e1-curves")...

Results of the ``ci`` profile are computed on the spot (or loaded when already stored);
``gpu`` and ``paper`` results are read from the committed store, and when one is missing the
chapter says so in a note and shows the ``ci`` result instead, labelled as such.
"""
from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any, Sequence

from .profiles import PROFILES, current_profile, experiment_config
from .results import REPO, Result, ResultsStore, save_figure
from .stats import html_table

__all__ = ["Chapter", "chapter", "PROFILE_TEXT", "display_html", "table"]

#: What a profile's numbers come from, in words for the reader.
PROFILE_TEXT = {
    "ci": "8×8 digits (scikit-learn, 17 grey levels) and small random fields; small networks trained on two CPU cores",
    "gpu": "MNIST and CIFAR-10 (JPEG mirror) at 32×32; U-Nets trained for minutes on one GPU",
    "paper": "the paper's data and training length where known",
}

FIGURES = REPO / "book" / "figures"


def display_html(html: str) -> None:
    from IPython.display import HTML, display

    display(HTML(html))


def table(header: Sequence[str], rows: Sequence[Sequence], caption: str | None = None,
          numeric: Sequence[bool] | None = None) -> None:
    """Display an HTML table (wraps to the page; numbers right-aligned where ``numeric``)."""
    display_html(html_table(header, rows, caption, numeric))


def _style() -> None:
    import matplotlib as mpl

    # figures are drawn at up to 10 in and shown at the page's ~7 in: fonts large enough to stay
    # at 8 pt or more after that scaling
    mpl.rcParams.update({"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11, "legend.fontsize": 10,
                         "xtick.labelsize": 10, "ytick.labelsize": 10, "figure.dpi": 100,
                         "savefig.bbox": "tight", "figure.constrained_layout.use": False})


@dataclass
class Chapter:
    """One chapter's experiment, profile and configuration."""

    experiment: str
    profile: str
    config: dict[str, Any]
    shown_profile: str | None = None  # the profile of the result actually shown

    def allow_compute(self, profile: str) -> bool:
        return profile == "ci" or os.environ.get("GUD_ALLOW_COMPUTE") == "1"

    def result(self) -> Result:
        """The result of this chapter for the book's profile: loaded from the store, computed
        here where the profile allows (``ci``, or ``GUD_ALLOW_COMPUTE=1``), else the ``ci``
        result with a note that the requested one is missing."""
        from .runner import run

        store = ResultsStore()
        found = store.load(self.experiment, self.profile, self.config)
        if found is None and self.allow_compute(self.profile):
            found = run(self.experiment, self.profile, config=self.config, log=lambda s: None)
        if found is not None:
            self.shown_profile = self.profile
            self.banner(found)
            return found
        ci = run(self.experiment, "ci", log=lambda s: None)
        self.shown_profile = "ci"
        self.config = ci.config  # the configuration of what is shown
        self.banner(ci, missing=self.profile)
        return ci

    def banner(self, result: Result, missing: str | None = None) -> None:
        """The profile banner: which profile, data and compute the page shows."""
        info, m = result.info, result.metrics
        data = m.get("data_description") or PROFILE_TEXT.get(result.profile, "")
        compute = _compute_text(info) + (f"; {m['compute_description']}" if m.get("compute_description") else "")
        note = ""
        if missing:
            note = (f"<p><b>The {escape(missing)} result of this chapter has not been computed yet.</b> "
                    f"This page shows the <code>ci</code> profile instead. To compute it: "
                    f"<code>python -m gud run {escape(self.experiment)} --profile {escape(missing)}</code>.</p>")
        other = ""
        if result.profile == "ci" and not missing:
            try:
                has_gpu = ResultsStore().load(self.experiment, "gpu", experiment_config(self.experiment, "gpu")) is not None
            except ValueError:
                has_gpu = False
            other = ("<br><b>gpu profile</b> (32×32 data): " + (
                "computed; its figures are shown, collapsed, below the ci ones" if has_gpu else
                f"configured, not computed yet (<code>python -m gud run {escape(self.experiment)} "
                f"--profile gpu</code>)"))
        display_html(f'<div class="gud-profile-banner admonition note"><p class="admonition-title">'
                     f'Profile <code>{escape(result.profile)}</code></p>{note}'
                     f"<p><b>Data:</b> {escape(data)}.<br><b>Compute:</b> {escape(compute)}.{other}</p></div>")

    def show_config(self) -> None:
        """The configuration, collapsed (a click opens it)."""
        body = escape(json.dumps(self.config, indent=1, sort_keys=True))
        display_html(f"<details class='gud-config'><summary>Configuration of {escape(self.experiment)}, "
                     f"profile <code>{escape(self.profile)}</code> ({len(self.config)} settings)</summary>"
                     f"<pre style='white-space: pre-wrap'>{body}</pre></details>")

    def figure(self, fig, name: str, show: bool = True):
        """Save ``fig`` under ``book/figures/<profile>/<name>.png|pdf`` (the profile of the
        result shown) and display it."""
        import matplotlib.pyplot as plt

        save_figure(fig, name, profile=self.shown_profile or self.profile)
        if show:
            plt.show()
        else:
            plt.close(fig)

    def other_profile_figure(self, name: str, caption: str) -> None:
        """Where the book shows ``ci`` results and a committed ``gpu`` figure of the same name
        exists, show it below, collapsed, with its caption."""
        if self.shown_profile != "ci":
            return
        png = FIGURES / "gpu" / f"{name}.png"
        if not png.exists():
            return
        data = base64.b64encode(_thumbnail(png)).decode()
        display_html(f"<details class='gud-other-profile'><summary>The same figure in the <code>gpu</code> "
                     f"profile: {escape(caption)}</summary><img src='data:image/png;base64,{data}' "
                     f"style='max-width:100%' alt='{escape(caption)}'></details>")


def _thumbnail(png: Path, width: int = 800) -> bytes:
    """The PNG scaled down to at most ``width`` pixels (page width), to keep notebooks small."""
    import io

    from PIL import Image

    with Image.open(png) as im:
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _compute_text(info: dict) -> str:
    dev = info.get("device_name") or info.get("device") or "?"
    wall = info.get("wall_seconds_last_call")
    parts = [f"{dev}"]
    if info.get("torch_threads") and str(info.get("device", "cpu")).startswith("cpu"):
        parts.append(f"{info['torch_threads']} torch thread(s)")
    if wall is not None:
        parts.append(f"{wall / 60:.1f} min for the last computation" if wall >= 60 else f"{wall:.0f} s")
    return ", ".join(parts)


def chapter(experiment: str, threads: int | None = None, show_config: bool = True) -> Chapter:
    """Start a chapter: the profile (env ``GUD_PROFILE``), the experiment's configuration
    (shown collapsed), torch threads and the book's plot style."""
    from .pipeline import set_threads

    profile = current_profile()
    cfg = experiment_config(experiment, profile)
    set_threads(threads or cfg.get("threads"))
    _style()
    ch = Chapter(experiment, profile, cfg)
    if show_config:
        ch.show_config()
    return ch


def profiles_table() -> None:
    """A table of the run profiles, for the introduction."""
    table(["profile", "what it means"], [[p, t] for p, t in PROFILES.items()])


# ----------------------------------------------------------------------------- compute notes


def notes_banner(profile: str | None = None) -> None:
    """The banner of a page that is not one experiment (the compute notes)."""
    profile = profile or current_profile()
    display_html(f'<div class="gud-profile-banner admonition note"><p class="admonition-title">Profile '
                 f'<code>{escape(profile)}</code></p><p><b>Data:</b> {escape(PROFILE_TEXT.get(profile, ""))}.<br>'
                 f"<b>Compute:</b> as stated in each table.</p></div>")


def status_rows(profiles: Sequence[str] = ("ci", "gpu", "paper")) -> list[list[str]]:
    """One row per experiment: ``stored`` / ``missing`` per profile (current configurations)."""
    from .runner import status

    st = {p: status(p) for p in profiles}
    exps = list(next(iter(st.values())))
    return [[e] + [st[p].get(e, "—") for p in profiles] for e in exps]


def training_rows(profile: str | None = None) -> list[list]:
    """Every trained network of every stored result of ``profile``: experiment, network, steps,
    best step, batch, wall time, examples/s, device."""
    from .profiles import EXPERIMENTS

    profile = profile or current_profile()
    store = ResultsStore()
    out = []
    for exp in EXPERIMENTS:
        try:
            cfg = experiment_config(exp, profile)
        except ValueError:
            continue
        res = store.load(exp, profile, cfg)
        if res is None:
            continue
        for name, t in res.info.get("trainings", {}).items():
            out.append([exp, name, t.get("steps"), t.get("best_step"), cfg.get("batch_size"),
                        f"{t.get('train_s', float('nan')):.0f}", f"{t.get('examples_per_s', float('nan')):.0f}",
                        res.info.get("device_name", "?")])
    return out


def benchmark_rows(folder: Path | None = None) -> list[list]:
    """Rows of every committed ``benchmarks/bench_train.py --json`` file under ``results/benchmarks``."""
    folder = folder or REPO / "results" / "benchmarks"
    out = []
    for f in sorted(folder.glob("*.json")):
        d = json.loads(f.read_text())
        m = d["machine"]
        for r in d["rows"]:
            dev = "CPU" if m["device"] == "cpu" else m["device_name"]
            out.append([f"{dev}, {m['threads']} thread(s), torch {m['torch'].split('+')[0]} ({m['date']})",
                        r["size"], "×".join(map(str, r["shape"])), r["batch"], r["precision"],
                        f"{r['ours_params'] / 1e6:.2f}M / {r['peer_params'] / 1e6:.2f}M",
                        f"{r['ours_img_s']:.1f}", f"{r['peer_img_s']:.1f}", f"{r['ratio']:.2f}"])
    return out
