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
  (posterior) sampler, ``eta = 0`` deterministic;
* :func:`dpmpp` -- multistep exponential integrators in the data prediction
  (DPM-Solver++(2M)/(3M) and their SDE variant, Lu et al. 2022), generalised to
  component-wise log-SNR.  Each component has its own half log-SNR
  :math:`\lambda_i(t) = -\gamma_i(t)/2` and step :math:`h_i = \lambda_i(s) - \lambda_i(t)`;
  with :math:`c = 1 + \eta` the exact solution of the linear part is

  .. math::
     y_{s,i} = \frac{\sigma_{s,i}}{\sigma_{t,i}} e^{-\eta h_i} y_{t,i}
       + \alpha_{s,i}\int_0^{h_i} c\,e^{-c(h_i-u)}\,\hat y_{0,i}(\lambda_{t,i} + u)\,du
       + \sigma_{s,i}\sqrt{1 - e^{-2\eta h_i}}\,z_i ,

  and :math:`\hat y_{0,i}` is replaced by its Newton interpolant through the current and
  the last one or two clean predictions *at that component's own* :math:`\lambda_i`
  values (nodes :math:`0, -h_{0,i}, -h_{0,i}-h_{1,i}` relative to :math:`\lambda_{t,i}`):
  :math:`y_{s,i} = \tfrac{\sigma_s}{\sigma_t}e^{-\eta h}y_t + \alpha_s[I_0 m_0 + I_1 f_{01}
  + (I_2 + h_0 I_1) f_{012}] + \text{noise}` with divided differences :math:`f` and
  :math:`I_n = c^{-n} a_n(c h)`, :math:`a_0(x) = 1 - e^{-x}`, :math:`a_1 = x - a_0`,
  :math:`a_2 = x^2 - 2a_1`.  ``eta = 0``: probability-flow ODE (2M: second order; 3M: third
  order per step, but globally second order on a uniform grid because its first two steps
  have only one and two nodes, with a far smaller error than 2M); ``eta = 1``: the reverse
  SDE (the ancestral sampler at first order; second order in the law on the Gaussian tests).  A component
  that does not move (:math:`h_i = 0`, e.g. a clipped schedule) is left exactly
  unchanged; where a component's own history is degenerate (its previous step much
  shorter than the current one, as right after a clipped component starts to move) it
  falls back to a lower order.

