r"""The variational bound (ELBO) on the negative log-likelihood, in nats and bits/dim.

For a component-wise VP process the continuous-time bound of VDM (Kingma et
al. 2021) holds component by component, so for whitened data :math:`y_0`

.. math::
   -\log p(x) \le
   \underbrace{\mathrm{KL}\big(q(y_1|y_0)\,\|\,\mathcal N(0,I)\big)}_{\text{prior}}
   + \underbrace{\tfrac12\,\mathbb E_{t\sim U(0,1),\varepsilon}
      \textstyle\sum_i \gamma_i'(t)\,(\varepsilon_i - \hat\varepsilon_i)^2}_{\text{diffusion}}
   + \underbrace{\mathbb E\,[-\log p(x\mid y_{t=0})]}_{\text{reconstruction}}
   \;(+\ \text{log-det}).

Two decoders close the bound at t = 0:

* ``decoder="gaussian"`` -- continuous data: :math:`p(y_0|z_0) = \mathcal N(z_0/\alpha_0, e^{\gamma_0})`
  per component, whose expected negative log-density is
  :math:`\tfrac12(\log 2\pi + \gamma_{0,i} + 1)`; the result is a density on
  :math:`y`, turned into one on :math:`x` by adding the whitening log-determinant
  :math:`\sum_i\log s_i`.  This is the bound that equals the exact Gaussian NLL
  for Gaussian data and the optimal denoiser.
* ``decoder="discretized"`` -- 8-bit data in [-1, 1] (bin width ``2/255``): a
  factorised discretised Gaussian in *pixel space* with mean
  :math:`\mu + U^\top S z_0/\alpha_0` and per-pixel variance
  :math:`\sum_i U_{ij}^2 s_i^2 e^{\gamma_{0,i}}`, a bound on the probability of
  the discrete data itself (as in VDM); no log-determinant enters, because the
  decoder lives in pixel space.

Bits per dimension: ``nats / (D log 2)``; for continuous bounds on dequantised
8-bit data add :math:`\log(255/2)` per dimension (uniform dequantisation,
Theis et al. 2016) -- :func:`bits_per_dim` does both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .diffusion import add_noise
from .prior import Prior
from .schedules import Schedule, alpha_sigma

__all__ = ["ELBO", "elbo", "bits_per_dim", "summarize_bits", "BIN_WIDTH_8BIT"]

BIN_WIDTH_8BIT = 2.0 / 255.0


@dataclass
class ELBO:
    """Per-example terms of the bound, in nats (each ``[B]``), and the ``n_time_samples``
    independent Monte-Carlo replicates of the total (``replicates [B, K]``)."""

    prior: Tensor
    diffusion: Tensor
    reconstruction: Tensor
    log_det: Tensor
    replicates: Tensor  # [B, K] total per replicate (replicate k: its own stratified times and noise)
    dim: int
    decoder: str
    n_time_samples: int

    @property
    def total(self) -> Tensor:  # [B]
        return self.prior + self.diffusion + self.reconstruction + self.log_det

    def bpd(self, dequantized_8bit: bool = False) -> Tensor:
        """Bits per dimension per example."""
        return bits_per_dim(self.total, self.dim, BIN_WIDTH_8BIT if dequantized_8bit else None)

    def summary(self, dequantized_8bit: bool = False) -> dict[str, float]:
        """Mean bits/dim and the mean of each term (nats per dimension), with two standard errors:

        * ``bpd_stderr``: the Monte-Carlo error of the estimate for *these* examples, from the
          spread of the ``K`` independent replicates (``std / sqrt(K)``; NaN for ``K = 1``);
          what differs between two evaluations of the same data with different seeds;
        * ``bpd_stderr_data``: the standard error over examples (``std / sqrt(B)``), which
          also contains the variation of the data: the error of the estimate of the
          population mean from this test set.
        """
        extra = BIN_WIDTH_8BIT if dequantized_8bit else None
        return summarize_bits(bits_per_dim(self.replicates, self.dim, extra),
                              {k: getattr(self, k) / self.dim for k in ("prior", "diffusion", "reconstruction", "log_det")},
                              decoder=self.decoder)


def summarize_bits(bits: Tensor, terms: dict[str, Tensor] | None = None, **extra) -> dict[str, float]:
    """Summary of per-example, per-replicate bits/dim ``bits [N, K]`` (see :meth:`ELBO.summary`);
    ``terms`` are per-example values ``[N]`` whose means are reported as ``<name>_per_dim``."""
    bits = bits.double()
    n, k = bits.shape
    per_example, per_replicate = bits.mean(1), bits.mean(0)
    out = {"bpd": float(per_example.mean()),
           "bpd_stderr": float(per_replicate.std() / math.sqrt(k)) if k > 1 else float("nan"),
           "bpd_stderr_data": float(per_example.std() / math.sqrt(n)) if n > 1 else float("nan"),
           "n_examples": n, "n_time_samples": k, **extra}
    for name, v in (terms or {}).items():
        out[f"{name}_per_dim"] = float(v.double().mean())
    return out
def bits_per_dim(nats: Tensor, dim: int, bin_width: float | None = None) -> Tensor:
    """``nats / (D log 2)``; with ``bin_width`` adds ``-log(bin_width)`` per dimension
    (a continuous density on uniformly dequantised data bounds the discrete NLL)."""
    extra = 0.0 if bin_width is None else -math.log(bin_width) * dim
    return (nats + extra) / (dim * math.log(2.0))


def _discretized_gaussian_nll(x: Tensor, mean: Tensor, std: Tensor, bin_width: float) -> Tensor:
    """``-log P(x)`` per pixel for bins of ``bin_width`` centred on ``x`` in [-1, 1]; edge
    bins extend to infinity."""
    normal = torch.distributions.Normal(mean, std)
    upper = torch.where(x >= 1 - bin_width / 2, torch.ones_like(x), normal.cdf(x + bin_width / 2))
    lower = torch.where(x <= -1 + bin_width / 2, torch.zeros_like(x), normal.cdf(x - bin_width / 2))
    p = (upper - lower).clamp_min(1e-12)
    return -torch.log(p)


def elbo(eps_model, y0: Tensor, schedule: Schedule, *, params=None, generator: torch.Generator | None = None,
         n_time_samples: int = 1, decoder: str = "gaussian", prior: Prior | None = None,
         bin_width: float = BIN_WIDTH_8BIT, x: Tensor | None = None) -> ELBO:
    """The bound for each example of ``y0 [B, D]`` (whitened components).

    The diffusion term (and, for ``decoder="discretized"``, the reconstruction term, which
    samples :math:`z_0`) is estimated by Monte Carlo with ``n_time_samples`` independent
    replicates: replicate ``k`` gives example ``i`` the time :math:`(u_k + i/B) \bmod 1`
    (stratified across the batch, a fresh uniform offset :math:`u_k` per replicate) and its
    own noise.  The replicates give an honest Monte-Carlo standard error
    (:meth:`ELBO.summary`).  ``prior`` is needed for the log-determinant
    (``decoder="gaussian"``) and for the pixel-space decoder (``decoder="discretized"``,
    which also needs the quantised data ``x [B, D]`` or reconstructs it as
    ``prior.decode(y0)``).  ``generator`` defaults to a CPU generator seeded with 0.
    """
    if decoder not in ("gaussian", "discretized"):
        raise ValueError(f"decoder must be 'gaussian' or 'discretized'; got {decoder!r}")
    if int(n_time_samples) < 1:
        raise ValueError(f"n_time_samples must be >= 1; got {n_time_samples}")
    if y0.ndim != 2 or y0.shape[1] != schedule.dim:
        raise ValueError(f"y0 must be [B, D] with D={schedule.dim}; got {tuple(y0.shape)}")
    if y0.shape[0] == 0:
        raise ValueError("y0 is empty: need at least one example")
    if not torch.isfinite(y0).all():
        raise ValueError("y0 contains NaN or infinite values")
    if decoder == "discretized" and prior is None:
        raise ValueError("the discretized decoder needs the prior (basis, mean and scale)")
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    b, d = y0.shape
    k_rep = int(n_time_samples)
    dev, dt = y0.device, y0.dtype
    ones = torch.ones(b, dtype=torch.float64)

    # prior term at t = 1
    g1 = schedule.gamma(ones, params).to(dev, dt)
    a1, s1 = alpha_sigma(g1)
    prior_kl = 0.5 * (s1 ** 2 + a1 ** 2 * y0 ** 2 - 1 - torch.log(s1 ** 2)).sum(-1)

    g0 = schedule.gamma(0 * ones, params).to(dev, dt)
    if decoder == "gaussian":
        log_det = (prior.log_det if prior is not None else torch.zeros(())).to(dev, dt).expand(b)
    else:
        log_det = torch.zeros(b, dtype=dt, device=dev)
        x = prior.decode(y0) if x is None else x.to(dev, dt)
        a0, s0 = alpha_sigma(g0)
        comp_var = prior.scale.to(dev, dt) ** 2 * torch.exp(g0)  # [B, D] per component
        u_sq = prior.basis.matrix(dt).to(dev) ** 2  # [D(components), D(pixels)]
        pix_std = (comp_var @ u_sq).sqrt().clamp_min(1e-6 * bin_width)  # no underflow to 0

    diff = torch.zeros(b, k_rep, dtype=dt, device=dev)
    recon = torch.zeros(b, k_rep, dtype=dt, device=dev)
    strata = torch.arange(b, dtype=torch.float64) / b
    with torch.no_grad():
        for k in range(k_rep):
            u = torch.rand((), generator=generator, dtype=torch.float64, device=generator.device).cpu()
            st = schedule.state((u + strata) % 1.0, params)
            gamma, gdot = st.gamma.to(dev, dt), st.gamma_dot.to(dev, dt)
            y_t, eps = add_noise(y0, gamma, generator)
            eps_hat = eps_model(y_t, gamma)
            diff[:, k] = 0.5 * (gdot * (eps - eps_hat) ** 2).sum(-1)
            # reconstruction at t = 0
            if decoder == "gaussian":
                recon[:, k] = 0.5 * (math.log(2 * math.pi) + g0 + 1).sum(-1)
            else:
                z0 = a0 * y0 + s0 * torch.randn(y0.shape, generator=generator, dtype=dt,
                                                device=generator.device).to(dev)
                recon[:, k] = _discretized_gaussian_nll(x, prior.decode(z0 / a0), pix_std, bin_width).sum(-1)
    replicates = prior_kl[:, None] + diff + recon + log_det[:, None]
    return ELBO(prior_kl, diff.mean(1), recon.mean(1), log_det, replicates, d, decoder, k_rep)
