"""The CPU training step of the ci profile: ours beside the plain PyTorch step, in the same run.

The ci results (``make results``, most of CI's time) are trainings of one network: the residual
MLP (3 blocks of 256, FiLM conditioning) on 8x8 digits in the PCA basis, batch 256, one torch
thread. Ours is :class:`gud.train.TrainStep` (fused AdamW on the CPU, the tensors of the step listed
once). The baseline is the textbook step with the same loss, clipping and EMA: per-tensor AdamW
and a walk over the modules for the parameters at every step (what ``TrainStep`` did before).
Both start from the same weights and draw the same batches; repeats alternate between them, so
a machine that slows down during the run slows both. Prints ms/step (median of the repeats) and
the ratio, and the largest weight difference after the run (the two optimisers agree up to rounding).

    python benchmarks/bench_ci_step.py                 # ~1 minute
    python benchmarks/bench_ci_step.py --steps 100 --repeats 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gud.diffusion import EpsLoss  # noqa: E402
from gud.labels import family, variance_labels  # noqa: E402
from gud.pipeline import build_model, prepare  # noqa: E402
from gud.train import TrainConfig, TrainStep, _lr_factor  # noqa: E402


class PlainStep(TrainStep):
    """The baseline: per-tensor AdamW, and the parameters and buffers walked at every step."""

    def __init__(self, model, loss_fn, config):
        super().__init__(model, loss_fn, config)
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                           foreach=False)

    def step(self, batch, generator, step):
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(step, config.warmup)
        loss = self.loss_fn(self.forward_model, batch, generator).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), [p.detach() for p in self.model.parameters()],
                                 1.0 - decay)
            for eb, b in zip(self.ema.buffers(), self.model.buffers()):
                eb.copy_(b)
        return loss.detach()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")
    torch.set_num_threads(1)
    setup = prepare("digits", "pca", whitened=True, val_fraction=0.1)
    sched = family(variance_labels(setup.prior), setup.prior, "process-clipped", a=1.0,
                   gamma_denoise=-2.0, gamma_noise=3.0)
    loss, y, batch = EpsLoss(sched), setup.y_train, 256
    cfg = TrainConfig(steps=args.steps, batch_size=batch, lr=1e-3)
    steppers = {name: cls(build_model("mlp", setup, seed=0, depth=3, hidden=256), loss, cfg)
                for name, cls in (("ours", TrainStep), ("plain", PlainStep))}
    gens = {name: torch.Generator().manual_seed(1) for name in steppers}
    n_batches = y.shape[0] // batch
    done = dict.fromkeys(steppers, 0)
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for r in range(args.repeats + 1):  # the first round warms up
        for name, st in steppers.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                k = done[name] % n_batches
                st.step(y[k * batch:(k + 1) * batch], gens[name], done[name])
                done[name] += 1
            if r:
                times[name].append((time.perf_counter() - t) / args.steps)
    med = {name: statistics.median(v) * 1e3 for name, v in times.items()}
    diff = max((a - b).abs().max().item() for a, b in zip(steppers["ours"].model.parameters(),
                                                           steppers["plain"].model.parameters()))
    print(f"ci training step (MLP 3x256, batch {batch}, 8x8 digits, PCA basis, 1 thread, torch {torch.__version__})")
    print(f"  plain step (per-tensor AdamW, module walk per step): {med['plain']:.2f} ms/step")
    print(f"  ours (gud.train.TrainStep):                          {med['ours']:.2f} ms/step")
    print(f"  ours / plain: {med['plain'] / med['ours']:.2f}x faster; largest weight difference after "
          f"{done['ours']} steps: {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
