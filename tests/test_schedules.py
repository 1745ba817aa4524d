"""Schedules: limits of the soft-conditioning schedule, endpoints, beta against finite differences."""
import math

import pytest
import torch

from gud.schedules import (CosineSchedule, LinearSchedule, SequentialSchedule,
                           SoftConditioningSchedule, VPSchedule, alpha_sigma)

D = 10
GEN = torch.Generator().manual_seed(0)
VAR = torch.rand(D, generator=GEN, dtype=torch.float64) * 2 + 0.01  # data variances Sigma_i
T = torch.linspace(0, 1, 11, dtype=torch.float64)


def _true_log_snr(sched, t, params=None):
    return sched.log_var - sched.gamma(t, params)


def test_a_zero_gives_equal_true_snr():
    for log_var in (torch.zeros(D, dtype=torch.float64), torch.log(VAR)):  # whitened, unwhitened
        s = SoftConditioningSchedule(-torch.log(VAR), log_var, a=0.0)
        snr = _true_log_snr(s, T)
        assert torch.allclose(snr, snr[:, :1].expand_as(snr), atol=1e-12)


def test_variance_labels_a1_is_standard_diffusion_unwhitened():
    s = SoftConditioningSchedule(-torch.log(VAR), torch.log(VAR), a=1.0, gamma_denoise=-7, gamma_noise=3)
    g = s.gamma(T)
    assert torch.allclose(g, g[:, :1].expand_as(g), atol=1e-12)  # one common gamma(t)
    # ... linear in t, from -7 + log(min var) to 3 + log(max var)
    ref = LinearSchedule(D, -7 + math.log(VAR.min()), 3 + math.log(VAR.max())).gamma(T)
    assert torch.allclose(g, ref, atol=1e-12)
    # the whitened prior follows the same true-SNR paths
    w = SoftConditioningSchedule(-torch.log(VAR), torch.zeros(D, dtype=torch.float64), a=1.0)
    assert torch.allclose(_true_log_snr(w, T), _true_log_snr(s, T), atol=1e-12)


def test_endpoints_and_common_slope():
    labels = torch.arange(D, dtype=torch.float64)
    for a in (0.0, 0.5, 2.0):
        s = SoftConditioningSchedule(labels, torch.zeros(D, dtype=torch.float64), a=a, gamma_denoise=-7, gamma_noise=3)
        g0, g1 = s.gamma(torch.zeros(1)), s.gamma(torch.ones(1))
        assert math.isclose(g0[0, -1].item(), -7, abs_tol=1e-12)  # highest label starts at denoise
        assert math.isclose(g1[0, 0].item(), 3, abs_tol=1e-12)  # lowest label ends at noise
        assert torch.allclose(g1 - g0, (g1 - g0)[:, :1].expand_as(g0))  # one slope
        assert torch.all(g0 <= -7 + 1e-12) and torch.all(g1 >= 3 - 1e-12)
        if a > 0:  # higher label = lower SNR at every time
            assert torch.all(s.gamma(T)[:, 1:] > s.gamma(T)[:, :-1])


def test_large_a_windows_do_not_overlap():
    labels = torch.arange(D, dtype=torch.float64)
    s = SoftConditioningSchedule(labels, torch.zeros(D, dtype=torch.float64), a=50.0)
    t = torch.linspace(0, 1, 20001, dtype=torch.float64)
    active = (s.gamma(t) > -7) & (s.gamma(t) < 3)  # [T, D]: between denoised and noised
    assert (active.sum(1) <= 1).all()  # at most one component in flight: autoregressive
    starts = [int(torch.nonzero(active[:, i])[0]) for i in range(D)]
    # higher label = lower SNR = noised earlier in t, so generated later in reverse time
    assert starts == sorted(starts, reverse=True)
    ends = [int(torch.nonzero(active[:, i])[-1]) for i in range(D)]
    assert all(e < s_ for e, s_ in zip(ends[1:], starts[:-1]))


def _fd_rate(sched, t, params=None, h=1e-6):
    return (sched.gamma(t + h, params) - sched.gamma(t - h, params)) / (2 * h)


