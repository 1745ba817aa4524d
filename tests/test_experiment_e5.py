"""E5 (Haar wavelets x columns) end to end at a micro size: shapes, the numbers that must hold
exactly (the untrained network is the Gaussian model; at (a, b) = (0, 0) every component has
the same noise level), and a run interrupted by its time budget that resumes to the result of
an uninterrupted run."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gud.experiments import e5
from gud.protocol import VERDICTS
from gud.results import ResultsStore
from gud.runner import BudgetExhausted, run

A_EVAL, B_EVAL = [0.0, 6.0], [0.0, 2.0]


def micro(**over) -> dict:
    cfg = {**e5.CONFIGS["ci"], "max_steps": 60, "eval_every": 20, "patience": 2, "seeds": [0],
           "batch_size": 64, "net_kwargs": {"hidden": 32, "depth": 1}, "a_eval": A_EVAL, "b_eval": B_EVAL,
           "score_ab": [[0.0, 0.0], [6.0, 0.0]], "trajectory_ab": [[0.0, 0.0], [6.0, 2.0]],
           "trajectory_times": [0.9, 0.5, 0.0], "n_time_samples": 2, "n_samples": 40, "sampler_steps": 10,
           "show_samples": 3, "score_steps": 20}
    cfg.update(over)
    return cfg


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A temporary results store, runs root and data cache (the sample score's classifier)."""
    monkeypatch.setenv("GUD_DATA", str(tmp_path / "data"))
    return lambda name: dict(store=ResultsStore(tmp_path / name / "results"), runs_root=tmp_path / name / "runs",
                             log=lambda s: None)


def _rows(result, model):
    return {(r["a"], r["b"], r["seed"]): r for r in result.metrics["rows"] if r["model"] == model}


def test_untrained_network_is_the_gaussian_model(isolated):
    res = run("e5", "ci", config=micro(max_steps=0), **isolated("untrained"))
    fam, gauss = _rows(res, "family"), _rows(res, "gaussian")
    assert len(fam) == len(gauss) == len(A_EVAL) * len(B_EVAL)
    for (a, b, _), r in fam.items():
        g = gauss[(a, b, None)]
        for k in ("bpd", "prior_bpd", "diffusion_bpd", "reconstruction_bpd"):
            assert r[k] == pytest.approx(g[k], rel=1e-6, abs=1e-6), (a, b, k)
        if (a, b) in {(0.0, 0.0), (6.0, 0.0)}:
            assert r["score"] == pytest.approx(g["score"], rel=1e-4, abs=1e-5)
    (std,), (gstd,) = _rows(res, "standard").values(), _rows(res, "gaussian_standard").values()
    assert std["bpd"] == pytest.approx(gstd["bpd"], rel=1e-6)
    # the prior KL and the reconstruction term do not depend on (a, b) in the clipped convention;
    # standard diffusion (pixels, white noise) has end terms of its own
    for k in ("prior_bpd", "reconstruction_bpd"):
        vals = [r[k] for r in gauss.values()]
        assert max(vals) - min(vals) < 1e-9, k
    assert abs(gstd["reconstruction_bpd"] - vals[0]) > 1e-3


