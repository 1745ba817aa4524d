"""Configuration of experiment E1 (PCA basis: inverse softness a x prior) per run profile.

``threads``: torch intra-op threads (ci: 1; a tiny MLP on 8x8 data gains nothing from more, and
loses a lot on a shared CPU; None: ``gud.pipeline.set_threads`` default).

One noise-state-conditioned network per prior is trained over a ~ U[a_train] and evaluated at
the fixed values ``a_eval`` (those outside ``a_train`` test extrapolation). Baselines, with the
same network, steps and batch: ``pixel_sd``, standard diffusion in pixel space (a scalar
``LinearSchedule`` whose gamma(t) equals that of variance labels at a = 1 with the white-noise
prior, i.e. the very same forward process), and ``a1_only``, a network trained at a = 1 only.

``gamma_denoise`` / ``gamma_noise`` (the effective -log SNR of the last-generated component
at t = 0 and of the first-generated one at t = 1):
* ci (digits, 17 levels): -2 / 3. The variance floor is bin^2/12, so at gamma_denoise = -2 the
  noise left at t = 0 in the smallest component is sqrt(1/12) e^-1 ~ 0.11 bin widths, ample for
  the discretised decoder; the paper's -7 (0.009 bin widths) makes few-hundred-step networks pay
  for a long, useless stretch of near-clean times (measured: 4.9 vs 2.7 bits/dim at a = 0.4).
* gpu, paper: the official code's defaults -7 / 3 (8-bit data, longer training).
Sampler: DDIM (deterministic exponential updates) in ci/gpu for speed; Euler-Maruyama with 100
steps (the official code's default) in paper. The gpu profile is an estimate of ~15 min on one
H100 (8 trainings of 2500 steps, bf16), not yet measured.
"""

_COMMON = {
    "basis": "pca",
    "labels": "variance (l_i = -log Sigma_i)",
    "priors": ["whitened", "unwhitened"],
    "a_train": [0.4, 1.6],
    "a_eval": [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 2.0],
    "baselines": ["pixel_sd", "a1_only"],
    "a1_only_priors": ["whitened"],
    "fcd_classifier_steps": 300,
    "fcd_classifier_seed": 0,
}

CONFIGS = {
    "ci": {
        **_COMMON,
        "datasets": ["digits"],
        "threads": 1,
        "data_kwargs": {},
        "test_limit": None,
        "gamma_denoise": -2.0,
        "gamma_noise": 3.0,
        "net": "mlp",
        "net_kwargs": {"hidden": 256, "depth": 3},
        "train_steps": 400,
        "batch_size": 256,
        "lr": 1e-3,
        "train_kwargs": {},
        "checkpoint": False,
        "seeds": [0, 1, 2],
        "n_time_samples": 2,
        "n_samples": 200,
        "sampler": "ddim",
        "sampler_steps": 25,
        "show_samples": 8,
        "trajectory_a": [0.4, 1.0, 2.0],
        "trajectory_times": [0.96, 0.92, 0.84, 0.72, 0.48, 0.0],
        "trajectory_n": 2,
        "inception_fid": False,
    },
    "gpu": {
        **_COMMON,
        "datasets": ["mnist", "cifar10"],
        "threads": None,
        "data_kwargs": {"mnist": {"pad_to": 32}},
        "test_limit": 2000,
        "gamma_denoise": -7.0,
        "gamma_noise": 3.0,
        "net": "unet",
        "net_kwargs": {"base_channels": 64, "channel_mults": [1, 2, 2], "num_res_blocks": 1},
        "train_steps": 2500,
        "batch_size": 128,
        "lr": 2e-4,
        "train_kwargs": {"amp_bf16": True},
        "checkpoint": True,
        "seeds": [0],
        "n_time_samples": 1,
        "n_samples": 2000,
        "sampler": "ddim",
        "sampler_steps": 100,
        "show_samples": 8,
        "trajectory_a": [0.4, 1.0, 2.0],
        "trajectory_times": [0.96, 0.92, 0.84, 0.72, 0.48, 0.0],
        "trajectory_n": 2,
        "inception_fid": True,
    },
    "paper": {
        **_COMMON,
        "datasets": ["cifar10"],
        "threads": None,
        "data_kwargs": {},
        "test_limit": None,
        "gamma_denoise": -7.0,
        "gamma_noise": 3.0,
        "net": "unet",
        "net_kwargs": {"base_channels": 128, "channel_mults": [1, 2, 2, 2], "num_res_blocks": 2,
                       "attention_resolutions": [16], "dropout": 0.1},
        "train_steps": 300000,
        "batch_size": 128,
        "lr": 2e-4,
        "train_kwargs": {"amp_bf16": True},
        "checkpoint": True,
        "seeds": [0, 1, 2],
        "n_time_samples": 1,
        "n_samples": 50000,
        "sampler": "em",
        "sampler_steps": 100,
        "show_samples": 8,
        "trajectory_a": [0.4, 1.0, 2.0],
        "trajectory_times": [0.96, 0.92, 0.84, 0.72, 0.48, 0.0],
        "trajectory_n": 2,
        "inception_fid": True,
    },
}
