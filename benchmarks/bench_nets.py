"""Benchmark the noise-state-conditioned U-Net: training throughput and sampling cost.

For MNIST size (1x28x28) and CIFAR size (3x32x32) at a couple of widths, measures

* training throughput in images/s (forward + backward + AdamW step), and
* time per network evaluation for sampling (forward only, no grad, batch 64),

for the U-Net conditioned on the full noise state gamma in R^D (cond_dim = D) and,
as a baseline in the same run, the same U-Net conditioned on a scalar
(cond_dim = 1, i.e. a plain t embedding), so the cost of full-noise-state
conditioning is visible. Runs on the CPU, and on CUDA if available.

    python benchmarks/bench_nets.py [--quick] [--devices cpu cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gud.nets import UNet  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    """Fastest seconds per call of fn over `repeats` timed calls after `warmup` calls.

    The minimum, not the mean, is robust to interference from other processes.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_one(
    shape: tuple[int, int, int],
    base_channels: int,
    cond_dim: int,
    device: torch.device,
    train_batch: int,
    sample_batch: int,
    warmup: int,
    repeats: int,
) -> dict[str, float]:
    c, h, w = shape
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = UNet(c, (h, w), cond_dim=cond_dim, base_channels=base_channels, channel_mults=(1, 2, 2)).to(device)
    params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(train_batch, c, h, w, generator=g).to(device)
    cond = torch.randn(train_batch, cond_dim, generator=g).to(device)
    target = torch.randn(train_batch, c, h, w, generator=g).to(device)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = (net(x, cond) - target).square().mean()
        loss.backward()
        opt.step()

    t_train = _time(train_step, device, warmup, repeats)

    xs = torch.randn(sample_batch, c, h, w, generator=g).to(device)
    cs = torch.randn(sample_batch, cond_dim, generator=g).to(device)

    @torch.inference_mode()
    def nfe() -> None:
        net(xs, cs)

    t_nfe = _time(nfe, device, warmup, repeats)
    return {"params": params, "train_img_s": train_batch / t_train, "nfe_ms": 1e3 * t_nfe}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small batches, few repeats, one width")
    parser.add_argument("--devices", nargs="*", default=None, help="default: cpu, and cuda if available")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on the CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"torch {torch.__version__}, python {platform.python_version()}, "
          f"threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    for d in devices:
        if d.startswith("cuda"):
            print(f"device {d}: {torch.cuda.get_device_name(torch.device(d))}")
        else:
            print(f"device {d}: {platform.processor() or platform.machine()}")

    shapes = {"MNIST 1x28x28": (1, 28, 28), "CIFAR 3x32x32": (3, 32, 32)}
    sample_batch = 64
    rows = []
    for dev_name in devices:
        device = torch.device(dev_name)
        on_cuda = device.type == "cuda"
        widths = (32,) if args.quick else (32, 64)
        train_batch = (128 if on_cuda else 16) if args.quick else (128 if on_cuda else 32)
        warmup, repeats = (1, 3) if args.quick else ((5, 20) if on_cuda else (2, 5))
        if on_cuda:
            torch.backends.cudnn.benchmark = True
        for shape_name, shape in shapes.items():
            D = shape[0] * shape[1] * shape[2]
            for width in widths:
                for cond_name, cond_dim in (("t (scalar)", 1), ("gamma in R^D", D)):
                    r = bench_one(shape, width, cond_dim, device, train_batch, sample_batch, warmup, repeats)
                    rows.append((dev_name, shape_name, width, cond_name, r, train_batch))
                    print(f"  done {dev_name} {shape_name} width {width} cond {cond_name}", file=sys.stderr)

    header = f"{'device':<7}{'data':<15}{'width':>6}  {'conditioning':<14}{'params':>10}" \
             f"{'train img/s':>13}{'(batch)':>8}{'ms/NFE @64':>12}{'train vs t':>12}{'NFE vs t':>10}"
    print()
    print(header)
    print("-" * len(header))
    base: dict[tuple, dict[str, float]] = {}
    for dev_name, shape_name, width, cond_name, r, tb in rows:
        key = (dev_name, shape_name, width)
        if cond_name.startswith("t"):
            base[key] = r
            rel_train = rel_nfe = ""
        else:
            rel_train = f"{base[key]['train_img_s'] / r['train_img_s']:.2f}x"
            rel_nfe = f"{r['nfe_ms'] / base[key]['nfe_ms']:.2f}x"
        print(f"{dev_name:<7}{shape_name:<15}{width:>6}  {cond_name:<14}{r['params']:>10,}"
              f"{r['train_img_s']:>13.1f}{tb:>8}{r['nfe_ms']:>12.2f}{rel_train:>12}{rel_nfe:>10}")
    print("\nU-Net: channel_mults (1, 2, 2), 1 res block per level, no attention; "
          "'vs t' = time per train step / per NFE relative to the\n"
          "scalar-conditioned baseline (same net, cond_dim = 1). CPU timings are noisy on shared machines.")


if __name__ == "__main__":
    main()
