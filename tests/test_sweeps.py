"""Tests of gud.sweeps: labels, the (a, r) mix, the standard-diffusion schedule, seed statistics,
and a tiny end-to-end train/evaluate run."""
import math

import numpy as np
import pytest
import torch

from gud import pipeline, sweeps
from gud.schedules import SoftConditioningSchedule


@pytest.fixture(scope="module")
def setup_pca():
    return pipeline.prepare("digits", "pca", whitened=False, limit=200, test_limit=40)


def test_mixed_label_rows_normalises_range():
    l1 = torch.tensor([0.0, 1.0, 5.0])
    l2 = torch.tensor([10.0, 30.0, 20.0])
    rows = sweeps.mixed_label_rows(l1, l2)
    assert rows.shape == (2, 3)
    torch.testing.assert_close(rows[0], l1.double())
    torch.testing.assert_close(rows[1], torch.tensor([0.0, 5.0, 2.5], dtype=torch.float64))
    with pytest.raises(ValueError):
        sweeps.mixed_label_rows(l1, torch.ones(3))


def test_mix_param_map_endpoints_reproduce_single_orderings():
    l_var, l_freq = torch.randn(6), torch.randn(6)
    rows = sweeps.mixed_label_rows(l_var, l_freq)
    log_var = torch.randn(6)
    mix = SoftConditioningSchedule(rows, log_var, a=[1.0, 0.0], param_map=sweeps.mix_param_map)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    for a, r, row in ((0.7, 0.0, 0), (1.3, 1.0, 1)):
        single = SoftConditioningSchedule(rows[row], log_var, a=a)
        torch.testing.assert_close(mix.gamma(t, torch.tensor([a, r])), single.gamma(t))
    w = sweeps.mix_param_map(torch.tensor([[2.0, 0.25]]))
    torch.testing.assert_close(w, torch.tensor([[1.5, 0.5]]))


def test_standard_diffusion_schedule_equals_variance_labels_at_a1_unwhitened(setup_pca):
    prior = setup_pca.prior
    soft = SoftConditioningSchedule(sweeps.variance_labels(prior), prior.log_var, a=1.0,
                                    gamma_denoise=-2.0, gamma_noise=3.0)
    sd = sweeps.standard_diffusion_schedule(prior.var, -2.0, 3.0)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    g = soft.gamma(t)
    torch.testing.assert_close(g, g[:, :1].expand_as(g))  # one common gamma: standard diffusion
    torch.testing.assert_close(sd.gamma(t), g)


def test_mean_stderr_aggregate_compare():
    m, se = sweeps.mean_stderr([1.0, 2.0, 3.0])
    assert m == 2.0 and se == pytest.approx(1 / math.sqrt(3))
    assert math.isnan(sweeps.mean_stderr([4.0])[1])
    rows = [{"a": 1.0, "seed": s, "bpd": 1.0 + s, "fcd": 2.0} for s in range(3)]
    rows += [{"a": 2.0, "seed": s, "bpd": 5.0, "fcd": 1.0 * s} for s in range(3)]
    agg = sweeps.aggregate(rows, ["a"])
    assert [r["a"] for r in agg] == [1.0, 2.0]
    assert agg[0]["bpd_mean"] == 2.0 and agg[0]["n_seeds"] == 3 and agg[1]["bpd_se"] == 0.0
    assert sweeps.compare(1.0, 0.1, 2.0, 0.1) == -1
    assert sweeps.compare(2.0, 0.1, 1.0, 0.1) == 1
    assert sweeps.compare(1.0, 0.5, 1.2, 0.5) == 0
    assert sweeps.compare(1.0, float("nan"), 3.0, 0.1) == 0
    table = sweeps.format_table(agg, [("a", "a", ":.1f"), ("bits/dim", "bpd", "pm:.2f")])
    assert "2.00 ± 0.58" in table and table.splitlines()[0].split() == ["a", "bits/dim"]


def test_train_family_and_evaluate_grid_end_to_end(setup_pca):
    torch.set_num_threads(1)
    prior = setup_pca.prior
    fam = SoftConditioningSchedule(sweeps.variance_labels(prior), prior.log_var, gamma_denoise=-2.0,
                                   param_range=[[0.4, 1.6]])
    tn = sweeps.train_family(setup_pca, fam, net_kwargs={"hidden": 32, "depth": 1}, steps=20, batch_size=32,
                             seed=3)
    tn2 = sweeps.train_family(setup_pca, fam, net_kwargs={"hidden": 32, "depth": 1}, steps=20, batch_size=32,
                              seed=3)
    assert tn.steps == 20 and tn.throughput > 0 and math.isfinite(tn.final_loss)
    for p, q in zip(tn.model.parameters(), tn2.model.parameters()):  # seeded: reproducible
        torch.testing.assert_close(p, q)
    rows, kept = sweeps.evaluate_grid(tn.model, setup_pca, fam, [[0.5], [1.5]], classifier=None,
                                      n_samples=8, sampler_steps=4, keep_samples=3)
    assert [r["params"] for r in rows] == [[0.5], [1.5]]
    assert all(math.isfinite(r["bpd"]) and r["bpd"] > 0 and math.isnan(r["fcd"]) for r in rows)
    assert kept.shape == (2, 3, 64) and np.abs(kept).max() <= 1
    traj = sweeps.denoised_trajectory(tn.model, setup_pca, fam, params=[1.0], times=[0.8, 0.2, 0.0], n=2,
                                      steps=5)
    assert traj.shape == (3, 2, 64)
