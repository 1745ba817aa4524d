"""Tests of gud.data: digits, the search order (cache, mirror, error) and the CIFAR-10 JPEG decode."""

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from gud.data import DATASETS, DatasetNotFoundError, ImageData, decode_cifar10_jpeg, load_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_digits_shape_range_and_split(offline):
    train, test = load_dataset("digits"), load_dataset("digits", "test")
    assert isinstance(train, ImageData)
    assert train.shape == (1, 8, 8) and train.dim == 64
    assert train.x.dtype == torch.float32 and train.x.shape == (len(train), 64)
    assert train.labels.dtype == torch.long and train.labels.shape == (len(train),)
    assert len(train) + len(test) == 1797 and abs(len(train) / 1797 - 0.8) < 0.01
    assert train.x.min() == -1.0 and train.x.max() == 1.0
    assert len(torch.unique(train.x)) == 17  # 0..16 -> 17 levels
    assert train.images().shape == (len(train), 1, 8, 8)
    again = load_dataset("digits")
    assert torch.equal(train.x, again.x) and torch.equal(train.labels, again.labels)
    assert set(train.labels.tolist()) == set(range(10))


def test_digits_split_is_a_partition(offline):
    from sklearn.datasets import load_digits

    raw = load_digits().data.astype(np.float32) / 8.0 - 1.0
    both = torch.cat([load_dataset("digits").x, load_dataset("digits", "test").x]).numpy()
    assert sorted(map(bytes, both)) == sorted(map(bytes, raw))


def test_unknown_name_and_split(offline):
    with pytest.raises(ValueError, match="digits"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        load_dataset("digits", "validation")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "pcam"])
def test_missing_data_offline_is_a_clear_error(offline, name, monkeypatch):
    monkeypatch.setattr("gud.data.FASHION_SYSTEM_DIR", offline / "nowhere")
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert f"{name}-train.npz" in msg and str(offline / "cache") in msg
    if name != "pcam":
        assert "GUD_DATA_MIRROR" in msg


def test_cache_is_used_and_padding(offline, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    x = np.random.default_rng(0).integers(0, 256, size=(5, 1, 28, 28), dtype=np.uint8)
    np.savez(cache / "mnist-test.npz", x=x, y=np.arange(5), source=np.array("MNIST (test fixture)"))
    d = load_dataset("mnist", "test", pad_to=32)
    assert d.shape == (1, 32, 32) and d.source == "MNIST (test fixture)"
    img = d.images()
    assert torch.all(img[:, :, :2] == -1) and torch.all(img[:, :, :, -2:] == -1)
    assert torch.allclose(img[:, :, 2:30, 2:30], torch.from_numpy(x).float() / 127.5 - 1, atol=1e-6)
    assert load_dataset("mnist", "test", limit=2).x.shape == (2, 784)


def _write_idx(path: Path, a: np.ndarray) -> None:
    import gzip
    import struct

    header = struct.pack(">HBB", 0, 8, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + a.astype(np.uint8).tobytes())


def test_fashion_mnist_from_idx_files_in_a_mirror(offline, tmp_path, monkeypatch):
    mirror = tmp_path / "mirror" / "fashion-mnist"
    mirror.mkdir(parents=True)
    x = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(mirror / "t10k-images-idx3-ubyte.gz", x)
    _write_idx(mirror / "t10k-labels-idx1-ubyte.gz", np.array([7, 1, 2]))
    monkeypatch.setenv("GUD_DATA_MIRROR", str(tmp_path / "mirror"))
    d = load_dataset("fashion-mnist", "test")
    assert d.labels.tolist() == [7, 1, 2] and d.shape == (1, 28, 28)
    assert torch.allclose(d.x, torch.from_numpy(x.reshape(3, -1)).float() / 127.5 - 1, atol=1e-6)
    assert (tmp_path / "cache" / "fashion-mnist-test.npz").exists()


@pytest.mark.skipif(not (SHARED / "mnist.npz").exists(), reason="no local MNIST mirror")
def test_mnist_from_the_shared_mirror(offline, tmp_path):
    d = load_dataset("mnist", "test", mirror=SHARED)
    assert len(d) == 10000 and d.shape == (1, 28, 28) and d.source == "MNIST (local mirror)"
    assert d.x.min() == -1 and d.x.max() == 1
    assert d.labels[:5].tolist() == [7, 2, 1, 0, 4]  # the canonical order of the test set
    assert (tmp_path / "cache" / "mnist-test.npz").exists()
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temp files
    cached = load_dataset("mnist", "test")  # now from the cache, no mirror needed
    assert torch.equal(cached.x, d.x)


def _tiny_cifar_tarball(path: Path, per_class: int = 2) -> dict:
    from PIL import Image

    rng = np.random.default_rng(0)
    truth = {}
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for c in ("airplane", "cat", "truck"):
                for i in range(per_class):
                    img = np.full((32, 32, 3), rng.integers(0, 256, size=3), dtype=np.uint8)  # flat colour survives JPEG
                    buf = io.BytesIO()
                    Image.fromarray(img).save(buf, format="JPEG", quality=95)
                    info = tarfile.TarInfo(f"cifar10-jpeg/{split}/{c}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
                    truth[(split, c, i)] = img
    return truth


def test_cifar10_jpeg_mirror_decode_and_cache(offline, tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    truth = _tiny_cifar_tarball(mirror / "cifar10-jpeg.tar.gz")
    arrays = decode_cifar10_jpeg(mirror / "cifar10-jpeg.tar.gz")
    x, y = arrays["train"]
    assert x.shape == (6, 3, 32, 32) and x.dtype == np.uint8
    assert sorted(y.tolist()) == [0, 0, 3, 3, 9, 9]  # airplane, cat, truck in the standard order

    d = load_dataset("cifar10", "test", mirror=mirror)
    assert d.shape == (3, 32, 32) and d.x.shape == (6, 3072) and d.source == "CIFAR-10 (JPEG mirror)"
    assert d.x.min() >= -1 and d.x.max() <= 1
    # both splits cached from one read of the tarball; the cache is then enough
    assert {p.name for p in (tmp_path / "cache").iterdir()} == {"cifar10-train.npz", "cifar10-test.npz"}
    with np.load(tmp_path / "cache" / "cifar10-test.npz", allow_pickle=False) as f:
        assert str(f["source"]) == "CIFAR-10 (JPEG mirror)"
    # pixel values survive JPEG to within a few levels
    first_cat = d.images()[d.labels == 3][0]
    colours = [truth[("test", "cat", i)][0, 0] for i in range(2)]
    got = ((first_cat[:, 0, 0] + 1) * 127.5).numpy()
    assert min(np.abs(got - c).max() for c in colours) <= 4
    assert torch.equal(load_dataset("cifar10", "test").x, d.x)


def test_pcam_crops_are_deterministic(offline, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    x = np.random.default_rng(1).integers(0, 256, size=(4, 3, 96, 96), dtype=np.uint8)
    np.savez(cache / "pcam-test.npz", x=x, y=np.array([0, 1, 0, 1]), source=np.array("PatchCamelyon (fixture)"))
    a, b = load_dataset("pcam", "test"), load_dataset("pcam", "test")
    assert a.shape == (3, 32, 32) and torch.equal(a.x, b.x)
    assert load_dataset("pcam", "test", crop=None).shape == (3, 96, 96)


def test_known_names():
    assert set(DATASETS) == {"digits", "mnist", "fashion-mnist", "cifar10", "pcam"}
