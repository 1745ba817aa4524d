r"""Forward process and the epsilon-matching training loss.

Noising acts on whitened components: :math:`y_t = \alpha(t)\odot y_0 + \sigma(t)\odot\varepsilon`
with per-component :math:`\alpha, \sigma` from the schedule's :math:`\gamma(t)`.
The loss is plain epsilon matching, :math:`\frac1D\|\varepsilon-\hat\varepsilon(y_t,\gamma(t))\|^2`,
with low-discrepancy (stratified) times and, for a schedule family, parameters
drawn per example from the family's training range.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .schedules import Schedule, alpha_sigma

__all__ = ["add_noise", "stratified_times", "EpsLoss"]


def add_noise(y0: Tensor, gamma: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Sample ``y_t = alpha * y0 + sigma * eps``; returns ``(y_t, eps)``, both ``[B, D]``.

    NaN or infinite inputs raise ``ValueError`` for tensors on the CPU; on an accelerator the
    check would synchronise the host every step, so data are checked once where they enter
    (``gud.train.train``).
    """
    if y0.shape != gamma.shape:
        raise ValueError(f"y0 {tuple(y0.shape)} and gamma {tuple(gamma.shape)} must both be [B, D]")
    if y0.device.type == "cpu":
        if not torch.isfinite(y0).all():
            raise ValueError("y0 contains NaN or infinite values")
        if torch.isnan(gamma).any():
            raise ValueError("gamma contains NaN values")
    if generator is None:
        raise ValueError("add_noise needs a torch.Generator (nothing draws from the global RNG)")
    alpha, sigma = alpha_sigma(gamma)
    dev = generator.device if generator is not None else y0.device
    eps = torch.randn(y0.shape, generator=generator, dtype=y0.dtype, device=dev).to(y0.device)
    return alpha * y0 + sigma * eps, eps


def stratified_times(n: int, generator: torch.Generator | None = None, device=None,
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """Low-discrepancy times ``t_i = (u + i/n) mod 1`` (VDM), shape ``[n]``."""
    if generator is None:
        raise ValueError("stratified_times needs a torch.Generator (nothing draws from the global RNG)")
    dev = generator.device
    u = torch.rand((), generator=generator, dtype=torch.float64, device=dev)
    t = (u + torch.arange(n, dtype=torch.float64, device=dev) / n) % 1.0
    return t.to(device=device if device is not None else dev, dtype=dtype)


class EpsLoss:
    """Epsilon-matching loss for :func:`gud.train.train`.

    ``EpsLoss(schedule)(eps_model, y0 [B, D], generator) -> [B]`` (mean squared
    error per example).  Times are stratified; when the schedule is a family
    with a training range, one parameter vector is drawn per example.
    """

    def __init__(self, schedule: Schedule):
        self.schedule = schedule

    def __call__(self, eps_model, y0: Tensor, generator: torch.Generator) -> Tensor:
        if generator is None:
            raise ValueError("EpsLoss needs a torch.Generator (nothing draws from the global RNG)")
        if y0.ndim != 2 or y0.shape[1] != self.schedule.dim:
            raise ValueError(f"y0 must be [B, D] with D={self.schedule.dim}; got {tuple(y0.shape)}")
        b = y0.shape[0]
        if b == 0:
            raise ValueError("y0 is empty: need at least one example")
        # on an accelerator: times, parameters and gamma drawn and computed there, in float32,
        # with the schedule's tensors moved once (``EpsLoss(schedule.to(device))``)
        on_cpu = generator.device.type == "cpu"
        t = stratified_times(b, generator, dtype=torch.float64 if on_cpu else torch.float32)
        params = self.schedule.sample_params(b, generator)
        gamma = self.schedule.gamma(t, params).to(y0.device, y0.dtype)
        y_t, eps = add_noise(y0, gamma, generator)
        eps_hat = eps_model(y_t, gamma)
        return ((eps - eps_hat) ** 2).mean(-1)