Time grids: :func:`time_grid` (uniform in t) and :func:`log_snr_grid` (equal largest
per-component step :math:`\max_i|\Delta\lambda_i|`: DPM-Solver's log-SNR grid for a scalar
schedule, uniform in t for GUD's linear schedules).  :func:`nfe` counts network
evaluations (the final denoising at t = 0 costs one).

:func:`sample` dispatches by name and supports *conditional* sampling: known
components (``condition=(mask [D], y_known [B, D])``) are replaced after every
step by a fresh forward sample :math:`\alpha_i(s) y_i + \sigma_i(s) z` at their own
noise level (replacement conditioning); under schedules that keep the known
components at low noise (e.g. columns to the left in a column schedule) the
network effectively conditions on them.

Randomness: every sampler takes a ``generator`` and an optional ``noise`` source,
``noise(like) -> Tensor`` returning standard normal draws shaped like ``like`` (EDM's
``randn_like``); all Gaussian draws go through it, so a sampler driven by an affine
denoiser is affine in its inputs (see :func:`gud.gaussian.sampler_moments`).
"""
from __future__ import annotations

import math
import operator
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .schedules import NoiseState, Schedule, alpha_sigma

__all__ = ["time_grid", "log_snr_grid", "make_grid", "nfe", "steps_for_nfe", "sample",
           "euler_maruyama", "heun", "ddim", "ancestral", "dpmpp", "dpmpp_2m", "dpmpp_3m",
           "dpmpp_2m_sde", "dpmpp_3m_sde", "SAMPLERS", "GRIDS", "DEFAULT_GRID", "SDE_WARP"]

Condition = tuple[Tensor, Tensor]
Noise = Callable[[Tensor], Tensor]


def _check_steps(steps) -> int:
    """``steps`` as a positive ``int`` (Python or NumPy integer, integer 0-d tensor)."""
    try:
        if isinstance(steps, bool):
            raise TypeError
        steps_int = operator.index(steps)
    except TypeError:
        raise ValueError(f"steps must be a positive integer; got {steps!r}") from None
    if steps_int < 1:
        raise ValueError(f"steps must be a positive integer (at least one step); got {steps_int}")
    return steps_int


def _check_interval(t_max: float, t_min: float) -> tuple[float, float]:
    t_max, t_min = float(t_max), float(t_min)
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ValueError(f"need 0 <= t_min < t_max <= 1; got t_max={t_max}, t_min={t_min}")
    return t_max, t_min


def time_grid(steps: int, t_max: float = 1.0, t_min: float = 0.0, dtype=torch.float64) -> Tensor:
    """Uniform grid ``[steps + 1]`` from ``t_max`` down to ``t_min``."""
    steps = _check_steps(steps)
    t_max, t_min = _check_interval(t_max, t_min)
    return torch.linspace(t_max, t_min, steps + 1, dtype=dtype)


def log_snr_grid(schedule: Schedule, steps: int, *, params=None, t_max: float = 1.0,
                 t_min: float = 0.0, n_fine: int = 2049, dtype=torch.float64, warp: float = 1.0) -> Tensor:
    r"""Grid ``[steps + 1]`` from ``t_max`` down to ``t_min`` whose steps all have the same largest
    per-component half-log-SNR step: uniform in
    :math:`\Lambda(t) = \int_t^{t_{max}} \max_i |d\lambda_i|`, :math:`\lambda_i = -\gamma_i/2`
    (the maximum also runs over a batch of schedule ``params``).

    For a scalar schedule this is DPM-Solver's grid uniform in log-SNR; for GUD's
    soft-conditioning and sequential schedules, whose moving components all share one slope
    in t (clipped or not), it is uniform in t.  Each component then sees equal steps
    :math:`h_i` throughout its own active window.  (Equalising the *total* change
    :math:`\sum_i|\Delta\lambda_i|`, i.e. uniform in the mean :math:`\lambda`, or weighting by
    how close a component is to SNR 1 was tried and is worse on the exact Gaussian tests:
    it starves components that move while few others do.)  Computed by inverting
    :math:`\Lambda` on ``n_fine`` uniform times (piecewise linear); where nothing moves the grid
    is uniform in t.

    ``warp`` < 1 places the grid at the fractions :math:`1 - (1 - k/N)^{warp}` of
    :math:`\Lambda` instead of :math:`k/N`: steps shorter by the factor ``warp`` at the noisy
    start, longer at the end (:data:`SDE_WARP`, the default of the SDE samplers).
    """
    steps = _check_steps(steps)
    t_max, t_min = _check_interval(t_max, t_min)
    if not 0.0 < float(warp) <= 1.0:
        raise ValueError(f"warp must be in (0, 1]; got {warp}")
    n_fine = max(int(n_fine), 8 * steps + 1)
    tf = torch.linspace(t_max, t_min, n_fine, dtype=torch.float64)
    rate = torch.zeros(n_fine - 1, dtype=torch.float64)
    p = None if params is None else torch.as_tensor(params, dtype=torch.float64)
    rows = [p] if p is None or p.ndim <= 1 else list(torch.unique(p, dim=0))
    for row in rows:
        g = schedule.gamma(tf, row).to(torch.float64)  # [n_fine, D]
        rate = torch.maximum(rate, 0.5 * (g[1:] - g[:-1]).abs().amax(-1))
    tau = torch.cat([torch.zeros(1, dtype=torch.float64), rate.cumsum(0)])
    frac = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if float(warp) != 1.0:
        frac = 1.0 - (1.0 - frac) ** float(warp)
    if not bool(tau[-1] > 0) or not bool(torch.isfinite(tau[-1])):
        return (t_max - frac * (t_max - t_min)).to(dtype)
    target = frac * tau[-1]
    j = torch.searchsorted(tau, target, right=True).clamp(1, n_fine - 1) - 1
    seg = tau[j + 1] - tau[j]
    frac = torch.where(seg > 0, (target - tau[j]) / torch.where(seg > 0, seg, 1.0), 0.0).clamp(0, 1)
    t = tf[j] + frac * (tf[j + 1] - tf[j])
    t[0], t[-1] = t_max, t_min
    return t.to(dtype)


def _uniform_grid(schedule: Schedule, steps: int, *, params=None, t_max: float = 1.0,
                  t_min: float = 0.0, dtype=torch.float64) -> Tensor:
    return time_grid(steps, t_max, t_min, dtype)


#: The warp of the SDE samplers' default grid (``"lambda-sde"``): their first steps, which the
#: multistep start-up takes at first and second order, are 0.8 of the even log-SNR step.  On
#: exact Gaussian data at 25 evaluations it brings DPM-Solver++(3M) SDE within 0.015 of
#: 1000-step Euler-Maruyama in every convention at a = 0.2, 1, 2 for both priors of the 8x8
#: digits in PCA (spectrum over 3.3 decades; even grid: 0.032 at a = 2), and lowers the error
#: of every 16-component test case (tests/test_samplers_fast.py, tests/test_samplers_spectrum.py).
SDE_WARP = 0.8


def _sde_grid(schedule: Schedule, steps: int, **kw) -> Tensor:
    return log_snr_grid(schedule, steps, warp=SDE_WARP, **kw)


#: Grid constructors by name: ``"t"`` uniform in time, ``"lambda"`` equal largest
#: per-component half-log-SNR step (:func:`log_snr_grid`), ``"lambda-sde"`` the same with
#: shorter steps at the noisy start (``warp`` :data:`SDE_WARP`).
GRIDS: dict[str, Callable[..., Tensor]] = {"t": _uniform_grid, "lambda": log_snr_grid, "lambda-sde": _sde_grid}


def make_grid(schedule: Schedule, steps: int, kind: str = "t", *, params=None,
              t_max: float = 1.0, t_min: float = 0.0) -> Tensor:
    """The time grid ``[steps + 1]`` of kind ``"t"`` or ``"lambda"`` (see :data:`GRIDS`)."""
    if kind not in GRIDS:
        raise ValueError(f"unknown grid {kind!r}; choose one of {sorted(GRIDS)}")
    return GRIDS[kind](schedule, steps, params=params, t_max=t_max, t_min=t_min)


def _randn(like: Tensor, generator) -> Tensor:
    """Standard normal noise shaped like ``like``, drawn on the generator's device."""
    dev = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=dev).to(like.device)


