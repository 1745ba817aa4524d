r"""Schedule sweeps served by one noise-state-conditioned network (the book's E1 and E2).

A *family* of soft-conditioning schedules (:class:`gud.schedules.SoftConditioningSchedule`) is indexed by parameters
``p`` (the inverse softness ``a``, or ``(a, r)``); one network conditioned on the full noise
state :math:`\gamma(t) \in \mathbb R^D` is trained with ``p`` drawn from the family's range
(:func:`train_family`) and evaluated at fixed ``p`` on held-out data (:func:`evaluate_grid`):
bits/dim from :func:`gud.pipeline.evaluate_bpd` and the Fréchet classifier distance (FCD,
:func:`gud.metrics.classifier_frechet_distance`; **not FID**) of generated samples.
:func:`aggregate` turns per-seed rows into mean ± standard error over seeds.

Label helpers: :func:`variance_labels` (:math:`l_i = -\log\Sigma_i`), :func:`mixed_label_rows`
and :func:`mix_param_map` (the book's own interpolation ``r`` between two orderings, E2), and
:func:`standard_diffusion_schedule` (the scalar schedule that *is* variance labels at ``a = 1``
with the white-noise prior).
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .data import ImageData, data_root
from .metrics import FeatureClassifier, classifier_frechet_distance, train_feature_classifier
from .pipeline import Setup, build_model, evaluate_bpd, fit, generate
from .prior import Prior
from .schedules import LinearSchedule, Schedule

__all__ = [
    "TrainedNet",
    "aggregate",
    "compare",
    "denoised_trajectory",
    "evaluate_grid",
    "fcd_classifier",
    "format_table",
    "html_table",
    "mean_stderr",
    "mix_param_map",
    "mixed_label_rows",
    "standard_diffusion_schedule",
    "train_family",
    "variance_labels",
]


# --------------------------------------------------------------------------- labels


def variance_labels(prior: Prior) -> Tensor:
    r"""Variance ordering :math:`l_i = -\log\Sigma_i` ``[D]`` (floored data variances of the basis)."""
    return -torch.log(prior.var)


def mixed_label_rows(l_first: Tensor, l_second: Tensor) -> Tensor:
    """Two label rows ``[2, D]``: ``l_first`` and ``l_second`` mapped affinely onto the range of ``l_first``.

    Only differences of labels enter the schedule, so after this normalisation the two
    orderings span the same range and ``(1 - r) l_first + r l_second`` moves between them at
    a comparable spread for every ``r``.
    """
    l1 = torch.as_tensor(l_first, dtype=torch.float64).reshape(-1)
    l2 = torch.as_tensor(l_second, dtype=torch.float64).reshape(-1)
    if l1.shape != l2.shape:
        raise ValueError(f"label rows must have the same shape, got {tuple(l1.shape)} and {tuple(l2.shape)}")
    span2 = l2.max() - l2.min()
    if span2 <= 0:
        raise ValueError("the second label row is constant: it defines no ordering")
    l2 = l1.min() + (l2 - l2.min()) * (l1.max() - l1.min()) / span2
    return torch.stack([l1, l2])


def mix_param_map(params: Tensor) -> Tensor:
    """``(a, r) [B, 2] -> (a (1 - r), a r) [B, 2]``: weights of the two rows of :func:`mixed_label_rows`."""
    a, r = params[:, 0], params[:, 1]
    return torch.stack([a * (1 - r), a * r], dim=1)


def standard_diffusion_schedule(var: Tensor, gamma_denoise: float, gamma_noise: float) -> LinearSchedule:
    r"""Scalar linear schedule equal to variance labels at ``a = 1`` with the white-noise prior.

    With :math:`l_i = -\log\Sigma_i`, ``a = 1`` and :math:`s_i = 1` the soft-conditioning
    schedule gives every component the same
    :math:`\gamma(t) = \tilde\gamma_{denoise} + \log\Sigma_{min} + t(\tilde\gamma_{noise} -
    \tilde\gamma_{denoise} + \log\Sigma_{max} - \log\Sigma_{min})`: standard diffusion, the same
    process in every orthonormal basis (pixels included). ``var [D]``: the variances ``Σ_i``.
    """
    log_var = torch.log(torch.as_tensor(var, dtype=torch.float64))
    lo, hi = float(log_var.min()), float(log_var.max())
    return LinearSchedule(log_var.numel(), gamma_denoise + lo, gamma_noise + hi)


# --------------------------------------------------------------------------- training


@dataclass
class TrainedNet:
    """A trained denoiser (the EMA weights) and its compute."""

    model: torch.nn.Module
    steps: int
    wall_time: float  # s, this call (0 if loaded from a finished checkpoint)
    throughput: float  # examples / s
    final_loss: float
    loss_history: list[tuple[int, float]] = field(default_factory=list)


def train_family(setup: Setup, schedule: Schedule, *, net: str = "mlp", net_kwargs: dict | None = None,
                 steps: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0, device: str = "cpu",
                 checkpoint=None, **train_kwargs: Any) -> TrainedNet:
    """Build a network (weights initialised from ``seed``) and train it on ``setup.y_train``
    under ``schedule``; a family's parameters are drawn per example from its range."""
    model = build_model(net, setup, seed=seed, **(net_kwargs or {}))
    res = fit(model, schedule, setup.y_train, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
              device=device, checkpoint=checkpoint, progress=False, **train_kwargs)
    final = res.loss_history[-1][1] if res.loss_history else float("nan")
    return TrainedNet(res.ema_model.eval(), res.step, res.wall_time, res.throughput, final, res.loss_history)


