"""Tests for gud.fields: GRF spectrum and variance, window stationarity, phi^4 sampler, field data."""

import math

import pytest
import torch

from gud.fields import (
    PHI4_KAPPA,
    PHI4_LAM,
    field_images,
    field_setup,
    from_unit_range,
    gaussian_random_field,
    gaussian_random_field_window,
    grf_covariance,
    grf_power_spectrum,
    grf_window_bpd,
    grf_window_covariance,
    phi4_chains,
    phi4_lattice,
    phi4_lattice_window,
    phi4_single_site_moment,
    quantize_8bit,
    to_unit_range,
)
from gud.likelihood import BIN_WIDTH_8BIT
from gud.pipeline import bin_width


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_grf_spectrum_normalisation():
    spec = grf_power_spectrum(16, 32, exponent=2.0, k0=0.3)
    assert spec.shape == (16, 32)
    assert torch.isclose(spec.mean(), torch.tensor(1.0, dtype=spec.dtype))
    assert torch.allclose(spec, torch.roll(torch.flip(spec, (0, 1)), (1, 1), (0, 1)))  # S(k) = S(-k)
    assert torch.isclose(grf_covariance(16, 32, k0=0.3)[0, 0], torch.tensor(1.0, dtype=torch.float64))


def test_grf_unit_variance_and_spectrum():
    n, h, w = 512, 32, 32
    phi = gaussian_random_field(n, h, w, exponent=2.0, k0=0.25, generator=gen(1), dtype=torch.float64)
    assert phi.shape == (n, h, w) and phi.dtype == torch.float64
    assert abs(float(phi.mean())) < 0.05
    assert abs(float(phi.var()) - 1.0) < 0.05
    # Empirical spectrum E|fft2(phi)|^2 / N = S: ratio ~ 1 with relative error ~ 1/sqrt(n) per mode.
    emp = (torch.fft.fft2(phi).abs() ** 2).mean(0) / (h * w)
    ratio = emp / grf_power_spectrum(h, w, 2.0, 0.25)
    assert abs(float(ratio.mean()) - 1.0) < 0.02
    assert float((ratio - 1).abs().max()) < 6 * math.sqrt(2 / n)
    assert 0.5 / math.sqrt(n) < float(ratio.std()) < 1.5 / math.sqrt(n)


def test_grf_other_exponent_spectrum():
    n, h, w = 256, 16, 16
    phi = gaussian_random_field(n, h, w, exponent=3.0, k0=0.5, generator=gen(2), dtype=torch.float64)
    emp = (torch.fft.fft2(phi).abs() ** 2).mean(0) / (h * w)
    ratio = emp / grf_power_spectrum(h, w, 3.0, 0.5)
    assert abs(float(ratio.mean()) - 1.0) < 0.03


def test_grf_window_stationary_and_consistent():
    n, h = 512, 8
    wide = gaussian_random_field_window(n, h, 32, generator=gen(3))
    narrow = gaussian_random_field_window(n, h, 8, generator=gen(3))
    assert wide.shape == (n, h, 32) and narrow.shape == (n, h, 8)
    # Same super field for both widths: the 8-wide window is the first 8 columns.
    assert torch.equal(narrow, wide[..., :8])
    col_var = wide.var(dim=(0, 1))
    assert float((col_var - 1).abs().max()) < 0.2
    assert abs(float(col_var.mean()) - 1.0) < 0.08
    row_var = wide.var(dim=(0, 2))
    assert float((row_var - 1).abs().max()) < 0.2


def test_periodic_field_is_not_a_window():
    # Wrap-around: in a periodic 8-wide field C(dx=7) = C(1); in a window it decays.
    per = grf_covariance(8, 8)
    win = grf_covariance(64, 256)
    assert torch.isclose(per[0, 7], per[0, 1])
    assert float(win[0, 7]) < 0.5 * float(win[0, 1])


def test_grf_window_too_large():
    with pytest.raises(ValueError):
        gaussian_random_field_window(2, 8, 64, generator=gen(), super_shape=(8, 32))


def test_phi4_acceptance_and_symmetry():
    sample = phi4_chains(512, 8, 32, n_sweeps=20, generator=gen(4))
    phi = sample.fields
    assert phi.shape == (512, 8, 32)
    assert torch.isfinite(phi).all()
    assert 0.3 < sample.acceptance < 0.7
    m = phi.mean(dim=(1, 2))  # magnetisation per chain
    assert abs(float(m.mean())) < 4 * float(m.std()) / math.sqrt(len(m))
    third = (phi**3).mean(dim=(1, 2))
    assert abs(float(third.mean())) < 4 * float(third.std()) / math.sqrt(len(third))
    # Symmetric phase with nearest-neighbour correlations: positive, decaying C(dx).
    c = [float((phi * torch.roll(phi, -d, -1)).mean()) for d in range(4)]
    assert c[0] > c[1] > c[2] > c[3] > 0


@pytest.mark.parametrize("lam", [PHI4_LAM, 1.0])
def test_phi4_kappa0_single_site(lam):
    phi = phi4_lattice(256, 8, 8, kappa=0.0, lam=lam, n_sweeps=30, generator=gen(5), thermalize=50)
    phi2 = (phi**2).flatten().double()  # kappa = 0: independent sites
    expected = phi4_single_site_moment(lam, 2)
    assert abs(float(phi2.mean()) - expected) < 4 * float(phi2.std()) / math.sqrt(phi2.numel())
    assert abs(phi4_single_site_moment(0.0, 2) - 0.5) < 1e-8  # Gaussian check of the quadrature


