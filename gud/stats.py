"""Error bars and tables.

* :func:`image_estimate`, :func:`paired_difference`, :func:`score_estimate` and
  :class:`Evidence` -- the one error bar of every number (:data:`SE_KIND`) and the paired
  standard error of every difference of bits/dim (the verdicts themselves: :mod:`gud.protocol`);
* :func:`html_table` -- tables that notebooks display as HTML (they wrap to the page width).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

import numpy as np

__all__ = ["html_table", "image_estimate", "paired_difference", "score_estimate", "Evidence", "TERMS", "SE_KIND"]


def html_table(header: Sequence[str], rows: Sequence[Sequence], caption: str | None = None,
               align_right: Sequence[bool] | None = None) -> str:
    """A plain HTML table (cells escaped; numbers right-aligned when ``align_right`` says so)
    for tables that notebooks display as output; it wraps to the width of the page."""
    right = list(align_right) if align_right is not None else [False] * len(header)
    style = lambda j: ' style="text-align:right"' if j < len(right) and right[j] else ""  # noqa: E731
    head = "".join(f"<th{style(j)}>{escape(str(h))}</th>" for j, h in enumerate(header))
    body = "".join("<tr>" + "".join(f"<td{style(j)}>{escape(str(c))}</td>" for j, c in enumerate(r)) + "</tr>"
                   for r in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f'<table class="gud-table">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ----------------------------------------------------------------------------- one error bar per number

#: What the ± of every number means (table footers say it).
SE_KIND = {
    "bpd": "standard error over test images (per-image bound), combined in quadrature with the spread over "
           "seeds where there are several",
    "score": "jackknife standard error over the scored samples, combined in quadrature with the spread over "
             "seeds where there are several",
}
#: Per-image bits/dim stored for every evaluation: the total bound and its three terms (the log-det of
#: the whitening is the same for every image and folded into the total only).
TERMS = ("total", "prior", "diffusion", "reconstruction")


def image_estimate(per_image) -> tuple[float, float]:
    """Mean and standard error of per-image values ``[S, N]`` (S seeds evaluated on the same N test
    images): the SE over images of the seed-averaged values, combined in quadrature with the SE over
    seeds of the per-seed means when ``S >= 2``."""
    x = np.atleast_2d(np.asarray(per_image, dtype=np.float64))
    s, n = x.shape
    if n < 2:
        raise ValueError(f"per-image values need at least two images, got {n}")
    m = x.mean(0)
    se = m.std(ddof=1) / math.sqrt(n)
    if s >= 2:
        se = math.hypot(se, x.mean(1).std(ddof=1) / math.sqrt(s))
    return float(x.mean()), float(se)


def paired_difference(a, b) -> tuple[float, float]:
    """``mean(a) - mean(b)`` of per-image values ``[S_a, N]`` and ``[S_b, N]`` on the same N test
    images, with its paired standard error: the SE over images of the per-image differences of
    the seed means, combined in quadrature with each side's SE over seeds (independent trainings)."""
    x = np.atleast_2d(np.asarray(a, dtype=np.float64))
    y = np.atleast_2d(np.asarray(b, dtype=np.float64))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"paired values need the same images: {x.shape[1]} vs {y.shape[1]}")
    d = x.mean(0) - y.mean(0)
    var = d.var(ddof=1) / len(d)
    for z in (x, y):
        if len(z) >= 2:
            var += z.mean(1).var(ddof=1) / len(z)
    return float(d.mean()), float(math.sqrt(var))


def score_estimate(values: Sequence[float], ses: Sequence[float]) -> tuple[float, float]:
    """Mean over seeds of a sample score and its SE: the jackknife errors of the mean combined in
    quadrature with the SE over seeds (when there are several)."""
    v = np.asarray(values, dtype=np.float64)
    e = np.asarray(ses, dtype=np.float64)
    if v.size == 0 or v.shape != e.shape:
        raise ValueError("score_estimate needs one standard error per value")
    var = float((e ** 2).sum()) / v.size ** 2
    if v.size >= 2:
        var += float(v.var(ddof=1)) / v.size
    return float(v.mean()), math.sqrt(var)


