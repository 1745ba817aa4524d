r"""The chapter 'framework' (book/framework.ipynb): basis, prior and component-wise schedule.

No training.  :func:`compute` fits every basis and prior to the data sets of the profile
(spectra, basis vectors, prior samples, prior bits/dim) and evaluates the soft-conditioning
schedule on the PCA basis of the first data set: the spread of the process :math:`\gamma`
across components, the end points, the true log-SNR paths and the active windows in each
end-point convention of :data:`gud.labels.CONVENTIONS`, the autoregressive limit (rank labels)
and the clipped sequential schedule.

Keys
----
datasets        data sets shown (``gud.data.load_dataset`` names); the first one is used
                for the schedule part
pad_to          pad 28x28 MNIST to this size (None: as stored)
limit, test_limit
                training images used to fit the bases and priors (None: all), test images scored
bases           the representations compared
n_show          images per row in the prior-sample figure
vectors         basis vectors shown per basis
gamma_denoise, gamma_noise
                the soft-conditioning schedule's end points (the official code's defaults, -7
                and 3): in the true SNR (``"snr"`` conventions) or in the process gamma
                (``"process"`` conventions); also the band of the active windows
conventions     end-point conventions compared (names of ``gud.labels.CONVENTIONS``)
a_values        inverse softness a of the variance-label tables
a_figure        inverse softness a of the path and window figures
a_autoregressive
                inverse softness of the rank-label schedule that is exactly autoregressive
                (windows touch when a = gamma_noise - gamma_denoise for rank labels)
seq_width       active fraction w of the clipped sequential schedule
n_times         time grid of the path figures
n_paths         components whose paths are stored (evenly spaced in label order)
seed            seed of the prior samples
threads         torch intra-op threads
"""
from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
from torch import Tensor

from ..bases import make_basis, rank_labels
from ..data import load_dataset
from ..labels import family, variance_labels
from ..pipeline import bin_width
from ..prior import Prior
from ..schedules import SequentialSchedule, SoftConditioningSchedule

__all__ = ["CONFIGS", "compute", "active_windows", "max_overlap", "gamma_spread", "prior_bits_per_dim",
           "basis_vector_indices", "data_description", "path_indices"]

_COMMON = {
    "bases": ["pixel", "pca", "fourier", "wavelet"],
    "vectors": 6,
    "gamma_denoise": -7.0,
    "gamma_noise": 3.0,
    "conventions": ["snr", "process", "process-clipped"],
    "a_values": [0.0, 0.5, 1.0, 2.0],
    "a_figure": [0.0, 1.0, 2.0],
    "a_autoregressive": 10.0,
    "seq_width": 0.2,
    "n_times": 101,
    "n_paths": 128,
    "seed": 0,
    "threads": 1,
}

CONFIGS = {
    # 8x8 digits embedded in scikit-learn: all 1438 training and 359 test images; seconds.
    "ci": {**_COMMON, "datasets": ["digits"], "pad_to": None, "limit": None, "test_limit": None,
           "n_show": 8},
    # MNIST (padded to 32x32) and CIFAR-10 from the local mirror: 20000 training images fit
    # the 3072x3072 covariance of CIFAR-10 well; about a minute on one CPU thread (no GPU needed).
    "gpu": {**_COMMON, "datasets": ["mnist", "cifar10"], "pad_to": 32, "limit": 20000,
            "test_limit": 5000, "n_show": 8},
    # The full training sets (50000 / 60000 images).
    "paper": {**_COMMON, "datasets": ["mnist", "cifar10"], "pad_to": 32, "limit": None,
              "test_limit": None, "n_show": 8},
}


# ----------------------------------------------------------------------------- schedule numbers


