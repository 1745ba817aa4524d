r"""Exact Gaussian toy model of GUD: decision times, conditional structure, exact sampler
moments and the exact ELBO gap.

Data are a stationary 1-D Gaussian process on ``D`` points, ``x ~ N(0, K_x)``, seen as a
``1 x D`` image.  In whitened components :math:`y_0 \sim \mathcal N(m, K)` and
:math:`y_t = \alpha\odot y_0 + \sigma\odot\varepsilon`, so everything is linear-Gaussian:

* the posterior covariance :math:`\mathrm{Cov}[y_0\mid y_t] = K - K A C_t^{-1} A K` with
  :math:`A = \mathrm{diag}(\alpha)`, :math:`C_t = AKA + \mathrm{diag}(\sigma^2)`
  (:func:`posterior_cov`); its diagonal gives the *decision time* of each component
  (:func:`decision_times`);
* every sampler of :mod:`gud.samplers` driven by the exact denoiser
  :class:`gud.oracle.GaussianOracle` is an affine map plus Gaussian noise per step, so
  the law of its output is Gaussian and its mean and covariance can be propagated
  exactly (:func:`propagate_moments` mirrors the single-step samplers;
  :func:`sampler_moments` runs any sampler on unit inputs and unit noises and uses
  linearity), without Monte-Carlo error; :func:`sampler_error_vs_nfe` gives every
  sampler's exact error against its number of network evaluations;
* with the exact denoiser the expected ELBO exceeds the exact NLL by exactly
  :math:`\mathrm{KL}(q(y_1)\,\|\,\mathcal N(0, I))` plus the expected KL of the
  Gaussian decoder from the true posterior at t = 0 (:func:`elbo_gap`), which
  :func:`expected_elbo` checks by quadrature (piecewise between the kinks of a clipped
  schedule, :func:`schedule_kinks`).

Shapes follow CONTRIBUTING.md: ``gamma [T, D]``, covariances ``[D, D]`` (float64).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .bases import PixelBasis
from .oracle import GaussianOracle
from .prior import Prior
from .samplers import DEFAULT_GRID, SAMPLERS, make_grid, nfe, steps_for_nfe, time_grid
from .schedules import NoiseState, Schedule, SoftConditioningSchedule, alpha_sigma

__all__ = [
    "Toy",
    "make_toy",
    "stationary_covariance",
    "gaussian_kl",
    "empirical_kl",
    "empirical_kl_floor",
    "posterior_cov",
    "conditional_variance",
    "decision_times",
    "propagate_moments",
    "sampler_moments",
    "sampler_error_vs_nfe",
    "covariance_error",
    "marginal_moments",
    "prior_mismatch",
    "elbo_gap",
    "expected_elbo",
    "gaussian_entropy",
    "TrajectoryRecorder",
    "schedule_kinks",
]


def stationary_covariance(d: int, kernel: str = "ou", length: float = 2.0,
                          variance: float = 1.0) -> Tensor:
    r"""Covariance ``[d, d]`` of a stationary process on the points ``0 .. d-1``.

    ``kernel="ou"``: Ornstein-Uhlenbeck / AR(1), :math:`k(r) = v\,e^{-|r|/\ell}` (Markov: the
    conditional variance given the whole past is :math:`v(1-\rho^2)`, :math:`\rho = e^{-1/\ell}`);
    ``kernel="se"``: squared exponential :math:`v\,e^{-r^2/(2\ell^2)}` (smooth, ill-conditioned
    for large :math:`\ell`; a jitter of ``1e-6 v`` is added to the diagonal).
    """
    if d < 1 or length <= 0 or variance <= 0:
        raise ValueError(f"need d >= 1, length > 0, variance > 0; got {d}, {length}, {variance}")
    r = torch.arange(d, dtype=torch.float64)
    r = (r[:, None] - r[None, :]).abs()
    if kernel == "ou":
        return variance * torch.exp(-r / length)
    if kernel == "se":
        return variance * (torch.exp(-0.5 * (r / length) ** 2) + 1e-6 * torch.eye(d, dtype=torch.float64))
    raise ValueError(f"unknown kernel {kernel!r}; choose 'ou' or 'se'")


@dataclass
class Toy:
    """The toy problem in one prior: data law ``N(0, cov_x)`` (pixel space), the prior, and
    the exact denoiser in its whitened components."""

    cov_x: Tensor  # [D, D]
    prior: Prior
    oracle: GaussianOracle
    labels: Tensor  # [D] ordering labels: the position 0 .. D-1 (left to right)

    def schedule(self, a: float, gamma_denoise: float = -7.0, gamma_noise: float = 3.0) -> SoftConditioningSchedule:
        """GUD's soft-conditioning schedule with inverse softness ``a`` and position labels."""
        return SoftConditioningSchedule(self.labels, self.prior.log_var, a=a,
                                        gamma_denoise=gamma_denoise, gamma_noise=gamma_noise)