class _Stepper:
    """Shared bookkeeping: noise states, conditioning, progress, callbacks, noise draws."""

    def __init__(self, eps_model, schedule: Schedule, y: Tensor, params, generator, condition, callback,
                 noise: Noise | None = None, rate: bool = True):
        self.eps_model, self.schedule, self.params, self.rate = eps_model, schedule, params, rate
        self.generator, self.callback, self.noise = generator, callback, noise
        self.n, self.dtype, self.device = y.shape[0], y.dtype, y.device
        self.mask = self.known = None
        if condition is not None:
            mask = _check_condition(condition, schedule.dim).to(y.device)
            known = torch.as_tensor(condition[1], dtype=y.dtype, device=y.device).expand_as(y)
            self.mask, self.known = mask, known

    def randn(self, like: Tensor) -> Tensor:
        """Standard normal draws shaped like ``like``: from ``noise`` if given, else ``generator``
        (never from the global RNG)."""
        if self.noise is None:
            if self.generator is None:
                raise ValueError("generator: this sampler draws noise; pass a torch.Generator "
                                 "(or a noise source), nothing draws from the global RNG")
            return _randn(like, self.generator)
        z = self.noise(like)
        if z.shape != like.shape:
            raise ValueError(f"noise must return a tensor shaped like its argument {tuple(like.shape)}; "
                             f"got {tuple(z.shape)}")
        return z.to(like)

    def state(self, t: float) -> NoiseState:
        """The noise state at ``t``; without ``rate`` only gamma (no forward-mode autodiff; the
        rate is NaN so that an update that needs it fails loudly)."""
        tt = torch.full((self.n,), float(t), dtype=torch.float64)
        if not self.rate:
            g = self.schedule.gamma(tt, self.params).to(self.device, self.dtype)
            return NoiseState(g, torch.full_like(g, math.nan))
        st = self.schedule.state(tt, self.params)
        return NoiseState(st.gamma.to(self.device, self.dtype), st.gamma_dot.to(self.device, self.dtype))

    def eps(self, y: Tensor, st: NoiseState) -> Tensor:
        return self.eps_model(y, st.gamma.to(y.device))

    def impose(self, y: Tensor, st: NoiseState) -> Tensor:
        if self.mask is None:
            return y
        fresh = st.alpha * self.known + st.sigma * self.randn(y)
        return torch.where(self.mask, fresh.to(y.device), y)

    def finish(self, y: Tensor, st0: NoiseState, denoise: bool) -> Tensor:
        if denoise:
            y = st0.denoised(y, self.eps(y, st0))
        if self.mask is not None:
            y = torch.where(self.mask, self.known, y)
        return y


