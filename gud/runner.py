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

Checkpoints and memos carry sidecar checksums (:func:`gud.results.write_checked`): a damaged one
is discarded with a warning and recomputed; a damaged stored result is recomputed by :func:`run`.
The run folder's hash covers the configuration, :data:`RUNS_VERSION` and the code
(:func:`gud.results.code_hash`), so checkpoints and memos of other code are never reused (their
folder, named in its ``run.json``, is removed once a result of the new code is stored).

``python -m gud run EXP ... [--profile P] [--budget-s S] [--pending]`` is the command line.
"""
from __future__ import annotations

import fcntl
import importlib
import json
import math
import os
import platform
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from . import results as _results
from .pipeline import Setup, TrainedNet, train_model
from .profiles import EXPERIMENTS, current_profile, experiment_config
from .results import (REPO, CorruptFileError, CorruptResultError, Result, ResultsStore, atomic_write, config_hash,
                      remove_checked, verify_checked, write_checked)

__all__ = ["BudgetExhausted", "LockWaitExhausted", "Context", "Entry", "run", "pending", "status", "inspect",
           "stale", "run_dir", "micro_config", "MICRO_ROOT"]

#: Where ``python -m gud run --micro`` keeps its results and checkpoints (git-ignored).
MICRO_ROOT = Path(os.environ.get("GUD_MICRO_ROOT", REPO / "runs" / "micro"))


class BudgetExhausted(RuntimeError):
    """The time budget ran out; checkpoints are saved and the same command resumes."""


#: Bumped whenever the meaning of a checkpoint changes without a change of configuration (2: the
#: preconditioned EpsNet; 3: checksummed files, code hash in the folder name), so that stale
#: checkpoints are never loaded.
RUNS_VERSION = 3


def run_dir(experiment: str, profile: str, config: Mapping[str, Any], root: Path | None = None) -> Path:
    """Checkpoints and memoised steps of one run: ``runs/<experiment>/<profile>/<hash>`` (git-ignored;
    the hash covers the configuration, :data:`RUNS_VERSION` and the code,
    :func:`gud.results.code_hash`: after a code change nothing earlier is reused)."""
    root = root or Path(os.environ.get("GUD_RUNS", REPO / "runs"))
    key = {"config": dict(config), "runs_version": RUNS_VERSION, "code": _results.code_hash()}
    return root / experiment / profile / config_hash(key)


class LockWaitExhausted(BudgetExhausted):
    """The budget ran out while another process held the run's lock."""


def _read_json_checked(path: Path, what: str, log: Callable[[str], None]) -> Any | None:
    """The JSON of a checksummed run file, or None (a damaged one is removed with a warning)."""
    try:
        verify_checked(path)
        return json.loads(path.read_text())
    except (CorruptFileError, OSError, ValueError) as exc:
        msg = f"discarding damaged {what}: {exc}; recomputing it"
        warnings.warn(msg, stacklevel=3)
        log(f"warning: {msg}")
        remove_checked(path)
        return None


