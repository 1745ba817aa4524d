"""The workflow shared by the experiments: data -> basis and prior -> network -> training ->
bits/dim, samples and trajectories.

Each function is a thin composition of the package's pieces (:mod:`gud.bases`,
:mod:`gud.prior`, :mod:`gud.nets`, :mod:`gud.train`, :mod:`gud.likelihood`,
:mod:`gud.samplers`), so that an experiment module is configuration and calls into here.

Data splits: ``prepare`` holds out a validation split from the training data (a fixed
permutation), used only for early stopping (:func:`train_model`); the test split is used
only for reported numbers.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .bases import Basis, make_basis
from .data import ImageData, load_dataset
from .diffusion import EpsLoss
from .likelihood import BIN_WIDTH_8BIT, elbo, summarize_bits
from .nets import EpsNet, build_net
from .prior import Prior
from .samplers import sample
from .schedules import Schedule
from .train import TrainConfig, TrainResult, train

__all__ = ["Setup", "prepare", "setup_from_data", "bin_width", "build_model", "fit", "TrainedNet",
           "train_model", "train_settings", "eval_settings", "held_out_loss", "evaluate_bpd", "evaluate_at", "sample_scorer", "generate", "denoised_trajectory",
           "set_threads",
           "Timer"]

VAL_SEED = 12345  # fixed permutation of the training split for the validation hold-out
#: Images per call of the bound: each batch draws its times (stratified over the batch) and noises
#: in turn, so two evaluations with the same seed share every draw over their common whole batches.
EVAL_BATCH = 512


@dataclass
class Setup:
    """Data and representation of one experiment: ``y = prior.encode(x)``.

    ``train`` is what networks are fitted on, ``val`` (held out from the training split) what
    early stopping watches, ``test`` what every reported number uses.  The basis and prior are
    fitted on ``train``.
    """

    train: ImageData
    test: ImageData
    basis: Basis
    prior: Prior
    y_train: Tensor  # [N, D] whitened components
    y_test: Tensor  # [M, D]
    val: ImageData | None = None
    y_val: Tensor | None = None  # [V, D]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape


def bin_width(data: ImageData) -> float:
    """Width of one quantisation bin in [-1, 1]: ``2/16`` for digits (17 levels), ``2/255`` for 8-bit."""
    return 2.0 / 16.0 if data.name == "digits" else BIN_WIDTH_8BIT


def _split(data: ImageData, n_val: int) -> tuple[ImageData, ImageData | None]:
    if n_val <= 0:
        return data, None
    if n_val >= len(data) - 1:
        raise ValueError(f"validation split of {n_val} leaves too little training data ({len(data)} examples)")
    perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(VAL_SEED))
    sub = lambda idx: ImageData(data.x[idx], data.labels[idx], data.shape, data.name, data.source)  # noqa: E731
    return sub(perm[n_val:].sort().values), sub(perm[:n_val].sort().values)


def prepare(dataset: str = "digits", basis: str = "pixel", whitened: bool = True, *,
            limit: int | None = None, test_limit: int | None = None, val_fraction: float = 0.0,
            max_val: int = 2000, basis_kwargs: dict | None = None, data_kwargs: dict | None = None) -> Setup:
    """Load train/test data, hold out ``val_fraction`` of the training split (at most ``max_val``
    examples) for early stopping, build the basis (PCA is fitted on the rest) and fit the prior."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1); got {val_fraction}")
    dk = dict(data_kwargs or {})
    tr = load_dataset(dataset, "train", limit=limit, **dk)
    te = load_dataset(dataset, "test", limit=test_limit, **dk)
    tr, va = _split(tr, min(int(round(val_fraction * len(tr))), max_val))
    return setup_from_data(tr, te, basis, whitened, val=va, basis_kwargs=basis_kwargs)


def setup_from_data(train_data: ImageData, test_data: ImageData, basis: str = "pixel", whitened: bool = True, *,
                    val: ImageData | None = None, basis_kwargs: dict | None = None) -> Setup:
    """A :class:`Setup` for data already in memory (e.g. generated random fields)."""
    x = train_data.x.double()
    b = make_basis(basis, train_data.shape, data=x if basis == "pca" else None, **(basis_kwargs or {}))
    prior = Prior.fit(b, x, whitened=whitened, var_floor=bin_width(train_data) ** 2 / 12)
    with torch.no_grad():
        enc = lambda d: None if d is None else prior.encode(d.x.double()).float()  # noqa: E731
        return Setup(train_data, test_data, b, prior, enc(train_data), enc(test_data), val, enc(val))


