"""Cost of the basis transforms against the dimension D, beside a dense-matrix baseline.

Prints a table: for each image size and basis, the time of forward + inverse on a batch,
and the time of the same transform done as a dense D x D matrix product (the baseline that
a fast transform must beat), measured in the same run. CPU always, CUDA when available.

    python benchmarks/bench_bases.py [--quick] [--batch 64]
"""
from __future__ import annotations

import argparse
import time

import torch

from gud.bases import FourierBasis, PCABasis, PixelBasis, WaveletBasis


def _time(fn, repeats: int, device: torch.device, inner: int = 20) -> float:
    """Best over ``repeats`` of the mean time of ``inner`` back-to-back calls (seconds)."""
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (1 by default: on a shared 2-core machine more threads spin and "
                         "inflate small-op timings by orders of magnitude)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [(1, 8, 8), (1, 32, 32), (3, 32, 32)] if args.quick else [(1, 8, 8), (1, 16, 16), (1, 32, 32), (3, 32, 32), (3, 64, 64)]
    repeats = 3 if args.quick else 10
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, best of {repeats}")
    print(f"{'device':6} {'shape':>11} {'D':>6} {'basis':>8} {'fast ms':>9} {'dense ms':>9} {'speed-up':>8}")
    for dev in devices:
        for shape in sizes:
            d = shape[0] * shape[1] * shape[2]
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(args.batch, d, generator=gen).to(dev)
            bases = {"pixel": PixelBasis(shape), "fourier": FourierBasis(shape), "haar": WaveletBasis(shape, "haar")}
            if d <= 4096:
                bases["pca"] = PCABasis.fit(torch.randn(max(2 * d, 256), d, generator=gen), shape)
            for name, basis in bases.items():
                basis = basis.to(dev)
                fast = _time(lambda: basis.inverse(basis.forward(x)), repeats, dev)
                if d <= 4096:
                    u = basis.matrix(torch.float32).to(dev)
                    dense = _time(lambda: (x @ u.T) @ u, repeats, dev)
                    ratio = f"{dense / fast:8.1f}"
                    dense_s = f"{dense * 1e3:9.3f}"
                else:
                    dense_s, ratio = f"{'(skip)':>9}", f"{'':>8}"
                print(f"{dev.type:6} {str(shape):>11} {d:6d} {name:>8} {fast * 1e3:9.3f} {dense_s} {ratio}")


if __name__ == "__main__":
    main()