def _checkpoint_train_seconds(path: Path) -> float | None:
    """Training time of all calls together, as the checkpoint records it (memory-mapped read)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return float(ckpt["train_seconds"])
    except Exception:  # noqa: BLE001 - an older checkpoint without it, or none
        return None


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
        total = _checkpoint_train_seconds(ckpt)
        if total is not None:  # the time of every call (resumes) together, not only this one's
            summary["train_s"] = total
        done = self.directory / f"{name}.train.json"
        if tn.resumed_from >= tn.steps and done.exists():  # reloaded, nothing trained now: keep the record
            before = _read_json_checked(done, f"training record of {name}", self.log)
            summary = before if isinstance(before, dict) else summary
        write_checked(done, lambda p: p.write_text(json.dumps(summary)))
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
        ``<run dir>/<name>.json`` / ``.npz`` with sidecar checksums; a resumed run reloads it, and a
        damaged memo is discarded with a warning and recomputed."""
        js, npz = self.directory / f"{name}.json", self.directory / f"{name}.npz"
        if js.exists():
            try:
                verify_checked(js)
                out = json.loads(js.read_text())
                if not isinstance(out, dict):
                    raise CorruptFileError(js, "not a JSON object")
                arrays = out.pop("__arrays__", [])
                if arrays:
                    verify_checked(npz)
                    with np.load(npz, allow_pickle=False) as f:
                        out.update({k: f[k] for k in f.files})
                    if sorted(arrays) != sorted(k for k in out if k in arrays):
                        raise CorruptFileError(npz, "arrays missing")
                return out
            except (CorruptFileError, OSError, ValueError, EOFError, KeyError) as exc:
                msg = f"discarding damaged memo {name!r} ({exc}); recomputing it"
                warnings.warn(msg, stacklevel=2)
                self.log(f"warning: {msg}")
                remove_checked(js)
                remove_checked(npz)
        self.check(name)
        out = fn()
        if not isinstance(out, Mapping):
            raise TypeError(f"cached step {name!r} must return a dict")
        arrays = {k: (v.detach().cpu().numpy() if torch.is_tensor(v) else v) for k, v in out.items()
                  if torch.is_tensor(v) or isinstance(v, np.ndarray)}
        plain = {k: v for k, v in out.items() if k not in arrays}
        if "__arrays__" in plain:
            raise ValueError(f"cached step {name!r}: the key '__arrays__' is reserved")
        if arrays:
            def write_npz(p: Path) -> None:
                with open(p, "wb") as f:
                    np.savez(f, **arrays)
            write_checked(npz, write_npz)
        write_checked(js, lambda p: p.write_text(json.dumps({**plain, "__arrays__": sorted(arrays)})))
        return {**plain, **arrays}


# Overrides that make any profile's configuration a micro one (seconds on a CPU), for a dry run of
# the real command: the same code path, data and checkpoints, tiny sizes.
_MICRO = {"max_steps": 30, "eval_every": 10, "patience": 2, "seeds": [0], "baseline_seeds": [0],
          "n_samples": 24, "sampler_steps": 6, "score_steps": 20, "n_time_samples": 1, "show_samples": 3,
          "trajectory_n": 2, "trajectory_steps": 6, "trajectory_times": [0.5, 0.0], "fid_samples": 8,
          "limit": 1500, "test_limit": 120, "prior_limit": 1500, "n_patches": 300}
_MICRO_NETS = {"mlp": {"hidden": 32, "depth": 1},
               "unet": {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1}}


#: A micro run's budget for the gate's full-covariance Gaussian (:func:`gud.baselines.full_gaussian_images`):
#: 20 images of 32x32x3 per setting (seconds on a CPU core), every image of smaller data.
MICRO_FULL_GAUSSIAN_FLOP = 2e11


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
    cfg["full_gaussian_flop"] = MICRO_FULL_GAUSSIAN_FLOP
    hook = getattr(_module(experiment), "micro", None)
    return hook(cfg) if hook is not None else cfg


def _module(experiment: str):
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; known: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(f"gud.experiments.{experiment}")


RUN_MARKER = "run.json"  # what a run folder is for: configuration hash, code hash


def _prune_other_code(directory: Path, marker: Mapping[str, Any], log: Callable[[str], None]) -> None:
    """Remove the run folders of the same configuration left by other code (never reused: the run
    folder is keyed by the code), unless another process holds their lock."""
    for other in directory.parent.iterdir():
        if other == directory or not (other / RUN_MARKER).is_file():
            continue
        try:
            theirs = json.loads((other / RUN_MARKER).read_text())
        except (OSError, ValueError):
            continue
        if theirs.get("config_hash") != marker["config_hash"] or theirs.get("code_hash") == marker["code_hash"]:
            continue
        try:
            fd = os.open(other / ".lock", os.O_RDWR | os.O_CREAT)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            shutil.rmtree(other, ignore_errors=True)
            log(f"removed checkpoints of other code: {other}")
        finally:
            os.close(fd)


