"""Training throughput of our U-Net against a peer, in the same run, on the same device.

Ours: ``gud.nets.UNet`` wrapped by ``gud.nets.EpsNet`` with a basis transform (the real
Fourier basis by default), trained through ``gud.diffusion.EpsLoss`` under a component-wise
soft-conditioning schedule (inverse softness drawn per example), on the real training path of
``gud.train`` (the schedule moved to the device once, times, parameters and noise drawn by a
generator on the device: no host synchronisation per step; :func:`gud.bench.compare_peer`,
which ``python -m gud bench`` runs too). Peer: the ``Unet`` of the PyPI package ``denoising-diffusion-pytorch`` (2.3.4, the
``bench`` extra) trained with its own ``GaussianDiffusion`` loss (its defaults: 1000
steps, sigmoid schedule, v-prediction). Both go through the same optimiser step,
``gud.train.TrainStep`` (AdamW, clipping, EMA, and on CUDA bf16 autocast, channels_last,
fused AdamW, optionally torch.compile), at equal batch and parameter counts within 5 %:

    size    shape     batch  ours                                         peer
    mnist   1x28x28   256    UNet(40, (1, 2, 2), 2 blocks)       2.67M    Unet(32, (1, 2, 4))      2.61M
    cifar   3x32x32   128    UNet(128, (1, 2, 2, 2), 2, attn 16) 34.7M    Unet(64, (1, 2, 4, 8))   35.7M
    gpu     3x32x32   128    UNet(64, (1, 2, 2), 1 block)        4.89M    Unet(44, (1, 2, 4))      4.80M
    mnist-layout  1x28x28  256  UNet(24, (1, 2, 4), 2, attn 7)   2.59M    Unet(32, (1, 2, 4))      2.61M
    cifar-layout  3x32x32  128  UNet(48, (1, 2, 4, 8), 2, attn 4) 35.8M   Unet(64, (1, 2, 4, 8))   35.7M
    small   1x16x16   16     UNet(8, (1, 2), 1 block)            0.145M   Unet(12, (1, 2))         0.149M

(the cifar pair is the DDPM CIFAR-10 network and the peer's README default; the two -layout
sizes put our U-Net in the peer's channel layout, at equal parameters and no more forward
FLOPs than the peer: 0.47 vs 0.65 and 3.17 vs 3.65 GFLOP per image). Each size is
measured in fp32, and in bf16 on CUDA; the table gives parameters, images/s and the
ratio ours/peer, and the forward GFLOP per image of each network (equal parameter counts
are not equal compute). On the CPU (or with ``--cpu-small``) only the small size runs, a few
steps each, in well under a minute.

    python benchmarks/bench_train.py                  # CUDA if available: mnist, cifar, gpu; fp32 and bf16
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
import importlib.metadata
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gud.bench import PEER, PEER_SIZES, compare_peer, import_peer, machine  # noqa: E402

SIZES = PEER_SIZES


def measure(size: str, precision: str, device: torch.device, seconds: float, basis: str, compile: bool,
            peer_classes: tuple[type, type]) -> dict:
    """Images/s of ours and of the peer for one size and precision (:func:`gud.bench.compare_peer`)."""
    return compare_peer(size, precision, device, seconds, basis=basis, compile=compile, peer_classes=peer_classes)


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
    sizes = args.sizes or (["small"] if small else ["mnist", "cifar", "gpu"])
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
            rows.append(measure(size, precision, device, seconds, args.basis, args.compile, (unet_cls, diffusion_cls)))
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

        where_ = {**machine(device), "peer": f"{PEER} {importlib.metadata.version(PEER)}",
                  "seconds_per_setting": seconds, "compile": bool(args.compile and device.type == "cuda")}
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": where_, "rows": rows}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
