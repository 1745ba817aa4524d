"""E3, the forward-process illustration (book/e3_forward_process.ipynb).

No training.  One image is noised by four forward processes (rows of the figure), all
soft-conditioning schedules (:func:`gud.labels.family`) in the end-point convention
``convention`` (the book's main one, ``"process-clipped"``: every component's process gamma
starts at ``gamma_denoise`` and ends at ``gamma_noise`` for every ``a``):

i.   standard diffusion: white-noise prior, variance labels in the Fourier basis, a = 1, which
     makes the process gamma one scalar function of t (white noise, any basis);
ii.  the same basis, labels and a with the whitened Fourier prior (noise coloured like the data);
iii. column-by-column noising in pixel space (labels = column index);
iv.  Haar wavelet scales (coarse generated first) combined with columns inside each scale.

:func:`compute` returns the noised images, the true log-SNR paths (``n_paths`` components per
row, evenly spaced in label order), and per row the spread of the process gamma, the true
log SNR at t = 0 and t = 1, the active windows (:func:`gud.experiments.framework.active_windows`)
and the fraction of components active at each time of the figure.

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
                end points of every schedule (process gamma in the "process" conventions)
convention      end-point convention of every row (``gud.labels.CONVENTIONS``)
a_fourier       inverse softness of rows i and ii (1: standard diffusion)
a_column        inverse softness per column index in row iii (softness 1/a_column)
a_level, b_column
                row iv: weights of the wavelet-scale labels (0 = approximation, ..., levels =
                finest details) and of the column labels ``col_frac`` in [0, 1] of each scale
wavelet_levels  Haar levels of row iv
column_whitened, wavelet_whitened
                priors of rows iii and iv (rows i and ii are unwhitened and whitened by design)
n_times         time grid of the SNR-path figure
n_paths         components per row whose paths are stored
seed            noise seed (one standard-normal draw, shared by all rows and times)
threads         torch intra-op threads
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import Tensor

from ..bases import make_basis
from ..data import load_dataset
from ..labels import family
from ..likelihood import BIN_WIDTH_8BIT
from ..prior import Prior
from ..schedules import alpha_sigma
from .framework import active_windows, gamma_spread, max_overlap, path_indices

__all__ = ["CONFIGS", "compute", "sample_photo", "photo_patches"]

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
    "convention": "process-clipped",
    "n_times": 101,
    "n_paths": 192,
    "seed": 0,
    "threads": 1,
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


def _image_and_prior_data(cfg: dict) -> tuple[Tensor, str, Tensor, str]:
    """The image ``[D]`` and the data ``[N, D]`` the priors are fitted to, with their sources."""
    size = cfg["image_size"]
    if cfg["image"] == "china":
        x0 = sample_photo("china.jpg", size)
        image_source = f"scikit-learn sample photograph china.jpg (centre square, Lanczos to {size}×{size})"
    else:
        test = load_dataset(cfg["image"], "test", limit=cfg["image_index"] + 1)
        x0, image_source = test.x[cfg["image_index"]], f"{test.source}, test image {cfg['image_index']}"
    if cfg["prior_data"] == "photo-patches":
        data = photo_patches(cfg["n_patches"], size, cfg["patch_downscale"], seed=cfg["seed"])
        prior_source = (f"{cfg['n_patches']:,} random {size}×{size} crops of scikit-learn's two sample "
                        f"photographs (downscaled {cfg['patch_downscale']}×)")
    else:
        train = load_dataset(cfg["prior_data"], "train", limit=cfg["prior_limit"])
        data, prior_source = train.x, f"{train.source}, {len(train):,} training images"
    return x0, image_source, data.double(), prior_source


def compute(cfg: dict, ctx) -> tuple[dict, dict]:
    """The four forward processes of the chapter (see the module docstring)."""
    start_time = time.perf_counter()
    size = cfg["image_size"]
    shape = (3, size, size)
    x0, image_source, data, prior_source = _image_and_prior_data(cfg)
    floor = BIN_WIDTH_8BIT ** 2 / 12
    conv = cfg["convention"]
    G = dict(gamma_denoise=cfg["gamma_denoise"], gamma_noise=cfg["gamma_noise"])

    fourier = make_basis("fourier", shape)
    pixel = make_basis("pixel", shape)
    wavelet = make_basis("wavelet", shape, levels=cfg["wavelet_levels"])
    p_four_plain = Prior.fit(fourier, data, whitened=False, var_floor=floor)
    p_four_white = Prior.fit(fourier, data, whitened=True, var_floor=floor)
    p_pixel = Prior.fit(pixel, data, whitened=cfg["column_whitened"], var_floor=floor)
    p_wave = Prior.fit(wavelet, data, whitened=cfg["wavelet_whitened"], var_floor=floor)
    var_labels = -p_four_plain.var.log()
    col = pixel.meta["col"].double()
    wl = torch.stack([wavelet.meta["scale"].double(), wavelet.meta["col_frac"].double()])  # [2, D]
    a_iv = [cfg["a_level"], cfg["b_column"]]
    # key: (basis, prior, label text, a, labels [K, D] or [D], label colouring [D])
    rows = {
        "i": ("Fourier", p_four_plain, "variance", cfg["a_fourier"], var_labels, var_labels),
        "ii": ("Fourier", p_four_white, "variance", cfg["a_fourier"], var_labels, var_labels),
        "iii": ("pixel", p_pixel, "column", cfg["a_column"], col, col),
        "iv": (f"Haar ({cfg['wavelet_levels']} levels)", p_wave, "wavelet scale, column", a_iv, wl,
               a_iv[0] * wl[0] + a_iv[1] * wl[1]),
    }
    times = torch.tensor(cfg["times"], dtype=torch.float64)
    tgrid = torch.linspace(0, 1, cfg["n_times"], dtype=torch.float64)
    t01 = torch.tensor([0.0, 1.0], dtype=torch.float64)
    eps = torch.randn(1, 3 * size * size, generator=torch.Generator().manual_seed(cfg["seed"]), dtype=torch.float64)
    metrics = {"image_source": image_source, "prior_source": prior_source, "D": 3 * size * size, "rows": {}}
    arrays = {"x0": x0.float(), "t": tgrid.float()}
    for key, (basis_name, prior, label_text, a, labels, colour) in rows.items():
        ctx.check(f"row {key}")
        sched = family(labels, prior, conv, a=a, **G)
        y0 = prior.encode(x0.double()[None])  # [1, D]
        alpha, sigma = alpha_sigma(sched.gamma(times))  # [T, D]
        arrays[f"{key}.xt"] = prior.decode(alpha * y0 + sigma * eps).float()  # [T, D]
        idx = path_indices(colour, cfg["n_paths"])
        arrays[f"{key}.log_snr"] = sched.state(tgrid).true_log_snr(prior.log_var)[:, idx].float()  # [n_times, P]
        arrays[f"{key}.labels"] = colour[idx].float()
        snr = sched.state(t01).true_log_snr(prior.log_var)  # [2, D]
        start, end = active_windows(sched)
        ok = ~torch.isnan(end - start)
        active = [float(((start <= t) & (t <= end)).double().mean()) for t in times]
        metrics["rows"][key] = {
            "basis": basis_name, "prior": "whitened" if prior.whitened else "white noise", "labels": label_text,
            "a": a, "convention": conv, "gamma_spread": gamma_spread(sched, tgrid),
            "log_var_range": float(prior.log_var.max() - prior.log_var.min()),
            "log_snr0_min": float(snr[0].min()), "log_snr0_max": float(snr[0].max()),
            "log_snr1_min": float(snr[1].min()), "log_snr1_max": float(snr[1].max()),
            "n_active": int(ok.sum()), "window_median": float((end - start)[ok].median()),
            "window_max": float((end - start)[ok].max()), "max_overlap": max_overlap(start, end),
            "active": active}
    wall = time.perf_counter() - start_time
    metrics["data_description"] = f"image: {image_source}; priors fitted to {prior_source}"
    metrics["compute_description"] = (f"no training: four priors fitted, one image noised by four schedules, "
                                      f"{wall:.1f} s on the CPU ({torch.get_num_threads()} "
                                      f"thread{'s' if torch.get_num_threads() > 1 else ''})")
    metrics["wall_seconds"] = wall
    return metrics, arrays