def _check_budget(budget_s: float | None) -> None:
    if budget_s is not None and not (isinstance(budget_s, (int, float)) and math.isfinite(budget_s)
                                     and budget_s >= 0):
        raise ValueError(f"budget_s must be a finite number of seconds >= 0 (0: stop at once; None: no budget), "
                         f"got {budget_s!r}")


def _load_or_none(store: ResultsStore, experiment: str, profile: str, cfg: Mapping[str, Any],
                  log: Callable[[str], None]) -> Result | None:
    """The stored result, or None when it is missing or damaged (said, then recomputed)."""
    try:
        return store.load(experiment, profile, cfg)
    except CorruptResultError as exc:
        log(f"[{experiment}] stored {profile} result is damaged ({exc.path}: {exc.reason}): recomputing it")
        return None


def _threads(cfg: Mapping[str, Any], log: Callable[[str], None], experiment: str) -> None:
    """Torch intra-op threads: the configuration's ``threads`` when it names one (the thread count
    changes CPU results in the last digits, so it belongs to the configuration and ``GUD_THREADS``
    cannot override it); else ``GUD_THREADS`` if set. The count used is recorded in ``info.json``."""
    threads, env = cfg.get("threads"), os.environ.get("GUD_THREADS")
    if threads:
        if env and env.strip() != str(threads):
            log(f"[{experiment}] GUD_THREADS={env} ignored: this configuration fixes threads={threads} "
                "(the thread count changes the numbers; it is part of the configuration)")
        torch.set_num_threads(int(threads))
    elif env:
        torch.set_num_threads(int(env))


def _lock(lock_fd: int, what: str, deadline: float | None, log: Callable[[str], None],
          poll_s: float = 0.2) -> None:
    """Take the run's lock; while another process holds it, say so and wait, within the deadline."""
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    try:
        holder = os.pread(lock_fd, 64, 0).decode(errors="replace").strip() or "?"
    except OSError:
        holder = "?"
    left = "" if deadline is None else f" (at most {max(deadline - time.monotonic(), 0):.0f} s, the budget)"
    log(f"{what}: another process (pid {holder}) is running it; waiting for it to finish{left}")
    while True:
        if deadline is not None and time.monotonic() >= deadline:
            raise LockWaitExhausted(f"{what}: the budget ran out while waiting for process {holder}, "
                                    "which is running it")
        time.sleep(poll_s if deadline is None else max(0.0, min(poll_s, deadline - time.monotonic())))
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            continue


def run(experiment: str, profile: str | None = None, *, config: Mapping[str, Any] | None = None,
        budget_s: float | None = None, recompute: bool = False, store: ResultsStore | None = None,
        device: str | None = None, progress: bool = False, runs_root: Path | None = None,
        log: Callable[[str], None] = print, started: float | None = None) -> Result:
    """Compute ``experiment`` for ``profile`` (default: ``GUD_PROFILE``) into the store and return
    the result; a stored result is returned as is unless ``recompute`` (a damaged one is recomputed).

    ``config`` overrides the profile's configuration (e.g. a micro size in tests).  With
    ``budget_s`` (finite, >= 0) the run stops cleanly (:class:`BudgetExhausted`) before that
    many seconds after ``started`` (a ``time.monotonic()`` value; default: now), keeping
    checkpoints; the same call resumes.  A second process of the same run waits for the first
    (saying so) at most until the budget ends (:class:`LockWaitExhausted`).

    ``recompute`` ignores the stored result; checkpoints and memoised steps of the same
    configuration *and code* (:func:`run_dir`) are reused, as they give the same numbers.
    """
    _check_budget(budget_s)
    mod = _module(experiment)
    profile = current_profile() if profile is None else profile
    cfg = dict(experiment_config(experiment, profile) if config is None else config)
    store = store or ResultsStore()
    if not recompute:
        found = _load_or_none(store, experiment, profile, cfg, log)
        if found is not None:
            return found
    from .profiles import device as default_device

    dev = str(device or default_device())
    _threads(cfg, log, experiment)
    start = time.monotonic() if started is None else started
    deadline = None if budget_s is None else start + float(budget_s)
    directory = run_dir(experiment, profile, cfg, runs_root)
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        # one process per run: a second one waits (within its budget), then finds the stored result
        _lock(fd, f"{experiment} ({profile})", deadline, log)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        marker = {"config_hash": config_hash(cfg), "code_hash": _results.code_hash(), "runs_version": RUNS_VERSION}
        if not (directory / RUN_MARKER).exists():
            atomic_write(directory / RUN_MARKER, lambda p: p.write_text(json.dumps(marker) + "\n"))
        if not recompute:
            found = _load_or_none(store, experiment, profile, cfg, log)
            if found is not None:
                return found
        ctx = Context(experiment, profile, cfg, device=dev, progress=progress, directory=directory,
                      deadline=deadline, log=log)
        metrics, arrays = mod.compute(cfg, ctx)
        wall = time.monotonic() - start
        info = {"device": dev, "device_name": torch.cuda.get_device_name() if dev.startswith("cuda") else "CPU",
                "torch_threads": torch.get_num_threads(), "wall_seconds_last_call": wall,
                "cpu": platform.processor() or platform.machine(), "trainings": ctx.trained}
        arrays = {**ctx.curves, **arrays}  # every training's loss curves, stored with the result
        result = store.save(experiment, profile, cfg, metrics, arrays, info=info, weights=ctx.weights,
                            weights_dtype=cfg.get("weights_dtype", "float32"))
        _prune_other_code(directory, marker, log)
    finally:
        os.close(fd)  # releases the lock
    log(f"[{experiment}] stored {profile} result ({wall:.0f} s this call)")
    return result


