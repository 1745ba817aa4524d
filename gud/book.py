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
import math
import os
import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any, Mapping, Sequence

from .profiles import PROFILES, current_profile, experiment_config
from .results import REPO, Result, ResultsStore, save_figure
from .stats import html_table

__all__ = ["Chapter", "chapter", "PROFILE_TEXT", "display_html", "table", "configurations", "settings_rows", "plain"]

#: What a profile's numbers come from, in words for the reader.
PROFILE_TEXT = {
    "ci": "8×8 digits (scikit-learn, 17 grey levels) and small random fields; small networks trained on two CPU cores",
    "gpu": "32×32 images (CIFAR-10 from a JPEG mirror; MNIST in the framework chapter) and 32×32 random fields; "
           "U-Nets trained for minutes on one GPU",
    "paper": "the paper's data and training length where known",
}

FIGURES = REPO / "book" / "figures"

#: The letter(s) of each chapter's figure and table numbers ("Figure E1.3"): numbers are per
#: chapter, so a chapter's numbers do not move when another chapter changes.
TAGS = {"framework": "F", "e3": "E3", "toy": "T", "e1": "E1", "e2": "E2", "e4": "E4", "e5": "E5", "compute": "C",
        "configurations": "K"}
#: Samplers in words (captions and settings tables).
SAMPLER_NAMES = {
    "dpmpp_3m_sde": "DPM-Solver++(3M) SDE", "dpmpp_2m_sde": "DPM-Solver++(2M) SDE", "dpmpp_3m": "DPM-Solver++(3M)",
    "dpmpp_2m": "DPM-Solver++(2M)", "ddim": "DDIM", "em": "Euler–Maruyama", "heun": "Heun", "ancestral": "ancestral sampling",
}  # fmt: skip
#: Figures are shown at DISPLAY_DPI CSS px per inch, at most COLUMN_PX wide (the content column
#: at a 1280 px window; tests/html/test_render.py measures the rendered size), and no text in
#: them may then be smaller than MIN_TEXT_PX.
DISPLAY_DPI, COLUMN_PX, MIN_TEXT_PX = 100, 672, 9.0
#: The settings a reader needs, in words, in the order shown (the full configuration is on the
#: configurations page).
SETTINGS = {
    "datasets": "data", "image": "image", "basis": "basis", "wavelet": "wavelet", "levels": "wavelet levels",
    "bases": "bases", "prior": "prior", "priors": "priors", "labels": "ordering labels", "kernel": "covariance kernel",
    "dim": "pixels (D)", "convention": "end points of the schedule", "conventions": "end-point conventions compared",
    "gamma_denoise": "γ at t = 0 (clean end)", "gamma_noise": "γ at t = 1 (noise end)",
    "a_train": "inverse softness a, training range", "a_eval": "a, evaluated at", "r_train": "ordering mix r, training range",
    "r_eval": "r, evaluated at", "b_train": "column softness b, training range", "b_eval": "b, evaluated at",
    "b_col_eval": "column softness, evaluated at", "softness": "inverse softness a", "times": "times shown",
    "net": "network", "net_kwargs": "network size", "batch_size": "batch size", "lr": "learning rate",
    "max_steps": "training steps, at most", "eval_every": "validation loss every (steps)",
    "patience": "stop after this many validations without improvement", "seeds": "seeds", "seed": "seed",
    "n_time_samples": "Monte-Carlo times per test image (bits/dim)", "n_samples": "samples per sample score",
    "sampler": "sampler", "sampler_steps": "sampler steps", "samplers": "samplers compared",
}  # fmt: skip
#: Configuration values in words.
VALUE_WORDS = {
    "pca": "PCA", "fourier": "Fourier", "wavelet": "Haar wavelet", "haar": "Haar", "pixel": "pixels", "mlp": "residual MLP",
    "unet": "U-Net", "whitened": "whitened (matched to the data's variances)", "unwhitened": "white noise",
    "snr": "true SNR (the paper's)", "process": "process γ (the released code's)",
    "process-clipped": "process γ, clipped", "ou": "Ornstein–Uhlenbeck (exponential)",
    "china": "a photograph (scikit-learn's china.jpg)", "cifar10": "CIFAR-10", "mnist": "MNIST",
}  # fmt: skip
_CURRENT: "Chapter | None" = None  # the chapter whose tables table() numbers


def display_html(html: str) -> None:
    from IPython.display import HTML, display

    display(HTML(html))


def table(header: Sequence[str], rows: Sequence[Sequence], caption: str | None = None,
          numeric: Sequence[bool] | None = None) -> None:
    """Display an HTML table (wraps to the page; numbers right-aligned where ``numeric``). In a
    chapter, the table is numbered ("Table E1.2", anchor ``#tab-e1-2``) and its caption names the
    profile."""
    ch = _CURRENT
    if ch is None:
        display_html(html_table(header, rows, caption, numeric))
        return
    ch.n_tables += 1
    profile = ch.shown_profile or ch.profile
    text = (caption or "").strip()
    if "profile" not in text:  # a caption about another profile says so itself
        text = f"{text}; profile {profile}" if text else f"Profile {profile}"
    label = f"Table {ch.tag}.{ch.n_tables}. "
    display_html(f'<div class="gud-numbered" id="tab-{ch.experiment}-{ch.n_tables}">'
                 f"{html_table(header, rows, label + text[:1].upper() + text[1:] + '.', numeric)}</div>")