def make_toy(d: int, kernel: str = "ou", length: float = 2.0, variance: float = 1.0,
             whitened: bool = True) -> Toy:
    """A stationary process on ``d`` points as a ``1 x d`` image in the pixel basis, with the
    exact prior (zero mean, the process variance per pixel), whitened or not."""
    cov_x = stationary_covariance(d, kernel, length, variance)
    basis = PixelBasis((1, 1, d))
    prior = Prior(basis, torch.zeros(d, dtype=torch.float64), cov_x.diagonal().clone(), whitened)
    oracle = GaussianOracle.from_data(torch.zeros(d, dtype=torch.float64), cov_x, prior)
    return Toy(cov_x, prior, oracle, basis.meta["col"].to(torch.float64))


def gaussian_kl(m0: Tensor, c0: Tensor, m1: Tensor, c1: Tensor) -> float:
    r""":math:`\mathrm{KL}(\mathcal N(m_0, C_0)\,\|\,\mathcal N(m_1, C_1))` in nats (float64);
    ``inf`` when :math:`C_1` is not numerically positive definite or not finite (e.g. the
    output law of an unstable sampler that has collapsed or blown up)."""
    m0, c0, m1, c1 = (torch.as_tensor(v, dtype=torch.float64) for v in (m0, c0, m1, c1))
    d = m0.shape[-1]
    l1, info = torch.linalg.cholesky_ex(c1)
    if int(info) != 0 or not bool(torch.isfinite(c1).all() and torch.isfinite(m1).all()):
        return math.inf
    l0 = torch.linalg.cholesky(c0)
    a = torch.linalg.solve_triangular(l1, l0, upper=False)  # L1^-1 L0
    z = torch.linalg.solve_triangular(l1, (m1 - m0)[:, None], upper=False)[:, 0]
    logdet = 2 * (torch.log(torch.diagonal(l1)).sum() - torch.log(torch.diagonal(l0)).sum())
    return float(0.5 * ((a ** 2).sum() + (z ** 2).sum() - d + logdet))


def empirical_kl(mean: Tensor, cov: Tensor, samples: Tensor) -> float:
    r""":math:`\mathrm{KL}(\mathcal N(\text{mean}, \text{cov})\,\|\,\mathcal N(\hat m, \hat C))` with the
    sample mean and (unbiased) covariance of ``samples [n, D]``."""
    s = torch.as_tensor(samples, dtype=torch.float64)
    return gaussian_kl(mean, cov, s.mean(0), torch.cov(s.T))


def empirical_kl_floor(d: int, n: int) -> float:
    r"""Leading-order expectation :math:`D(D+3)/(4n)` of :func:`empirical_kl` when the
    samples *are* exact draws: the statistical floor of the estimate."""
    return d * (d + 3) / (4 * n)


def _as_state(schedule: Schedule, t: Tensor | float, params=None) -> NoiseState:
    t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
    st = schedule.state(t, params)
    return NoiseState(st.gamma.to(torch.float64), st.gamma_dot.to(torch.float64))


def posterior_cov(cov: Tensor, gamma: Tensor) -> Tensor:
    r""":math:`\mathrm{Cov}[y_0\mid y_t]` ``[T, D, D]`` for ``gamma [T, D]`` and ``y_0 ~ N(., cov)``."""
    k = torch.as_tensor(cov, dtype=torch.float64)
    alpha, sigma = alpha_sigma(torch.as_tensor(gamma, dtype=torch.float64))
    ak = alpha[:, :, None] * k  # A K  [T, D, D]
    c = ak * alpha[:, None, :] + torch.diag_embed(sigma ** 2)
    sol = torch.cholesky_solve(ak, torch.linalg.cholesky(c))  # C^-1 A K
    out = k - ak.transpose(-1, -2) @ sol
    return 0.5 * (out + out.transpose(-1, -2))


