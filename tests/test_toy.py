"""Tests of gud.gaussian: the exact Gaussian toy (covariances, KL, decision times, exact sampler
moments against the real samplers, error against network evaluations, and the ELBO gap against
quadrature and Monte Carlo)."""

import math

import pytest
import torch

from gud import gaussian as T
from gud.likelihood import elbo
from gud.oracle import gaussian_nll
from gud.samplers import SAMPLERS, nfe, sample

D = 6


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def toy(whitened=True, length=2.0):
    return T.make_toy(D, "ou", length, 0.25, whitened=whitened)


def test_covariance_and_ou_markov_property():
    for kernel in ("ou", "se"):
        k = T.stationary_covariance(8, kernel, 2.0, 0.5)
        assert torch.allclose(k, k.T) and torch.allclose(k.diagonal(), torch.full((8,), 0.5, dtype=k.dtype), atol=1e-6)
        assert torch.linalg.eigvalsh(k).min() > 0
    k = T.stationary_covariance(8, "ou", 2.0, 0.5)
    past = k[:5, :5]
    cond = k[5, 5] - k[5, :5] @ torch.linalg.solve(past, k[:5, 5])
    assert math.isclose(float(cond), 0.5 * (1 - math.exp(-2 / 2.0)), rel_tol=1e-10)
    with pytest.raises(ValueError):
        T.stationary_covariance(4, "matern")


def test_gaussian_kl_matches_torch():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=g, dtype=torch.float64)
    b = torch.randn(4, 4, generator=g, dtype=torch.float64)
    c0, c1 = a @ a.T + torch.eye(4, dtype=torch.float64), b @ b.T + torch.eye(4, dtype=torch.float64)
    m0, m1 = torch.randn(4, generator=g, dtype=torch.float64), torch.randn(4, generator=g, dtype=torch.float64)
    ref = torch.distributions.kl_divergence(torch.distributions.MultivariateNormal(m0, c0),
                                            torch.distributions.MultivariateNormal(m1, c1))
    assert math.isclose(T.gaussian_kl(m0, c0, m1, c1), float(ref), rel_tol=1e-10)
    assert abs(T.gaussian_kl(m0, c0, m0, c0)) < 1e-12
    assert T.gaussian_kl(m0, c0, m1, torch.zeros(4, 4, dtype=torch.float64)) == math.inf  # collapsed sampler


def test_empirical_kl_floor():
    k = T.stationary_covariance(D, "ou", 2.0, 1.0)
    n = 4000
    kls = []
    for seed in range(8):
        x = torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) @ torch.linalg.cholesky(k).T
        kls.append(T.empirical_kl(torch.zeros(D, dtype=torch.float64), k, x))
    floor = T.empirical_kl_floor(D, n)
    assert 0.6 * floor < sum(kls) / len(kls) < 1.5 * floor


def test_posterior_and_conditional_variance_agree():
    tt = toy()
    g = tt.schedule(1.0).gamma(torch.tensor([0.2, 0.6], dtype=torch.float64))
    post = T.posterior_cov(tt.oracle.cov, g)
    all_obs = torch.ones(D, dtype=torch.bool)
    for k in range(D):
        assert torch.allclose(T.conditional_variance(tt.oracle.cov, g, k, all_obs), post[:, k, k], atol=1e-12)
    none = torch.zeros(D, dtype=torch.bool)
    assert torch.allclose(T.conditional_variance(tt.oracle.cov, g, 2, none), tt.oracle.cov[2, 2].expand(2))


def test_decision_times_order():
    tt = toy()
    tau0 = T.decision_times(tt.oracle.cov, tt.schedule(0.0))
    assert float(tau0.max() - tau0.min()) < 0.05  # a = 0: simultaneous
    tau = T.decision_times(tt.oracle.cov, tt.schedule(8.0))
    assert bool((tau[1:] < tau[:-1]).all())  # large a: label 0 first (decided at larger t)
    # same SNR paths, same decision times for the unwhitened prior
    tu = toy(whitened=False)
    assert torch.allclose(T.decision_times(tu.oracle.cov, tu.schedule(1.0)),
                          T.decision_times(tt.oracle.cov, tt.schedule(1.0)), atol=1e-9)


@pytest.mark.parametrize("method", list(SAMPLERS))
def test_propagated_moments_match_the_sampler(method):
    tt = toy()
    sch = tt.schedule(1.0)
    mu, cov = T.propagate_moments(tt.oracle, sch, method, 8)
    n = 20000
    ys = sample(tt.oracle, sch, n, method=method, steps=8, generator=torch.Generator().manual_seed(1),
                dtype=torch.float64)
    assert T.empirical_kl(mu, cov, ys) < 3 * T.empirical_kl_floor(D, n)


@pytest.mark.parametrize("method", ["em", "heun", "ddim", "ancestral"])
def test_moments_by_linearity_equal_the_mirrored_propagation(method):
    """Two exact routes to the output law: mirroring the updates (propagate_moments) and running
    the sampler itself on unit inputs and unit noises (sampler_moments)."""
    tt = toy(whitened=False)
    sch = tt.schedule(2.0)
    for denoise_final in (True, False):
        mu1, c1 = T.propagate_moments(tt.oracle, sch, method, 7, denoise_final=denoise_final)
        mu2, c2 = T.sampler_moments(tt.oracle, sch, method, 7, denoise_final=denoise_final)
        torch.testing.assert_close(mu1, mu2, rtol=0, atol=1e-12)
        torch.testing.assert_close(c1, c2, rtol=0, atol=1e-12)


