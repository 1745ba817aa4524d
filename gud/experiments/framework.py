"""Configuration and helpers of the chapter 'framework' (book/framework.ipynb).

No training: the chapter fits bases and priors to data and draws schedules.

Keys
----
datasets        data sets shown (``gud.data.load_dataset`` names); the first one is used
                for the schedule figures
pad_to          pad 28x28 MNIST to this size (None: as stored)
limit, test_limit
                training images used to fit the bases and priors, test images scored
bases           the representations compared
n_show          images per row in the prior-sample figure
vectors         basis vectors shown per basis
gamma_denoise, gamma_noise
                the soft-conditioning schedule's end points in the true SNR
                (official code's defaults, -7 and 3)
a_values        inverse softness a of the variance-label paths
a_autoregressive
                inverse softness of the rank-label schedule that is exactly autoregressive
                (windows touch when a = gamma_noise - gamma_denoise for rank labels)
seq_width       active fraction w of the clipped sequential schedule
n_times         time grid of the path plots
seed            seed of the prior samples
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["CONFIGS", "active_windows", "max_overlap", "prior_bits_per_dim", "basis_vector_indices"]

_COMMON = {
    "bases": ["pixel", "pca", "fourier", "wavelet"],
    "vectors": 6,
    "gamma_denoise": -7.0,
    "gamma_noise": 3.0,
    "a_values": [0.0, 0.5, 1.0, 2.0],
    "a_autoregressive": 10.0,
    "seq_width": 0.2,
    "n_times": 201,
    "seed": 0,
}

CONFIGS = {
    # 8x8 digits embedded in scikit-learn: all 1438 training and 359 test images; seconds.
    "ci": {**_COMMON, "datasets": ["digits"], "pad_to": None, "limit": None, "test_limit": None,
           "n_show": 8},
    # MNIST (padded to 32x32) and CIFAR-10 from the local mirror: 20000 training images fit
    # the 3072x3072 covariance of CIFAR-10 well; about a minute on CPU (no GPU needed).
    "gpu": {**_COMMON, "datasets": ["mnist", "cifar10"], "pad_to": 32, "limit": 20000,
            "test_limit": 5000, "n_show": 8},
    # The full training sets (50000 / 60000 images).
    "paper": {**_COMMON, "datasets": ["mnist", "cifar10"], "pad_to": 32, "limit": None,
              "test_limit": None, "n_show": 8},
}


def active_windows(schedule, params=None, gamma_lo: float | None = None,
                   gamma_hi: float | None = None) -> tuple[Tensor, Tensor]:
    r"""Active window ``[start_i, end_i]`` of every component of a soft-conditioning schedule:
    the times at which :math:`\tilde\gamma_{denoise} \le \tilde\gamma_i(t) \le \tilde\gamma_{noise}`
    (i.e. the true log SNR lies between :math:`-\tilde\gamma_{noise}` and
    :math:`-\tilde\gamma_{denoise}`), clipped to [0, 1].  Uses that
    :math:`\tilde\gamma_i(t)` is linear in t.  Returns two tensors ``[D]``.
    """
    lo = schedule.gamma_denoise if gamma_lo is None else gamma_lo
    hi = schedule.gamma_noise if gamma_hi is None else gamma_hi
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    g = schedule.effective_gamma(t, params)  # [2, D]
    g0, slope = g[0], g[1] - g[0]
    start = ((lo - g0) / slope).clamp(0.0, 1.0)
    end = ((hi - g0) / slope).clamp(0.0, 1.0)
    return start, end


def max_overlap(start: Tensor, end: Tensor, tol: float = 1e-9) -> int:
    """Largest number of open windows ``(start_i, end_i)`` that contain a common time.

    Windows that only touch (``end_i == start_j`` up to ``tol``) do not overlap.
    """
    events = sorted([(float(s) + tol, 1) for s, e in zip(start, end) if e - s > 2 * tol]
                    + [(float(e) - tol, -1) for s, e in zip(start, end) if e - s > 2 * tol],
                    key=lambda p: (p[0], p[1]))
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


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