def build_model(kind: str, setup: Setup, *, seed: int = 0, **net_kwargs: Any) -> EpsNet:
    """A noise-state-conditioned network (weights from ``seed``) wrapped as a preconditioned
    epsilon predictor in whitened components (:class:`gud.nets.EpsNet`): a U-Net sees
    ``U^T y`` in image layout, an MLP sees ``y``."""
    net = build_net(kind, setup.shape, seed=seed, **net_kwargs)
    basis = _float_basis(setup.basis)
    return EpsNet(net, basis, setup.prior.log_var, image_shape=setup.shape if kind == "unet" else None)


def _float_basis(basis: Basis) -> Basis:
    b = copy.deepcopy(basis)
    for name, buf in list(b.named_buffers(recurse=False)):
        if buf.is_floating_point():
            setattr(b, name, buf.float())
    return b


def fit(model: EpsNet, schedule: Schedule, y_train: Tensor, *, steps: int, batch_size: int = 128,
        lr: float = 1e-3, seed: int = 0, device: str = "cpu", checkpoint: str | Path | None = None,
        progress: bool = True, **train_kwargs: Any) -> TrainResult:
    """Train ``model`` with epsilon matching under ``schedule`` (parameters drawn from the
    family's range when it has one); resumes from ``checkpoint`` if it exists.  Extra keyword
    arguments go to :class:`gud.train.TrainConfig` (``deadline`` and ``eval_fn`` to
    :func:`gud.train.train`)."""
    run_kw = {k: train_kwargs.pop(k) for k in ("deadline", "eval_fn") if k in train_kwargs}
    train_kwargs.setdefault("warmup", min(100, max(1, steps // 10)))
    if not str(device).startswith("cpu"):  # draw times and noise on the device: no host sync per step
        train_kwargs.setdefault("loss_generator_device", str(device))
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device, **train_kwargs)
    return train(model.to(device), EpsLoss(schedule.to(device)), y_train, cfg, checkpoint_path=checkpoint,
                 progress=progress, **run_kw)


def held_out_loss(schedule: Schedule, y: Tensor, *, seed: int = 0, repeats: int = 4, batch: int = 1024,
                  device: str = "cpu"):
    """``eval_fn(model) -> float``: the epsilon-matching loss on held-out components ``y [V, D]``
    with the *same* times, schedule parameters and noise at every call (a fixed seed), averaged
    over ``repeats`` passes, so that successive values are comparable."""
    loss = EpsLoss(schedule)
    y = y.to(device)

    @torch.no_grad()
    def eval_fn(model) -> float:
        was_training = model.training
        model.eval()
        g = torch.Generator().manual_seed(seed)
        total, n = 0.0, 0
        for _ in range(repeats):
            for i in range(0, len(y), batch):
                total += float(loss(model, y[i:i + batch], g).double().sum())
                n += len(y[i:i + batch])
        model.train(was_training)
        return total / n

    return eval_fn


@dataclass
class TrainedNet:
    """A trained denoiser (the EMA weights at the best validation loss) and its compute."""

    model: torch.nn.Module
    steps: int  # optimiser steps taken
    best_step: int | None
    wall_time: float  # s, this call (0 if loaded from a finished checkpoint)
    throughput: float  # examples / s
    final_loss: float
    finished: bool = True
    stopped_early: bool = False
    resumed_from: int = 0  # step loaded from the checkpoint (0: trained from scratch in this call)
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    max_steps: int | None = None  # the step cap

    def converged(self) -> bool:
        """The book's one convergence rule: the validation loss flattened within the step budget,
        i.e. early stopping ended the run (``patience`` evaluations without improvement, at the
        latest at the cap).  A network that reached the step cap with its validation loss still
        improving within its last ``patience`` evaluations has not converged."""
        return bool(self.stopped_early)

    def summary(self) -> dict[str, Any]:
        return {"steps": self.steps, "best_step": self.best_step, "train_s": self.wall_time,
                "examples_per_s": self.throughput, "final_loss": self.final_loss,
                "stopped_early": self.stopped_early, "converged": self.converged()}


def train_model(setup: Setup, schedule: Schedule, *, net: str = "mlp", net_kwargs: dict | None = None,
                steps: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0, device: str = "cpu",
                checkpoint=None, eval_every: int | None = None, patience: int | None = None,
                min_delta: float = 0.0, progress: bool = False, **train_kwargs: Any) -> TrainedNet:
    """Build a network (weights from ``seed``) and train it on ``setup.y_train`` under
    ``schedule``; a family's parameters are drawn per example from its range.

    With a validation split (``setup.y_val``) and ``eval_every``, the held-out loss
    (:func:`held_out_loss`) is recorded every ``eval_every`` steps, training stops after
    ``patience`` evaluations without improvement (the book's budget rule: train until the
    held-out loss flattens, at most ``steps``), and the EMA weights at the best evaluation are
    returned.  ``deadline`` (``time.monotonic()`` value) stops cleanly with a checkpoint:
    ``finished`` is then False and a second call resumes.
    """
    model = build_model(net, setup, seed=seed, **(net_kwargs or {}))
    kw = dict(train_kwargs)
    if eval_every is not None and setup.y_val is not None:
        kw.update(eval_fn=held_out_loss(schedule, setup.y_val, seed=seed + 7919, device=device),
                  eval_every=eval_every, patience=patience, min_delta=min_delta)
    res = fit(model, schedule, setup.y_train, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
              device=device, checkpoint=checkpoint, progress=progress, **kw)
    final = res.loss_history[-1][1] if res.loss_history else float("nan")
    return TrainedNet(res.ema_model.eval(), res.step, res.best_step, res.wall_time, res.throughput, final,
                      res.finished, res.stopped_early, res.resumed_from, res.loss_history, res.eval_history,
                      steps)


def train_settings(cfg: dict) -> dict[str, Any]:
    """The keyword arguments of :func:`train_model` (via ``ctx.train``) from an experiment's
    configuration: ``max_steps``, ``eval_every``, ``patience``, ``batch_size``, ``lr`` and
    ``train_kwargs``."""
    return dict(steps=cfg["max_steps"], eval_every=cfg["eval_every"], patience=cfg["patience"],
                batch_size=cfg["batch_size"], lr=cfg["lr"], **cfg.get("train_kwargs", {}))


def eval_settings(cfg: dict, device: str) -> dict[str, Any]:
    """The keyword arguments of :func:`evaluate_at` from an experiment's configuration:
    ``sampler``, ``sampler_steps``, ``n_time_samples``."""
    return dict(method=cfg["sampler"], steps=cfg["sampler_steps"], n_time_samples=cfg["n_time_samples"],
                device=device)


def evaluate_bpd(model, setup: Setup, schedule: Schedule, *, params=None, seed: int = 0,
                 n_time_samples: int = 4, batch: int = EVAL_BATCH, device: str = "cpu",
                 split: str = "test", n_images: int | None = None) -> dict[str, Any]:
    """Held-out bits/dim (discretised decoder at the data's bin width) and its three terms.

    ``bpd_stderr`` is the Monte-Carlo error from ``n_time_samples`` independent replicates
    (what changes with ``seed``), ``bpd_stderr_data`` the standard error over test examples;
    ``prior_bpd``, ``diffusion_bpd`` and ``reconstruction_bpd`` are the terms of the bound
    (prior KL at t = 1, diffusion, reconstruction at t = 0); see :func:`gud.likelihood.elbo`.
    ``per_image [4, N]`` (float32): per-image bits/dim of the total bound and of the three terms
    (:data:`gud.stats.TERMS`), the input of every error bar and paired comparison.
    ``split``: "test" (reported numbers) or "val" (the validation split, for choosing settings).
    ``n_images``: evaluate the first ``n_images`` of the split only (every evaluation runs through
    a split in the same order, so these pair with the same images of any other evaluation, and a
    multiple of ``batch`` also shares the draws of time and noise of an evaluation with the same
    seed); the result then says so (``n_images``).
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    data, y_all = (setup.test, setup.y_test) if split == "test" else (setup.val, setup.y_val)
    if data is None or y_all is None or len(data) < 2:
        raise ValueError(f"the {split} split needs at least two images")
    if n_images is not None:
        if int(n_images) < 2:
            raise ValueError(f"n_images must be at least 2; got {n_images}")
        if int(n_images) < len(data):
            data = ImageData(data.x[:int(n_images)], data.labels[:int(n_images)], data.shape, data.name, data.source)
            y_all = y_all[:int(n_images)]
    g = torch.Generator().manual_seed(seed)
    prior = setup.prior.to(device)  # a copy on the device (Prior.to never moves setup.prior)
    if isinstance(model, torch.nn.Module):
        model.eval()
    reps, terms = [], []
    for i in range(0, len(data), batch):
        e = elbo(model, y_all[i:i + batch].to(device), schedule, params=params, generator=g,
                 n_time_samples=n_time_samples, decoder="discretized", prior=prior,
                 bin_width=bin_width(data), x=data.x[i:i + batch].to(device))
        reps.append(e.replicates.double().cpu())
        terms.append(torch.stack([e.prior, e.diffusion, e.reconstruction]).double().cpu())
    d = data.dim
    bits = torch.cat(reps) / (d * math.log(2))  # [N, K]
    t = torch.cat(terms, 1) / (d * math.log(2))  # [3, N]
    out = summarize_bits(bits)
    if n_images is not None and len(data) < len(setup.test if split == "test" else setup.val):
        out["n_images"] = len(data)
    out.update(prior_bpd=float(t[0].mean()), diffusion_bpd=float(t[1].mean()),
               reconstruction_bpd=float(t[2].mean()),
               per_image=torch.cat([bits.mean(1, keepdim=True).T, t]).float().numpy())
    return out


def generate(model, setup: Setup, schedule: Schedule, n: int, *, params=None, steps: int = 100,
             method: str = "ddim", seed: int = 0, device: str = "cpu", condition=None,
             progress: bool = False, callback=None) -> Tensor:
    """``n`` samples decoded to data space ``[n, D]``, clipped to [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(model, torch.nn.Module):
        model.eval()
    y = sample(model, schedule, n, method=method, steps=steps, params=params, generator=g, device=device,
               condition=condition, progress=progress, callback=callback)
    return setup.prior.decode(y.double().cpu()).clamp(-1, 1).float()


def evaluate_at(model, setup: Setup, schedule: Schedule, params=None, *, scorer=None, n_samples: int = 0,
                method: str = "em", steps: int = 100, seed: int = 0, n_time_samples: int = 4, keep: int = 0,
                keep_u8: int = 0, device: str = "cpu", val_scorer=None, validation: bool = True,
                checks=None, n_images: int | None = None) -> dict[str, Any]:
    """Held-out bits/dim with its terms (:func:`evaluate_bpd`) at schedule parameters ``params``
    on the test split, and with ``validation`` on the validation split too (``bpd_val`` and its
    standard error over validation images ``bpd_val_se``: for choosing settings, never reported),
    and, with a ``scorer`` (:class:`gud.metrics.SampleScorer`) and ``n_samples``, the sample score
    of that many samples (sampler ``method`` with ``steps`` steps, seed ``seed``); the first
    ``keep`` samples are returned as ``samples [keep, D]``, the first ``keep_u8`` quantised to
    8 bits as ``samples_u8 [keep_u8, D]`` (uint8, for a FID computed later, :mod:`gud.fid`).
    ``val_scorer`` scores the same samples against the validation split (``score_val``, for
    choosing settings); ``checks`` (:class:`gud.metrics.SampleChecks`) adds the memorisation
    rate and the class coverage of the samples.  ``n_images``: the test split's first images only
    (:func:`evaluate_bpd`)."""
    pp = None if params is None else torch.as_tensor(params, dtype=torch.float64).reshape(-1)
    t0 = time.perf_counter()
    with torch.no_grad():
        out: dict[str, Any] = evaluate_bpd(model, setup, schedule, params=pp, seed=seed,
                                           n_time_samples=n_time_samples, device=device, n_images=n_images)
        if validation and setup.val is not None and len(setup.val) >= 2:
            val = evaluate_bpd(model, setup, schedule, params=pp, seed=seed, n_time_samples=n_time_samples,
                               device=device, split="val")
            out["bpd_val"], out["bpd_val_se"] = val["bpd"], val["bpd_stderr_data"]
    out["bpd_s"] = time.perf_counter() - t0
    if n_samples:
        t0 = time.perf_counter()
        x = generate(model, setup, schedule, n_samples, params=pp, steps=steps, method=method, seed=seed,
                     device=device)
        out["sample_s"] = time.perf_counter() - t0
        if scorer is not None:
            sc = scorer.score(x)
            out["score"], out["score_se"] = sc.kcd, sc.stderr
        if val_scorer is not None:
            sc = val_scorer.score(x)
            out["score_val"], out["score_val_se"] = sc.kcd, sc.stderr
        if checks is not None:
            out.update(checks(x))
        if keep:
            out["samples"] = x[:keep].numpy()
        if keep_u8:
            out["samples_u8"] = torch.round((x[:keep_u8] + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return out


def sample_scorer(setup: Setup, *, steps: int = 800, seed: int = 0, device: str = "cpu"):
    """The sample score of ``setup``'s data (:class:`gud.metrics.SampleScorer`, the kernel
    classifier distance KCD): a noise-aware classifier trained on the training split (cached
    under ``data/``), the test split as the reference.  Held-out real data (the validation
    split) score near 0, the floor."""
    from .data import data_root
    from .metrics import SampleScorer

    tr = setup.train
    name = f"scorer-{tr.name}-{'x'.join(map(str, tr.shape))}-n{len(tr)}-{steps}-{seed}.pt"
    scorer = SampleScorer.train(tr.x, tr.labels, tr.shape, x_reference=setup.test.x, steps=steps, seed=seed,
                                cache_path=data_root() / name, num_threads=torch.get_num_threads())
    if device != "cpu":
        scorer.classifier.to(device)
    return scorer


@torch.no_grad()
def denoised_trajectory(model, setup: Setup, schedule: Schedule, *, params=None, times: Sequence[float],
                        n: int = 4, steps: int = 50, method: str = "dpmpp_3m", seed: int = 0,
                        device: str = "cpu") -> np.ndarray:
    r"""The clean-data prediction :math:`\hat x_0 = \mu + U^\top S\hat y_0` along one generation,
    at the sampler's grid times nearest ``times`` (``t = 0``: the final sample),
    ``[len(times), n, D]`` in data space: which components are settled when.  No extra network
    evaluations: the sampler's callback passes :math:`\hat y_0`."""
    pp = None if params is None else torch.as_tensor(params, dtype=torch.float64).reshape(-1)
    seen: list[tuple[float, Tensor]] = []
    final = generate(model, setup, schedule, n, params=pp, steps=steps, method=method, seed=seed, device=device,
                     callback=lambda info: seen.append((float(info["t"]), info["denoised"].detach().cpu())))
    grid = np.array([t for t, _ in seen])
    out = []
    for t in times:
        if t <= 0:
            out.append(final.numpy())
            continue
        y0 = seen[int(np.argmin(np.abs(grid - t)))][1]
        out.append(setup.prior.decode(y0.double()).clamp(-1, 1).float().numpy())
    return np.stack(out)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads (default: all cores, at most 4; ``GUD_THREADS`` overrides);
    returns the number."""
    n = n or int(os.environ.get("GUD_THREADS", 0)) or min(4, os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def validation_scorer(scorer, setup: Setup):
    """The sample score with the validation split as reference (same classifier): for choosing
    settings, so that the reported score (test reference) is not the one that chose them."""
    from .metrics import SampleScorer

    return SampleScorer(scorer.classifier, setup.val.x, setup.shape, accuracy=scorer.accuracy)


def sample_checks(scorer, setup: Setup):
    """Memorisation rate and class coverage of samples (:class:`gud.metrics.SampleChecks`):
    threshold from the validation split, classes of the test split."""
    from .metrics import SampleChecks

    return SampleChecks(scorer.classifier, setup.shape, setup.train.x, setup.val.x, setup.test.x)


#: Scalars of an evaluation kept in a result's rows (per-image arrays go to ``per_image/<id>``).
ROW_KEYS = ("bpd", "bpd_val", "bpd_val_se", "prior_bpd", "diffusion_bpd", "reconstruction_bpd", "score", "score_se",
            "score_val", "score_val_se", "memorised", "memorised_se", "coverage", "coverage_se", "flags", "n_images")


def record(rows: list, arrays: dict, row: dict, ev: Mapping[str, Any] | None = None) -> dict:
    """Append ``row`` (identity fields) with the scalars of evaluation ``ev`` to ``rows`` and its
    per-image bits/dim (test split) to ``arrays["per_image/<id>"]``; the id is
    built from the row's identity fields."""
    rid = "/".join(f"{v:g}" if isinstance(v, float) else str(v) for k, v in row.items()
                   if v is not None and k != "converged")
    if any(r["id"] == rid for r in rows):
        raise ValueError(f"duplicate evaluation id {rid!r}")
    out = {"id": rid, **row}
    if ev is not None:
        for k in ROW_KEYS:
            if k in ev:
                out[k] = ev[k] if k == "flags" else int(ev[k]) if k == "n_images" else float(ev[k])
        if "per_image" in ev:
            arrays[f"per_image/{rid}"] = np.asarray(ev["per_image"], dtype=np.float32)
    rows.append(out)
    return out
