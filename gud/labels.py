r"""Ordering labels and the schedule families the experiments are built from.

* :func:`variance_labels` -- :math:`l_i = -\log\Sigma_i` (standard diffusion at ``a = 1``);
* :func:`mixed_label_rows`, :func:`mix_param_map` -- the book's interpolation ``r`` between two
  orderings (E2);
* :func:`family` -- a :class:`gud.schedules.SoftConditioningSchedule` in one of the named
  end-point conventions of :data:`CONVENTIONS`;
* :func:`standard_diffusion_schedule` -- the scalar schedule that equals variance labels at
  ``a = 1`` with the white-noise prior;
* :func:`column_labels`, :func:`log_a_params` -- pixel columns, and the log-parameterised
  family (``log_a``) used for column softness (E4).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .prior import Prior
from .schedules import LinearSchedule, SoftConditioningSchedule

__all__ = ["CONVENTIONS", "variance_labels", "mixed_label_rows", "mix_param_map", "family",
           "standard_diffusion_schedule", "column_labels", "log_a_params"]

#: End-point conventions of the soft-conditioning schedule (``endpoints``, ``clip``), by name.
#: ``"snr"``: the paper's equation, end points in the true SNR; ``"process"``: the released
#: code's, end points in the process gamma; ``"process-clipped"``: the process gamma clipped to
#: [gamma_denoise, gamma_noise], so that every component starts and ends at the same process
#: noise level for every ``a`` (the prior KL and the reconstruction term do not depend on
#: ``a``); ``"snr-clipped"``: the true SNR clipped likewise.
CONVENTIONS: dict[str, dict] = {
    "snr": {"endpoints": "snr", "clip": False},
    "process": {"endpoints": "process", "clip": False},
    "process-clipped": {"endpoints": "process", "clip": True},
    "snr-clipped": {"endpoints": "snr", "clip": True},
}


def variance_labels(prior: Prior) -> Tensor:
    r"""Variance ordering :math:`l_i = -\log\Sigma_i` ``[D]`` (floored data variances of the basis)."""
    return -torch.log(prior.var)


def mixed_label_rows(l_first: Tensor, l_second: Tensor) -> Tensor:
    """Two label rows ``[2, D]``: ``l_first`` and ``l_second`` mapped affinely onto the range of ``l_first``.

    Only differences of labels enter the schedule, so after this normalisation the two
    orderings span the same range and ``(1 - r) l_first + r l_second`` moves between them at
    a comparable spread for every ``r``.
    """
    l1 = torch.as_tensor(l_first, dtype=torch.float64).reshape(-1)
    l2 = torch.as_tensor(l_second, dtype=torch.float64).reshape(-1)
    if l1.shape != l2.shape:
        raise ValueError(f"label rows must have the same shape, got {tuple(l1.shape)} and {tuple(l2.shape)}")
    span2 = l2.max() - l2.min()
    if span2 <= 0:
        raise ValueError("the second label row is constant: it defines no ordering")
    l2 = l1.min() + (l2 - l2.min()) * (l1.max() - l1.min()) / span2
    return torch.stack([l1, l2])


def mix_param_map(params: Tensor) -> Tensor:
    """``(a, r) [B, 2] -> (a (1 - r), a r) [B, 2]``: weights of the two rows of :func:`mixed_label_rows`."""
    a, r = params[:, 0], params[:, 1]
    return torch.stack([a * (1 - r), a * r], dim=1)


def family(labels: Tensor, prior: Prior, convention: str = "process-clipped", *, a=1.0,
           gamma_denoise: float = -7.0, gamma_noise: float = 3.0, param_range=None,
           param_map=None) -> SoftConditioningSchedule:
    """A soft-conditioning schedule (family, when ``param_range`` is given) in a named convention
    of :data:`CONVENTIONS`."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    return SoftConditioningSchedule(labels, prior.log_var, a=a, gamma_denoise=gamma_denoise,
                                    gamma_noise=gamma_noise, param_range=param_range, param_map=param_map,
                                    **CONVENTIONS[convention])


def standard_diffusion_schedule(var: Tensor, gamma_denoise: float, gamma_noise: float,
                                convention: str = "process-clipped") -> LinearSchedule:
    r"""The scalar linear schedule equal to variance labels at ``a = 1`` with the white-noise prior:
    standard diffusion, the same process in every orthonormal basis (pixels included).

    In the ``process`` conventions every component follows
    :math:`\gamma(t) = \gamma_{denoise} + t(\gamma_{noise} - \gamma_{denoise})`; in the ``snr``
    conventions (unclipped) :math:`\gamma(t) = \tilde\gamma_{denoise} + \log\Sigma_{min} +
    t(\tilde\gamma_{noise} - \tilde\gamma_{denoise} + \log\Sigma_{max} - \log\Sigma_{min})`.
    ``var [D]``: the variances :math:`\Sigma_i`.
    """
    if convention.startswith("process"):
        return LinearSchedule(torch.as_tensor(var).numel(), gamma_denoise, gamma_noise)
    if convention != "snr":
        raise ValueError(f"standard diffusion is not a member of the {convention!r} family")
    log_var = torch.log(torch.as_tensor(var, dtype=torch.float64))
    lo, hi = float(log_var.min()), float(log_var.max())
    return LinearSchedule(log_var.numel(), gamma_denoise + lo, gamma_noise + hi)


def column_labels(basis) -> Tensor:
    """Pixel column of every component ``[D]`` (left to right; pixel basis)."""
    return basis.meta["col"].to(torch.float64)


def log_a_params(a: float) -> Tensor:
    """Schedule parameters ``[1]`` (``log_a``) of a family parameterised by ``log a``
    (``param_map=torch.exp``), for inverse softness ``a``."""
    if not a > 0:
        raise ValueError(f"inverse softness a must be > 0, got {a}")
    return torch.tensor([math.log(a)], dtype=torch.float64)
