"""Run an experiment into the results store: one call, resumable, within a time budget.

An experiment is a module ``gud.experiments.<id>`` with ``CONFIGS = {profile: dict}`` and
``compute(config, ctx) -> (metrics, arrays)``.  :func:`run` gives ``compute`` a
:class:`Context` that

* trains networks with a checkpoint per network under ``runs/<id>/<profile>/<hash>/``
  (atomic, loaded with ``weights_only=True``), so running the same command again resumes,
  and keeps their EMA weights to store beside the result (``weights/<name>.safetensors``);
* memoises evaluation steps (:meth:`Context.cached`, JSON and ``.npz``, never pickles), so a
  resumed run does not redo them;
* stops cleanly before a deadline (:class:`BudgetExhausted`), leaving checkpoints and saying
  what remains.

``python -m gud run EXP ... [--profile P] [--budget-s S] [--pending]`` is the command line.
"""
from __future__ import annotations

import fcntl
import importlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from .pipeline import Setup, TrainedNet, train_model
from .profiles import EXPERIMENTS, current_profile, experiment_config
from .results import REPO, Result, ResultsStore, atomic_write, config_hash

__all__ = ["BudgetExhausted", "Context", "run", "pending", "status", "run_dir", "micro_config", "MICRO_ROOT"]

#: Where ``python -m gud run --micro`` keeps its results and checkpoints (git-ignored).
MICRO_ROOT = Path(os.environ.get("GUD_MICRO_ROOT", REPO / "runs" / "micro"))


class BudgetExhausted(RuntimeError):
    """The time budget ran out; checkpoints are saved and the same command resumes."""


#: Bumped whenever the meaning of a checkpoint changes without a change of configuration (2: the
#: preconditioned EpsNet), so that stale checkpoints are never loaded.
RUNS_VERSION = 2


def run_dir(experiment: str, profile: str, config: Mapping[str, Any], root: Path | None = None) -> Path:
    """Checkpoints and memoised steps of one run: ``runs/<experiment>/<profile>/<hash>`` (git-ignored;
    the hash covers the configuration and :data:`RUNS_VERSION`)."""
    root = root or Path(os.environ.get("GUD_RUNS", REPO / "runs"))
    return root / experiment / profile / config_hash({"config": dict(config), "runs_version": RUNS_VERSION})


