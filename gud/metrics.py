"""Sample-quality metrics: field statistics for image extension, Fréchet and kernel distances.

Field statistics take ``fields [n, H, W]`` (one channel) and are non-periodic: only pairs
of pixels that both lie inside the image are used, so they apply to extended images.

The Fréchet classifier distance (FCD) is the FID formula applied to the penultimate
features of a small CNN (``FeatureClassifier``) trained here on the data set itself.
**It is not FID**: FID (:mod:`gud.fid`, the ``fid`` extra) uses Inception-v3 features, so
FCD values are not comparable with published FID numbers. They are
comparable with each other for one classifier (same data, seed and training steps).
FCD mis-ranks on 8x8 digits: a classifier trained on clean digits only barely responds to
noise, so over-dispersed clamped noise scores better than Gaussian blobs.

The kernel classifier distance (KCD, :class:`SampleScorer`) is the recommended score: the
unbiased MMD² with KID's cubic polynomial kernel (Bińkowski et al. 2018) on standardised
penultimate features of a *noise-aware* classifier, trained with an extra class for noisy
and blurred copies of the data, so that its features respond to noise and blur. It is not
KID (no Inception features) and is comparable only for one scorer (same data and settings).
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from scipy import stats
from torch import Tensor, nn

from .frechet import frechet_distance, gaussian_frechet_distance  # public here too (FID's formula)

__all__ = [
    "FeatureClassifier",
    "SampleScore",
    "SampleChecks",
    "SampleScorer",
    "classifier_frechet_distance",
    "column_profile",
    "frechet_distance",
    "gaussian_frechet_distance",
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


def _check_samples(x: Tensor, name: str, dim: int | None = None, min_n: int = 1) -> Tensor:
    """``x`` as a float tensor ``[n, D]``; ``ValueError`` naming ``name`` if it is not one."""
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be flat samples [n, D], got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has D = {x.shape[1]} per sample, expected {dim}")
    if x.shape[0] < min_n:
        raise ValueError(f"{name} needs at least {min_n} samples, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x.float()


def _blur(x_img: Tensor, sigma: Tensor, radius: int = 3) -> Tensor:
    """Separable Gaussian blur of ``x_img [b, C, H, W]`` with per-image widths ``sigma [b]`` (pixels)."""
    b, c, h, w = x_img.shape
    t = torch.arange(-radius, radius + 1, dtype=x_img.dtype)
    k = torch.exp(-0.5 * (t / sigma[:, None]) ** 2)  # [b, 2r+1]
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [b*C, 2r+1]
    y = nn.functional.pad(x_img.reshape(1, b * c, h, w), (radius,) * 4, mode="replicate")
    y = nn.functional.conv2d(y, k[:, None, None, :], groups=b * c)
    y = nn.functional.conv2d(y, k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def _corrupt(x_img: Tensor, generator: torch.Generator) -> Tensor:
    """Noisy or blurred copies of ``x_img [b, C, H, W]`` (half each, at random).

    Noise: ``clamp(x + s eps, -1, 1)`` with ``s`` log-uniform in [0.1, 1.5]; blur: Gaussian of
    width uniform in [0.5, 1.5] pixels. Used as the extra "corrupted" class of a noise-aware
    classifier, so that its features respond to noise and blur.
    """
    b = x_img.shape[0]
    noisy = torch.rand(b, generator=generator) < 0.5
    s = torch.exp(torch.empty(b).uniform_(math.log(0.1), math.log(1.5), generator=generator))
    eps = torch.randn(x_img.shape, generator=generator)
    width = torch.empty(b).uniform_(0.5, 1.5, generator=generator)
    with_noise = (x_img + s[:, None, None, None] * eps).clamp(-1, 1)
    return torch.where(noisy[:, None, None, None], with_noise, _blur(x_img, width))


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
    corrupt: float = 0.0,
    num_threads: int | None = None,
) -> tuple[FeatureClassifier, float]:
    """Train a ``FeatureClassifier`` on flat data ``x [N, D]`` (in [-1, 1]) with Adam.

    A random ``holdout`` fraction (from ``seed``) is held out; returns the model in eval
    mode and its held-out accuracy. With ``cache_path`` the weights and accuracy are saved
    atomically (temp file + ``os.replace``) and reloaded (``weights_only=True``) when the
    configuration matches, instead of retraining. ``num_threads`` temporarily sets torch's
    intra-op threads (restored afterwards); 1 is much faster for 8x8 digits on a busy CPU.

    ``corrupt > 0`` trains a noise-aware classifier: that fraction of every batch is replaced
    by noisy or blurred copies labelled with an extra last class ``n_classes`` ("corrupted"),
    so the model has ``n_classes + 1`` outputs; the accuracy counts a clean held-out image
    called "corrupted" as wrong.
    """
    x = _check_samples(x, "x", math.prod(shape))
    labels = torch.as_tensor(labels).long()
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape [{x.shape[0]}], got {tuple(labels.shape)}")
    if not 0.0 <= corrupt < 1.0:
        raise ValueError(f"corrupt must be a fraction in [0, 1), got {corrupt}")
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _train_feature_classifier(
            x, labels, shape, steps, seed, cache_path, batch_size, lr, holdout, width, corrupt
        )
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
    corrupt: float,
) -> tuple[FeatureClassifier, float]:
    shape = tuple(int(s) for s in shape)
    n_classes = int(labels.max()) + 1
    config = {"shape": list(shape), "n_classes": n_classes, "steps": steps, "seed": seed,
              "n": int(x.shape[0]), "batch_size": batch_size, "lr": lr, "holdout": holdout, "width": width}
    if corrupt:  # only then, so that caches of plain classifiers stay valid
        config["corrupt"] = corrupt
    n_corrupt = int(round(corrupt * batch_size))
    model = FeatureClassifier(shape, n_classes + 1 if corrupt else n_classes, width)
    path = Path(cache_path) if cache_path is not None else None
    if path is not None and path.exists():
        try:
            saved = torch.load(path, weights_only=True)
            if saved.get("config") == config:
                model.load_state_dict(saved["state_dict"])
                return model.eval(), float(saved["accuracy"])
        except Exception as exc:  # noqa: BLE001 - a damaged cache is retrained and rewritten
            warnings.warn(f"ignoring the damaged scorer cache {path} ({type(exc).__name__}: {exc}); "
                          "training the classifier again", stacklevel=3)
            model = FeatureClassifier(shape, n_classes + 1 if corrupt else n_classes, width)

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
        xb, yb = x_img[idx], labels[idx]
        if n_corrupt:
            xb = torch.cat([_corrupt(xb[:n_corrupt], g), xb[n_corrupt:]])
            yb = torch.cat([torch.full((n_corrupt,), n_classes), yb[n_corrupt:]])
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    accuracy = _accuracy(model, x_img[test_idx], labels[test_idx]) if n_test else float("nan")
    if path is not None:
        try:  # a cache only: an unwritable folder (GUD_DATA) costs a retraining next time, nothing else
            _atomic_save({"config": config, "state_dict": model.state_dict(), "accuracy": accuracy}, path)
        except OSError as exc:
            warnings.warn(f"could not cache the scorer's classifier in {path.parent} ({exc.strerror or exc}); "
                          "it will be trained again next time", stacklevel=3)
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
    project's small CNN, not Inception-v3 (whose weights are unavailable here). With a
    classifier trained on clean data it ranks clamped noise above Gaussian blobs on 8x8
    digits; prefer :class:`SampleScorer`.
    """
    d = math.prod(shape)
    x_real, x_gen = _check_samples(x_real, "x_real", d, min_n=2), _check_samples(x_gen, "x_gen", d, min_n=2)
    classifier.eval()

    def feats(x: Tensor) -> Tensor:
        x_img = x.reshape(-1, *shape).float()
        return torch.cat([classifier.features(x_img[i : i + batch]) for i in range(0, len(x_img), batch)])

    return frechet_distance(feats(x_real), feats(x_gen))


