r"""Noise schedules in :math:`\gamma`, the third design choice.

Each whitened component follows a variance-preserving Ornstein-Uhlenbeck process
:math:`dy_i = -\tfrac12\beta_i(t) y_i\,dt + \sqrt{\beta_i(t)}\,dW_i` with marginal
:math:`y_i(t) = \alpha_i(t) y_i(0) + \sigma_i(t)\varepsilon_i`.  The one primitive
is :math:`\gamma_i(t) = \log(\sigma_i^2/\alpha_i^2)`; everything else derives from it:

.. math::
   \alpha_i^2 = \mathrm{sigmoid}(-\gamma_i),\quad
   \sigma_i^2 = \mathrm{sigmoid}(\gamma_i),\quad
   \beta_i = \sigma_i^2\,\frac{d\gamma_i}{dt},\quad
   \mathrm{SNR}_i = v_i\, e^{-\gamma_i},

with :math:`v_i = \Sigma_i/s_i^2` the data variance of the whitened component
(``prior.log_var``).  Shape rule: ``t [B]`` and parameters ``[B, K]`` give
``gamma [B, D]``.  :math:`d\gamma/dt` is computed by forward-mode autodiff of
``gamma`` (``torch.autograd.forward_ad``), so clipped schedules get the exact (zero) rate
where they are flat.

Schedules here: scalar :class:`LinearSchedule` (VDM), :class:`CosineSchedule`,
:class:`VPSchedule` (Song et al.), the component-wise
:class:`SoftConditioningSchedule` of GUD and the clipped
:class:`SequentialSchedule`.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor

__all__ = [
    "Schedule",
    "NoiseState",
    "LinearSchedule",
    "CosineSchedule",
    "VPSchedule",
    "SoftConditioningSchedule",
    "SequentialSchedule",
    "alpha_sigma",
]


def alpha_sigma(gamma: Tensor) -> tuple[Tensor, Tensor]:
    """:math:`(\\alpha, \\sigma)` from :math:`\\gamma`: ``sqrt(sigmoid(-g)), sqrt(sigmoid(g))``."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


@dataclass
class NoiseState:
    """The noise state of every component at times ``t``.

    ``gamma [B, D]`` and its time derivative ``gamma_dot [B, D]``; the rest are
    derived properties.
    """

    gamma: Tensor  # [B, D]
    gamma_dot: Tensor  # [B, D]

    @property
    def alpha(self) -> Tensor:  # [B, D]
        return torch.sigmoid(-self.gamma).sqrt()

    @property
    def sigma(self) -> Tensor:  # [B, D]
        return torch.sigmoid(self.gamma).sqrt()

    @property
    def beta(self) -> Tensor:  # [B, D]
        return torch.sigmoid(self.gamma) * self.gamma_dot

    def true_log_snr(self, log_var: Tensor) -> Tensor:
        """:math:`\\log \\mathrm{SNR}_i = \\log v_i - \\gamma_i`."""
        return log_var.to(self.gamma) - self.gamma

    def denoised(self, y: Tensor, eps: Tensor) -> Tensor:
        """The clean prediction :math:`\\hat y_0 = (y_t - \\sigma\\hat\\varepsilon)/\\alpha`, ``[B, D]``."""
        return (y - self.sigma * eps) / self.alpha

    def score(self, eps: Tensor) -> Tensor:
        """The score :math:`\\nabla\\log p(y_t) = -\\hat\\varepsilon/\\sigma`, ``[B, D]``."""
        return -eps / self.sigma


class Schedule:
    """Base class: ``gamma(t, params) -> [B, D]`` for ``t [B]`` in [0, 1] (0 clean).

    ``params`` is ``None`` (the schedule's default), or a tensor ``[P]`` or
    ``[B, P]`` of schedule parameters for a schedule *family* (e.g. the inverse
    softness ``a``).  ``sample_params(n, generator)`` draws training parameters
    from the family's range (``None`` for a fixed schedule).
    """

    dim: int
    num_params: int = 0

    def gamma(self, t: Tensor, params: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    def state(self, t: Tensor, params: Tensor | None = None) -> NoiseState:
        """Gamma and its exact time derivative (forward-mode autodiff)."""
        t = _check_t(t)
        with warnings.catch_warnings(), fwAD.dual_level():
            # torch loads its forward-AD decompositions with torch.jit.script on first use
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=DeprecationWarning)
            g_dual = self.gamma(fwAD.make_dual(t, torch.ones_like(t)), params)
            g, g_dot = fwAD.unpack_dual(g_dual)
        if g_dot is None:  # gamma does not depend on t
            g_dot = torch.zeros_like(g)
        return NoiseState(g, g_dot.expand_as(g))

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> Tensor | None:
        return None

    def to(self, device) -> "Schedule":
        """A copy of the schedule with its tensors on ``device`` (the original is unchanged), so
        that gamma is computed where the data live, without host-device copies per step."""
        out = copy.copy(self)
        for name, value in vars(self).items():
            if torch.is_tensor(value):
                setattr(out, name, value.to(device))
        return out

    def _expand(self, g: Tensor) -> Tensor:
        """``[B, 1]`` -> ``[B, D]``."""
        return g.expand(g.shape[0], self.dim)


