"""``python -m gud verify``: a recomputation within its error passes; a moved metric, a flipped
verdict or a missing result fails, each printed with reference, recomputed value and tolerance."""
import copy

import numpy as np
import pytest

from gud import verify as V
from gud.__main__ import main
from gud.profiles import experiment_config
from gud.results import ResultsStore


def _result(seed: int, shift: float = 0.0, verdict: str = "holds"):
    rng = np.random.default_rng(0)
    hard = rng.normal(2.5, 0.4, size=300)
    noise = np.random.default_rng(seed).normal(0, 1e-4, size=300)   # floating-point-sized differences
    per = np.stack([hard + noise + shift, 0 * hard, hard - 1, 1 + 0 * hard]).astype(np.float32)
    metrics = {"rows": [{"id": "digits/family/1", "model": "family", "converged": True, "score": 0.1,
                         "score_se": 0.02, "bpd_s": 3.0 + seed}],
               "claims": [{"id": "e1-x", "dataset": "digits", "verdict": verdict}],
               "datasets": {"digits": {"uniform_bpd": 4.087462841250339, "score_real": 0.001, "score_real_se": 0.002}}}
    return metrics, {"per_image/digits/family/1": per}


def test_within_error_passes_and_timings_are_skipped():
    ref, new = V.checks_of(*_result(0)), V.checks_of(*_result(1))
    checks = V.compare(ref, new)
    assert checks and all(c.ok for c in checks)
    assert not any("bpd_s" in c.name for c in checks)


def test_a_moved_metric_fails_with_its_numbers():
    checks = V.compare(V.checks_of(*_result(0)), V.checks_of(*_result(0, shift=0.5)))
    bad = [c for c in checks if not c.ok]
    assert [c.name for c in bad] == ["rows/digits/family/1/total_bpd_test"]
    line = bad[0].line()
    assert "reference 2.4" in line and "recomputed 2.9" in line and "±" in line
    # the tolerance is the quantity's own error: 4 standard errors of a 300-image mean
    assert bad[0].tolerance == pytest.approx(V.Z_VERIFY * np.sqrt(2) * 0.4 / np.sqrt(300), rel=0.15)


def test_a_flipped_verdict_or_flag_fails():
    m, a = _result(0, verdict="inconclusive")
    checks = V.compare(V.checks_of(*_result(0)), V.checks_of(m, a))
    assert [c.name for c in checks if not c.ok] == ["claims/e1-x/digits/verdict"]
    m2 = copy.deepcopy(_result(0)[0])
    m2["rows"][0]["converged"] = False
    assert not all(c.ok for c in V.compare(V.checks_of(*_result(0)), V.checks_of(m2, _result(0)[1])))
    m3 = copy.deepcopy(_result(0)[0])
    m3["datasets"]["digits"]["uniform_bpd"] += 1e-3             # a closed form without error bar
    assert not all(c.ok for c in V.compare(V.checks_of(*_result(0)), V.checks_of(m3, _result(0)[1])))


def test_command_on_a_perturbed_reference(tmp_path, capsys):
    """The command end to end on two stores: equal results pass (rc 0), a perturbed reference
    fails (rc 1) and a missing recomputation fails."""
    cfg = experiment_config("framework", "ci")
    ref, new = ResultsStore(tmp_path / "ref"), ResultsStore(tmp_path / "new")
    m, a = _result(0)
    ref.save("framework", "ci", cfg, m, a)
    new.save("framework", "ci", cfg, *_result(1))
    args = ["verify", "framework", "--profile", "ci", "--reference", str(ref.root), "--against", str(new.root)]
    assert main(args) == 0
    m["claims"][0]["verdict"] = "does not hold"
    ref2 = ResultsStore(tmp_path / "ref2")
    ref2.save("framework", "ci", cfg, m, a)
    args[5] = str(ref2.root)
    assert main(args) == 1
    assert "FAIL claims/e1-x" in capsys.readouterr().out.replace("framework: ", "")
    assert main(["verify", "framework", "--profile", "ci", "--reference", str(ref.root),
                 "--against", str(tmp_path / "empty")]) == 1


def test_timings_in_words_are_not_compared():
    m0, a = _result(0)
    m1 = copy.deepcopy(m0)
    m0["compute_description"], m1["compute_description"] = "no training, 18 s", "no training, 17 s"
    assert all(c.ok for c in V.compare(V.checks_of(m0, a), V.checks_of(m1, a)))