def conditional_variance(cov: Tensor, gamma: Tensor, k: int, observed: Tensor) -> Tensor:
    r""":math:`\mathrm{Var}[y_{0,k}\mid y_{t,J}]` ``[T]``: the posterior variance of component ``k``
    given only the noisy components ``J`` (boolean mask ``observed [D]``) at noise ``gamma [T, D]``."""
    kk = torch.as_tensor(cov, dtype=torch.float64)
    j = torch.as_tensor(observed, dtype=torch.bool)
    g = torch.as_tensor(gamma, dtype=torch.float64)
    if not bool(j.any()):
        return kk[k, k].expand(g.shape[0]).clone()
    alpha, sigma = alpha_sigma(g[:, j])
    kjj = kk[j][:, j]
    c = alpha[:, :, None] * kjj * alpha[:, None, :] + torch.diag_embed(sigma ** 2)
    b = alpha * kk[j, k]  # Cov[y_tJ, y0_k]  [T, |J|]
    sol = torch.cholesky_solve(b[..., None], torch.linalg.cholesky(c))[..., 0]
    return kk[k, k] - (b * sol).sum(-1)


def decision_times(cov: Tensor, schedule: Schedule, *, params=None, threshold: float = 0.5,
                   n_grid: int = 2001) -> Tensor:
    r"""The time ``[D]`` at which each component is *decided*: the largest t with
    :math:`\mathrm{Var}[y_{0,i}\mid y_t] \le \text{threshold}\cdot\mathrm{Var}[y_{0,i}]`
    (linear interpolation on a uniform grid of ``n_grid`` times; the ratio grows with t
    because the forward process is Markov).  Sampling runs from t = 1 to 0, so a larger
    decision time means *decided earlier*."""
    t = torch.linspace(0.0, 1.0, n_grid, dtype=torch.float64)
    g = schedule.gamma(t, params).to(torch.float64)
    k = torch.as_tensor(cov, dtype=torch.float64)
    ratio = torch.diagonal(posterior_cov(k, g), dim1=-2, dim2=-1) / torch.diagonal(k)  # [T, D]
    out = torch.empty(k.shape[0], dtype=torch.float64)
    for i in range(k.shape[0]):
        r = ratio[:, i]
        above = torch.nonzero(r > threshold)
        if len(above) == 0:
            out[i] = 1.0
            continue
        j = int(above[0])
        if j == 0:
            out[i] = 0.0
            continue
        r0, r1 = float(r[j - 1]), float(r[j])
        w = (threshold - r0) / (r1 - r0) if r1 > r0 else 0.0
        out[i] = t[j - 1] + w * (t[j] - t[j - 1])
    return out


# ------------------------------------------------------------------ exact sampler moments

def _affine_eps_batch(oracle: GaussianOracle, gamma: Tensor) -> tuple[Tensor, Tensor]:
    """The oracle as affine maps ``eps_hat(y) = E y + e`` at noise states ``gamma [T, D]``:
    ``E [T, D, D]``, ``e [T, D]``."""
    alpha, sigma = alpha_sigma(gamma)
    k, m = oracle.cov, oracle.mean
    c = alpha[:, :, None] * k * alpha[:, None, :] + torch.diag_embed(sigma ** 2)
    e_mat = sigma[:, :, None] * torch.cholesky_inverse(torch.linalg.cholesky(c))
    return e_mat, -(e_mat @ (alpha * m)[..., None])[..., 0]


