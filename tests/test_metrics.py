"""Tests for gud.metrics: two-point statistics, Fréchet distance, feature classifier, sample scorer."""

import math
import time

import numpy as np
import pytest
import torch

from gud.fields import gaussian_random_field_window, grf_covariance
from gud.metrics import (
    FeatureClassifier,
    SampleScorer,
    classifier_frechet_distance,
    column_profile,
    frechet_distance,
    gaussian_frechet_distance,
    local_two_point_by_column,
    one_point_histogram_distance,
    train_feature_classifier,
    two_point_correlation,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- field stats


def test_two_point_white_noise():
    n, h, w = 256, 8, 32
    x = 1.0 + 2.0 * torch.randn(n, h, w, generator=gen(1), dtype=torch.float64)
    c = two_point_correlation(x, max_dx=5)
    assert c.shape == (6,)
    assert abs(float(c[0]) - 4.0) < 4 * 4.0 * math.sqrt(2 / x.numel())
    for dx in range(1, 6):
        n_pairs = n * h * (w - dx)
        assert abs(float(c[dx])) < 4 * 4.0 / math.sqrt(n_pairs)


def test_two_point_grf_matches_exact_covariance():
    super_shape = (64, 256)
    x = gaussian_random_field_window(1024, 16, 32, generator=gen(2), super_shape=super_shape)
    c = two_point_correlation(x, max_dx=4)
    exact = grf_covariance(*super_shape)[0, :5]
    assert torch.allclose(c, exact, atol=0.03), (c, exact)
    assert float(exact[1]) > 0.3  # the test is not trivially about an uncorrelated field


def test_column_profile_and_local_two_point():
    x = torch.randn(128, 4, 10, generator=gen(3), dtype=torch.float64)
    x = x + torch.arange(10, dtype=torch.float64)  # column mean = j
    mean = column_profile(x, "mean")
    assert mean.shape == (10,)
    assert torch.allclose(mean, torch.arange(10, dtype=torch.float64), atol=0.4)
    assert torch.allclose(column_profile(x, "var"), torch.ones(10, dtype=torch.float64), atol=0.3)
    with pytest.raises(ValueError):
        column_profile(x, "median")
    # Column means do not enter the connected covariance: white noise gives ~0.
    cov = local_two_point_by_column(x, dx=2)
    assert cov.shape == (8,) and float(cov.abs().max()) < 0.3
    # Columns copied from their neighbour: Pearson correlation 1.
    y = torch.randn(64, 4, 1, generator=gen(4), dtype=torch.float64).expand(64, 4, 6)
    assert torch.allclose(local_two_point_by_column(y, 1, normalize=True), torch.ones(5, dtype=torch.float64))


def test_one_point_histogram_distance():
    ref = torch.randn(200, 8, 8, generator=gen(5))
    same = torch.randn(200, 8, 32, generator=gen(6))
    shifted = same + torch.cat([torch.zeros(16), 0.5 * torch.ones(16)])  # right half shifted
    d_same = one_point_histogram_distance(same, ref, column_blocks=4)
    d_shift = one_point_histogram_distance(shifted, ref, column_blocks=4)
    assert d_same.shape == (4,) and float(d_same.max()) < 0.05
    assert float(d_shift[:2].max()) < 0.05
    assert torch.allclose(d_shift[2:], torch.full((2,), 0.5, dtype=torch.float64), atol=0.05)


# --------------------------------------------------------------------------- Fréchet


def test_frechet_identical_is_zero():
    f = torch.randn(500, 16, generator=gen(7))
    assert abs(frechet_distance(f, f)) < 1e-6


def test_frechet_closed_forms():
    # 1-D: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2.
    d = gaussian_frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-1.0]), np.array([[1.0]]))
    assert math.isclose(d, 4.0 + 1.0, rel_tol=1e-9)
    # Commuting covariances: sum of squared differences of the square-rooted eigenvalues.
    d = gaussian_frechet_distance(np.zeros(3), np.diag([1.0, 4.0, 9.0]), np.ones(3), np.diag([4.0, 4.0, 1.0]))
    assert math.isclose(d, 3.0 + 1.0 + 0.0 + 4.0, rel_tol=1e-9)


