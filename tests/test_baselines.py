"""The full-covariance Gaussian driven through the same process as a network: the baseline of
every bits/dim gate (:func:`gud.protocol.network_gate`).

* its denoiser is the exact one of the training split's mean and covariance in the prior's
  whitened components (variances raised to the Gaussian model's floor); in the PCA basis the
  components are uncorrelated and it is the Gaussian model itself;
* evaluated like a network, with the same seed, its prior and reconstruction terms are those of
  the Gaussian model image by image, exactly (same draws): the two differ in the diffusion term
  alone, so a paired difference compares the denoisers and nothing else;
* on correlated data it beats the Gaussian model of independent pixels, beyond its error, and
  with its exact expected bound on Gaussian data below the independent model's (closed form);
* per-example factorisations in bounded chunks give the unchunked answer.
"""
import math

import pytest
import torch

from gud import baselines
from gud import pipeline as pl
from gud.data import ImageData
from gud.gaussian import expected_elbo
from gud.oracle import GaussianOracle
from gud.schedules import SoftConditioningSchedule

SHAPE = (1, 4, 4)
D = math.prod(SHAPE)


def _correlated(n: int, seed: int) -> ImageData:
    """8-bit images of a smooth Gaussian field (neighbouring pixels correlate at about 0.8)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.arange(D, dtype=torch.float64)
    r, c = idx // 4, idx % 4
    dist = ((r[:, None] - r[None]) ** 2 + (c[:, None] - c[None]) ** 2).sqrt()
    chol = torch.linalg.cholesky(torch.exp(-dist / 4.0) + 1e-9 * torch.eye(D, dtype=torch.float64))
    x = (0.3 * torch.randn(n, D, generator=g, dtype=torch.float64) @ chol.T).clamp(-1, 1)
    x = torch.round((x + 1) * 127.5) / 127.5 - 1
    return ImageData(x.float(), torch.zeros(n, dtype=torch.long), SHAPE, "synthetic", "test")


def _schedule(setup, a: float = 1.0):
    return SoftConditioningSchedule(torch.linspace(0, 2, D, dtype=torch.float64), setup.prior.log_var, a=a)


@pytest.fixture(scope="module")
def pixel():
    return pl.setup_from_data(_correlated(1500, 0), _correlated(600, 1), "pixel", whitened=True)


def test_full_gaussian_is_the_training_moments_in_whitened_components(pixel):
    full = baselines.full_gaussian_denoiser(pixel)
    x = pixel.train.x.double()
    ref = GaussianOracle.from_data(x.mean(0), torch.cov(x.T), pixel.prior)  # the same moments, mapped
    v = pixel.prior.log_var.exp().double()
    assert not full.diagonal and bool((full.cov.diagonal() >= v * (1 - 1e-12)).all())
    assert torch.allclose(full.mean, ref.mean, atol=1e-12)
    off = ~torch.eye(D, dtype=torch.bool)
    assert torch.allclose(full.cov[off], ref.cov[off], rtol=1e-10, atol=1e-12)
    assert torch.allclose(full.cov.diagonal(), torch.maximum(ref.cov.diagonal(), v), rtol=1e-10)


def test_in_the_pca_basis_it_is_the_gaussian_model():
    s = pl.setup_from_data(_correlated(400, 0), _correlated(50, 1), "pca", whitened=False)
    full, model = baselines.full_gaussian_denoiser(s), baselines.gaussian_denoiser(s)
    assert full.diagonal and torch.equal(full.cov, model.cov) and torch.equal(full.mean, model.mean)


def test_same_end_terms_as_the_gaussian_model_and_a_lower_bound(pixel):
    sched = _schedule(pixel)
    kw = dict(n_time_samples=4, validation=False)
    ev_full = pl.evaluate_at(baselines.full_gaussian_denoiser(pixel), pixel, sched, **kw)
    ev_diag = pl.evaluate_at(baselines.gaussian_denoiser(pixel), pixel, sched, **kw)
    full, diag = ev_full["per_image"], ev_diag["per_image"]  # [4, N]: total, prior, diffusion, reconstruction
    assert (full[1] == diag[1]).all() and (full[3] == diag[3]).all()  # the same end terms, image by image
    d = torch.as_tensor(full[0] - diag[0], dtype=torch.float64)
    se = float(d.std() / math.sqrt(len(d)))
    assert float(d.mean()) < -5 * se  # the correlations are worth bits: beyond five standard errors


def test_its_exact_expected_bound_is_below_the_independent_models():
    """On Gaussian data (exact expectation, no Monte Carlo) the full covariance's denoiser has the
    lower diffusion term, and with it the bound equals the exact NLL plus the end terms."""
    from gud.gaussian import elbo_gap, gaussian_entropy

    g = torch.Generator().manual_seed(3)
    a = torch.randn(D, D, generator=g, dtype=torch.float64)
    k = a @ a.T / D + 0.1 * torch.eye(D, dtype=torch.float64)
    true = GaussianOracle(torch.zeros(D, dtype=torch.float64), k)
    sched = SoftConditioningSchedule(torch.linspace(0, 2, D, dtype=torch.float64), torch.log(k.diagonal()), a=1.0)
    full = expected_elbo(true, sched, n_grid=2001)
    indep = expected_elbo(true, sched, model=GaussianOracle(true.mean, torch.diag(k.diagonal())), n_grid=2001)
    assert full["diffusion"] < indep["diffusion"] - 1e-3
    assert full["total"] == pytest.approx(gaussian_entropy(true) + elbo_gap(true, sched)["total"], abs=1e-6)


def test_chunked_factorisations_match(monkeypatch):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(D, D, generator=g, dtype=torch.float64)
    oracle = GaussianOracle(torch.randn(D, generator=g, dtype=torch.float64), a @ a.T / D + torch.eye(D))
    y = torch.randn(37, D, generator=g, dtype=torch.float64)
    gamma = torch.randn(37, D, generator=g, dtype=torch.float64) * 3
    whole = oracle(y, gamma)
    monkeypatch.setattr(GaussianOracle, "CHUNK_ELEMENTS", 5 * D * D)  # 5 examples at a time, the last 2 alone
    chunked = oracle(y, gamma)
    assert torch.allclose(chunked, whole, rtol=1e-12, atol=1e-12)
    one = torch.stack([oracle(y[i:i + 1], gamma[i:i + 1])[0] for i in range(37)])
    assert torch.allclose(one, whole, rtol=1e-10, atol=1e-12)


def test_expensive_full_gaussians_take_the_first_test_images_and_say_so(pixel):
    """The factorisations are capped by FULL_GAUSSIAN_FLOP (or a configuration's own budget): 8x8
    digits keep every image, 32x32x3 colour with one replicate the first 512 (517 fit; whole
    batches of the bound keep the first seed's draws); a diagonal (PCA) model is never capped.  A capped
    evaluation records ``n_images`` and pairs with the same first images of a full one."""
    from types import SimpleNamespace

    from gud.pipeline import record
    from gud.stats import Evidence

    def fake(d, n_test):
        return SimpleNamespace(prior=SimpleNamespace(dim=d), test=range(n_test))

    dense = GaussianOracle(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.5, 1.0]]))
    diag = GaussianOracle(torch.zeros(2), torch.eye(2))
    assert baselines.full_gaussian_images(fake(64, 10000), dense) is None
    fit = int(baselines.FULL_GAUSSIAN_FLOP // (3072 ** 3 / 3))
    assert fit == 517 and baselines.full_gaussian_images(fake(3072, 2000), dense) == 512  # whole batches
    assert baselines.full_gaussian_images(fake(3072, 2000), dense, n_time_samples=4) == 129
    assert baselines.full_gaussian_images(fake(3072, 120), dense, flop=2e11) == 20  # a micro run's budget
    assert baselines.full_gaussian_images(fake(3072, 2000), diag) is None

    sched = _schedule(pixel)
    full = baselines.full_gaussian_denoiser(pixel)
    part = pl.evaluate_at(full, pixel, sched, n_time_samples=2, validation=False, n_images=100)
    every = pl.evaluate_at(baselines.gaussian_denoiser(pixel), pixel, sched, n_time_samples=2, validation=False)
    assert part["per_image"].shape == (4, 100) and part["n_images"] == 100 and "n_images" not in every
    rows, arrays = [], {}
    record(rows, arrays, {"dataset": "d", "model": "gaussian_full"}, part)
    record(rows, arrays, {"dataset": "d", "model": "gaussian"}, every)
    assert rows[0]["n_images"] == 100
    E = Evidence(rows, arrays)
    d, e = E.bpd_diff(dict(model="gaussian"), dict(model="gaussian_full"))
    want = every["per_image"][0][:100].astype("float64") - part["per_image"][0].astype("float64")
    assert d == pytest.approx(want.mean(), rel=1e-9) and e == pytest.approx(want.std(ddof=1) / 10, rel=1e-9)
    del rows[0]["n_images"]  # an undeclared short row is an error, not a silent subset
    with pytest.raises(ValueError, match="same images"):
        E.bpd_diff(dict(model="gaussian"), dict(model="gaussian_full"))
    with pytest.raises(ValueError, match="n_images"):
        pl.evaluate_at(full, pixel, sched, validation=False, n_images=1)


def test_micro_runs_cap_the_full_gaussian_at_seconds():
    """A micro run (the slice's smoke and its CPU rehearsal) of a 32x32x3 experiment evaluates the
    full-covariance Gaussian on 20 test images per setting; the profiles themselves set no budget."""
    from types import SimpleNamespace

    from gud.profiles import experiment_config
    from gud.runner import MICRO_FULL_GAUSSIAN_FLOP, micro_config

    dense = GaussianOracle(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.5, 1.0]]))
    for exp in ("e1", "e2", "e5"):
        cfg = experiment_config(exp, "gpu")
        assert "full_gaussian_flop" not in cfg
        micro = micro_config(exp, cfg)
        assert micro["full_gaussian_flop"] == MICRO_FULL_GAUSSIAN_FLOP
        fake = SimpleNamespace(prior=SimpleNamespace(dim=3072), test=range(micro["test_limit"]))
        assert baselines.full_gaussian_images(fake, dense, micro["n_time_samples"], micro["full_gaussian_flop"]) == 20


def test_whole_batches_of_a_capped_evaluation_share_the_draws(pixel):
    """Evaluated on the first whole batches, an evaluation gives every image exactly the values it
    gets in the evaluation of the whole split with the same seed (same times, noises and decoder
    draws): the paired difference with the first seed's network keeps its common random numbers."""
    sched = _schedule(pixel)
    model = baselines.gaussian_denoiser(pixel)
    every = pl.evaluate_bpd(model, pixel, sched, n_time_samples=2, batch=64)
    first = pl.evaluate_bpd(model, pixel, sched, n_time_samples=2, batch=64, n_images=128)
    assert first["n_images"] == 128 and (first["per_image"] == every["per_image"][:, :128]).all()
    ragged = pl.evaluate_bpd(model, pixel, sched, n_time_samples=2, batch=64, n_images=100)
    assert not (ragged["per_image"][:, 64:100] == every["per_image"][:, 64:100]).all()  # a part batch: other draws