def test_phi4_window_consistent():
    narrow = phi4_lattice_window(32, 8, 8, n_sweeps=5, generator=gen(6), thermalize=20)
    wide = phi4_lattice_window(32, 8, 32, n_sweeps=5, generator=gen(6), thermalize=20)
    assert narrow.shape == (32, 8, 8) and wide.shape == (32, 8, 32)
    assert torch.equal(narrow, wide[..., :8])


def test_phi4_odd_lattice_raises():
    with pytest.raises(ValueError):
        phi4_lattice(2, 7, 8, generator=gen())


def test_phi4_default_couplings():
    assert 0.0 < PHI4_KAPPA < 0.27 and PHI4_LAM == 0.02


def test_to_unit_range():
    x = torch.randn(1000, generator=gen(7)) * 2.0
    y = to_unit_range(x, clip=3.0, std=2.0)
    assert y.min() >= -1 and y.max() <= 1
    assert torch.allclose(y, (x / 6.0).clamp(-1, 1))
    inside = x.abs() < 6.0
    assert torch.allclose(from_unit_range(y, 3.0, 2.0)[inside], x[inside])
    y_auto = to_unit_range(x)
    assert torch.allclose(y_auto, (x / (3 * x.std())).clamp(-1, 1))


# --------------------------------------------------------------------------- field data


def test_quantize_8bit_grid():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.5])
    q = quantize_8bit(x)
    v = (q + 1) * 127.5
    assert torch.allclose(v, v.round(), atol=1e-4)
    assert q.min() >= -1 and q.max() <= 1
    assert (q - x.clamp(-1, 1)).abs().max() <= 1 / 255 + 1e-6


def test_field_images_range_and_consistency():
    narrow = field_images("grf", 50, 4, 8, seed=3, super_shape=(16, 64))
    wide = field_images("grf", 50, 4, 16, seed=3, super_shape=(16, 64))
    assert narrow.shape == (50, 4, 8) and wide.shape == (50, 4, 16)
    assert torch.equal(narrow, wide[..., :8])  # one super field: the narrow window is a crop
    assert narrow.abs().max() <= 1
    assert torch.equal(quantize_8bit(narrow), narrow)
    with pytest.raises(ValueError):
        field_images("ising", 2, 4, 4, seed=0)


def test_field_setup_splits():
    s = field_setup("grf", 300, 50, 4, 4, seed=0, n_val=40, super_shape=(16, 64))
    assert s.train.x.shape == (300, 16) and s.test.x.shape == (50, 16) and s.val.x.shape == (40, 16)
    assert s.y_val.shape == (40, 16) and torch.isfinite(s.y_train).all()
    assert s.basis.name == "pixel" and s.prior.whitened
    assert bin_width(s.train) == BIN_WIDTH_8BIT
    # independent draws for the three splits
    assert not torch.equal(s.train.x[:40], s.val.x) and not torch.equal(s.train.x[:50], s.test.x)
    assert "Gaussian random field" in s.train.source
    # the whitened pixels have unit variance on the training split
    assert torch.allclose(s.prior.log_var, torch.zeros(16, dtype=s.prior.log_var.dtype), atol=1e-12)
    assert field_setup("grf", 30, 10, 4, 4, seed=0, super_shape=(16, 64)).val is None


def test_grf_window_covariance_matches_samples():
    cov = grf_window_covariance(4, 6, (16, 64), bin_width=BIN_WIDTH_8BIT)
    assert cov.shape == (24, 24) and torch.allclose(cov, cov.T)
    assert torch.linalg.eigvalsh(cov).min() > 0
    x = field_images("grf", 4000, 4, 6, seed=5, super_shape=(16, 64)).reshape(4000, -1).double()
    emp = torch.cov(x.T)
    assert (emp - cov).abs().max() < 0.01  # entries ~ 0.1, sampling error ~ 0.003
    assert abs(float(emp.diagonal().mean() / cov.diagonal().mean()) - 1) < 0.03


def test_grf_window_bpd_independent_limit():
    # a window of one pixel: the entropy of N(0, (1/3)^2) at bin 2/255
    bpd = grf_window_bpd(1, 1, (64, 256))
    expect = 0.5 * math.log2(2 * math.pi * math.e / 9) - math.log2(2 / 255)
    assert abs(bpd - expect) < 1e-9
    assert grf_window_bpd(4, 4, (64, 256)) < expect  # correlated pixels: less entropy per pixel


def test_grf_window_covariance_method_matches_the_fft():
    """Windows drawn from their covariance (the fast path for many large windows) follow the same
    distribution as corners of FFT super fields: both empirical covariances agree with the exact
    window covariance within their sampling error (entries' SE ~ sqrt(2/n) ~ 0.02 at n = 4000)."""
    n, h, w, sup = 4000, 4, 6, (16, 64)
    exact = grf_window_covariance(h, w, sup, clip=1.0, std=1.0)
    for method in ("fft", "covariance"):
        x = gaussian_random_field_window(n, h, w, generator=gen(7), super_shape=sup, method=method)
        assert x.shape == (n, h, w) and x.dtype == torch.float32
        emp = torch.cov(x.reshape(n, -1).double().T)
        assert (emp - exact).abs().max() < 5 * math.sqrt(2 / n)
    # auto: the covariance only for many windows of 1024+ pixels (small windows keep the FFT's draws)
    small = gaussian_random_field_window(64, 4, 6, generator=gen(1), super_shape=sup)
    assert torch.equal(small, gaussian_random_field_window(64, 4, 6, generator=gen(1), super_shape=sup, method="fft"))
    with pytest.raises(ValueError, match="method"):
        gaussian_random_field_window(4, 4, 6, generator=gen(1), super_shape=sup, method="cholesky")
