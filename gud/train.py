"""Training loop: AdamW, linear warmup, grad-norm clipping, EMA, held-out early stopping,
atomic checkpoints, resume, and a clean stop before a deadline.

The loop knows nothing about diffusion. It calls

    loss_fn(model, batch [B, D], generator) -> per-example loss [B]

(the epsilon-matching loss lives in `gud.diffusion`) and minimises the batch
mean. All randomness comes from two `torch.Generator`s seeded from
`config.seed`: one (CPU) draws the batches, as a fresh `randperm` of the data
per epoch; the other (on `config.loss_generator_device`) is handed to `loss_fn`.
Their states, the current epoch permutation, model, EMA, optimiser, the
held-out evaluations and the best EMA state are checkpointed, so an interrupted
run (by an error, a kill, or `deadline`) resumed from its checkpoint is
bit-exact on the CPU.

Checkpoints are written atomically with a sidecar `<path>.sha256`
(`gud.results.write_checked`) and checked before they are loaded: a damaged
checkpoint is discarded with a warning and training starts afresh. SIGINT
(Ctrl-C) and SIGTERM during training write a checkpoint after the current step
and raise `TrainingInterrupted` (a `KeyboardInterrupt`) saying where; a second
signal stops at once. The checkpoint also keeps the training time of all calls
so far (`TrainResult.total_time`).

Device fast path (CUDA only; every switch is off, or has no effect, on the CPU):
bf16 autocast of the loss (`amp_bf16`), `channels_last` weights for networks with
4-D convolutions (`channels_last`), `torch.compile` of the model handed to
`loss_fn` (`compile`: for a `gud.nets.EpsNet` that is the whole denoiser, basis
transform and noise-state conditioning included, compiled for the fixed batch
shape), fused AdamW (also on the CPU), EMA with `torch._foreach` ops, the data resident on the
device, and no host synchronisation inside the step: batch indices are sliced
from a per-epoch permutation already on the device, and the losses are summed on
the device and read every `log_every` steps only. `TrainStep` is that step on
its own (used by `gud.bench`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import os
import signal
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["TrainConfig", "TrainResult", "TrainStep", "TrainingInterrupted", "train", "load_checkpoint"]

LossFn = Callable[[nn.Module, torch.Tensor, torch.Generator], torch.Tensor]
EvalFn = Callable[[nn.Module], float]


@dataclass
class TrainConfig:
    """Hyper-parameters of `train`. `steps` is the maximum number of optimiser steps
    (fewer when early stopping ends the run)."""

    steps: int
    batch_size: int
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup: int = 100  # linear learning-rate warmup over this many steps
    grad_clip: float = 1.0  # max global grad norm; <= 0 disables clipping
    ema_decay: float = 0.999
    checkpoint_every: int = 500  # steps between checkpoints
    checkpoint_every_s: float | None = 180.0  # also checkpoint when this many seconds passed; None: never
    seed: int = 0
    device: str = "cpu"
    amp_bf16: bool = False  # bf16 autocast of the loss; CUDA only
    compile: bool = False  # torch.compile the model handed to loss_fn; CUDA only
    channels_last: bool = False  # channels_last weights for models with 4-D convolutions; CUDA only
    # Device of the generator handed to loss_fn. "cpu" works with every loss (gud.diffusion.EpsLoss
    # draws t and the schedule parameters on the CPU); a loss that draws everything on the
    # generator's device can use config.device and so avoid host-device copies.
    loss_generator_device: str = "cpu"
    log_every: int = 50
    eval_every: int = 500  # steps between held-out evaluations (only with `eval_fn`)
    patience: int | None = None  # evaluations without improvement before stopping; None: never stop early
    min_delta: float = 0.0  # an improvement must lower the best value by more than min_delta * |best|


@dataclass
class TrainResult:
    """What `train` returns.

    `loss_history` holds (step, mean training loss over the last log window),
    `eval_history` (step, eval_fn value). `ema_model` is the EMA at `best_step`
    (the best held-out evaluation) when `eval_fn` was given, else the last EMA.
    `finished` is False when the run stopped for the deadline before its end
    (run `train` again with the same checkpoint to continue); `stopped_early` is
    True when the patience rule ended it.
    """

    model: nn.Module
    ema_model: nn.Module
    loss_history: list[tuple[int, float]] = field(default_factory=list)
    step: int = 0
    wall_time: float = 0.0  # seconds spent in this call
    total_time: float = 0.0  # seconds spent training in all calls up to this one's end (resumes added up)
    throughput: float = 0.0  # examples / s in this call
    resumed_from: int = 0  # step loaded from the checkpoint (0 for a fresh run)
    finished: bool = True
    stopped_early: bool = False
    eval_history: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None  # step of the best evaluation (None without eval_fn)
    best_value: float | None = None


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped `train`; the state up to `step` is in the checkpoint `path`."""

    def __init__(self, signum: int, step: int, steps: int, path: Path | None):
        self.signum, self.step, self.steps, self.path = signum, step, steps, path
        where = f"checkpoint saved to {path}" if path is not None else "no checkpoint path: nothing saved"
        super().__init__(f"training interrupted by {signal.Signals(signum).name} at step {step} of {steps}; {where}")


