"""The Fréchet distance between Gaussians (FID's formula), shared by :mod:`gud.metrics` (the
classifier Fréchet distance) and :mod:`gud.fid` (FID with the Inception network): a module of its
own, so that neither of the two imports the other."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg
from torch import Tensor

__all__ = ["frechet_distance", "gaussian_frechet_distance"]


def gaussian_frechet_distance(
    mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray, eps: float = 1e-6
) -> float:
    """``||mu_a - mu_b||^2 + tr(cov_a + cov_b - 2 (cov_a cov_b)^(1/2))`` (Fréchet / W2^2).

    ``scipy.linalg.sqrtm`` of the product; if it is singular or not finite, ``eps I`` is added to both
    covariances; imaginary parts from round-off are dropped (an error if they are large).
    """
    mu_a, mu_b = np.atleast_1d(mu_a).astype(np.float64), np.atleast_1d(mu_b).astype(np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(cov_a @ cov_b)
    if caught or not np.isfinite(covmean).all():  # singular product: regularise
        offset = eps * np.eye(cov_a.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", linalg.LinAlgWarning)
            covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    if np.iscomplexobj(covmean):
        scale = max(np.abs(covmean).max(), 1.0)
        if np.abs(covmean.imag).max() > 1e-3 * scale:
            raise ValueError(f"sqrtm has a large imaginary part {np.abs(covmean.imag).max():.3g}")
        covmean = covmean.real
    diff = mu_a - mu_b
    value = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean)
    return float(max(value, 0.0))


def frechet_distance(feats_a: Tensor | np.ndarray, feats_b: Tensor | np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to ``feats_a [n, k]`` and ``feats_b [m, k]``.

    The FID formula (Heusel et al. 2017) with sample means and unbiased covariances.
    """
    a = np.asarray(torch.as_tensor(feats_a).double().cpu())
    b = np.asarray(torch.as_tensor(feats_b).double().cpu())
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected [n, k] and [m, k] features, got {a.shape} and {b.shape}")
    return gaussian_frechet_distance(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False), eps=eps
    )