# --------------------------------------------------------------------------- evaluation


def fcd_classifier(data: ImageData, *, steps: int = 300, seed: int = 0, device: str = "cpu"
                   ) -> tuple[FeatureClassifier, float]:
    """The feature classifier of the Fréchet classifier distance for ``data`` (its training split),
    cached as ``data/fcd-classifier-<name>-<steps>-<seed>.pt``; returns it and its held-out accuracy."""
    path = data_root() / f"fcd-classifier-{data.name}-{steps}-{seed}.pt"
    clf, acc = train_feature_classifier(data.x, data.labels, data.shape, steps=steps, seed=seed,
                                        cache_path=path, num_threads=1)
    return clf.to(device).eval(), acc


def _as_params(p) -> Tensor | None:
    return None if p is None else torch.as_tensor(p, dtype=torch.float64).reshape(-1)


def evaluate_grid(model, setup: Setup, schedule: Schedule, params_list: Sequence, *,
                  classifier: FeatureClassifier | None, x_real: Tensor | None = None, n_samples: int = 200,
                  sampler_steps: int = 50, method: str = "ddim", seed: int = 0, n_time_samples: int = 2,
                  keep_samples: int = 0, device: str = "cpu") -> tuple[list[dict], np.ndarray]:
    """Held-out bits/dim and FCD of ``model`` at every schedule parameter in ``params_list``.

    Each entry is a parameter vector (``a`` or ``(a, r)``) or ``None`` (the schedule's own).
    The same ``seed`` is used at every entry (same ELBO noise, same initial sampler noise), so
    differences between entries are not sampling noise of the inputs. Returns rows
    ``{"params", "bpd", "bpd_stderr", "fcd", "eval_s"}`` and the first ``keep_samples``
    samples per entry ``[len(params_list), keep_samples, D]``. FCD (``classifier`` given)
    compares ``n_samples`` samples with ``x_real`` (default: the test set).
    """
    x_real = setup.test.x if x_real is None else x_real
    rows, kept = [], []
    for p in params_list:
        t0 = time.perf_counter()
        pp = _as_params(p)
        with torch.no_grad():
            ev = evaluate_bpd(model, setup, schedule, params=pp, seed=seed, n_time_samples=n_time_samples,
                              device=device)
        x_gen = generate(model, setup, schedule, n_samples, params=pp, steps=sampler_steps, method=method,
                         seed=seed, device=device)
        fcd = float("nan")
        if classifier is not None:
            dev = next(classifier.parameters()).device
            fcd = classifier_frechet_distance(classifier, x_real.to(dev), x_gen.to(dev), setup.shape)
        rows.append({"params": None if pp is None else pp.tolist(), "bpd": ev["bpd"],
                     "bpd_stderr": ev["bpd_stderr"], "fcd": fcd, "eval_s": time.perf_counter() - t0})
        kept.append(x_gen[:keep_samples].numpy())
    d = setup.test.dim
    return rows, np.stack(kept) if kept else np.zeros((0, keep_samples, d), dtype=np.float32)


