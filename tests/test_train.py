"""Tests for gud.train: loss decreases, bit-exact resume, checkpoint format, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gud.nets import MLP
from gud.train import TrainConfig, load_checkpoint, train


def denoise_loss(model: nn.Module, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Toy per-example loss: predict the noise added to the batch at a random noise level."""
    gamma = torch.randn(batch.shape[0], 1, generator=generator, device=batch.device).expand_as(batch)
    eps = torch.randn(batch.shape, generator=generator, device=batch.device)
    alpha, sigma = torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()
    return (model(alpha * batch + sigma * eps, gamma) - eps).square().mean(dim=1)


def _data(n: int = 64, d: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.randn(n, d, generator=g) * torch.tensor([1.0, 0.1, 2.0, 0.5])[:d]


def _net(d: int = 4) -> MLP:
    torch.manual_seed(0)
    return MLP(d, cond_dim=d, hidden=32, depth=2, cond_embed_dim=16)


def test_loss_decreases():
    data = _data()
    model = _net()
    target = torch.randn(4)

    def fit_loss(m, batch, generator):  # regress a constant: trivially learnable
        return (m(batch, torch.zeros_like(batch)) - target).square().mean(dim=1)

    cfg = TrainConfig(steps=60, batch_size=16, lr=1e-2, warmup=5, log_every=10, checkpoint_every=1000)
    res = train(model, fit_loss, data, cfg, progress=False)
    assert res.step == 60 and len(res.loss_history) == 6
    assert res.loss_history[-1][1] < 0.2 * res.loss_history[0][1]
    assert res.throughput > 0 and res.wall_time > 0
    # EMA differs from the raw weights but is close to them
    assert any(not torch.equal(a, b) for a, b in zip(res.model.parameters(), res.ema_model.parameters()))


def test_resume_is_bit_exact(tmp_path):
    data = _data()
    cfg = TrainConfig(steps=20, batch_size=24, lr=1e-3, warmup=4, checkpoint_every=5, log_every=3, seed=7)

    full = train(_net(), denoise_loss, data, cfg, checkpoint_path=tmp_path / "full.pt", progress=False)

    calls = {"n": 0}

    def flaky_loss(model, batch, generator):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return denoise_loss(model, batch, generator)

    path = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        train(_net(), flaky_loss, data, cfg, checkpoint_path=path, progress=False)
    assert torch.load(path, weights_only=True)["step"] == 10
    resumed = train(_net(), denoise_loss, data, cfg, checkpoint_path=path, progress=False)

    assert resumed.resumed_from == 10 and resumed.step == 20
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    assert full.loss_history == resumed.loss_history
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


def test_checkpoint_loads_weights_only(tmp_path):
    path = tmp_path / "ckpt.pt"
    cfg = TrainConfig(steps=3, batch_size=8, checkpoint_every=2, log_every=1)
    res = train(_net(), denoise_loss, _data(), cfg, checkpoint_path=path, progress=False)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 3 and ckpt["config"]["batch_size"] == 8
    assert len(ckpt["loss_history"]) == 3
    model, ema = _net(), _net()
    load_checkpoint(path, model, ema)
    for a, b in zip(model.parameters(), res.model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(ema.parameters(), res.ema_model.parameters()):
        assert torch.equal(a, b)


def test_bad_data():
    cfg = TrainConfig(steps=1, batch_size=2)
    bad = _data()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        train(_net(), denoise_loss, bad, cfg, progress=False)
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        train(_net(), denoise_loss, torch.randn(4, 1, 2, 2), cfg, progress=False)


def test_loss_fn_must_be_per_example():
    cfg = TrainConfig(steps=1, batch_size=4)
    with pytest.raises(ValueError, match="per-example"):
        train(_net(), lambda m, b, g: denoise_loss(m, b, g).mean(), _data(), cfg, progress=False)
