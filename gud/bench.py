"""Throughput probe: training images/s and sampling network evaluations/s of denoisers.

:func:`probe` measures, for each entry, on one device:

* training images/s: real optimiser steps of the epsilon-matching loss
  (:class:`gud.diffusion.EpsLoss` under a component-wise schedule) through
  :class:`gud.train.TrainStep`, i.e. with exactly the fast path ``gud.train`` uses
  on that device (bf16 autocast, channels_last, fused AdamW and optionally
  ``torch.compile`` on CUDA; eager fp32 on the CPU);
* sampling throughput in images x NFE / s: forward passes of the denoiser in eval
  mode under ``torch.inference_mode`` at ``sample_batch`` images, as the samplers
  of :mod:`gud.samplers` call it (fp32, not compiled).

A short warm-up (compilation, cuDNN autotuning, allocator) precedes each timed
loop and is not counted; CUDA is synchronised before and after every timed loop.
The time budget ``seconds`` is split evenly between entries, two thirds training
and one third sampling; warm-ups come on top of it.

:func:`main` is the command line ``python -m gud bench``: it probes the distinct
networks of a run profile's experiments.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .bases import PCABasis, make_basis
from .data import DATASETS
from .diffusion import EpsLoss
from .nets import EpsNet, build_net
from .schedules import Schedule, SoftConditioningSchedule
from .train import TrainConfig, TrainStep

__all__ = ["probe", "timed_loop", "count_params", "componentwise_schedule", "build_entry_model",
           "profile_entries", "main"]

WARMUP_CALLS = 2
MIN_CALLS = 3


def count_params(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_loop(fn: Callable[[int], Any], seconds: float, device: str | torch.device, *,
               warmup: int = WARMUP_CALLS, min_calls: int = MIN_CALLS) -> tuple[int, float]:
    """Call ``fn(i)`` ``warmup`` times untimed, then until ``seconds`` have passed (at least
    ``min_calls`` times); returns ``(calls, elapsed seconds)`` of the timed part.

    The host is not synchronised between calls (work queues up as in training); CUDA is
    synchronised before the clock starts and before it stops, so queued work is counted.
    """
    device = torch.device(device)
    for i in range(warmup):
        fn(i)
    _sync(device)
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn(warmup + calls)
        calls += 1
    _sync(device)
    return calls, time.perf_counter() - start


def componentwise_schedule(dim: int, label_span: float = 4.0,
                           a_range: tuple[float, float] = (0.5, 2.0)) -> SoftConditioningSchedule:
    """A component-wise soft-conditioning schedule for throughput runs: labels rising over
    the component index to ``label_span`` (for the Fourier basis: low to high frequency),
    whitened prior (``log_var = 0``), inverse softness ``a`` drawn from ``a_range`` per
    example, as training of a schedule family runs."""
    labels = torch.linspace(0.0, label_span, dim, dtype=torch.float64)
    return SoftConditioningSchedule(labels, torch.zeros(dim, dtype=torch.float64), a=1.0,
                                    param_range=[list(a_range)])


def _basis(name: str, shape: Sequence[int], seed: int, **kwargs: Any):
    if name == "pca":  # a random orthogonal matrix costs what a fitted PCA basis costs
        d = math.prod(shape)
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        return PCABasis(shape, q.T.contiguous(), torch.linspace(1.0, 0.01, d, dtype=torch.float64))
    return make_basis(name, shape, **kwargs)


def build_entry_model(entry: dict[str, Any]) -> nn.Module:
    """The denoiser of a :func:`probe` entry: ``entry["factory"]()``, or a network of
    ``gud.nets.build_net(kind, shape, **net_kwargs)`` (weights from ``seed``) wrapped like
    ``gud.pipeline.build_model``: ``EpsNet`` with the basis (float32), a whitened prior
    (``log_var = 0``), image layout for a U-Net."""
    if entry.get("factory") is not None:
        return entry["factory"]()
    shape = tuple(int(s) for s in entry["shape"])
    kind = entry.get("kind", "unet")
    basis = _basis(entry.get("basis", "pixel"), shape, entry.get("seed", 0), **entry.get("basis_kwargs", {}))
    net = build_net(kind, shape, seed=entry.get("seed", 0), **entry.get("net_kwargs", {}))
    d = math.prod(shape)
    return EpsNet(net, basis.float(), torch.zeros(d), image_shape=shape if kind == "unet" else None)


def _check_entry(entry: Any, i: int) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise ValueError(f"models[{i}] must be a dict, got {type(entry).__name__}")
    if not isinstance(entry.get("name"), str):
        raise ValueError(f"models[{i}] needs a 'name' (str)")
    shape = entry.get("shape")
    if shape is None or len(tuple(shape)) != 3 or any(int(s) < 1 for s in shape):
        raise ValueError(f"models[{i}] ({entry['name']}): 'shape' must be (C, H, W), got {shape!r}")
    if entry.get("factory") is None and entry.get("kind", "unet") not in ("unet", "mlp"):
        raise ValueError(f"models[{i}] ({entry['name']}): give a 'factory' or kind 'unet'/'mlp', "
                         f"got kind {entry.get('kind')!r}")
    if entry.get("factory") is not None and not callable(entry["factory"]):
        raise ValueError(f"models[{i}] ({entry['name']}): 'factory' must be callable")
    for key in ("batch", "sample_batch"):
        if key in entry and (not isinstance(entry[key], int) or entry[key] < 1):
            raise ValueError(f"models[{i}] ({entry['name']}): '{key}' must be an integer >= 1, got {entry[key]!r}")
    return entry


def probe(models: Sequence[dict[str, Any]], seconds: float = 60.0, device: str | torch.device | None = None, *,
          amp_bf16: bool = True, channels_last: bool = True, compile: bool = False,
          verbose: bool = True) -> list[dict[str, Any]]:
    """Training images/s and sampling images x NFE / s of each entry of ``models`` on ``device``.

    An entry is a dict with ``name``, ``shape`` (C, H, W), ``batch`` (training batch,
    default 64), ``sample_batch`` (default ``batch``), optional ``schedule`` (a
    :class:`gud.schedules.Schedule` over ``D = C*H*W``; default
    :func:`componentwise_schedule`), and either ``factory`` (a callable returning an
    ``nn.Module`` denoiser ``(y_t [B, D], gamma [B, D]) -> eps [B, D]``; it must not draw
    from the global RNG) or the pieces of a gud network: ``kind`` ("unet" or "mlp"),
    ``net_kwargs``, ``basis`` (default "pixel"; "pca" is a random orthogonal matrix of the
    same cost), ``basis_kwargs``, ``seed`` (see :func:`build_entry_model`).

    ``seconds`` is the measured time of all entries together (warm-ups excluded);
    ``device`` defaults to CUDA if available. ``amp_bf16``, ``channels_last`` and
    ``compile`` are the :class:`gud.train.TrainConfig` switches (they only act on CUDA;
    compilation can take minutes, hence off by default). Inputs are random whitened
    components from a seeded generator. Prints a table if ``verbose``; returns one dict
    per entry: ``name, device, fast_path, params, shape, batch, train_steps, train_s,
    train_img_s, sample_batch, nfe_calls, sample_s, nfe_img_s``.
    """
    if not isinstance(models, (list, tuple)) or not models:
        raise ValueError("models must be a non-empty list of dicts (see gud.bench.probe)")
    entries = [_check_entry(e, i) for i, e in enumerate(models)]
    if not (isinstance(seconds, (int, float)) and seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"seconds must be a positive number, got {seconds!r}")
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    per_entry = seconds / len(entries)
    rows = []
    for entry in entries:
        shape = tuple(int(s) for s in entry["shape"])
        d = math.prod(shape)
        batch = int(entry.get("batch", 64))
        sample_batch = int(entry.get("sample_batch", batch))
        schedule: Schedule = entry.get("schedule") or componentwise_schedule(d)
        if schedule.dim != d:
            raise ValueError(f"{entry['name']}: schedule.dim {schedule.dim} != C*H*W = {d}")
        model = build_entry_model(entry)
        cfg = TrainConfig(steps=1, batch_size=batch, lr=1e-4, warmup=0, device=str(device),
                          amp_bf16=amp_bf16, compile=compile, channels_last=channels_last,
                          loss_generator_device=str(device))
        stepper = TrainStep(model, EpsLoss(schedule.to(device)), cfg)
        g = torch.Generator().manual_seed(entry.get("seed", 0))
        n_batches = 4
        data = torch.randn(n_batches * batch, d, generator=g).to(device)
        loss_gen = torch.Generator(cfg.loss_generator_device).manual_seed(1)

        def train_call(i: int) -> None:
            k = i % n_batches
            stepper.step(data[k * batch:(k + 1) * batch], loss_gen, i)

        steps, train_s = timed_loop(train_call, per_entry * 2 / 3, device)

        net = stepper.model.eval()
        y = torch.randn(sample_batch, d, generator=g).to(device)
        t = torch.full((sample_batch,), 0.5, dtype=torch.float64)
        gamma = schedule.gamma(t).to(device=device, dtype=torch.float32)

        @torch.inference_mode()
        def nfe_call(i: int) -> None:
            net(y, gamma)

        calls, sample_s = timed_loop(nfe_call, per_entry / 3, device)
        row = {
            "name": entry["name"], "device": str(device), "fast_path": stepper.describe(),
            "params": count_params(model), "shape": shape, "batch": batch,
            "train_steps": steps, "train_s": train_s, "train_img_s": steps * batch / train_s,
            "sample_batch": sample_batch, "nfe_calls": calls, "sample_s": sample_s,
            "nfe_img_s": calls * sample_batch / sample_s,
        }
        rows.append(row)
        if verbose:
            print(f"  {row['name']}: {row['train_img_s']:.1f} train img/s, {row['nfe_img_s']:.1f} img*NFE/s",
                  flush=True)
        del stepper, model, data
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if verbose:
        print_table(rows)
    return rows


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """The rows of :func:`probe` as a text table."""
    if not rows:
        return
    print(f"device {rows[0]['device']} ({rows[0]['fast_path']})")
    head = f"{'network':<34}{'shape':>12}{'params':>13}{'batch':>7}{'train img/s':>13}{'img*NFE/s':>12}"
    print(head)
    print("-" * len(head))
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['name'][:33]:<34}{shape:>12}{r['params']:>13,}{r['batch']:>7}"
              f"{r['train_img_s']:>13.1f}{r['nfe_img_s']:>12.1f}")


# --------------------------------------------------------------------------- profiles


def _dataset_shape(spec: Any, config: dict[str, Any]) -> tuple[str, tuple[int, int, int]] | None:
    """(name, image shape) of one entry of an experiment's ``datasets``, or None if unknown."""
    if isinstance(spec, str):
        name, pad = spec, (config.get("data_kwargs", {}).get(spec, {}) or {}).get("pad_to", config.get("pad_to"))
    elif isinstance(spec, dict) and spec.get("kind") == "field":
        return spec["name"], (1, int(spec["height"]), int(spec["width"]))
    elif isinstance(spec, dict) and "dataset" in spec:
        name, pad = spec["dataset"], spec.get("pad_to")
    else:
        return None
    if name not in DATASETS:
        return None
    c, h, w = DATASETS[name][0]
    if name == "pcam":
        h = w = 32  # gud.data's default crop
    if pad:
        h = w = int(pad)
    return (spec if isinstance(spec, str) else spec.get("name", name)), (c, h, w)