def propagate_moments(oracle: GaussianOracle, schedule: Schedule, method: str, steps: int, *,
                      params=None, init: tuple[Tensor, Tensor] | None = None,
                      denoise_final: bool = True) -> tuple[Tensor, Tensor]:
    r"""Exact mean ``[D]`` and covariance ``[D, D]`` of the output of
    ``gud.samplers.sample(oracle, schedule, n, method=method, steps=steps)``.

    With the exact Gaussian denoiser each update of :mod:`gud.samplers` (``"em"``,
    ``"heun"``, ``"ddim"``, ``"ancestral"``) is :math:`y \mapsto M y + b + \text{noise}`,
    so the law stays Gaussian: :math:`\mu \mapsto M\mu + b`, :math:`P \mapsto MPM^\top + Q`.
    The updates mirror the sampler code step by step (same grid, same Euler last step
    of Heun, same final denoising).  ``init = (mean, cov)`` at t = 1 (default the
    sampler's :math:`\mathcal N(0, I)`; pass :math:`q(y_1)` to isolate discretisation error).
    Other samplers of :data:`gud.samplers.SAMPLERS` go through :func:`sampler_moments`.
    """
    if method not in ("em", "heun", "ddim", "ancestral"):
        if method in SAMPLERS:  # the multistep samplers: exact moments by linearity
            return sampler_moments(oracle, schedule, method, steps, params=params, init=init,
                                   denoise_final=denoise_final)
        raise ValueError(f"unknown sampler {method!r}")
    d = oracle.dim
    eye = torch.eye(d, dtype=torch.float64)
    if init is None:
        mu, p = torch.zeros(d, dtype=torch.float64), eye.clone()
    else:
        mu, p = (torch.as_tensor(v, dtype=torch.float64).clone() for v in init)
    grid = time_grid(steps)
    st_all = _as_state(schedule, grid, params)  # [S+1, D]
    states = [NoiseState(st_all.gamma[i:i + 1], st_all.gamma_dot[i:i + 1]) for i in range(steps + 1)]
    eps_all = _affine_eps_batch(oracle, st_all.gamma)
    eta = 1.0 if method == "ancestral" else 0.0
    for i in range(steps):
        t, s = float(grid[i]), float(grid[i + 1])
        st_t, st_s = states[i], states[i + 1]
        last = i == steps - 1
        e_t, c_t = eps_all[0][i], eps_all[1][i]
        q = torch.zeros(d, dtype=torch.float64)  # diagonal noise variance
        if method == "em":
            h = t - s
            beta, sig, gd = st_t.beta[0], st_t.sigma[0], st_t.gamma_dot[0]
            m_mat = eye + h * (0.5 * torch.diag(beta) - (sig * gd)[:, None] * e_t)
            b = -h * sig * gd * c_t
            q = (beta * h).clamp_min(0)
        elif method == "heun":
            def drift(st, e_mat, e_vec):
                sg = 0.5 * st.sigma[0] * st.gamma_dot[0]
                return -0.5 * torch.diag(st.beta[0]) + sg[:, None] * e_mat, sg * e_vec

            d_t, k_t = drift(st_t, e_t, c_t)
            pred_m, pred_b = eye + (s - t) * d_t, (s - t) * k_t
            if last:
                m_mat, b = pred_m, pred_b
            else:
                e_s, c_s = eps_all[0][i + 1], eps_all[1][i + 1]
                d_s, k_s = drift(st_s, e_s, c_s)
                m_mat = eye + (s - t) * 0.5 * (d_t + d_s @ pred_m)
                b = (s - t) * 0.5 * (k_t + d_s @ pred_b + k_s)
        else:
            a_t, s_t = st_t.alpha[0], st_t.sigma[0]
            a_s, s_s = st_s.alpha[0], st_s.sigma[0]
            var = (eta ** 2) * s_s ** 2 * (-torch.expm1(st_s.gamma[0] - st_t.gamma[0])).clamp_min(0)
            coef = (s_s ** 2 - var).clamp_min(0).sqrt()
            # y' = a_s (y - s_t eps)/a_t + coef eps
            lin = (coef - a_s * s_t / a_t)[:, None]
            m_mat = torch.diag(a_s / a_t) + lin * e_t
            b = lin[:, 0] * c_t
            q = var
        mu = m_mat @ mu + b
        p = m_mat @ p @ m_mat.T + torch.diag(q)
    if denoise_final:
        st0 = states[-1]
        e0, c0 = eps_all[0][-1], eps_all[1][-1]
        a0, s0 = st0.alpha[0], st0.sigma[0]
        m_mat = (eye - s0[:, None] * e0) / a0[:, None]
        mu = m_mat @ mu - s0 * c0 / a0
        p = m_mat @ p @ m_mat.T
    return mu, 0.5 * (p + p.T)