def test_frechet_samples_match_closed_form():
    rng = np.random.default_rng(0)
    k, n = 4, 40_000
    a_mat, b_mat = rng.normal(size=(k, k)), rng.normal(size=(k, k))
    cov_a, cov_b = a_mat @ a_mat.T + 0.5 * np.eye(k), b_mat @ b_mat.T + 0.5 * np.eye(k)
    mu_a, mu_b = rng.normal(size=k), rng.normal(size=k)
    xa = rng.multivariate_normal(mu_a, cov_a, size=n)
    xb = rng.multivariate_normal(mu_b, cov_b, size=n)
    exact = gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b)
    est = frechet_distance(torch.from_numpy(xa), torch.from_numpy(xb))
    assert exact > 1.0
    assert abs(est - exact) < 0.05 * exact, (est, exact)


def test_frechet_singular_features():
    f = torch.randn(300, 5, generator=gen(8))
    f[:, 0] = 0.0  # a dead feature: singular covariance
    g = torch.randn(300, 5, generator=gen(9))
    g[:, 0] = 0.0
    d = frechet_distance(f, g)
    assert math.isfinite(d) and d >= 0.0


# --------------------------------------------------------------------------- classifier


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 8.0 - 1.0  # [1797, 64] in [-1, 1]
    return x, torch.tensor(data.target)


def test_feature_classifier_shapes():
    for shape in [(1, 8, 8), (1, 28, 28), (3, 32, 32)]:
        model = FeatureClassifier(shape, n_classes=10)
        model.reset_parameters(gen(0))
        x = torch.zeros(2, *shape)
        assert model.features(x).shape == (2, 128)
        assert model(x).shape == (2, 10)


def test_classifier_digits_accuracy_cache_and_fcd(tmp_path):
    x, labels = _digits()
    cache = tmp_path / "clf" / "digits.pt"
    t0 = time.time()
    # num_threads=1: intra-op threading only slows small convolutions on a shared CPU.
    model, acc = train_feature_classifier(x, labels, (1, 8, 8), steps=200, seed=0, cache_path=cache, num_threads=1)
    assert acc > 0.9, acc
    assert time.time() - t0 < 10.0
    assert cache.exists() and not list(cache.parent.glob("*.tmp"))
    # Cached: same weights, same accuracy, no retraining.
    model2, acc2 = train_feature_classifier(x, labels, (1, 8, 8), steps=200, seed=0, cache_path=cache)
    assert acc2 == acc
    with torch.no_grad():
        assert torch.equal(model.features(x[:5].reshape(-1, 1, 8, 8)), model2.features(x[:5].reshape(-1, 1, 8, 8)))
    # FCD: two halves of the real data are close; real vs noise is far.
    perm = torch.randperm(len(x), generator=gen(1))
    real_a, real_b = x[perm[:800]], x[perm[800:1600]]
    noise = torch.rand(800, 64, generator=gen(2)) * 2 - 1
    d_real = classifier_frechet_distance(model, real_a, real_b, (1, 8, 8))
    d_noise = classifier_frechet_distance(model, real_a, noise, (1, 8, 8))
    assert 0.0 <= d_real < 0.1 * d_noise, (d_real, d_noise)


# --------------------------------------------------------------------------- sample scorer (KCD)

SETS = ("real", "gmm", "gauss", "noise")  # best to worst


@pytest.fixture(scope="module")
def digits_scorer(tmp_path_factory):
    """A noise-aware scorer of the digits training split (built once; ~8 s on one thread),
    the held-out split, and the Gaussian-mixture and single-Gaussian fits of the training split."""
    from sklearn.mixture import GaussianMixture

    from gud.data import load_dataset

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    cache = tmp_path_factory.mktemp("scorer") / "digits.pt"
    scorer = SampleScorer.train(train.x, train.labels, train.shape, seed=0, cache_path=cache)
    x = train.x.double().numpy()
    gmm = GaussianMixture(20, covariance_type="full", random_state=0).fit(x)
    return scorer, cache, train, test, gmm


