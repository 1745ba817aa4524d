"""Every training experiment runs at a micro configuration through the runner (seconds), resumes
after an interruption to the same result, and its stored networks load and sample on the CPU."""
import math

import numpy as np
import pytest
import torch

from gud.labels import family, variance_labels
from gud.pipeline import generate
from gud.profiles import experiment_config
from gud.results import ResultsStore, load_model
from gud.runner import BudgetExhausted, pending, run

MICRO = {
    "e1": dict(max_steps=40, eval_every=20, patience=2, seeds=[0, 1], a_eval=[0.4, 1.0, 2.0], n_samples=30,
               sampler_steps=8, score_steps=30, net_kwargs={"hidden": 32, "depth": 1}, trajectory_times=[0.5, 0.0],
               show_a=[1.0], show_samples=3, trajectory_n=2, trajectory_a=[1.0], trajectory_steps=8, baseline_seeds=[0, 1]),
    "e2": dict(max_steps=40, eval_every=20, patience=2, seeds=[0, 1], a_eval=[0.4, 1.0], r_eval=[0.0, 1.0],
               n_samples=30, sampler_steps=8, score_steps=30, net_kwargs={"hidden": 32, "depth": 1}, show_samples=3),
}


def micro(exp):
    cfg = experiment_config(exp, "ci")
    cfg.update(MICRO[exp])
    return cfg


@pytest.fixture
def where(tmp_path):
    return dict(store=ResultsStore(tmp_path / "results"), runs_root=tmp_path / "runs", log=lambda s: None)


def test_e1_micro(where):
    res = run("e1", "ci", config=micro("e1"), **where)
    rows = res.metrics["rows"]
    trained = {(r["prior"], r["convention"]) for r in rows if r["model"] == "family"}
    # whitened: "snr" and "process" coincide, so only one of them is trained
    assert trained == {("whitened", "snr"), ("whitened", "process-clipped"), ("unwhitened", "snr"),
                       ("unwhitened", "process"), ("unwhitened", "process-clipped")}
    for r in rows:
        assert math.isfinite(r["bpd"]) and r["bpd"] > 0
        if r["model"] == "full_gaussian":  # a closed form: no terms
            continue
        terms = r["prior_bpd"] + r["diffusion_bpd"] + r["reconstruction_bpd"]
        assert abs(terms - r["bpd"]) < 1e-6  # the three terms add up
    g = {(r["prior"], r["a"]): r["bpd"] for r in rows if r["model"] == "gaussian" and r["convention"] == "process-clipped"}
    # process-clipped: the Gaussian model's ends (prior KL, reconstruction) do not depend on a
    ends = {(r["prior"], round(r["prior_bpd"], 9), round(r["reconstruction_bpd"], 6)) for r in rows
            if r["model"] == "gaussian" and r["convention"] == "process-clipped"}
    assert len(ends) == 2 and len(g) == 6
    assert {c["id"] for c in res.metrics["claims"]} >= {"e1-smooth", "e1-near-optimal", "e1-priors-rank"}
    assert res.arrays["digits/family/whitened/trajectory"].shape == (1, 2, 2, 64)
    assert res.arrays["digits/family/whitened/a1/samples"].shape == (3, 64)
    assert set(res.info["trainings"]) >= {"digits-family-whitened-process-clipped-seed0", "digits-pixel_sd-seed1"}


def test_e2_micro(where):
    res = run("e2", "ci", config=micro("e2"), **where)
    fam = [r for r in res.metrics["rows"] if r["model"] == "family"]
    assert len(fam) == 2 * 4 and all(math.isfinite(r["score"]) for r in fam)
    assert 0 < res.metrics["datasets"]["digits"]["offdiagonal_share"] < 1
    # claims are a function of the stored numbers: refreshing them from the store changes nothing,
    # and repairs claims written by other code
    from gud.verify import refresh_claims

    cfg, store = micro("e2"), where["store"]
    store.update_metrics("e2", "ci", cfg, {"claims": [{**c, "verdict": "holds"} for c in res.metrics["claims"]]})
    assert refresh_claims("e2", "ci", store, cfg)["claims"] == res.metrics["claims"]


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    cfg = micro("e1")
    cfg.update(conventions=["process-clipped"], reference_conventions=["process-clipped"], baselines=[],
               seeds=[0], max_steps=120, eval_every=40, patience=None)
    quiet = dict(log=lambda s: None)
    ref = run("e1", "ci", config=cfg, store=ResultsStore(tmp_path / "a"), runs_root=tmp_path / "ra", **quiet)
    store, runs = ResultsStore(tmp_path / "b"), tmp_path / "rb"
    with pytest.raises(BudgetExhausted):
        run("e1", "ci", config=cfg, store=store, runs_root=runs, budget_s=0.0, **quiet)
    assert store.load("e1", "ci", cfg) is None
    interrupted = 0
    for budget in (1.5, 1.5, 1.5, 1.5):  # stop mid-training, resume from the checkpoint, again
        try:
            res = run("e1", "ci", config=cfg, store=store, runs_root=runs, budget_s=budget, **quiet)
            break
        except BudgetExhausted:
            interrupted += 1
    else:
        res = run("e1", "ci", config=cfg, store=store, runs_root=runs, **quiet)
    key = lambda r: r["id"]  # noqa: E731  (model, prior, convention, a, seed)
    a = {key(r): r for r in ref.metrics["rows"]}
    assert sorted(a) == sorted(key(r) for r in res.metrics["rows"])
    for r in res.metrics["rows"]:
        for m in ("bpd", "score"):
            if m in r:
                assert r[m] == pytest.approx(a[key(r)][m], rel=1e-6, abs=1e-9), (key(r), m)
    np.testing.assert_allclose(res.arrays["digits/family/whitened/a1/samples"],
                               ref.arrays["digits/family/whitened/a1/samples"], rtol=1e-5, atol=1e-6)