def _check_config(config: TrainConfig) -> None:
    def bad(name: str, need: str) -> ValueError:
        return ValueError(f"TrainConfig.{name} must be {need}, got {getattr(config, name)!r}")

    def is_int(v: Any) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if not is_int(config.steps) or config.steps < 0:
        raise bad("steps", "an integer >= 0")
    if not is_int(config.batch_size) or config.batch_size < 1:
        raise bad("batch_size", "an integer >= 1")
    for name in ("checkpoint_every", "log_every", "eval_every"):
        if not is_int(getattr(config, name)) or getattr(config, name) < 1:
            raise bad(name, "an integer >= 1")
    if not config.lr > 0:
        raise bad("lr", "> 0")
    if not 0 <= config.ema_decay < 1:
        raise bad("ema_decay", "in [0, 1)")
    if config.checkpoint_every_s is not None and not config.checkpoint_every_s >= 0:
        raise bad("checkpoint_every_s", "None or >= 0")
    if config.patience is not None and (not is_int(config.patience) or config.patience < 1):
        raise bad("patience", "None or an integer >= 1")
    if not config.min_delta >= 0:
        raise bad("min_delta", ">= 0")


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


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a CPU tensor to `device` without blocking the host (pinned memory on CUDA)."""
    if device.type == "cpu":
        return t
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class _BatchSampler:
    """Indices of a fresh random permutation per epoch; batches may straddle epochs.

    The permutation is drawn on the CPU (so batches are the same on every device)
    and copied to `device` once per epoch; batches are slices of that copy.
    """

    def __init__(self, n: int, generator: torch.Generator, device: torch.device) -> None:
        self.n = n
        self.generator = generator
        self.device = device
        self.perm = torch.empty(0, dtype=torch.long)  # CPU, checkpointed
        self.perm_dev = self.perm
        self.pos = 0

    def load(self, perm: torch.Tensor, pos: int) -> None:
        self.perm, self.pos = perm, int(pos)
        self.perm_dev = _to_device(perm, self.device)

    def next(self, batch_size: int) -> torch.Tensor:
        parts, need = [], batch_size
        while need > 0:
            if self.pos >= self.perm.numel():
                self.load(torch.randperm(self.n, generator=self.generator), 0)
            take = self.perm_dev[self.pos : self.pos + need]
            parts.append(take)
            self.pos += take.numel()
            need -= take.numel()
        return torch.cat(parts) if len(parts) > 1 else parts[0]


@torch.no_grad()
def _ema_update(ema_params: list[torch.Tensor], params: list[torch.Tensor], ema_buffers: list[torch.Tensor],
                buffers: list[torch.Tensor], decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for the parameters; buffers copied."""
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    if buffers:
        torch._foreach_copy_(ema_buffers, buffers)


