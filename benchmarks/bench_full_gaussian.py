"""The cost of the gate's full-covariance Gaussian: its exact denoiser beside the Gaussian model's.

Every bits/dim gate compares a network with the full-covariance Gaussian driven through the same
process (:func:`gud.baselines.full_gaussian_denoiser`): each test image has its own noise state,
so its denoiser costs one ``D x D`` Cholesky factorisation per image and Monte-Carlo replicate
(``D^3 / 3`` flop), where the Gaussian model of independent components costs ``O(D)``. This
script times one call of each on the same batch of whitened images with per-image noise states
(the call :func:`gud.likelihood.elbo` makes), in float64, and prints time per image, the achieved
GFLOP/s of the full one, and the time one setting of a profile costs (its test images x
replicates) on this machine, beside the Gaussian model's in the same run. Memory stays bounded:
the factorisations run :attr:`gud.oracle.GaussianOracle.CHUNK_ELEMENTS` entries at a time.

    python benchmarks/bench_full_gaussian.py                   # D = 64, 768, 3072 (~1 minute)
    python benchmarks/bench_full_gaussian.py --dims 64 --batch 512
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gud.oracle import GaussianOracle  # noqa: E402


def _case(d: int, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64) / d ** 0.5
    cov = a @ a.T + 0.05 * torch.eye(d, dtype=torch.float64)  # correlated, well inside float64's range
    full = GaussianOracle(torch.zeros(d, dtype=torch.float64), cov)
    diag = GaussianOracle(torch.zeros(d, dtype=torch.float64), torch.diag(cov.diagonal()))
    gamma = (torch.rand(batch, 1, generator=g, dtype=torch.float64) * 10 - 7).expand(batch, d).contiguous()
    gamma = gamma + 0.5 * torch.randn(batch, d, generator=g, dtype=torch.float64)  # per-image, per-component
    y = torch.randn(batch, d, generator=g, dtype=torch.float64)
    return full, diag, y, gamma


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[64, 768, 3072])
    p.add_argument("--batch", type=int, default=None, help="images per call (default: 512 for D <= 256, else 16)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--setting-images", type=int, default=2000, help="test images x replicates of one setting")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), float64; per image (median of {args.repeats})")
    print(f"{'D':>6} {'batch':>6} {'Gaussian model':>16} {'full covariance':>16} {'ratio':>8} {'GFLOP/s':>8} "
          f"{'one setting (full)':>20}")
    for d in args.dims:
        batch = args.batch or (512 if d <= 256 else 16)
        full, diag, y, gamma = _case(d, batch)
        t_diag = _time(lambda: diag(y, gamma), args.repeats) / batch
        t_full = _time(lambda: full(y, gamma), args.repeats) / batch
        gflops = d ** 3 / 3 / t_full / 1e9  # the factorisation dominates
        print(f"{d:>6} {batch:>6} {t_diag * 1e6:>13.1f} µs {t_full * 1e3:>13.3f} ms {t_full / t_diag:>8.0f} "
              f"{gflops:>8.1f} {t_full * args.setting_images:>18.1f} s")


if __name__ == "__main__":
    main()
