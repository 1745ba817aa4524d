r"""The exact epsilon predictor for Gaussian data.

If whitened components are Gaussian, :math:`y_0 \sim \mathcal N(m, K)`, then
:math:`y_t = \alpha y_0 + \sigma\varepsilon` is Gaussian with covariance
:math:`C_t = \mathrm{diag}(\alpha) K \mathrm{diag}(\alpha) + \mathrm{diag}(\sigma^2)` and

.. math:: \mathbb E[\varepsilon \mid y_t] = \sigma \odot C_t^{-1}(y_t - \alpha \odot m),

the minimiser of the epsilon-matching loss.  :class:`GaussianOracle` is a
denoiser with the same interface as a network wrapper, so the schedule,
samplers and ELBO can be tested exactly, without training.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .prior import Prior
from .schedules import alpha_sigma

__all__ = ["GaussianOracle", "gaussian_nll"]


class GaussianOracle:
    """Optimal ``eps_hat(y_t, gamma)`` for ``y_0 ~ N(mean [D], cov [D, D])`` (whitened).

    A full covariance with one noise state per example costs one ``D x D`` factorisation per
    example; they are done :attr:`CHUNK_ELEMENTS` matrix entries at a time (512 MiB in float64),
    so memory stays bounded whatever the batch (32x32x3 images: 7 examples at a time)."""

    CHUNK_ELEMENTS = 1 << 26

    def __init__(self, mean: Tensor, cov: Tensor):
        cov = torch.as_tensor(cov, dtype=torch.float64)
        d = cov.shape[0] if cov.ndim else 0
        if d == 0 or cov.shape != (d, d) or torch.as_tensor(mean).shape != (d,):
            raise ValueError(f"need mean [D] and cov [D, D] with D >= 1; got {tuple(torch.as_tensor(mean).shape)}, "
                             f"{tuple(cov.shape)}")
        if not (torch.isfinite(cov).all() and torch.isfinite(torch.as_tensor(mean)).all()):
            raise ValueError("mean and cov must be finite")
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.cov = 0.5 * (cov + cov.T)
        self.dim = d
        self.var = self.cov.diagonal().clone()
        #: a diagonal covariance is solved in closed form, component by component (any D)
        self.diagonal = bool(torch.count_nonzero(self.cov - torch.diag(self.var)) == 0)

    @classmethod
    def from_data(cls, mean_x: Tensor, cov_x: Tensor, prior: Prior) -> "GaussianOracle":
        """Oracle for data ``x ~ N(mean_x, cov_x)`` seen through ``prior`` (basis and scale)."""
        u = prior.basis.matrix(torch.float64).to(torch.float64)
        s = prior.scale.to(torch.float64)
        m = (u @ (torch.as_tensor(mean_x, dtype=torch.float64) - prior.mean)) / s
        k = (u @ torch.as_tensor(cov_x, dtype=torch.float64) @ u.T) / torch.outer(s, s)
        return cls(m, k)

    def __call__(self, y_t: Tensor, gamma: Tensor) -> Tensor:
        if y_t.shape != gamma.shape or y_t.shape[-1] != self.dim:
            raise ValueError(f"y_t and gamma must both be [B, {self.dim}]; got {tuple(y_t.shape)}, {tuple(gamma.shape)}")
        if not torch.isfinite(y_t).all() or torch.isnan(gamma).any():
            raise ValueError("y_t or gamma contains NaN or infinite values")
        dtype = y_t.dtype
        y, g = y_t.to(torch.float64), gamma.to(torch.float64)
        alpha, sigma = alpha_sigma(g)
        if self.diagonal:
            m, v = self.mean.to(y.device), self.var.to(y.device)
            return (sigma * (y - alpha * m) / (alpha ** 2 * v + sigma ** 2)).to(dtype)
        m, k = self.mean.to(y.device), self.cov.to(y.device)
        if bool((g == g[:1]).all()):  # one noise state for the whole batch: one factorisation
            a, s = alpha[0], sigma[0]
            c = a[:, None] * k * a[None, :] + torch.diag(s ** 2)
            sol = torch.cholesky_solve((y - a * m).T, torch.linalg.cholesky(c)).T
            return (s * sol).to(dtype)
        out = torch.empty_like(y)
        step = max(1, self.CHUNK_ELEMENTS // (self.dim * self.dim))  # one [n, D, D] factorisation at a time
        for i in range(0, y.shape[0], step):
            a, s = alpha[i:i + step], sigma[i:i + step]
            c = a[:, :, None] * k * a[:, None, :] + torch.diag_embed(s ** 2)
            out[i:i + step] = s * torch.cholesky_solve((y[i:i + step] - a * m)[..., None],
                                                       torch.linalg.cholesky(c))[..., 0]
        return out.to(dtype)

    def nll(self, y0: Tensor) -> Tensor:
        """Exact ``-log N(y0; mean, cov)`` per example (nats)."""
        return gaussian_nll(y0, self.mean, self.cov)


def gaussian_nll(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    """``-log N(x; mean, cov)`` per row of ``x [B, D]``, in float64."""
    x = torch.as_tensor(x, dtype=torch.float64)
    chol = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
    z = torch.linalg.solve_triangular(chol, (x - mean).T, upper=False)
    d = x.shape[-1]
    return 0.5 * (z ** 2).sum(0) + torch.log(torch.diagonal(chol)).sum() + 0.5 * d * math.log(2 * math.pi)