@torch.no_grad()
def denoised_trajectory(model, setup: Setup, schedule: Schedule, *, params=None, times: Sequence[float],
                        n: int = 4, steps: int = 50, seed: int = 0, device: str = "cpu") -> np.ndarray:
    r"""The network's clean-data prediction :math:`\hat x_0 = U^\top S(y_t - \sigma\hat\varepsilon)/\alpha`
    along one deterministic (DDIM) generation, at the grid times nearest ``times``:
    ``[len(times), n, D]`` in data space. It shows which components are settled first."""
    pp = _as_params(params)
    grid_times = np.linspace(1.0, 0.0, steps + 1)[:-1]  # the times before each step
    wanted = {int(np.argmin(np.abs(grid_times - t))): k for k, t in enumerate(times) if t > 0}
    out: list[np.ndarray | None] = [None] * len(times)

    def callback(info):
        if info["i"] in wanted:
            out[wanted[info["i"]]] = setup.prior.decode(info["denoised"].double().cpu()).clamp(-1, 1).float().numpy()

    final = generate(model, setup, schedule, n, params=pp, steps=steps, method="ddim", seed=seed, device=device,
                     callback=callback)
    for k, t in enumerate(times):
        if t <= 0:
            out[k] = final.numpy()
    if any(o is None for o in out):
        raise ValueError("two requested times map to the same grid step; use more steps")
    return np.stack(out)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- seeds and tables


def mean_stderr(values: Iterable[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (``std(ddof=1)/sqrt(n)``; NaN for one value)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values")
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(v.mean()), se


def aggregate(rows: Sequence[dict], by: Sequence[str], metrics: Sequence[str] = ("bpd", "fcd")) -> list[dict]:
    """Group ``rows`` (one per seed) by the keys ``by`` and give ``<m>_mean``, ``<m>_se`` and
    ``n_seeds`` for each metric, in the order the groups first appear."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = tuple(_hashable(row[k]) for k in by)
        groups.setdefault(key, []).append(row)
    out = []
    for key, members in groups.items():
        agg = {k: members[0][k] for k in by}
        for m in metrics:
            agg[f"{m}_mean"], agg[f"{m}_se"] = mean_stderr(r[m] for r in members)
        agg["n_seeds"] = len(members)
        out.append(agg)
    return out


def compare(m1: float, se1: float, m2: float, se2: float, z: float = 2.0) -> int:
    """``-1`` if ``m1 < m2`` by more than ``z`` combined standard errors, ``+1`` if greater,
    ``0`` if not distinguishable (or a standard error is unknown, e.g. one seed)."""
    se = math.hypot(se1, se2)
    if not math.isfinite(se) or se == 0:
        return 0
    d = (m1 - m2) / se
    return -1 if d < -z else 1 if d > z else 0


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def format_table(rows: Sequence[dict], columns: Sequence[tuple[str, str, str]]) -> str:
    """Plain-text table: ``columns`` are ``(header, key, format)``; a format ``"pm:.2f"`` prints
    ``<key>_mean ± <key>_se``."""
    cells = []
    for row in rows:
        line = []
        for _, key, fmt in columns:
            if fmt.startswith("pm"):
                f = "{" + fmt[2:] + "}"
                line.append(f"{f.format(row[key + '_mean'])} ± {f.format(row[key + '_se'])}")
            else:
                line.append(("{" + fmt + "}").format(row[key]))
        cells.append(line)
    heads = [h for h, _, _ in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(heads)]
    fmt_line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths))  # noqa: E731
    return "\n".join([fmt_line(heads), fmt_line(["-" * w for w in widths]), *map(fmt_line, cells)])


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str | None = None) -> str:
    """A plain HTML table (cells escaped), for tables that notebooks display as output."""
    from html import escape
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