@pytest.mark.parametrize("sched", [
    LinearSchedule(D), CosineSchedule(D), VPSchedule(D),
    SoftConditioningSchedule(torch.arange(D, dtype=torch.float64), torch.log(VAR), a=0.7),
    SoftConditioningSchedule(torch.stack([torch.arange(D) // 3, torch.arange(D) % 3]).double(),
                             torch.zeros(D, dtype=torch.float64), a=[2.0, 0.5]),
    SequentialSchedule(torch.arange(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64), width=0.3),
])
def test_beta_matches_finite_differences(sched):
    t = torch.tensor([0.1, 0.33, 0.52, 0.71, 0.9], dtype=torch.float64)
    st = sched.state(t)
    assert st.gamma.shape == (5, D)
    fd = _fd_rate(sched, t)
    assert torch.allclose(st.gamma_dot, fd, rtol=1e-5, atol=1e-6)
    assert torch.allclose(st.beta, torch.sigmoid(st.gamma) * fd, rtol=1e-5, atol=1e-6)
    a, s = alpha_sigma(st.gamma)
    assert torch.allclose(a ** 2 + s ** 2, torch.ones_like(a))
    assert torch.allclose(torch.log(s ** 2 / a ** 2), st.gamma, atol=1e-9)


def test_sequential_is_flat_outside_window_with_zero_beta():
    s = SequentialSchedule(torch.arange(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64), width=0.2)
    st = s.state(torch.tensor([0.05], dtype=torch.float64))
    waiting = st.gamma[0] <= -7 + 1e-12
    assert waiting.any() and torch.all(st.gamma_dot[0][waiting] == 0) and torch.all(st.beta[0][waiting] == 0)
    assert torch.allclose(s.gamma(torch.ones(1, dtype=torch.float64))[0], torch.full((D,), 3.0, dtype=torch.float64))


def test_family_sampling_and_per_example_params():
    s = SoftConditioningSchedule(torch.arange(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64),
                                 param_range=[[0.4, 1.6]])
    p = s.sample_params(1000, torch.Generator().manual_seed(0))
    assert p.shape == (1000, 1) and p.min() >= 0.4 and p.max() <= 1.6
    t = torch.full((3,), 0.5, dtype=torch.float64)
    g = s.gamma(t, torch.tensor([[0.4], [1.0], [1.6]], dtype=torch.float64))
    for i, a in enumerate((0.4, 1.0, 1.6)):
        assert torch.allclose(g[i], s.gamma(t[:1], torch.tensor([a]))[0])


def test_param_map_for_two_orderings():
    labels = torch.stack([torch.arange(D), torch.arange(D).flip(0)]).double()
    s = SoftConditioningSchedule(labels, torch.zeros(D, dtype=torch.float64), a=[1.0, 0.0],
                                 param_map=lambda p: torch.stack([p[:, 0] * (1 - p[:, 1]), p[:, 0] * p[:, 1]], 1))
    t = torch.tensor([0.3], dtype=torch.float64)
    ref0 = SoftConditioningSchedule(labels[0], torch.zeros(D, dtype=torch.float64), a=1.0).gamma(t)
    ref1 = SoftConditioningSchedule(labels[1], torch.zeros(D, dtype=torch.float64), a=1.0).gamma(t)
    assert torch.allclose(s.gamma(t), ref0)
    assert torch.allclose(s.gamma(t, torch.tensor([1.0, 1.0])), ref1)


def test_bad_input():
    lab = torch.arange(D, dtype=torch.float64)
    with pytest.raises(ValueError, match=">= 0"):
        SoftConditioningSchedule(lab, torch.zeros(D), a=-0.5)
    s = SoftConditioningSchedule(lab, torch.zeros(D))
    with pytest.raises(ValueError, match=">= 0"):
        s.gamma(torch.ones(1), torch.tensor([-1.0]))
    with pytest.raises(ValueError, match="NaN"):
        s.gamma(torch.ones(1), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="log_var"):
        SoftConditioningSchedule(lab, torch.zeros(D + 1))
    with pytest.raises(ValueError, match="NaN"):
        SoftConditioningSchedule(lab * float("nan"), torch.zeros(D))
    with pytest.raises(ValueError, match="width"):
        SequentialSchedule(lab, torch.zeros(D), width=0.0)
    with pytest.raises(ValueError, match="t must be"):
        s.gamma(torch.ones(2, 2))


def test_clipped_soft_conditioning_keeps_order_and_bounds():
    labels = torch.arange(D, dtype=torch.float64)
    plain = SoftConditioningSchedule(labels, torch.zeros(D, dtype=torch.float64), a=5.0)
    clipped = SoftConditioningSchedule(labels, torch.zeros(D, dtype=torch.float64), a=5.0, clip=True)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    g = clipped.gamma(t)
    assert g.min() >= -7 - 1e-12 and g.max() <= 3 + 1e-12
    inside = (plain.gamma(t) > -7) & (plain.gamma(t) < 3)
    assert torch.equal(g[inside], plain.gamma(t)[inside])  # same ramps where active
    st = clipped.state(t)
    waiting = (plain.gamma(t) < -7 - 1e-9) | (plain.gamma(t) > 3 + 1e-9)
    assert waiting.any() and torch.all(st.gamma_dot[waiting] == 0)  # flat (rate zero) while waiting


def test_schedule_to_device_copy():
    """``schedule.to(device)`` returns a copy with its tensors moved; the original is unchanged."""
    from gud.schedules import SoftConditioningSchedule

    s = SoftConditioningSchedule(torch.arange(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64),
                                 param_range=[[0.5, 2.0]], clip=True, endpoints="process")
    c = s.to("cpu")
    assert c is not s and c.labels is not None
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    torch.testing.assert_close(c.gamma(t, torch.tensor([1.3])), s.gamma(t, torch.tensor([1.3])))
    g = torch.Generator().manual_seed(0)
    p = c.sample_params(4, g)
    assert p.shape == (4, 1) and bool(((p >= 0.5) & (p <= 2.0)).all())