def _linear_parts(schedule, params=None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    r"""Per component ``[D]``: the unclipped true :math:`\tilde\gamma_i(t) = g_0 + k t` (``g0``,
    ``k``) and, for a clipped schedule, the times ``[ramp_lo, ramp_hi]`` during which the clipped
    quantity moves (``None, None`` when unclipped)."""
    if isinstance(schedule, SequentialSchedule):
        k = torch.full_like(schedule.offset, (schedule.gamma_noise - schedule.gamma_denoise) / schedule.width)
        g0 = schedule.gamma_denoise - k * schedule.offset
        return g0, k, schedule.offset.clone(), schedule.offset + schedule.width
    if not isinstance(schedule, SoftConditioningSchedule):
        raise TypeError(f"active windows need a soft-conditioning or sequential schedule, got {type(schedule).__name__}")
    lin = copy.copy(schedule)
    lin.clip = False
    g = lin.effective_gamma(torch.tensor([0.0, 1.0], dtype=torch.float64), params)  # [2, D]
    g0, k = g[0], g[1] - g[0]
    if not schedule.clip:
        return g0, k, None, None
    # the clipped quantity is the true gamma ("snr") or the process gamma ("process")
    q0 = g0 + (schedule.log_var if schedule.endpoints == "process" else 0.0)
    return g0, k, (schedule.gamma_denoise - q0) / k, (schedule.gamma_noise - q0) / k


def active_windows(schedule, params=None, gamma_lo: float | None = None,
                   gamma_hi: float | None = None) -> tuple[Tensor, Tensor]:
    r"""Active window ``[start_i, end_i]`` of every component: the times at which its true
    :math:`\tilde\gamma_i(t) = -\log\mathrm{SNR}_i(t)` lies in the band
    ``[gamma_lo, gamma_hi]`` (default: the schedule's ``gamma_denoise``, ``gamma_noise``) *and*
    changes (a clipped component that waits at a constant level is not active), within [0, 1].

    For a :class:`~gud.schedules.SoftConditioningSchedule` in any end-point convention, clipped
    or not, and for a :class:`~gud.schedules.SequentialSchedule` (exact: every path is linear in
    t between its clipping points).  Components that are never active (e.g. in the ``"process"``
    convention with the white-noise prior, components whose true SNR never enters the band)
    get ``start = end = nan``.  Returns two tensors ``[D]``.
    """
    g0, k, ramp_lo, ramp_hi = _linear_parts(schedule, params)
    lo = schedule.gamma_denoise if gamma_lo is None else gamma_lo
    hi = schedule.gamma_noise if gamma_hi is None else gamma_hi
    start, end = (lo - g0) / k, (hi - g0) / k
    if ramp_lo is not None:
        start, end = torch.maximum(start, ramp_lo), torch.minimum(end, ramp_hi)
    start, end = start.clamp(0.0, 1.0), end.clamp(0.0, 1.0)
    empty = ~(end > start)
    nan = torch.full_like(start, float("nan"))
    return torch.where(empty, nan, start), torch.where(empty, nan, end)


def max_overlap(start: Tensor, end: Tensor, tol: float = 1e-9) -> int:
    """Largest number of open windows ``(start_i, end_i)`` that contain a common time.

    Windows that only touch (``end_i == start_j`` up to ``tol``) do not overlap; empty
    (``nan``) windows are ignored.
    """
    s = np.asarray(start, dtype=np.float64).reshape(-1)
    e = np.asarray(end, dtype=np.float64).reshape(-1)
    keep = (e - s) > 2 * tol  # False for nan
    s, e = s[keep] + tol, e[keep] - tol
    times = np.concatenate([s, e])
    delta = np.concatenate([np.ones_like(s), -np.ones_like(e)])
    order = np.lexsort((delta, times))  # at equal times, ends (-1) before starts (+1)
    return int(np.cumsum(delta[order]).max()) if order.size else 0


def gamma_spread(schedule, t: Tensor, params=None) -> float:
    r"""Largest spread of the process :math:`\gamma_i(t)` across components,
    :math:`\max_t(\max_i\gamma_i - \min_i\gamma_i)`: zero exactly when every component gets the same
    noise (one scalar schedule)."""
    g = schedule.gamma(t, params)  # [T, D]
    return float((g.amax(1) - g.amin(1)).max())


def _window_row(name: str, start: Tensor, end: Tensor) -> dict:
    length = end - start
    ok = ~torch.isnan(length)
    n = int(ok.sum())
    return {"schedule": name, "n_active": n, "length_median": float(length[ok].median()) if n else float("nan"),
            "length_max": float(length[ok].max()) if n else float("nan"), "max_overlap": max_overlap(start, end)}


def path_indices(labels: Tensor, n: int) -> Tensor:
    """``min(n, D)`` component indices evenly spaced in label order (ties by index)."""
    order = torch.argsort(torch.as_tensor(labels), stable=True)
    if order.numel() <= n:
        return order
    return order[torch.linspace(0, order.numel() - 1, n).round().long()]


# ----------------------------------------------------------------------------- bases and priors


def prior_bits_per_dim(prior, x: Tensor, bin_width: float) -> float:
    """Mean negative log-likelihood of ``x [N, D]`` under the prior Gaussian
    ``N(mean, U^T S^2 U)``, as bits per dimension of data quantised to bins of
    ``bin_width`` (density times bin volume): the end point of the diffusion used as a
    model on its own."""
    logp = prior.log_prob(x.to(torch.float64))  # [N]
    d = x.shape[1]
    return float(-(logp.mean() / d + math.log(bin_width)) / math.log(2))


def basis_vector_indices(basis, k: int) -> list[int]:
    """``k`` representative components of a basis (first channel): pixel -- evenly spaced
    pixels; PCA, Fourier -- the first ``k`` (largest variance, lowest frequency); wavelet --
    the first coefficient of each (scale, orientation) block, coarse to fine."""
    name = basis.name
    hw = basis.shape[1] * basis.shape[2]
    if name == "pixel":
        return torch.linspace(0, hw - 1, k + 2).round().long()[1:-1].tolist()
    if name in ("pca", "fourier"):
        return list(range(k))
    if name == "wavelet":
        meta = basis.meta
        picks, seen = [], set()
        for i in range(hw):
            key = (int(meta["scale"][i]), int(meta["orientation"][i]))
            if key not in seen:
                seen.add(key)
                picks.append(i)
        if len(picks) > k:  # keep the approximation, the coarsest details and the finest diagonal
            picks = picks[: k - 1] + [picks[-1]]
        return picks
    raise ValueError(f"no representative components defined for basis {name!r}")


def data_description(info: dict) -> str:
    """``"<source>, <H>×<W>: 1,438 training / 359 test images"`` for one data set."""
    c, h, w = info["shape"]
    size = f"{h}×{w}" + (" colour" if c == 3 else "") + (" (padded)" if info.get("padded") else "")
    return f"{info['source']}, {size}: {info['n_train']:,} training / {info['n_test']:,} test images"


def _load(cfg: dict, name: str, split: str, limit):
    kwargs = {"pad_to": cfg["pad_to"]} if name in ("mnist", "fashion-mnist") and cfg["pad_to"] else {}
    return load_dataset(name, split, limit=limit, **kwargs)


def _bases_and_priors(cfg: dict, ds: str, gen: torch.Generator, metrics: dict, arrays: dict) -> Prior:
    """Fit every basis and both priors to ``ds``; returns the white-noise PCA prior."""
    train, test = _load(cfg, ds, "train", cfg["limit"]), _load(cfg, ds, "test", cfg["test_limit"])
    x, d, bw = train.x.double(), train.dim, bin_width(train)
    info = {"source": train.source, "shape": list(train.shape), "n_train": len(train), "n_test": len(test),
            "bin_width": bw, "padded": ds in ("mnist", "fashion-mnist") and bool(cfg["pad_to"]), "bases": {}}
    arrays[f"{ds}.data"] = test.x[: cfg["n_show"]].float()
    y = torch.randn(cfg["n_show"], d, generator=gen, dtype=torch.float64)  # one draw for every prior
    pca_plain = None
    for name in cfg["bases"]:
        basis = make_basis(name, train.shape, data=x if name == "pca" else None)
        row = {"D": d}
        for whitened in (True, False):
            prior = Prior.fit(basis, x, whitened=whitened, var_floor=bw ** 2 / 12)
            tag = "whitened" if whitened else "unwhitened"
            row[f"bpd_{tag}"] = prior_bits_per_dim(prior, test.x, bw)
            if whitened or name == cfg["bases"][0]:  # white noise: one basis is enough (same law in all)
                arrays[f"{ds}.{name}.{tag}.samples"] = prior.decode(y).float()
        if name == "pca":
            pca_plain = prior
        var = torch.sort(prior.var, descending=True).values
        frac = torch.cumsum(var, 0) / var.sum()
        row["n90"], row["n99"] = (int(torch.searchsorted(frac, q)) + 1 for q in (0.9, 0.99))
        row["total_var"] = float(var.sum())
        info["bases"][name] = row
        arrays[f"{ds}.{name}.var_sorted"] = var.float()  # Sigma_i, largest first
        idx = basis_vector_indices(basis, cfg["vectors"])
        arrays[f"{ds}.{name}.vectors"] = basis.inverse(torch.eye(d, dtype=torch.float64)[idx]).float()
    metrics["datasets"][ds] = info
    if pca_plain is None:
        pca_plain = Prior.fit(make_basis("pca", train.shape, data=x), x, whitened=False, var_floor=bw ** 2 / 12)
    return pca_plain


# ----------------------------------------------------------------------------- the schedule part


def _schedule_part(cfg: dict, prior_plain: Prior, metrics: dict, arrays: dict) -> None:
    G = dict(gamma_denoise=cfg["gamma_denoise"], gamma_noise=cfg["gamma_noise"])
    prior_white = Prior(prior_plain.basis, prior_plain.mean, prior_plain.var, whitened=True)
    priors = {"white-noise": prior_plain, "whitened": prior_white}
    var_lab = variance_labels(prior_plain)  # [D], the same for both priors
    rank = rank_labels(prior_plain.var, descending=True)  # 0 = largest variance
    t = torch.linspace(0, 1, cfg["n_times"], dtype=torch.float64)
    t01 = torch.tensor([0.0, 1.0], dtype=torch.float64)
    log_var = prior_plain.var.log()
    metrics["schedule"] = {"D": int(var_lab.numel()), "log_var_min": float(log_var.min()),
                           "log_var_max": float(log_var.max())}
    # spread of the process gamma and the end points, variance labels
    spread, ends = [], []
    for a in cfg["a_values"]:
        for conv in cfg["conventions"]:
            row = {"a": a, "convention": conv}
            for pname, p in priors.items():
                row[pname] = gamma_spread(family(var_lab, p, conv, a=a, **G), t)
            spread.append(row)
            s = family(var_lab, prior_plain, conv, a=a, **G)
            g, snr = s.gamma(t01), s.state(t01).true_log_snr(prior_plain.log_var)  # [2, D]
            ends.append({"a": a, "convention": conv, "gamma0_min": float(g[0].min()), "gamma0_max": float(g[0].max()),
                         "gamma1_min": float(g[1].min()), "gamma1_max": float(g[1].max()),
                         "log_snr0_min": float(snr[0].min()), "log_snr0_max": float(snr[0].max()),
                         "log_snr1_min": float(snr[1].min()), "log_snr1_max": float(snr[1].max())})
    metrics["spread"], metrics["endpoints"] = spread, ends
    # paths and windows: every convention at a_figure (white-noise prior), then the limits
    idx = path_indices(var_lab, cfg["n_paths"])
    arrays["t"], arrays["paths.index"] = t.float(), idx
    arrays["labels.variance"], arrays["labels.rank"] = var_lab.float(), rank.float()
    windows = []
    panels = [(f"{conv}.a{a:g}", family(var_lab, prior_plain, conv, a=a, **G), prior_plain, conv, a)
              for conv in cfg["conventions"] for a in cfg["a_figure"]]
    w = cfg["seq_width"]
    panels += [("autoregressive", family(rank, prior_white, "process-clipped", a=cfg["a_autoregressive"], **G),
                prior_white, "process-clipped", cfg["a_autoregressive"]),
               ("sequential", SequentialSchedule(rank, prior_white.log_var, width=w, **G), prior_white,
                "snr-clipped", None)]  # written in the true SNR, clipped
    for key, sched, prior, conv, a in panels:
        arrays[f"log_snr.{key}"] = sched.state(t).true_log_snr(prior.log_var)[:, idx].float()  # [T, P]
        start, end = active_windows(sched)
        arrays[f"window.{key}.start"], arrays[f"window.{key}.end"] = start.float(), end.float()
        prior_name = "white-noise" if prior is prior_plain else "whitened"
        windows.append({**_window_row(key, start, end), "convention": conv, "a": a, "prior": prior_name,
                        "labels": "variance" if key.startswith(tuple(cfg["conventions"])) else "rank"})
    metrics["windows"] = windows


def compute(cfg: dict, ctx) -> tuple[dict, dict]:
    """Bases, priors and schedule numbers of the chapter (see the module docstring)."""
    start = time.perf_counter()
    metrics: dict = {"datasets": {}}
    arrays: dict = {}
    gen = torch.Generator().manual_seed(cfg["seed"])
    first = None
    for ds in cfg["datasets"]:
        ctx.check(f"bases and priors of {ds}")
        prior = _bases_and_priors(cfg, ds, gen, metrics, arrays)
        first = prior if first is None else first
    _schedule_part(cfg, first, metrics, arrays)
    wall = time.perf_counter() - start
    metrics["data_description"] = "; ".join(data_description(i) for i in metrics["datasets"].values())
    metrics["compute_description"] = (f"no training: {len(cfg['bases'])} bases and 2 priors per data set fitted, "
                                      f"schedules evaluated, {wall:.1f} s on the CPU "
                                      f"({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})")
    metrics["wall_seconds"] = wall
    return metrics, arrays