def sampler_moments(oracle: GaussianOracle, schedule: Schedule, method, steps: int | None = None, *,
                    grid: Tensor | str | None = None, params=None, init: tuple[Tensor, Tensor] | None = None,
                    denoise_final: bool = True, condition: tuple[Tensor, Tensor] | None = None,
                    **kwargs) -> tuple[Tensor, Tensor]:
    r"""Exact mean ``[D]`` and covariance ``[D, D]`` of the output of any sampler of
    :data:`gud.samplers.SAMPLERS` (a name, or a sampler function with the same signature)
    driven by the Gaussian ``oracle``, by linearity.

    With an affine denoiser the sampler is an affine function of its Gaussian inputs,
    :math:`y_{out} = c + M y_1 + \sum_k N_k z_k` (initial state and every standard normal draw
    ``z_k`` it makes through its ``noise`` source), so
    :math:`\mathrm{Cov} = M P_1 M^\top + \sum_k N_k N_k^\top`.  One run on a batch of
    :math:`1 + D + KD` rows gives all columns at once: row 0 the mean path, rows ``1..D`` the
    columns of a square root of the initial covariance, and every later row one unit noise
    (a dry run with one row counts the ``K`` draws).  The cost is that of sampling
    :math:`1 + D(K+1)` examples: fine for ``D = 16`` and a hundred steps; for long
    Euler-Maruyama chains :func:`propagate_moments` (matrix propagation) is cheaper.

    ``grid``: explicit times or a grid kind; default the grid ``sample(method=method,
    steps=steps)`` uses.  ``init = (mean, cov)`` at ``grid[0]`` (default
    :math:`\mathcal N(0, I)`); ``condition`` as in :func:`gud.samplers.sample` (``y_known [D]``);
    other keyword arguments go to the sampler.
    """
    if callable(method):
        fn, kind = method, "t"
    elif method in SAMPLERS:
        fn, kind = SAMPLERS[method], DEFAULT_GRID.get(method, "t")
    else:
        raise ValueError(f"unknown sampler {method!r}: method must be one of {sorted(SAMPLERS)} or a sampler function")
    if grid is None or isinstance(grid, str):
        if steps is None:
            raise ValueError("steps: need a number of steps (or an explicit grid)")
        grid = make_grid(schedule, steps, kind if grid is None else grid, params=params)
    d = oracle.dim
    count = [0]

    def counting(like: Tensor) -> Tensor:
        count[0] += 1
        return torch.zeros_like(like)

    kw = dict(params=params, denoise_final=denoise_final, condition=condition, **kwargs)
    fn(oracle, schedule, torch.zeros(1, d, dtype=torch.float64), grid, noise=counting, **kw)
    rows = 1 + d + count[0] * d
    if init is None:
        mu0, root = torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)
    else:
        mu0 = torch.as_tensor(init[0], dtype=torch.float64)
        root = torch.linalg.cholesky(torch.as_tensor(init[1], dtype=torch.float64))
    y = mu0.expand(rows, d).clone()
    y[1:1 + d] += root.T
    calls = [0]
    cols = torch.arange(d)

    def unit(like: Tensor) -> Tensor:
        z = torch.zeros(rows, d, dtype=torch.float64)
        z[1 + d * (1 + calls[0]) + cols, cols] = 1.0
        calls[0] += 1
        return z

    out = fn(oracle, schedule, y, grid, noise=unit, **kw).to(torch.float64)
    if calls[0] != count[0]:
        raise RuntimeError(f"sampler {method!r} drew noise {calls[0]} times, {count[0]} in the dry run")
    jac = out[1:] - out[0]
    cov = jac.T @ jac
    return out[0], 0.5 * (cov + cov.T)


def covariance_error(cov: Tensor, target: Tensor, prior: Prior | None = None) -> float:
    r"""Relative Frobenius error :math:`\|C - C_*\|_F / \|C_*\|_F` of a covariance ``[D, D]`` of
    whitened components against ``target``, measured in data space when a ``prior`` is given
    (:math:`C_x = U^\top S C S U`; the basis is orthogonal, so only the scale matters)."""
    c, c0 = (torch.as_tensor(v, dtype=torch.float64) for v in (cov, target))
    if prior is not None:
        s = prior.scale.to(torch.float64)
        c, c0 = s[:, None] * c * s[None, :], s[:, None] * c0 * s[None, :]
    return float(torch.linalg.norm(c - c0) / torch.linalg.norm(c0))


