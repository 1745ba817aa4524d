"""Configuration of experiment 'e5' (Haar wavelet hierarchy x columns).

Basis: orthonormal Haar wavelets with ``levels`` levels (8x8 digits: 8 -> 4 -> 2 -> 1).
Two label rows: the wavelet scale (``basis.meta["scale"]``: 0 = approximation, then coarse
to fine details) with inverse softness ``a``, and the horizontal position of the
coefficient (``basis.meta["col_frac"]`` in (0, 1), multiplied by the image width, so one
label unit is one pixel column) with inverse softness ``b``. One network is trained over
``(a, b)`` drawn uniformly from ``a_train x b_train`` and evaluated on the grid
``a_eval x b_eval``. The schedule is clipped to [gamma_denoise, gamma_noise]
(``SoftConditioningSchedule(..., clip=True)``). Standard diffusion (variance labels
``-log Sigma_i``, a = 1, unclipped) is a separate network with the same training.

gamma_denoise: -2 for the 17-level digits (bin width 2/16): at -7 the components are
denoised far below the quantisation bin and the held-out bits/dim of short runs are much
worse (measured by the lead on PCA digits); -7 (the paper's default) for 8-bit data.
"""

_COMMON = {
    "basis": "wavelet",
    "wavelet": "haar",
    "prior": "whitened",
    "col_label_scale": "image width (one unit = one pixel column)",
    "sampler": "ancestral",
    "bpd_time_samples": 4,
    "seed": 0,
    "trajectory": {"ab": [[4.0, 1.0], [1.0, 2.0]], "n": 4, "times": [1.0, 0.8, 0.6, 0.4, 0.2, 0.1, 0.0]},
}

CONFIGS = {
    # 2 CPU cores, < 90 s: 8x8 digits, 3 Haar levels, MLP, 2 x 1500 steps.
    "ci": {**_COMMON, "datasets": [{"name": "digits", "dataset": "digits", "pad_to": None, "limit": None,
                                    "test_limit": None, "levels": 3}],
           "a_train": [0.0, 6.0], "b_train": [0.0, 2.0],
           "a_eval": [0.0, 0.5, 1.0, 2.0, 4.0, 6.0], "b_eval": [0.0, 0.5, 1.0, 2.0],
           "gamma_denoise": -2.0, "gamma_noise": 3.0,
           "net": "mlp", "net_kwargs": {"hidden": 256, "depth": 3},
           "train_steps": 1500, "batch_size": 128, "lr": 1e-3, "sampler_steps": 100,
           "samples": {"ab": [[0.0, 0.0], [4.0, 0.0], [4.0, 1.0], [1.0, 2.0]], "n": 16, "seed": 1}},
    # one H100, ~15 min: CIFAR-10 (JPEG mirror) and MNIST padded to 32, 3 Haar levels, small U-Net,
    # 2 x 6000 steps per data set.
    "gpu": {**_COMMON, "datasets": [
                {"name": "cifar10", "dataset": "cifar10", "pad_to": None, "limit": None, "test_limit": 2000, "levels": 3},
                {"name": "mnist32", "dataset": "mnist", "pad_to": 32, "limit": None, "test_limit": 2000, "levels": 3}],
            "a_train": [0.0, 6.0], "b_train": [0.0, 0.5],
            "a_eval": [0.0, 0.5, 1.0, 2.0, 4.0, 6.0], "b_eval": [0.0, 0.125, 0.25, 0.5],
            "gamma_denoise": -7.0, "gamma_noise": 3.0,
            "net": "unet", "net_kwargs": {"base_channels": 64, "channel_mults": [1, 2, 2], "num_res_blocks": 2},
            "train_steps": 6000, "batch_size": 128, "lr": 2e-4, "sampler_steps": 100,
            "samples": {"ab": [[0.0, 0.0], [4.0, 0.0], [4.0, 0.25], [1.0, 0.5]], "n": 16, "seed": 1}},
    # the paper: CIFAR-10, 300k steps (the paper's length; its network is not known).
    "paper": {**_COMMON, "datasets": [
                  {"name": "cifar10", "dataset": "cifar10", "pad_to": None, "limit": None, "test_limit": None, "levels": 3}],
              "a_train": [0.0, 6.0], "b_train": [0.0, 0.5],
              "a_eval": [0.0, 0.5, 1.0, 2.0, 4.0, 6.0], "b_eval": [0.0, 0.125, 0.25, 0.5],
              "gamma_denoise": -7.0, "gamma_noise": 3.0,
              "net": "unet", "net_kwargs": {"base_channels": 128, "channel_mults": [1, 2, 2, 2],
                                            "num_res_blocks": 2, "attention_resolutions": [16]},
              "train_steps": 300000, "batch_size": 128, "lr": 2e-4, "sampler_steps": 100,
              "samples": {"ab": [[0.0, 0.0], [4.0, 0.0], [4.0, 0.25], [1.0, 0.5]], "n": 16, "seed": 1}},
}