def _plain(value: Any) -> str:
    """A configuration value in words: lists joined, samplers named, dicts as key value pairs."""
    if isinstance(value, str):
        return SAMPLER_NAMES.get(value) or VALUE_WORDS.get(value, value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')} {_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


plain = _plain  # a configuration value in words, for captions


def settings_rows(config: dict[str, Any]) -> list[list[str]]:
    """The settings of ``config`` that :data:`SETTINGS` names, in words, one row each."""
    rows = []
    for key, name in SETTINGS.items():
        value = config.get(key)
        if value in (None, [], {}) or (isinstance(value, dict) and key != "net_kwargs"):
            continue
        if key == "datasets":
            value = [d.get("name", "?") if isinstance(d, dict) else d for d in value]
        rows.append([name, _plain(value)])
    return rows


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
    show_settings: bool = True
    n_figures: int = 0
    n_tables: int = 0
    stems: dict | None = None  # figure name -> numbered file stem
    parts: dict = field(default_factory=dict)  # figure name -> [number, index of its last part]
    shown: Result | None = None
    others: dict = field(default_factory=dict)  # profile -> its stored result (or None), loaded once

    @property
    def tag(self) -> str:
        return TAGS.get(self.experiment, self.experiment.upper())

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
            self.shown_profile, self.shown = self.profile, found
            self.banner(found)
            self._settings()
            return found
        ci = run(self.experiment, "ci", log=lambda s: None)
        self.shown_profile, self.shown = "ci", ci
        self.config = ci.config  # the configuration of what is shown
        self.banner(ci, missing=self.profile)
        self._settings()
        return ci

    def _settings(self) -> None:
        if self.show_settings:
            self.show_config()

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
            other = (f"<br><b>gpu profile</b> ({escape(data_words(self.experiment, 'gpu'))}): " + (
                "computed; its figures are shown, collapsed, below the ci ones" if has_gpu else
                f"configured, not computed yet (<code>python -m gud run {escape(self.experiment)} "
                f"--profile gpu</code>)"))
        older = ""
        if _by_earlier_code(result):
            older = (f"<br><b>Computed by an earlier version of <code>gud</code></b> than this page's: the numbers are "
                     f"as stored (<code>python -m gud run {escape(self.experiment)} --profile "
                     f"{escape(result.profile)}</code> recomputes them).")
        display_html(f'<div class="gud-profile-banner admonition note"><p class="admonition-title">'
                     f'Profile <code>{escape(result.profile)}</code></p>{note}'
                     f"<p><b>Data:</b> {escape(data)}.<br><b>Compute:</b> {escape(compute)}.{older}{other}</p></div>")

    def show_config(self) -> None:
        """The chapter's main settings in words (a numbered table); every setting is one click
        away on the configurations page."""
        profile = self.shown_profile or self.profile
        rows = settings_rows(self.config)
        ds = (self.shown.metrics.get("datasets") if self.shown is not None else None) or {}
        sources = [v["source"] for v in ds.values() if isinstance(v, dict) and v.get("source")] if isinstance(ds, dict) else []
        rows = [[k, "; ".join(sources) if k == "data" and sources else v] for k, v in rows]
        half = -(-len(rows) // 2)  # two settings per line: the table stays short
        rows = [left + (rows[half + i] if half + i < len(rows) else ["", ""]) for i, left in enumerate(rows[:half])]
        table(["setting", "value", "setting", "value"], rows,
              caption=f"the main settings of this chapter; profile {profile}")
        display_html(f"<p class='gud-config-link'>Every setting, as stored with the result: "
                     f"<a href='configurations.html#config-{escape(self.experiment)}'>configurations</a>.</p>")

    def facts(self, seeds: bool = True, sampler: bool | str = False, steps: int | None = None) -> str:
        """What a caption must say about the result shown, from its configuration: data, profile,
        seeds and (``sampler=True``: the configured one; a name: that one) the sampler."""
        res = self.shown
        cfg = res.config if res is not None else self.config
        m = res.metrics if res is not None else {}
        profile = self.shown_profile or self.profile
        ds = m.get("datasets")
        sources = [v.get("source") for v in ds.values() if isinstance(v, dict) and v.get("source")] \
            if isinstance(ds, dict) else []
        parts = [f"Data: {'; '.join(sources) or m.get('data_description') or PROFILE_TEXT.get(profile, '')}",
                 f"profile {profile}"]
        if seeds:
            s = cfg.get("seeds", [cfg["seed"]] if "seed" in cfg else [])
            if s:
                parts.append(f"seed{'s' if len(s) > 1 else ''} {_plain(list(s))}")
        if sampler:
            key = cfg.get("sampler") if sampler is True else sampler
            n = steps if steps is not None else cfg.get("sampler_steps")
            parts.append(f"sampler {SAMPLER_NAMES.get(key, key)}" + (f", {n} steps" if n else ""))
        return "; ".join(parts) + "."

    def figure(self, fig, name: str, caption: str = "", show: bool = True, seeds: bool = True,
               sampler: bool | str = False, steps: int | None = None, part: str | None = None):
        """Number ``fig`` within the chapter ("Figure E1.3"), check that its text is legible at
        page width, save it as ``book/figures/<profile>/<experiment>-<n>-<name>.png|pdf`` (the
        profile of the result shown) and display it with its caption and the anchor
        ``#fig-<experiment>-<n>``; the caption ends with the data, profile, seeds and sampler.

        Figures drawn in a loop (one per data set) pass ``part`` (e.g. the data set): they share
        one number and are lettered in order ("Figure E4.3a", file ``e4-3a-<name>-<part>``), so
        that the numbers of the figures after them do not depend on how many data sets a
        profile has."""
        import matplotlib.pyplot as plt

        from .plotting import text_px

        self.stems = self.stems or {}
        slug = name[len(self.experiment) + 1:] if name.startswith(self.experiment + "-") else name
        if part is None or name not in self.parts:
            self.n_figures += 1
            self.parts[name] = [self.n_figures, 0]
        else:
            self.parts[name][1] += 1
        n = f"{self.parts[name][0]}" if part is None else f"{self.parts[name][0]}{'abcdefghijklmnopqrstuvwxyz'[self.parts[name][1]]}"
        if part is not None:
            slug, name = f"{slug}-{part}", f"{name}-{part}"
        stem = self.stems[name] = f"{self.experiment}-{n}-{slug}"
        natural_px, width_in = text_px(fig, DISPLAY_DPI)
        shown_px = natural_px * min(1.0, COLUMN_PX / (width_in * DISPLAY_DPI))
        if shown_px < MIN_TEXT_PX - 0.05:
            plt.close(fig)
            raise ValueError(f"figure {name!r}: its smallest text is {shown_px:.1f} px at page width "
                             f"(at least {MIN_TEXT_PX:g}): use larger fonts or a narrower figure")
        png = save_figure(fig, stem, profile=self.shown_profile or self.profile)
        plt.close(fig)
        if not show:
            return
        full = f"{caption.strip()} {self.facts(seeds, sampler, steps)}".strip()
        data = base64.b64encode(_thumbnail(png, 1400)).decode()
        display_html(
            f'<figure class="gud-figure" id="fig-{self.experiment}-{n}">'
            f'<img src="data:image/png;base64,{data}" alt="Figure {self.tag}.{n}: {escape(caption[:150])}" '
            f'style="width:{round(width_in * DISPLAY_DPI)}px;max-width:100%" data-css-width="{width_in * DISPLAY_DPI:.1f}" '
            f'data-min-text-px="{natural_px:.2f}"><figcaption class="tex2jax_process mathjax_process">'
            f"<b>Figure {self.tag}.{n}.</b> {escape(full)}</figcaption></figure>")

    def other_profile_result(self, profile: str = "gpu") -> Result | None:
        """Where this page shows ``ci`` results: the stored result of ``profile`` for the
        chapter's current configuration of it, if any (else ``None``)."""
        if self.shown_profile != "ci":
            return None
        if profile not in self.others:
            self.others[profile] = ResultsStore().load(self.experiment, profile,
                                                       experiment_config(self.experiment, profile))
        return self.others[profile]

    def other_profile_caption(self, profile: str = "gpu") -> str:
        """What the stored ``profile`` result is, in words (data, seeds, compute), for the caption
        of its figures on a ``ci`` page; empty when there is none."""
        res = self.other_profile_result(profile)
        if res is None:
            return ""
        seeds = res.config.get("seeds") or []
        parts = [res.metrics.get("data_description", ""),
                 f"seed{'s' if len(seeds) > 1 else ''} {_plain(list(seeds))}" if seeds else "",
                 _compute_text(res.info),
                 "computed by an earlier version of gud, numbers as stored" if _by_earlier_code(res) else ""]
        return "; ".join(p for p in parts if p) + "."

    def other_profile_claims(self, profile: str = "gpu") -> None:
        """Where this page shows ``ci`` results and a ``profile`` result is stored: its claims
        table, under a line that says what it is."""
        res = self.other_profile_result(profile)
        if res is None:
            return
        display_html(f"<p>The same claims in the <code>{escape(profile)}</code> profile "
                     f"({escape(self.other_profile_caption(profile))[:-1]}):</p>")
        claims_table(res)

    def other_profile_figure(self, name: str, caption: str) -> None:
        """Where the book shows ``ci`` results and a committed ``gpu`` figure of the same figure
        exists, show it below, collapsed, with its caption."""
        if self.shown_profile != "ci":
            return
        stem = (self.stems or {}).get(name, name)
        png = FIGURES / "gpu" / f"{stem}.png"
        if not png.exists():
            return
        label = f"Figure {self.tag}.{stem.split('-')[1]}" if stem != name else "The same figure"
        data = base64.b64encode(_thumbnail(png)).decode()
        display_html(f"<details class='gud-other-profile'><summary>{label} in the <code>gpu</code> "
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
        n = info["torch_threads"]
        parts.append(f"{n} torch thread{'s' if n != 1 else ''}")
    if wall is not None:
        parts.append(f"{wall / 60:.1f} min wall time" if wall >= 60 else f"{wall:.0f} s wall time")
    return ", ".join(parts)


def _by_earlier_code(result: Result) -> bool:
    """Whether ``result`` was computed by another version of the package than the one running."""
    from .results import code_hash

    stored = result.info.get("code_hash")
    return bool(stored) and stored != code_hash()


def chapter(experiment: str, threads: int | None = None, show_config: bool = True) -> Chapter:
    """Start a chapter: the profile (env ``GUD_PROFILE``), the experiment's configuration
    (shown collapsed), torch threads and the book's plot style."""
    from .pipeline import set_threads

    profile = current_profile()
    cfg = experiment_config(experiment, profile)
    set_threads(threads or cfg.get("threads"))
    _style()
    global _CURRENT
    ch = _CURRENT = Chapter(experiment, profile, cfg, show_settings=show_config)
    return ch


def profiles_table() -> None:
    """A table of the run profiles, for the introduction."""
    table(["profile", "what it means"], [[p, t] for p, t in PROFILES.items()])


# ----------------------------------------------------------------------------- compute notes


def configurations(profiles: Sequence[str] = ("ci", "gpu", "paper")) -> None:
    """Every experiment's full configuration per profile, collapsed, with the anchor
    ``#config-<experiment>`` that the chapters' settings tables link to."""
    from .profiles import EXPERIMENTS
    from .results import config_hash

    for exp in EXPERIMENTS:
        parts = []
        for profile in profiles:
            try:
                cfg = experiment_config(exp, profile)
            except ValueError:
                continue
            body = escape(json.dumps(cfg, indent=1, sort_keys=True))
            parts.append(f"<details class='gud-config'><summary>profile {escape(profile)} ({len(cfg)} settings; "
                         f"stored under results/{escape(exp)}/{escape(profile)}/{config_hash(cfg)})</summary>"
                         f"<pre style='white-space: pre-wrap'>{body}</pre></details>")
        title = {"framework": "The framework (F)", "toy": "The Gaussian toy model (T)"}.get(exp, exp.upper())
        display_html(f"<div class='gud-configuration' id='config-{escape(exp)}'><p><b>{escape(title)}</b> "
                     f"(<code>{escape(exp)}</code>)</p>{''.join(parts)}</div>")


def notes_banner(profile: str | None = None, page: str = "compute") -> None:
    """The banner of a page that is not one experiment (the compute notes); the page's tables
    are numbered like a chapter's ("Table C.1")."""
    global _CURRENT
    profile = profile or current_profile()
    _CURRENT = Chapter(page, profile, {}, shown_profile=profile)
    display_html(f'<div class="gud-profile-banner admonition note"><p class="admonition-title">Profile '
                 f'<code>{escape(profile)}</code></p><p><b>Data:</b> {escape(PROFILE_TEXT.get(profile, ""))}.<br>'
                 f"<b>Compute:</b> as stated in each table.</p></div>")


def status_rows(profiles: Sequence[str] = ("ci", "gpu", "paper")) -> list[list[str]]:
    """One row per experiment: ``stored`` / ``missing`` per profile (current configurations)."""
    from .runner import status

    st = {p: status(p) for p in profiles}
    exps = list(next(iter(st.values())))
    return [[e] + [_status_word(st[p].get(e, "—")) for p in profiles] for e in exps]


def _status_word(s: str) -> str:
    """A result's status in a word or two (``python -m gud status`` gives the details)."""
    if s.startswith("code drift"):
        return "stored (by earlier code)"
    if s.startswith("stored"):
        return "stored"
    return s.split(":")[0]


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


def gpu_budget_rows(profile: str = "gpu") -> list[list]:
    """The training budget of each network of the ``gpu`` profile against the paper's 300k steps
    of batch 128, and its cost: measured (wall time of the stored result, its device, its
    training time and throughput) where the result is stored, else the configuration's estimate."""
    store = ResultsStore()
    rows = []
    for exp in ("e1", "e2", "e4", "e5"):
        c = experiment_config(exp, profile)
        seen = c.get("max_steps", 0) * c.get("batch_size", 0)
        res = store.load(exp, profile, c)
        if res is not None and res.info.get("wall_seconds_last_call"):
            tr = res.info.get("trainings", {}).values()
            train_s = sum(t.get("train_s", 0.0) for t in tr)
            rate = sum(t.get("examples_per_s", 0.0) for t in tr) / max(1, len(tr))
            cost = (f"measured: {res.info['wall_seconds_last_call'] / 60:.1f} min on one "
                    f"{res.info.get('device_name', res.info.get('device', '?'))} (training {train_s:.0f} s at "
                    f"{rate:,.0f} images/s; the rest is data, evaluation, samples and scores)")
        else:
            cost = c.get("cost_note", "")
        rows.append([exp, c.get("net", "?"), c.get("max_steps"), c.get("batch_size"), f"{seen / 1e6:.2f}M",
                     f"{seen / (300_000 * 128):.1%}", cost])
    return rows


def _benchmark_files(folder: Path | None = None) -> list[dict]:
    folder = folder or REPO / "results" / "benchmarks"
    return [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]


def benchmark_rows(folder: Path | None = None) -> list[list]:
    """Rows of every committed benchmark under ``results/benchmarks``: ``benchmarks/bench_train.py
    --json`` files (``rows``) and ``python -m gud bench --json`` files (``peer.rows``)."""
    out = []
    for d in _benchmark_files(folder):
        m = d["machine"]
        for r in d.get("rows") or d.get("peer", {}).get("rows", []):
            dev = "CPU" if m["device"] == "cpu" else m["device_name"]
            threads = f"{m['threads']} thread{'s' if m['threads'] != 1 else ''}"
            out.append([f"{dev}, {threads}, torch {m['torch'].split('+')[0]} ({m['date']})",
                        r["size"], "×".join(map(str, r["shape"])), r["batch"], r["precision"],
                        f"{r['ours_params'] / 1e6:.2f}M / {r['peer_params'] / 1e6:.2f}M",
                        f"{r['ours_gflop']:.2f} / {r['peer_gflop']:.2f}" if r.get("ours_gflop") and r.get("peer_gflop")
                        else "—",
                        f"{r['ours_img_s']:.1f}", f"{r['peer_img_s']:.1f}", f"{r['ratio']:.2f}"])
    return out


def fid_table(result: Result) -> None:
    """The FID of the stored 8-bit samples (``python -m gud fid``), with its protocol, or one line
    saying that this result has none."""
    m = result.metrics
    fid = m.get("fid") or {}
    if not fid:
        display_html("<p><b>FID:</b> not computed for this result (the <code>ci</code> profile's 8×8 images "
                     "are too small for Inception features; a <code>gpu</code> result gets it offline with "
                     "<code>python -m gud fid</code>).</p>")
        return
    proto = m.get("fid_protocol", {})
    n = proto.get("n_samples")

    def setting(key: str) -> str:  # "a1.6-r0" -> "a = 1.6, r = 0"; other parts as they are
        return ", ".join(re.sub(r"^([a-z])(-?[\d.]+)$", r"\1 = \2", part) for part in re.split(r"[-/]", key))

    rows = [[k.split("/")[0], setting(k.split("/", 1)[1]), f"{v:.1f}"] for k, v in sorted(fid.items())]
    caption = (f"FID of {n} samples per setting against {proto.get('reference', 'the test split')} "
               f"({proto.get('network', 'Inception-v3')}; {proto.get('preprocessing', '')}). From {n} samples "
               f"FID is biased upwards (the bias falls like 1/N): not comparable with FIDs of 50,000 samples, "
               f"such as the paper's")
    table(["data", "setting", "FID"], rows, numeric=[False, False, True], caption=caption)


def probe_rows(folder: Path | None = None) -> list[list]:
    """Training and sampling throughput of the networks of a profile, fp32 beside bf16, from every
    committed ``python -m gud bench --json`` file (its ``probe``) under ``results/benchmarks``."""
    out = []
    for d in _benchmark_files(folder):
        m = d["machine"]
        dev = "CPU" if m["device"] == "cpu" else m["device_name"]
        for r in d.get("probe", []):
            out.append([f"{dev}, torch {m['torch'].split('+')[0]} ({m['date']})", r["experiment"],
                        f"{r['data']}, {r['basis']} basis", r["precision"], f"{r['train_img_s']:,.0f}",
                        f"{r['img_nfe_s']:,.0f}"])
    return out


# ----------------------------------------------------------------------------- claims and verdicts

#: The protocol page and the anchor of each test type on it (every verdict cell links there).
PROTOCOL_PAGE = "protocol.html"
_TEST_ANCHORS = {"superiority": "superiority", "equivalence": "equivalence", "opposite ranking": "opposite-ranking",
                 "trend": "trend", "report": "reported-numbers"}
#: The chapters with claims, in the book's order, and their pages.
CLAIM_CHAPTERS = {"e1": "e1_pca_sweep", "e2": "e2_fourier_sweep", "e4": "e4_columns_extension",
                  "e5": "e5_wavelet_columns"}


def _test_link(test: str, prefix: str = "") -> str:
    parts = [t.strip() for t in test.split("+")]
    return " + ".join(f'<a href="{prefix}{PROTOCOL_PAGE}#{_TEST_ANCHORS.get(t, "tests")}">{escape(t)}</a>'
                      for t in parts)


def _verdict_html(c: dict, prefix: str = "") -> str:
    v = escape(c["verdict"])
    anchor = "gates" if c["verdict"] == "not assessable" else "verdicts"
    out = f'<a class="gud-verdict gud-{v.replace(" ", "-")}" href="{prefix}{PROTOCOL_PAGE}#{anchor}">{v}</a>'
    if c.get("reason"):
        out += f"<br><small>{escape(c['reason'])}</small>"
    return out


def claims_table(result: Result, names: dict | None = None) -> None:
    """The chapter's claims as declared tests: the paper's statement, the test (linked to its
    definition on the protocol page) with its margin, the evidence generated from the stored
    numbers, which bits/dim term drives it, and the verdict (linked to the verdict rules)."""
    names = names or {}
    head = "".join(f"<th>{h}</th>" for h in ("data", "claim", "paper", "test", "this book", "verdict"))
    body = []
    for c in result.metrics.get("claims", []):
        test = _test_link(c.get("test", "report"))
        if c.get("margin"):
            test += f"<br><small>margin {escape(c['margin'])}</small>"
        evidence = escape(c.get("evidence", ""))
        if c.get("driver"):
            evidence += f"<br><small>driving term of the bits/dim difference: {escape(c['driver'])}</small>"
        body.append("<tr>" + "".join(f"<td>{x}</td>" for x in (
            escape(names.get(c["dataset"], c["dataset"])), escape(c["claim"]), escape(c["paper"]), test, evidence,
            _verdict_html(c))) + "</tr>")
    caption = (f"The paper's claims as declared tests, profile {result.profile}: settings chosen on the validation "
               "split, numbers from the test split; ± one standard error (bits/dim: over test images and seeds; KCD: "
               "jackknife over samples and seeds; differences of bits/dim paired over the same images). Tests, "
               "margins and gates: protocol page.")
    ch = _CURRENT
    label = ""
    if ch is not None:
        ch.n_tables += 1
        label = f"Table {ch.tag}.{ch.n_tables}. "
    html = (f'<table class="gud-table gud-claims"><caption>{escape(label + caption)}</caption><thead><tr>{head}'
            f'</tr></thead><tbody>{"".join(body)}</tbody></table>')
    if ch is not None:
        html = f'<div class="gud-numbered" id="tab-{ch.experiment}-{ch.n_tables}">{html}</div>'
    display_html(html)


def findings_markdown(result: Result, names: dict | None = None) -> str:
    """What the chapter's result shows and what it does not, generated from the stored claims (never
    typed): the claims grouped by verdict (the test and margin of those with a verdict; the legs of
    an inconclusive one), and the claims that cannot be judged grouped by the reason that blocks
    them, so that one missing piece of evidence is named once.  The numbers are in the claims table."""
    names = names or {}
    data = result.metrics.get("data_description", "")
    claims = result.metrics.get("claims", [])
    many = len({c["dataset"] for c in claims}) > 1

    def name(c: dict) -> str:
        return f"**{c['claim']}**" + (f" ({names.get(c['dataset'], c['dataset'])})" if many else "")

    from .protocol import FAILS, HOLDS, INCONCLUSIVE

    def legs(c: dict) -> str:  # each leg's verdict, in brackets after its evidence (protocol.combine)
        found = re.findall(rf"\[({HOLDS}|{FAILS}|{INCONCLUSIVE})\]", c.get("evidence", ""))
        return f"; its legs: {', '.join(found)}" if found else ""

    lines = [f"Profile `{result.profile}`" + (f" ({data})" if data else "") + ":", ""]
    groups = [("holds", "Holds"), ("does not hold", "Does not hold"), ("inconclusive", "Inconclusive")]
    for verdict, title in groups:
        sel = [c for c in claims if c["verdict"] == verdict]
        if sel:
            items = "; ".join(f"{name(c)} ({c['test']} test" + (f", margin {c['margin']}" if c.get("margin") else "")
                              + (legs(c) if verdict == "inconclusive" else "") + ")" for c in sel)
            lines.append(f"* {title}: {items}.")
    blocked: dict[str, dict[str, list[str]]] = {}  # kind of reason -> its detail -> the claims it blocks
    for c in claims:
        if c["verdict"] == "not assessable":
            for part in dict.fromkeys(p for p in (c.get("reason") or "no reason recorded").split("; ") if p):
                kind, _, detail = part.partition(": ")
                blocked.setdefault(kind, {}).setdefault(detail, []).append(name(c))
    if blocked:
        lines.append("* Not assessable at this scale, by what is missing:")
        for kind, details in blocked.items():
            who = ", ".join(dict.fromkeys(n for ns in details.values() for n in ns))
            detail = next(iter(details)) if len(details) == 1 else ""
            lines.append(f"  * {kind}" + (f" ({detail})" if detail else
                                         " (which networks: the claims table)" if len(details) > 1 else "")
                         + f": {who}.")
    reported = [name(c) for c in claims if c["verdict"] == "reported"]
    if reported:
        lines.append(f"* Reported without a test (the paper states no number to test against): {', '.join(reported)}.")
    if not claims:
        lines.append("* No claim is stored with this result.")
    return "\n".join(lines)


#: The probability-flow (ODE) samplers of :mod:`gud.samplers`: the exact flow, an invertible map, keeps
#: the prior mismatch KL(q(y_1) || N(0, I)); a discretised one can land above or below it.
ODE_SAMPLERS = ("heun", "ddim", "dpmpp_2m", "dpmpp_3m")


def sampler_findings(metrics: Mapping, priors: Mapping[str, str] | None = None) -> str:
    """What the toy chapter's sampler comparison shows, generated from its stored ``sampler_table``:
    per budget of the table, the sampler with the lowest exact KL in each setting; the best
    probability-flow sampler at the largest budget beside the prior mismatch;
    and which samplers come within the many-step Euler–Maruyama reference's KL, at how many
    evaluations.  Markdown bullets."""
    priors = priors or {}
    table = metrics.get("sampler_table", [])
    rows = [r for r in table if "kl" in r]
    refs = {(r["prior"], r["a"]): r for r in table if "kl_reference" in r}
    settings = list(dict.fromkeys((r["prior"], r["a"]) for r in rows))
    if not rows:
        return "* No sampler comparison is stored with this result."
    where = lambda s: f"{priors.get(s[0], s[0])}, a = {s[1]:g}"  # noqa: E731
    lines = []
    for b in sorted({b for r in rows for b in r["kl"]}, key=int):
        best = {}
        for s in settings:
            cand = [(r["kl"][b], r["method"]) for r in rows
                    if (r["prior"], r["a"]) == s and r["kl"].get(b) is not None and math.isfinite(r["kl"][b])]
            if cand:
                best[s] = min(cand)
        lines.append(f"* At {b} network evaluations the lowest KL is reached by " + "; ".join(
            f"{m} in {where(s)} ({v:.2g} nats)" for s, (v, m) in best.items()) + ".")
    last = max((b for r in rows for b in r["kl"]), key=int)
    ode = []
    for s in settings:
        cand = [(r["kl"][last], r["method"]) for r in rows if (r["prior"], r["a"]) == s and r["method"] in ODE_SAMPLERS]
        if cand and s in refs:
            v, m = min(cand)
            ode.append(f"{where(s)}: {m} {v:.2g} against {refs[s]['prior_kl']:.2g}")
    if ode:
        lines.append(f"* The best probability-flow sampler at {last} evaluations beside the prior mismatch "
                     f"KL(q(y₁) ‖ N(0, I)), which the exact probability flow keeps (a discretised one can land "
                     f"above or below it): " + "; ".join(ode) + ".")
    reach: dict[str, list[str]] = {}
    for r in rows:
        if r.get("nfe_to_reference"):
            reach.setdefault(r["method"], []).append(f"{where((r['prior'], r['a']))} at {r['nfe_to_reference']}")
    n_ref = next(iter(refs.values()))["nfe"] if refs else None
    ref_words = f"the {n_ref - 1}-step Euler–Maruyama reference" if n_ref else "the reference"
    if reach:
        lines.append(f"* Within the budgets computed, a KL at or below {ref_words}'s ({n_ref} evaluations): " + "; ".join(
            f"{m} in {len(w)} of {len(settings)} settings ({', '.join(w)} evaluations)" for m, w in reach.items()) + ".")
    else:
        lines.append(f"* No sampler reaches the KL of {ref_words} within the budgets computed.")
    return "\n".join(lines)


def findings(result: Result, names: dict | None = None) -> None:
    """Display :func:`findings_markdown`."""
    from IPython.display import Markdown, display

    display(Markdown(findings_markdown(result, names)))


def summary_rows(profile: str | None = None, store: ResultsStore | None = None) -> list[dict]:
    """One row per claim of every chapter, from the stored results of ``profile`` (falling back to
    the ``ci`` result where the ``profile`` result is missing, and saying so).  Each claim's row is
    followed by the same claim at every larger profile with a stored result (``gpu``, ``paper``),
    so the larger scale is seen wherever it exists."""
    profile = profile or current_profile()
    store = store or ResultsStore()
    order = list(PROFILES)
    out = []
    for exp, page in CLAIM_CHAPTERS.items():
        shown, res = profile, store.load(exp, profile, experiment_config(exp, profile))
        if res is None and profile != "ci":
            shown, res = "ci", store.load(exp, "ci", experiment_config(exp, "ci"))
        found = [(shown, res)] if res is not None else []
        for larger in order[order.index(profile) + 1:] if profile in order else []:
            if larger != shown:
                r = store.load(exp, larger, experiment_config(exp, larger))
                if r is not None:
                    found.append((larger, r))
        rows = [{"chapter": exp.upper(), "page": page, "profile": p, "scale": r.metrics.get("data_description", ""), **c}
                for p, r in found for c in r.metrics.get("claims", [])]
        ids = list(dict.fromkeys(r["id"] for r in rows))
        out += sorted(rows, key=lambda r: ids.index(r["id"]))  # stable: each claim, smaller profile first
    return out


def _short_scale(scale: str) -> str:
    """A data description without its split sizes: "CIFAR-10 (JPEG mirror) (32×32)"."""
    return re.split(r"[,:] \d+ training", scale)[0]


def paper_summary(profile: str | None = None, store: ResultsStore | None = None) -> None:
    """The introduction's table: one row per claim of every chapter (the paper's statement) and one
    column per profile with a stored result (the verdict, linked to the protocol; the evidence, the
    data and, where not assessable, the reason, folded under it)."""
    rows = summary_rows(profile, store)
    profiles = list(dict.fromkeys(r["profile"] for r in rows))
    claims: dict[tuple, dict] = {}
    for r in rows:
        claims.setdefault((r["chapter"], r["id"]), {"first": r})[r["profile"]] = r
    head = "".join(f"<th>{escape(h)}</th>" for h in ["chapter", "claim", "paper"] + [f"profile {p}" for p in profiles])
    body = []
    for c in claims.values():
        r0 = c["first"]
        cells = [f'<a href="{r0["page"]}.html">{r0["chapter"]}</a>', escape(r0["claim"]), escape(r0["paper"])]
        for p in profiles:
            r = c.get(p)
            if r is None:
                cells.append('<span class="gud-missing">not computed</span>')
                continue
            v = escape(r["verdict"])
            anchor = "gates" if r["verdict"] == "not assessable" else "verdicts"
            folded = escape(r["evidence"]) + (f"<br><i>Why not assessable:</i> {escape(r['reason'])}"
                                              if r.get("reason") else "")
            cells.append(f'<a class="gud-verdict gud-{v.replace(" ", "-")}" href="{PROTOCOL_PAGE}#{anchor}">{v}</a>'
                         f"<details><summary>{escape(_short_scale(r['scale']))}</summary>{folded}</details>")
        body.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
    caption = ("Every claim of the chapters, generated from the stored results: the paper's statement and, per "
               "profile, the verdict of the declared test (protocol page); under it, the data, and folded, this "
               "book's numbers (± one standard error) and, where a claim is not assessable, the reason.")
    display_html(f'<table class="gud-table gud-claims gud-summary"><caption>{escape(caption)}</caption><thead><tr>'
                 f'{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


# ----------------------------------------------------------------------------- data named from configurations

_DATA_WORDS = {"digits": "8×8 digits", "mnist": "MNIST", "cifar10": "CIFAR-10", "fashion_mnist": "Fashion-MNIST",
               "pcam": "PatchCamelyon", "china": "a photograph", "grf": "Gaussian random fields",
               "phi4": "φ⁴ lattice fields"}
#: Data set names a text may use, and the configuration names they stand for.
DATA_NAMES = {"MNIST": "mnist", "CIFAR-10": "cifar10", "Fashion-MNIST": "fashion_mnist", "PatchCamelyon": "pcam"}


def data_keys(experiment: str, profile: str) -> list[str]:
    """The data sets (configuration names) an experiment's ``profile`` configuration uses."""
    cfg = experiment_config(experiment, profile)
    out = []
    for d in cfg.get("datasets", []) or []:
        if isinstance(d, dict):
            out.append(d.get("dataset") or d.get("field") or d.get("name"))
        else:
            out.append(d)
    if "image" in cfg:
        out.append(cfg["image"])
    if "dim" in cfg:
        out.append(f"gaussian-{cfg['dim']}")
    return list(dict.fromkeys(out))


def data_words(experiment: str, profile: str) -> str:
    """The data of an experiment's ``profile`` configuration, in words."""
    words = []
    for k in data_keys(experiment, profile):
        if k.startswith("gaussian-"):
            words.append(f"Gaussian data, {k.split('-')[1]} components")
        else:
            words.append(_DATA_WORDS.get(k, k))
    return ", ".join(words)


def chapters_table() -> None:
    """The introduction's table of chapters: what each shows and its data in the ``ci`` and ``gpu``
    profiles, named from the configurations."""
    rows = [("framework", "framework", "the three choices in code; end-point conventions of the schedule", "—"),
            ("e3", "e3_forward_process", "E3: the forward process, illustrated (no training)", "one CIFAR-10 image"),
            ("toy", "toy_gaussian", "the diffusion-to-autoregression transition, exactly, on Gaussian data; samplers "
                                    "against network evaluations", "— (asked for by the reviewers)"),
            ("e1", "e1_pca_sweep", "E1: PCA basis, softness a × prior, end-point conventions", "CIFAR-10"),
            ("e2", "e2_fourier_sweep", "E2: Fourier basis, softness a × ordering r", "CIFAR-10"),
            ("e4", "e4_columns_extension", "E4: column-wise soft conditioning in pixel space; image extension",
             "PatchCamelyon"),
            ("e5", "e5_wavelet_columns", "E5: Haar wavelet levels × columns", "CIFAR-10")]
    body = "".join(
        f'<tr><td><a href="{page}.html">{escape(exp.upper() if exp.startswith("e") else exp)}</a></td>'
        f"<td>{escape(what)}</td><td>{escape(paper)}</td><td>{escape(data_words(exp, 'ci'))}</td>"
        f"<td>{escape(data_words(exp, 'gpu'))}</td></tr>" for exp, page, what, paper in rows)
    head = "".join(f"<th>{h}</th>" for h in ("chapter", "what", "paper's data", "data, ci", "data, gpu"))
    display_html(f'<table class="gud-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
