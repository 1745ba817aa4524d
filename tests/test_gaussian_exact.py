"""Exact checks on Gaussian data, where the optimal denoiser is known in closed form:
the oracle, every sampler, conditional sampling and the ELBO."""
import math

import pytest
import torch

from gud.bases import PCABasis, PixelBasis
from gud.diffusion import EpsLoss, add_noise
from gud.likelihood import bits_per_dim, elbo
from gud.oracle import GaussianOracle, gaussian_nll
from gud.prior import Prior
from gud.samplers import ddim, euler_maruyama, heun, sample, time_grid
from gud.schedules import LinearSchedule, SoftConditioningSchedule

D = 6
F64 = torch.float64


def _gaussian(seed=0, d=D):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=F64)
    cov = a @ a.T / d + 0.1 * torch.eye(d, dtype=F64)
    mean = 0.3 * torch.randn(d, generator=g, dtype=F64)
    return mean, cov


def _setup(whitened=True, basis="pixel", seed=0):
    mean, cov = _gaussian(seed)
    x = mean + torch.randn(20000, D, generator=torch.Generator().manual_seed(seed + 1), dtype=F64) @ torch.linalg.cholesky(cov).T
    b = PixelBasis((1, 2, 3)) if basis == "pixel" else PCABasis.fit(x, (1, 2, 3))
    prior = Prior.fit(b, x, whitened=whitened)
    return mean, cov, x, prior, GaussianOracle.from_data(mean, cov, prior)


def test_oracle_is_the_conditional_mean_of_eps():
    mean, cov, x, prior, oracle = _setup()
    y0 = prior.encode(x)
    gamma = torch.linspace(-2, 2, D, dtype=F64).expand(len(x), D)
    g = torch.Generator().manual_seed(3)
    y_t, eps = add_noise(y0, gamma, g)
    # E[eps | y_t] is affine in y_t: least squares recovers it from samples
    feats = torch.cat([y_t, torch.ones(len(x), 1, dtype=F64)], 1)
    coef = torch.linalg.lstsq(feats, eps).solution
    rms = (feats @ coef - oracle(y_t, gamma)).pow(2).mean().sqrt()
    assert rms < 0.03  # the regression's own sampling error is about 0.01
    # and it minimises the epsilon-matching loss
    loss = EpsLoss(SoftConditioningSchedule(torch.arange(D, dtype=F64), prior.log_var, a=0.5))
    shrunk = lambda yt, gm: 0.9 * oracle(yt, gm)  # noqa: E731
    l_opt = loss(oracle, y0, torch.Generator().manual_seed(4)).mean()
    l_bad = loss(shrunk, y0, torch.Generator().manual_seed(4)).mean()
    assert l_opt < l_bad


def test_oracle_batched_and_shared_noise_states_agree():
    *_, oracle = _setup()
    y = torch.randn(5, D, dtype=F64)
    g_same = torch.full((5, D), 0.3, dtype=F64)
    g_diff = g_same.clone()
    g_diff[0, 0] += 1e-13  # forces the per-example path
    assert torch.allclose(oracle(y, g_same), oracle(y, g_diff), atol=1e-10)


def _affine_map(sampler, oracle, schedule, steps, **kw):
    """A deterministic sampler with the Gaussian oracle is affine, y0 = M y1 + c: recover M, c exactly."""
    y1 = torch.cat([torch.zeros(1, D, dtype=F64), torch.eye(D, dtype=F64)])
    out = sampler(oracle, schedule, y1, time_grid(steps), **kw)
    c = out[0]
    return (out[1:] - c).T, c


@pytest.mark.parametrize("sampler", [ddim, heun])
def test_deterministic_samplers_converge_to_the_data_covariance(sampler):
    mean, cov, x, prior, oracle = _setup(whitened=True)
    # gamma_noise = 12: q(y_1) is N(0, I) to within e^-12, so only discretisation error is left
    sched = SoftConditioningSchedule(-torch.log(prior.var), prior.log_var, a=1.0, gamma_noise=12.0)
    target = oracle.cov
    errs = []
    for steps in (4, 16, 64, 256):
        m, c = _affine_map(sampler, oracle, sched, steps)
        errs.append(float((m @ m.T - target).abs().max()))
        if steps == 256:
            assert torch.allclose(c, oracle.mean, atol=1e-3)
    assert errs[-1] < 0.03, errs
    assert errs == sorted(errs, reverse=True), errs  # error falls as steps grow
    assert errs[-1] < errs[-2] / 2.5 or errs[-1] < 2e-3  # at least first order, down to a floor


