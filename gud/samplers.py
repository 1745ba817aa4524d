r"""Samplers for the reverse process, in whitened component space.

Each sampler integrates from ``t = 1`` (``y ~ N(0, I)``) to ``t = 0`` over a time
grid, calling a denoiser ``eps_model(y_t [B, D], gamma [B, D]) -> eps_hat``.  A
``callback(info)`` sees, before every step ``i``, a dict with the step ``i``, its time ``t``,
the state ``y`` at ``t``, the denoiser's ``eps`` there and the clean prediction
``denoised`` :math:`\hat y_0 = (y_t - \sigma_t\hat\varepsilon)/\alpha_t` (no extra network
evaluation; k-diffusion's convention).
With :math:`\beta_i = \sigma_i^2\gamma_i'` and score :math:`-\hat\varepsilon/\sigma`:

* :func:`euler_maruyama` -- reverse SDE
  :math:`dy = [-\tfrac12\beta y + \beta\hat\varepsilon/\sigma]\,dt + \sqrt\beta\,d\bar W`
  (Song et al. 2021), integrated backwards with Euler-Maruyama;
* :func:`heun` -- probability-flow ODE
  :math:`dy/dt = -\tfrac12\beta\,(y - \hat\varepsilon/\sigma)`, Heun's 2nd-order method
  (Karras et al. 2022);
* :func:`ddim` -- the exact per-component update of the linear part
  (DDIM, Song et al. 2021): :math:`\hat y_0 = (y_t - \sigma_t\hat\varepsilon)/\alpha_t`,
  :math:`y_s = \alpha_s\hat y_0 + \sqrt{\sigma_s^2 - v}\,\hat\varepsilon + \sqrt v\,z` with
  :math:`v = \eta^2\sigma_s^2(1 - e^{\gamma_s - \gamma_t})`; ``eta = 1`` is the ancestral
  (posterior) sampler, ``eta = 0`` deterministic.

:func:`sample` dispatches by name and supports *conditional* sampling: known
components (``condition=(mask [D], y_known [B, D])``) are replaced after every
step by a fresh forward sample :math:`\alpha_i(s) y_i + \sigma_i(s) z` at their own
noise level (replacement conditioning); under schedules that keep the known
components at low noise (e.g. columns to the left in a column schedule) the
network effectively conditions on them.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .schedules import NoiseState, Schedule

__all__ = ["time_grid", "sample", "euler_maruyama", "heun", "ddim", "SAMPLERS"]

Condition = tuple[Tensor, Tensor]


def time_grid(steps: int, t_max: float = 1.0, t_min: float = 0.0, dtype=torch.float64) -> Tensor:
    """Uniform grid ``[steps + 1]`` from ``t_max`` down to ``t_min``."""
    if steps < 1:
        raise ValueError(f"need at least one step, got {steps}")
    return torch.linspace(t_max, t_min, steps + 1, dtype=dtype)


def _randn(like: Tensor, generator) -> Tensor:
    """Standard normal noise shaped like ``like``, drawn on the generator's device."""
    dev = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=dev).to(like.device)


class _Stepper:
    """Shared bookkeeping: noise states, conditioning, progress, callbacks."""

    def __init__(self, eps_model, schedule: Schedule, y: Tensor, params, generator, condition, callback):
        self.eps_model, self.schedule, self.params = eps_model, schedule, params
        self.generator, self.callback = generator, callback
        self.n, self.dtype, self.device = y.shape[0], y.dtype, y.device
        self.mask = self.known = None
        if condition is not None:
            mask, known = condition
            mask = torch.as_tensor(mask, dtype=torch.bool, device=y.device).reshape(-1)
            if mask.shape != (schedule.dim,):
                raise ValueError(f"condition mask must be [D] = [{schedule.dim}]; got {tuple(mask.shape)}")
            known = torch.as_tensor(known, dtype=y.dtype, device=y.device).expand_as(y)
            self.mask, self.known = mask, known

    def state(self, t: float) -> NoiseState:
        tt = torch.full((self.n,), float(t), dtype=torch.float64)
        st = self.schedule.state(tt, self.params)
        return NoiseState(st.gamma.to(self.device, self.dtype), st.gamma_dot.to(self.device, self.dtype))

    def eps(self, y: Tensor, st: NoiseState) -> Tensor:
        return self.eps_model(y, st.gamma.to(y.device))

    def impose(self, y: Tensor, st: NoiseState) -> Tensor:
        if self.mask is None:
            return y
        fresh = st.alpha * self.known + st.sigma * _randn(y, self.generator)
        return torch.where(self.mask, fresh.to(y.device), y)

    def finish(self, y: Tensor, st0: NoiseState, denoise: bool) -> Tensor:
        if denoise:
            y = st0.denoised(y, self.eps(y, st0))
        if self.mask is not None:
            y = torch.where(self.mask, self.known, y)
        return y