def _digit_sets(train, test, gmm, n: int, seed: int) -> dict[str, torch.Tensor]:
    """The four sample sets of the ranking, ``n`` each, drawn from ``np.random.default_rng(seed)``.

    real: held-out digits (with replacement if ``n`` exceeds the 359 of the test split, which
    biases their score upward, so the ranking is harder); gmm: a 20-component Gaussian mixture
    fitted to the training digits, quantised to the 17 grey levels; gauss: the single Gaussian
    fit, clipped; noise: the same Gaussian draws scaled by 4 about the mean and clamped.
    """
    rng = np.random.default_rng(seed)
    x = train.x.double().numpy()
    real = test.x.numpy()[rng.choice(len(test), n, replace=n > len(test))]
    comp = rng.choice(len(gmm.weights_), size=n, p=gmm.weights_)
    chol = np.linalg.cholesky(gmm.covariances_)  # [K, D, D]
    mix = gmm.means_[comp] + np.einsum("nij,nj->ni", chol[comp], rng.standard_normal((n, x.shape[1])))
    mix = np.clip(np.round((mix + 1) * 8) / 8 - 1, -1, 1)
    mu = x.mean(0)
    cov = np.cov(x, rowvar=False) + 1e-6 * np.eye(x.shape[1])  # constant border pixels: singular
    z = mu + rng.standard_normal((n, x.shape[1])) @ np.linalg.cholesky(cov).T
    sets = {"real": real, "gmm": mix, "gauss": np.clip(z, -1, 1), "noise": np.clip(mu + 4 * (z - mu), -1, 1)}
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in sets.items()}


@pytest.mark.parametrize("n", [200, 1000])
def test_sample_scorer_ranks_digit_sample_sets(digits_scorer, n):
    scorer, _, train, test, gmm = digits_scorer
    assert scorer.accuracy > 0.85, scorer.accuracy
    for seed in (0, 1):
        scores = {k: scorer.score(v) for k, v in _digit_sets(train, test, gmm, n, seed).items()}
        kcd = [scores[k].kcd for k in SETS]
        assert kcd == sorted(kcd), (n, seed, scores)
        # Held-out digits sit at the floor 0 (within 3 standard errors; not checked when the
        # held-out digits are repeated), the mixture clearly above it.
        if n <= len(test):
            assert abs(scores["real"].kcd) < 3 * scores["real"].stderr, scores["real"]
        assert scores["gmm"].kcd > 3 * scores["gmm"].stderr, scores["gmm"]
        assert all(s.n == n and s.stderr > 0 for s in scores.values())


def test_sample_scorer_floor_cache_and_determinism(digits_scorer):
    scorer, cache, train, test, gmm = digits_scorer
    # Real data are at the floor: held-out digits (a second sample of the reference's distribution)
    # score within 3 standard errors of 0 (KCD is an unbiased MMD^2), and the mixture scores above
    # them by more than 3 combined standard errors. Tolerances from the scores' own (jackknife)
    # errors, not a fixed fraction that another CPU's kernels can cross.
    floor = scorer.score(test.x)
    mixture = scorer.score(_digit_sets(train, test, gmm, 200, 0)["gmm"])
    assert abs(floor.kcd) < 3 * floor.stderr, floor
    assert mixture.kcd - floor.kcd > 3 * math.hypot(floor.stderr, mixture.stderr), (floor, mixture)
    # Rebuilt from the cache (atomic write, weights_only load): the same values.
    assert cache.exists() and not list(cache.parent.glob("*.tmp"))
    again = SampleScorer.train(train.x, train.labels, train.shape, seed=0, cache_path=cache)
    assert again.accuracy == scorer.accuracy and again.reference_term == scorer.reference_term
    x = test.x[:100]
    assert again.score(x) == scorer.score(x)
    # The score of a set does not depend on the order of its samples.
    perm = torch.randperm(len(x), generator=gen(3))
    assert math.isclose(scorer.score(x[perm]).kcd, scorer.score(x).kcd, rel_tol=1e-9, abs_tol=1e-12)