@pytest.mark.parametrize("method", ["em", "ancestral"])
def test_stochastic_samplers_reproduce_the_data_covariance(method):
    mean, cov, x, prior, oracle = _setup(whitened=False)
    sched = SoftConditioningSchedule(-torch.log(prior.var), prior.log_var, a=1.0, gamma_noise=5.0)
    n = 40000
    errs = []
    for steps in (5, 400):
        y = sample(oracle, sched, n, method=method, steps=steps, dtype=F64,
                   generator=torch.Generator().manual_seed(7))
        xs = prior.decode(y)
        errs.append(float((torch.cov(xs.T) - cov).abs().max() / cov.abs().max()))
        if steps == 400:
            assert torch.allclose(xs.mean(0), mean, atol=0.03)
    assert errs[1] < 0.03, errs  # sampling noise of 40000 draws is about 0.01
    assert errs[0] > errs[1]


def test_conditional_sampling_in_the_autoregressive_limit():
    """Known components with the lowest labels are generated first when a is large; replacement
    conditioning then samples the exact Gaussian conditional of the others."""
    mean, cov, x, prior, oracle = _setup(whitened=True)
    labels = torch.arange(D, dtype=F64)
    sched = SoftConditioningSchedule(labels, prior.log_var, a=4.0, gamma_noise=8.0)
    mask = labels < 2
    y_known = torch.zeros(D, dtype=F64)
    y_known[:2] = torch.tensor([1.0, -0.5], dtype=F64)
    n = 20000
    y = sample(oracle, sched, n, method="ancestral", steps=400, dtype=F64,
               generator=torch.Generator().manual_seed(11), condition=(mask, y_known.expand(n, D)))
    assert torch.equal(y[:, mask], y_known[mask].expand(n, 2))
    k, m = oracle.cov, oracle.mean
    kk, ku = k[mask][:, mask], k[~mask][:, mask]
    cond_mean = m[~mask] + ku @ torch.linalg.solve(kk, y_known[mask] - m[mask])
    cond_cov = k[~mask][:, ~mask] - ku @ torch.linalg.solve(kk, ku.T)
    assert torch.allclose(y[:, ~mask].mean(0), cond_mean, atol=0.05)
    assert torch.allclose(torch.cov(y[:, ~mask].T), cond_cov, atol=0.05)


@pytest.mark.parametrize("a", [0.0, 1.0, 3.0])
def test_elbo_equals_exact_nll_with_the_oracle(a):
    mean, cov, x, prior, oracle = _setup(whitened=True, basis="pca")
    sched = SoftConditioningSchedule(-torch.log(prior.var), prior.log_var, a=a)
    xs = x[:4000]
    y0 = prior.encode(xs)
    res = elbo(oracle, y0, sched, generator=torch.Generator().manual_seed(5), n_time_samples=16,
               decoder="gaussian", prior=prior)
    exact = gaussian_nll(xs, mean, cov)
    gap = res.total - exact  # paired difference: the ELBO is exact in expectation
    assert abs(float(gap.mean())) < 4 * float(gap.std()) / math.sqrt(len(gap)) + 0.01 * D
    # a worse denoiser gives a worse (larger) bound, with common random numbers
    worse = elbo(lambda yt, g: 0.9 * oracle(yt, g), y0, sched, generator=torch.Generator().manual_seed(5),
                 n_time_samples=16, decoder="gaussian", prior=prior)
    assert float((worse.total - res.total).mean()) > 0.05


