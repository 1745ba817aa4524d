r"""The trivial baselines every result is shown beside.

* the **Gaussian model** of the data in the experiment's basis and prior: the closed-form
  denoiser of independent Gaussian components with the data's variances (for PCA this is the
  maximum-likelihood Gaussian; in other bases it keeps only the variances of that basis).  It
  is exactly what an untrained preconditioned network computes (:class:`gud.nets.EpsNet`), so
  a trained network that does not beat it has learnt nothing;
* :func:`full_gaussian_denoiser` -- the full-covariance Gaussian's exact denoiser, driven
  through the same process as a network: the best affine denoiser, and the gate every network
  must pass in bits/dim (:func:`gud.protocol.network_gate`);
* :func:`gaussian_bpd_bound` -- a schedule-free bound for the full-covariance Gaussian:
  uniformly dequantised data under :math:`\mathcal N(\mu, K + b^2/12\, I)`;
* :func:`uniform_bpd` -- every quantisation level equally likely;
* :func:`gaussian_samples` -- samples of the Gaussian model, the "blobs" a sample score must
  rank below a working model.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .oracle import GaussianOracle
from .pipeline import EVAL_BATCH, Setup, bin_width

__all__ = ["gaussian_denoiser", "full_gaussian_denoiser", "full_gaussian_images", "FULL_GAUSSIAN_FLOP",
           "gaussian_bpd_bound", "gaussian_bpd_per_image", "uniform_bpd", "gaussian_samples",
           "full_gaussian_samples", "record_full_gaussian"]


def gaussian_denoiser(setup: Setup) -> GaussianOracle:
    """The exact denoiser of independent Gaussian components with the prior's data variances
    (whitened space: mean 0, variances :math:`v_i = \\Sigma_i/s_i^2`)."""
    v = setup.prior.log_var.exp().to(torch.float64)
    return GaussianOracle(torch.zeros_like(v), torch.diag(v))


def full_gaussian_denoiser(setup: Setup) -> GaussianOracle:
    r"""The exact denoiser of the full-covariance Gaussian of the training split, in the prior's
    whitened components: mean and covariance of ``prior.encode(train)``, each variance raised to
    at least the Gaussian model's (the prior's floor of a quarter-bin's variance, which keeps
    constant pixels from having zero variance).  Driven through the same process as a network
    (same prior, schedule and end points), it is the best *affine* denoiser of the training data:
    a network that does not beat it in bits/dim has learnt nothing beyond the data's second
    moments.  In the PCA basis the training split's components are uncorrelated, and this is the
    Gaussian model itself (:func:`gaussian_denoiser`, returned when the off-diagonal covariance
    is at round-off level)."""
    y = setup.prior.encode(setup.train.x.double()).double()
    if y.shape[0] < 2:
        raise ValueError("the full-covariance Gaussian needs at least two training images")
    k = torch.cov(y.T).reshape(y.shape[1], y.shape[1])
    v = setup.prior.log_var.exp().to(torch.float64)
    off = k - torch.diag(k.diagonal())
    if float(off.abs().max()) <= 1e-9 * float(k.diagonal().abs().max()):  # uncorrelated (PCA)
        return gaussian_denoiser(setup)
    k = k + torch.diag((v - k.diagonal()).clamp_min(0.0))
    return GaussianOracle(y.mean(0), k)


#: Floating-point operations one evaluation of the full-covariance Gaussian may spend on its
#: per-image factorisations (``D^3/3`` each): about half a second of one GPU, an hour of a CPU core.
#: A configuration may set its own (``full_gaussian_flop``; micro runs do, to stay seconds long).
FULL_GAUSSIAN_FLOP = 5e12


def full_gaussian_images(setup: Setup, model: GaussianOracle, n_time_samples: int = 1,
                         flop: float | None = None) -> int | None:
    """How many test images (the first ones) the full-covariance Gaussian ``model`` is evaluated
    on: all of them (``None``) when its covariance is diagonal (PCA) or its factorisations (one
    ``D x D`` Cholesky per image and Monte-Carlo replicate) stay within ``flop`` (default
    :data:`FULL_GAUSSIAN_FLOP`), else as many as fit, at least 2, rounded down to whole batches of
    the bound (:data:`gud.pipeline.EVAL_BATCH`) where one fits, so that every image keeps the draws
    of time and noise of the first seed's network (8x8 digits: all; 32x32 grey: all of 2000;
    32x32x3 colour with one replicate: 512)."""
    d = setup.prior.dim
    fit = int((FULL_GAUSSIAN_FLOP if flop is None else flop) // (d ** 3 / 3 * max(1, int(n_time_samples))))
    if model.diagonal or fit >= len(setup.test):
        return None
    return fit - fit % EVAL_BATCH if fit >= EVAL_BATCH else max(2, fit)


def gaussian_bpd_bound(setup: Setup) -> float:
    """Mean of :func:`gaussian_bpd_per_image` (see there)."""
    return float(gaussian_bpd_per_image(setup).mean())


def gaussian_bpd_per_image(setup: Setup) -> Tensor:
    r"""Bits/dim ``[N]`` of every test image under the full-covariance Gaussian fitted to the (dequantised)
    training split, :math:`\mathcal N(\mu, K + b^2/12\,I)` with ``b`` the bin width: the closed-form
    upper bound :math:`\mathbb E_u[-\log\mathcal N(x + u)] - D\log b` on the negative log-probability
    of the quantised data, :math:`u` uniform in the bin (Theis et al. 2016), which for a
    Gaussian is :math:`-\log\mathcal N(x) + \tfrac{b^2}{24}\mathrm{tr}\,(K + b^2/12)^{-1}`."""
    bw = bin_width(setup.train)
    x, xt = setup.train.x.double(), setup.test.x.double()
    d = x.shape[1]
    mu = x.mean(0)
    k = torch.cov(x.T) + bw ** 2 / 12 * torch.eye(d, dtype=torch.float64)
    chol = torch.linalg.cholesky(k)
    z = torch.linalg.solve_triangular(chol, (xt - mu).T, upper=False)
    nll = 0.5 * (z ** 2).sum(0) + torch.log(torch.diagonal(chol)).sum() + 0.5 * d * math.log(2 * math.pi)
    dequant = 0.5 * bw ** 2 / 12 * torch.cholesky_inverse(chol).diagonal().sum()
    return ((nll + dequant) / d - math.log(bw)) / math.log(2)


def uniform_bpd(setup: Setup) -> float:
    """Bits/dim of the uniform distribution over the quantisation levels (17 for digits: 4.09)."""
    return math.log2(round(2.0 / bin_width(setup.train)) + 1)


def gaussian_samples(setup: Setup, n: int, *, seed: int = 0) -> Tensor:
    """``n`` samples ``[n, D]`` of the Gaussian model (the prior's variances in its basis), decoded
    to data space and clipped to [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, setup.prior.dim, generator=g, dtype=torch.float64) * (0.5 * setup.prior.log_var).exp()
    return setup.prior.decode(y).clamp(-1, 1).float()


def full_gaussian_samples(setup: Setup, n: int, *, seed: int = 0) -> Tensor:
    """``n`` samples ``[n, D]`` of the full-covariance Gaussian of the training split (the
    strongest closed-form model; in the PCA basis it equals :func:`gaussian_samples`), clipped to
    [-1, 1]."""
    x = setup.train.x.double()
    mu = x.mean(0)
    k = torch.cov(x.T)
    evals, evecs = torch.linalg.eigh(k)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, x.shape[1], generator=g, dtype=torch.float64) * evals.clamp_min(0).sqrt()
    return (mu + z @ evecs.T).clamp(-1, 1).float()


def record_full_gaussian(rows: list, arrays: dict, dataset: str, setup: Setup) -> float:
    """Record the full-covariance Gaussian of ``setup`` as the row ``model="full_gaussian"`` with its
    per-image bits/dim (terms NaN: a closed form, not a diffusion) and return its mean bits/dim."""
    import numpy as np

    from .pipeline import record

    per = gaussian_bpd_per_image(setup).float().numpy()
    nan = np.full_like(per, np.nan)
    record(rows, arrays, {"dataset": dataset, "model": "full_gaussian"},
           {"bpd": float(per.mean()), "per_image": np.stack([per, nan, nan, nan])})
    return float(per.mean())
