"""Tests for gud.extension: sliding-window extension under the column family, baselines, scores."""

import math

import pytest
import torch

from gud import extension as ext
from gud.fields import field_images, field_setup
from gud.labels import column_labels, family, log_a_params
from gud.oracle import GaussianOracle


@pytest.fixture(scope="module")
def setup():
    return field_setup("grf", 300, 50, 4, 4, seed=0, super_shape=(16, 64))


def column_family(setup, convention="process-clipped", **kw):
    """The column family of E4: parameter log_a, a in [0.5, 20]."""
    return family(column_labels(setup.basis), setup.prior, convention, a=0.0,
                  param_range=[[math.log(0.5), math.log(20.0)]], param_map=torch.exp, **kw)


def oracle(setup):
    """Exact epsilon for the field's (Gaussian, empirical) covariance in whitened components."""
    y = setup.y_train.double()
    return GaussianOracle(torch.zeros(y.shape[1], dtype=torch.float64), torch.cov(y.T))


def test_clipped_column_family_bounds_and_order(setup):
    sch = column_family(setup)
    col = setup.basis.meta["col"]
    for a in (0.5, 3.0, 20.0):
        t = torch.linspace(0, 1, 11, dtype=torch.float64)
        g = sch.effective_gamma(t, log_a_params(a))
        assert g.min() >= -7 - 1e-9 and g.max() <= 3 + 1e-9
        assert (g[:, col == 0] <= g[:, col == 3] + 1e-12).all()  # left columns never noisier
        assert torch.allclose(g[0, col == 3], torch.tensor(-7.0, dtype=torch.float64))
        assert torch.allclose(g[-1, col == 0], torch.tensor(3.0, dtype=torch.float64))
    # the rate is exactly zero while a column waits
    st = sch.state(torch.tensor([0.99], dtype=torch.float64), log_a_params(20.0))
    assert (st.gamma_dot[0, col == 0] != 0).all()
    assert (st.gamma_dot[0, col == 3] == 0).all()


def test_process_clipped_equals_snr_clipped_for_whitened_pixels(setup):
    """With the whitened pixel prior every whitened pixel has unit variance: the two clipped
    conventions are one schedule."""
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    for a in (0.5, 3.0, 20.0):
        g1 = column_family(setup, "process-clipped").gamma(t, log_a_params(a))
        g2 = column_family(setup, "snr-clipped").gamma(t, log_a_params(a))
        assert torch.allclose(g1, g2, atol=1e-9)


def test_unclipped_family_matches_soft_conditioning(setup):
    sch = column_family(setup, "snr")
    g = sch.effective_gamma(torch.tensor([0.0, 1.0], dtype=torch.float64), log_a_params(0.5))
    assert math.isclose(float(g[0].max()), -7.0) and math.isclose(float(g[1].min()), 3.0)
    assert math.isclose(float(g[0].min()), -7.0 - 0.5 * 3)


def test_active_interval(setup):
    sch = column_family(setup)
    mask = setup.basis.meta["col"] == 3
    lo, hi = ext.active_interval(sch, mask, log_a_params(20.0))
    # last column of 4 at a = 20: active while t * (10 + 60) in [60 - 0, 70] -> t in [0, 1/7]
    assert lo == 0.0 and abs(hi - 1 / 7) < 2e-3


def test_slide_extend_shapes_seeds_and_known_columns(setup):
    sch, model = column_family(setup), oracle(setup)
    kw = dict(params=log_a_params(3.0), steps=10, seed=0, method="ancestral")
    x = ext.slide_extend(model, setup, sch, 8, 10, stride=2, **kw)
    assert x.shape == (8, 1, 4, 10) and torch.isfinite(x).all() and x.abs().max() <= 1
    assert torch.equal(x, ext.slide_extend(model, setup, sch, 8, 10, stride=2, **kw))  # seeded
    # generated columns are never changed afterwards: a shorter extension is a prefix
    assert torch.equal(ext.slide_extend(model, setup, sch, 8, 6, stride=2, **kw), x[..., :6])
    assert torch.equal(ext.slide_extend(model, setup, sch, 8, 4, stride=2, **kw), x[..., :4])
    tiles = ext.independent_tiles(model, setup, sch, 8, 10, **kw)
    assert tiles.shape == (8, 1, 4, 10)
    with pytest.raises(ValueError):
        ext.slide_extend(model, setup, sch, 2, 10, stride=4)
    with pytest.raises(ValueError):
        ext.slide_extend(model, setup, sch, 2, 3)


