"""Run profiles and the configuration of every experiment.

* ``ci``: minutes on two CPU cores; small data (8x8 digits by default), short training.
  What the book shows when built by CI. Results are recomputed and not committed.
* ``gpu``: one GPU for well under an hour per experiment; 32x32 data, the book's
  reduced-compute reproduction. Results are committed under ``results/<exp>/gpu/``.
* ``paper``: the paper's scale where known (e.g. 300k steps for E5); days of GPU time.

Choose with the environment variable ``GUD_PROFILE`` (default ``ci``).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import torch

__all__ = [
    "EXPERIMENTS",
    "PROFILES",
    "current_profile",
    "describe",
    "device",
    "experiment_config",
    "print_config",
]

PROFILES: dict[str, str] = {
    "ci": "CI: two CPU cores, minutes per notebook; 8x8 digits, short training; recomputed on every build",
    "gpu": "one GPU, under an hour per experiment; 32x32 data; results committed and read by the book",
    "paper": "the paper's scale where known (e.g. 300k training steps); days of GPU time",
}

# Placeholders, filled by the chapter authors: every number the book shows comes from one
# of these dicts, so keep every setting here rather than in the notebook. Fields:
# dataset, image size, basis, training steps, batch size, seeds, network widths, ...
EXPERIMENTS: dict[str, dict[str, dict[str, Any]]] = {
    "framework": {
        "ci": {"dataset": "digits", "image_size": 8, "seed": 0},
        "gpu": {"dataset": "cifar10", "image_size": 32, "seed": 0},
        "paper": {"dataset": "cifar10", "image_size": 32, "seed": 0},
    },
    "toy": {  # Gaussian toy data: exact oracle, no training
        "ci": {"dim": 16, "n_samples": 2000, "sampler_steps": 100, "softness": [0.0, 0.5, 1.0, 2.0, 8.0], "seed": 0},
        "gpu": {"dim": 64, "n_samples": 20000, "sampler_steps": 200, "softness": [0.0, 0.5, 1.0, 2.0, 8.0], "seed": 0},
        "paper": {"dim": 64, "n_samples": 50000, "sampler_steps": 500, "softness": [0.0, 0.5, 1.0, 2.0, 8.0], "seed": 0},
    },
    "e1": {  # PCA basis, softness sweep x prior
        "ci": {
            "dataset": "digits", "image_size": 8, "basis": "pca", "priors": ["whitened", "unwhitened"],
            "a_train": [0.4, 1.6], "a_eval": [0.4, 0.7, 1.0, 1.3, 1.6],
            "net": "mlp", "width": 256, "depth": 3, "train_steps": 2000, "batch_size": 128, "lr": 1e-3,
            "sampler_steps": 100, "n_samples": 500, "seeds": [0],
        },
        "gpu": {
            "dataset": "cifar10", "image_size": 32, "basis": "pca", "priors": ["whitened", "unwhitened"],
            "a_train": [0.4, 1.6], "a_eval": [0.4, 0.7, 1.0, 1.3, 1.6],
            "net": "unet", "channels": 64, "channel_mult": [1, 2, 2], "train_steps": 50000,
            "batch_size": 128, "lr": 2e-4, "sampler_steps": 100, "n_samples": 10000, "seeds": [0, 1],
        },
        "paper": {
            "dataset": "cifar10", "image_size": 32, "basis": "pca", "priors": ["whitened", "unwhitened"],
            "a_train": [0.4, 1.6], "a_eval": [0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6],
            "net": "unet", "channels": 128, "channel_mult": [1, 2, 2, 2], "train_steps": 300000,
            "batch_size": 128, "lr": 2e-4, "sampler_steps": 100, "n_samples": 50000, "seeds": [0, 1, 2],
        },
    },
    "e2": {  # Fourier basis sweep over a and r
        "ci": {
            "dataset": "digits", "image_size": 8, "basis": "fourier", "a_train": [0.4, 1.6], "r_train": [0.0, 1.0],
            "net": "mlp", "width": 256, "depth": 3, "train_steps": 2000, "batch_size": 128, "lr": 1e-3,
            "sampler_steps": 100, "n_samples": 500, "seeds": [0],
        },
        "gpu": {
            "dataset": "cifar10", "image_size": 32, "basis": "fourier", "a_train": [0.4, 1.6], "r_train": [0.0, 1.0],
            "net": "unet", "channels": 64, "channel_mult": [1, 2, 2], "train_steps": 50000, "batch_size": 128,
            "lr": 2e-4, "sampler_steps": 100, "n_samples": 10000, "seeds": [0, 1],
        },
        "paper": {
            "dataset": "cifar10", "image_size": 32, "basis": "fourier", "a_train": [0.4, 1.6], "r_train": [0.0, 1.0],
            "net": "unet", "channels": 128, "channel_mult": [1, 2, 2, 2], "train_steps": 300000, "batch_size": 128,
            "lr": 2e-4, "sampler_steps": 100, "n_samples": 50000, "seeds": [0, 1, 2],
        },
    },
    "e3": {  # forward-process illustration, no training
        "ci": {"dataset": "digits", "image_size": 8, "image_index": 0, "times": [0.0, 0.25, 0.5, 0.75, 1.0], "seed": 0},
        "gpu": {"dataset": "cifar10", "image_size": 32, "image_index": 0, "times": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], "seed": 0},
        "paper": {"dataset": "cifar10", "image_size": 32, "image_index": 0, "times": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], "seed": 0},
    },
    "e4": {  # column-wise soft conditioning in pixel space, image extension
        "ci": {
            "dataset": "digits", "image_size": 8, "basis": "pixel", "labels": "column", "b": [0.3, 0.5],
            "net": "mlp", "width": 256, "depth": 3, "train_steps": 2000, "batch_size": 128, "lr": 1e-3,
            "extend_columns": 8, "seeds": [0],
        },
        "gpu": {
            "dataset": "pcam", "image_size": 32, "basis": "pixel", "labels": "column", "b": [0.3, 0.5],
            "net": "unet", "channels": 64, "channel_mult": [1, 2, 2], "train_steps": 50000, "batch_size": 128,
            "lr": 2e-4, "extend_columns": 64, "seeds": [0],
        },
        "paper": {
            "dataset": "pcam", "image_size": 32, "basis": "pixel", "labels": "column", "b": [0.3, 0.5],
            "net": "unet", "channels": 128, "channel_mult": [1, 2, 2, 2], "train_steps": 300000, "batch_size": 128,
            "lr": 2e-4, "extend_columns": 96, "seeds": [0],
        },
    },
    "e5": {  # Haar wavelet levels x columns
        "ci": {
            "dataset": "digits", "image_size": 8, "basis": "wavelet", "levels": 2, "a": [0.5, 1.0], "b": [0.3, 0.5],
            "net": "mlp", "width": 256, "depth": 3, "train_steps": 2000, "batch_size": 128, "lr": 1e-3, "seeds": [0],
        },
        "gpu": {
            "dataset": "cifar10", "image_size": 32, "basis": "wavelet", "levels": 3, "a": [0.5, 1.0], "b": [0.3, 0.5],
            "net": "unet", "channels": 64, "channel_mult": [1, 2, 2], "train_steps": 50000, "batch_size": 128,
            "lr": 2e-4, "seeds": [0],
        },
        "paper": {
            "dataset": "cifar10", "image_size": 32, "basis": "wavelet", "levels": 3, "a": [0.5, 1.0], "b": [0.3, 0.5],
            "net": "unet", "channels": 128, "channel_mult": [1, 2, 2, 2], "train_steps": 300000, "batch_size": 128,
            "lr": 2e-4, "seeds": [0],
        },
    },
}  # fmt: skip


def current_profile() -> str:
    """The profile named by env ``GUD_PROFILE`` (default ``ci``)."""
    profile = os.environ.get("GUD_PROFILE", "ci").strip() or "ci"
    if profile not in PROFILES:
        raise ValueError(f"GUD_PROFILE={profile!r} is not a profile; known: {', '.join(PROFILES)}")
    return profile


def describe(profile: str | None = None) -> str:
    """One line saying what a profile means."""
    profile = current_profile() if profile is None else profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    return f"{profile}: {PROFILES[profile]}"


def device() -> torch.device:
    """CUDA if available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def experiment_config(experiment: str, profile: str | None = None) -> dict[str, Any]:
    """A deep copy of the configuration of ``experiment`` under ``profile`` (default: current)."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; known: {', '.join(EXPERIMENTS)}")
    profile = current_profile() if profile is None else profile
    if profile not in EXPERIMENTS[experiment]:
        raise ValueError(f"experiment {experiment!r} has no {profile!r} profile; known: {', '.join(EXPERIMENTS[experiment])}")
    return copy.deepcopy(EXPERIMENTS[experiment][profile])


def print_config(experiment: str, profile: str | None = None) -> dict[str, Any]:
    """Print (and return) an experiment's configuration, headed by its profile."""
    profile = current_profile() if profile is None else profile
    config = experiment_config(experiment, profile)
    print(f"experiment {experiment}, profile {describe(profile)}")
    print(json.dumps(config, indent=2, sort_keys=True))
    return config