@dataclass
class Context:
    """What an experiment's ``compute`` may use: device, checkpoints, memoisation, budget."""

    experiment: str
    profile: str
    config: dict[str, Any]
    device: str = "cpu"
    directory: Path | None = None
    deadline: float | None = None  # time.monotonic() value
    progress: bool = False
    weights: dict[str, tuple] = field(default_factory=dict)
    trained: dict[str, dict] = field(default_factory=dict)  # name -> compute summary of its training
    curves: dict[str, np.ndarray] = field(default_factory=dict)  # curves/<name>/{train,val}: [(step, loss)]
    log: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if self.directory is None:
            self.directory = run_dir(self.experiment, self.profile, self.config)
        self.directory.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ budget
    def remaining(self) -> float:
        """Seconds left before the deadline (``inf`` without one)."""
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def check(self, what: str, need_s: float = 0.0) -> None:
        """Raise :class:`BudgetExhausted` if fewer than ``need_s`` seconds are left for ``what``."""
        if self.remaining() < need_s:
            raise BudgetExhausted(f"{self.experiment}: no time left for {what}")

    # ------------------------------------------------------------------ training
    def train(self, name: str, setup: Setup, schedule, *, net: str, net_kwargs: Mapping[str, Any],
              keep: bool = True, **kwargs: Any) -> TrainedNet:
        """Train (or resume, or reload) the network ``name`` with :func:`gud.pipeline.train_model`;
        its checkpoint is ``<run dir>/<name>.pt``.  Its training and validation losses are stored
        with the result as ``curves/<name>/train`` and ``curves/<name>/val``; with ``keep`` its
        EMA weights are stored beside the result."""
        self.check(f"training {name}")
        ckpt = self.directory / f"{name}.pt"
        self.log(f"[{self.experiment}] train {name}" + (" (resuming)" if ckpt.exists() else ""))
        tn = train_model(setup, schedule, net=net, net_kwargs=dict(net_kwargs), device=self.device,
                         checkpoint=ckpt, deadline=self.deadline, progress=self.progress, **kwargs)
        if not tn.finished:
            raise BudgetExhausted(f"{self.experiment}: training {name} stopped at step {tn.steps} "
                                  f"(checkpoint {ckpt.relative_to(REPO) if ckpt.is_relative_to(REPO) else ckpt})")
        summary = tn.summary()
        done = self.directory / f"{name}.train.json"
        if done.exists():  # a resumed or reloaded training: add this call's compute to the earlier calls'
            before = json.loads(done.read_text())
            if tn.resumed_from >= tn.steps:  # reloaded, nothing trained now
                summary = before
            else:
                summary["train_s"] += before.get("train_s", 0.0) if tn.resumed_from > 0 else 0.0
        atomic_write(done, lambda p: p.write_text(json.dumps(summary)))
        self.trained[name] = summary
        for kind, hist in (("train", tn.loss_history), ("val", tn.eval_history)):
            if hist:
                self.curves[f"curves/{name}/{kind}"] = np.asarray(hist, dtype=np.float64)
        if keep:
            self.weights[name] = (tn.model, setup.prior, {"net": net, "net_kwargs": dict(net_kwargs)})
        return tn

    # ------------------------------------------------------------------ memoised steps
    def cached(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` once per run: a dict of JSON values and numpy/torch arrays, stored under
        ``<run dir>/<name>.json`` / ``.npz``; a resumed run reloads it."""
        js, npz = self.directory / f"{name}.json", self.directory / f"{name}.npz"
        if js.exists():
            out = json.loads(js.read_text())
            if npz.exists():
                with np.load(npz, allow_pickle=False) as f:
                    out.update({k: f[k] for k in f.files})
            return out
        self.check(name)
        out = fn()
        if not isinstance(out, Mapping):
            raise TypeError(f"cached step {name!r} must return a dict")
        arrays = {k: (v.detach().cpu().numpy() if torch.is_tensor(v) else v) for k, v in out.items()
                  if torch.is_tensor(v) or isinstance(v, np.ndarray)}
        plain = {k: v for k, v in out.items() if k not in arrays}
        if arrays:
            def write_npz(p: Path) -> None:
                with open(p, "wb") as f:
                    np.savez(f, **arrays)
            atomic_write(npz, write_npz)
        atomic_write(js, lambda p: p.write_text(json.dumps(plain)))
        return {**plain, **arrays}


# Overrides that make any profile's configuration a micro one (seconds on a CPU), for a dry run of
# the real command: the same code path, data and checkpoints, tiny sizes.
_MICRO = {"max_steps": 30, "eval_every": 10, "patience": 2, "seeds": [0], "baseline_seeds": [0],
          "n_samples": 24, "sampler_steps": 6, "score_steps": 20, "n_time_samples": 1, "show_samples": 3,
          "trajectory_n": 2, "trajectory_steps": 6, "trajectory_times": [0.5, 0.0], "fid_samples": 8,
          "limit": 1500, "test_limit": 120, "prior_limit": 1500, "n_patches": 300}
_MICRO_NETS = {"mlp": {"hidden": 32, "depth": 1},
               "unet": {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1}}


def micro_config(experiment: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """A micro version of ``config``: common size keys shrunk, the network made tiny, and the
    experiment's own ``micro(config)`` hook applied where it has one."""
    import copy

    cfg = copy.deepcopy(dict(config))
    for k, v in _MICRO.items():
        if k in cfg and cfg[k] is not None or k in ("limit", "test_limit", "prior_limit") and k in cfg:
            cfg[k] = v
    if cfg.get("net") in _MICRO_NETS:
        cfg["net_kwargs"] = dict(_MICRO_NETS[cfg["net"]])
    hook = getattr(_module(experiment), "micro", None)
    return hook(cfg) if hook is not None else cfg


def _module(experiment: str):
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; known: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"gud.experiments.{experiment}")


def run(experiment: str, profile: str | None = None, *, config: Mapping[str, Any] | None = None,
        budget_s: float | None = None, recompute: bool = False, store: ResultsStore | None = None,
        device: str | None = None, progress: bool = False, runs_root: Path | None = None,
        log: Callable[[str], None] = print) -> Result:
    """Compute ``experiment`` for ``profile`` (default: ``GUD_PROFILE``) into the store and return
    the result; a stored result is returned as is unless ``recompute``.

    ``config`` overrides the profile's configuration (e.g. a micro size in tests).  With
    ``budget_s`` the run stops cleanly (:class:`BudgetExhausted`) before that many seconds,
    keeping checkpoints; the same call resumes.
    """
    mod = _module(experiment)
    profile = current_profile() if profile is None else profile
    cfg = dict(experiment_config(experiment, profile) if config is None else config)
    store = store or ResultsStore()
    if not recompute:
        found = store.load(experiment, profile, cfg)
        if found is not None:
            return found
    from .profiles import device as default_device

    dev = str(device or default_device())
    threads = cfg.get("threads")
    if threads:
        torch.set_num_threads(int(os.environ.get("GUD_THREADS", threads)))
    start = time.monotonic()
    directory = run_dir(experiment, profile, cfg, runs_root)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        # one process per run: a second one waits, then finds the stored result
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not recompute:
            found = store.load(experiment, profile, cfg)
            if found is not None:
                return found
        ctx = Context(experiment, profile, cfg, device=dev, progress=progress, directory=directory,
                      deadline=None if budget_s is None else start + float(budget_s), log=log)
        metrics, arrays = mod.compute(cfg, ctx)
        wall = time.monotonic() - start
        info = {"device": dev, "device_name": torch.cuda.get_device_name() if dev.startswith("cuda") else "CPU",
                "torch_threads": torch.get_num_threads(), "wall_seconds_last_call": wall,
                "cpu": platform.processor() or platform.machine(), "trainings": ctx.trained}
        arrays = {**ctx.curves, **arrays}  # every training's loss curves, stored with the result
        result = store.save(experiment, profile, cfg, metrics, arrays, info=info, weights=ctx.weights,
                            weights_dtype=cfg.get("weights_dtype", "float32"))
    log(f"[{experiment}] stored {profile} result ({wall:.0f} s this call)")
    return result


def status(profile: str, store: ResultsStore | None = None) -> dict[str, str]:
    """``{experiment: "stored" | "missing"}`` for the current configurations of ``profile``."""
    store = store or ResultsStore()
    out = {}
    for exp in EXPERIMENTS:
        try:
            cfg = experiment_config(exp, profile)
        except ValueError:
            continue
        out[exp] = "stored" if store.load(exp, profile, cfg) is not None else "missing"
    return out


def pending(profile: str, store: ResultsStore | None = None) -> list[str]:
    """Experiments (in the book's order) whose result for ``profile`` is missing."""
    return [e for e, s in status(profile, store).items() if s == "missing"]


def stale(profile: str, store: ResultsStore | None = None) -> list[Path]:
    """Stored result folders of ``profile`` that match no current configuration (to recompute
    or delete)."""
    store = store or ResultsStore()
    out = []
    for exp in EXPERIMENTS:
        folder = store.root / exp / profile
        if not folder.is_dir():
            continue
        try:
            current = config_hash(experiment_config(exp, profile))
        except ValueError:
            current = None
        out += [p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")
                and p.name != current]
    return out


def clean_runs(experiment: str, profile: str, config: Mapping[str, Any]) -> None:
    """Remove a finished run's checkpoints (the stored result keeps the weights)."""
    shutil.rmtree(run_dir(experiment, profile, config), ignore_errors=True)
