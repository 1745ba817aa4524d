"""The toy chapter: the maths of gud.gaussian (covariances, KL, decision times, exact sampler
moments against the real samplers, error against network evaluations, the ELBO gap against
quadrature and Monte Carlo), and experiment 'toy' at a micro configuration through the runner."""

import math

import numpy as np
import pytest
import torch

from gud import gaussian as T
from gud.labels import family
from gud.likelihood import elbo
from gud.oracle import gaussian_nll
from gud.profiles import experiment_config
from gud.results import ResultsStore
from gud.runner import BudgetExhausted, run
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


def test_piecewise_quadrature_at_the_kinks_of_a_clipped_schedule():
    """gamma_i' jumps where a clipped component starts and stops moving: one Simpson rule across
    the jumps is only first order, one rule per piece between them is exact to many digits."""
    tt = toy(whitened=False)
    sch = family(tt.labels, tt.prior, "process-clipped", a=2.0)
    kinks = T.schedule_kinks(sch)
    assert len(kinks) > 0 and bool(((kinks > 0) & (kinks < 1)).all())
    g = sch.gamma(kinks)  # at every kink some component sits exactly at a clip bound
    at_bound = torch.minimum((g + 7.0).abs(), (g - 3.0).abs()).amin(-1)
    assert float(at_bound.max()) < 1e-9
    assert len(T.schedule_kinks(tt.schedule(2.0))) == 0  # the unclipped schedule has none
    ent = T.gaussian_entropy(tt.oracle)
    gap = T.elbo_gap(tt.oracle, sch)["total"]
    plain = T.expected_elbo(tt.oracle, sch, n_grid=2001)["total"] - ent
    piecewise = T.expected_elbo(tt.oracle, sch, n_grid=2001, breaks=kinks)["total"] - ent
    assert abs(piecewise - gap) < 1e-7 and 100 * abs(piecewise - gap) < abs(plain - gap)


# ----------------------------------------------------------------------------- experiment 'toy'

MICRO = dict(dim=6, softness_grid={"max": 8.0, "num": 5}, time_grid=401, softness=[0.0, 2.0, 8.0],
             show_softness=[0.0, 8.0], path_times=21, trajectory={"method": "em", "steps": 20, "seed": 1},
             sampler_steps=[5, 20, 200], empirical={"softness": 2.0, "n_samples": 400, "seed": 2, "steps": [5, 20]},
             nfe={"softness": [1.0], "budgets": [4, 10, 30], "reference_steps": 200, "table": [10, 30]},
             elbo={"n_examples": 300, "n_time_samples": 2, "seed": 3, "quadrature_points": 1001, "wrong_length": 1.0})


def micro_config():
    cfg = experiment_config("toy", "ci")
    cfg.update(MICRO)
    return cfg


def run_micro(tmp, **kw):
    return run("toy", "ci", config=micro_config(), store=ResultsStore(tmp / "results"), runs_root=tmp / "runs",
               log=lambda s: None, **kw)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    return run_micro(tmp_path_factory.mktemp("toy"))


def test_micro_structure(micro):
    a, m, cfg = micro.arrays, micro.metrics, micro.config
    grid = a["softness_grid"]
    assert grid.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0] and m["middle_component"] == 3
    for conv in cfg["conventions"]:
        tau = a[f"structure/{conv}/decision_times"]
        assert tau.shape == (5, 6) and float(np.ptp(tau[0])) < 0.05  # a = 0: (nearly) simultaneous
        assert (np.diff(tau[-1]) < 0).all()  # large a: left to right
        np.testing.assert_allclose(a[f"structure/{conv}/explained_all"], 0.5, atol=2e-3)  # by definition of tau
        assert abs(a[f"structure/{conv}/explained_past"][-1] - m["ar_limit_explained_by_past"]) < 0.005
    assert math.isclose(m["ar_limit_explained_by_past"], math.exp(-1), rel_tol=1e-9)  # rho^2, Markov
    # the autoregressive limit: the future is pure noise in the paper's convention, never quite when clipped
    assert a["structure/snr/explained_future"][-1] < 1e-3 < 0.01 < a["structure/process-clipped/explained_future"][-1]
    lsnr = a["paths/process-clipped/a8/log_snr"]  # clipped: every pixel from log SNR -3 (t = 1) to 7 (t = 0)
    np.testing.assert_allclose(lsnr[0], 7.0, atol=1e-9)
    np.testing.assert_allclose(lsnr[-1], -3.0, atol=1e-9)


def test_micro_trajectory_is_the_decoded_clean_prediction(micro):
    """The figure's x0hat is prior.decode(y0hat) in pixel values, not the whitened y0hat."""
    cfg = micro.config
    toy_ = T.make_toy(cfg["dim"], cfg["kernel"], cfg["length"], cfg["variance"], whitened=True)
    for a in cfg["show_softness"]:
        rec = T.TrajectoryRecorder()
        sch = family(toy_.labels, toy_.prior, cfg["convention"], a=a, gamma_denoise=-7.0, gamma_noise=3.0)
        sample(toy_.oracle, sch, 1, method="em", steps=20, generator=torch.Generator().manual_seed(1),
               dtype=torch.float64, callback=rec)
        x0hat = micro.arrays[f"trajectories/a{a:g}/x0hat"]
        assert x0hat.shape == (20, cfg["dim"])
        np.testing.assert_allclose(x0hat, 0.5 * rec.denoised[:, 0].numpy(), rtol=0, atol=1e-12)  # s_i = sqrt(v)
    x0hat, final = micro.arrays["trajectories/a0/x0hat"], micro.arrays["trajectories/a0/sample"]
    assert np.abs(x0hat[-1] - final).max() < 0.1 < np.abs(final).max()  # the last prediction is the sample