def sampler_error_vs_nfe(toy: Toy, schedule: Schedule, *, nfes=(6, 10, 15, 20, 25, 35, 50, 75, 100),
                         methods=None, params=None, reference_steps: int = 1000) -> dict:
    r"""Exact error of every sampler against its number of network evaluations (NFE, the final
    denoising included) on a Gaussian ``toy`` under ``schedule``: for the output law
    :math:`p` of ``sample(toy.oracle, schedule, n, method=m, steps=s)`` (default grid of each
    sampler, exact moments by :func:`propagate_moments` / :func:`sampler_moments`), the KL
    :math:`\mathrm{KL}(q(y_0)\,\|\,p)` and the relative Frobenius error of the data-space
    covariance (:func:`covariance_error`).  ``steps`` is the most a budget allows
    (:func:`gud.samplers.steps_for_nfe`; Heun needs an even budget, so it may use one less).

    Returns arrays for a plot: ``methods`` (names), ``nfe [N]`` (budgets), ``steps [M, N]``,
    ``nfe_used [M, N]``, ``kl [M, N]``, ``cov_err [M, N]`` (``nan`` where a budget is below
    one step), and the reference ``ref_kl``, ``ref_cov_err`` of ``reference_steps``-step
    Euler-Maruyama and the prior mismatch ``prior_kl`` :math:`\mathrm{KL}(q(y_1)\,\|\,\mathcal N(0, I))`.
    """
    methods = list(SAMPLERS) if methods is None else list(methods)
    for method in methods:
        nfe(method, 1)  # ValueError naming the method if unknown
    nfes = [int(v) for v in nfes]
    if not nfes or min(nfes) < 1:
        raise ValueError(f"nfes must be positive numbers of network evaluations; got {nfes}")
    oracle = toy.oracle
    m0, c0 = oracle.mean, oracle.cov
    shape = (len(methods), len(nfes))
    out = {"methods": methods, "nfe": torch.tensor(nfes),
           "steps": torch.zeros(shape, dtype=torch.long), "nfe_used": torch.zeros(shape, dtype=torch.long),
           "kl": torch.full(shape, math.nan, dtype=torch.float64),
           "cov_err": torch.full(shape, math.nan, dtype=torch.float64)}
    for i, method in enumerate(methods):
        for j, budget in enumerate(nfes):
            if budget < nfe(method, 1):
                continue
            st = steps_for_nfe(method, budget)
            mu, cov = propagate_moments(oracle, schedule, method, st, params=params)
            out["steps"][i, j], out["nfe_used"][i, j] = st, nfe(method, st)
            out["kl"][i, j] = gaussian_kl(m0, c0, mu, cov)
            out["cov_err"][i, j] = covariance_error(cov, c0, toy.prior)
    mu, cov = propagate_moments(oracle, schedule, "em", reference_steps, params=params)
    out["ref_kl"] = gaussian_kl(m0, c0, mu, cov)
    out["ref_cov_err"] = covariance_error(cov, c0, toy.prior)
    out["prior_kl"] = prior_mismatch(oracle, schedule, params)
    return out


def marginal_moments(oracle: GaussianOracle, gamma: Tensor) -> tuple[Tensor, Tensor]:
    r"""Mean and covariance of :math:`q(y_t)` at one noise state ``gamma [D]``."""
    alpha, sigma = alpha_sigma(torch.as_tensor(gamma, dtype=torch.float64).reshape(-1))
    return alpha * oracle.mean, alpha[:, None] * oracle.cov * alpha[None, :] + torch.diag(sigma ** 2)


def prior_mismatch(oracle: GaussianOracle, schedule: Schedule, params=None) -> float:
    r""":math:`\mathrm{KL}(q(y_1)\,\|\,\mathcal N(0, I))` in nats: what the diffusion leaves of the data
    at t = 1.  A probability-flow sampler keeps exactly this much KL in the limit of many
    steps (an invertible map preserves KL); the reverse SDE contracts it."""
    g1 = _as_state(schedule, 1.0, params).gamma[0]
    m, c = marginal_moments(oracle, g1)
    d = oracle.dim
    return gaussian_kl(m, c, torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64))


