"""Tests for gud.extension: clipped column schedule, sliding-window extension, scores."""

import math

import pytest
import torch

from gud import extension as ext


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    return ext.field_setup("grf", 300, 50, 4, 4, seed=0, super_shape=(16, 64))


def test_quantize_8bit_grid():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.5])
    q = ext.quantize_8bit(x)
    v = (q + 1) * 127.5
    assert torch.allclose(v, v.round(), atol=1e-4)
    assert q.min() >= -1 and q.max() <= 1
    assert (q - x.clamp(-1, 1)).abs().max() <= 1 / 255 + 1e-6


def test_field_setup_shapes(setup):
    assert setup.train.x.shape == (300, 16) and setup.test.x.shape == (50, 16)
    assert setup.basis.name == "pixel"
    assert torch.isfinite(setup.y_train).all()


def test_clipped_schedule_bounds_and_order(setup):
    sch = ext.column_schedule(setup, (0.5, 20.0))
    for a in (0.5, 3.0, 20.0):
        t = torch.linspace(0, 1, 11, dtype=torch.float64)
        g = sch.effective_gamma(t, ext.a_params(a))
        assert g.min() >= -7 - 1e-9 and g.max() <= 3 + 1e-9
        col = setup.basis.meta["col"]
        # left columns are never noisier than right columns
        assert (g[:, col == 0] <= g[:, col == 3] + 1e-12).all()
        assert torch.allclose(g[0, col == 3], torch.tensor(-7.0, dtype=torch.float64))
        assert torch.allclose(g[-1, col == 0], torch.tensor(3.0, dtype=torch.float64))
    # the rate is exactly zero while a component waits
    st = sch.state(torch.tensor([0.99], dtype=torch.float64), ext.a_params(20.0))
    assert (st.gamma_dot[0, setup.basis.meta["col"] == 0] != 0).all()
    assert (st.gamma_dot[0, setup.basis.meta["col"] == 3] == 0).all()


def test_unclipped_matches_soft_conditioning(setup):
    sch = ext.column_schedule(setup, a=0.5, clip=False)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    g = sch.effective_gamma(t)
    assert math.isclose(float(g[0].max()), -7.0) and math.isclose(float(g[1].min()), 3.0)
    assert math.isclose(float(g[0].min()), -7.0 - 0.5 * 3)


def test_active_interval(setup):
    sch = ext.column_schedule(setup, (0.5, 20.0))
    mask = setup.basis.meta["col"] == 3
    lo, hi = ext.active_interval(sch, mask, ext.a_params(20.0))
    # last column of 4 at a = 20: active while t * (10 + 60) in [60 - 0, 70] -> t in [0, 1/7]
    assert lo == 0.0 and abs(hi - 1 / 7) < 2e-3


def _oracle(setup):
    """Exact epsilon for the field's (Gaussian, empirical) covariance in whitened components."""
    y = setup.y_train.double()
    cov = torch.cov(y.T)

    class Oracle(torch.nn.Module):
        def forward(self, y_t, gamma):
            return eps_model(y_t, gamma)

    def eps_model(y_t, gamma):
        a2 = torch.sigmoid(-gamma.double())
        s = (1 - a2).sqrt()
        a = a2.sqrt()
        out = []
        for i in range(y_t.shape[0]):
            m = a[i, :, None] * cov * a[i, None, :] + torch.diag(s[i] ** 2)
            out.append(s[i] * torch.linalg.solve(m, y_t[i].double()))
        return torch.stack(out).to(y_t.dtype)

    return Oracle()


def test_slide_extend_shapes_and_known_columns(setup):
    sch = ext.column_schedule(setup, (0.5, 20.0))
    model = _oracle(setup)
    x = ext.slide_extend(model, setup, sch, 8, 10, stride=2, params=ext.a_params(3.0), steps=10, seed=0)
    assert x.shape == (8, 1, 4, 10) and torch.isfinite(x).all() and x.abs().max() <= 1
    x2 = ext.slide_extend(model, setup, sch, 8, 10, stride=2, params=ext.a_params(3.0), steps=10, seed=0)
    assert torch.equal(x, x2)  # seeded
    tiles = ext.independent_tiles(model, setup, sch, 8, 10, params=ext.a_params(3.0), steps=10, seed=0)
    assert tiles.shape == (8, 1, 4, 10)
    with pytest.raises(ValueError):
        ext.slide_extend(model, setup, sch, 2, 10, stride=4)


def test_extension_of_exact_model_keeps_correlations(setup):
    """With the exact (Gaussian) denoiser, sliding with conditioning keeps neighbour
    correlations across the extension; without conditioning they vanish."""
    sch = ext.column_schedule(setup, (0.5, 20.0))
    model = _oracle(setup)
    kw = dict(params=ext.a_params(20.0), steps=20, seed=0)
    ref = ext.field_images("grf", 200, 4, 12, seed=7, super_shape=(16, 64))
    cond = ext.slide_extend(model, setup, sch, 100, 12, **kw)[:, 0]
    free = ext.slide_extend(model, setup, sch, 100, 12, conditional=False, **kw)[:, 0]
    s_cond = ext.extension_scores(cond, ref, 4)
    s_free = ext.extension_scores(free, ref, 4)
    assert s_cond["c1_mae_outside"] < 0.5 * s_free["c1_mae_outside"]
    assert s_free["c1"][4:].abs().mean() < 0.03  # independent new columns


def test_extension_scores_of_true_samples(setup):
    ref = ext.field_images("grf", 400, 4, 16, seed=1, super_shape=(16, 64))
    other = ext.field_images("grf", 400, 4, 16, seed=2, super_shape=(16, 64))
    sc = ext.extension_scores(other, ref, 4)
    assert sc["c1"].shape == (15,) and sc["w1_blocks"].shape == (4,)
    assert sc["c1_mae_outside"] < 0.02 and sc["w1_mean_outside"] < 0.02
    with pytest.raises(ValueError):
        ext.extension_scores(other[:, :, :8], ref, 4)


def test_grf_window_bpd_independent_limit():
    # a window of one pixel: the entropy of N(0, (1/3)^2) at bin 2/255
    bpd = ext.grf_window_bpd(1, 1, (64, 256))
    expect = 0.5 * math.log2(2 * math.pi * math.e / 9) - math.log2(2 / 255)
    assert abs(bpd - expect) < 1e-9