def _check_t(t: Tensor | float) -> Tensor:
    t = torch.as_tensor(t)
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ValueError(f"t must be a scalar or a vector [B]; got shape {tuple(t.shape)}")
    if not torch.is_floating_point(t):
        t = t.to(torch.get_default_dtype())
    p = fwAD.unpack_dual(t).primal
    if p.device.type != "cpu":  # checking would synchronise the host with the device every call
        return t
    outside = torch.isnan(p) | (p < 0) | (p > 1)
    if bool(outside.any()):
        raise ValueError(f"t must lie in [0, 1] (0 clean, 1 noise); got {p[outside][:3].tolist()}")
    return t


class LinearSchedule(Schedule):
    """Scalar :math:`\\gamma(t) = \\gamma_{min} + t(\\gamma_{max}-\\gamma_{min})` for all
    components (VDM's fixed linear schedule: -13.3 to 5)."""

    def __init__(self, dim: int, gamma_min: float = -13.3, gamma_max: float = 5.0):
        if not gamma_max > gamma_min:
            raise ValueError("need gamma_max > gamma_min")
        self.dim, self.gamma_min, self.gamma_max = int(dim), float(gamma_min), float(gamma_max)

    def gamma(self, t: Tensor, params: Tensor | None = None) -> Tensor:
        t = _check_t(t)
        return self._expand((self.gamma_min + t * (self.gamma_max - self.gamma_min))[:, None])


class CosineSchedule(Schedule):
    """Scalar cosine schedule :math:`\\alpha = \\cos(\\pi u/2)`, i.e.
    :math:`\\gamma = 2\\log\\tan(\\pi u/2)`, with ``u`` mapped linearly so that
    :math:`\\gamma` runs from ``gamma_min`` to ``gamma_max``."""

    def __init__(self, dim: int, gamma_min: float = -13.3, gamma_max: float = 5.0):
        self.dim = int(dim)
        self.u0 = 2 / math.pi * math.atan(math.exp(gamma_min / 2))
        self.u1 = 2 / math.pi * math.atan(math.exp(gamma_max / 2))

    def gamma(self, t: Tensor, params: Tensor | None = None) -> Tensor:
        t = _check_t(t)
        u = self.u0 + t * (self.u1 - self.u0)
        return self._expand((2 * torch.log(torch.tan(math.pi * u / 2)))[:, None])


class VPSchedule(Schedule):
    """Song et al.'s VP SDE, :math:`\\beta(t) = \\beta_{min} + t(\\beta_{max}-\\beta_{min})`:
    :math:`\\gamma = \\log(\\exp(\\int_0^u \\beta) - 1)` with ``u = eps + t(1-eps)``."""

    def __init__(self, dim: int, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-5):
        self.dim, self.beta_min, self.beta_max, self.eps = int(dim), beta_min, beta_max, eps

    def gamma(self, t: Tensor, params: Tensor | None = None) -> Tensor:
        t = _check_t(t)
        u = self.eps + t * (1 - self.eps)
        integral = self.beta_min * u + 0.5 * (self.beta_max - self.beta_min) * u ** 2
        return self._expand(torch.log(torch.expm1(integral))[:, None])