@dataclass
class Entry:
    """What the store holds for one experiment's current configuration."""

    state: str  # "stored" | "code drift" | "missing" | "corrupt" | "error" (the experiment's module fails)
    path: Path | None = None
    detail: str = ""

    def line(self) -> str:
        return f"{self.state}: {self.detail}" if self.detail else self.state


def inspect(profile: str, store: ResultsStore | None = None) -> dict[str, Entry]:
    """Every experiment of ``profile``: its stored result for the current configuration checked
    (files against the manifest, code hash against :func:`gud.results.code_hash`)."""
    store = store or ResultsStore()
    out: dict[str, Entry] = {}
    now = _results.code_hash()
    for exp in EXPERIMENTS:
        try:
            cfg = experiment_config(exp, profile)
        except ValueError:
            continue
        except Exception as exc:  # noqa: BLE001 - a broken experiment module must not hide the others
            out[exp] = Entry("error", None, f"its configuration cannot be read: {type(exc).__name__}: {exc}")
            continue
        try:
            res = store.load(exp, profile, cfg)
        except CorruptResultError as exc:
            out[exp] = Entry("corrupt", exc.path, f"{store._show(exc.path)} ({exc.reason}); recompute it with "
                                                  f"`python -m gud run {exp} --profile {profile} --recompute`")
            continue
        if res is None:
            out[exp] = Entry("missing")
            continue
        code = res.info.get("code_hash")
        notes = ["no manifest.json: its files are not checked"] if "unverified" in res.info else []
        if code is None:
            out[exp] = Entry("stored", res.path, "; ".join(notes + ["code hash not recorded (stored before it was)"]))
        elif code != now:
            out[exp] = Entry("code drift", res.path, "; ".join(notes + [
                f"computed by code {code}, the code is now {now}; it still loads and is used "
                f"(recompute with `python -m gud run {exp} --profile {profile} --recompute`)"]))
        else:
            out[exp] = Entry("stored", res.path, "; ".join(notes))
    return out


def status(profile: str, store: ResultsStore | None = None) -> dict[str, str]:
    """``{experiment: "stored" | "code drift" | "missing" | "corrupt"}`` for the current
    configurations of ``profile`` (:func:`inspect` has the details)."""
    return {e: entry.state for e, entry in inspect(profile, store).items()}


def pending(profile: str, store: ResultsStore | None = None) -> list[str]:
    """Experiments (in the book's order) whose result for ``profile`` is missing or damaged (a
    result of other code is not pending: it is loaded and used)."""
    return [e for e, s in status(profile, store).items() if s in ("missing", "corrupt")]


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