class Evidence:
    """The evaluations of one experiment: ``rows`` (JSON, one per model x setting x seed, each
    with an ``id``) and their per-image bits/dim ``arrays["per_image/<id>"] [4, N]`` (total,
    prior, diffusion, reconstruction; :data:`TERMS`).  Selections are dicts of row fields;
    every number and difference is computed here, so it has the same error bar everywhere."""

    def __init__(self, rows: Sequence[dict], arrays: Mapping[str, np.ndarray]):
        self.rows = list(rows)
        self.arrays = arrays

    def select(self, **where) -> list[dict]:
        def match(r):
            for k, v in where.items():
                rv = r.get(k)
                if isinstance(v, float) and isinstance(rv, (int, float)) and rv is not None:
                    if abs(rv - v) > 1e-9:
                        return False
                elif rv != v:
                    return False
            return True
        return [r for r in self.rows if match(r)]

    def per_image(self, term: str = "total", **where) -> np.ndarray:
        """``[S, N]`` per-image values (test split) of ``term`` for the selected rows (one per seed)."""
        rows = self.select(**where)
        if not rows:
            return np.empty((0, 0))
        k = TERMS.index(term)
        return np.stack([np.asarray(self.arrays[f"per_image/{r['id']}"], dtype=np.float64)[k] for r in rows])

    def bpd(self, term: str = "total", **where) -> tuple[float, float]:
        """Mean bits/dim (or one of its terms) on the test split and its standard error (:func:`image_estimate`)."""
        x = self.per_image(term, **where)
        return (math.nan, math.nan) if x.size == 0 else image_estimate(x)

    def bpd_diff(self, a: Mapping, b: Mapping, term: str = "total") -> tuple[float, float]:
        """Paired difference of bits/dim (test split) between two selections (:func:`paired_difference`).
        A selection whose rows declare that they cover the first ``n_images`` test images only
        (:func:`gud.pipeline.evaluate_bpd`) is paired with those images of the other."""
        x, y = self.per_image(term, **a), self.per_image(term, **b)
        if x.size == 0 or y.size == 0:
            return math.nan, math.nan
        n = min(x.shape[1], y.shape[1])
        for sel, z in ((a, x), (b, y)):
            if z.shape[1] == n < max(x.shape[1], y.shape[1]) and not all(
                    r.get("n_images") == n for r in self.select(**sel)):
                raise ValueError(f"paired values need the same images: {x.shape[1]} vs {y.shape[1]}, and the "
                                 f"shorter does not declare n_images = {n}")
        return paired_difference(x[:, :n], y[:, :n])

    def score(self, key: str = "score", **where) -> tuple[float, float]:
        """Mean sample score over seeds and its SE (:func:`score_estimate`); NaN where not scored."""
        rows = [r for r in self.select(**where) if key in r]
        if not rows:
            return math.nan, math.nan
        return score_estimate([r[key] for r in rows], [r[f"{key}_se"] for r in rows])

    def value(self, metric: str, **where) -> tuple[float, float]:
        """``bpd`` (test), ``bpd_val`` (validation, from the rows; selection only), a term ``<term>_bpd``,
        ``score`` or ``score_val``: mean and SE."""
        if metric == "bpd":
            return self.bpd(**where)
        if metric == "bpd_val":  # selection only: the mean over seeds of each row's validation bits/dim
            return self.score("bpd_val", **where)
        if metric.endswith("_bpd"):
            return self.bpd(term=metric[:-4], **where)
        return self.score(metric, **where)

    def diff(self, metric: str, a: Mapping, b: Mapping) -> tuple[float, float]:
        """Difference ``a - b`` of ``metric`` with its SE: paired over test images for bits/dim
        (and its terms), unpaired for sample scores."""
        if metric == "bpd" or metric.endswith("_bpd"):
            return self.bpd_diff(a, b, "total" if metric == "bpd" else metric[:-4])
        (va, sa), (vb, sb) = self.value(metric, **a), self.value(metric, **b)
        return va - vb, math.hypot(sa, sb)

    def converged(self, **where) -> bool | None:
        """Did every selected network's validation loss flatten before the step cap (None: unknown)?"""
        rows = self.select(**where)
        if not rows or any("converged" not in r for r in rows):
            return None
        return all(r["converged"] is True for r in rows)

    def driver(self, a: Mapping, b: Mapping) -> str:
        """Which term of the bound drives the difference ``a - b`` of bits/dim: the term with the
        largest absolute share, with the shares."""
        parts = {t: self.bpd_diff(a, b, t)[0] for t in TERMS[1:]}
        if not all(math.isfinite(v) for v in parts.values()):
            return ""
        top = max(parts, key=lambda t: abs(parts[t]))
        return f"{top} term ({', '.join(f'{t} {v:+.3f}' for t, v in parts.items())})"
