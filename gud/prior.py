r"""The prior: data mean and per-component scale, the second design choice.

Given a basis :math:`U`, the data mean :math:`\mu` and the variance
:math:`\Sigma_i` of each component :math:`c_i = (U(x-\mu))_i`, a diagonal scale
:math:`S = \mathrm{diag}(s_i)` defines whitened components

.. math:: y = S^{-1} U (x - \mu).

*Whitened*: :math:`s_i = \sqrt{\Sigma_i}`, so the diffusion ends in
:math:`\mathcal N(\mu, U^\top \mathrm{diag}(\Sigma) U)`, a Gaussian matched to the
data covariance.  *Unwhitened*: :math:`s_i = 1`, the usual white-noise prior.
Every diffusion quantity lives in ``y``; the variance of ``y_i`` under the data
is :math:`v_i = \Sigma_i / s_i^2` (``prior.log_var`` holds :math:`\log v_i`), and
it enters the true signal-to-noise ratio :math:`\mathrm{SNR}_i = v_i e^{-\gamma_i}`.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import Tensor, nn

from .bases import Basis, _moved_copy

__all__ = ["Prior", "DEFAULT_VAR_FLOOR"]

#: Variance of uniform quantisation noise of 8-bit data scaled to [-1, 1],
#: (2/255)^2 / 12: components with less variance than this carry no information
#: about 8-bit data, and flooring keeps whitening finite (e.g. pixels that are
#: always 0 in digit images).
DEFAULT_VAR_FLOOR = (2.0 / 255.0) ** 2 / 12.0


class Prior(nn.Module):
    """Mean (pixel space) and per-component variance and scale in a basis.

    Build with :meth:`fit`; save and load with ``state_dict`` like any module; ``to``
    returns a moved copy and leaves the prior (and its basis) where it is.
    ``mean [D]``, ``var [D]`` (floored data variance per component),
    ``scale [D]`` (:math:`s_i`) and ``log_var [D]`` (:math:`\\log \\Sigma_i/s_i^2`).
    """

    def __init__(self, basis: Basis, mean: Tensor, var: Tensor, whitened: bool):
        super().__init__()
        d = basis.dim
        for name, t in (("mean", mean), ("var", var)):
            if t.shape != (d,):
                raise ValueError(f"prior {name} must have shape [D] = [{d}], got {tuple(t.shape)}")
        if not torch.isfinite(var).all() or (var <= 0).any():
            raise ValueError("component variances must be finite and positive (use a variance floor)")
        self.basis = basis
        self.whitened = bool(whitened)
        self.register_buffer("mean", mean.to(torch.float64))
        self.register_buffer("var", var.to(torch.float64))
        scale = var.to(torch.float64).sqrt() if whitened else torch.ones(d, dtype=torch.float64)
        self.register_buffer("scale", scale)

    @property
    def dim(self) -> int:
        return self.basis.dim

    @property
    def log_var(self) -> Tensor:
        """:math:`\\log v_i = \\log(\\Sigma_i / s_i^2)`, the log variance of each whitened component."""
        return torch.log(self.var) - 2 * torch.log(self.scale)

    @property
    def log_det(self) -> Tensor:
        """:math:`\\sum_i \\log s_i`: ``log p_x(x) = log p_y(y) - log_det``."""
        return torch.log(self.scale).sum()

    @classmethod
    def fit(cls, basis: Basis, data: Tensor | Iterable[Tensor], whitened: bool = True,
            var_floor: float = DEFAULT_VAR_FLOOR) -> "Prior":
        """Fit mean and component variances, streaming over batches ``[B, D]``.

        Two passes when ``data`` is a tensor (exact); with an iterable of batches
        the mean and second moments are accumulated in float64 in one pass
        around a shift (the first sample), which is numerically safe for data in
        [-1, 1].
        """
        d = basis.dim
        batches = [data] if torch.is_tensor(data) else list(data)
        n, shift = 0, None
        s1 = torch.zeros(d, dtype=torch.float64)
        for xb in batches:
            xb = _check_data(xb, d)
            if xb.shape[0] == 0:
                continue
            shift = xb[0].clone() if shift is None else shift
            s1 += (xb - shift).sum(0)
            n += xb.shape[0]
        if n < 2 or shift is None:
            raise ValueError(f"need at least two data points to fit a prior; got {n}")
        mean = shift + s1 / n
        s2 = torch.zeros(d, dtype=torch.float64)
        for xb in batches:
            xb = _check_data(xb, d).to(basis._device())
            c = basis.forward(xb - mean.to(xb.device))
            s2 += (c ** 2).sum(0).cpu()
        var = (s2 / (n - 1)).clamp_min(var_floor)
        return cls(basis, mean, var, whitened)

    def encode(self, x: Tensor) -> Tensor:
        """Whitened components ``y = S^-1 U (x - mean)`` of flat data ``x [..., D]``."""
        _check_dim(x, self.dim, "x")
        _check_finite(x)
        return self.basis.forward(x - self.mean.to(x.dtype)) / self.scale.to(x.dtype)

    def decode(self, y: Tensor) -> Tensor:
        """Data ``x = U^T S y + mean`` from whitened components ``y [..., D]``."""
        _check_dim(y, self.dim, "y")
        _check_finite(y)
        return self.basis.inverse(y * self.scale.to(y.dtype)) + self.mean.to(y.dtype)

    def log_prob_y(self, y: Tensor) -> Tensor:
        """``log N(y; 0, I)`` per example: the log-density of the diffusion's end point."""
        d = y.shape[-1]
        return -0.5 * (y ** 2).sum(-1) - 0.5 * d * math.log(2 * math.pi)

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of ``x [..., D]`` under the prior Gaussian ``N(mean, U^T S^2 U)``."""
        return self.log_prob_y(self.encode(x)) - self.log_det.to(x.dtype)

    def to(self, *args, **kwargs) -> "Prior":
        """A copy (basis included) with its tensors moved/cast as ``nn.Module.to`` would;
        ``self`` is unchanged, so that a prior shared by an experiment's evaluations never
        moves (``prior_on_device = setup.prior.to(device)``)."""
        return _moved_copy(self, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"basis={self.basis.name}, D={self.dim}, whitened={self.whitened}"


def _check_dim(x: Tensor, d: int, name: str) -> None:
    if not torch.is_tensor(x) or x.ndim < 1 or x.shape[-1] != d:
        shape = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"{name} must be flat [..., D] with D = {d}; got {shape}")


def _check_finite(x: Tensor) -> None:
    if not torch.isfinite(x).all():
        raise ValueError("data contains NaN or infinite values")


def _check_data(x: Tensor, d: int) -> Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"data must be flat [N, D] with D={d}; got shape {tuple(x.shape)}")
    _check_finite(x)
    return x.to(torch.float64).cpu()
