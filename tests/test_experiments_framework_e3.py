"""The two chapters without training, 'framework' and 'E3', through ``gud.runner.run`` at micro
configurations (seconds), and the schedule helpers they are built on."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gud.experiments import e3, framework
from gud.experiments.framework import active_windows, gamma_spread, max_overlap
from gud.labels import family
from gud.prior import Prior
from gud.bases import make_basis, rank_labels
from gud.results import ResultsStore
from gud.runner import run
from gud.schedules import SequentialSchedule, SoftConditioningSchedule

FRAMEWORK_MICRO = {
    **framework.CONFIGS["ci"], "datasets": ["digits"], "limit": 300, "test_limit": 60, "bases": ["pixel", "pca"],
    "vectors": 2, "n_show": 2, "a_values": [0.0, 1.0, 2.0], "a_figure": [1.0], "n_times": 11, "n_paths": 16,
}
E3_MICRO = {
    **e3.CONFIGS["ci"], "image_size": 8, "n_patches": 300, "times": [0.0, 0.5, 1.0], "n_times": 11,
    "n_paths": 16,
}


def _run(experiment, config, tmp_path):
    store = ResultsStore(tmp_path / "results")
    result = run(experiment, "ci", config=config, store=store, runs_root=tmp_path / "runs", log=lambda s: None)
    again = store.load(experiment, "ci", config)
    assert again is not None and again.metrics == result.metrics
    return result


@pytest.fixture(scope="module")
def fw(tmp_path_factory):
    return _run("framework", FRAMEWORK_MICRO, tmp_path_factory.mktemp("fw"))


@pytest.fixture(scope="module")
def e3_result(tmp_path_factory):
    return _run("e3", E3_MICRO, tmp_path_factory.mktemp("e3"))


# ----------------------------------------------------------------------------- framework


def test_framework_describes_its_data_and_compute(fw):
    m = fw.metrics
    assert m["data_description"] == "scikit-learn digits (embedded), 8×8: 300 training / 60 test images"
    assert m["compute_description"].startswith("no training")
    info = m["datasets"]["digits"]
    assert info["n_train"] == 300 and info["n_test"] == 60 and info["shape"] == [1, 8, 8]
    for b in ("pixel", "pca"):
        row = info["bases"][b]
        assert 1 <= row["n90"] <= row["n99"] <= 64
        # the white-noise prior is the same distribution in every basis
        assert row["bpd_unwhitened"] == pytest.approx(info["bases"]["pixel"]["bpd_unwhitened"], abs=1e-6)
    # PCA packs the variance into fewer components, and is the better whitened prior
    assert info["bases"]["pca"]["n90"] <= info["bases"]["pixel"]["n90"]
    assert info["bases"]["pca"]["bpd_whitened"] < info["bases"]["pixel"]["bpd_whitened"]
    assert fw.arrays["digits.pca.var_sorted"].shape == (64,)
    assert np.all(np.diff(fw.arrays["digits.pca.var_sorted"]) <= 0)


def test_framework_standard_diffusion_has_zero_spread(fw):
    spread = {(r["a"], r["convention"]): r for r in fw.metrics["spread"]}
    for conv in ("snr", "process", "process-clipped"):
        # a = 1, variance labels, white noise: one scalar schedule (standard diffusion)
        assert spread[(1.0, conv)]["white-noise"] < 1e-9
        # a = 0 with the whitened prior: every component has the same process gamma
        assert spread[(0.0, conv)]["whitened"] < 1e-9
    span = fw.metrics["schedule"]["log_var_max"] - fw.metrics["schedule"]["log_var_min"]
    assert spread[(1.0, "snr")]["whitened"] == pytest.approx(span)
    assert spread[(2.0, "process-clipped")]["whitened"] <= 10.0 + 1e-9  # clipped to the band


def test_framework_end_points_per_convention(fw):
    ends = {(r["a"], r["convention"]): r for r in fw.metrics["endpoints"]}
    lo, hi = FRAMEWORK_MICRO["gamma_denoise"], FRAMEWORK_MICRO["gamma_noise"]
    for a in FRAMEWORK_MICRO["a_values"]:
        clipped = ends[(a, "process-clipped")]  # the same process end points for every a
        assert (clipped["gamma0_min"], clipped["gamma0_max"]) == pytest.approx((lo, lo))
        assert (clipped["gamma1_min"], clipped["gamma1_max"]) == pytest.approx((hi, hi))
        snr = ends[(a, "snr")]  # true SNR end points: last-generated at -lo, first-generated at -hi
        assert snr["log_snr0_min"] == pytest.approx(-lo) and snr["log_snr1_max"] == pytest.approx(-hi)
    # process convention, white noise, a = 1: the smallest variance ends at true SNR Sigma_min e^7
    proc = ends[(1.0, "process")]
    assert proc["log_snr0_min"] == pytest.approx(fw.metrics["schedule"]["log_var_min"] - lo)


def test_framework_autoregressive_and_sequential_windows(fw):
    rows = {r["schedule"]: r for r in fw.metrics["windows"]}
    ar = rows["autoregressive"]
    assert ar["max_overlap"] == 1 and ar["n_active"] == 64
    assert ar["length_max"] == pytest.approx(1 / 64)
    rank = fw.arrays["labels.rank"]
    start = fw.arrays["window.autoregressive.start"]
    assert np.all(np.diff(start[np.argsort(rank)]) < 0)  # higher label: noised earlier
    seq = rows["sequential"]
    assert seq["length_median"] == pytest.approx(FRAMEWORK_MICRO["seq_width"], abs=1e-6)
    s = fw.arrays["window.sequential.start"][np.argsort(rank)]
    assert s[-1] == pytest.approx(0.0) and s[0] == pytest.approx(1 - FRAMEWORK_MICRO["seq_width"], abs=1e-6)
    assert np.all(np.diff(s) < 0)  # the sequential schedule generates higher labels later
    assert rows["snr.a1"]["max_overlap"] > 1  # standard diffusion: soft, overlapping windows
    paths = fw.arrays["log_snr.snr.a1"]
    assert paths.shape == (FRAMEWORK_MICRO["n_times"], 16)


# ----------------------------------------------------------------------------- helpers


def _prior(whitened: bool, d: int = 16) -> Prior:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, d, generator=g, dtype=torch.float64) * torch.logspace(0, -2, d, dtype=torch.float64)
    return Prior.fit(make_basis("pixel", (1, 4, d // 4)), x, whitened=whitened, var_floor=1e-6)


def test_max_overlap_counts_open_windows():
    assert max_overlap(torch.tensor([0.0, 0.5]), torch.tensor([0.5, 1.0])) == 1  # touching
    assert max_overlap(torch.tensor([0.0, 0.2, 0.3]), torch.tensor([1.0, 0.8, 0.4])) == 3  # nested
    assert max_overlap(torch.tensor([0.0, math.nan]), torch.tensor([1.0, math.nan])) == 1
    assert max_overlap(torch.tensor([math.nan]), torch.tensor([math.nan])) == 0


@pytest.mark.parametrize("convention", ["snr", "process", "process-clipped", "snr-clipped"])
@pytest.mark.parametrize("whitened", [True, False])
def test_active_windows_match_a_dense_grid(convention, whitened):
    prior = _prior(whitened)
    sched = family(-prior.var.log(), prior, convention, a=1.5)
    start, end = active_windows(sched)
    t = torch.linspace(0, 1, 20001, dtype=torch.float64)
    g = sched.effective_gamma(t)  # [T, D]
    moving = torch.zeros_like(g, dtype=torch.bool)
    moving[1:] = (g[1:] - g[:-1]).abs() > 1e-12
    inside = (g > sched.gamma_denoise) & (g < sched.gamma_noise) & moving
    for i in range(prior.dim):
        ts = t[inside[:, i]]
        if ts.numel() == 0:
            assert math.isnan(start[i]) or end[i] - start[i] < 2e-4
            continue
        assert float(start[i]) == pytest.approx(float(ts.min()), abs=2e-4)
        assert float(end[i]) == pytest.approx(float(ts.max()), abs=2e-4)


def test_snr_clipping_keeps_the_windows_and_whitened_conventions_coincide():
    plain, white = _prior(False), _prior(True)
    lab = -plain.var.log()
    for a in (0.5, 1.0, 3.0):
        w0 = active_windows(family(lab, plain, "snr", a=a))
        w1 = active_windows(family(lab, plain, "snr-clipped", a=a))
        torch.testing.assert_close(w0, w1)
        torch.testing.assert_close(active_windows(family(lab, white, "snr", a=a)),
                                   active_windows(family(lab, white, "process", a=a)))


def test_rank_labels_at_the_band_width_are_autoregressive():
    prior = _prior(True)
    rank = rank_labels(prior.var, descending=True)
    for conv in ("snr", "process-clipped"):
        start, end = active_windows(family(rank, prior, conv, a=10.0))
        assert max_overlap(start, end) == 1
        assert float((end - start).sum()) == pytest.approx(1.0)
        start, end = active_windows(family(rank, prior, conv, a=9.0))
        assert max_overlap(start, end) == 2


def test_gamma_spread_and_sequential_label_convention():
    prior = _prior(False)
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    sd = family(-prior.var.log(), prior, "process-clipped", a=1.0)
    assert gamma_spread(sd, t) == pytest.approx(0.0, abs=1e-12)
    lab = torch.arange(prior.dim, dtype=torch.float64)
    seq = SequentialSchedule(lab, prior.log_var, width=0.25)
    start, end = active_windows(seq)
    torch.testing.assert_close(end - start, torch.full_like(start, 0.25))
    assert float(start[-1]) == 0.0 and float(start[0]) == pytest.approx(0.75)
    with pytest.raises(TypeError):
        active_windows(object())
    assert isinstance(sd, SoftConditioningSchedule)


# ----------------------------------------------------------------------------- E3


def test_e3_rows(e3_result):
    m, arr = e3_result.metrics, e3_result.arrays
    d = 3 * 8 * 8
    assert m["D"] == d and m["data_description"].startswith("image: scikit-learn sample photograph")
    rows = m["rows"]
    assert [rows[k]["convention"] for k in ("i", "ii", "iii", "iv")] == ["process-clipped"] * 4
    assert rows["i"]["gamma_spread"] < 1e-9  # standard diffusion: one scalar schedule
    for k in ("ii", "iv"):  # whitened, process-clipped: every true SNR from e^7 to e^-3
        assert (rows[k]["log_snr0_min"], rows[k]["log_snr0_max"]) == pytest.approx((7.0, 7.0))
        assert (rows[k]["log_snr1_min"], rows[k]["log_snr1_max"]) == pytest.approx((-3.0, -3.0))
        assert rows[k]["log_var_range"] == pytest.approx(0.0)
    for k in ("i", "ii", "iii", "iv"):
        assert arr[f"{k}.xt"].shape == (3, d)
        assert len(rows[k]["active"]) == 3 and all(0.0 <= v <= 1.0 for v in rows[k]["active"])
        assert arr[f"{k}.log_snr"].shape == (11, 16)
    # at t = 0 the whitened rows are the image up to noise of std ~ e^-3.5 in whitened units
    x0 = arr["x0"]
    assert np.abs(arr["ii.xt"][0] - x0).mean() < 0.05
    # row iii: the right-most columns are noised first
    col = torch.arange(d) % 8
    xt = torch.as_tensor(arr["iii.xt"][1])
    err = (xt - torch.as_tensor(x0)).abs()
    assert float(err[col >= 6].mean()) > float(err[col <= 1].mean())
