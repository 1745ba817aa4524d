"""Image data sets, flattened to ``x [N, D]`` in [-1, 1] with a known image shape ``(C, H, W)``.

Names: ``digits`` (scikit-learn's 8x8 digits, embedded, the CI default), ``mnist``,
``fashion-mnist``, ``cifar10`` and ``pcam`` (PatchCamelyon, 32x32 crops of 96x96 tiles).

Where the data come from, in order:

1. ``root`` (default ``<repo>/data``, or env ``GUD_DATA``): cached decoded arrays
   ``<name>-<split>.npz`` with keys ``x`` (uint8 ``[N, C, H, W]``), ``y`` (``[N]``) and
   ``source`` (a string naming the origin, so every number can be labelled);
2. a local mirror folder (argument ``mirror`` or env ``GUD_DATA_MIRROR``), see
   ``shared/data/README.md``: ``mnist.npz``, ``cifar10-jpeg.tar.gz`` (lossy JPEG copy,
   labelled "CIFAR-10 (JPEG mirror)"), Fashion-MNIST IDX ``.gz`` files (also looked for in
   ``/usr/share/datasets/fashion-mnist``, Debian's ``dataset-fashion-mnist``);
3. a torchvision download, if torchvision is importable and downloads are allowed
   (``download=True`` and env ``GUD_OFFLINE`` unset);
4. otherwise :class:`DatasetNotFoundError` says which files are missing, where they were
   looked for and how to provide them.

Decoded arrays from 2. and 3. are cached in ``root`` (atomic writes).
Pixels are scaled as ``x = 2 * v / v_max - 1`` (``v_max`` = 255, or 16 for digits).
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import tarfile
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "ImageData",
    "data_root",
    "decode_cifar10_jpeg",
    "load_dataset",
    "mirror_dirs",
]

REPO = Path(__file__).resolve().parents[1]

# name -> (image shape (C, H, W) as stored, human-readable name)
DATASETS: dict[str, tuple[tuple[int, int, int], str]] = {
    "digits": ((1, 8, 8), "scikit-learn digits (8x8)"),
    "mnist": ((1, 28, 28), "MNIST"),
    "fashion-mnist": ((1, 28, 28), "Fashion-MNIST"),
    "cifar10": ((3, 32, 32), "CIFAR-10"),
    "pcam": ((3, 96, 96), "PatchCamelyon"),
}
SPLITS = ("train", "test")
DIGITS_SEED = 0  # fixed permutation for the digits 80/20 split
PCAM_CROP_SEED = 0  # fixed crop positions for PCam

MNIST_URL = "http://yann.lecun.com/exdb/mnist/ (or torchvision.datasets.MNIST)"
FASHION_URL = "https://github.com/zalandoresearch/fashion-mnist (or `apt-get install dataset-fashion-mnist`)"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html (or torchvision.datasets.CIFAR10)"
PCAM_URL = "https://github.com/basveeling/pcam"
CIFAR_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


class DatasetNotFoundError(FileNotFoundError):
    """The data set is neither cached, nor in a local mirror, nor downloadable here."""


@dataclass
class ImageData:
    """A flattened image data set: ``x [N, D]`` float32 in [-1, 1], ``labels [N]`` long."""

    x: torch.Tensor  # [N, D], D = C*H*W
    labels: torch.Tensor  # [N]
    shape: tuple[int, int, int]  # (C, H, W)
    name: str
    source: str  # where the pixels came from, e.g. "CIFAR-10 (JPEG mirror)"

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def dim(self) -> int:
        return self.x.shape[1]

    def images(self) -> torch.Tensor:
        """The data as images ``[N, C, H, W]`` (a view)."""
        return self.x.view(-1, *self.shape)


# ----------------------------------------------------------------------------- locations


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``root``, else env ``GUD_DATA``, else ``<repo>/data``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("GUD_DATA")
    return Path(env) if env else REPO / "data"


def mirror_dirs(mirror: str | os.PathLike | None = None) -> list[Path]:
    """Local mirror folders to search: ``mirror``, else env ``GUD_DATA_MIRROR`` (``os.pathsep``-separated)."""
    if mirror is not None:
        return [Path(mirror)]
    env = os.environ.get("GUD_DATA_MIRROR", "")
    return [Path(p) for p in env.split(os.pathsep) if p]


def _download_allowed(download: bool) -> bool:
    return download and os.environ.get("GUD_OFFLINE", "") in ("", "0")


# ----------------------------------------------------------------------------- cache


def _cache_path(root: Path, name: str, split: str) -> Path:
    return root / f"{name}-{split}.npz"


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The cached arrays, or None (with a warning) when the file is damaged: it is then re-read from
    the mirror or the download and rewritten."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["x"], f["y"], str(f["source"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"ignoring the damaged data cache {path} ({type(exc).__name__}: {exc}); reading the data "
                      "set again", stacklevel=3)
        return None


def _write_cache(path: Path, x: np.ndarray, y: np.ndarray, source: str) -> None:
    """Write ``x, y, source`` to ``path`` atomically; warn (don't fail) if ``root`` is read-only."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, x=x, y=y, source=np.array(source))
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        warnings.warn(f"could not cache {path.name} in {path.parent}: {e}", stacklevel=3)


# ----------------------------------------------------------------------------- readers


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped), the MNIST file format."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()


