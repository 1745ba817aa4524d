"""Configuration of experiment E2 (Fourier basis: inverse softness a x ordering mix r) per run profile.

``threads``: torch intra-op threads (ci: 1; a tiny MLP on 8x8 data gains nothing from more, and
loses a lot on a shared CPU; None: ``gud.pipeline.set_threads`` default).

Whitened prior in the real Fourier basis. Two label rows: the variance ordering
l_var = -log Sigma_i (the power spectrum; for non-stationary data such as digits, the variance
of each Fourier component, whose covariance is then not diagonal) and the frequency ordering
|k| (``basis.meta["freq"]``) mapped affinely onto the range of l_var. The book's own second
parameter r (the paper's r is not known) mixes them: labels(a, r) = a [(1 - r) l_var + r l_freq],
implemented as ``param_map`` (a, r) -> (a (1 - r), a r). (a, r) = (1, 0) has the SNR paths of
standard diffusion (with the data-matched prior). One network per seed is trained with a and r
drawn uniformly from ``a_train`` x ``r_train`` and evaluated on the grid ``a_eval`` x ``r_eval``.
gamma_denoise / gamma_noise as in E1 (ci: -2 / 3 for 17-level digits; gpu, paper: -7 / 3).
The gpu profile is an estimate of ~15 min on one H100 (2 trainings of 6000 steps, bf16), not
yet measured.
"""

_COMMON = {
    "basis": "fourier",
    "prior": "whitened",
    "labels": ["variance (l_i = -log Sigma_i)", "frequency |k| rescaled to the range of the variance labels"],
    "a_train": [0.4, 1.6],
    "r_train": [0.0, 1.0],
    "a_eval": [0.4, 0.7, 1.0, 1.3, 1.6],
    "r_eval": [0.0, 0.25, 0.5, 0.75, 1.0],
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
        "train_steps": 1000,
        "batch_size": 256,
        "lr": 1e-3,
        "train_kwargs": {},
        "checkpoint": False,
        "seeds": [0, 1, 2],
        "n_time_samples": 2,
        "n_samples": 200,
        "sampler": "ddim",
        "sampler_steps": 25,
        "show_samples": 3,
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
        "train_steps": 6000,
        "batch_size": 128,
        "lr": 2e-4,
        "train_kwargs": {"amp_bf16": True},
        "checkpoint": True,
        "seeds": [0],
        "n_time_samples": 1,
        "n_samples": 1000,
        "sampler": "ddim",
        "sampler_steps": 100,
        "show_samples": 3,
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
        "show_samples": 3,
    },
}