class SoftConditioningSchedule(Schedule):
    r"""GUD's soft-conditioning (linear) schedule.

    Ordering labels :math:`l_{k,i}` (``labels [K, D]``: e.g. one row of variance labels, or a
    row of wavelet scales and a row of columns) and inverse softnesses :math:`a_k`
    (``params [B, K]``) give the combined label :math:`L_i = \sum_k a_k l_{k,i}`.  All
    components share one slope; a higher label means a lower SNR at every time (noised
    earlier, generated later).  ``a = 0``: equal SNR; variance labels
    :math:`l_i = -\log\Sigma_i` and ``a = 1``: standard diffusion; ``a -> inf``:
    autoregressive in label order.  ``log_var [D]`` is the prior's :math:`\log v_i`
    (:math:`v_i = \Sigma_i/s_i^2`), which links the process :math:`\gamma_i` to the true
    :math:`\tilde\gamma_i = \gamma_i - \log v_i = -\log\mathrm{SNR}_i`.

    Two conventions fix the absolute end points (``endpoints``):

    * ``"snr"`` (the paper's equation): the end points are set in the true SNR,

      .. math::
         \tilde\gamma_i(t) = \tilde\gamma_{denoise} + (L_i - L_{max})
            + t\,\big(\tilde\gamma_{noise} - \tilde\gamma_{denoise} + L_{max} - L_{min}\big),

      so the highest-label component has true SNR :math:`e^{-\tilde\gamma_{denoise}}` at
      t = 0 and the lowest-label one :math:`e^{-\tilde\gamma_{noise}}` at t = 1, whatever
      the prior: whitened and unwhitened priors follow the same SNR paths.
    * ``"process"`` (the released code's ``variance_adjusted_schedule``): the same formula
      for the *process* :math:`\gamma_i` with labels :math:`L_i + \log v_i`, so that the
      process :math:`\gamma` spans :math:`[\gamma_{denoise}, \gamma_{noise}]`.  Same relative
      offsets and common slope, other absolute end points: with the white-noise prior at
      ``a = 1`` every component follows one :math:`\gamma(t)` from -7 to 3, and the
      smallest-variance component ends at true SNR :math:`\Sigma_{min} e^{7}`.  With the
      whitened prior (:math:`v_i = 1`) the two conventions coincide.

    ``clip=True`` clips the quantity the end points are set in (:math:`\tilde\gamma` for
    ``"snr"``, :math:`\gamma` for ``"process"``) to :math:`[\gamma_{denoise}, \gamma_{noise}]`:
    a component waits fully noised until its ramp enters the interval, rises with the
    common slope and waits denoised afterwards.  The order and overlap of the active
    windows are unchanged, but large ``a`` no longer drives components far below the
    quantisation bin at t = 0 or makes :math:`\alpha` underflow at t = 1.

    ``param_map`` (optional) maps user parameters ``[B, P]`` (e.g. ``(a, r)``) to the
    weights ``[B, K]``; ``param_range [P, 2]`` is the training range sampled by
    :meth:`sample_params`.
    """

    ENDPOINTS = ("snr", "process")

    def __init__(self, labels: Tensor, log_var: Tensor, a: float | Tensor = 1.0,
                 gamma_denoise: float = -7.0, gamma_noise: float = 3.0,
                 param_range: Tensor | None = None,
                 param_map: Callable[[Tensor], Tensor] | None = None, clip: bool = False,
                 endpoints: str = "snr"):
        if endpoints not in self.ENDPOINTS:
            raise ValueError(f"endpoints must be one of {self.ENDPOINTS}; got {endpoints!r}")
        self.endpoints = endpoints
        labels = torch.as_tensor(labels, dtype=torch.float64)
        if labels.ndim == 1:
            labels = labels[None]
        if labels.ndim != 2:
            raise ValueError(f"labels must be [D] or [K, D]; got shape {tuple(labels.shape)}")
        if not torch.isfinite(labels).all():
            raise ValueError("labels contain NaN or infinite values")
        log_var = torch.as_tensor(log_var, dtype=torch.float64)
        if log_var.shape != labels.shape[1:]:
            raise ValueError(f"log_var must be [D] = [{labels.shape[1]}]; got {tuple(log_var.shape)}")
        if not gamma_noise > gamma_denoise:
            raise ValueError("need gamma_noise > gamma_denoise")
        self.labels, self.log_var = labels, log_var
        self.dim = labels.shape[1]
        self.gamma_denoise, self.gamma_noise = float(gamma_denoise), float(gamma_noise)
        self.param_map, self.clip = param_map, bool(clip)
        default = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
        self.num_params = default.numel()
        if param_map is None and self.num_params not in (1, labels.shape[0]):
            raise ValueError(f"a must have 1 or K={labels.shape[0]} entries, got {self.num_params}")
        self.default_params = default
        self.param_range = None if param_range is None else torch.as_tensor(param_range, dtype=torch.float64).reshape(-1, 2)
        self._check_params(default[None])
        if self.param_range is not None:
            self._check_params(self.param_range.T)

    def _check_params(self, params: Tensor) -> None:
        if params.device.type != "cpu":  # drawn by sample_params from a checked range; no host sync
            return
        if not torch.isfinite(params).all():
            raise ValueError("schedule parameters contain NaN or infinite values")
        if self.param_map is None and (params < 0).any():
            raise ValueError(f"inverse softness a must be >= 0; got {params.flatten().tolist()}")

    def weights(self, params: Tensor | None, batch: int) -> Tensor:
        """Label weights ``[B, K]`` from parameters (``None``: the default)."""
        p = self.default_params if params is None else torch.as_tensor(params, dtype=torch.float64,
                                                                        device=self.labels.device)
        if p.ndim <= 1:
            p = p.reshape(1, -1).expand(batch, -1)
        if p.shape[0] != batch:
            raise ValueError(f"schedule parameters must be [P] or [B, P] with B={batch}; got {tuple(p.shape)}")
        self._check_params(p)
        w = self.param_map(p) if self.param_map is not None else p
        if w.shape[1] == 1:
            w = w.expand(batch, self.labels.shape[0])
        if w.shape[1] != self.labels.shape[0]:
            raise ValueError(f"need one weight per label set (K={self.labels.shape[0]}); got {w.shape[1]}")
        return w

    def effective_gamma(self, t: Tensor, params: Tensor | None = None) -> Tensor:
        """:math:`\\tilde\\gamma_i(t) = -\\log\\mathrm{SNR}_i(t)`, shape ``[B, D]``."""
        t = _check_t(t)
        return self.gamma(t, params) - self.log_var.to(t)

    def gamma(self, t: Tensor, params: Tensor | None = None) -> Tensor:
        t = _check_t(t)
        w = self.weights(params, t.shape[0]).to(t)
        lab = w @ self.labels.to(t)  # [B, D]
        log_var = self.log_var.to(t)
        if self.endpoints == "process":
            lab = lab + log_var
        lmax, lmin = lab.amax(-1, keepdim=True), lab.amin(-1, keepdim=True)
        slope = self.gamma_noise - self.gamma_denoise + (lmax - lmin)
        g = self.gamma_denoise + (lab - lmax) + t[:, None] * slope
        if self.clip:
            g = g.clamp(self.gamma_denoise, self.gamma_noise)
        return g if self.endpoints == "process" else g + log_var

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> Tensor | None:
        if self.param_range is None:
            return None
        lo, hi = self.param_range[:, 0], self.param_range[:, 1]
        dev = generator.device if generator is not None else lo.device
        u = torch.rand(n, lo.numel(), generator=generator, dtype=torch.float64, device=dev)
        return lo.to(dev) + u * (hi - lo).to(dev)