def _cubic_kernel(a: Tensor, b: Tensor) -> Tensor:
    """KID's polynomial kernel ``k(a, b) = (a . b / k + 1)^3`` of features ``[n, k]``, ``[m, k]`` -> ``[n, m]``."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


@dataclass(frozen=True)
class SampleScore:
    """A kernel classifier distance with its standard error (jackknife over the scored samples)."""

    kcd: float  # unbiased MMD^2 estimate: 0 in expectation for samples of the reference distribution
    stderr: float  # jackknife standard error; the reference set is held fixed
    n: int  # number of scored samples


class SampleScorer:
    """Kernel classifier distance (KCD) of samples from a reference set, lower is better.

    KCD is the unbiased estimate of MMD^2 (Gretton et al. 2012, eq. 3) with the cubic kernel
    ``k(a, b) = (a . b / k + 1)^3`` of KID (Bińkowski et al. 2018), applied to the ``k``
    penultimate features of ``classifier``, standardised with the reference features' mean and
    standard deviation (floored at 0.1 times their mean, for features dead on the reference).
    Its expectation is 0 for samples from the reference distribution and does not depend on
    the number of samples, so negative values occur and values at different ``n`` compare.
    The standard error is the delete-one jackknife over the scored samples (conservative near
    0, where the estimator is degenerate); the reference's own sampling error is a constant
    offset shared by all scored sets. Held-out data score slightly above 0 when the reference
    is the classifier's own training data (by about 0.005 on digits, 1-2 standard errors at
    n = 1000); a held-out ``x_reference`` avoids that gap, at the price of its own sampling
    noise if it is small.

    Build it once per data set with :meth:`train` (a noise-aware classifier, cached), or from
    any ``FeatureClassifier``. The reference (at most ``max_reference`` samples, a random
    subset from ``seed`` if there are more) and its kernel mean are computed once, on the
    classifier's device for features and in float64 on the CPU for the kernel.
    """

    def __init__(
        self,
        classifier: FeatureClassifier,
        x_reference: Tensor,
        shape: tuple[int, int, int],
        *,
        accuracy: float = float("nan"),
        max_reference: int = 10_000,
        seed: int = 0,
        batch: int = 1024,
    ) -> None:
        self.classifier = classifier.eval()
        self.shape = tuple(int(s) for s in shape)
        self.dim = math.prod(self.shape)
        self.accuracy = accuracy  # held-out accuracy of the classifier, for reports
        self.batch = batch
        x_ref = _check_samples(x_reference, "x_reference", self.dim, min_n=2)
        if len(x_ref) > max_reference:
            keep = torch.randperm(len(x_ref), generator=torch.Generator().manual_seed(seed))[:max_reference]
            x_ref = x_ref[keep.to(x_ref.device)]
        raw = self._raw_features(x_ref)
        self.mean = raw.mean(0)  # [k]
        std = raw.std(0)
        if float(std.max()) == 0.0:
            raise ValueError("x_reference: the classifier's features are constant on it (untrained classifier?)")
        self.std = std.clamp_min(0.1 * float(std.mean()))  # [k]
        self.reference = (raw - self.mean) / self.std  # [m, k]
        m = len(self.reference)
        total = sum(
            float(_cubic_kernel(self.reference[i : i + batch], self.reference).sum()) for i in range(0, m, batch)
        )
        diag = float(((self.reference**2).sum(1) / self.reference.shape[1] + 1.0).pow(3).sum())
        self.reference_term = (total - diag) / (m * (m - 1))  # mean of k(r_i, r_j), i != j

    @classmethod
    def train(
        cls,
        x: Tensor,
        labels: Tensor,
        shape: tuple[int, int, int],
        *,
        x_reference: Tensor | None = None,
        steps: int = 800,
        seed: int = 0,
        corrupt: float = 0.5,
        cache_path: str | os.PathLike | None = None,
        num_threads: int | None = None,
        max_reference: int = 10_000,
    ) -> SampleScorer:
        """Train a noise-aware classifier on ``x [N, D]``, ``labels [N]`` (``train_feature_classifier``
        with ``corrupt``; cached at ``cache_path``) and score against ``x_reference`` (default ``x``)."""
        classifier, accuracy = train_feature_classifier(
            x, labels, shape, steps=steps, seed=seed, cache_path=cache_path, corrupt=corrupt,
            num_threads=num_threads,
        )
        return cls(classifier, x if x_reference is None else x_reference, shape, accuracy=accuracy,
                   max_reference=max_reference, seed=seed)

    @torch.no_grad()
    def _raw_features(self, x: Tensor) -> Tensor:
        device = next(self.classifier.parameters()).device
        x_img = x.reshape(-1, *self.shape)
        return torch.cat([
            self.classifier.features(x_img[i : i + self.batch].to(device)).double().cpu()
            for i in range(0, len(x_img), self.batch)
        ])

    def features(self, x: Tensor) -> Tensor:
        """Standardised features ``[n, k]`` (float64, CPU) of flat samples ``x [n, D]``."""
        x = _check_samples(x, "x", self.dim)
        return (self._raw_features(x) - self.mean) / self.std

    def score(self, x_gen: Tensor) -> SampleScore:
        """KCD of flat samples ``x_gen [n, D]`` (``n >= 3``) in [-1, 1], with its jackknife standard error."""
        x_gen = _check_samples(x_gen, "x_gen", self.dim, min_n=3)
        g = (self._raw_features(x_gen) - self.mean) / self.std  # [n, k]
        n, m, b = len(g), len(self.reference), self.batch
        diag = ((g**2).sum(1) / g.shape[1] + 1.0) ** 3  # [n] k(g_i, g_i)
        rows = torch.cat([_cubic_kernel(g[i : i + b], g).sum(1) for i in range(0, n, b)]) - diag  # [n], j != i
        cols = sum(_cubic_kernel(self.reference[i : i + b], g).sum(0) for i in range(0, m, b))  # [n]
        s_gg, s_rg = rows.sum(), cols.sum()
        kcd = self.reference_term + s_gg / (n * (n - 1)) - 2 * s_rg / (m * n)
        # Delete-one jackknife over the scored samples: drop sample i from both sums.
        loo = self.reference_term + (s_gg - 2 * rows) / ((n - 1) * (n - 2)) - 2 * (s_rg - cols) / (m * (n - 1))
        stderr = math.sqrt((n - 1) / n * float(((loo - loo.mean()) ** 2).sum()))
        return SampleScore(float(kcd), stderr, n)


# --------------------------------------------------------------------------- copies and collapse

#: Share of held-out images that lie closer to the training set than the memorisation threshold.
MEMORISATION_QUANTILE = 0.05
#: A set of samples is flagged as memorised when its rate exceeds this (twice the held-out rate)
#: by more than two binomial standard errors.
MEMORISATION_FLAG = 2 * MEMORISATION_QUANTILE
#: A set of samples is flagged as collapsed when its class coverage stays below this by more than
#: two standard errors: at least a fifth of the class mass is misplaced.
COVERAGE_FLAG = 0.8


def _nearest_sq_distance(x: Tensor, ref: Tensor, batch: int = 512) -> Tensor:
    """Squared Euclidean distance of every row of ``x [n, D]`` to its nearest row of ``ref [m, D]`` (float64)."""
    x, ref = x.double(), ref.double()
    r2 = (ref ** 2).sum(1)
    out = []
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        d = (xb ** 2).sum(1, keepdim=True) - 2 * xb @ ref.T + r2
        out.append(d.min(1).values.clamp_min(0))
    return torch.cat(out)


class SampleChecks:
    """Two failures a kernel distance to held-out data cannot see.

    * **memorisation rate**: the share of samples closer (Euclidean, pixel space) to some training
      image than all but :data:`MEMORISATION_QUANTILE` of ``x_heldout`` are; about that share
      for fresh samples of the data distribution, 1 for copies of training images.  Flagged when
      it exceeds :data:`MEMORISATION_FLAG` by more than two binomial standard errors;
    * **class coverage**: ``1 - TV(p, q)`` between the data classes the score's classifier assigns
      to the samples (``p``) and to the reference images (``q``), the "corrupted" class of a
      noise-aware classifier (``corrupted=True``) left out; 1 for a faithful class mix, about
      ``q_k`` for samples of one class k.  Flagged when it stays below :data:`COVERAGE_FLAG` by more than two standard errors.

    ``checks(x) -> {"memorised", "memorised_se", "coverage", "coverage_se", "flags"}``.
    """

    def __init__(self, classifier: nn.Module, shape, x_train: Tensor, x_heldout: Tensor, x_reference: Tensor,
                 *, corrupted: bool = True, batch: int = 1024) -> None:
        self.classifier = classifier.eval()
        self.shape = tuple(int(s) for s in shape)
        self.batch = batch
        n_out = int(getattr(classifier, "n_classes", 0)) or int(classifier.head.out_features)
        #: data classes: all outputs but the last of a noise-aware classifier (``corrupted=True``)
        self.n_data_classes = n_out - 1 if corrupted else n_out
        self.x_train = _check_samples(x_train, "x_train", math.prod(self.shape), min_n=2)
        held = _check_samples(x_heldout, "x_heldout", math.prod(self.shape), min_n=20)
        self.threshold = float(torch.quantile(_nearest_sq_distance(held, self.x_train), MEMORISATION_QUANTILE))
        self.q = self._classes(_check_samples(x_reference, "x_reference", math.prod(self.shape), min_n=2))

    @torch.no_grad()
    def _classes(self, x: Tensor) -> Tensor:
        """Class frequencies ``[K]`` of the data classes (argmax over the data classes only: the
        extra "corrupted" class of a noise-aware classifier measures quality, which KCD scores,
        not coverage)."""
        device = next(self.classifier.parameters()).device
        img = x.reshape(-1, *self.shape)
        k = self.n_data_classes
        pred = torch.cat([self.classifier(img[i:i + self.batch].to(device))[:, :k].argmax(1).cpu()
                          for i in range(0, len(img), self.batch)])
        return torch.bincount(pred, minlength=k).double() / len(pred)

    def __call__(self, x: Tensor) -> dict:
        x = _check_samples(x, "x", math.prod(self.shape), min_n=2)
        n = len(x)
        rate = float((_nearest_sq_distance(x, self.x_train) < self.threshold).double().mean())
        rate_se = math.sqrt(max(rate * (1 - rate), MEMORISATION_QUANTILE * (1 - MEMORISATION_QUANTILE)) / n)
        p = self._classes(x)
        coverage = float(torch.minimum(p, self.q).sum())
        coverage_se = 0.5 * float(torch.sqrt((p * (1 - p)).sum() / n))
        flags = []
        if rate - 2 * rate_se > MEMORISATION_FLAG:
            flags.append("memorised")
        if coverage + 2 * max(coverage_se, 0.5 / math.sqrt(n)) < COVERAGE_FLAG:
            flags.append("collapsed")
        return {"memorised": rate, "memorised_se": rate_se, "coverage": coverage, "coverage_se": coverage_se,
                "flags": ",".join(flags)}
