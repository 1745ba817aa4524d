"""Every committed result matches a current configuration (none is stale), loads without
pickle, and says which machine computed it."""
import subprocess
import sys
from pathlib import Path

import pytest

from gud.profiles import EXPERIMENTS, experiment_config
from gud.results import ResultsStore
from gud.runner import stale

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile", ["gpu", "paper"])
def test_no_committed_result_is_stale(profile):
    old = stale(profile)
    assert not old, f"stale {profile} results (recompute with `python -m gud run ... --profile {profile}` or delete): {old}"


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_committed_gpu_results_load(exp):
    store = ResultsStore()
    res = store.load(exp, "gpu", experiment_config(exp, "gpu"))
    if res is None:
        pytest.skip(f"no gpu result of {exp} committed")
    assert res.metrics and "device" in res.info


def test_status_check_command():
    out = subprocess.run([sys.executable, "-m", "gud", "status", "--profile", "gpu", "--check"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "framework" in out.stdout