def profile_entries(profile: str) -> list[dict[str, Any]]:
    """The distinct (network, data shape, batch, basis) of a profile's experiments, as
    :func:`probe` entries."""
    from .profiles import EXPERIMENTS, experiment_config

    entries, seen = [], set()
    for exp in EXPERIMENTS:
        try:
            config = experiment_config(exp, profile)
        except ValueError:
            continue
        if "net" not in config:
            continue
        for spec in config.get("datasets", []):
            found = _dataset_shape(spec, config)
            if found is None:
                continue
            data_name, shape = found
            basis = config.get("basis", "pixel")
            basis_kwargs = {}
            if basis == "wavelet":
                basis_kwargs = {"wavelet": config.get("wavelet", "haar")}
                if isinstance(spec, dict) and spec.get("levels"):
                    basis_kwargs["levels"] = int(spec["levels"])
            entry = {"kind": config["net"], "net_kwargs": dict(config.get("net_kwargs", {})), "shape": shape,
                     "batch": int(config.get("batch_size", 128)), "basis": basis, "basis_kwargs": basis_kwargs}
            key = repr(sorted((k, repr(v)) for k, v in entry.items()))
            if key in seen:
                continue
            seen.add(key)
            entry["name"] = f"{exp} {data_name} {config['net']} ({basis})"
            entries.append(entry)
    return entries