def test_stored_network_loads_and_samples_on_cpu(where):
    cfg = micro("e1")
    cfg.update(conventions=["process-clipped"], reference_conventions=["process-clipped"], baselines=[], seeds=[0])
    run("e1", "ci", config=cfg, **where)
    lm = load_model("e1", "digits-family-whitened-process-clipped-seed0", "ci", config=cfg, store=where["store"])
    assert lm.prior.whitened and lm.spec["net"] == "mlp"
    sched = family(variance_labels(lm.prior), lm.prior, "process-clipped", a=1.0,
                   gamma_denoise=cfg["gamma_denoise"], gamma_noise=cfg["gamma_noise"])

    class S:  # the minimal setup generate() needs
        prior = lm.prior

    x = generate(lm.model, S, sched, 4, steps=10, method="ddim", seed=0)
    assert x.shape == (4, 64) and torch.isfinite(x).all() and x.abs().max() <= 1
    with pytest.raises(FileNotFoundError, match="stored"):
        load_model("e1", "no-such-network", "ci", config=cfg, store=where["store"])


def test_pending_lists_missing_results(tmp_path):
    assert "e1" in pending("ci", ResultsStore(tmp_path))


def test_fid_of_stored_samples_is_written_into_the_result(where, monkeypatch):
    """E1 keeps 8-bit samples when `fid_samples` is set; `gud.fid.score_stored` scores them and
    writes the FID into the stored result (the Inception network replaced by cheap features here)."""
    import gud.fid as F

    cfg = micro("e1")
    cfg.update(conventions=["process-clipped"], reference_conventions=["process-clipped"], baselines=["pixel_sd"],
               seeds=[0], baseline_seeds=[0], fid_samples=12)
    res = run("e1", "ci", config=cfg, **where)
    keys = sorted(k for k in res.arrays if k.startswith("fid/"))
    assert keys == ["fid/digits/family-unwhitened-a1", "fid/digits/family-whitened-a1", "fid/digits/pixel_sd"]
    assert res.arrays[keys[0]].dtype == np.uint8 and res.arrays[keys[0]].shape == (12, 64)
    monkeypatch.setattr(F, "fid_features", lambda x, shape, **kw: torch.as_tensor(x).double().reshape(len(x), -1)[:, :8])
    monkeypatch.setattr(F, "data_root", lambda *a: where["runs_root"], raising=False)
    scores = F.score_stored("e1", "ci", config=cfg, store=where["store"], log=lambda s: None)
    assert set(scores) == {"digits/family-unwhitened-a1", "digits/family-whitened-a1", "digits/pixel_sd"}
    stored = where["store"].load("e1", "ci", cfg)
    assert stored.metrics["fid"] == pytest.approx(scores) and stored.metrics["fid_protocol"]["n_samples"] == 12
    assert stored.arrays.keys() == res.arrays.keys()  # arrays untouched


def test_command_line_micro_run_stops_at_the_budget_and_resumes(tmp_path):
    """`python -m gud run --micro --budget-s` stops cleanly, says what remains, and the same command
    resumes and stores the result (the real store untouched)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, GUD_MICRO_ROOT=str(tmp_path), GUD_THREADS="1")
    cmd = [sys.executable, "-m", "gud", "run", "e2", "--profile", "ci", "--micro", "--quiet"]
    first = subprocess.run(cmd + ["--budget-s", "0.5"], cwd=repo, env=env, capture_output=True, text=True)
    assert first.returncode == 3, first.stdout + first.stderr
    assert "budget exhausted" in first.stdout and "Remaining: e2" in first.stdout
    second = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert list((tmp_path / "results" / "e2" / "ci").glob("*/metrics.json"))