def test_sample_scorer_matches_direct_formula():
    """KCD is the unbiased MMD^2 with the cubic kernel; its stderr the delete-one jackknife."""
    shape = (1, 8, 8)
    clf = FeatureClassifier(shape, n_classes=3, feature_dim=16)
    clf.reset_parameters(gen(10))
    ref, x = torch.rand(40, 64, generator=gen(11)) * 2 - 1, torch.rand(12, 64, generator=gen(12)) * 2 - 1
    scorer = SampleScorer(clf, ref, shape, max_reference=30, seed=4)
    assert scorer.reference.shape == (30, 16)
    r, g = scorer.reference, scorer.features(x)

    def mmd(g: torch.Tensor) -> float:
        def k(a, b):
            return (a @ b.T / a.shape[1] + 1) ** 3

        n, m = len(g), len(r)
        k_rr, k_gg = k(r, r), k(g, g)
        return float((k_rr.sum() - k_rr.trace()) / (m * (m - 1)) + (k_gg.sum() - k_gg.trace()) / (n * (n - 1))
                     - 2 * k(r, g).mean())

    out = scorer.score(x)
    assert math.isclose(out.kcd, mmd(g), rel_tol=1e-9, abs_tol=1e-12)
    loo = np.array([mmd(torch.cat([g[:i], g[i + 1:]])) for i in range(len(g))])
    n = len(g)
    assert math.isclose(out.stderr, math.sqrt((n - 1) / n * ((loo - loo.mean()) ** 2).sum()), rel_tol=1e-6)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_sample_scorer_larger_images(shape):
    d = math.prod(shape)
    x = torch.rand(64, d, generator=gen(13)) * 2 - 1
    labels = torch.arange(64) % 4
    scorer = SampleScorer.train(x, labels, shape, steps=3, seed=0)
    assert scorer.classifier.n_classes == 5  # 4 classes and "corrupted"
    out = scorer.score(torch.rand(10, d, generator=gen(14)) * 2 - 1)
    assert math.isfinite(out.kcd) and math.isfinite(out.stderr) and out.n == 10


def test_noise_aware_classifier_is_deterministic():
    x = torch.rand(60, 64, generator=gen(15)) * 2 - 1
    labels = torch.arange(60) % 3
    a, _ = train_feature_classifier(x, labels, (1, 8, 8), steps=5, seed=2, corrupt=0.5)
    b, _ = train_feature_classifier(x, labels, (1, 8, 8), steps=5, seed=2, corrupt=0.5)
    c, _ = train_feature_classifier(x, labels, (1, 8, 8), steps=5, seed=3, corrupt=0.5)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.head.weight, c.head.weight)


def test_sample_scorer_bad_input():
    shape = (1, 8, 8)
    clf = FeatureClassifier(shape, n_classes=3)
    clf.reset_parameters(gen(16))
    ref = torch.rand(20, 64, generator=gen(17)) * 2 - 1
    scorer = SampleScorer(clf, ref, shape)
    nan = ref.clone()
    nan[3, 5] = float("nan")
    with pytest.raises(ValueError, match="x_gen has D = 63"):
        scorer.score(ref[:, :63])
    with pytest.raises(ValueError, match="x_gen contains NaN"):
        scorer.score(nan)
    with pytest.raises(ValueError, match="x_gen needs at least 3 samples, got 0"):
        scorer.score(torch.zeros(0, 64))
    with pytest.raises(ValueError, match=r"x_gen must be flat samples \[n, D\]"):
        scorer.score(ref.reshape(-1, 1, 8, 8))
    with pytest.raises(ValueError, match="x_reference contains NaN"):
        SampleScorer(clf, nan, shape)
    with pytest.raises(ValueError, match="x has D = 64"):
        train_feature_classifier(ref, torch.zeros(20), (1, 28, 28), steps=1)
    with pytest.raises(ValueError, match="labels must have shape"):
        train_feature_classifier(ref, torch.zeros(19), shape, steps=1)
    with pytest.raises(ValueError, match="corrupt must be"):
        train_feature_classifier(ref, torch.zeros(20), shape, steps=1, corrupt=1.0)