def main(quick: bool = False, profile: str = "gpu", seconds: float | None = None,
         device: str | None = None, threads: int | None = None) -> int:
    """``python -m gud bench``: probe the networks of ``profile`` (``quick``: 60 s in all,
    else 30 s per network, unless ``seconds`` is given). On the CPU torch runs ``threads``
    intra-op threads (default: env ``GUD_THREADS``, else 1: on a shared machine more threads
    spin-wait and slow small networks down many times). Returns the exit status."""
    import os

    entries = profile_entries(profile)
    if not entries:
        print(f"profile {profile!r} trains no networks: nothing to probe")
        return 0
    if seconds is None:
        seconds = 60.0 if quick else 30.0 * len(entries)
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    previous = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(int(threads or os.environ.get("GUD_THREADS") or 1))
    try:
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
        print(f"gud bench: profile {profile}, {len(entries)} networks, {seconds:.0f} s measured, {dev} ({name})")
        probe(entries, seconds=seconds, device=dev)
        elbo_probe(entries[-1], device=dev, seconds=min(15.0, seconds / 4))
    finally:
        torch.set_num_threads(previous)
    return 0


@torch.no_grad()
def elbo_probe(entry: dict, *, device, seconds: float = 10.0, batch: int = 500, n_time_samples: int = 1) -> dict:
    """Throughput of the ELBO (bits/dim, one Monte-Carlo replicate per image, the discretised
    decoder of :func:`gud.pipeline.evaluate_bpd` with its basis matrix) for the network of
    ``entry`` on random 8-bit images, and the projected time for 10,000 test images."""
    import time

    from .bases import make_basis
    from .likelihood import elbo
    from .prior import Prior

    shape = tuple(int(s) for s in entry["shape"])
    d = math.prod(shape)
    g = torch.Generator().manual_seed(0)
    x = torch.round(torch.rand(max(batch, 64), d, generator=g) * 255) / 127.5 - 1
    basis = make_basis("pixel", shape)
    prior = Prior.fit(basis, x.double(), whitened=True).to(device)
    model = build_entry_model(entry).to(device).eval()
    schedule = componentwise_schedule(d).to(device)
    xb, yb = x[:batch].to(device), prior.encode(x[:batch].double()).float().to(device)
    gen = torch.Generator(device).manual_seed(1)
    use_amp = device.type == "cuda"
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()

    def once():
        with ctx:
            return elbo(model, yb, schedule, generator=gen, n_time_samples=n_time_samples, decoder="discretized",
                        prior=prior, x=xb)

    once()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds or n == 0:
        once()
        n += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    rate = n * batch / (time.perf_counter() - t0)
    print(f"ELBO (bits/dim, discretised decoder, {n_time_samples} replicate, batch {batch}"
          f"{', bf16 network' if use_amp else ''}) for {entry['name']}: {rate:.0f} images/s, "
          f"10,000 test images in {10000 / rate:.1f} s")
    return {"images_per_s": rate, "seconds_10k": 10000 / rate}