class SequentialSchedule(Schedule):
    r"""Clipped sequential schedule (the official code's rows/columns variant).

    Each component waits at :math:`\tilde\gamma_{denoise}` until its offset
    :math:`\tau_i = (1-w)(l_{max} - l_i)/(l_{max} - l_{min})`, rises with the
    common slope :math:`(\tilde\gamma_{noise}-\tilde\gamma_{denoise})/w` and is
    clipped at :math:`\tilde\gamma_{noise}`; ``w`` in (0, 1] is the fraction of
    time each component is active (``w = 1``: all together; small ``w``:
    autoregressive).  Written in the true SNR like the soft-conditioning schedule, and with
    its label convention: a higher label is noised earlier and generated later (the
    released code's sequential schedule uses the opposite sign of the offsets).
    """

    def __init__(self, labels: Tensor, log_var: Tensor, width: float = 0.5,
                 gamma_denoise: float = -7.0, gamma_noise: float = 3.0):
        labels = torch.as_tensor(labels, dtype=torch.float64).reshape(-1)
        if not 0 < width <= 1:
            raise ValueError(f"width must be in (0, 1]; got {width}")
        span = (labels.max() - labels.min()).clamp_min(1e-12)
        self.offset = (1 - width) * (labels.max() - labels) / span
        self.log_var = torch.as_tensor(log_var, dtype=torch.float64)
        self.dim, self.width = labels.numel(), float(width)
        self.gamma_denoise, self.gamma_noise = float(gamma_denoise), float(gamma_noise)

    def gamma(self, t: Tensor, params: Tensor | None = None) -> Tensor:
        t = _check_t(t)
        slope = (self.gamma_noise - self.gamma_denoise) / self.width
        g = self.gamma_denoise + slope * (t[:, None] - self.offset.to(t))
        return g.clamp(self.gamma_denoise, self.gamma_noise) + self.log_var.to(t)