def test_sampler_error_vs_nfe():
    tt = toy(whitened=False)
    sch = tt.schedule(1.0)
    nfes = (2, 6, 12, 48)
    res = T.sampler_error_vs_nfe(tt, sch, nfes=nfes)
    m, n = len(SAMPLERS), len(nfes)
    assert res["methods"] == list(SAMPLERS) and res["nfe"].tolist() == list(nfes)
    for key in ("steps", "nfe_used", "kl", "cov_err"):
        assert res[key].shape == (m, n)
    for i, method in enumerate(res["methods"]):
        for j, budget in enumerate(nfes):
            if budget < nfe(method, 1):
                assert math.isnan(res["kl"][i, j]) and res["steps"][i, j] == 0
            else:
                assert res["nfe_used"][i, j] <= budget and res["nfe_used"][i, j] == nfe(method, int(res["steps"][i, j]))
        assert res["kl"][i, -1] < res["kl"][i, 1]  # more evaluations, smaller error
    assert 0 <= res["ref_kl"] < 0.01 and 0 <= res["ref_cov_err"] < 0.05 and res["prior_kl"] > 0
    best = {mm: float(res["kl"][i, -1]) for i, mm in enumerate(res["methods"])}
    # probability-flow samplers tend to the prior mismatch, reverse-SDE samplers to zero
    prior = res["prior_kl"]
    assert abs(best["dpmpp_3m"] - prior) < abs(best["ddim"] - prior) / 5
    assert best["dpmpp_3m_sde"] < best["ancestral"] / 100 and best["dpmpp_3m_sde"] < 0.1 * prior


def test_ode_limit_is_the_prior_mismatch_and_sde_contracts():
    tt = toy(whitened=False)
    sch = tt.schedule(0.0)
    g0 = sch.gamma(torch.zeros(1, dtype=torch.float64))[0]
    m0, c0 = T.marginal_moments(tt.oracle, g0)
    mismatch = T.prior_mismatch(tt.oracle, sch)
    mu, cov = T.propagate_moments(tt.oracle, sch, "heun", 400, denoise_final=False)
    assert math.isclose(T.gaussian_kl(m0, c0, mu, cov), mismatch, rel_tol=1e-3)
    mu, cov = T.propagate_moments(tt.oracle, sch, "em", 400, denoise_final=False)
    assert T.gaussian_kl(m0, c0, mu, cov) < 0.1 * mismatch
    # starting from q(y1) itself removes the mismatch
    g1 = sch.gamma(torch.ones(1, dtype=torch.float64))[0]
    mu, cov = T.propagate_moments(tt.oracle, sch, "heun", 400, init=T.marginal_moments(tt.oracle, g1),
                                  denoise_final=False)
    assert T.gaussian_kl(m0, c0, mu, cov) < 1e-3 * mismatch


@pytest.mark.parametrize("whitened", [True, False])
@pytest.mark.parametrize("a", [0.0, 3.0])
def test_elbo_gap_closed_form_equals_quadrature(whitened, a):
    tt = toy(whitened)
    sch = tt.schedule(a)
    gap = T.elbo_gap(tt.oracle, sch)
    quad = T.expected_elbo(tt.oracle, sch, n_grid=4001)["total"] - T.gaussian_entropy(tt.oracle)
    assert gap["prior"] >= 0 and gap["decoder"] >= 0
    assert abs(quad - gap["total"]) < 1e-7
    wrong = toy(whitened, length=1.0).oracle
    assert T.expected_elbo(tt.oracle, sch, model=wrong, n_grid=4001)["total"] > quad + T.gaussian_entropy(tt.oracle)


def test_monte_carlo_elbo_matches_exact_nll():
    tt = toy(whitened=False)
    sch = tt.schedule(1.0)
    n = 4000
    x = torch.randn(n, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64) @ torch.linalg.cholesky(tt.cov_x).T
    e = elbo(tt.oracle, tt.prior.encode(x), sch, generator=torch.Generator().manual_seed(1), n_time_samples=8,
             decoder="gaussian", prior=tt.prior)
    diff = e.total - gaussian_nll(x, torch.zeros(D, dtype=torch.float64), tt.cov_x)
    se = float(diff.std() / math.sqrt(n))
    assert abs(float(diff.mean()) - T.elbo_gap(tt.oracle, sch)["total"]) < 4 * se


def test_trajectory_recorder():
    tt = toy()
    sch = tt.schedule(2.0)
    rec = T.TrajectoryRecorder()
    out = sample(tt.oracle, sch, 3, method="ddim", steps=20, generator=torch.Generator().manual_seed(0),
                 dtype=torch.float64, callback=rec)
    assert rec.times.shape == (20,) and rec.states.shape == (20, 3, D)
    assert float(rec.times[0]) == 1.0 and abs(float(rec.times[-1]) - 0.05) < 1e-12
    y0hat = rec.denoised
    assert y0hat.shape == (20, 3, D)
    for k in (0, 7, 19):  # the recorded prediction is the oracle's at the recorded state
        g = sch.gamma(torch.full((3,), float(rec.times[k]), dtype=torch.float64))
        a, s = torch.sigmoid(-g).sqrt(), torch.sigmoid(g).sqrt()
        torch.testing.assert_close(y0hat[k], (rec.states[k] - s * tt.oracle(rec.states[k], g)) / a)
    assert (y0hat[-1] - out).abs().max() < (y0hat[0] - out).abs().max()  # it converges to the sample
