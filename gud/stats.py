"""Statistics over seeds, comparisons with error bars, verdicts, and tables.

* :func:`mean_stderr`, :func:`aggregate` -- mean and standard error over seeds;
* :func:`compare` -- is one number significantly below or above another;
* :func:`beats` and :func:`verdict` -- the book's rule for verdicts on a paper's claims: a claim
  is judged only from models that beat their trivial baseline (the closed-form Gaussian model)
  by more than the combined error bar; otherwise it is "not assessable at this scale";
* :func:`html_table` -- tables that notebooks display as HTML (they wrap to the page width).
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape

import numpy as np

__all__ = ["mean_stderr", "aggregate", "compare", "beats", "verdict", "NOT_ASSESSABLE", "html_table"]

NOT_ASSESSABLE = "not assessable at this scale"


def mean_stderr(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (``std(ddof=1)/sqrt(n)``; NaN for one value)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values")
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(v.mean()), se


def aggregate(rows: Sequence[dict], by: Sequence[str], metrics: Sequence[str],
              fallback: dict[str, str] | None = None) -> list[dict]:
    """Group ``rows`` (one per seed) by the keys ``by`` and give ``<m>_mean``, ``<m>_se`` and
    ``n_seeds`` for each metric, in the order the groups first appear.  Where rows carry their own
    error of ``m`` (``fallback[m]``, e.g. the Monte-Carlo error of one evaluation), the standard
    error is never below that error of the mean (and a group of one row gets it)."""
    fallback = fallback or {}
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = tuple(_hashable(row[k]) for k in by)
        groups.setdefault(key, []).append(row)
    out = []
    for members in groups.values():
        agg = {k: members[0][k] for k in by}
        for m in metrics:
            vals = [r[m] for r in members if m in r]
            if not vals:
                continue
            agg[f"{m}_mean"], agg[f"{m}_se"] = mean_stderr(vals)
            errs = [r[fallback[m]] for r in members if fallback.get(m) in r]
            if errs:  # never below the evaluation's own (Monte-Carlo / jackknife) error of the mean
                floor = math.sqrt(sum(e * e for e in errs) / len(errs) / len(errs))
                se = agg[f"{m}_se"]
                agg[f"{m}_se"] = floor if not math.isfinite(se) else max(se, floor)
        agg["n_seeds"] = len(members)
        out.append(agg)
    return out


def compare(m1: float, se1: float, m2: float, se2: float, z: float = 2.0) -> int:
    """``-1`` if ``m1 < m2`` by more than ``z`` combined standard errors, ``+1`` if greater,
    ``0`` if not distinguishable (or a standard error is unknown)."""
    se = math.hypot(se1, se2)
    if not math.isfinite(se) or se == 0:
        return 0
    d = (m1 - m2) / se
    return -1 if d < -z else 1 if d > z else 0


def beats(model: float, model_se: float, baseline: float, baseline_se: float = 0.0, z: float = 2.0) -> bool:
    """Lower is better: does ``model`` beat ``baseline`` by more than ``z`` combined standard errors?
    An unknown standard error counts as not beating."""
    return compare(model, model_se, baseline, baseline_se, z) == -1


def verdict(holds: bool | None, assessable: bool, reason: str = "") -> str:
    """The verdict text of a claim: ``holds`` / ``does not hold`` / ``inconclusive`` when the
    evidence is sound, else :data:`NOT_ASSESSABLE` with the ``reason``."""
    if not assessable:
        return NOT_ASSESSABLE + (f" ({reason})" if reason else "")
    return {True: "holds", False: "does not hold", None: "inconclusive"}[holds]


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


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