def test_shapes_and_noise_levels(isolated):
    cfg = micro()
    res = run("e5", "ci", config=cfg, **isolated("shapes"))
    arr, m = res.arrays, res.metrics
    d = m["datasets"]["digits"]
    D = math.prod(d["shape"])
    assert d["shape"] == [1, 8, 8] and d["n_val"] > 0
    assert arr["digits/labels"].shape == (2, D)
    for key in ("bpd", "bpd_se", "prior_bpd", "diffusion_bpd", "reconstruction_bpd"):
        assert arr[f"digits/grid/family/{key}"].shape == (len(A_EVAL), len(B_EVAL))
    T, n = len(cfg["trajectory_times"]), cfg["trajectory_n"]
    for t in ("a0-b0", "a6-b2", "standard"):
        traj = arr[f"digits/trajectory/{t}"]
        assert traj.shape == (T, n, D) and np.abs(traj).max() <= 1.0
        assert arr[f"digits/trajectory/{t}/neg_log_snr"].shape == (T, D)
    for k in ("digits/family/a0-b0/samples", "digits/family/a6-b0/samples", "digits/standard/samples"):
        assert arr[k].shape == (cfg["show_samples"], D)
    assert {"curves/digits-family-seed0/val", "curves/digits-standard-seed0/val"} <= set(arr)

    # a = b = 0: every component at the same noise level at every time; the clipped ends
    g00 = arr["digits/trajectory/a0-b0/neg_log_snr"]
    np.testing.assert_allclose(g00, g00[:, :1].repeat(D, 1), atol=1e-12)
    g = arr["digits/trajectory/a6-b2/neg_log_snr"]
    assert g.min() >= cfg["gamma_denoise"] - 1e-9 and g.max() <= cfg["gamma_noise"] + 1e-9
    np.testing.assert_allclose(g[-1], cfg["gamma_denoise"])  # t = 0: every component denoised
    # a > 0 puts the approximation (scale 0) ahead of the finest details (higher -log SNR = noisier)
    scale = arr["digits/labels"][0]
    mid = g[1]  # t = 0.5
    assert mid[scale == 0].max() <= mid[scale == scale.max()].min()

    # the summary and the claims are computed, each claim with a verdict
    s = m["summary"]["digits"]
    assert (s["family_best"]["a"], s["family_best"]["b"]) in {(a, b) for a in A_EVAL for b in B_EVAL}
    # the best grid point is chosen on the validation split, and reported (its test value) from the grid
    ia, ib = A_EVAL.index(s["family_best"]["a"]), B_EVAL.index(s["family_best"]["b"])
    assert s["family_best"]["bpd"] == pytest.approx(float(arr["digits/grid/family/bpd"][ia, ib]))
    val = {(r["a"], r["b"]): r["bpd_val"] for r in m["rows"] if r["model"] == "family"}
    assert min(val, key=val.get) == (s["family_best"]["a"], s["family_best"]["b"])
    assert m["claims"] and all(c["verdict"] in VERDICTS for c in m["claims"])
    assert any("not CIFAR-10" in c["reason"] for c in m["claims"])


def _interrupt_then_finish(cfg, where) -> tuple:
    """Run with growing budgets (each call resumes the last) until one stops a training mid-way,
    leaving a partial checkpoint; then finish without a budget."""
    runs_root = where["runs_root"]
    for budget in (0.2 * 1.5 ** k for k in range(12)):
        try:
            run("e5", "ci", config=cfg, budget_s=budget, **where)
        except BudgetExhausted:
            ckpts = list(runs_root.rglob("*.pt"))
            partial = [p for p in ckpts if int(torch.load(p, weights_only=True)["step"]) < cfg["max_steps"]]
            if partial:
                return run("e5", "ci", config=cfg, **where), partial
            continue
        pytest.skip("the micro run finished within every budget tried; no interruption to test")
    pytest.fail("no budget interrupted the run mid-training")


def test_interrupted_run_resumes_to_the_same_result(isolated):
    cfg = micro(max_steps=1000, eval_every=100, patience=100)
    resumed, partial = _interrupt_then_finish(cfg, isolated("interrupted"))
    assert partial, "the budget must stop a training mid-way"
    straight = run("e5", "ci", config=cfg, **isolated("straight"))
    assert [r["model"] for r in resumed.metrics["rows"]] == [r["model"] for r in straight.metrics["rows"]]
    for r1, r2 in zip(resumed.metrics["rows"], straight.metrics["rows"]):
        assert r1.keys() == r2.keys()
        for k, v in r1.items():
            if isinstance(v, float):
                assert v == pytest.approx(r2[k], rel=1e-9, abs=1e-12), (r1["model"], r1["a"], r1["b"], k)
            else:
                assert v == r2[k]
    assert resumed.metrics["claims"] == straight.metrics["claims"]
    for k in straight.arrays:
        np.testing.assert_allclose(resumed.arrays[k], straight.arrays[k], rtol=1e-6, atol=1e-7, err_msg=k)
