"""A micro experiment for the tests of the runner and the command line (seconds on one CPU thread).

:func:`register` installs it as ``gud.experiments.fake`` (and ``fake2``) so that the real
``gud.runner.run``, ``status``, ``pending`` and ``python -m gud`` treat it like a chapter; in a
subprocess, ``python tests/fake_experiment.py run fake ...`` registers it and calls
``gud.__main__.main``. It trains one small MLP on 8x8 digits through ``ctx.train`` (checkpoint,
weights stored beside the result), memoises one step through ``ctx.cached`` whose value is
``FACTOR * config["factor"]`` (``FACTOR`` stands for the code: tests change it together with the
code hash), and raises ``DatasetNotFoundError`` when ``config["missing_data"]`` is set.
"""
from __future__ import annotations

import copy
import sys
import time
import types

import numpy as np

CONFIGS = {
    "ci": {"steps": 30, "factor": 1.0, "threads": 1, "missing_data": False},
    "gpu": {"steps": 30, "factor": 1.0, "threads": 1, "missing_data": False},
}
FACTOR = 1.0
NAMES = ("fake", "fake2")


def compute(config, ctx):
    from gud.data import DatasetNotFoundError
    from gud.pipeline import prepare
    from gud.schedules import CosineSchedule

    if config["missing_data"]:
        raise DatasetNotFoundError("no copy of the data set 'fake' (GUD_OFFLINE=1 and no mirror)")
    memo = ctx.cached("value", lambda: {"v": FACTOR * config["factor"], "a": np.arange(3.0) * FACTOR})
    setup = prepare("digits", "pixel", limit=200, test_limit=20)
    tn = ctx.train("net", setup, CosineSchedule(setup.train.dim), net="mlp", net_kwargs={"hidden": 16, "depth": 1},
                   steps=config["steps"], batch_size=32, seed=0, warmup=1, log_every=5)
    w = float(sum(p.detach().double().sum() for p in tn.model.parameters()))
    return {"v": memo["v"], "w": w, "steps": tn.steps}, {"a": memo["a"]}


def register(monkeypatch=None) -> None:
    """Make ``fake`` and ``fake2`` experiments of gud (with ``monkeypatch`` undone after the test)."""
    import gud.__main__ as cli
    import gud.profiles as profiles
    import gud.runner as runner

    mod = sys.modules[__name__]
    names = tuple(profiles.EXPERIMENTS) + tuple(n for n in NAMES if n not in profiles.EXPERIMENTS)
    for name in NAMES:
        clone = types.ModuleType(f"gud.experiments.{name}")
        clone.CONFIGS, clone.compute = copy.deepcopy(mod.CONFIGS), mod.compute
        if monkeypatch is not None:
            monkeypatch.setitem(sys.modules, f"gud.experiments.{name}", clone)
        else:
            sys.modules[f"gud.experiments.{name}"] = clone
    for m in (profiles, runner, cli):
        if monkeypatch is not None:
            monkeypatch.setattr(m, "EXPERIMENTS", names)
        else:
            m.EXPERIMENTS = names


def _slow_steps(seconds: float) -> None:
    """Each training step sleeps ``seconds`` (for the signal test)."""
    import gud.train as train

    step = train.TrainStep.step

    def slow(self, batch, generator, i):
        if not getattr(slow, "said", False):
            print("first training step", flush=True)  # the signal test waits for this line
            slow.said = True
        time.sleep(seconds)
        return step(self, batch, generator, i)

    train.TrainStep.step = slow
    train.TrainStep.__call__ = slow


if __name__ == "__main__":  # python tests/fake_experiment.py <gud command line>
    import os

    if os.environ.get("FAKE_STEPS"):
        for cfg in CONFIGS.values():
            cfg["steps"] = int(os.environ["FAKE_STEPS"])
    register()
    if os.environ.get("FAKE_STEP_SLEEP"):
        _slow_steps(float(os.environ["FAKE_STEP_SLEEP"]))
    from gud.__main__ import main

    sys.exit(main(sys.argv[1:]))
