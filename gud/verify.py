r"""Verify recomputed results against the book's reference: ``python -m gud verify``.

The ``ci`` results are committed (``results/<exp>/ci/``) as the reference the book renders.  CI
recomputes them into a separate store and compares, metric by metric:

* a number with an error bar -- per-image bits/dim (:func:`gud.stats.image_estimate` of the stored
  ``per_image`` arrays), a sample score with its jackknife error, any ``<key>`` stored beside
  ``<key>_se`` / ``<key>_stderr`` -- passes when the two values differ by at most
  :data:`Z_VERIFY` standard errors of the difference, ``Z_VERIFY * sqrt(se_ref^2 + se_new^2)``:
  a recomputation with the same seeds differs only through floating-point effects, far inside
  its own error, while a change of method moves it;
* a number without an error bar (closed forms, counts) passes within a relative
  :data:`REL_TOL` (floating-point differences between machines);
* a verdict, a convergence flag or a sample flag must be equal;
* timings are skipped.

:func:`verify` returns every check; the command prints the failures with reference,
recomputed value and tolerance, and exits 1 when any fails.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .stats import TERMS, image_estimate

__all__ = ["Z_VERIFY", "REL_TOL", "Check", "checks_of", "compare", "verify", "refresh_claims"]

#: A recomputed number may differ from the reference by this many standard errors of the difference.
Z_VERIFY = 4.0
#: Relative tolerance of numbers without an error bar.
REL_TOL = 1e-6
_TIMING = re.compile(r"(^|_)(s|seconds|time|wall|wall_seconds.*|train_s|throughput|examples_per_s)$")
#: Not compared: identities, provenance, timings in words, and the sample scorer's own held-out accuracy
#: (a property of the instrument, checked through the scores it gives, which carry error bars).
_SKIP = {"id", "seed", "code_hash", "created", "torch", "python", "platform", "classifier_accuracy",
         "compute_description"}  # the last: words with measured seconds in them


@dataclass(frozen=True)
class Check:
    """One compared quantity: its name, the two values, the tolerance and the outcome."""

    name: str
    reference: Any
    recomputed: Any
    tolerance: float | None  # None: must be equal
    ok: bool

    def line(self) -> str:
        tol = "equal" if self.tolerance is None else f"± {self.tolerance:.3g}"
        return f"{self.name}: reference {_fmt(self.reference)}, recomputed {_fmt(self.recomputed)} ({tol})"


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else repr(v)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def checks_of(metrics: Mapping, arrays: Mapping[str, np.ndarray]) -> dict[str, tuple[Any, float | None]]:
    """Every verifiable quantity of a result: ``name -> (value, standard error or None)``."""
    out: dict[str, tuple[Any, float | None]] = {}
    rows = metrics.get("rows", [])
    for i, r in enumerate(rows if isinstance(rows, list) else []):
        rid = r.get("id", str(i))
        a = arrays.get(f"per_image/{rid}")
        for k, term in enumerate(TERMS if a is not None else ()):
            if np.all(np.isfinite(a[k])):
                out[f"rows/{rid}/{term}_bpd_test"] = image_estimate(np.asarray(a[k])[None])
        for k, v in r.items():
            if k in _SKIP or k.endswith(("_se", "_stderr")) or _TIMING.search(k):
                continue
            if k == "bpd" or (k.endswith("_bpd") and f"per_image/{rid}" in arrays):
                continue  # covered by the per-image arrays
            se = r.get(f"{k}_se", r.get(f"{k}_stderr"))
            out[f"rows/{rid}/{k}"] = (v, se if _number(se) else None)
    for i, c in enumerate(metrics.get("claims", []) or []):
        out[f"claims/{c.get('id', i)}/{c.get('dataset', '')}/verdict"] = (c.get("verdict"), None)
    rest = {k: v for k, v in metrics.items() if k not in ("rows", "claims")}
    _walk(rest, "", out)
    return out


def _walk(obj: Any, prefix: str, out: dict) -> None:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            k = str(k)
            if k in _SKIP or k.endswith(("_se", "_stderr")) or _TIMING.search(k):
                continue
            if _number(v):
                se = obj.get(f"{k}_se", obj.get(f"{k}_stderr"))
                out[f"{prefix}{k}"] = (v, se if _number(se) else None)
            else:
                _walk(v, f"{prefix}{k}/", out)
    elif isinstance(obj, list):
        if obj and all(_number(x) for x in obj):
            for i, x in enumerate(obj):
                out[f"{prefix}{i}"] = (x, None)
        else:
            for i, x in enumerate(obj):
                _walk(x, f"{prefix}{i}/", out)
    elif obj is not None:
        out[prefix.rstrip("/")] = (obj, None)


def compare(reference: Mapping[str, tuple[Any, float | None]],
            recomputed: Mapping[str, tuple[Any, float | None]], prefix: str = "") -> list[Check]:
    """Check every quantity of ``reference`` against ``recomputed`` (a missing one fails)."""
    out = []
    for name, (ref, se_ref) in reference.items():
        full = f"{prefix}{name}"
        if name not in recomputed:
            out.append(Check(full, ref, "missing", None, False))
            continue
        new, se_new = recomputed[name]
        if _number(ref) and _number(new):
            ref_f, new_f = float(ref), float(new)
            if math.isnan(ref_f) or math.isnan(new_f):
                out.append(Check(full, ref_f, new_f, None, math.isnan(ref_f) and math.isnan(new_f)))
                continue
            if se_ref is not None and se_new is not None and math.isfinite(se_ref) and math.isfinite(se_new):
                tol = Z_VERIFY * math.hypot(se_ref, se_new)
            else:
                tol = REL_TOL * max(abs(ref_f), abs(new_f)) + 1e-12
            out.append(Check(full, ref_f, new_f, tol, abs(ref_f - new_f) <= tol))
        else:
            out.append(Check(full, ref, new, None, ref == new))
    return out


def verify(experiments, profile: str, reference_store, recomputed_store) -> list[Check]:
    """Compare the stored ``profile`` results of ``experiments`` in the two stores."""
    from .profiles import experiment_config

    out: list[Check] = []
    for exp in experiments:
        cfg = experiment_config(exp, profile)
        ref = reference_store.load(exp, profile, cfg)
        new = recomputed_store.load(exp, profile, cfg)
        if ref is None or new is None:
            which = "reference" if ref is None else "recomputed"
            out.append(Check(f"{exp}", "stored" if ref is not None else "missing",
                             "stored" if new is not None else "missing", None, False))
            out[-1] = Check(f"{exp} ({which} result missing)", out[-1].reference, out[-1].recomputed, None, False)
            continue
        out += compare(checks_of(ref.metrics, ref.arrays), checks_of(new.metrics, new.arrays), prefix=f"{exp}: ")
    return out


def refresh_claims(experiment: str, profile: str, store, config: Mapping[str, Any] | None = None) -> dict:
    """Recompute the claims (and a ``summary``, where the chapter has one) of a stored result from
    its stored numbers with the current code of the chapter's ``claims``: after a change of the
    protocol or of a claim's wording, no training and no evaluation is repeated.  Returns the
    new metrics (written with :meth:`gud.results.ResultsStore.update_metrics`)."""
    import importlib

    from .profiles import experiment_config

    cfg = dict(experiment_config(experiment, profile) if config is None else config)
    mod = importlib.import_module(f"gud.experiments.{experiment}")
    res = store.require(experiment, profile, cfg)
    extra = {}
    if hasattr(mod, "summary"):
        extra["summary"] = mod.summary(cfg, res.metrics, res.arrays)
    metrics = {**res.metrics, **extra}
    extra["claims"] = mod.claims(cfg, metrics, res.arrays)
    return store.update_metrics(experiment, profile, cfg, extra).metrics