def _check_condition(condition, dim: int) -> Tensor:
    """The boolean ``mask [D]`` of ``condition = (mask, y_known)``."""
    try:
        mask, _ = condition
    except (TypeError, ValueError):
        raise ValueError("condition must be a pair (mask [D], y_known [B, D])") from None
    mask = torch.as_tensor(mask, dtype=torch.bool).reshape(-1)
    if mask.shape != (dim,):
        raise ValueError(f"condition mask must be [D] = [{dim}]; got {tuple(mask.shape)}")
    return mask


def _check_y(y: Tensor, schedule: Schedule) -> None:
    if not torch.is_tensor(y) or y.ndim != 2 or y.shape[1] != schedule.dim:
        shape = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
        raise ValueError(f"y must be [B, D] = [B, {schedule.dim}]; got {shape}")


def _check_grid(grid) -> Tensor:
    grid = torch.as_tensor(grid, dtype=torch.float64)
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"grid must be a vector of at least two times; got shape {tuple(grid.shape)}")
    if not bool(torch.isfinite(grid).all()) or bool((grid < 0).any() | (grid > 1).any()):
        raise ValueError("grid times must be finite and in [0, 1]")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError("grid must be strictly decreasing (from noise towards t = 0)")
    return grid


def _loop(update: Callable, eps_model, schedule, y, grid, params, generator, condition,
          callback, progress, denoise_final, noise=None, rate: bool = True) -> Tensor:
    _check_y(y, schedule)
    grid = _check_grid(grid)
    stp = _Stepper(eps_model, schedule, y, params, generator, condition, callback, noise, rate)
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
    y = y + h * (0.5 * beta * y - sigma * st_t.gamma_dot * eps) + (beta * h).clamp_min(0).sqrt() * stp.randn(y)
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
            y = y + var.sqrt() * stp.randn(y)
        return y, eps
    return update


