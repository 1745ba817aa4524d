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
import importlib.metadata
import importlib.util
import math
import sys
import time
import types
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
           "profile_entries", "main", "compare_peer", "peer_rows", "import_peer", "forward_gflop", "PEER_SIZES"]

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
         device: str | None = None, threads: int | None = None, json_path: str | None = None,
         peer: bool = True, peer_sizes: Sequence[str] | None = None, peer_only: bool = False) -> int:
    """``python -m gud bench``: probe the networks of ``profile`` in fp32 and (on CUDA) bf16
    (``quick``: 30 s in all, else 30 s per network and precision, unless ``seconds`` is given),
    then ours beside the peer at equal parameters (:func:`compare_peer`; quick: the size of the
    gpu profile's U-Net; else also the MNIST and DDPM-CIFAR sizes, and those two in the peer's channel
    layout; the small size on the CPU; or the ``peer_sizes`` named), and the ELBO throughput.
    ``peer_only``: the comparison with the peer alone (no probe of the profile's networks, no ELBO).
    With ``json_path`` everything is also written there as JSON.
    On the CPU torch runs ``threads`` intra-op threads (default: env ``GUD_THREADS``, else 1:
    on a shared machine more threads spin-wait and slow small networks down many times).
    Returns the exit status."""
    import os

    unknown = sorted(set(peer_sizes or ()) - set(PEER_SIZES))
    if unknown:
        raise ValueError(f"unknown peer size(s) {', '.join(unknown)}; known: {', '.join(PEER_SIZES)}")
    if peer_only and not peer:
        raise ValueError("peer_only and no peer: nothing to measure")
    entries = [] if peer_only else profile_entries(profile)
    peer_seconds = seconds if peer_only and seconds else None  # else by device and --quick
    if seconds is None:
        seconds = 30.0 if quick else 30.0 * max(1, len(entries))
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    previous = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(int(threads or os.environ.get("GUD_THREADS") or 1))
    out: dict[str, Any] = {"machine": machine(dev), "profile": profile, "quick": bool(quick)}
    precisions = ["fp32", "bf16"] if dev.type == "cuda" else ["fp32"]

    def save() -> None:  # after every stage: a later stage's failure loses nothing measured
        if json_path:
            import json

            from .results import atomic_write

            text = json.dumps(out, indent=1, default=str) + "\n"
            atomic_write(json_path, lambda p: p.write_text(text))

    try:
        print(f"gud bench: profile {profile}, {len(entries)} networks, {seconds:.0f} s measured, {dev} "
              f"({out['machine']['device_name']})")
        rows = []
        for prec in precisions if entries else []:
            print(f"ours, {prec}:")
            for r in probe(entries, seconds=seconds / len(precisions), device=dev, amp_bf16=prec == "bf16"):
                rows.append({**r, "precision": prec})
        out["probe"] = rows
        out["faster"] = _faster(rows)
        for name, prec in out["faster"].items():
            print(f"  faster for {name}: {prec}")
        save()
        if peer:
            sizes = list(peer_sizes) if peer_sizes else ["small"] if dev.type == "cpu" else (
                ["gpu"] if quick else ["mnist", "cifar", "gpu", "mnist-layout", "cifar-layout"])
            per = 1.0 if dev.type == "cpu" else (4.0 if quick else 10.0)
            out["peer"] = peer_rows(sizes, dev, seconds=peer_seconds or per)
            save()
        if entries:
            out["elbo"] = elbo_probe(entries[-1], device=dev, seconds=min(15.0, seconds / 4))
    except BaseException as err:
        out["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        torch.set_num_threads(previous)
        save()
        if json_path:
            print(f"wrote {json_path}")
    return 0


def machine(device: torch.device) -> dict[str, Any]:
    """Where a benchmark ran: device, its name, torch version, threads, date."""
    import platform

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return {"device": str(device), "device_name": name, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M")}


def _faster(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Per network, the precision with the higher training throughput."""
    best: dict[str, tuple[float, str]] = {}
    for r in rows:
        if r["name"] not in best or r["train_img_s"] > best[r["name"]][0]:
            best[r["name"]] = (r["train_img_s"], r["precision"])
    return {k: v[1] for k, v in best.items()}


# --------------------------------------------------------------------------- the peer

PEER = "denoising-diffusion-pytorch"
PEER_INSTALL = (f"install the `bench` extra: `pip install -e .[bench]` (where PyPI's torchvision would replace "
                f"the installed torch: `pip install --no-deps {PEER}==2.3.4 && pip install einops ema-pytorch`)")

#: size -> (shape, batch, our UNet kwargs, the peer's Unet kwargs), parameters equal within 5 %
PEER_SIZES = {
    "mnist": ((1, 28, 28), 256,
              {"base_channels": 40, "channel_mults": (1, 2, 2), "num_res_blocks": 2},
              {"dim": 32, "dim_mults": (1, 2, 4)}),
    "cifar": ((3, 32, 32), 128,
              {"base_channels": 128, "channel_mults": (1, 2, 2, 2), "num_res_blocks": 2,
               "attention_resolutions": (16,)},
              {"dim": 64, "dim_mults": (1, 2, 4, 8)}),
    "gpu": ((3, 32, 32), 128,  # the U-Net of the gpu profile (4.89M) and the peer at 4.80M
            {"base_channels": 64, "channel_mults": (1, 2, 2), "num_res_blocks": 1},
            {"dim": 44, "dim_mults": (1, 2, 4)}),
    # ours in the peer's channel layout (multipliers 1-2-4 and 1-2-4-8): equal parameters and at most the
    # peer's FLOPs (0.47 vs 0.65 and 3.17 vs 3.65 GFLOP forward), so the ratio compares implementations
    "mnist-layout": ((1, 28, 28), 256,
                     {"base_channels": 24, "channel_mults": (1, 2, 4), "num_res_blocks": 2,
                      "attention_resolutions": (7,)},
                     {"dim": 32, "dim_mults": (1, 2, 4)}),
    "cifar-layout": ((3, 32, 32), 128,
                     {"base_channels": 48, "channel_mults": (1, 2, 4, 8), "num_res_blocks": 2,
                      "attention_resolutions": (4,)},
                     {"dim": 64, "dim_mults": (1, 2, 4, 8)}),
    "small": ((1, 16, 16), 16,
              {"base_channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1},
              {"dim": 12, "dim_mults": (1, 2)}),
}
PARAM_TOLERANCE = 0.05


class _TorchvisionStub(types.ModuleType):
    """Stands in for torchvision while denoising_diffusion_pytorch is imported; unusable."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise ImportError(f"torchvision is not available here (benchmark stub); {self.__name__}.{name} cannot be used")


def import_peer() -> tuple[type, type, bool]:
    """``(Unet, GaussianDiffusion, stub_used)`` from denoising_diffusion_pytorch.

    The package imports torchvision (and accelerate, scipy, PIL: all in the GPU image) at module
    level for its Dataset and Trainer, which are not used here; where torchvision cannot be
    imported (not installed, or built for another torch, as on the project's CPU machine) a
    stub stands in for it during that import only (any use raises ImportError)."""
    if importlib.util.find_spec("denoising_diffusion_pytorch") is None:
        raise ImportError(f"the peer package {PEER} is not installed: {PEER_INSTALL}")
    try:
        import torchvision  # noqa: F401
    except Exception:  # not installed, or built for another torch (fails while loading its operators)
        pass
    else:
        from denoising_diffusion_pytorch import GaussianDiffusion, Unet
        return Unet, GaussianDiffusion, False
    saved = {k: m for k, m in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")}
    for k in saved:
        del sys.modules[k]
    stub = _TorchvisionStub("torchvision")
    stub.transforms = _TorchvisionStub("torchvision.transforms")
    stub.utils = _TorchvisionStub("torchvision.utils")
    stubs = {"torchvision": stub, "torchvision.transforms": stub.transforms, "torchvision.utils": stub.utils}
    sys.modules.update(stubs)
    try:
        from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    finally:
        for k in stubs:
            sys.modules.pop(k, None)
        sys.modules.update(saved)
    return Unet, GaussianDiffusion, True


def _peer_loss(diffusion, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The peer's standard training loss per example, ``[B]`` (its GaussianDiffusion.forward)."""
    c = diffusion.channels
    h, w = diffusion.image_size
    return diffusion(batch.view(-1, c, h, w), loss_reduction="none")


@torch.no_grad()
def forward_gflop(model: nn.Module, *inputs: torch.Tensor) -> float:
    """GFLOP of one forward pass per image (matmuls, convolutions, attention; torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops() / 1e9 / inputs[0].shape[0]


def compare_peer(size: str, precision: str, device: str | torch.device, seconds: float, *,
                 basis: str = "fourier", compile: bool = False, peer_classes: tuple[type, type] | None = None,
                 channels_last: bool = True) -> dict[str, Any]:
    """Training images/s of ours and of the peer at one size of :data:`PEER_SIZES` and one
    precision ("fp32" or "bf16"), in the same process on the same device.

    Ours runs the real training path of :func:`gud.train.train` on that device: one
    :class:`gud.train.TrainStep` (AdamW, clipping, EMA; on CUDA fused AdamW, channels_last,
    bf16 autocast if asked), :class:`gud.diffusion.EpsLoss` with the schedule moved to the
    device once and its times, parameters and noise drawn by a generator on the device (no
    host synchronisation per step), data resident on the device.  The peer (its ``Unet`` and
    ``GaussianDiffusion`` loss: 1000 steps, sigmoid schedule, v-prediction) goes through the
    same ``TrainStep``; it draws from torch's global RNG, forked and seeded with 0 here."""
    device = torch.device(device)
    shape, batch, ours_kwargs, peer_kwargs = PEER_SIZES[size]
    d = math.prod(shape)
    cfg = TrainConfig(steps=1, batch_size=batch, lr=1e-4, warmup=0, device=str(device),
                      amp_bf16=precision == "bf16", compile=compile, channels_last=channels_last,
                      loss_generator_device=str(device))
    n_batches = 2
    g = torch.Generator().manual_seed(0)
    ours = build_entry_model({"kind": "unet", "shape": shape, "basis": basis, "net_kwargs": ours_kwargs})
    ours_gflop = forward_gflop(ours, torch.zeros(1, d), torch.zeros(1, d))
    ours_step = TrainStep(ours, EpsLoss(componentwise_schedule(d).to(device)), cfg)
    y = torch.randn(n_batches * batch, d, generator=g).to(device)  # whitened components
    loss_gen = torch.Generator(cfg.loss_generator_device).manual_seed(1)
    n_ours, s_ours = timed_loop(lambda i: ours_step.step(y[(i % n_batches) * batch:][:batch], loss_gen, i),
                                seconds, device)
    row: dict[str, Any] = {"size": size, "precision": precision, "shape": shape, "batch": batch,
                           "ours_params": count_params(ours), "ours_img_s": n_ours * batch / s_ours,
                           "ours_gflop": ours_gflop, "fast_path": ours_step.describe()}
    del ours_step, ours, y
    unet_cls, diffusion_cls = peer_classes or import_peer()[:2]
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(0)
        peer_unet = unet_cls(channels=shape[0], **peer_kwargs)
        peer_gflop = forward_gflop(peer_unet, torch.zeros(1, *shape), torch.zeros(1))
        peer = diffusion_cls(peer_unet, image_size=shape[1:])
        peer_step = TrainStep(peer, _peer_loss, cfg)
        x = torch.rand(n_batches * batch, d, generator=g).to(device)  # images in [0, 1], the peer's input range
        n_peer, s_peer = timed_loop(lambda i: peer_step.step(x[(i % n_batches) * batch:][:batch], loss_gen, i),
                                    seconds, device)
    row.update(peer_params=count_params(peer_unet), peer_img_s=n_peer * batch / s_peer, peer_gflop=peer_gflop)
    row["ratio"] = row["ours_img_s"] / row["peer_img_s"]
    mismatch = abs(row["ours_params"] / row["peer_params"] - 1)
    if mismatch > PARAM_TOLERANCE:
        raise RuntimeError(f"{size}: parameter counts differ by {mismatch:.1%} "
                           f"({row['ours_params']:,} vs {row['peer_params']:,})")
    del peer_step, peer, peer_unet, x
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def peer_rows(sizes: Sequence[str], device: torch.device, seconds: float, *, basis: str = "fourier",
              compile: bool = False, verbose: bool = True) -> dict[str, Any]:
    """:func:`compare_peer` for every size and precision (fp32, and bf16 on CUDA); ``ratio_vs_best``
    is ours (faster precision) over the peer's faster precision.  A missing peer is reported, not raised."""
    try:
        unet_cls, diffusion_cls, stubbed = import_peer()
    except ImportError as exc:
        print(f"peer: not available ({exc})")
        return {"error": str(exc), "rows": []}
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    rows = []
    for size in sizes:
        for prec in precisions:
            r = compare_peer(size, prec, device, seconds, basis=basis, compile=compile,
                             peer_classes=(unet_cls, diffusion_cls))
            rows.append(r)
            if verbose:
                print(f"  peer {size} {prec}: ours {r['ours_img_s']:.1f} img/s ({r['ours_params']:,}), "
                      f"peer {r['peer_img_s']:.1f} img/s ({r['peer_params']:,}), ratio {r['ratio']:.2f}", flush=True)
    best = {}
    for size in sizes:
        rs = [r for r in rows if r["size"] == size]
        best[size] = max(r["ours_img_s"] for r in rs) / max(r["peer_img_s"] for r in rs)
        if verbose:
            print(f"  {size}: ours (faster precision) / peer (faster precision) = {best[size]:.2f}")
    return {"package": f"{PEER} {importlib.metadata.version(PEER)}", "torchvision_stub": stubbed,
            "basis": basis, "rows": rows, "ratio_vs_best": best}


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
    fitted = Prior.fit(basis, x.double(), whitened=True)  # on the CPU, like the data it encodes
    yb = fitted.encode(x[:batch].double()).float().to(device)
    prior = fitted.to(device)  # a copy on the device, for the decoder
    model = build_entry_model(entry).to(device).eval()
    schedule = componentwise_schedule(d).to(device)
    xb = x[:batch].to(device)
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