def _find_idx(dirs: list[Path], split: str) -> tuple[Path, Path] | None:
    for d in dirs:
        images, labels = (d / f for f in IDX_FILES[split])
        if images.exists() and labels.exists():
            return images, labels
    return None


def _from_mirror(name: str, split: str, mirrors: list[Path], root: Path):
    """Return ``(x uint8 [N, C, H, W], y [N], source)`` from a local mirror, or None."""
    if name == "mnist":
        for m in mirrors:
            if (m / "mnist.npz").exists():
                try:
                    with np.load(m / "mnist.npz", allow_pickle=False) as f:
                        missing = [k for k in (f"x_{split}", f"y_{split}") if k not in f.files]
                        if missing:
                            raise ValueError(
                                f"the MNIST mirror {m / 'mnist.npz'} has no array {' or '.join(map(repr, missing))} "
                                f"(it holds {', '.join(map(repr, f.files)) or 'nothing'}; expected x_train, y_train, "
                                "x_test, y_test as in keras' mnist.npz): replace the file or unset GUD_DATA_MIRROR")
                        x, y = f[f"x_{split}"], f[f"y_{split}"]
                except (OSError, zipfile.BadZipFile, EOFError) as exc:
                    raise ValueError(f"the MNIST mirror {m / 'mnist.npz'} cannot be read ({type(exc).__name__}: {exc}): "
                                     "replace the file or unset GUD_DATA_MIRROR") from exc
                return x[:, None], y, "MNIST (local mirror)"
        found = _find_idx([m / "mnist" for m in mirrors] + mirrors, split)
        if found:
            return _read_idx(found[0])[:, None], _read_idx(found[1]), "MNIST (local mirror, IDX)"
    elif name == "fashion-mnist":
        dirs = [m / "fashion-mnist" for m in mirrors] + mirrors + [FASHION_SYSTEM_DIR]
        found = _find_idx(dirs, split)
        if found:
            return _read_idx(found[0])[:, None], _read_idx(found[1]), "Fashion-MNIST (IDX files)"
    elif name == "cifar10":
        for m in mirrors:
            tar = m / "cifar10-jpeg.tar.gz"
            if tar.exists():
                arrays = decode_cifar10_jpeg(tar)
                source = "CIFAR-10 (JPEG mirror)"
                for s, (x, y) in arrays.items():  # cache both splits: the tarball is read once
                    _write_cache(_cache_path(root, name, s), x, y, source)
                return (*arrays[split], source)
    return None