def elbo_gap(oracle: GaussianOracle, schedule: Schedule, params=None) -> dict[str, float]:
    r"""Closed-form :math:`\mathbb E[\text{ELBO}] - \mathbb E[-\log q(y_0)]` for the exact denoiser
    and :func:`gud.likelihood.elbo` with ``decoder="gaussian"``:

    .. math::
       \mathrm{KL}(q(y_1)\,\|\,\mathcal N(0,I))
       + \mathbb E_{z_0}\,\mathrm{KL}\big(q(y_0\mid z_0)\,\|\,\mathcal N(z_0/\alpha_0, e^{\gamma_0})\big),
       \qquad \mathbb E_{z_0}\,\mathrm{KL}(\dots) = \tfrac12\log\det(I + K^{-1}e^{\gamma_0}).

    With the exact denoiser the diffusion term is the KL between the path measures given
    :math:`y_0` and unconditioned, which telescopes to the two end terms.  Returns
    ``{"prior": ..., "decoder": ..., "total": ...}`` in nats per example.
    """
    prior = prior_mismatch(oracle, schedule, params)
    g0 = _as_state(schedule, 0.0, params).gamma[0]
    k = oracle.cov
    logdet = lambda m: 2 * torch.log(torch.diagonal(torch.linalg.cholesky(m))).sum()  # noqa: E731
    dec = 0.5 * float(logdet(k + torch.diag(torch.exp(g0))) - logdet(k))
    return {"prior": prior, "decoder": dec, "total": prior + dec}


def _simpson_nodes(n_grid: int, breaks=None, inset: float = 1e-12) -> tuple[Tensor, Tensor]:
    """Nodes ``[T]`` and weights ``[T]`` of composite Simpson's rule on [0, 1]: one uniform rule on
    ``n_grid`` points (made odd), or, with ``breaks``, one rule per piece between the sorted
    break times (an even number of intervals, at least 2, in proportion to the piece's length),
    its end points moved ``inset`` inside the piece so that a jump of the integrand at a break
    is evaluated from the correct side."""
    b = torch.as_tensor([] if breaks is None else breaks, dtype=torch.float64).reshape(-1)
    b = b[(b > 0) & (b < 1)]
    edges = torch.unique(torch.cat([torch.tensor([0.0, 1.0], dtype=torch.float64), b]))  # sorted
    edges = edges[torch.cat([torch.tensor([True]), edges[1:] - edges[:-1] > 4 * inset])]
    edges[-1] = 1.0
    single = len(edges) == 2
    nodes, weights = [], []
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
        m = max(2, 2 * math.ceil(0.5 * (n_grid - 1) * (hi - lo)))  # even number of intervals
        a, c = (lo, hi) if single else (lo + inset, hi - inset)
        t = torch.linspace(a, c, m + 1, dtype=torch.float64)
        w = torch.ones(m + 1, dtype=torch.float64)
        w[1:-1:2], w[2:-1:2] = 4.0, 2.0
        nodes.append(t)
        weights.append(w * (c - a) / (3 * m))
    return torch.cat(nodes), torch.cat(weights)


def schedule_kinks(schedule: Schedule, params=None, n_fine: int = 20001) -> Tensor:
    r"""Times ``[K]`` in (0, 1) where a piecewise-linear schedule's :math:`\gamma_i'(t)` jumps (the
    kinks of a clipped schedule: where a component starts and stops moving), sorted.

    Found on ``n_fine`` uniform times: in every interval where some component's rate changes, the
    kink is where the lines through its two end points (with the rates on either side) meet,
    exact for a piecewise-linear :math:`\gamma_i` with at most one kink per component and
    interval."""
    t = torch.linspace(0.0, 1.0, n_fine, dtype=torch.float64)
    st = _as_state(schedule, t, params)
    g, r = st.gamma, st.gamma_dot  # [T, D]
    scale = r.abs().amax().clamp_min(1e-300)
    k, i = torch.nonzero((r[1:] - r[:-1]).abs() > 1e-9 * scale, as_tuple=True)  # interval, component
    t0, t1 = t[k], t[k + 1]
    r0, r1 = r[k, i], r[k + 1, i]
    out = (g[k + 1, i] - g[k, i] - r1 * t1 + r0 * t0) / (r0 - r1)
    return torch.unique(out.clamp(0.0, 1.0))


