"""The command line rejects bad values up front with one line, skips an experiment whose data set is
missing, stops cleanly on SIGINT/SIGTERM with a checkpoint and a message (exit 130/143) and
resumes, and counts its budget from the process start (issue 16)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import fake_experiment
from gud.__main__ import main
from gud.results import ResultsStore, verify_checked
from gud.runner import run

REPO = Path(__file__).resolve().parents[1]
FAKE = Path(fake_experiment.__file__)


@pytest.mark.parametrize("argv, env, needle", [
    (["run", "--pending"], {"GUD_PROFILE": "gpu_"}, "'gpu_'"),
    (["status", "--check"], {"GUD_PROFILE": "gpu_"}, "'gpu_'"),
    (["run", "e1", "--profile", "nope"], {}, "'nope'"),
    (["run", "e1", "e2", "--jobs", "0"], {}, "--jobs"),
    (["run", "e1", "--budget-s", "0"], {}, "--budget-s"),
    (["run", "e1", "--budget-s", "-5"], {}, "--budget-s"),
    (["run", "e1", "--budget-s", "nan"], {}, "--budget-s"),
    (["run", "e1", "--budget-s", "inf"], {}, "--budget-s"),
])
def test_bad_values_are_rejected_in_one_line(monkeypatch, capsys, argv, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and needle in err, err


def test_a_missing_data_set_skips_that_experiment_only(monkeypatch, tmp_path, capsys):
    fake_experiment.register(monkeypatch)
    fake = sys.modules["gud.experiments.fake"]  # the registered clone
    monkeypatch.setitem(fake.CONFIGS["ci"], "missing_data", True)
    monkeypatch.setenv("GUD_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("GUD_RUNS", str(tmp_path / "runs"))
    rc = main(["run", "fake", "fake2", "--profile", "ci", "--quiet"])
    out = capsys.readouterr()
    assert rc == 4 and "skipped fake: no copy of the data set 'fake'" in out.err
    assert list((tmp_path / "results" / "fake2" / "ci").glob("*/metrics.json"))


CMD = [sys.executable, str(FAKE), "run", "fake", "--profile", "ci", "--quiet"]


def _env(tmp_path: Path, steps: int, sleep: float) -> dict:
    return dict(os.environ, GUD_RESULTS=str(tmp_path / "results"), GUD_RUNS=str(tmp_path / "runs"),
                FAKE_STEPS=str(steps), FAKE_STEP_SLEEP=str(sleep), PYTHONUNBUFFERED="1", GUD_THREADS="1",
                OMP_NUM_THREADS="1", PYTHONPATH=str(FAKE.parent))


def _interrupt(proc: subprocess.Popen, sig: int) -> str:
    lines = []
    for line in proc.stdout:  # wait until training runs
        lines.append(line)
        if "first training step" in line:
            break
    time.sleep(0.2)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    return "".join(lines) + out


def test_ctrl_c_writes_a_checkpoint_says_what_remains_and_the_run_resumes(tmp_path, monkeypatch):
    """A real SIGINT from outside, mid-training: exit 130, a checkpoint, a message; the run resumes."""
    proc = subprocess.Popen(CMD, cwd=REPO, env=_env(tmp_path, 400, 0.02), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = _interrupt(proc, signal.SIGINT)
    assert proc.returncode == 130, out
    assert "training interrupted by SIGINT at step" in out and "Remaining: fake" in out
    assert "Run the same command again to resume" in out and "Traceback" not in out
    ckpts = list((tmp_path / "runs" / "fake" / "ci").glob("*/net.pt"))
    assert len(ckpts) == 1
    verify_checked(ckpts[0])
    step = torch.load(ckpts[0], weights_only=True)["step"]
    assert 0 < step < 400
    # the same run (here in this process: the same code, configuration and run folder) resumes from it
    fake_experiment.register(monkeypatch)
    monkeypatch.setitem(sys.modules["gud.experiments.fake"].CONFIGS["ci"], "steps", 400)
    lines = []
    res = run("fake", "ci", store=ResultsStore(tmp_path / "results"), runs_root=tmp_path / "runs", log=lines.append)
    assert "[fake] train net (resuming)" in lines and res.metrics["steps"] == 400


def test_sigterm_writes_a_checkpoint_and_exits_143(tmp_path, monkeypatch, capsys):
    """SIGTERM at step 5 of the training (sent by the process to itself, in this process)."""
    import gud.train as train

    fake_experiment.register(monkeypatch)
    monkeypatch.setenv("GUD_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("GUD_RUNS", str(tmp_path / "runs"))
    step = train.TrainStep.step

    def step_then_term(self, batch, generator, i):
        if i == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, batch, generator, i)

    monkeypatch.setattr(train.TrainStep, "step", step_then_term)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        rc = main(["run", "fake", "fake2", "--profile", "ci", "--quiet"])
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    out = capsys.readouterr().out
    assert rc == 143 and "training interrupted by SIGTERM at step 6 of 30" in out and "Remaining: fake, fake2" in out
    ckpt = next((tmp_path / "runs" / "fake" / "ci").glob("*/net.pt"))
    verify_checked(ckpt)
    assert torch.load(ckpt, weights_only=True)["step"] == 6


def test_the_budget_counts_from_the_process_start():
    code = "import time; time.sleep(0.5); import gud.__main__ as m; print(time.monotonic() - m.STARTED)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert float(out.stdout) >= 0.5  # the sleep before the import is counted
