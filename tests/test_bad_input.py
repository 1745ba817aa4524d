"""Bad input gets a clear ValueError naming what is wrong (issue list: shapes, empty data, NaN,
out-of-range parameters)."""
import pytest
import torch

from gud.bases import PCABasis, PixelBasis
from gud.data import load_dataset
from gud.diffusion import EpsLoss, add_noise
from gud.likelihood import elbo
from gud.oracle import GaussianOracle
from gud.prior import Prior
from gud.schedules import LinearSchedule, SoftConditioningSchedule

D = 12
SHAPE = (1, 3, 4)
F64 = torch.float64


def _data(n=50):
    return torch.randn(n, D, generator=torch.Generator().manual_seed(0), dtype=F64)


def test_pca_fit_rejects_wrong_width():
    with pytest.raises(ValueError, match="D = C\\*H\\*W = 12"):
        PCABasis.fit(torch.zeros(10, 2 * D, dtype=F64), SHAPE)
    with pytest.raises(ValueError, match="flat"):
        PCABasis.fit(torch.zeros(10, 1, 3, 4, dtype=F64), SHAPE)


@pytest.mark.parametrize("empty", [torch.zeros(0, D, dtype=F64), torch.zeros(1, D, dtype=F64)])
def test_empty_data(empty):
    with pytest.raises(ValueError, match="at least two"):
        PCABasis.fit(empty, SHAPE)
    with pytest.raises(ValueError, match="at least two"):
        Prior.fit(PixelBasis(SHAPE), empty)
    with pytest.raises(ValueError, match="at least two"):
        Prior.fit(PixelBasis(SHAPE), [])


def test_oracle_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="D >= 1"):
        GaussianOracle(torch.zeros(0), torch.zeros(0, 0))
    with pytest.raises(ValueError, match="finite"):
        GaussianOracle(torch.zeros(2), torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    o = GaussianOracle(torch.zeros(D, dtype=F64), torch.eye(D, dtype=F64))
    y = torch.zeros(2, D, dtype=F64)
    with pytest.raises(ValueError, match="NaN"):
        o(torch.full_like(y, float("nan")), y)
    with pytest.raises(ValueError, match="NaN"):
        o(y, torch.full_like(y, float("nan")))


def test_load_dataset_limit_zero():
    with pytest.raises(ValueError, match="limit"):
        load_dataset("digits", "train", limit=0)


def test_prior_encode_decode_wrong_dim_and_nan():
    prior = Prior.fit(PixelBasis(SHAPE), _data())
    with pytest.raises(ValueError, match="D = 12"):
        prior.encode(torch.zeros(3, D + 1, dtype=F64))
    with pytest.raises(ValueError, match="D = 12"):
        prior.decode(torch.zeros(3, D - 1, dtype=F64))
    with pytest.raises(ValueError, match="NaN"):
        prior.encode(torch.full((3, D), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match="NaN"):
        prior.decode(torch.full((3, D), float("nan"), dtype=F64))


def test_nan_in_add_noise_and_loss():
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(2, D)
    with pytest.raises(ValueError, match="NaN"):
        add_noise(torch.full_like(y, float("nan")), y, g)
    with pytest.raises(ValueError, match="NaN"):
        add_noise(y, torch.full_like(y, float("nan")), g)
    with pytest.raises(ValueError, match="Generator"):
        add_noise(y, y, None)
    loss = EpsLoss(LinearSchedule(D))
    with pytest.raises(ValueError, match="NaN"):
        loss(lambda yt, gm: yt, torch.full_like(y, float("nan")), g)
    with pytest.raises(ValueError, match="empty"):
        loss(lambda yt, gm: yt, torch.zeros(0, D), g)


def test_elbo_time_samples_and_schedule_times():
    o = GaussianOracle(torch.zeros(D, dtype=F64), torch.eye(D, dtype=F64))
    sched = SoftConditioningSchedule(torch.arange(D, dtype=F64), torch.zeros(D, dtype=F64))
    with pytest.raises(ValueError, match="n_time_samples"):
        elbo(o, torch.zeros(2, D, dtype=F64), sched, n_time_samples=0)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
            sched.gamma(torch.tensor([0.5, bad], dtype=F64))
        with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
            sched.state(torch.tensor([bad], dtype=F64))
    with pytest.raises(ValueError, match="endpoints"):
        SoftConditioningSchedule(torch.arange(D, dtype=F64), torch.zeros(D, dtype=F64), endpoints="official")
