"""Configuration and helpers of E3, the forward-process illustration (book/e3_forward_process.ipynb).

No training.  One image is noised by four forward processes (rows of the figure):

i.   standard diffusion: unwhitened prior, variance labels in the Fourier basis, a = 1, which
     makes the process gamma one scalar function of t (white noise, any basis);
ii.  the same true-SNR paths with the whitened Fourier prior (noise coloured like the data);
iii. column-by-column noising in pixel space (soft conditioning, labels = column index);
iv.  Haar wavelet scales (coarse generated first) combined with columns inside each scale.

Keys
----
image           "china" (scikit-learn's sample photograph, cropped to a square and
                downscaled with Pillow; no download) or "cifar10" (test image ``image_index``)
image_size      side of the square image
prior_data      data the priors (mean, variances) are fitted to: "photo-patches" (random
                ``image_size`` crops of scikit-learn's two sample photographs, downscaled by
                ``patch_downscale``) or "cifar10" (``prior_limit`` training images)
times           the columns of the figure
gamma_denoise, gamma_noise
                end points of every soft-conditioning schedule, in the true SNR
a_fourier       inverse softness of rows i and ii (1: standard diffusion's SNR paths)
a_column        inverse softness per column index in row iii (softness 1/a_column)
a_level, b_column
                row iv: weights of the wavelet-scale labels (0 = approximation, ..., levels =
                finest details) and of the column labels ``col_frac`` in [0, 1] of each scale
wavelet_levels  Haar levels of row iv
column_whitened, wavelet_whitened
                priors of rows iii and iv (rows i and ii are unwhitened and whitened by design)
n_times         time grid of the SNR-path figure
seed            noise seed (one standard-normal draw, shared by all rows and times)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["CONFIGS", "sample_photo", "photo_patches"]

_COMMON = {
    "image_size": 32,
    "times": [0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
    "gamma_denoise": -7.0,
    "gamma_noise": 3.0,
    "a_fourier": 1.0,
    "a_column": 2.0,
    "a_level": 10.0,
    "b_column": 10.0,
    "wavelet_levels": 3,
    "column_whitened": False,
    "wavelet_whitened": True,
    "n_times": 101,
    "seed": 0,
}

CONFIGS = {
    # A real photograph shipped with scikit-learn; priors from 4000 random patches of the two
    # sample photographs downscaled 4x.  D = 3072, seconds on CPU.
    "ci": {**_COMMON, "image": "china", "image_index": None, "prior_data": "photo-patches",
           "n_patches": 4000, "patch_downscale": 4, "prior_limit": None},
    # One CIFAR-10 test image (JPEG mirror); priors from 20000 training images.
    "gpu": {**_COMMON, "image": "cifar10", "image_index": 7, "prior_data": "cifar10",
            "n_patches": None, "patch_downscale": None, "prior_limit": 20000},
    # The full CIFAR-10 training set for the priors.
    "paper": {**_COMMON, "image": "cifar10", "image_index": 7, "prior_data": "cifar10",
              "n_patches": None, "patch_downscale": None, "prior_limit": None},
}


def _to_flat(arr: np.ndarray) -> Tensor:
    """uint8 ``[..., H, W, 3]`` -> float ``[..., 3*H*W]`` in [-1, 1] (``gud.data``'s scaling)."""
    x = torch.from_numpy(np.array(arr, copy=True)).float() * (2.0 / 255.0) - 1.0
    x = x.movedim(-1, -3)  # [..., 3, H, W]
    return x.reshape(*x.shape[:-3], -1)


def sample_photo(name: str = "china.jpg", size: int = 32) -> Tensor:
    """A scikit-learn sample photograph, centre-cropped to a square and downscaled to
    ``size x size`` with Pillow (Lanczos): flat ``[3*size*size]`` in [-1, 1]."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    img = load_sample_image(name)
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    pil = Image.fromarray(img[top:top + side, left:left + side])
    return _to_flat(np.asarray(pil.resize((size, size), Image.Resampling.LANCZOS)))


def photo_patches(n: int, size: int = 32, downscale: int = 4, seed: int = 0) -> Tensor:
    """``n`` random ``size x size`` crops of scikit-learn's two sample photographs
    (china, flower), each photograph first downscaled by ``downscale`` (Lanczos):
    flat ``[n, 3*size*size]`` in [-1, 1].  Crop positions from ``torch.Generator(seed)``."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    photos = []
    for name in ("china.jpg", "flower.jpg"):
        img = load_sample_image(name)
        h, w = img.shape[:2]
        pil = Image.fromarray(img).resize((w // downscale, h // downscale), Image.Resampling.LANCZOS)
        photos.append(np.asarray(pil))
    g = torch.Generator().manual_seed(seed)
    which = torch.randint(len(photos), (n,), generator=g)
    out = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        p = photos[int(which[k])]
        top = int(torch.randint(p.shape[0] - size + 1, (), generator=g))
        left = int(torch.randint(p.shape[1] - size + 1, (), generator=g))
        out[k] = p[top:top + size, left:left + size]
    return _to_flat(out)