def test_unconditioned_baseline_batches(setup):
    """The unconditioned baseline keeps the first window and appends right columns of fresh
    windows, drawn in batches of any size."""
    sch, model = column_family(setup), oracle(setup)
    kw = dict(params=log_a_params(3.0), steps=5, seed=2, conditional=False)
    a = ext.slide_extend(model, setup, sch, 6, 9, batch=4, **kw)
    b = ext.slide_extend(model, setup, sch, 6, 9, **kw)
    assert a.shape == b.shape == (6, 1, 4, 9)
    assert torch.equal(a[..., :4], b[..., :4])  # the same first window
    c = ext.slide_extend(model, setup, sch, 6, 9, **{**kw, "conditional": True})
    assert torch.equal(c[..., :4], b[..., :4])


def test_extension_of_exact_model_keeps_correlations(setup):
    """With the exact (Gaussian) denoiser, sliding with conditioning keeps neighbour
    correlations across the extension; without conditioning they vanish."""
    sch, model = column_family(setup, gamma_noise=7.0), oracle(setup)
    kw = dict(params=log_a_params(20.0), steps=20, window_steps=80, seed=0, method="dpmpp_2m_sde")
    ref = field_images("grf", 200, 4, 12, seed=7, super_shape=(16, 64))
    cond = ext.slide_extend(model, setup, sch, 100, 12, **kw)[:, 0]
    free = ext.slide_extend(model, setup, sch, 100, 12, conditional=False, **kw)[:, 0]
    s_cond = ext.extension_scores(cond, ref, 4)
    s_free = ext.extension_scores(free, ref, 4)
    assert s_cond["c1_mae_outside"] < 0.5 * s_free["c1_mae_outside"]
    assert s_free["c1"][4:].abs().mean() < 0.03  # independent new columns


def test_extension_scores_of_true_samples():
    ref = field_images("grf", 400, 4, 16, seed=1, super_shape=(16, 64))
    other = field_images("grf", 400, 4, 16, seed=2, super_shape=(16, 64))
    sc = ext.extension_scores(other, ref, 4, n_boot=20)
    assert sc["c1"].shape == (15,) and sc["var"].shape == (16,) and sc["w1_blocks"].shape == (4,)
    assert sc["c1_mae_outside"] < 0.02 and sc["w1_mean_outside"] < 0.02
    assert abs(sc["var_bias_outside"]) < 3 * sc["var_bias_outside_se"] + 1e-3
    assert 0 < sc["c1_mae_outside_se"] < 0.01
    with pytest.raises(ValueError):
        ext.extension_scores(other[:, :, :8], ref, 4)


def test_extension_scores_sign_of_bias():
    """Fields shrunk beyond the window have variance and covariance below the truth."""
    ref = field_images("grf", 300, 4, 12, seed=1, super_shape=(16, 64)).double()
    x = field_images("grf", 300, 4, 12, seed=3, super_shape=(16, 64)).double()
    x[..., 4:] *= 0.7
    sc = ext.extension_scores(x, ref, 4, n_boot=20)
    assert sc["var_bias_outside"] < -5 * sc["var_bias_outside_se"]
    assert sc["c1_bias_outside"] < -5 * sc["c1_bias_outside_se"]
    assert sc["var_mae_inside"] < 0.5 * sc["var_mae_outside"]