def test_micro_sampling_error(micro):
    a, m, cfg = micro.arrays, micro.metrics, micro.config
    kl, mismatch = a["steps/kl"], a["steps/mismatch"]  # [prior, a, sampler, steps], [prior, a]
    assert kl.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(mismatch, np.broadcast_to(mismatch[:, :1], mismatch.shape), rtol=1e-9)  # clipped: the same end point for every a
    heun, em = cfg["samplers"].index("heun"), cfg["samplers"].index("em")
    # a = 0, 200 steps: the ODE keeps exactly the prior mismatch, the SDE contracts it
    np.testing.assert_allclose(kl[:, 0, heun, -1], mismatch[:, 0], rtol=0.01)
    assert (kl[:, 0, em, -1] < 0.1 * mismatch[:, 0]).all()
    # Monte Carlo: the samples follow the propagated law up to the statistical floor
    assert (a["empirical/kl_vs_propagated"] < 3 * m["empirical_floor"]).all()
    assert np.allclose(a["empirical/kl_exact"], kl[0, cfg["softness"].index(2.0), :, :2], rtol=1e-12)


def test_micro_sampler_error_against_nfe(micro):
    a, m = micro.arrays, micro.metrics
    assert m["nfe_methods"] == list(SAMPLERS)
    for prior in ("whitened", "unwhitened"):
        kl, err = a[f"nfe/{prior}/a1/kl"], a[f"nfe/{prior}/a1/cov_err"]
        assert kl.shape == err.shape == (len(SAMPLERS), 3)
        assert (a[f"nfe/{prior}/a1/nfe_used"] <= np.array([4, 10, 30])).all()
        assert (kl[:, 2] < kl[:, 1]).all() and err[:, 2].min() < err[:, 1].min()  # 30 evaluations beat 10
        i = m["nfe_methods"].index
        assert kl[i("dpmpp_3m_sde"), 2] < kl[i("ancestral"), 2] / 100
    refs = m["nfe_reference"]
    assert len(refs) == 2 and all(0 < r["kl"] < 1e-3 and 0 < r["cov_err"] < 0.02 and r["prior_kl"] > 0 for r in refs)
    rows = m["sampler_table"]
    assert len(rows) == 2 * (len(SAMPLERS) + 1) and set(rows[0]["kl"]) == {"10", "30"}


def test_micro_elbo(micro):
    a, m = micro.arrays, micro.metrics
    rows = m["elbo_rows"]
    assert len(rows) == 2 * 3 and a["elbo/nll"].shape == (300,)
    for r in rows:
        assert abs(r["gap_quadrature"] - r["gap_closed_form"]) < 1e-7  # piecewise Simpson at the kinks
        assert abs(r["mc_elbo_minus_nll"] - r["gap_closed_form"]) < 4 * r["mc_stderr"]
        assert abs(r["wrong_minus_exact_mc"] - r["wrong_minus_exact_quadrature"]) < 4 * r["wrong_minus_exact_mc_stderr"]
        # the wrong denoiser is exact for another Gaussian: its excess is about that law's KL, for every a
        assert abs(r["wrong_minus_exact_quadrature"] - m["wrong_kl_nats"]) < 0.05 * m["wrong_kl_nats"]
    for prior in ("whitened", "unwhitened"):
        gaps = [(r["gap_closed_form"], r["wrong_minus_exact_quadrature"]) for r in rows if r["prior"] == prior]
        np.testing.assert_allclose(gaps, [gaps[0]] * len(gaps), rtol=1e-6)  # clipped: independent of a
    for term in ("prior_kl", "decoder"):  # the end terms: flat when clipped, moving with a in the paper's form
        v = a[f"end_terms/process-clipped/{term}"]
        np.testing.assert_allclose(v, np.broadcast_to(v[:, :1], v.shape), rtol=1e-9)
    assert (np.diff(a["end_terms/snr/prior_kl"][0]) < 0).all()
    assert "float64 linear algebra" in m["compute_description"] and m["data_description"].startswith("a stationary")


def test_micro_resumes_to_the_same_result(micro, tmp_path):
    with pytest.raises(BudgetExhausted):
        run_micro(tmp_path, budget_s=0.0)
    assert ResultsStore(tmp_path / "results").load("toy", "ci", micro_config()) is None
    first = run_micro(tmp_path)  # from scratch
    parts = sorted((p for p in (tmp_path / "runs").rglob("*.json") if p.stem.startswith(("nfe-", "elbo"))))
    assert len(parts) == 3
    for p in parts[:2]:  # an interrupted run: some parts done, some not
        p.unlink()
    again = run_micro(tmp_path, recompute=True)
    for res in (first, again):
        assert set(res.arrays) == set(micro.arrays)
        for k, v in micro.arrays.items():
            np.testing.assert_array_equal(res.arrays[k], v, err_msg=k)
    assert again.metrics["elbo_rows"] == micro.metrics["elbo_rows"]
