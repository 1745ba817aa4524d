"""Tests for the throughput probe (gud.bench) and benchmarks/bench_train.py at its smallest size."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from gud.bench import probe, profile_entries

REPO = Path(__file__).resolve().parents[1]
HAVE_PEER = importlib.util.find_spec("denoising_diffusion_pytorch") is not None


def test_probe_measures_training_and_sampling(capsys):
    class Affine(nn.Module):  # a denoiser built without the global RNG
        def __init__(self, d: int) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(d))

        def forward(self, y, gamma):
            return self.w * y + 0.1 * gamma

    entries = [
        {"name": "unet-fourier", "kind": "unet", "shape": (1, 8, 8), "batch": 8, "sample_batch": 4,
         "basis": "fourier", "net_kwargs": {"base_channels": 8, "channel_mults": [1, 2]}},
        {"name": "affine", "factory": lambda: Affine(64), "shape": (1, 8, 8), "batch": 16},
    ]
    state = torch.random.get_rng_state()
    rows = probe(entries, seconds=0.6, device="cpu")
    assert torch.equal(state, torch.random.get_rng_state())  # nothing drew from the global RNG
    assert [r["name"] for r in rows] == ["unet-fourier", "affine"]
    for r in rows:
        assert r["train_steps"] >= 3 and r["nfe_calls"] >= 3
        assert r["train_img_s"] > 0 and r["nfe_img_s"] > 0 and r["fast_path"] == "cpu: eager fp32, fused AdamW"
    assert rows[1]["params"] == 64 and rows[0]["sample_batch"] == 4
    assert "train img/s" in capsys.readouterr().out


def test_probe_bad_input():
    with pytest.raises(ValueError, match="models"):
        probe([], seconds=1)
    with pytest.raises(ValueError, match="shape"):
        probe([{"name": "x", "kind": "mlp", "shape": (8, 8)}], seconds=1)
    with pytest.raises(ValueError, match="seconds"):
        probe([{"name": "x", "kind": "mlp", "shape": (1, 8, 8)}], seconds=0)
    with pytest.raises(ValueError, match="batch"):
        probe([{"name": "x", "kind": "mlp", "shape": (1, 8, 8), "batch": 0}], seconds=1)


def test_profile_entries():
    gpu = profile_entries("gpu")
    assert gpu and all(e["kind"] == "unet" and len(e["shape"]) == 3 for e in gpu)
    assert {e["shape"] for e in gpu} >= {(1, 32, 32), (3, 32, 32)}
    assert all(e["kind"] == "mlp" and e["shape"] == (1, 8, 8) for e in profile_entries("ci"))


@pytest.mark.skipif(not HAVE_PEER, reason="needs the `bench` extra (denoising-diffusion-pytorch)")
def test_bench_train_prints_the_ratio():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_train.py"), "--cpu-small",
                          "--device", "cpu", "--seconds", "0.2"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "ours/peer" in out.stdout
    row = re.search(r"^small\s+1x16x16\s+16\s+fp32\s+([\d,]+)\s+([\d,]+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s+([\d.]+)"
                    r"\s+([\d.]+)\s*$",
                    out.stdout, re.MULTILINE)
    assert row, out.stdout
    ours, peer = (int(row.group(i).replace(",", "")) for i in (1, 2))
    assert abs(ours / peer - 1) <= 0.05  # equal parameter counts
    assert float(row.group(5)) > 0


def test_elbo_probe_encodes_where_the_data_is(monkeypatch):
    """On a GPU the probe once encoded CPU images with a prior already moved to the device.
    Imitated here: ``Prior.to`` hands out copies on the ``meta`` device (mixing meta and CPU
    tensors raises as cuda and CPU do), and the ELBO itself is stubbed."""
    import gud.likelihood
    from gud import bench
    from gud.prior import Prior

    to = Prior.to
    monkeypatch.setattr(Prior, "to", lambda self, *a, **k: to(self, "meta"))
    calls = []

    def fake_elbo(model, y, schedule, *, prior, x, **kwargs):
        calls.append((prior.mean.device.type, y.device.type, x.device.type))
        return torch.zeros(y.shape[0])

    monkeypatch.setattr(gud.likelihood, "elbo", fake_elbo)
    entry = {"name": "tiny", "shape": (1, 4, 4), "kind": "mlp", "net_kwargs": {"hidden": 16, "depth": 1},
             "batch": 8, "basis": "pixel", "basis_kwargs": {}}
    out = bench.elbo_probe(entry, device=torch.device("cpu"), seconds=0.01, batch=8)
    assert calls and calls[0] == ("meta", "cpu", "cpu")  # the decoder's copy moved; the encoding did not
    assert out["images_per_s"] > 0


def test_bench_ci_step_times_ours_beside_the_plain_step(capsys):
    """Same weights, same batches: after a few steps the fused optimiser's weights differ from the
    per-tensor one's by rounding only (each Adam update is at most lr = 1e-3 in size, float32 rounds
    at 6e-8 of it), and both are timed in the same run."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_ci_step

    assert bench_ci_step.main(["--steps", "3", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    plain, ours = (float(m) for m in re.findall(r"([\d.]+) ms/step", out))
    assert plain > 0 and ours > 0
    diff = float(re.search(r"largest weight difference after 6 steps: ([\d.e+-]+)", out).group(1))
    assert diff <= 1e-6, out


def test_bench_full_gaussian_times_both_denoisers_in_the_same_run(capsys):
    """One row per dimension, the full covariance's time per image beside the Gaussian model's, and
    the full one's answer is the exact posterior mean of its case (checked on the bench's own case)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_full_gaussian

    bench_full_gaussian.main(["--dims", "8", "24", "--batch", "6", "--repeats", "1"])
    rows = [ln.split() for ln in capsys.readouterr().out.splitlines() if ln.split() and ln.split()[0].isdigit()]
    assert [r[0] for r in rows] == ["8", "24"]
    for r in rows:
        assert float(r[2]) > 0 and float(r[4]) > 0  # µs per image (Gaussian model), ms per image (full)
    full, _, y, gamma = bench_full_gaussian._case(8, 6)
    a2, out = torch.sigmoid(-gamma), full(y, gamma)  # alpha^2 of the VP process at log-SNR -gamma; batched call
    for i in range(6):
        c = a2[i].sqrt()[:, None] * full.cov * a2[i].sqrt()[None, :] + torch.diag(1 - a2[i])
        want = (1 - a2[i]).sqrt() * torch.linalg.solve(c, y[i])
        assert torch.allclose(out[i], want, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(not HAVE_PEER, reason="needs the `bench` extra (denoising-diffusion-pytorch)")
def test_peer_sizes_have_equal_parameters_and_the_layout_sizes_no_more_flops():
    """Every pair of the peer comparison has parameter counts within PARAM_TOLERANCE (counted, not
    quoted); the -layout pairs also do no more forward FLOPs per image than the peer."""
    import torch

    from gud.bench import PARAM_TOLERANCE, PEER_SIZES, count_params, forward_gflop, import_peer
    from gud.nets import UNet

    unet_cls = import_peer()[0]
    for size, (shape, _, ours_kw, peer_kw) in PEER_SIZES.items():
        c, h, w = shape
        ours = UNet(c, (h, w), c * h * w, **ours_kw)
        peer = unet_cls(channels=c, **peer_kw)
        assert abs(count_params(ours) / count_params(peer) - 1) <= PARAM_TOLERANCE, size
        if size.endswith("-layout"):
            x = torch.zeros(1, *shape)
            assert forward_gflop(ours, x, torch.zeros(1, c * h * w)) <= forward_gflop(peer, x, torch.zeros(1)), size


def test_bench_refuses_an_unknown_peer_size():
    from gud.bench import main

    with pytest.raises(ValueError, match="unknown peer size.*cifar-wide.*known: mnist"):
        main(peer_sizes=["cifar-wide"], device="cpu")


@pytest.mark.skipif(not HAVE_PEER, reason="needs the `bench` extra (denoising-diffusion-pytorch)")
def test_bench_peer_only_measures_the_named_sizes_and_nothing_else(tmp_path):
    import json

    out = subprocess.run([sys.executable, "-m", "gud", "bench", "--peer-only", "--peer-sizes", "small",
                          "--seconds", "0.2", "--device", "cpu", "--json", str(tmp_path / "b.json")],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    d = json.loads((tmp_path / "b.json").read_text())
    assert d["probe"] == [] and "elbo" not in d
    assert [r["size"] for r in d["peer"]["rows"]] == ["small"]
    assert d["peer"]["rows"][0]["ours_img_s"] > 0 and d["peer"]["rows"][0]["peer_img_s"] > 0
