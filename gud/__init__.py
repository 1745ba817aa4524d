"""gud: Generation with Unified Diffusion, in PyTorch.

The framework of Gerdes, Welling & Cheng (2024) as three independent pieces --
a basis (:mod:`gud.bases`), a prior (:mod:`gud.prior`) and a component-wise
noise schedule (:mod:`gud.schedules`) -- plus the pieces that use them: the
training loss (:mod:`gud.diffusion`), samplers (:mod:`gud.samplers`), the ELBO
(:mod:`gud.likelihood`), the exact Gaussian denoiser (:mod:`gud.oracle`),
networks (:mod:`gud.nets`) and training (:mod:`gud.train`).
"""
from .bases import FourierBasis, PCABasis, PixelBasis, WaveletBasis, make_basis
from .diffusion import EpsLoss, add_noise
from .likelihood import elbo
from .oracle import GaussianOracle
from .prior import Prior
from .samplers import sample
from .schedules import (CosineSchedule, LinearSchedule, SequentialSchedule,
                        SoftConditioningSchedule, VPSchedule)

__version__ = "0.1.0"

__all__ = [
    "PixelBasis", "PCABasis", "FourierBasis", "WaveletBasis", "make_basis",
    "Prior", "LinearSchedule", "CosineSchedule", "VPSchedule",
    "SoftConditioningSchedule", "SequentialSchedule", "EpsLoss", "add_noise",
    "GaussianOracle", "sample", "elbo",
]
