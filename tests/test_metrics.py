"""Tests for gud.metrics: two-point statistics, Fréchet distance, feature classifier."""

import math
import time

import numpy as np
import pytest
import torch

from gud.fields import gaussian_random_field_window, grf_covariance
from gud.metrics import (
    FeatureClassifier,
    classifier_frechet_distance,
    column_profile,
    frechet_distance,
    gaussian_frechet_distance,
    inception_fid,
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


def test_inception_fid_unavailable_is_clear():
    try:
        import torchmetrics  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="Inception"):
            inception_fid(torch.zeros(4, 64), torch.zeros(4, 64), (1, 8, 8))
    else:
        pytest.skip("torchmetrics installed: inception_fid may work or download weights")
