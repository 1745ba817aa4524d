"""Sample-quality metrics: field statistics for image extension, and Fréchet distances.

Field statistics take ``fields [n, H, W]`` (one channel) and are non-periodic: only pairs
of pixels that both lie inside the image are used, so they apply to extended images.

The Fréchet classifier distance (FCD) is the FID formula applied to the penultimate
features of a small CNN (``FeatureClassifier``) trained here on the data set itself.
**It is not FID**: FID uses Inception-v3 features, whose weights cannot be downloaded in
this environment, so FCD values are not comparable with published FID numbers. They are
comparable with each other for one classifier (same data, seed and training steps).
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy import linalg, stats
from torch import Tensor, nn

__all__ = [
    "FeatureClassifier",
    "classifier_frechet_distance",
    "column_profile",
    "frechet_distance",
    "gaussian_frechet_distance",
    "inception_fid",
    "local_two_point_by_column",
    "one_point_histogram_distance",
    "train_feature_classifier",
    "two_point_correlation",
]


# --------------------------------------------------------------------------- field stats


def _check_fields(fields: Tensor) -> Tensor:
    if fields.ndim != 3:
        raise ValueError(f"expected fields [n, H, W], got shape {tuple(fields.shape)}")
    return fields.double()


def two_point_correlation(fields: Tensor, max_dx: int) -> Tensor:
    """Horizontal connected correlation ``C(dx) = <phi(x) phi(x+dx)> - <phi>^2``, ``[max_dx+1]``.

    ``<.>`` averages over samples, rows and all column pairs ``(j, j+dx)`` inside the
    image (non-periodic); ``<phi>`` is the mean over all pixels. ``C(0)`` is the variance.
    """
    f = _check_fields(fields)
    width = f.shape[-1]
    if not 0 <= max_dx < width:
        raise ValueError(f"need 0 <= max_dx < width = {width}")
    mean = f.mean()
    out = [(f[..., : width - dx] * f[..., dx:]).mean() - mean**2 for dx in range(max_dx + 1)]
    return torch.stack(out)


_COLUMN_STATS: dict[str, Callable[[Tensor], Tensor]] = {
    "mean": lambda f: f.mean(dim=(0, 1)),
    "var": lambda f: f.var(dim=(0, 1), unbiased=False),
    "std": lambda f: f.std(dim=(0, 1), unbiased=False),
    "abs_mean": lambda f: f.abs().mean(dim=(0, 1)),
}


def column_profile(fields: Tensor, stat: str = "var") -> Tensor:
    """Per-column statistic ``[W]`` over samples and rows (``mean``, ``var``, ``std``, ``abs_mean``).

    For a stationary field the profile is flat; drift with the column index measures how
    an extension degrades with distance from the initial window.
    """
    if stat not in _COLUMN_STATS:
        raise ValueError(f"stat must be one of {sorted(_COLUMN_STATS)}, got {stat!r}")
    return _COLUMN_STATS[stat](_check_fields(fields))


def local_two_point_by_column(fields: Tensor, dx: int = 1, normalize: bool = False) -> Tensor:
    """Covariance of columns ``j`` and ``j + dx`` as a function of ``j``, ``[W - dx]``.

    ``C_j = <phi_j phi_{j+dx}> - <phi_j><phi_{j+dx}>`` over samples and rows; with
    ``normalize`` divided by ``std_j std_{j+dx}`` (Pearson correlation). For a stationary
    field ``C_j`` is constant in ``j``.
    """
    f = _check_fields(fields)
    width = f.shape[-1]
    if not 0 <= dx < width:
        raise ValueError(f"need 0 <= dx < width = {width}")
    a, b = f[..., : width - dx], f[..., dx:]
    cov = (a * b).mean(dim=(0, 1)) - a.mean(dim=(0, 1)) * b.mean(dim=(0, 1))
    if normalize:
        cov = cov / (a.std(dim=(0, 1), unbiased=False) * b.std(dim=(0, 1), unbiased=False))
    return cov


def one_point_histogram_distance(a: Tensor, b: Tensor, column_blocks: int = 1) -> Tensor:
    """1-Wasserstein distance of pixel marginals, per column block of ``a``, ``[column_blocks]``.

    ``a [n, H, W]`` (e.g. extended images) is split into ``column_blocks`` contiguous
    column blocks; each block's pixel values are compared with *all* pixel values of the
    reference ``b [m, H', W']`` (a sample of the stationary field, any width: by
    stationarity all its pixels share one marginal), via ``scipy.stats.wasserstein_distance``.
    """
    fa, fb = _check_fields(a), _check_fields(b)
    ref = fb.flatten().numpy()
    blocks = torch.tensor_split(fa, column_blocks, dim=-1)
    return torch.tensor(
        [stats.wasserstein_distance(blk.flatten().numpy(), ref) for blk in blocks], dtype=torch.float64
    )


# --------------------------------------------------------------------------- Fréchet


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


# --------------------------------------------------------------------------- classifier


class FeatureClassifier(nn.Module):
    """Small CNN classifier; ``features`` gives the penultimate features ``[n, feature_dim]``.

    Stem conv, stride-2 conv blocks until the spatial size is <= 4 (8x8 digits: 1 block,
    28x28 MNIST / 32x32 CIFAR-10: 3), a conv, pooling to 4x4, then a hidden linear layer
    with ReLU (the features) and a linear head. Input ``x_img [n, C, H, W]`` in [-1, 1].
    """

    def __init__(
        self, shape: tuple[int, int, int], n_classes: int, width: int = 32, feature_dim: int = 128
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.shape = tuple(shape)
        self.n_classes = n_classes
        layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
        ch, size = width, min(h, w)
        while size > 4:
            layers += [nn.Conv2d(ch, 2 * width, 3, stride=2, padding=1), nn.ReLU()]
            ch, size = 2 * width, (size + 1) // 2
        layers += [
            nn.Conv2d(ch, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim),
            nn.ReLU(),
        ]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(feature_dim, n_classes)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Kaiming-uniform weights and zero biases, drawn from ``generator``."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                nn.init.zeros_(m.bias)

    def features(self, x_img: Tensor) -> Tensor:
        """Penultimate features ``[n, feature_dim]`` of images ``[n, C, H, W]``."""
        return self.body(x_img)

    def forward(self, x_img: Tensor) -> Tensor:
        """Class logits ``[n, n_classes]``."""
        return self.head(self.features(x_img))


def _atomic_save(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@torch.no_grad()
def _accuracy(model: nn.Module, x_img: Tensor, labels: Tensor, batch: int = 1024) -> float:
    correct = sum(
        int((model(x_img[i : i + batch]).argmax(-1) == labels[i : i + batch]).sum())
        for i in range(0, len(x_img), batch)
    )
    return correct / max(len(x_img), 1)


def train_feature_classifier(
    x: Tensor,
    labels: Tensor,
    shape: tuple[int, int, int],
    steps: int = 300,
    seed: int = 0,
    cache_path: str | os.PathLike | None = None,
    *,
    batch_size: int = 128,
    lr: float = 2e-3,
    holdout: float = 0.2,
    width: int = 32,
    num_threads: int | None = None,
) -> tuple[FeatureClassifier, float]:
    """Train a ``FeatureClassifier`` on flat data ``x [N, D]`` (in [-1, 1]) with Adam.

    A random ``holdout`` fraction (from ``seed``) is held out; returns the model in eval
    mode and its held-out accuracy. With ``cache_path`` the weights and accuracy are saved
    atomically (temp file + ``os.replace``) and reloaded (``weights_only=True``) when the
    configuration matches, instead of retraining. ``num_threads`` temporarily sets torch's
    intra-op threads (restored afterwards); 1 is much faster for 8x8 digits on a busy CPU.
    """
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train_feature_classifier(x, labels, shape, steps, seed, cache_path, batch_size, lr, holdout, width)
    finally:
        torch.set_num_threads(previous)


def _train_feature_classifier(
    x: Tensor,
    labels: Tensor,
    shape: tuple[int, int, int],
    steps: int,
    seed: int,
    cache_path: str | os.PathLike | None,
    batch_size: int,
    lr: float,
    holdout: float,
    width: int,
) -> tuple[FeatureClassifier, float]:
    shape = tuple(int(s) for s in shape)
    labels = torch.as_tensor(labels).long()
    n_classes = int(labels.max()) + 1
    config = {"shape": list(shape), "n_classes": n_classes, "steps": steps, "seed": seed,
              "n": int(x.shape[0]), "batch_size": batch_size, "lr": lr, "holdout": holdout, "width": width}
    model = FeatureClassifier(shape, n_classes, width)
    path = Path(cache_path) if cache_path is not None else None
    if path is not None and path.exists():
        saved = torch.load(path, weights_only=True)
        if saved.get("config") == config:
            model.load_state_dict(saved["state_dict"])
            return model.eval(), float(saved["accuracy"])

    g = torch.Generator().manual_seed(seed)
    model.reset_parameters(g)
    x_img = x.reshape(-1, *shape).float()
    perm = torch.randperm(len(x_img), generator=g)
    n_test = int(round(holdout * len(x_img)))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        idx = train_idx[torch.randint(len(train_idx), (batch_size,), generator=g)]
        lr_now = lr * 0.5 * (1 + math.cos(math.pi * step / steps))  # cosine decay
        for group in opt.param_groups:
            group["lr"] = lr_now
        loss = nn.functional.cross_entropy(model(x_img[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    accuracy = _accuracy(model, x_img[test_idx], labels[test_idx]) if n_test else float("nan")
    if path is not None:
        _atomic_save({"config": config, "state_dict": model.state_dict(), "accuracy": accuracy}, path)
    return model, accuracy


@torch.no_grad()
def classifier_frechet_distance(
    classifier: FeatureClassifier,
    x_real: Tensor,
    x_gen: Tensor,
    shape: tuple[int, int, int],
    batch: int = 1024,
) -> float:
    """Fréchet classifier distance (FCD) between flat samples ``x_real [N, D]``, ``x_gen [M, D]``.

    ``frechet_distance`` of ``classifier.features``. NOT FID: the features come from the
    project's small CNN, not Inception-v3 (whose weights are unavailable here).
    """
    classifier.eval()

    def feats(x: Tensor) -> Tensor:
        x_img = x.reshape(-1, *shape).float()
        return torch.cat([classifier.features(x_img[i : i + batch]) for i in range(0, len(x_img), batch)])

    return frechet_distance(feats(x_real), feats(x_gen))


def inception_fid(x_real: Tensor, x_gen: Tensor, shape: tuple[int, int, int]) -> float:
    """True FID (Inception-v3 pool3 features) via ``torchmetrics``, if it and its weights exist.

    ``x_real [N, D]``, ``x_gen [M, D]`` in [-1, 1]; grayscale is repeated to 3 channels.
    Raises ``RuntimeError`` naming what is missing (the package, or the Inception weights,
    which torchmetrics downloads on first use and which this environment cannot fetch).
    Use ``classifier_frechet_distance`` (FCD, not comparable with FID) otherwise.
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as exc:
        raise RuntimeError(
            "inception_fid needs `torchmetrics[image]` (with torch-fidelity) and the Inception-v3 "
            "FID weights (pt_inception-2015-12-05); neither is available here. "
            "Use classifier_frechet_distance (FCD) instead."
        ) from exc
    try:
        metric = FrechetInceptionDistance(feature=2048, normalize=True)
    except Exception as exc:  # weights missing / download blocked
        raise RuntimeError(
            "torchmetrics is installed but the Inception-v3 FID weights could not be loaded "
            f"({type(exc).__name__}: {exc}). Use classifier_frechet_distance (FCD) instead."
        ) from exc

    def images(x: Tensor) -> Tensor:
        img = (x.reshape(-1, *shape).float().clamp(-1, 1) + 1) / 2  # [n, C, H, W] in [0, 1]
        return img.expand(-1, 3, -1, -1) if img.shape[1] == 1 else img

    metric.update(images(x_real), real=True)
    metric.update(images(x_gen), real=False)
    return float(metric.compute())