class _MultistepUpdate:
    """One step of the component-wise exponential multistep integrator (see :func:`dpmpp`).

    Holds the history of ``(lambda [B, D], y0_hat [B, D])`` at the last ``order - 1`` nodes;
    coefficients are computed in float64 from the noise states.
    """

    def __init__(self, order: int, eta: float, r_min: float):
        self.order, self.eta, self.r_min = order, eta, r_min
        self.hist: list[tuple[Tensor, Tensor]] = []

    @staticmethod
    def _divided(a: Tensor, b: Tensor, dl: Tensor, ok: Tensor) -> Tensor:
        return torch.where(ok, (a - b) / torch.where(ok, dl, torch.ones_like(dl)), torch.zeros_like(a))

    def __call__(self, stp, y, t, s, st_t, st_s, last):
        eps = stp.eps(y, st_t)
        m0 = st_t.denoised(y, eps).to(torch.float64)
        g_t, g_s = st_t.gamma.to(torch.float64), st_s.gamma.to(torch.float64)
        lam_t = -0.5 * g_t
        h = 0.5 * (g_t - g_s)  # lambda_s - lambda_t, per component  [B, D]
        c = 1.0 + self.eta
        x = c * h
        a0 = -torch.expm1(-x)
        a1 = x - a0
        i0, i1 = a0, a1 / c
        alpha_s, sigma_s = alpha_sigma(g_s)
        ratio = torch.sqrt(torch.sigmoid(g_s) / torch.sigmoid(g_t))
        if self.eta > 0:
            ratio = ratio * torch.exp(-self.eta * h)
        acc = i0 * m0
        if self.order >= 2 and self.hist:
            lam1, m1 = self.hist[-1]
            h0 = lam_t - lam1
            ok1 = (h0 != 0) & (h0.abs() >= self.r_min * h.abs())
            f01 = self._divided(m0, m1, h0, ok1)
            acc = acc + i1 * f01
            if self.order >= 3 and len(self.hist) >= 2:
                lam2, m2 = self.hist[-2]
                h1 = lam1 - lam2
                ok2 = ok1 & (h1 != 0) & (h1.abs() >= self.r_min * h.abs()) & (h0 + h1 != 0)
                f12 = self._divided(m1, m2, h1, ok2)
                f012 = self._divided(f01, f12, h0 + h1, ok2)
                i2 = (x * x - 2 * a1) / (c * c)
                acc = acc + (i2 + h0 * i1) * f012
        y_new = ratio * y.to(torch.float64) + alpha_s * acc
        if self.eta > 0:
            std = sigma_s * (-torch.expm1(-2 * self.eta * h)).clamp_min(0).sqrt()
            y_new = y_new + std * stp.randn(y).to(torch.float64)
        self.hist = (self.hist + [(lam_t, m0)])[-(self.order - 1):] if self.order > 1 else []
        return y_new.to(y.dtype), eps


def euler_maruyama(eps_model, schedule: Schedule, y: Tensor, grid: Tensor, *, params=None,
                   generator=None, noise: Noise | None = None, condition: Condition | None = None,
                   callback=None, progress: bool = False, denoise_final: bool = True) -> Tensor:
    """Reverse-SDE sampler (Euler-Maruyama) from ``y [B, D]`` at ``grid[0]`` to ``grid[-1]``."""
    return _loop(_em_update, eps_model, schedule, y, grid, params, generator, condition,
                 callback, progress, denoise_final, noise)


def heun(eps_model, schedule: Schedule, y: Tensor, grid: Tensor, *, params=None,
         generator=None, noise: Noise | None = None, condition: Condition | None = None,
         callback=None, progress: bool = False, denoise_final: bool = True) -> Tensor:
    """Probability-flow ODE sampler (Heun, Euler on the last step)."""
    return _loop(_heun_update, eps_model, schedule, y, grid, params, generator, condition,
                 callback, progress, denoise_final, noise)


def ddim(eps_model, schedule: Schedule, y: Tensor, grid: Tensor, *, params=None, eta: float = 0.0,
         generator=None, noise: Noise | None = None, condition: Condition | None = None,
         callback=None, progress: bool = False, denoise_final: bool = True) -> Tensor:
    """Exact exponential (DDIM) update per component; ``eta=1``: ancestral sampling."""
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1]; got {eta}")
    return _loop(_make_ddim_update(eta), eps_model, schedule, y, grid, params, generator,
                 condition, callback, progress, denoise_final, noise)


