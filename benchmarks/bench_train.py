"""Training throughput of our U-Net against a peer, in the same run, on the same device.

Ours: ``gud.nets.UNet`` wrapped by ``gud.nets.EpsNet`` with a basis transform (the real
Fourier basis by default), trained through ``gud.diffusion.EpsLoss`` under a component-wise
soft-conditioning schedule (inverse softness drawn per example), i.e. as training really
runs. Peer: the ``Unet`` of the PyPI package ``denoising-diffusion-pytorch`` (2.3.4, the
``bench`` extra) trained with its own ``GaussianDiffusion`` loss (its defaults: 1000
steps, sigmoid schedule, v-prediction). Both go through the same optimiser step,
``gud.train.TrainStep`` (AdamW, clipping, EMA, and on CUDA bf16 autocast, channels_last,
fused AdamW, optionally torch.compile), at equal batch and parameter counts within 5 %:

    size    shape     batch  ours                                         peer
    mnist   1x28x28   256    UNet(40, (1, 2, 2), 2 blocks)       2.67M    Unet(32, (1, 2, 4))      2.61M
    cifar   3x32x32   128    UNet(128, (1, 2, 2, 2), 2, attn 16) 34.7M    Unet(64, (1, 2, 4, 8))   35.7M
    small   1x16x16   16     UNet(8, (1, 2), 1 block)            0.145M   Unet(12, (1, 2))         0.149M

(the cifar pair is the DDPM CIFAR-10 network and the peer's README default). Each size is
measured in fp32, and in bf16 on CUDA; the table gives parameters, images/s and the
ratio ours/peer, and the forward GFLOP per image of each network (equal parameter counts
are not equal compute). On the CPU (or with ``--cpu-small``) only the small size runs, a few
steps each, in well under a minute.

    python benchmarks/bench_train.py                  # CUDA if available: mnist and cifar, fp32 and bf16
    python benchmarks/bench_train.py --cpu-small      # the small size (automatic on the CPU)
    python benchmarks/bench_train.py --compile --seconds 20

The peer draws its noise and times from torch's global RNG (that is how its
GaussianDiffusion works); it runs inside ``torch.random.fork_rng`` seeded with 0, so the
global RNG state is unchanged afterwards. ``denoising_diffusion_pytorch`` imports
torchvision at module level for its Dataset and Trainer, which are not used here; where
torchvision cannot be imported (not installed, or a build that does not match the
installed torch, as on the project's CPU machine, where PyPI's torchvision pins another
torch) a stub module stands in for it during that import only, and any use of the stub
raises ImportError. With a working torchvision (a normal install) no stub is made.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import math
import platform
import sys
import types
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gud.bench import build_entry_model, componentwise_schedule, count_params, timed_loop  # noqa: E402
from gud.diffusion import EpsLoss  # noqa: E402
from gud.train import TrainConfig, TrainStep  # noqa: E402

PEER = "denoising-diffusion-pytorch"
INSTALL = (f"install the `bench` extra: `pip install -e .[bench]` (where PyPI's torchvision would replace "
           f"the installed torch: `pip install --no-deps {PEER}==2.3.4 && pip install einops ema-pytorch accelerate`)")

# size -> (shape, batch, our UNet kwargs, peer Unet kwargs)
SIZES = {
    "mnist": ((1, 28, 28), 256,
              {"base_channels": 40, "channel_mults": (1, 2, 2), "num_res_blocks": 2},
              {"dim": 32, "dim_mults": (1, 2, 4)}),
    "cifar": ((3, 32, 32), 128,
              {"base_channels": 128, "channel_mults": (1, 2, 2, 2), "num_res_blocks": 2,
               "attention_resolutions": (16,)},
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
    """``(Unet, GaussianDiffusion, stub_used)`` from denoising_diffusion_pytorch (module docstring)."""
    if importlib.util.find_spec("denoising_diffusion_pytorch") is None:
        raise ImportError(f"the peer package {PEER} is not installed: {INSTALL}")
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
def forward_gflop(model: torch.nn.Module, *inputs: torch.Tensor) -> float:
    """GFLOP of one forward pass per image (matmuls, convolutions, attention; torch's FLOP counter)."""
    with FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops() / 1e9 / inputs[0].shape[0]


def measure(size: str, precision: str, device: torch.device, seconds: float, basis: str, compile: bool,
            peer_classes: tuple[type, type]) -> dict:
    """Images/s of ours and of the peer for one size and precision."""
    shape, batch, ours_kwargs, peer_kwargs = SIZES[size]
    d = math.prod(shape)
    cfg = TrainConfig(steps=1, batch_size=batch, lr=1e-4, warmup=0, device=str(device),
                      amp_bf16=precision == "bf16", compile=compile, channels_last=True)
    n_batches = 2
    g = torch.Generator().manual_seed(0)

    ours = build_entry_model({"kind": "unet", "shape": shape, "basis": basis, "net_kwargs": ours_kwargs})
    ours_gflop = forward_gflop(ours, torch.zeros(1, d), torch.zeros(1, d))
    ours_step = TrainStep(ours, EpsLoss(componentwise_schedule(d)), cfg)
    y = torch.randn(n_batches * batch, d, generator=g).to(device)  # whitened components
    loss_gen = torch.Generator(cfg.loss_generator_device).manual_seed(1)
    n_ours, s_ours = timed_loop(lambda i: ours_step.step(y[(i % n_batches) * batch:][:batch], loss_gen, i),
                                seconds, device)
    result = {"size": size, "precision": precision, "shape": shape, "batch": batch,
              "ours_params": count_params(ours), "ours_img_s": n_ours * batch / s_ours, "ours_gflop": ours_gflop,
              "fast_path": ours_step.describe()}
    del ours_step, ours, y

    unet_cls, diffusion_cls = peer_classes
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
    result.update(peer_params=count_params(peer_unet), peer_img_s=n_peer * batch / s_peer, peer_gflop=peer_gflop)
    result["ratio"] = result["ours_img_s"] / result["peer_img_s"]
    del peer_step, peer, peer_unet, x
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--cpu-small", action="store_true", help="only the small size (default on the CPU)")
    parser.add_argument("--full", action="store_true", help="the mnist and cifar sizes even on the CPU (slow)")
    parser.add_argument("--sizes", nargs="*", choices=list(SIZES), default=None)
    parser.add_argument("--seconds", type=float, default=None,
                        help="timed seconds per network and setting (default 10 on CUDA, 1 in the small mode)")
    parser.add_argument("--basis", default="fourier", choices=["pixel", "fourier", "wavelet", "pca"])
    parser.add_argument("--compile", action="store_true", help="torch.compile both (CUDA; minutes of warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    parser.add_argument("--json", default=None, help="also write the rows and the machine to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    small = args.cpu_small or (device.type == "cpu" and not args.full)
    sizes = args.sizes or (["small"] if small else ["mnist", "cifar"])
    precisions = ["fp32", "bf16"] if device.type == "cuda" else ["fp32"]
    seconds = args.seconds if args.seconds is not None else (1.0 if small else 10.0)

    try:
        unet_cls, diffusion_cls, stubbed = import_peer()
    except ImportError as exc:
        print(f"cannot load the peer: {exc}", file=sys.stderr)
        return 2
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"torch {torch.__version__}, device {device} ({where}), threads {torch.get_num_threads()}")
    print(f"peer: {PEER} {importlib.metadata.version(PEER)}"
          + (" (torchvision stub: torchvision is not importable here; the peer's Unet and GaussianDiffusion"
             " do not use it)" if stubbed else ""))
    print(f"ours: gud UNet in EpsNet ({args.basis} basis), EpsLoss, component-wise schedule; "
          f"{seconds:g} s timed per network after {2} warm-up steps")

    rows = []
    for size in sizes:
        for precision in precisions:
            r = measure(size, precision, device, seconds, args.basis, args.compile, (unet_cls, diffusion_cls))
            mismatch = abs(r["ours_params"] / r["peer_params"] - 1)
            if mismatch > PARAM_TOLERANCE:
                raise RuntimeError(f"{size}: parameter counts differ by {mismatch:.1%} "
                                   f"({r['ours_params']:,} vs {r['peer_params']:,})")
            rows.append(r)
            print(f"  done {size} {precision}", file=sys.stderr, flush=True)

    print(f"\nfast path: {rows[0]['fast_path']}{', compile' if args.compile and device.type == 'cuda' else ''}")
    head = (f"{'size':<7}{'shape':>9}{'batch':>7}{'prec':>6}{'ours params':>13}{'peer params':>13}"
            f"{'ours GF':>9}{'peer GF':>9}{'ours img/s':>12}{'peer img/s':>12}{'ours/peer':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['size']:<7}{shape:>9}{r['batch']:>7}{r['precision']:>6}{r['ours_params']:>13,}"
              f"{r['peer_params']:>13,}{r['ours_gflop']:>9.3f}{r['peer_gflop']:>9.3f}"
              f"{r['ours_img_s']:>12.1f}{r['peer_img_s']:>12.1f}{r['ratio']:>11.2f}")
    print("GF: forward GFLOP per image (torch.utils.flop_counter: matmuls, convolutions, attention). Equal "
          "parameters are not equal compute: the DDPM layout keeps 128 channels at full resolution.")
    if args.json:
        import json
        import time

        machine = {"device": str(device), "device_name": where, "torch": torch.__version__,
                   "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d"),
                   "peer": f"{PEER} {importlib.metadata.version(PEER)}", "seconds_per_setting": seconds,
                   "compile": bool(args.compile and device.type == "cuda")}
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
