r"""The book's protocol for verdicts on the paper's claims: declared tests, gates, verdicts.

Every claim a chapter judges is one of four **tests**, fixed with the claim before any number
is seen (lower is better for bits/dim and the sample score):

* :func:`superiority` -- "X is better than Y": the difference ``d = X - Y`` and its standard
  error ``s``; *holds* if ``d < -Z s``, *does not hold* if ``d > Z s``, else *inconclusive*;
* :func:`equivalence` -- "X is near-optimal / costs little / matches Y" with a margin ``m``
  stated in the claim: two one-sided tests (TOST) at ``Z_EQ`` each; *holds* if
  ``|d| + Z_EQ s < m``, *does not hold* if ``|d| - Z s > m`` (outside the margin beyond its
  error), else *inconclusive*.  No significant difference is never "holds" on its own;
* :func:`opposite_ranking` -- "A and B rank differently on two measures": two significant
  differences in opposite directions *hold*, two in the same direction *do not hold*,
  anything else is *inconclusive*;
* :func:`trend` -- "the measure varies smoothly with a parameter": the significant steps
  between neighbouring grid points change direction at most once (unimodal) *and* the
  extremes of the curve differ significantly: *holds*; two or more significant reversals:
  *does not hold*; a curve flat within its errors: *inconclusive*.

Several tests behind one claim (two priors, two measures) are combined by :func:`combine`:
all *hold* -- holds; all *do not hold* -- does not hold; a mix -- inconclusive.

**Gates** (:func:`gate`): a test is *not assessable* (with the reason) unless the networks
behind it stopped early because their validation loss flattened before the step cap, beat
the strongest closed-form baseline of the same data (the Gaussian model in the chapter's
basis **and** the full-covariance Gaussian, in bits/dim driven through the same process) by
more than ``Z`` standard errors, and every number has a finite standard error.  Best settings are chosen on the validation split and
reported on the test split (:func:`select`).

Margins (stated in advance): :data:`BPD_MARGIN` bits/dim; for the sample score a fraction
:data:`SCORE_MARGIN_FRACTION` of the distance between the Gaussian model's samples and held-out
real data, the stronger of the two Gaussian baselines (:func:`score_margin`).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

__all__ = [
    "HOLDS", "FAILS", "INCONCLUSIVE", "NOT_ASSESSABLE", "REPORTED", "VERDICTS", "Z", "Z_EQ",
    "BPD_MARGIN", "SCORE_MARGIN_FRACTION", "GAP_FRACTION", "TESTS", "Outcome", "superiority", "equivalence",
    "opposite_ranking", "trend", "combine", "not_assessable", "reported", "gate", "select",
    "score_margin", "claim", "network_gate", "guarded",
]

HOLDS, FAILS, INCONCLUSIVE, NOT_ASSESSABLE, REPORTED = (
    "holds", "does not hold", "inconclusive", "not assessable", "reported")
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_ASSESSABLE, REPORTED)

#: Two-sided superiority: a difference counts when it exceeds ``Z`` standard errors (about 95 %).
Z = 2.0
#: Each one-sided test of an equivalence (TOST): a 90 % interval inside the margin.
Z_EQ = 1.645
#: Equivalence margin in bits/dim: differences below it are treated as practically equal (about
#: 1 % of an image's bits/dim; published CIFAR-10 likelihoods of successive methods differ by more).
BPD_MARGIN = 0.02
#: Equivalence margin of the sample score, as a fraction of (Gaussian model - held-out data).
SCORE_MARGIN_FRACTION = 0.1
#: On data that are themselves Gaussian no model beats their full-covariance Gaussian (the exact
#: model); the gate then asks a network to come within this fraction of the Gaussian model's gap to it.
GAP_FRACTION = 0.1

#: How a gate's comparison says that its baseline is absent from the result (stored by earlier code).
NOT_COMPUTED = "not computed"

#: The test types and how each is decided (shown on the protocol page).
TESTS: dict[str, str] = {
    "superiority": f"X better than Y by more than {Z:g} standard errors of the difference",
    "equivalence": (f"|X - Y| inside the stated margin: both one-sided tests at {Z_EQ} standard errors "
                    "(a 90 % interval inside the margin)"),
    "opposite ranking": f"two differences, each beyond {Z:g} standard errors, in opposite directions",
    "trend": (f"steps between neighbouring grid points that exceed {Z:g} standard errors change direction at "
              "most once, and the curve's extremes differ significantly"),
    "report": "a number the paper does not state, shown without a verdict",
}


@dataclass(frozen=True)
class Outcome:
    """A test's verdict, its type, the sentence that states the evidence, and the reason when
    it is not assessable."""

    verdict: str
    test: str
    evidence: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {self.verdict!r}; known: {', '.join(VERDICTS)}")

    def as_dict(self) -> dict:
        return asdict(self)


def _finite(*xs: float) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def _missing_se(test: str, evidence: str) -> Outcome:
    return Outcome(NOT_ASSESSABLE, test, evidence, "a number without a finite standard error")


def superiority(diff: float, se: float, evidence: str = "") -> Outcome:
    """``diff = X - Y`` (lower is better) with standard error ``se``: does X beat Y?"""
    if not _finite(diff, se) or se < 0:
        return _missing_se("superiority", evidence)
    verdict = HOLDS if diff < -Z * se else FAILS if diff > Z * se else INCONCLUSIVE
    return Outcome(verdict, "superiority", evidence)


def equivalence(diff: float, se: float, margin: float, evidence: str = "") -> Outcome:
    """Two one-sided tests: is ``|diff|`` inside ``margin`` (> 0)?"""
    if not (_finite(margin) and margin > 0):
        raise ValueError(f"an equivalence margin must be positive and finite, got {margin!r}")
    if not _finite(diff, se) or se < 0:
        return _missing_se("equivalence", evidence)
    if abs(diff) + Z_EQ * se < margin:
        verdict = HOLDS
    elif abs(diff) - Z * se > margin:
        verdict = FAILS
    else:
        verdict = INCONCLUSIVE
    return Outcome(verdict, "equivalence", evidence)


def _sign(diff: float, se: float) -> int:
    return -1 if diff < -Z * se else 1 if diff > Z * se else 0


def opposite_ranking(d1: float, se1: float, d2: float, se2: float, evidence: str = "") -> Outcome:
    """Two differences of the same pair on two measures: do they rank the pair in opposite
    directions, each significantly?"""
    if not _finite(d1, se1, d2, se2):
        return _missing_se("opposite ranking", evidence)
    s1, s2 = _sign(d1, se1), _sign(d2, se2)
    verdict = INCONCLUSIVE if 0 in (s1, s2) else HOLDS if s1 != s2 else FAILS
    return Outcome(verdict, "opposite ranking", evidence)


def trend(steps: Sequence[tuple[float, float]], extremes: tuple[float, float], evidence: str = "") -> Outcome:
    """``steps``: differences (value, standard error) between neighbouring grid points, in grid
    order; ``extremes``: the difference between the curve's largest and smallest value and its
    standard error.  Smooth: at most one significant change of direction and a significant range."""
    if not steps or not all(_finite(d, s) for d, s in steps) or not _finite(*extremes):
        return _missing_se("trend", evidence)
    signs = [s for s in (_sign(d, se) for d, se in steps) if s]
    reversals = sum(1 for u, v in zip(signs, signs[1:]) if u != v)
    varies = _sign(*extremes) != 0
    verdict = FAILS if reversals >= 2 else HOLDS if varies else INCONCLUSIVE
    return Outcome(verdict, "trend", evidence)


def not_assessable(test: str, reason: str, evidence: str = "") -> Outcome:
    return Outcome(NOT_ASSESSABLE, test, evidence, reason)


def reported(evidence: str) -> Outcome:
    return Outcome(REPORTED, "report", evidence)


def combine(outcomes: Iterable[Outcome], evidence: str | None = None) -> Outcome:
    """One verdict from several tests of one claim: any *not assessable* makes the claim not
    assessable (reasons joined); all *hold* -- holds; all *do not hold* -- does not hold;
    otherwise inconclusive."""
    outs = list(outcomes)
    if not outs:
        raise ValueError("combine needs at least one outcome")
    tests = sorted({o.test for o in outs})
    test = tests[0] if len(tests) == 1 else " + ".join(tests)
    text = "; ".join(o.evidence for o in outs if o.evidence) if evidence is None else evidence
    missing = [part for o in outs if o.verdict == NOT_ASSESSABLE for part in o.reason.split("; ") if part]
    if any(o.verdict == NOT_ASSESSABLE for o in outs):
        return Outcome(NOT_ASSESSABLE, test, text, "; ".join(dict.fromkeys(missing)))
    verdicts = {o.verdict for o in outs}
    verdict = HOLDS if verdicts == {HOLDS} else FAILS if verdicts == {FAILS} else INCONCLUSIVE
    if verdict == INCONCLUSIVE and len(outs) > 1 and evidence is None:  # say which leg gave which verdict
        text = "; ".join(f"{o.evidence} [{o.verdict}]" for o in outs if o.evidence)
    return Outcome(verdict, test, text)


def gate(*, converged: Mapping[str, bool | None], beats: Mapping[str, bool | None]) -> str:
    """The reason a test is not assessable, or ``""`` when its evidence is sound.

    ``converged``: network name -> did its validation loss flatten before the step cap (``None``:
    unknown, which fails the gate).  ``beats``: "<network> vs <baseline> (<measure>)" -> did the
    network beat that closed-form baseline by more than ``Z`` standard errors (``None``: unknown)."""
    reasons = []
    stuck = [n for n, c in converged.items() if c is not True]
    if stuck:
        reasons.append("validation loss still improving at the step cap: " + _few(stuck))
    failed = [n for n, b in beats.items() if b is not True]
    flagged = [n for n in failed if ": samples " in n]
    missing = [n for n in failed if n.endswith(NOT_COMPUTED + ")")]
    weak = [n for n in failed if n not in flagged and n not in missing]
    if weak:
        reasons.append("does not beat the closed-form baseline: " + _few(weak))
    if missing:
        reasons.append("closed-form baseline not computed for this result: " + _few(missing))
    if flagged:
        reasons.append("samples flagged: " + _few(flagged))
    return "; ".join(reasons)


def _few(items: Sequence[str], k: int = 2) -> str:
    items = list(dict.fromkeys(items))
    return ", ".join(items[:k]) + (f" and {len(items) - k} more" if len(items) > k else "")


def network_gate(E, info: Mapping, net: Mapping, gaussian: Mapping, metric: str, label: str, *,
                 full_gaussian: bool = True) -> dict[str, bool]:
    """The baseline part of the gate for one network setting ``net`` (a selection of
    :class:`gud.stats.Evidence`): beats the Gaussian model of the same setting (``gaussian``) and the
    full-covariance Gaussian by more than ``Z`` standard errors, and its samples are not flagged as
    copies or collapsed.  In bits/dim the full-covariance Gaussian is driven through the same
    process (its exact denoiser, same prior, schedule and end points: the row of ``gaussian`` with
    the model ``"<gaussian model>_full"``, :func:`gud.baselines.full_gaussian_denoiser`); in sample
    score its samples are drawn directly (``info["score_full_gaussian"]``).  ``label`` names the
    setting in the reason.  Without ``full_gaussian`` the full-covariance comparison is left out
    (Gaussian data, where nothing beats it: the chapter then judges the gap to the exact model
    instead)."""
    out = {}
    names = {"bpd": "bits/dim", "score": "KCD"}
    d, e = E.diff(metric, net, gaussian)
    out[f"{label} vs the Gaussian model ({names[metric]})"] = d < -Z * e
    if metric == "bpd" and full_gaussian:
        d, e = E.bpd_diff(net, {**gaussian, "model": f"{gaussian['model']}_full"})
        what = f"bits/dim {d:+.3f} ± {e:.3f}" if _finite(d, e) else f"bits/dim; {NOT_COMPUTED}"
        out[f"{label} vs the full-covariance Gaussian in the same process ({what})"] = d < -Z * e
    if metric == "score":
        if full_gaussian:
            v, e = E.score(**net)
            fv, fe = info["score_full_gaussian"], info["score_full_gaussian_se"]
            out[f"{label} vs the full-covariance Gaussian's samples (KCD)"] = v - fv < -Z * math.hypot(e, fe)
        flags = {f for r in E.select(**net) for f in (r.get("flags") or "").split(",") if f}
        if flags:
            out[f"{label}: samples {' and '.join(sorted(flags))}"] = False
    return out


def guarded(outcome: Outcome, *reasons: str) -> Outcome:
    """``outcome``, or *not assessable* with the non-empty ``reasons`` (from :func:`gate`)."""
    parts = [p for r in reasons if r for p in r.split("; ") if p]
    return not_assessable(outcome.test, "; ".join(dict.fromkeys(parts)), outcome.evidence) if parts else outcome


def select(candidates: Sequence, validation: Callable[[object], float]):
    """The candidate with the lowest validation value (ties: the first); NaN values never win."""
    best, best_v = None, math.inf
    for c in candidates:
        v = validation(c)
        if _finite(v) and v < best_v:
            best, best_v = c, v
    if best is None:
        raise ValueError("no candidate has a finite validation value")
    return best


def score_margin(score_gaussian: float, score_real: float, score_full_gaussian: float = math.inf) -> float:
    """The sample-score equivalence margin: :data:`SCORE_MARGIN_FRACTION` of the distance
    between the stronger Gaussian baseline's samples (the Gaussian model of the chapter's basis or
    the full-covariance Gaussian, whichever scores lower) and held-out real data."""
    gap = min(score_gaussian, score_full_gaussian) - score_real
    if not _finite(gap) or gap <= 0:
        return math.nan
    return SCORE_MARGIN_FRACTION * gap


def claim(dataset: str, cid: str, text: str, paper: str, outcome: Outcome, *, margin: str = "",
          driver: str = "") -> dict:
    """A claim as stored in a result: its id (the anchor of its test on the protocol page), the
    paper's statement, the declared test (with its margin), the generated evidence, the verdict
    and, when not assessable, the reason; ``driver`` says which bits/dim term drives it."""
    return {"dataset": dataset, "id": cid, "claim": text, "paper": paper, "test": outcome.test,
            "margin": margin, "evidence": outcome.evidence, "verdict": outcome.verdict,
            "reason": outcome.reason, "driver": driver}