def ancestral(eps_model, schedule: Schedule, y: Tensor, grid: Tensor, **kw) -> Tensor:
    """Ancestral sampling: :func:`ddim` with ``eta = 1`` (a draw from the Gaussian posterior
    :math:`q(y_s\\mid y_t, \\hat y_0)` per step)."""
    return ddim(eps_model, schedule, y, grid, eta=1.0, **kw)


def dpmpp(eps_model, schedule: Schedule, y: Tensor, grid: Tensor, *, order: int = 2, eta: float = 0.0,
          r_min: float = 0.5, params=None, generator=None, noise: Noise | None = None,
          condition: Condition | None = None, callback=None, progress: bool = False,
          denoise_final: bool = True) -> Tensor:
    r"""Component-wise multistep exponential integrator in the data prediction
    (DPM-Solver++(2M)/(3M), Lu et al. 2022; ``eta > 0``: its SDE variant), see the module
    docstring for the update.

    One network evaluation per step (plus one for the final denoising); the first steps
    use the available history (order 1, then 2).  ``order`` in {1, 2, 3} (1 is DDIM for
    ``eta = 0`` and ancestral sampling for ``eta = 1``); ``eta`` in [0, 1] scales the
    injected noise (0: probability-flow ODE, 1: reverse SDE).  A component's history node
    is used only if its :math:`\lambda_i` spacing is at least ``r_min`` times the current
    step :math:`|h_i|` (otherwise that component drops an order for this step).
    """
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3; got {order!r}")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1]; got {eta}")
    if not r_min > 0:
        raise ValueError(f"r_min must be positive; got {r_min}")
    return _loop(_MultistepUpdate(order, float(eta), float(r_min)), eps_model, schedule, y, grid, params,
                 generator, condition, callback, progress, denoise_final, noise, rate=False)


def dpmpp_2m(eps_model, schedule: Schedule, y: Tensor, grid: Tensor, **kw) -> Tensor:
    """DPM-Solver++(2M), component-wise: second-order multistep probability-flow ODE."""
    return dpmpp(eps_model, schedule, y, grid, order=2, eta=0.0, **kw)


def dpmpp_3m(eps_model, schedule: Schedule, y: Tensor, grid: Tensor, **kw) -> Tensor:
    """DPM-Solver++(3M), component-wise: third-order multistep probability-flow ODE."""
    return dpmpp(eps_model, schedule, y, grid, order=3, eta=0.0, **kw)


def dpmpp_2m_sde(eps_model, schedule: Schedule, y: Tensor, grid: Tensor, **kw) -> Tensor:
    """DPM-Solver++(2M) SDE, component-wise: second-order multistep reverse SDE (``eta = 1``)."""
    return dpmpp(eps_model, schedule, y, grid, order=2, eta=1.0, **kw)


def dpmpp_3m_sde(eps_model, schedule: Schedule, y: Tensor, grid: Tensor, **kw) -> Tensor:
    """DPM-Solver++(3M) SDE, component-wise: third-order multistep reverse SDE (``eta = 1``)."""
    return dpmpp(eps_model, schedule, y, grid, order=3, eta=1.0, **kw)


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "em": euler_maruyama, "heun": heun, "ddim": ddim, "ancestral": ancestral,
    "dpmpp_2m": dpmpp_2m, "dpmpp_3m": dpmpp_3m, "dpmpp_2m_sde": dpmpp_2m_sde, "dpmpp_3m_sde": dpmpp_3m_sde,
}

#: Network evaluations of ``steps`` steps, without the final denoising (Heun: two per
#: step, Euler on the last).
_STEP_NFE: dict[str, Callable[[int], int]] = {"heun": lambda s: 2 * s - 1}

