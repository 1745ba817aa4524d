"""Training loop: AdamW, linear warmup, grad-norm clipping, EMA, atomic checkpoints, resume.

The loop knows nothing about diffusion. It calls

    loss_fn(model, batch [B, D], generator) -> per-example loss [B]

(the epsilon-matching loss lives in `gud.diffusion`) and minimises the batch
mean. All randomness comes from two `torch.Generator`s seeded from
`config.seed`: one (CPU) draws the batches, as a fresh `randperm` of the data
per epoch; the other (on `config.device`) is handed to `loss_fn`. Their states,
the current epoch permutation, model, EMA and optimiser are checkpointed, so an
interrupted run resumed from its checkpoint is bit-exact on the CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["TrainConfig", "TrainResult", "train", "load_checkpoint"]

LossFn = Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class TrainConfig:
    """Hyper-parameters of `train`. `steps` is the total number of optimiser steps."""

    steps: int
    batch_size: int
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 100  # linear learning-rate warmup over this many steps
    grad_clip: float = 1.0  # max global grad norm; <= 0 disables clipping
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "cpu"
    amp_bf16: bool = False  # bf16 autocast of the loss; CUDA only
    compile: bool = False  # torch.compile the model for the loss; CUDA only
    log_every: int = 50


@dataclass
class TrainResult:
    """What `train` returns. `loss_history` holds (step, mean loss over the last log window)."""

    model: nn.Module
    ema_model: nn.Module
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    step: int = 0
    wall_time: float = 0.0  # seconds spent in this call
    throughput: float = 0.0  # examples / s in this call
    resumed_from: int = 0  # step loaded from the checkpoint (0 for a fresh run)


class _BatchSampler:
    """Indices of a fresh random permutation per epoch; batches may straddle epochs."""

    def __init__(self, n: int, generator: torch.Generator) -> None:
        self.n = n
        self.generator = generator
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def next(self, batch_size: int) -> torch.Tensor:
        parts, need = [], batch_size
        while need > 0:
            if self.pos >= self.perm.numel():
                self.perm = torch.randperm(self.n, generator=self.generator)
                self.pos = 0
            take = self.perm[self.pos : self.pos + need]
            parts.append(take)
            self.pos += take.numel()
            need -= take.numel()
        return torch.cat(parts) if len(parts) > 1 else parts[0]


def _check_data(data: torch.Tensor) -> None:
    if not isinstance(data, torch.Tensor) or data.ndim != 2:
        shape = list(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
        raise ValueError(f"expected data of shape [N, D] (flat, see CONTRIBUTING.md), got {shape}")
    if data.shape[0] == 0:
        raise ValueError("data is empty: expected shape [N, D] with N >= 1")
    if not torch.isfinite(data).all():
        raise ValueError("data contains NaN or inf values")


def _lr_factor(step: int, warmup: int) -> float:
    """Linear warmup: factor for the update that produces step `step + 1`."""
    return 1.0 if warmup <= 0 else min(1.0, (step + 1) / warmup)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for eb, b in zip(ema.buffers(), model.buffers()):
        eb.copy_(b)


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, ema_model: nn.Module | None = None
) -> dict[str, Any]:
    """Load model (and EMA) weights from a `train` checkpoint; return the checkpoint dict.

    The dict also holds `step`, `loss_history` and `config` (a plain dict).
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ckpt["model"])
    if ema_model is not None:
        ema_model.load_state_dict(ckpt["ema"])
    return ckpt


def train(
    model: nn.Module,
    loss_fn: LossFn,
    data: torch.Tensor,
    config: TrainConfig,
    checkpoint_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> TrainResult:
    """Minimise mean(loss_fn(model, batch, generator)) over batches of `data` [N, D].

    AdamW with linear warmup, global grad-norm clipping, and an EMA copy of the
    weights with decay min(ema_decay, (1 + step) / (10 + step)). Every
    `checkpoint_every` steps and at the end the state is written atomically to
    `checkpoint_path`; if that file exists, training resumes from it. `model` is
    trained in place and returned with its EMA copy in a `TrainResult`.
    """
    _check_data(data)
    if config.steps < 0 or config.batch_size < 1:
        raise ValueError(f"need steps >= 0 and batch_size >= 1, got {config.steps}, {config.batch_size}")
    device = torch.device(config.device)
    on_cuda = device.type == "cuda"

    model.to(device)
    ema_model = copy.deepcopy(model).requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    data_gen = torch.Generator(device="cpu").manual_seed(config.seed)
    loss_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    sampler = _BatchSampler(data.shape[0], data_gen)
    data = data.to(device)

    step = 0
    history: list[tuple[int, float]] = []
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)  # since the last log
    loss_count = 0
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if path is not None and path.exists():
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        ema_model.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        data_gen.set_state(ckpt["data_generator"])
        loss_gen.set_state(ckpt["loss_generator"])
        sampler.perm, sampler.pos = ckpt["perm"], int(ckpt["perm_pos"])
        step = int(ckpt["step"])
        history = [(int(s), float(v)) for s, v in ckpt["loss_history"]]
        loss_sum = ckpt["loss_sum"].to(device)
        loss_count = int(ckpt["loss_count"])
    resumed_from = step

    def save() -> None:
        if path is None:
            return
        _atomic_save(
            {
                "model": model.state_dict(),
                "ema": ema_model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "data_generator": data_gen.get_state(),
                "loss_generator": loss_gen.get_state(),
                "perm": sampler.perm,
                "perm_pos": sampler.pos,
                "loss_history": list(history),
                "loss_sum": loss_sum.detach().cpu(),
                "loss_count": loss_count,
                "config": dataclasses.asdict(config),
            },
            path,
        )

    fwd_model: nn.Module = torch.compile(model) if (config.compile and on_cuda) else model
    use_amp = config.amp_bf16 and on_cuda
    model.train()

    t0 = time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True)
    try:
        while step < config.steps:
            idx = sampler.next(config.batch_size).to(device)
            batch = data[idx]  # [B, D]
            for group in optimizer.param_groups:
                group["lr"] = config.lr * _lr_factor(step, config.warmup)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16) if use_amp else nullcontext():
                losses = loss_fn(fwd_model, batch, loss_gen)
            if losses.ndim != 1 or losses.shape[0] != batch.shape[0]:
                raise ValueError(
                    f"loss_fn must return a per-example loss of shape [{batch.shape[0]}], got {list(losses.shape)}"
                )
            loss = losses.float().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            _ema_update(ema_model, model, min(config.ema_decay, (1 + step) / (10 + step)))
            step += 1
            bar.update(1)

            loss_sum += loss.detach().double()
            loss_count += 1
            if step % config.log_every == 0 or step == config.steps:
                mean_loss = loss_sum.item() / loss_count
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(f"non-finite training loss {mean_loss} at step {step}")
                history.append((step, mean_loss))
                loss_sum.zero_()
                loss_count = 0
                bar.set_postfix(loss=f"{mean_loss:.4f}")
            if step % config.checkpoint_every == 0 or step == config.steps:
                save()
    finally:
        bar.close()
    if on_cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    done = step - resumed_from
    return TrainResult(
        model=model,
        ema_model=ema_model,
        loss_history=history,
        step=step,
        wall_time=wall,
        throughput=done * config.batch_size / wall if wall > 0 else 0.0,
        resumed_from=resumed_from,
    )