def decode_cifar10_jpeg(tar_path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Decode an ImageFolder tarball ``cifar10-jpeg/{train,test}/<class>/NNNN.jpg`` with Pillow.

    Returns ``{split: (x uint8 [N, 3, 32, 32], y int64 [N])}``: sorted by (class, file name),
    then shuffled by a fixed permutation so that any prefix (``limit``) mixes the classes.
    """
    from PIL import Image

    items: dict[str, list[tuple[int, str, np.ndarray]]] = {s: [] for s in SPLITS}
    with tarfile.open(tar_path, "r:*") as tar:
        for member in tar:
            if not member.isfile() or not member.name.lower().endswith((".jpg", ".jpeg", ".png")):
                continue
            parts = Path(member.name).parts
            if len(parts) < 3 or parts[-3] not in items or parts[-2] not in CIFAR_CLASSES:
                continue
            f = tar.extractfile(member)
            assert f is not None
            with Image.open(io.BytesIO(f.read())) as im:
                img = np.asarray(im.convert("RGB"), dtype=np.uint8)
            items[parts[-3]].append((CIFAR_CLASSES.index(parts[-2]), parts[-1], img))
    out = {}
    for split, rows in items.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
        if rows:
            x = np.stack([r[2] for r in rows]).transpose(0, 3, 1, 2).copy()
        else:
            x = np.zeros((0, 3, 32, 32), np.uint8)
        out[split] = (x, np.array([r[0] for r in rows], dtype=np.int64))
    return out


def _from_torchvision(name: str, split: str, root: Path):
    """Download with torchvision; return ``(x uint8 [N, C, H, W], y [N], source)`` or None."""
    try:
        import torchvision.datasets as tvd
    except Exception:  # not installed, or broken beside this torch build
        return None
    where = root / "torchvision"
    train = split == "train"
    try:
        if name == "mnist":
            ds = tvd.MNIST(where, train=train, download=True)
            x, y = ds.data.numpy()[:, None], ds.targets.numpy()
        elif name == "fashion-mnist":
            ds = tvd.FashionMNIST(where, train=train, download=True)
            x, y = ds.data.numpy()[:, None], ds.targets.numpy()
        elif name == "cifar10":
            ds = tvd.CIFAR10(where, train=train, download=True)
            x, y = np.asarray(ds.data).transpose(0, 3, 1, 2), np.asarray(ds.targets)
        elif name == "pcam":  # needs h5py (and gdown); split "test" as in the paper's tiles
            ds = tvd.PCAM(where, split=split, download=True)
            xs, ys = zip(*((np.asarray(img.convert("RGB")), t) for img, t in ds))
            x, y = np.stack(xs).transpose(0, 3, 1, 2), np.asarray(ys)
        else:
            return None
    except Exception as e:  # no network, host down, missing optional dependency...
        warnings.warn(f"torchvision could not download {name}: {e}", stacklevel=3)
        return None
    return np.ascontiguousarray(x, dtype=np.uint8), y, f"{DATASETS[name][1]} (torchvision download)"


def _not_found(name: str, split: str, root: Path, mirrors: list[Path], download: bool) -> DatasetNotFoundError:
    cache = _cache_path(root, name, split)
    wanted = {
        "mnist": (["mnist.npz (keys x_train, y_train, x_test, y_test)", "or mnist/<IDX .gz files>"], MNIST_URL),
        "fashion-mnist": ([" and ".join(IDX_FILES[split]), f"(also looked in {FASHION_SYSTEM_DIR})"], FASHION_URL),
        "cifar10": (["cifar10-jpeg.tar.gz (ImageFolder of JPEGs)"], CIFAR_URL),
        "pcam": ([f"{cache.name} with x uint8 [N, 3, 96, 96] tiles, y [N]"], PCAM_URL),
    }[name]
    looked = ", ".join(str(m) for m in mirrors) if mirrors else "none (GUD_DATA_MIRROR is not set)"
    if name == "pcam":
        hint = (
            f"PatchCamelyon is not available offline. Download it from {PCAM_URL}, decode the "
            f"tiles to {cache} (keys x, y, source), or install torchvision with h5py and gdown "
            "where the network allows."
        )
    else:
        hint = (
            f"Provide {' '.join(wanted[0])} in a folder and set GUD_DATA_MIRROR to it, "
            f"or put {cache.name} in the cache folder (GUD_DATA), "
            f"or allow a torchvision download (network; source: {wanted[1]})."
        )
    tv = "torchvision download disabled" if not _download_allowed(download) else "torchvision unavailable or failed"
    return DatasetNotFoundError(
        f"data set {name!r} ({split}) not found. Looked for the cache {cache}; "
        f"local mirror folders: {looked}; {tv}. {hint}"
    )


# ----------------------------------------------------------------------------- entry point


def _digits(split: str) -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.datasets import load_digits

    d = load_digits()
    perm = np.random.default_rng(DIGITS_SEED).permutation(len(d.target))
    n_train = int(round(0.8 * len(perm)))
    idx = perm[:n_train] if split == "train" else perm[n_train:]
    x = d.images[idx].astype(np.uint8)[:, None]  # values 0..16
    return x, d.target[idx], "scikit-learn digits (embedded)"


def _pcam_crops(x: np.ndarray, crop: int) -> np.ndarray:
    """One ``crop x crop`` window per tile at positions fixed by ``PCAM_CROP_SEED``."""
    n, _, h, w = x.shape
    rng = np.random.default_rng(PCAM_CROP_SEED)
    rows = rng.integers(0, h - crop + 1, size=n)
    cols = rng.integers(0, w - crop + 1, size=n)
    return np.stack([x[i, :, r : r + crop, c : c + crop] for i, (r, c) in enumerate(zip(rows, cols))])


def load_dataset(
    name: str = "digits",
    split: str = "train",
    root: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    *,
    pad_to: int | None = None,
    crop: int | None = 32,
    limit: int | None = None,
    download: bool = True,
) -> ImageData:
    """Load a data set as flat ``x [N, D]`` in [-1, 1] (see the module docstring for the search order).

    ``pad_to`` pads MNIST-like images symmetrically with the background value -1 (28 -> 32);
    ``crop`` is the PCam crop size (``None``: full 96x96 tiles); ``limit`` keeps the first
    ``limit`` examples (the order is fixed); ``download=False`` forbids network access.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if limit is not None and int(limit) < 1:
        raise ValueError(f"limit must be None or >= 1; got {limit}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    root_dir = data_root(root)
    mirrors = mirror_dirs(mirror)
    v_max = 255.0

    if name == "digits":
        x, y, source = _digits(split)
        v_max = 16.0
    else:
        cache = _cache_path(root_dir, name, split)
        found = _read_cache(cache) if cache.exists() else None
        if found is None:
            found = _from_mirror(name, split, mirrors, root_dir)
            if found is None and _download_allowed(download):
                found = _from_torchvision(name, split, root_dir)
            if found is None:
                raise _not_found(name, split, root_dir, mirrors, download)
            if not cache.exists():
                _write_cache(cache, *found)
        x, y, source = found

    if limit is not None:
        x, y = x[:limit], y[:limit]
    if name == "pcam" and crop is not None:
        x = _pcam_crops(x, crop)
    xt = torch.from_numpy(np.ascontiguousarray(x)).float() * (2.0 / v_max) - 1.0  # [N, C, H, W]
    if pad_to is not None:
        h, w = xt.shape[-2:]
        if pad_to < max(h, w):
            raise ValueError(f"pad_to={pad_to} is smaller than the image ({h}x{w})")
        top, left = (pad_to - h) // 2, (pad_to - w) // 2
        pad = (left, pad_to - w - left, top, pad_to - h - top)
        xt = torch.nn.functional.pad(xt, pad, value=-1.0)
    shape = tuple(int(s) for s in xt.shape[1:])
    return ImageData(
        x=xt.reshape(xt.shape[0], -1).contiguous(),
        labels=torch.as_tensor(np.asarray(y), dtype=torch.long),
        shape=shape,  # type: ignore[arg-type]
        name=name,
        source=source,
    )