def gaussian_entropy(oracle: GaussianOracle) -> float:
    r""":math:`\mathbb E[-\log q(y_0)] = \tfrac12\log\det(2\pi e K)` in nats."""
    d = oracle.dim
    chol = torch.linalg.cholesky(oracle.cov)
    return float(torch.log(torch.diagonal(chol)).sum() + 0.5 * d * math.log(2 * math.pi * math.e))


def expected_elbo(oracle: GaussianOracle, schedule: Schedule, *, model: GaussianOracle | None = None,
                  params=None, n_grid: int = 4001, breaks=None) -> dict[str, float]:
    r"""The ELBO of :func:`gud.likelihood.elbo` (``decoder="gaussian"``, whitened space, no
    log-determinant) averaged *exactly* over :math:`y_0 \sim q` and :math:`\varepsilon`,
    with the time integral by Simpson's rule on ``n_grid`` points.

    ``breaks``: times in (0, 1) where :math:`\gamma_i'(t)` jumps (a clipped schedule's kinks,
    :func:`schedule_kinks`); Simpson's rule is then applied on each piece between them (about
    ``n_grid`` points in all, each piece's end points taken just inside it), which keeps its
    fourth-order accuracy; across a jump a single rule is only first order.

    ``model`` is the denoiser (default: ``oracle``, exact); any :class:`GaussianOracle` is
    affine in :math:`y_t`, :math:`\hat\varepsilon = E y_t + e`, so
    :math:`\mathbb E\|\varepsilon-\hat\varepsilon\|^2_i = [(I-ES)(I-ES)^\top + EAKAE^\top]_{ii}
    + (EAm + e)_i^2`.  Returns the three terms and their ``total`` in nats per example.
    """
    model = oracle if model is None else model
    k, m = oracle.cov, oracle.mean
    d = oracle.dim
    g1 = _as_state(schedule, 1.0, params).gamma[0]
    a1, s1 = alpha_sigma(g1)
    prior = 0.5 * float((s1 ** 2 + a1 ** 2 * (k.diagonal() + m ** 2) - 1 - torch.log(s1 ** 2)).sum())
    t, w = _simpson_nodes(n_grid, breaks)
    st = _as_state(schedule, t, params)
    alpha, sigma = alpha_sigma(st.gamma)  # [T, D]
    ck = alpha[:, :, None] * model.cov * alpha[:, None, :] + torch.diag_embed(sigma ** 2)
    e_mat = sigma[:, :, None] * torch.cholesky_inverse(torch.linalg.cholesky(ck))  # [T, D, D]
    e_vec = -(e_mat @ (alpha * model.mean)[..., None])[..., 0]
    eye = torch.eye(d, dtype=torch.float64)
    r = eye - e_mat * sigma[:, None, :]  # I - E S
    ea = e_mat * alpha[:, None, :]  # E A
    err = (r ** 2).sum(-1) + ((ea @ k) * ea).sum(-1) + ((ea @ m) + e_vec) ** 2  # [T, D]
    f = 0.5 * (st.gamma_dot * err).sum(-1)  # [T]
    diffusion = float((w * f).sum())
    g0 = _as_state(schedule, 0.0, params).gamma[0]
    recon = 0.5 * float((math.log(2 * math.pi) + g0 + 1).sum())
    return {"prior": prior, "diffusion": diffusion, "reconstruction": recon,
            "total": prior + diffusion + recon}


class TrajectoryRecorder:
    """A ``callback`` for :func:`gud.samplers.sample` that keeps, before every step, the time
    ``t``, the state ``y_t`` and the denoiser's clean prediction :math:`\\hat y_0` (copies, on
    the CPU, float64): ``times [S]``, ``states [S, B, D]``, ``denoised [S, B, D]``."""

    def __init__(self):
        self._t: list[float] = []
        self._y: list[Tensor] = []
        self._y0: list[Tensor] = []

    def __call__(self, info: dict) -> None:
        self._t.append(float(info["t"]))
        self._y.append(info["y"].detach().to("cpu", torch.float64).clone())
        self._y0.append(info["denoised"].detach().to("cpu", torch.float64).clone())

    @property
    def times(self) -> Tensor:
        return torch.tensor(self._t, dtype=torch.float64)

    @property
    def states(self) -> Tensor:
        return torch.stack(self._y)

    @property
    def denoised(self) -> Tensor:
        return torch.stack(self._y0)
