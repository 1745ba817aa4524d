"""E2: the Fourier basis, inverse softness ``a`` x ordering mix ``r``, one network per seed.

Whitened prior in the real Fourier basis.  Two label rows: the variance ordering
``l_var = -log Sigma_i`` (the power spectrum; for non-stationary data such as digits, the
variance of each Fourier component, whose covariance is then not diagonal) and the frequency
ordering ``|k|`` (``basis.meta["freq"]``) mapped affinely onto the range of ``l_var``.  The
book's own second parameter ``r`` (the paper's ``r`` is not known) mixes them:
``labels(a, r) = a [(1 - r) l_var + r l_freq]`` (``gud.labels.mix_param_map``).  ``(a, r) = (1, 0)``
is the grid point closest to standard diffusion: variance labels at ``a = 1``, but with the
data-matched prior and the process-clipped end points its SNR paths are not standard
diffusion's (they coincide only in the true-SNR convention).  One network per seed
is trained with ``(a, r)`` drawn uniformly from ``a_train x r_train`` and evaluated on the grid
``a_eval x r_eval``, in the book's main end-point convention ``convention`` (for the whitened
prior the "snr" and "process" end points coincide), beside the Gaussian model at every grid
point.  Budget rule, sample score and keys as in :mod:`gud.experiments.e1`.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from scipy.stats import spearmanr

from .. import baselines, protocol as P
from ..labels import family, mix_param_map, mixed_label_rows, variance_labels
from ..pipeline import (eval_settings, evaluate_at, prepare, record, sample_checks, sample_scorer, train_settings,
                        validation_scorer)
from ..stats import Evidence

__all__ = ["CONFIGS", "compute"]

_COMMON = {
    "basis": "fourier",
    "prior": "whitened",
    "labels": ["variance (l_i = -log Sigma_i)", "frequency |k| rescaled to the range of the variance labels"],
    "convention": "process-clipped",
    "a_train": [0.4, 1.6],
    "r_train": [0.0, 1.0],
    "a_eval": [0.4, 0.7, 1.0, 1.3, 1.6],
    "r_eval": [0.0, 0.25, 0.5, 0.75, 1.0],
    "show_samples": 6,
}

CONFIGS = {
    "ci": {
        **_COMMON,
        "datasets": ["digits"],
        "threads": 1,
        "data_kwargs": {},
        "limit": None,
        "test_limit": None,
        "val_fraction": 0.1,
        "gamma_denoise": -2.0,
        "gamma_noise": 3.0,
        "net": "mlp",
        "net_kwargs": {"hidden": 256, "depth": 3},
        "max_steps": 4000,
        "eval_every": 200,
        "patience": 3,
        "batch_size": 256,
        "lr": 1e-3,
        "train_kwargs": {},
        "seeds": [0, 1, 2],
        "n_time_samples": 4,
        "n_samples": 500,
        "sampler": "dpmpp_3m_sde",
        "sampler_steps": 49,
        "score_steps": 800,
        "score_seed": 0,
        "weights_dtype": "float32",
    },
    # CIFAR-10 (JPEG mirror), one U-Net over the (a, r) box, evaluated on a 3 x 3 grid.
    "gpu": {
        **_COMMON,
        "datasets": ["cifar10"],
        "threads": None,
        "data_kwargs": {},
        "limit": None,
        "test_limit": 2000,
        "val_fraction": 0.02,
        "a_eval": [0.4, 1.0, 1.6],
        "r_eval": [0.0, 0.5, 1.0],
        "gamma_denoise": -7.0,
        "gamma_noise": 3.0,
        "net": "unet",
        "net_kwargs": {"base_channels": 64, "channel_mults": [1, 2, 2], "num_res_blocks": 1},
        "max_steps": 4500,
        "eval_every": 500,
        "patience": 3,
        "batch_size": 128,
        "lr": 2e-4,
        "train_kwargs": {"amp_bf16": False, "channels_last": True},
        "seeds": [0],
        "n_time_samples": 1,
        "n_samples": 500,
        "sampler": "dpmpp_3m_sde",
        "sampler_steps": 49,
        "score_steps": 2000,
        "score_seed": 0,
        "fid_samples": 500,
        "fid_points": [[1.0, 0.0], [1.0, 1.0], [0.4, 0.0]],
        "weights_dtype": "bfloat16",
        "cost_note": "sized for one slice: estimated 4.6 min on one H100/H200, not yet measured. "
                     "U-Net 4.89M parameters (1x32x32: 4.37M): 1.94 GFLOP per image forward, 5.82 "
                     "forward+backward (torch.utils.flop_counter); at ~3,000 training images/s on one H100/H200 "
                     "(23 steps/s at batch 128) and ~9,000 images x NFE/s sampling: 1 network x 4500 steps = 192 "
                     "s, sampling 9 x 500 samples x 50 NFE = 25 s, bits/dim 9 x 3000 images = 6 s, set-up (data, "
                     "classifier) ~50 s. fp32 (TF32 convolutions): the peer was 17-20 % slower in bf16 at this "
                     "size; set amp_bf16 if the slice's probe (bench.json, 'faster') says bf16 wins",
    },
    "paper": {
        **_COMMON,
        "datasets": ["cifar10"],
        "threads": None,
        "data_kwargs": {},
        "limit": None,
        "test_limit": None,
        "val_fraction": 0.02,
        "gamma_denoise": -7.0,
        "gamma_noise": 3.0,
        "net": "unet",
        "net_kwargs": {"base_channels": 128, "channel_mults": [1, 2, 2, 2], "num_res_blocks": 2,
                       "attention_resolutions": [16], "dropout": 0.1},
        "max_steps": 300000,
        "eval_every": 5000,
        "patience": 10,
        "batch_size": 128,
        "lr": 2e-4,
        "train_kwargs": {"amp_bf16": True, "channels_last": True},
        "seeds": [0, 1, 2],
        "n_time_samples": 1,
        "n_samples": 50000,
        "sampler": "em",
        "sampler_steps": 100,
        "score_steps": 5000,
        "score_seed": 0,
        "weights_dtype": "bfloat16",
    },
}


def compute(cfg: dict, ctx) -> tuple[dict, dict]:
    rows: list[dict] = []
    metrics: dict[str, Any] = {"datasets": {}}
    arrays: dict[str, Any] = {}
    G = dict(gamma_denoise=cfg["gamma_denoise"], gamma_noise=cfg["gamma_noise"])
    train_kw = train_settings(cfg)
    eval_kw = dict(eval_settings(cfg, ctx.device), n_samples=cfg["n_samples"])
    grid = [(a, r) for r in cfg["r_eval"] for a in cfg["a_eval"]]
    for ds in cfg["datasets"]:
        s = prepare(ds, "fourier", whitened=cfg["prior"] == "whitened", limit=cfg["limit"],
                    test_limit=cfg["test_limit"], val_fraction=cfg["val_fraction"],
                    data_kwargs=cfg["data_kwargs"].get(ds, {}))
        scorer = sample_scorer(s, steps=cfg["score_steps"], seed=cfg["score_seed"], device=ctx.device)
        score_kw = dict(scorer=scorer, val_scorer=validation_scorer(scorer, s), checks=sample_checks(scorer, s))
        n = min(cfg["n_samples"], len(s.val))
        real = scorer.score(s.val.x[:n])
        gauss = scorer.score(baselines.gaussian_samples(s, cfg["n_samples"], seed=0))
        full = scorer.score(baselines.full_gaussian_samples(s, cfg["n_samples"], seed=0))
        bound = baselines.record_full_gaussian(rows, arrays, ds, s)
        # how far from stationary: off-diagonal share of the Fourier covariance; agreement of the orderings
        c = s.basis.forward(s.train.x.double() - s.prior.mean)
        cov = c.T @ c / (c.shape[0] - 1)
        l_var, l_freq = variance_labels(s.prior), s.basis.meta["freq"].double()
        metrics["datasets"][ds] = {
            "source": s.train.source, "shape": list(s.shape), "n_train": len(s.train), "n_val": len(s.val),
            "n_test": len(s.test), "gaussian_bound_bpd": bound,
            "uniform_bpd": baselines.uniform_bpd(s), "score_real": real.kcd, "score_real_se": real.stderr,
            "score_gaussian": gauss.kcd, "score_gaussian_se": gauss.stderr,
            "score_full_gaussian": full.kcd, "score_full_gaussian_se": full.stderr,
            "offdiagonal_share": float((cov - torch.diag(torch.diag(cov))).norm() / cov.norm()),
            "spearman_var_freq": float(spearmanr(l_var.numpy(), l_freq.numpy()).statistic)}
        labels = mixed_label_rows(l_var, l_freq)
        sched = family(labels, s.prior, cfg["convention"], a=[1.0, 0.0], param_map=mix_param_map,
                       param_range=[cfg["a_train"], cfg["r_train"]], **G)
        oracle, full = baselines.gaussian_denoiser(s), baselines.full_gaussian_denoiser(s)
        for a, r in grid:
            ev = ctx.cached(f"{ds}-gaussian-a{a:g}-r{r:g}", lambda: evaluate_at(
                oracle, s, sched, [a, r], **score_kw, **eval_kw))
            record(rows, arrays, _ident(ds, "gaussian", a, r, None), ev)
            ev = ctx.cached(f"{ds}-gaussian_full-a{a:g}-r{r:g}", lambda: evaluate_at(
                full, s, sched, [a, r], validation=False,
                n_images=baselines.full_gaussian_images(s, full, cfg["n_time_samples"], cfg.get("full_gaussian_flop")),
                **eval_kw))
            record(rows, arrays, _ident(ds, "gaussian_full", a, r, None), ev)
        for seed in cfg["seeds"]:
            name = f"{ds}-family-seed{seed}"
            tn = ctx.train(name, s, sched, net=cfg["net"], net_kwargs=cfg["net_kwargs"], seed=seed,
                           keep=seed == cfg["seeds"][0], **train_kw)
            first = seed == cfg["seeds"][0]
            for a, r in grid:
                keep_u8 = cfg.get("fid_samples", 0) if first and [a, r] in cfg.get("fid_points", []) else 0
                ev = ctx.cached(f"{name}-a{a:g}-r{r:g}", lambda: evaluate_at(
                    tn.model, s, sched, [a, r], seed=seed, keep=cfg["show_samples"] if first else 0,
                    keep_u8=keep_u8, **score_kw, **eval_kw))
                record(rows, arrays, _ident(ds, "family", a, r, seed, tn.converged()), ev)
                if first:
                    arrays[f"{ds}/samples/a{a:g}/r{r:g}"] = ev["samples"]
                if keep_u8:
                    arrays[f"fid/{ds}/a{a:g}-r{r:g}"] = ev["samples_u8"]
        arrays[f"{ds}/real"] = s.test.x[:cfg["show_samples"]].numpy()
        arrays[f"{ds}/gaussian_samples"] = baselines.gaussian_samples(s, cfg["show_samples"], seed=0).numpy()
    metrics["rows"] = rows
    metrics["claims"] = claims(cfg, metrics, arrays)
    metrics["data_description"] = "; ".join(
        f"{d['source']} ({d['shape'][1]}×{d['shape'][2]}), {d['n_train']} training / {d['n_val']} validation / "
        f"{d['n_test']} test images" for d in metrics["datasets"].values())
    return metrics, arrays


def _ident(ds, model, a, r, seed, converged=None) -> dict:
    row = {"dataset": ds, "model": model, "a": float(a), "r": float(r), "seed": seed}
    if converged is not None:
        row["converged"] = bool(converged)
    return row


def claims(cfg: dict, metrics: dict, arrays) -> list[dict]:
    """E2's claim as a declared equivalence test (:mod:`gud.protocol`): the grid point closest to
    standard diffusion against the best grid point chosen on the validation split, on the test split."""
    E = Evidence(metrics["rows"], arrays)
    out = []
    names = {"bpd": "bits/dim", "score": "KCD"}
    grid = [(float(a), float(r)) for r in cfg["r_eval"] for a in cfg["a_eval"]]
    for ds in cfg["datasets"]:
        info = metrics["datasets"][ds]
        margins = {"bpd": P.BPD_MARGIN, "score": P.score_margin(info["score_gaussian"], info["score_real"], info["score_full_gaussian"])}
        sel = lambda model, a, r: dict(dataset=ds, model=model, a=a, r=r)  # noqa: E731

        def fmt(m, a, r):
            v, e = E.value(m, **sel("family", a, r))
            return f"{v:.3f} ± {e:.3f}"

        legs, drivers = [], []
        for m in ("bpd", "score"):
            best = P.select(grid, lambda p: E.value(f"{m}_val", **sel("family", *p))[0])
            d, e = E.diff(m, sel("family", 1.0, 0.0), sel("family", *best))
            text = (f"{names[m]}: best (a, r) on the validation split = ({best[0]:g}, {best[1]:g}); on the test split "
                    f"(1, 0) {fmt(m, 1.0, 0.0)}, best {fmt(m, *best)}, difference {d:+.3f} ± {e:.3f}")
            if m == "bpd" and best != (1.0, 0.0):
                drivers.append(E.driver(sel("family", 1.0, 0.0), sel("family", *best)))
            beats = {}
            for p in sorted({(1.0, 0.0), best}):
                beats.update(P.network_gate(E, info, sel("family", *p), sel("gaussian", *p), m,
                                            f"family at (a, r) = ({p[0]:g}, {p[1]:g})"))
            reason = P.gate(converged={"family": E.converged(dataset=ds, model="family")}, beats=beats)
            test = (P.equivalence(d, e, margins[m], text) if math.isfinite(margins[m])
                    else P.not_assessable("equivalence", "no sample-score margin", text))
            legs.append(P.guarded(test, reason))
        out.append(P.claim(ds, "e2-near-optimal", "the setting closest to standard diffusion, (a, r) = (1, 0), "
                           "is near-optimal", "yes (CIFAR-10)", P.combine(legs),
                           margin=f"{margins['bpd']:g} bits/dim; KCD {margins['score']:.3g}",
                           driver="; ".join(drivers)))
        parts = []
        for m in ("bpd", "score"):
            d, e = E.diff(m, sel("family", 1.0, 1.0), sel("family", 1.0, 0.0))
            parts.append(f"{names[m]} at a = 1: frequency order {fmt(m, 1.0, 1.0)}, variance order "
                         f"{fmt(m, 1.0, 0.0)} (difference {d:+.3f} ± {e:.3f})")
        out.append(P.claim(ds, "e2-orderings", "frequency vs variance ordering (this book's r)", "not known",
                           P.reported("; ".join(parts))))
    return out
