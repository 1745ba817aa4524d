"""E4 end to end at a micro configuration (seconds), through the runner with a temporary store."""

import copy
import math

import numpy as np
import pytest

from gud.data import DatasetNotFoundError
from gud.experiments import e4
from gud.results import ResultsStore
from gud.runner import run
from gud.protocol import NOT_ASSESSABLE, VERDICTS
from gud.stats import Evidence

B_EVAL = [0.5, 0.3, 0.05]


def micro_config() -> dict:
    cfg = copy.deepcopy(e4.CONFIGS["ci"])
    cfg["datasets"][0].update(n_train=300, n_val=40, n_test=40, height=4, width=4, super_shape=[16, 64],
                              extend_width=10, extend_n=16, extend_batch=None, check_width=7, reference_n=40)
    cfg.update(max_steps=30, eval_every=10, patience=2, b_col_eval=B_EVAL, n_time_samples=2, sampler_steps=4,
               window_column_steps=6, net_kwargs={"hidden": 32, "depth": 1}, schedule_b_col=[1.0, 0.05],
               exact_chunk=16)
    cfg["extend"].update(n_boot=4, show=2)
    cfg["sampler_checks"] = [{"b_col": 0.3, "steps": 8}, {"b_col": 0.05, "gamma_noise": 3.0}]
    return cfg


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e4")
    return run("e4", "ci", config=micro_config(), store=ResultsStore(tmp / "results"), runs_root=tmp / "runs",
               log=lambda s: None)


def test_bits_per_dim_rows(result):
    rows = [r for r in result.metrics["rows"] if r["model"] != "full_gaussian"]
    assert {(r["model"], r["b_col"]) for r in rows} == {(m, b) for m in ("network", "gaussian", "exact")
                                                        for b in B_EVAL}
    E = Evidence(result.metrics["rows"], result.arrays)
    for r in rows:
        assert math.isclose(r["a"], 1 / r["b_col"])
        m, se = E.bpd(id=r["id"])
        assert np.isfinite(r["bpd"]) and m == pytest.approx(r["bpd"], rel=1e-5) and se > 0
        terms = r["prior_bpd"] + r["diffusion_bpd"] + r["reconstruction_bpd"]
        assert abs(terms - r["bpd"]) < 1e-6 * abs(r["bpd"]) + 1e-9
    info = result.metrics["datasets"]["grf8"]
    assert info["n_val"] == 40 and info["shape"] == [1, 4, 4]
    assert info["title"] == "Gaussian random field, 4×4 windows"
    assert 5 < info["reference_bpd"] < 8 and info["uniform_bpd"] == 8.0


def test_extensions(result):
    cfg, arrays, ext = result.config, result.arrays, result.metrics["extension"]
    d = cfg["datasets"][0]
    main = [r for r in ext if not r["check"]]
    keys = {r["key"] for r in main}
    assert keys == {"slide-bcol0.3", "slide-bcol0.05", "no_conditioning-bcol0.3", "tiles-bcol0.3",
                    "exact-slide-bcol0.3", "exact-slide-bcol0.05", "true"}
    for r in main:
        imgs = arrays[f"grf8/images/{r['key']}"]
        assert imgs.shape == (2, 1, 4, d["extend_width"])  # the requested width, `show` images kept
        assert r["width"] == d["extend_width"] and r["n"] == d["extend_n"]
        assert np.abs(imgs).max() <= 1
        assert "bcol" not in r["label"] and ("column softness" in r["label"] or r["model"] == "truth")
        assert arrays[f"grf8/scores/{r['key']}/c1"].shape == (d["extend_width"] - 1,)
        for k in ("c1_mae_outside", "var_bias_outside", "c1_bias_outside_se", "w1_mean_outside"):
            assert np.isfinite(r[k])
    # the initial window is kept exactly: sliding and the unconditioned baseline share it
    w = d["width"]
    a, b = arrays["grf8/images/slide-bcol0.3"], arrays["grf8/images/no_conditioning-bcol0.3"]
    assert np.array_equal(a[..., :w], b[..., :w])
    assert not np.array_equal(a[..., w:], b[..., w:])


def test_sampler_checks(result):
    checks = [r for r in result.metrics["extension"] if r["check"]]
    keys = {r["key"] for r in checks}
    assert "check-bcol0.3-dpmpp_2m_sde-8steps-gn7" in keys and "check-bcol0.05-dpmpp_2m_sde-4steps-gn3" in keys
    assert "check-bcol0.3-dpmpp_2m_sde-4steps-gn7" in keys  # the setting used, cropped
    assert "check-true" in keys
    assert all(r["width"] == 7 for r in checks)


def test_claims(result):
    claims = result.metrics["claims"]
    assert len(claims) == 4
    assert claims[0]["verdict"] == NOT_ASSESSABLE  # the PatchCamelyon numbers
    assert "PatchCamelyon" in claims[0]["reason"]
    for c in claims:
        assert c["verdict"] in VERDICTS and c["test"] and c["id"].startswith("e4-")
    assert "data_description" in result.metrics


def test_log_snr_and_curves(result):
    s = result.arrays["grf8/log_snr/bcol0.05"]
    assert s.shape == (201, 4)
    assert np.allclose(s[0], 7.0) and np.allclose(s[-1], -7.0)  # clean at t = 0, noise at t = 1
    assert (np.diff(s, axis=0) <= 1e-12).all()
    assert any(k.startswith("curves/") and k.endswith("/val") for k in result.arrays)


def test_window_steps():
    assert e4.window_steps(50, 8, 20.0, 14.0) == math.ceil(50 * 8 / 1.7)
    assert e4.window_steps(50, 8, 0.5, 14.0) == 50  # all columns move together
    assert e4.window_steps(100, 8, 1 / 0.3, 14.0) > e4.window_steps(100, 8, 1.0, 14.0)


def test_patchcamelyon_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GUD_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("GUD_DATA_MIRROR", "")
    monkeypatch.setenv("GUD_OFFLINE", "1")
    with pytest.raises(DatasetNotFoundError, match="PatchCamelyon is not available offline"):
        run("e4", "paper", store=ResultsStore(tmp_path / "results"), runs_root=tmp_path / "runs", log=lambda s: None)