def _state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _atomic_save(obj: dict[str, Any], path: Path) -> None:
    """`torch.save` atomically, with the sidecar checksum `<path>.sha256`."""
    from .results import write_checked

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    write_checked(path, write)


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by `train`, after checking it against its sidecar checksum; a damaged or
    unreadable one raises `gud.results.CorruptFileError` naming it."""
    from .results import CorruptFileError, verify_checked

    verify_checked(path, repair=f"delete {path} (and {path.name}.sha256) to train afresh")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read it is damage
        raise CorruptFileError(path, f"unreadable: {type(exc).__name__}: {exc}") from exc


def load_checkpoint(
    path: str | os.PathLike, model: nn.Module, ema_model: nn.Module | None = None, *, best: bool = True
) -> dict[str, Any]:
    """Load model (and EMA) weights from a `train` checkpoint; return the checkpoint dict.

    `ema_model` gets the EMA that `train` returns: the state at the best held-out
    evaluation if the run had evaluations (`best=False`: the last EMA instead).
    The dict also holds `step`, `loss_history`, `eval_history`, `best_step` and
    `config` (a plain dict).
    """
    ckpt = _read_checkpoint(Path(path))
    model.load_state_dict(ckpt["model"])
    if ema_model is not None:
        best_ema = ckpt.get("best_ema")
        ema_model.load_state_dict(best_ema if (best and best_ema is not None) else ckpt["ema"])
    return ckpt


class TrainStep:
    """One optimiser step of `train`, with the device fast path of `config`.

    Moves `model` to `config.device` (channels_last weights if asked, on CUDA),
    makes an EMA copy (`self.ema`), an AdamW optimiser (fused on CUDA) and the
    module handed to `loss_fn` (`self.forward_model`: `torch.compile(model)` if
    asked, on CUDA, for fixed shapes). `step(batch, generator, step)` does
    forward (bf16 autocast if asked, on CUDA), backward, clipping, the update
    and the EMA update, and returns the batch-mean loss as a 0-d tensor on the
    device without synchronising the host.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, config: TrainConfig) -> None:
        self.config = config
        self.loss_fn = loss_fn
        self.device = torch.device(config.device)
        on_cuda = self.device.type == "cuda"
        self.model = model.to(self.device)
        self.channels_last = bool(
            config.channels_last and on_cuda and any(p.ndim == 4 for p in model.parameters())
        )
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if on_cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolutions once
        self.ema = copy.deepcopy(model).requires_grad_(False)
        # the tensors of every step, listed once (a module walk per step costs as much as a small layer)
        self._params = [p for p in model.parameters()]
        self._ema = ([p for p in self.ema.parameters()], [p.detach() for p in self._params],
                     [b for b in self.ema.buffers()], [b for b in model.buffers()])
        # fused AdamW: one kernel per parameter on CUDA and on the CPU (where it is 1.15x faster than
        # the per-tensor loop for the book's MLP; same update up to rounding)
        self.fused = self.device.type in ("cuda", "cpu")
        self.optimizer = torch.optim.AdamW(
            self._params, lr=config.lr, weight_decay=config.weight_decay, fused=True if self.fused else None
        )
        self.compiled = bool(config.compile and on_cuda)
        self.forward_model: nn.Module = torch.compile(model, dynamic=False) if self.compiled else model
        self.amp = bool(config.amp_bf16 and on_cuda)
        model.train()

    def describe(self) -> str:
        """The switches in effect, e.g. ``"cuda: bf16, compile, channels_last, fused AdamW"`` or
        ``"cpu: fp32, fused AdamW"`` (the fused optimiser runs on both)."""
        on = [name for name, flag in (("bf16", self.amp), ("compile", self.compiled),
                                      ("channels_last", self.channels_last)) if flag]
        return f"{self.device.type}: {', '.join(on) if on else 'eager fp32'}" + (", fused AdamW" if self.fused else "")

    def step(self, batch: torch.Tensor, generator: torch.Generator, step: int) -> torch.Tensor:
        """One update from `batch [B, D]`; `step` = number of updates done before (for warmup, EMA)."""
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config.warmup)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.amp else nullcontext():
            losses = self.loss_fn(self.forward_model, batch, generator)
        if losses.ndim != 1 or losses.shape[0] != batch.shape[0]:
            raise ValueError(
                f"loss_fn must return a per-example loss of shape [{batch.shape[0]}], got {list(losses.shape)}"
            )
        loss = losses.float().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self._params, config.grad_clip)
        self.optimizer.step()
        _ema_update(*self._ema, min(config.ema_decay, (1 + step) / (10 + step)))
        return loss.detach()

    __call__ = step


