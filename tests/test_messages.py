"""Bad input and damaged caches say what is wrong and what to do (issue 16)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gud.bases import WaveletBasis
from gud.data import load_dataset


@pytest.mark.parametrize("shape, levels, needle", [
    ((1, 7, 7), None, r"even H and W.*\(1, 7, 7\)"),
    ((1, 8, 8), 4, r"2\*\*4 = 16.*at most 3 levels"),
    ((1, 8, 8), 0, r"levels must be an integer >= 1"),
])
def test_wavelet_sizes(shape, levels, needle):
    with pytest.raises(ValueError, match=needle):
        WaveletBasis(shape, levels=levels)


def test_mirror_npz_without_an_array_names_file_and_key(offline):
    mirror = offline / "mirror"
    mirror.mkdir()
    x = np.zeros((3, 28, 28), np.uint8)
    np.savez(mirror / "mnist.npz", x_train=x, x_test=x, y_test=np.arange(3))
    with pytest.raises(ValueError, match=r"mnist\.npz has no array 'y_train'"):
        load_dataset("mnist", "train", mirror=mirror)


def test_damaged_data_cache_is_read_again(offline):
    mirror, cache = offline / "mirror", offline / "cache"
    mirror.mkdir()
    cache.mkdir()
    x = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28).astype(np.uint8)
    np.savez(mirror / "mnist.npz", x_train=x, y_train=np.arange(3), x_test=x, y_test=np.arange(3))
    (cache / "mnist-train.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.warns(UserWarning, match="damaged data cache"):
        d = load_dataset("mnist", "train", mirror=mirror, crop=None)
    assert d.x.shape == (3, 784) and d.source == "MNIST (local mirror)"


def test_unwritable_scorer_cache_only_warns(monkeypatch, tmp_path):
    import gud.metrics as M

    def refuse(obj, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(M, "_atomic_save", refuse)
    x = torch.rand(40, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with pytest.warns(UserWarning, match="could not cache the scorer's classifier"):
        model, acc = M.train_feature_classifier(x, torch.arange(40) % 2, (1, 8, 8), steps=2,
                                                cache_path=tmp_path / "ro" / "scorer.pt")
    assert isinstance(model, M.FeatureClassifier) and 0 <= acc <= 1


def test_damaged_fid_cache_is_recomputed(monkeypatch, tmp_path):
    import gud.fid as F

    calls = []

    def stats(x, shape, **kw):
        calls.append(1)
        return np.zeros(2), np.eye(2)

    monkeypatch.setattr(F, "fid_stats", stats)
    x = torch.zeros(4, 64)
    F.reference_stats("probe", x, (1, 8, 8), cache_dir=tmp_path)
    (tmp_path / "fid-probe.npz").write_bytes(b"PK\x03\x04 damaged")
    with pytest.warns(UserWarning, match="damaged FID statistics cache"):
        mu, _ = F.reference_stats("probe", x, (1, 8, 8), cache_dir=tmp_path)
    assert len(calls) == 2 and mu.shape == (2,)
    F.reference_stats("probe", x, (1, 8, 8), cache_dir=tmp_path)
    assert len(calls) == 2  # rewritten and reused
