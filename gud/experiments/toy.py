r"""The chapter 'toy' (book/toy_gaussian.ipynb): the exact Gaussian model of the transition from
diffusion to autoregression.

Data: a stationary Ornstein-Uhlenbeck (AR(1)) process on ``dim`` points, seen as a ``1 x dim``
image in the pixel basis; ordering labels = position (left to right); the soft-conditioning
schedule in the end-point conventions of :data:`gud.labels.CONVENTIONS`.  The denoiser is the
exact one (:class:`gud.oracle.GaussianOracle`), so nothing is learned and almost everything is
exact float64 linear algebra on ``dim x dim`` matrices (:mod:`gud.gaussian`):

* ``structure`` -- decision times on a fine grid of ``a`` and the conditional structure of the
  middle pixel at its decision time (what its information comes from), per convention;
* ``paths`` -- true log-SNR paths and decision times at the shown ``a`` (figures);
* ``trajectories`` -- one sampled generation per shown ``a``, its clean prediction
  :math:`\hat x_0 = \text{prior.decode}(\hat y_0)` before every step;
* ``steps`` -- exact KL of the state at t = 0 (before the final denoising) from
  :math:`q(y_{t=0})` for the samplers ``samplers`` x ``sampler_steps`` x ``softness`` x priors,
  and the prior mismatch :math:`\mathrm{KL}(q(y_1)\|\mathcal N(0, I))`;
* ``empirical`` -- the same KL from real samples (Monte Carlo), against the exact one;
* ``nfe`` -- every sampler of :data:`gud.samplers.SAMPLERS`: exact KL and covariance error of
  its output against its number of network evaluations (:func:`gud.gaussian.sampler_error_vs_nfe`),
  with ``reference_steps``-step Euler-Maruyama as the reference;
* ``end_terms`` -- the closed-form ELBO gap (prior mismatch + Gaussian decoder) against ``a``,
  per convention and prior;
* ``elbo`` -- the ELBO checks: closed form, quadrature (Simpson's rule on each piece between
  the kinks of the clipped schedule, :func:`gud.gaussian.schedule_kinks`), the Monte-Carlo ELBO
  of :func:`gud.likelihood.elbo` against the exact NLL, and a mis-specified denoiser (with the
  KL of the data law from the law it is exact for).

Every part is memoised (``ctx.cached``): an interrupted run resumes where it stopped.  The
paper has no toy experiment; ``paper`` is a larger version of ``gpu``.

Keys
----
dim, kernel, length, variance
    :func:`gud.gaussian.stationary_covariance`: process on ``dim`` points, kernel ``"ou"``
    (``variance * exp(-|i-j|/length)``); ``variance`` 0.25 is a pixel std of 0.5 in [-1, 1], so
    the whitened and white-noise priors differ.
gamma_denoise, gamma_noise
    the schedule's end points (the official code's defaults, -7 and 3).
convention, conventions
    the main end-point convention of the chapter, and all conventions computed (structure,
    paths, end terms).
softness
    inverse softnesses ``a`` of the tables (decision times, sampling error, ELBO).
show_softness
    ``a`` of the path and trajectory figures.
softness_grid
    ``{"max", "num"}``: the fine grid ``linspace(0, max, num)`` of the decision-time heat map,
    the conditional-structure curves and the end terms.
decision_threshold, time_grid
    a component is *decided* when ``Var[y0_i | y_t] <= threshold * Var[y0_i]``, on a uniform
    grid of ``time_grid`` times.
path_times
    time points of the log-SNR path figure.
trajectory
    one sampled trajectory per ``show_softness`` value: ``method``, ``steps``, ``seed``.
samplers, sampler_steps
    samplers and step counts of the exact step study (pre-denoising KL).
empirical
    Monte-Carlo check of the step study: ``n_samples`` samples per sampler and step count in
    ``steps`` at softness ``softness`` (whitened prior), seeds ``seed + 1000 s + n``.
nfe
    the sampler comparison: ``softness`` values, ``budgets`` (network evaluations, the final
    denoising included), ``reference_steps`` of the Euler-Maruyama reference, and ``table``:
    the budgets shown in the table.
elbo
    ``n_examples`` data points (seed ``seed``), ``n_time_samples`` stratified times per example,
    ``quadrature_points`` for the exact expected ELBO, and a mis-specified denoiser: the exact
    denoiser of the process with correlation length ``wrong_length``.
threads
    torch intra-op threads (tiny matrices: one is fastest).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np
import torch

from ..gaussian import (Toy, TrajectoryRecorder, conditional_variance, decision_times, elbo_gap, empirical_kl,
                        empirical_kl_floor, expected_elbo, gaussian_entropy, gaussian_kl, make_toy,
                        marginal_moments, prior_mismatch, propagate_moments, sampler_error_vs_nfe,
                        schedule_kinks)
from ..labels import family
from ..samplers import sample
from ..schedules import SoftConditioningSchedule

__all__ = ["CONFIGS", "compute", "PRIORS"]

#: The two priors, in the order of every ``[prior, ...]`` array.
PRIORS = ("whitened", "unwhitened")

_COMMON = {
    "kernel": "ou",
    "length": 2.0,
    "variance": 0.25,
    "gamma_denoise": -7.0,
    "gamma_noise": 3.0,
    "convention": "process-clipped",
    "conventions": ["process-clipped", "snr"],
    "softness": [0.0, 0.5, 1.0, 2.0, 4.0, 8.0],
    "show_softness": [0.0, 1.0, 8.0],
    "decision_threshold": 0.5,
    "path_times": 201,
    "samplers": ["em", "heun", "ddim", "ancestral"],
    "threads": 1,
}

CONFIGS = {
    # 16 components: well under a minute on one core
    "ci": {
        **_COMMON,
        "dim": 16,
        "softness_grid": {"max": 12.0, "num": 49},
        "time_grid": 2001,
        "trajectory": {"method": "em", "steps": 200, "seed": 1},
        "sampler_steps": [5, 10, 20, 50, 100, 200],
        "empirical": {"softness": 1.0, "n_samples": 2000, "seed": 2, "steps": [5, 10, 20, 50, 100, 200]},
        "nfe": {"softness": [1.0, 2.0], "budgets": [4, 6, 10, 15, 20, 30, 50, 75, 100],
                "reference_steps": 1000, "table": [20, 100]},
        "elbo": {"n_examples": 2000, "n_time_samples": 8, "seed": 3, "quadrature_points": 4001,
                 "wrong_length": 1.0},
    },
    # 64 components; float64 linear algebra on the CPU (no GPU needed)
    "gpu": {
        **_COMMON,
        "dim": 64,
        "softness_grid": {"max": 12.0, "num": 97},
        "time_grid": 4001,
        "trajectory": {"method": "em", "steps": 1000, "seed": 1},
        "sampler_steps": [5, 10, 20, 50, 100, 200, 500, 1000],
        "empirical": {"softness": 1.0, "n_samples": 10000, "seed": 2, "steps": [5, 10, 20, 50, 100, 200]},
        "nfe": {"softness": [1.0, 2.0], "budgets": [4, 6, 10, 15, 20, 30, 50, 75, 100, 150, 200],
                "reference_steps": 1000, "table": [20, 100]},
        "elbo": {"n_examples": 4000, "n_time_samples": 8, "seed": 3, "quadrature_points": 8001,
                 "wrong_length": 1.0},
    },
    # no toy in the paper: the gpu settings with more Monte-Carlo samples and steps
    "paper": {
        **_COMMON,
        "dim": 64,
        "softness_grid": {"max": 12.0, "num": 97},
        "time_grid": 8001,
        "trajectory": {"method": "em", "steps": 2000, "seed": 1},
        "sampler_steps": [5, 10, 20, 50, 100, 200, 500, 1000, 2000],
        "empirical": {"softness": 1.0, "n_samples": 100000, "seed": 2,
                      "steps": [5, 10, 20, 50, 100, 200, 500, 1000]},
        "nfe": {"softness": [1.0, 2.0, 4.0], "budgets": [4, 6, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300],
                "reference_steps": 2000, "table": [20, 100]},
        "elbo": {"n_examples": 20000, "n_time_samples": 16, "seed": 3, "quadrature_points": 16001,
                 "wrong_length": 1.0},
    },
}


# ----------------------------------------------------------------------------- set-up

def toys(cfg: dict) -> dict[str, Toy]:
    """The toy in both priors (same data law, same exact denoiser up to the scale)."""
    kw = dict(d=cfg["dim"], kernel=cfg["kernel"], length=cfg["length"], variance=cfg["variance"])
    return {p: make_toy(whitened=p == "whitened", **kw) for p in PRIORS}


def schedule(toy: Toy, cfg: dict, a: float, convention: str | None = None) -> SoftConditioningSchedule:
    """The soft-conditioning schedule with position labels, inverse softness ``a``, in
    ``convention`` (default: the chapter's main one)."""
    return family(toy.labels, toy.prior, convention or cfg["convention"], a=a,
                  gamma_denoise=cfg["gamma_denoise"], gamma_noise=cfg["gamma_noise"])


def _grid(cfg: dict) -> torch.Tensor:
    g = cfg["softness_grid"]
    return torch.linspace(0.0, g["max"], g["num"], dtype=torch.float64)


def _timed(fn: Callable[[], dict]) -> Callable[[], dict]:
    def run() -> dict:
        t0 = time.perf_counter()
        out = fn()
        return {**out, "seconds": time.perf_counter() - t0}
    return run


# ----------------------------------------------------------------------------- parts

def structure(cfg: dict, convention: str) -> dict:
    r"""Decision times ``[A, D]`` on the fine grid of ``a`` (whitened prior) and the fractions
    :math:`R_J` of the middle pixel's variance explained, at its decision time, by the noisy
    past, itself, the future, and everything (``explained_<J> [A]``)."""
    toy = toys(cfg)["whitened"]
    k, d = toy.oracle.cov, cfg["dim"]
    grid = _grid(cfg)
    mid = d // 2
    idx = torch.arange(d)
    groups = {"past": idx < mid, "self": idx == mid, "future": idx > mid, "all": idx >= 0}
    tau = torch.empty(len(grid), d, dtype=torch.float64)
    explained = {g: torch.empty(len(grid), dtype=torch.float64) for g in groups}
    for j, a in enumerate(grid.tolist()):
        sch = schedule(toy, cfg, a, convention)
        tau[j] = decision_times(k, sch, threshold=cfg["decision_threshold"], n_grid=cfg["time_grid"])
        g = sch.gamma(tau[j, mid].reshape(1)).to(torch.float64)
        for name, mask in groups.items():
            explained[name][j] = 1 - conditional_variance(k, g, mid, mask)[0] / k[mid, mid]
    return {"decision_times": tau, **{f"explained_{n}": v for n, v in explained.items()}}


def paths(cfg: dict) -> dict:
    """True log-SNR paths ``[T, D]`` (whitened prior) and decision times ``[D]`` at every shown
    and tabulated ``a``, per convention."""
    toy = toys(cfg)["whitened"]
    t = torch.linspace(0.0, 1.0, cfg["path_times"], dtype=torch.float64)
    out: dict[str, Any] = {"times": t}
    for conv in cfg["conventions"]:
        for a in sorted(set(cfg["softness"]) | set(cfg["show_softness"])):
            sch = schedule(toy, cfg, a, conv)
            out[f"{conv}/a{a:g}/log_snr"] = -sch.effective_gamma(t)
            out[f"{conv}/a{a:g}/tau"] = decision_times(toy.oracle.cov, sch, threshold=cfg["decision_threshold"],
                                                       n_grid=cfg["time_grid"])
    return out


def trajectories(cfg: dict) -> dict:
    r"""One generation per shown ``a`` (main convention, whitened prior): before every step the
    time and the clean prediction in pixel values, :math:`\hat x_0 = \text{prior.decode}(\hat y_0)`
    ``[S, D]``, and the final sample ``[D]``."""
    toy = toys(cfg)["whitened"]
    tr = cfg["trajectory"]
    out = {}
    for a in cfg["show_softness"]:
        rec = TrajectoryRecorder()
        y = sample(toy.oracle, schedule(toy, cfg, a), 1, method=tr["method"], steps=tr["steps"],
                   generator=torch.Generator().manual_seed(tr["seed"]), dtype=torch.float64, callback=rec)
        out[f"a{a:g}/times"] = rec.times
        out[f"a{a:g}/x0hat"] = toy.prior.decode(rec.denoised[:, 0])
        out[f"a{a:g}/sample"] = toy.prior.decode(y)[0]
    return out


def steps(cfg: dict) -> dict:
    r"""Exact :math:`\mathrm{KL}(q(y_{t=0})\,\|\,p)` of the state at t = 0 *before* the final
    denoising, ``kl [prior, a, sampler, steps]`` (main convention), and the prior mismatch
    ``mismatch [prior, a]``."""
    samplers, counts, soft = cfg["samplers"], cfg["sampler_steps"], cfg["softness"]
    kl = torch.empty(len(PRIORS), len(soft), len(samplers), len(counts), dtype=torch.float64)
    mismatch = torch.empty(len(PRIORS), len(soft), dtype=torch.float64)
    for p, toy in enumerate(toys(cfg).values()):
        for j, a in enumerate(soft):
            sch = schedule(toy, cfg, a)
            mismatch[p, j] = prior_mismatch(toy.oracle, sch)
            m0, c0 = marginal_moments(toy.oracle, sch.gamma(torch.zeros(1, dtype=torch.float64))[0])
            for s, method in enumerate(samplers):
                for n, st in enumerate(counts):
                    mu, cov = propagate_moments(toy.oracle, sch, method, st, denoise_final=False)
                    kl[p, j, s, n] = gaussian_kl(m0, c0, mu, cov)
    return {"kl": kl, "mismatch": mismatch}


def empirical(cfg: dict) -> dict:
    """The step study from real samples (whitened prior, one ``a``): KL of the data law from the
    samples' Gaussian fit, and of the propagated law from it (at the floor if the propagation is
    right), ``[sampler, steps]``."""
    emp = cfg["empirical"]
    toy = toys(cfg)["whitened"]
    sch = schedule(toy, cfg, emp["softness"])
    m0, c0 = marginal_moments(toy.oracle, sch.gamma(torch.zeros(1, dtype=torch.float64))[0])
    shape = (len(cfg["samplers"]), len(emp["steps"]))
    kl, kl_prop, kl_exact = (torch.empty(shape, dtype=torch.float64) for _ in range(3))
    for s, method in enumerate(cfg["samplers"]):
        for n, st in enumerate(emp["steps"]):
            gen = torch.Generator().manual_seed(emp["seed"] + 1000 * s + n)
            ys = sample(toy.oracle, sch, emp["n_samples"], method=method, steps=st, generator=gen,
                        dtype=torch.float64, denoise_final=False)
            mu, cov = propagate_moments(toy.oracle, sch, method, st, denoise_final=False)
            kl[s, n], kl_prop[s, n] = empirical_kl(m0, c0, ys), empirical_kl(mu, cov, ys)
            kl_exact[s, n] = gaussian_kl(m0, c0, mu, cov)
    return {"kl": kl, "kl_vs_propagated": kl_prop, "kl_exact": kl_exact,
            "floor": empirical_kl_floor(cfg["dim"], emp["n_samples"])}


def nfe_errors(cfg: dict, prior: str, a: float) -> dict:
    """:func:`gud.gaussian.sampler_error_vs_nfe` for every sampler (main convention)."""
    toy = toys(cfg)[prior]
    nc = cfg["nfe"]
    return sampler_error_vs_nfe(toy, schedule(toy, cfg, a), nfes=nc["budgets"], reference_steps=nc["reference_steps"])


def end_terms(cfg: dict, convention: str) -> dict:
    """Closed-form ELBO gap of the exact denoiser (:func:`gud.gaussian.elbo_gap`): its prior
    mismatch and decoder terms ``[prior, A]`` on the fine grid of ``a``."""
    grid = _grid(cfg).tolist()
    prior_kl = torch.empty(len(PRIORS), len(grid), dtype=torch.float64)
    decoder = torch.empty_like(prior_kl)
    for p, toy in enumerate(toys(cfg).values()):
        for j, a in enumerate(grid):
            gap = elbo_gap(toy.oracle, schedule(toy, cfg, a, convention))
            prior_kl[p, j], decoder[p, j] = gap["prior"], gap["decoder"]
    return {"prior_kl": prior_kl, "decoder": decoder}


def elbo_checks(cfg: dict) -> dict:
    """The ELBO of the exact denoiser three ways (closed form, quadrature, Monte Carlo against
    the exact NLL of the same data) and of a mis-specified one, per prior and ``a`` (main
    convention); nats per example."""
    from ..likelihood import elbo
    from ..oracle import gaussian_nll

    ec, d = cfg["elbo"], cfg["dim"]
    tys = toys(cfg)
    cov_x = tys["whitened"].cov_x
    gen = torch.Generator().manual_seed(ec["seed"])
    x = torch.randn(ec["n_examples"], d, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(cov_x).T
    nll = gaussian_nll(x, torch.zeros(d, dtype=torch.float64), cov_x)  # [N], nats, pixel space
    se = lambda v: float(v.std() / math.sqrt(v.numel()))  # noqa: E731
    rows = []
    for prior, toy in tys.items():
        wrong = make_toy(d, cfg["kernel"], ec["wrong_length"], cfg["variance"], toy.prior.whitened).oracle
        y0, ent = toy.prior.encode(x), gaussian_entropy(toy.oracle)
        for a in cfg["softness"]:
            sch = schedule(toy, cfg, a)
            gap = elbo_gap(toy.oracle, sch)
            kw = dict(n_grid=ec["quadrature_points"], breaks=schedule_kinks(sch))  # piecewise Simpson
            quad = expected_elbo(toy.oracle, sch, **kw)["total"] - ent
            quad_w = expected_elbo(toy.oracle, sch, model=wrong, **kw)["total"] - ent
            mc = {}
            for name, model in (("oracle", toy.oracle), ("wrong", wrong)):
                g = torch.Generator().manual_seed(ec["seed"] + 1)  # common random numbers
                mc[name] = elbo(model, y0, sch, generator=g, n_time_samples=ec["n_time_samples"],
                                decoder="gaussian", prior=toy.prior).total
            diff, dw = mc["oracle"] - nll, mc["wrong"] - mc["oracle"]
            rows.append({"prior": prior, "a": a, "gap_prior_kl": gap["prior"], "gap_decoder": gap["decoder"],
                         "gap_closed_form": gap["total"], "gap_quadrature": quad,
                         "mc_elbo_minus_nll": float(diff.mean()), "mc_stderr": se(diff),
                         "wrong_minus_exact_quadrature": quad_w - quad,
                         "wrong_minus_exact_mc": float(dw.mean()), "wrong_minus_exact_mc_stderr": se(dw)})
    entropy = gaussian_entropy(tys["whitened"].oracle) + float(tys["whitened"].prior.log_det)
    zero = torch.zeros(d, dtype=torch.float64)
    wrong_kl = gaussian_kl(zero, cov_x, zero, make_toy(d, cfg["kernel"], ec["wrong_length"], cfg["variance"]).cov_x)
    return {"rows": rows, "mean_nll_nats": float(nll.mean()), "entropy_nats": entropy, "wrong_kl_nats": wrong_kl,
            "nll": nll}


# ----------------------------------------------------------------------------- summaries

def sampler_table(cfg: dict, parts: dict[tuple[str, float], dict]) -> list[dict]:
    """One row per setting and sampler: exact KL and covariance error at the table's budgets, and
    the fewest evaluations (of ``budgets``) whose KL is at most the reference's."""
    nc = cfg["nfe"]
    budgets = list(nc["budgets"])
    rows = []
    for (prior, a), res in parts.items():
        kl, cov_err = np.asarray(res["kl"]), np.asarray(res["cov_err"])
        for i, method in enumerate(res["methods"]):
            reach = [b for b, v in zip(budgets, kl[i]) if np.isfinite(v) and v <= res["ref_kl"]]
            rows.append({"prior": prior, "a": a, "method": method,
                         "kl": {str(b): float(kl[i, budgets.index(b)]) for b in nc["table"]},
                         "cov_err": {str(b): float(cov_err[i, budgets.index(b)]) for b in nc["table"]},
                         "nfe_to_reference": reach[0] if reach else None})
        rows.append({"prior": prior, "a": a, "method": f"em, {nc['reference_steps']} steps (reference)",
                     "nfe": nc["reference_steps"] + 1, "kl_reference": res["ref_kl"],
                     "cov_err_reference": res["ref_cov_err"], "prior_kl": res["prior_kl"]})
    return rows


# ----------------------------------------------------------------------------- compute

def micro(cfg: dict) -> dict:
    """Micro sizes of any profile's configuration (``python -m gud run --micro``)."""
    cfg.update(dim=6, softness_grid={"max": 8.0, "num": 5}, time_grid=401, softness=[0.0, 2.0, 8.0],
               show_softness=[0.0, 8.0], path_times=21, trajectory={"method": "em", "steps": 20, "seed": 1},
               sampler_steps=[5, 20], empirical={"softness": 2.0, "n_samples": 400, "seed": 2, "steps": [5, 20]},
               nfe={"softness": [1.0], "budgets": [4, 10], "reference_steps": 100, "table": [10]},
               elbo={"n_examples": 300, "n_time_samples": 2, "seed": 3, "quadrature_points": 1001, "wrong_length": 1.0})
    return cfg


def compute(cfg: dict, ctx) -> tuple[dict, dict]:
    """All numbers of the chapter (see the module docstring); every part memoised."""
    metrics: dict[str, Any] = {}
    arrays: dict[str, Any] = {"softness_grid": _grid(cfg)}
    seconds: dict[str, float] = {}

    def part(name: str, fn: Callable[[], dict], prefix: str) -> dict:
        out = ctx.cached(name, _timed(fn))
        seconds[name] = float(out.pop("seconds"))
        for k, v in out.items():
            if isinstance(v, np.ndarray):
                arrays[f"{prefix}/{k}"] = v
        return out

    for conv in cfg["conventions"]:
        part(f"structure-{conv}", lambda: structure(cfg, conv), f"structure/{conv}")
    part("paths", lambda: paths(cfg), "paths")
    part("trajectories", lambda: trajectories(cfg), "trajectories")
    part("steps", lambda: steps(cfg), "steps")
    emp = part("empirical", lambda: empirical(cfg), "empirical")
    nfe_parts = {}
    for prior in PRIORS:
        for a in cfg["nfe"]["softness"]:
            nfe_parts[(prior, a)] = part(f"nfe-{prior}-a{a:g}", lambda: nfe_errors(cfg, prior, a), f"nfe/{prior}/a{a:g}")
    for conv in cfg["conventions"]:
        part(f"end_terms-{conv}", lambda: end_terms(cfg, conv), f"end_terms/{conv}")
    el = part("elbo", lambda: elbo_checks(cfg), "elbo")

    k = toys(cfg)["whitened"].oracle.cov
    mid = cfg["dim"] // 2
    past = torch.arange(cfg["dim"]) < mid
    ar_var = k[mid, mid] - k[mid, past] @ torch.linalg.solve(k[past][:, past], k[past, mid])
    first = next(iter(nfe_parts.values()))
    metrics.update({
        "middle_component": mid,
        "ar_limit_explained_by_past": float(1 - ar_var / k[mid, mid]),
        "rho_squared": math.exp(-2 / cfg["length"]),
        "empirical_floor": float(emp["floor"]),
        "nfe_methods": list(first["methods"]),
        "nfe_reference": [{"prior": p, "a": a, "kl": r["ref_kl"], "cov_err": r["ref_cov_err"],
                           "prior_kl": r["prior_kl"]} for (p, a), r in nfe_parts.items()],
        "sampler_table": sampler_table(cfg, nfe_parts),
        "elbo_rows": el["rows"],
        "mean_nll_nats": el["mean_nll_nats"],
        "entropy_nats": el["entropy_nats"],
        "wrong_kl_nats": el["wrong_kl_nats"],  # KL(q || law of the wrong denoiser), data space
        "seconds": seconds,
        "data_description": (f"a stationary Ornstein–Uhlenbeck process on {cfg['dim']} pixels "
                             f"(correlation length {cfg['length']:g}, variance {cfg['variance']:g}), "
                             f"its exact law and exact denoiser; Monte-Carlo checks with "
                             f"{cfg['empirical']['n_samples']} samples and {cfg['elbo']['n_examples']} "
                             f"ELBO examples"),
        "compute_description": (f"no training: float64 linear algebra, {sum(seconds.values()):.0f} s summed over "
                                f"its {len(seconds)} parts"),
    })
    return metrics, arrays
