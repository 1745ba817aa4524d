"""Bases: orthogonality, round trips, metadata, agreement with PyWavelets, stationarity."""
import numpy as np
import pytest
import pywt
import torch

from gud.bases import FourierBasis, PCABasis, PixelBasis, WaveletBasis, make_basis, rank_labels

SHAPES = [(1, 8, 8), (3, 4, 6), (1, 5, 7)]


def _bases(shape):
    c, h, w = shape
    out = [PixelBasis(shape), FourierBasis(shape)]
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(200, c * h * w, generator=gen, dtype=torch.float64)
    out += [PCABasis.fit(data, shape), PCABasis.fit(data, shape, per_channel=True)]
    if h % 2 == 0 and w % 2 == 0:
        out += [WaveletBasis(shape, "haar", 1), WaveletBasis(shape, "db2", 1)]
    return out


@pytest.mark.parametrize("shape", SHAPES)
def test_orthogonal_and_round_trip_float64(shape):
    for basis in _bases(shape):
        u = basis.matrix(torch.float64)
        eye = torch.eye(basis.dim, dtype=torch.float64)
        assert torch.allclose(u @ u.T, eye, atol=1e-10), basis
        x = torch.randn(4, 2, basis.dim, dtype=torch.float64)
        c = basis.forward(x)
        assert c.shape == x.shape
        assert torch.allclose(basis.inverse(c), x, atol=1e-10)
        assert torch.allclose(c, x @ u.T, atol=1e-10)  # forward is U x
        for key, val in basis.meta.items():
            assert val.shape == (basis.dim,), (basis, key)


def test_float32_round_trip():
    for basis in _bases((3, 8, 8)):
        x = torch.randn(16, basis.dim)
        assert basis.forward(x).dtype == torch.float32
        assert torch.allclose(basis.inverse(basis.forward(x)), x, atol=1e-5)


def test_fourier_diagonalises_stationary_covariance():
    h, w = 8, 6
    # covariance of a stationary periodic field: C[p, q] = k(p - q mod grid)
    yy, xx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], 1)
    d = (pos[:, None, :] - pos[None, :, :]) % [h, w]
    d = np.minimum(d, [h, w] - d)
    cov = torch.tensor(np.exp(-0.5 * ((d / 1.5) ** 2).sum(-1)) + 1e-9 * np.eye(h * w))
    u = FourierBasis((1, h, w)).matrix()
    rotated = u @ cov @ u.T
    off = rotated - torch.diag(torch.diagonal(rotated))
    assert off.abs().max() < 1e-10
    # variances are the power spectrum, real and imaginary parts alike
    spec = np.fft.fft2(cov[0].reshape(h, w).numpy()).real
    basis = FourierBasis((1, h, w))
    ky, kx = basis.meta["ky"].numpy() % h, basis.meta["kx"].numpy()
    assert np.allclose(torch.diagonal(rotated).numpy(), spec[ky, kx], atol=1e-8)


def test_fourier_metadata():
    b = FourierBasis((2, 8, 8))
    assert b.meta["freq"][0] == 0 and b.meta["part"][0] == 0  # DC first
    one = b.meta["freq"][:64]
    assert torch.all(one[1:] >= one[:-1])  # sorted by |k| within a channel
    assert (b.meta["channel"] == torch.arange(2).repeat_interleave(64)).all()


@pytest.mark.filterwarnings("ignore:Level value")
@pytest.mark.parametrize("wavelet,levels,shape", [("haar", 3, (8, 8)), ("db2", 2, (16, 8)), ("sym4", 1, (8, 16))])
def test_wavelet_matches_pywavelets(wavelet, levels, shape):
    rng = np.random.default_rng(0)
    img = rng.normal(size=shape)
    coeffs = pywt.wavedec2(img, wavelet, mode="periodization", level=levels)
    ref = np.concatenate([np.ravel(a) for c in coeffs for a in (c if isinstance(c, tuple) else (c,))])
    ours = WaveletBasis((1, *shape), wavelet, levels).forward(torch.tensor(img).reshape(1, -1))[0]
    assert np.allclose(ours.numpy(), ref, atol=1e-10)


def test_wavelet_metadata_haar_8x8():
    b = WaveletBasis((1, 8, 8), "haar")
    assert b.levels == 3
    scale = b.meta["scale"]
    assert scale[0] == 0 and (scale == 0).sum() == 1  # one approximation coefficient
    assert [(scale == s).sum().item() for s in range(4)] == [1, 3, 12, 48]
    assert torch.all(scale[1:] >= scale[:-1])  # coarse to fine
    assert (b.meta["col_frac"] > 0).all() and (b.meta["col_frac"] < 1).all()


def test_bad_input_errors():
    with pytest.raises(ValueError, match="unknown basis"):
        make_basis("laplace", (1, 8, 8))
    with pytest.raises(ValueError, match="unknown wavelet"):
        WaveletBasis((1, 8, 8), "notawavelet")
    with pytest.raises(ValueError, match="not orthogonal"):
        WaveletBasis((1, 8, 8), "bior2.2")
    with pytest.raises(ValueError, match="divisible"):
        WaveletBasis((1, 6, 8), "haar", 2)
    with pytest.raises(ValueError, match="last axis"):
        PixelBasis((1, 8, 8)).forward(torch.zeros(3, 65))
    with pytest.raises(ValueError, match="NaN"):
        PCABasis.fit(torch.full((10, 4), float("nan")), (1, 2, 2))
    with pytest.raises(ValueError, match="needs|pass data"):
        make_basis("pca", (1, 2, 2))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        PixelBasis((8, 8))


def test_pca_orders_by_variance_and_rank_labels():
    gen = torch.Generator().manual_seed(1)
    scales = torch.tensor([3.0, 0.1, 1.0, 0.5], dtype=torch.float64)
    x = torch.randn(5000, 4, generator=gen, dtype=torch.float64) * scales
    b = PCABasis.fit(x, (1, 2, 2))
    assert torch.all(b.meta["variance"][1:] <= b.meta["variance"][:-1])
    assert torch.allclose(b.meta["variance"].sqrt(), scales.sort(descending=True).values, rtol=0.05)
    assert rank_labels(torch.tensor([0.3, 0.1, 0.2])).tolist() == [2.0, 0.0, 1.0]