def test_elbo_terms_and_bits_per_dim():
    mean, cov, x, prior, oracle = _setup(whitened=False)
    sched = LinearSchedule(D, -10, 8)
    y0 = prior.encode(x[:500])
    res = elbo(oracle, y0, sched, generator=torch.Generator().manual_seed(0), decoder="gaussian", prior=prior)
    assert torch.all(res.prior >= 0) and torch.all(res.diffusion >= 0)
    s = res.summary()
    assert s["n_examples"] == 500 and s["bpd_stderr_data"] > 0 and math.isnan(s["bpd_stderr"])  # K = 1
    assert res.replicates.shape == (500, 1)
    assert math.isclose(float(bits_per_dim(torch.tensor(D * math.log(2)), D)), 1.0)
    assert math.isclose(float(bits_per_dim(torch.tensor(0.0, dtype=F64), D, 2 / 255)), math.log2(127.5))


@pytest.mark.parametrize("decoder", ["gaussian", "discretized"])
def test_elbo_stderr_matches_the_spread_over_seeds(decoder):
    """The reported (Monte-Carlo) standard error predicts how much the estimate for the same
    examples moves when only the seed changes: within a factor 1.5."""
    mean, cov, x, prior, oracle = _setup(whitened=True, basis="pca")
    sched = SoftConditioningSchedule(-torch.log(prior.var), prior.log_var, a=1.0)
    xs = x[:300]
    if decoder == "discretized":  # 8-bit data for the discretised decoder
        xs = torch.round((xs.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1
    y0 = prior.encode(xs)
    est, se = [], []
    for seed in range(24):
        s = elbo(oracle, y0, sched, generator=torch.Generator().manual_seed(seed), n_time_samples=4,
                 decoder=decoder, prior=prior, x=xs).summary()
        est.append(s["bpd"])
        se.append(s["bpd_stderr"])
    spread = float(torch.tensor(est).std())
    reported = float(torch.tensor(se).pow(2).mean().sqrt())
    assert 1 / 1.5 < reported / spread < 1.5, (reported, spread)


def test_discretized_decoder_bounds_discrete_data():
    """On 8-bit data the discretised bound is a proper probability: bits/dim of a uniform
    8-bit distribution is 8, and a model of the data can't be much worse than that here."""
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (400, D), generator=g)
    x = (levels.double() / 255) * 2 - 1
    prior = Prior.fit(PixelBasis((1, 2, 3)), x, whitened=True)
    oracle = GaussianOracle(torch.zeros(D, dtype=F64), torch.eye(D, dtype=F64))  # uniform ~ unit-variance Gaussian
    sched = SoftConditioningSchedule(torch.zeros(D, dtype=F64), prior.log_var, a=0.0, gamma_denoise=-10)
    res = elbo(oracle, prior.encode(x), sched, generator=g, decoder="discretized", prior=prior, x=x)
    bpd = float(res.bpd().mean())
    assert 7.9 < bpd < 8.5  # uniform over 256 levels is 8 bits; a Gaussian fit costs a little more
    assert torch.all(res.reconstruction >= 0)


def test_bad_input():
    mean, cov, x, prior, oracle = _setup()
    sched = SoftConditioningSchedule(torch.arange(D, dtype=F64), prior.log_var)
    with pytest.raises(ValueError, match="NaN"):
        elbo(oracle, torch.full((2, D), float("nan"), dtype=F64), sched)
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        elbo(oracle, torch.zeros(2, D + 1, dtype=F64), sched)
    with pytest.raises(ValueError, match="decoder"):
        elbo(oracle, torch.zeros(2, D, dtype=F64), sched, decoder="laplace")
    with pytest.raises(ValueError, match="n_time_samples"):
        elbo(oracle, torch.zeros(2, D, dtype=F64), sched, n_time_samples=0)
    with pytest.raises(ValueError, match="empty"):
        elbo(oracle, torch.zeros(0, D, dtype=F64), sched)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(oracle, sched, 2, method="rk4")
    with pytest.raises(ValueError, match="eta"):
        ddim(oracle, sched, torch.zeros(2, D), time_grid(3), eta=2.0)
    with pytest.raises(ValueError, match="mask"):
        sample(oracle, sched, 2, condition=(torch.ones(D + 1, dtype=torch.bool), torch.zeros(D)))
    with pytest.raises(ValueError, match=r"\[B, D\]"):
        EpsLoss(sched)(oracle, torch.zeros(3, D + 2), torch.Generator())
    assert euler_maruyama is not None