def train(
    model: nn.Module,
    loss_fn: LossFn,
    data: torch.Tensor,
    config: TrainConfig,
    checkpoint_path: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    deadline: float | None = None,
    eval_fn: EvalFn | None = None,
) -> TrainResult:
    """Minimise mean(loss_fn(model, batch, generator)) over batches of `data` [N, D].

    AdamW with linear warmup, global grad-norm clipping, and an EMA copy of the
    weights with decay min(ema_decay, (1 + step) / (10 + step)); the CUDA fast
    path of the module docstring.

    Held-out evaluation and early stopping ("train until the held-out loss
    flattens"): every `config.eval_every` steps and at the last step,
    `eval_fn(ema_model) -> float` is called on the current EMA (the caller
    computes a held-out loss with a fixed generator seed, so values are
    comparable). A value below best - min_delta * |best| is an improvement: the
    EMA state is copied as the best. After `config.patience` evaluations in a
    row without improvement, training stops. The returned `ema_model` is the
    EMA at the best evaluation (`TrainResult.best_step`), not the last one.

    Checkpoints: every `checkpoint_every` steps, every `checkpoint_every_s`
    seconds, at the end, and at a deadline stop, the full state is written
    atomically to `checkpoint_path` (with its sha256 in `<checkpoint_path>.sha256`);
    if that file exists, training resumes from it (a finished run returns at
    once); a damaged one is discarded with a warning.

    Signals: in the main thread, SIGINT and SIGTERM are caught while training; the
    state after the current step is checkpointed and `TrainingInterrupted` (a
    `KeyboardInterrupt`) is raised. A second signal raises `KeyboardInterrupt` at once.

    `deadline`: an absolute `time.monotonic()` value. Before each step, if the
    mean step time measured in this call (plus the last checkpoint's write
    time) says the step would end after it, the state is checkpointed and
    `train` returns with `finished=False`; calling it again continues, and the
    result equals that of an uninterrupted run (bit-exact on the CPU).

    `model` is trained in place and returned with the EMA in a `TrainResult`.
    """
    _check_data(data)
    _check_config(config)
    if deadline is not None and not (isinstance(deadline, (int, float)) and math.isfinite(deadline)):
        raise ValueError(f"deadline must be None or a finite time.monotonic() value, got {deadline!r}")
    if eval_fn is not None and not callable(eval_fn):
        raise ValueError(f"eval_fn must be a callable eval_fn(ema_model) -> float, got {type(eval_fn).__name__}")

    stepper = TrainStep(model, loss_fn, config)
    device, on_cuda = stepper.device, stepper.device.type == "cuda"
    ema_model, optimizer = stepper.ema, stepper.optimizer
    data_gen = torch.Generator(device="cpu").manual_seed(config.seed)
    loss_gen = torch.Generator(device=config.loss_generator_device).manual_seed(config.seed + 1)
    sampler = _BatchSampler(data.shape[0], data_gen, device)
    data = data.to(device)

    step = 0
    history: list[tuple[int, float]] = []
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)  # since the last log
    loss_count = 0
    evals: list[tuple[int, float]] = []
    best_value: float | None = None
    best_step: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    bad_evals = 0  # evaluations since the last improvement
    stopped = False  # ended by the patience rule
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    ckpt = None
    if path is not None and path.exists():
        from .results import CorruptFileError, remove_checked

        try:
            ckpt = _read_checkpoint(path)
        except CorruptFileError as exc:
            warnings.warn(f"discarding a damaged checkpoint: {exc}; training starts afresh", stacklevel=2)
            remove_checked(path)
    train_seconds_before = 0.0  # training time of earlier calls, up to the checkpoint
    if ckpt is not None:
        train_seconds_before = float(ckpt.get("train_seconds", 0.0))
        model.load_state_dict(ckpt["model"])
        ema_model.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        data_gen.set_state(ckpt["data_generator"])
        loss_gen.set_state(ckpt["loss_generator"])
        sampler.load(ckpt["perm"], ckpt["perm_pos"])
        step = int(ckpt["step"])
        history = [(int(s), float(v)) for s, v in ckpt["loss_history"]]
        loss_sum = ckpt["loss_sum"].to(device)
        loss_count = int(ckpt["loss_count"])
        evals = [(int(s), float(v)) for s, v in ckpt.get("eval_history", [])]
        best_value = ckpt.get("best_value")
        best_step = ckpt.get("best_step")
        best_state = ckpt.get("best_ema")
        if best_state is not None:
            best_state = {k: v.to(device) for k, v in best_state.items()}
        bad_evals = int(ckpt.get("bad_evals", 0))
        stopped = bool(ckpt.get("stopped_early", False))
    resumed_from = step

    save_seconds = 0.0  # duration of the last checkpoint write

    def save() -> None:
        nonlocal save_seconds
        if path is None:
            return
        t = time.monotonic()
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
                "eval_history": list(evals),
                "best_value": best_value,
                "best_step": best_step,
                "best_ema": best_state,
                "bad_evals": bad_evals,
                "stopped_early": stopped,
                "config": dataclasses.asdict(config),
                "train_seconds": train_seconds_before + time.perf_counter() - t0,
            },
            path,
        )
        save_seconds = time.monotonic() - t

    eval_seconds = 0.0  # duration of the last evaluation

    def evaluate() -> None:
        nonlocal best_value, best_step, best_state, bad_evals, stopped, eval_seconds
        t = time.monotonic()
        was_training = ema_model.training
        ema_model.eval()
        raw = eval_fn(ema_model)
        ema_model.train(was_training)
        try:
            value = float(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"eval_fn must return a number, got {type(raw).__name__}") from exc
        evals.append((step, value))
        if best_value is None or value < best_value - config.min_delta * abs(best_value):
            best_value, best_step, best_state, bad_evals = value, step, _state_copy(ema_model), 0
        else:
            bad_evals += 1
            stopped = config.patience is not None and bad_evals >= config.patience
        eval_seconds = time.monotonic() - t

    def log() -> None:
        nonlocal loss_count
        mean_loss = loss_sum.item() / loss_count  # the only per-window host synchronisation
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"non-finite training loss {mean_loss} at step {step}")
        history.append((step, mean_loss))
        loss_sum.zero_()
        loss_count = 0
        bar.set_postfix(loss=f"{mean_loss:.4f}")

    def next_step_fits() -> bool:
        """Whether step `step + 1` (and the checkpoint after it) likely ends before `deadline`."""
        now = time.monotonic()
        done = step - resumed_from
        if done == 0:
            return now < deadline
        if on_cuda and now + 2 * mean_step() > deadline:
            torch.cuda.synchronize(device)  # near the deadline: count the queued work too
            now = time.monotonic()
        need = mean_step() + save_seconds
        if eval_fn is not None and ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
            need += eval_seconds
        return now + need <= deadline

    def mean_step() -> float:
        """Mean seconds per step in this call, the first (warm-up, compilation) step excluded."""
        done = step - resumed_from
        if done <= 1:
            return first_step_end - loop_start
        return (time.monotonic() - first_step_end) / (done - 1)

    stop_signal: list[int] = []  # signals received while training

    def on_signal(signum: int, frame: Any) -> None:
        if stop_signal:  # the second one: stop at once
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} again: stopped without a checkpoint")
        stop_signal.append(signum)

    handlers: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is signal.SIG_IGN:  # e.g. SIGINT of a background job: stays ignored
                continue
            try:
                handlers[sig] = signal.signal(sig, on_signal)
            except (ValueError, OSError):  # pragma: no cover - embedded interpreters
                pass

    t0 = time.perf_counter()
    loop_start = first_step_end = time.monotonic()
    last_save = loop_start
    finished = True
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True)
    try:
        while step < config.steps and not stopped:
            if stop_signal:
                save()
                finished = False
                break
            if deadline is not None and not next_step_fits():
                save()
                finished = False
                break
            batch = data[sampler.next(config.batch_size)]  # [B, D]
            loss = stepper.step(batch, loss_gen, step)
            step += 1
            if step == resumed_from + 1:
                first_step_end = time.monotonic()
            bar.update(1)

            loss_sum += loss.double()
            loss_count += 1
            if eval_fn is not None and (step % config.eval_every == 0 or step == config.steps):
                evaluate()
            if step % config.log_every == 0 or step == config.steps or (stopped and loss_count):
                log()
            timed = config.checkpoint_every_s is not None and time.monotonic() - last_save >= config.checkpoint_every_s
            if step % config.checkpoint_every == 0 or step == config.steps or stopped or timed:
                save()
                last_save = time.monotonic()
    finally:
        bar.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    if stop_signal and not finished:
        raise TrainingInterrupted(stop_signal[0], step, config.steps, path)
    if stop_signal:  # arrived during the last step: training is done and saved; pass the signal on
        signal.raise_signal(stop_signal[0])
    if on_cuda:
        torch.cuda.synchronize(device)
    wall = time.perf_counter() - t0
    done = step - resumed_from
    if best_state is not None:
        ema_model.load_state_dict(best_state)
    return TrainResult(
        model=model,
        ema_model=ema_model,
        loss_history=history,
        step=step,
        wall_time=wall,
        total_time=train_seconds_before + wall,
        throughput=done * config.batch_size / wall if wall > 0 else 0.0,
        resumed_from=resumed_from,
        finished=finished,
        stopped_early=stopped,
        eval_history=evals,
        best_step=best_step,
        best_value=best_value,
    )
