"""Run profiles and the configuration of every experiment.

* ``ci``: minutes on two CPU cores; small data (8x8 digits by default), short training.
  What the book shows when built by CI. Results are committed, and recomputed and verified by CI.
* ``gpu``: one GPU for minutes per experiment (one 10-minute command each); 32x32 data, the book's
  reduced-compute reproduction. Results are committed under ``results/<exp>/gpu/``.
* ``paper``: the paper's scale where known (e.g. 300k steps for E5); days of GPU time.

Choose with the environment variable ``GUD_PROFILE`` (default ``ci``).
"""

from __future__ import annotations

import copy
import importlib
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
    "ci": "two CPU cores, minutes per notebook; small embedded or generated data (8x8 digits, random fields), short training; recomputed on every build",
    "gpu": "one GPU, minutes per experiment (each fits one 10-minute GPU command); 32x32 data; results committed and read by the book",
    "paper": "the paper's scale where known (e.g. 300k training steps); days of GPU time",
}

# The configuration of each experiment lives in gud/experiments/<id>.py as CONFIGS = {profile: dict}:
# every number a chapter shows comes from there, not from numbers scattered through cells.
EXPERIMENTS: tuple[str, ...] = ("framework", "toy", "e1", "e2", "e3", "e4", "e5")


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
    configs = importlib.import_module(f"gud.experiments.{experiment}").CONFIGS
    if profile not in configs:
        raise ValueError(f"experiment {experiment!r} has no {profile!r} profile; known: {', '.join(configs)}")
    return copy.deepcopy(configs[profile])


def print_config(experiment: str, profile: str | None = None) -> dict[str, Any]:
    """Print (and return) an experiment's configuration, headed by its profile."""
    profile = current_profile() if profile is None else profile
    config = experiment_config(experiment, profile)
    print(f"experiment {experiment}, profile {describe(profile)}")
    width = max((len(k) for k in config), default=0)
    for key in sorted(config):  # one line per setting, nested values as compact JSON
        print(f"  {key:<{width}}  {json.dumps(config[key], sort_keys=True)}")
    return config