def _loop(update: Callable, eps_model, schedule, y, grid, params, generator, condition,
          callback, progress, denoise_final) -> Tensor:
    stp = _Stepper(eps_model, schedule, y, params, generator, condition, callback)
    grid = torch.as_tensor(grid, dtype=torch.float64)
    st_t = stp.state(grid[0])
    y = stp.impose(y, st_t)
    with torch.no_grad():
        for i in tqdm(range(len(grid) - 1), disable=not progress, desc="sampling", leave=False):
            t, s = float(grid[i]), float(grid[i + 1])
            st_s = stp.state(s)
            y_t = y
            y, eps = update(stp, y, t, s, st_t, st_s, last=(i == len(grid) - 2))
            if callback is not None:
                callback({"i": i, "t": t, "y": y_t, "eps": eps, "denoised": st_t.denoised(y_t, eps)})
            y = stp.impose(y, st_s)
            st_t = st_s
        return stp.finish(y, st_t, denoise_final)


def _em_update(stp, y, t, s, st_t, st_s, last):
    h = t - s
    eps = stp.eps(y, st_t)
    beta, sigma = st_t.beta, st_t.sigma
    y = y + h * (0.5 * beta * y - sigma * st_t.gamma_dot * eps) + (beta * h).clamp_min(0).sqrt() * _randn(y, stp.generator)
    return y, eps


def _heun_update(stp, y, t, s, st_t, st_s, last):
    def drift(yy, st):
        eps = stp.eps(yy, st)
        return -0.5 * st.beta * yy + 0.5 * st.sigma * st.gamma_dot * eps, eps

    d_t, eps = drift(y, st_t)
    y_pred = y + (s - t) * d_t
    if last:
        return y_pred, eps
    d_s, _ = drift(y_pred, st_s)
    return y + (s - t) * 0.5 * (d_t + d_s), eps


def _make_ddim_update(eta: float):
    def update(stp, y, t, s, st_t, st_s, last):
        eps = stp.eps(y, st_t)
        y0 = st_t.denoised(y, eps)
        var = (eta ** 2) * st_s.sigma ** 2 * (-torch.expm1(st_s.gamma - st_t.gamma)).clamp_min(0)
        y = st_s.alpha * y0 + (st_s.sigma ** 2 - var).clamp_min(0).sqrt() * eps
        if eta > 0:
            y = y + var.sqrt() * _randn(y, stp.generator)
        return y, eps
    return update


def euler_maruyama(eps_model, schedule: Schedule, y: Tensor, grid: Tensor, *, params=None,
                   generator=None, condition: Condition | None = None, callback=None,
                   progress: bool = False, denoise_final: bool = True) -> Tensor:
    """Reverse-SDE sampler (Euler-Maruyama) from ``y [B, D]`` at ``grid[0]`` to ``grid[-1]``."""
    return _loop(_em_update, eps_model, schedule, y, grid, params, generator, condition,
                 callback, progress, denoise_final)


def heun(eps_model, schedule: Schedule, y: Tensor, grid: Tensor, *, params=None,
         generator=None, condition: Condition | None = None, callback=None,
         progress: bool = False, denoise_final: bool = True) -> Tensor:
    """Probability-flow ODE sampler (Heun, Euler on the last step)."""
    return _loop(_heun_update, eps_model, schedule, y, grid, params, generator, condition,
                 callback, progress, denoise_final)


def ddim(eps_model, schedule: Schedule, y: Tensor, grid: Tensor, *, params=None, eta: float = 0.0,
         generator=None, condition: Condition | None = None, callback=None,
         progress: bool = False, denoise_final: bool = True) -> Tensor:
    """Exact exponential (DDIM) update per component; ``eta=1``: ancestral sampling."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1]; got {eta}")
    return _loop(_make_ddim_update(eta), eps_model, schedule, y, grid, params, generator,
                 condition, callback, progress, denoise_final)


SAMPLERS = {"em": euler_maruyama, "heun": heun, "ddim": ddim,
            "ancestral": lambda *a, **k: ddim(*a, eta=1.0, **k)}


def sample(eps_model, schedule: Schedule, n: int, *, method: str = "ddim", steps: int = 100,
           params=None, generator: torch.Generator | None = None, condition: Condition | None = None,
           device="cpu", dtype: torch.dtype = torch.float32, progress: bool = False,
           callback=None, denoise_final: bool = True) -> Tensor:
    """Draw ``n`` samples of whitened components ``[n, D]``.

    ``method``: ``"em"`` (reverse SDE), ``"heun"`` (probability-flow ODE),
    ``"ddim"`` (deterministic exponential update) or ``"ancestral"``.  Decode
    with ``prior.decode``.  All randomness comes from ``generator``.
    """
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {sorted(SAMPLERS)}")
    gen_dev = generator.device if generator is not None else "cpu"
    y = torch.randn(n, schedule.dim, generator=generator, dtype=dtype, device=gen_dev).to(device)
    return SAMPLERS[method](eps_model, schedule, y, time_grid(steps), params=params,
                            generator=generator, condition=condition, callback=callback,
                            progress=progress, denoise_final=denoise_final)