#: The default time grid of each sampler in :func:`sample` (the first four keep their
#: original uniform grid).
DEFAULT_GRID: dict[str, str] = {"em": "t", "heun": "t", "ddim": "t", "ancestral": "t",
                                "dpmpp_2m": "lambda", "dpmpp_3m": "lambda",
                                "dpmpp_2m_sde": "lambda-sde", "dpmpp_3m_sde": "lambda-sde"}


def _check_method(method: str) -> None:
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}: method must be one of {sorted(SAMPLERS)}")


def nfe(method: str, steps: int, denoise_final: bool = True) -> int:
    """Network evaluations of ``sample(method=method, steps=steps)``: one per step (Heun:
    ``2 steps - 1``), plus one for the final denoising at t = 0."""
    _check_method(method)
    steps = _check_steps(steps)
    return _STEP_NFE.get(method, lambda s: s)(steps) + int(bool(denoise_final))


def steps_for_nfe(method: str, budget: int, denoise_final: bool = True) -> int:
    """The most steps whose :func:`nfe` fits in ``budget`` evaluations (ValueError if none does)."""
    _check_method(method)
    try:
        if isinstance(budget, bool):
            raise TypeError
        budget = operator.index(budget)
    except TypeError:
        raise ValueError(f"budget must be an integer number of network evaluations; got {budget!r}") from None
    if budget < nfe(method, 1, denoise_final):
        raise ValueError(f"budget of {budget} evaluations is below one step of {method!r} "
                         f"({nfe(method, 1, denoise_final)})")
    steps = 1
    while nfe(method, steps + 1, denoise_final) <= budget:
        steps += 1
    return steps


def sample(eps_model, schedule: Schedule, n: int, *, method: str = "ddim", steps: int = 100,
           params=None, generator: torch.Generator | None = None, condition: Condition | None = None,
           device="cpu", dtype: torch.dtype = torch.float32, progress: bool = False,
           callback=None, denoise_final: bool = True, grid: str | Tensor | None = None,
           noise: Noise | None = None) -> Tensor:
    """Draw ``n`` samples of whitened components ``[n, D]``.

    ``method``: ``"em"`` (reverse SDE), ``"heun"`` (probability-flow ODE),
    ``"ddim"`` (deterministic exponential update), ``"ancestral"``, or the component-wise
    multistep integrators ``"dpmpp_2m"``, ``"dpmpp_3m"`` (ODE) and ``"dpmpp_2m_sde"``,
    ``"dpmpp_3m_sde"`` (reverse SDE); :func:`nfe` gives the cost.  ``grid``: a kind
    (``"t"``, ``"lambda"``; default :data:`DEFAULT_GRID` of the method) or explicit times
    ``[steps + 1]`` (then ``steps`` is ignored).  Decode with ``prior.decode``.  All
    randomness comes from ``generator`` (or the ``noise`` source, which then also draws the
    initial state); one of them is required.
    """
    _check_method(method)
    try:
        if isinstance(n, bool):
            raise TypeError
        n = operator.index(n)
    except TypeError:
        raise ValueError(f"n (number of samples) must be a positive integer; got {n!r}") from None
    if n < 1:
        raise ValueError(f"n (number of samples) must be a positive integer; got {n}")
    if grid is None or isinstance(grid, str):
        grid = make_grid(schedule, _check_steps(steps), DEFAULT_GRID.get(method, "t") if grid is None else grid,
                         params=params)
    if condition is not None:
        _check_condition(condition, schedule.dim)
    if generator is None and noise is None:
        raise ValueError("generator: pass a torch.Generator (or a noise source) for the initial state; "
                         "nothing draws from the global RNG")
    gen_dev = generator.device if generator is not None else "cpu"
    if noise is None:
        y = torch.randn(n, schedule.dim, generator=generator, dtype=dtype, device=gen_dev).to(device)
    else:
        y = noise(torch.empty(n, schedule.dim, dtype=dtype, device=device))
    return SAMPLERS[method](eps_model, schedule, y, grid, params=params,
                            generator=generator, noise=noise, condition=condition, callback=callback,
                            progress=progress, denoise_final=denoise_final)
