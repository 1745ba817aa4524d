"""Configuration of experiment 'toy' (book/toy_gaussian.ipynb): the exact Gaussian toy model.

Data: a stationary Ornstein-Uhlenbeck (AR(1)) process on ``dim`` points, seen as a
``1 x dim`` image in the pixel basis, ordering labels = position (left to right).  Every
quantity is exact linear algebra on ``dim x dim`` matrices except the Monte-Carlo checks
(empirical sample KL, the Monte-Carlo ELBO of ``gud.likelihood.elbo``), whose sizes are set
here.  The paper has no toy experiment: ``paper`` is a larger version of ``gpu``.

Keys
----
dim, kernel, length, variance
    ``gud.toy.stationary_covariance``: process on ``dim`` points, kernel ``"ou"``
    (``exp(-|i-j|/length)``), marginal variance ``variance`` (0.25: a pixel std of 0.5 in
    [-1, 1]; whitened and unwhitened priors then differ).
gamma_denoise, gamma_noise
    end points of the effective log-SNR schedule (the official code's defaults, -7 and 3).
softness
    inverse softnesses ``a`` for the log-SNR paths, sampling error and ELBO table.
softness_grid
    ``{"max", "num"}``: the fine grid ``linspace(0, max, num)`` of the decision-time heat map
    and the conditional-structure curves.
decision_threshold, time_grid
    a component is *decided* when ``Var[y0_i | y_t] <= threshold * Var[y0_i]``; times on a
    uniform grid of ``time_grid`` points.
trajectory
    one sampled trajectory per ``softness`` value, ``method`` and ``steps``, seed ``seed``.
samplers, sampler_steps
    samplers of ``gud.samplers`` and step counts for the exact sampling error.
empirical
    the Monte-Carlo check of the exact sampling error: ``n_samples`` samples at softness
    ``softness`` (whitened prior), seed ``seed``.
elbo
    ``n_examples`` data points (seed ``seed``), ``n_time_samples`` stratified times per
    example, ``quadrature_points`` for the exact expected ELBO, and a mis-specified denoiser:
    the exact denoiser of the process with correlation length ``wrong_length``.
"""

_COMMON = {
    "kernel": "ou",
    "length": 2.0,
    "variance": 0.25,
    "gamma_denoise": -7.0,
    "gamma_noise": 3.0,
    "softness": [0.0, 0.5, 1.0, 2.0, 4.0, 8.0],
    "decision_threshold": 0.5,
    "samplers": ["em", "heun", "ddim", "ancestral"],
}

CONFIGS = {
    # two CPU cores, well under a minute: 16 components
    "ci": {
        **_COMMON,
        "dim": 16,
        "softness_grid": {"max": 12.0, "num": 49},
        "time_grid": 2001,
        "trajectory": {"softness": [0.0, 1.0, 8.0], "method": "em", "steps": 200, "seed": 1},
        "sampler_steps": [5, 10, 20, 50, 100, 200],
        "empirical": {"softness": 1.0, "n_samples": 2000, "seed": 2},
        "elbo": {"n_examples": 2000, "n_time_samples": 8, "seed": 3, "quadrature_points": 4001,
                 "wrong_length": 1.0},
    },
    # 64 components; float64 linear algebra on the CPU: structure ~2 min, sampling ~15 min
    # (measured on a busy 2-core machine), ELBO not yet measured
    "gpu": {
        **_COMMON,
        "dim": 64,
        "softness_grid": {"max": 12.0, "num": 97},
        "time_grid": 4001,
        "trajectory": {"softness": [0.0, 1.0, 8.0], "method": "em", "steps": 1000, "seed": 1},
        "sampler_steps": [5, 10, 20, 50, 100, 200, 500, 1000],
        "empirical": {"softness": 1.0, "n_samples": 20000, "seed": 2},
        "elbo": {"n_examples": 4000, "n_time_samples": 8, "seed": 3, "quadrature_points": 8001,
                 "wrong_length": 1.0},
    },
    # no toy in the paper: the gpu settings with more Monte-Carlo samples and steps
    "paper": {
        **_COMMON,
        "dim": 64,
        "softness_grid": {"max": 12.0, "num": 97},
        "time_grid": 8001,
        "trajectory": {"softness": [0.0, 1.0, 8.0], "method": "em", "steps": 2000, "seed": 1},
        "sampler_steps": [5, 10, 20, 50, 100, 200, 500, 1000, 2000],
        "empirical": {"softness": 1.0, "n_samples": 100000, "seed": 2},
        "elbo": {"n_examples": 20000, "n_time_samples": 16, "seed": 3, "quadrature_points": 16001,
                 "wrong_length": 1.0},
    },
}
