"""The experiment workflow shared by the book's chapters: data -> basis and prior ->
network -> training -> bits/dim and samples.

Each function is a thin composition of the package's pieces, so that a chapter
is configuration, calls into this module, and its own plots.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

__all__ = ["Setup", "prepare", "bin_width", "build_model", "fit", "evaluate_bpd", "generate",
           "run_dir", "set_threads", "Timer"]

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Setup:
    """Data and representation of one experiment: ``y = prior.encode(x)``."""

    train: ImageData
    test: ImageData
    basis: Basis
    prior: Prior
    y_train: Tensor  # [N, D] whitened components
    y_test: Tensor  # [M, D]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.train.shape


def bin_width(data: ImageData) -> float:
    """Width of one quantisation bin in [-1, 1]: ``2/16`` for digits (17 levels), ``2/255`` for 8-bit."""
    return 2.0 / 16.0 if data.name == "digits" else BIN_WIDTH_8BIT


def prepare(dataset: str = "digits", basis: str = "pixel", whitened: bool = True, *,
            limit: int | None = None, test_limit: int | None = None, basis_kwargs: dict | None = None,
            data_kwargs: dict | None = None) -> Setup:
    """Load train/test data, build the basis (PCA is fitted on the training set) and fit the prior."""
    dk = dict(data_kwargs or {})
    tr = load_dataset(dataset, "train", limit=limit, **dk)
    te = load_dataset(dataset, "test", limit=test_limit, **dk)
    b = make_basis(basis, tr.shape, data=tr.x.double() if basis == "pca" else None, **(basis_kwargs or {}))
    prior = Prior.fit(b, tr.x.double(), whitened=whitened, var_floor=bin_width(tr) ** 2 / 12)
    with torch.no_grad():
        y_tr = prior.encode(tr.x.double()).float()
        y_te = prior.encode(te.x.double()).float()
    return Setup(tr, te, b, prior, y_tr, y_te)


def build_model(kind: str, setup: Setup, *, seed: int = 0, **net_kwargs: Any) -> EpsNet:
    """A noise-state-conditioned network (weights from ``seed``) wrapped as a preconditioned
    epsilon predictor in whitened components (:class:`gud.nets.EpsNet`): a U-Net sees
    ``U^T y`` in image layout, an MLP sees ``y``."""
    net = build_net(kind, setup.shape, seed=seed, **net_kwargs)
    basis = _float_basis(setup.basis)
    return EpsNet(net, basis, setup.prior.log_var, image_shape=setup.shape if kind == "unet" else None)


def _float_basis(basis: Basis) -> Basis:
    import copy
    b = copy.deepcopy(basis)
    for name, buf in list(b.named_buffers(recurse=False)):
        if buf.is_floating_point():
            setattr(b, name, buf.float())
    return b


def run_dir(experiment: str, profile: str, config: dict) -> Path:
    """Folder for checkpoints of one run, ``runs/<experiment>/<profile>/<hash>`` (git-ignored)."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = REPO / "runs" / experiment / profile / h
    path.mkdir(parents=True, exist_ok=True)
    return path


def fit(model: EpsNet, schedule: Schedule, y_train: Tensor, *, steps: int, batch_size: int = 128,
        lr: float = 1e-3, seed: int = 0, device: str = "cpu", checkpoint: str | Path | None = None,
        progress: bool = True, **train_kwargs: Any) -> TrainResult:
    """Train ``model`` with epsilon matching under ``schedule`` (parameters drawn from the
    family's range when it has one); resumes from ``checkpoint`` if it exists."""
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
                      warmup=min(100, max(1, steps // 10)), **train_kwargs)
    return train(model.to(device), EpsLoss(schedule), y_train, cfg, checkpoint_path=checkpoint,
                 progress=progress)


def evaluate_bpd(model, setup: Setup, schedule: Schedule, *, params=None, seed: int = 0,
                 n_time_samples: int = 4, batch: int = 512, device: str = "cpu") -> dict[str, Any]:
    """Held-out bits/dim (discretised decoder at the data's bin width) and its three terms.

    ``bpd_stderr`` is the Monte-Carlo error from ``n_time_samples`` independent replicates
    (what changes with ``seed``), ``bpd_stderr_data`` the standard error over test examples;
    ``prior_bpd``, ``diffusion_bpd`` and ``reconstruction_bpd`` are the terms of the bound
    (prior KL at t = 1, diffusion, reconstruction at t = 0); see :func:`gud.likelihood.elbo`.
    """
    g = torch.Generator().manual_seed(seed)
    prior = setup.prior.to(device)
    if isinstance(model, torch.nn.Module):
        model.eval()
    reps, terms = [], []
    for i in range(0, len(setup.test), batch):
        e = elbo(model, setup.y_test[i:i + batch].to(device), schedule, params=params, generator=g,
                 n_time_samples=n_time_samples, decoder="discretized", prior=prior,
                 bin_width=bin_width(setup.test), x=setup.test.x[i:i + batch].to(device))
        reps.append(e.replicates.double().cpu())
        terms.append(torch.stack([e.prior, e.diffusion, e.reconstruction]).double().cpu())
    d = setup.test.dim
    bits = torch.cat(reps) / (d * math.log(2))  # [N, K]
    t = torch.cat(terms, 1) / (d * math.log(2))  # [3, N]
    out = summarize_bits(bits)
    out.update(prior_bpd=float(t[0].mean()), diffusion_bpd=float(t[1].mean()),
               reconstruction_bpd=float(t[2].mean()))
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


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads (default: all cores, at most 4); returns the number."""
    import os
    n = n or min(4, os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
