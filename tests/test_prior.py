"""Prior: fitting (streaming = exact), whitening, encode/decode, log-density, saving."""
import math

import pytest
import torch

from gud.bases import FourierBasis, PCABasis, PixelBasis
from gud.prior import Prior


def _data(n=3000, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ a.T / 3 + 0.5


def test_whitened_components_have_unit_variance():
    x = _data()
    basis = PCABasis.fit(x, (3, 2, 2))
    prior = Prior.fit(basis, x, whitened=True)
    y = prior.encode(x)
    assert torch.allclose(y.mean(0), torch.zeros(12, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(y.var(0), torch.ones(12, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(prior.log_var, torch.zeros(12, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(prior.decode(y), x, atol=1e-10)


def test_unwhitened_scale_one_and_log_var():
    x = _data()
    prior = Prior.fit(FourierBasis((3, 2, 2)), x, whitened=False)
    assert torch.all(prior.scale == 1)
    assert torch.allclose(prior.log_var, torch.log(prior.var))
    assert torch.allclose(prior.encode(x).var(0), prior.var, rtol=1e-8)


def test_streaming_fit_equals_full_fit():
    x = _data()
    basis = PixelBasis((3, 2, 2))
    full = Prior.fit(basis, x)
    stream = Prior.fit(basis, [x[:1000], x[1000:2500], x[2500:]])
    assert torch.allclose(full.mean, stream.mean, atol=1e-12)
    assert torch.allclose(full.var, stream.var, rtol=1e-10)


def test_log_prob_matches_multivariate_normal():
    x = _data()
    basis = PCABasis.fit(x, (3, 2, 2))
    prior = Prior.fit(basis, x, whitened=True)
    u = basis.matrix()
    cov = u.T @ torch.diag(prior.var) @ u
    ref = torch.distributions.MultivariateNormal(prior.mean, cov).log_prob(x[:5])
    assert torch.allclose(prior.log_prob(x[:5]), ref, atol=1e-8)
    assert math.isclose(float(prior.log_det), 0.5 * float(torch.log(prior.var).sum()), rel_tol=1e-12)


def test_variance_floor_and_bad_input():
    x = torch.zeros(50, 4, dtype=torch.float64)
    x[:, 0] = torch.linspace(-1, 1, 50)
    prior = Prior.fit(PixelBasis((1, 2, 2)), x, var_floor=1e-4)
    assert prior.var[1:].eq(1e-4).all()  # constant pixels are floored, whitening stays finite
    with pytest.raises(ValueError, match="NaN"):
        Prior.fit(PixelBasis((1, 2, 2)), torch.full((5, 4), float("nan")))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        Prior.fit(PixelBasis((1, 2, 2)), torch.zeros(5, 5))
    with pytest.raises(ValueError, match="NaN"):
        prior.encode(torch.full((1, 4), float("nan"), dtype=torch.float64))


def test_state_dict_round_trip(tmp_path):
    x = _data()
    basis = PCABasis.fit(x, (3, 2, 2))
    prior = Prior.fit(basis, x, whitened=True)
    torch.save(prior.state_dict(), tmp_path / "prior.pt")
    blank = Prior(PCABasis((3, 2, 2), torch.eye(12), torch.ones(12)), torch.zeros(12), torch.ones(12), True)
    blank.load_state_dict(torch.load(tmp_path / "prior.pt", weights_only=True))
    assert torch.allclose(blank.encode(x[:3]), prior.encode(x[:3]))
