"""Tests for gud.train: loss decreases, bit-exact resume, checkpoint format, fast path, deadline,
held-out evaluation and early stopping, bad input."""

from __future__ import annotations

import sys
import time

import pytest
import torch
from torch import nn

from gud.nets import MLP
import gud.train as train_module
from gud.train import TrainConfig, TrainStep, load_checkpoint, train


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


# --------------------------------------------------------------------------- fast path


def test_fast_path_is_off_and_harmless_on_cpu():
    data = _data()
    base = TrainConfig(steps=6, batch_size=8, log_every=2, checkpoint_every=100)
    fast = TrainConfig(**{**base.__dict__, "amp_bf16": True, "compile": True, "channels_last": True})
    assert TrainStep(_net(), denoise_loss, fast).describe() == "cpu: eager fp32, fused AdamW"
    a = train(_net(), denoise_loss, data, base, progress=False)
    b = train(_net(), denoise_loss, data, fast, progress=False)
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(x, y)
    assert a.loss_history == b.loss_history


def test_no_host_sync_inside_the_step(monkeypatch):
    """The loop reads the loss (.item) once per log window, never per step."""
    calls = []
    for name in ("item", "__float__", "__bool__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            if sys._getframe(1).f_code.co_filename == train_module.__file__:
                calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    cfg = TrainConfig(steps=30, batch_size=8, log_every=10, checkpoint_every=1000)
    res = train(_net(), denoise_loss, _data(), cfg, progress=False)
    assert len(res.loss_history) == 3
    assert calls.count("item") == 3  # one read per log window
    assert set(calls) <= {"item", "__bool__"} and calls.count("__bool__") <= 1  # the data check


# --------------------------------------------------------------------------- time-based checkpoints


def _interrupt_at(call: int):
    calls = {"n": 0}

    def flaky_loss(model, batch, generator):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return denoise_loss(model, batch, generator)

    return flaky_loss


def test_time_based_checkpoints(tmp_path):
    steps_only = TrainConfig(steps=20, batch_size=8, checkpoint_every=1000, checkpoint_every_s=None)
    with pytest.raises(KeyboardInterrupt):
        train(_net(), _interrupt_at(15), _data(), steps_only, checkpoint_path=tmp_path / "a.pt", progress=False)
    assert not (tmp_path / "a.pt").exists()  # no step-based checkpoint was due yet

    timed = TrainConfig(steps=20, batch_size=8, checkpoint_every=1000, checkpoint_every_s=0.0)
    with pytest.raises(KeyboardInterrupt):
        train(_net(), _interrupt_at(15), _data(), timed, checkpoint_path=tmp_path / "b.pt", progress=False)
    assert torch.load(tmp_path / "b.pt", weights_only=True)["step"] == 14  # saved after every step


# --------------------------------------------------------------------------- deadline


def _heldout_eval(ema: nn.Module) -> float:
    """Held-out loss with a fixed generator: comparable between calls."""
    held = _data(32) * 0.9
    with torch.no_grad():
        return float(denoise_loss(ema, held, torch.Generator().manual_seed(99)).mean())


class _FakeClock:
    """Stands in for the `time` module inside gud.train: each training step takes 1 s."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    perf_counter = monotonic


def test_deadline_stops_cleanly_and_resume_is_bit_exact(tmp_path, monkeypatch):
    data = _data()
    cfg = TrainConfig(steps=40, batch_size=16, lr=1e-3, warmup=4, checkpoint_every=1000, log_every=7,
                      eval_every=5, seed=3)
    full = train(_net(), denoise_loss, data, cfg, progress=False, eval_fn=_heldout_eval)
    assert full.finished and full.step == 40

    clock = _FakeClock()
    monkeypatch.setattr(train_module, "time", clock)

    def one_second_loss(model, batch, generator):
        clock.now += 1.0
        return denoise_loss(model, batch, generator)

    path = tmp_path / "deadline.pt"
    part = train(_net(), one_second_loss, data, cfg, checkpoint_path=path, progress=False, deadline=10.5,
                 eval_fn=_heldout_eval)
    assert not part.finished and part.step == 10 and clock.now <= 10.5  # step 11 would end at 11 s
    assert torch.load(path, weights_only=True)["step"] == 10

    resumed = train(_net(), one_second_loss, data, cfg, checkpoint_path=path, progress=False, eval_fn=_heldout_eval)
    assert resumed.finished and resumed.resumed_from == 10 and resumed.step == 40
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    assert full.loss_history == resumed.loss_history
    assert full.eval_history == resumed.eval_history and full.best_step == resumed.best_step


def test_deadline_already_passed(tmp_path):
    cfg = TrainConfig(steps=10, batch_size=8)
    res = train(_net(), denoise_loss, _data(), cfg, checkpoint_path=tmp_path / "c.pt", progress=False,
                deadline=time.monotonic() - 1.0)
    assert not res.finished and res.step == 0
    assert torch.load(tmp_path / "c.pt", weights_only=True)["step"] == 0


# --------------------------------------------------------------------------- held-out evaluation


def _scripted_eval(values):
    it = iter(values)
    return lambda ema: next(it)


def test_early_stopping_returns_best_ema():
    data = _data()
    cfg = TrainConfig(steps=40, batch_size=8, lr=1e-3, warmup=2, eval_every=2, patience=2, log_every=3,
                      checkpoint_every=1000)
    res = train(_net(), denoise_loss, data, cfg, progress=False, eval_fn=_scripted_eval([5.0, 4.0, 4.5, 4.2, 1.0]))
    assert res.stopped_early and res.finished and res.step == 8
    assert res.eval_history == [(2, 5.0), (4, 4.0), (6, 4.5), (8, 4.2)]
    assert res.best_step == 4 and res.best_value == 4.0
    assert res.loss_history[-1][0] == 8  # the last partial log window is flushed

    # the returned EMA is the one at step 4, not the last one
    at4 = train(_net(), denoise_loss, data, TrainConfig(**{**cfg.__dict__, "steps": 4}), progress=False)
    for a, b in zip(at4.ema_model.state_dict().values(), res.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(res.model.parameters(), at4.model.parameters()))


def test_min_delta_is_relative():
    cfg = TrainConfig(steps=40, batch_size=8, eval_every=2, patience=2, min_delta=0.1, checkpoint_every=1000)
    res = train(_net(), denoise_loss, _data(), cfg, progress=False, eval_fn=_scripted_eval([5.0, 4.6, 4.5, 1.0]))
    assert res.stopped_early and res.step == 6 and res.best_step == 2  # 4.6, 4.5 are not below 5 - 0.5


def test_without_patience_never_stops_early():
    cfg = TrainConfig(steps=12, batch_size=8, eval_every=4, checkpoint_every=1000)
    res = train(_net(), denoise_loss, _data(), cfg, progress=False, eval_fn=_scripted_eval([1.0, 2.0, 3.0]))
    assert not res.stopped_early and res.step == 12 and res.best_step == 4
    assert [s for s, _ in res.eval_history] == [4, 8, 12]


def test_early_stopping_survives_resume(tmp_path):
    data = _data()
    # min_delta 0.5: an improvement must halve the held-out loss, so the run stops after `patience`
    cfg = TrainConfig(steps=60, batch_size=16, lr=1e-3, warmup=2, eval_every=3, patience=2, min_delta=0.5,
                      checkpoint_every=1000, checkpoint_every_s=0.0, log_every=4, seed=5)
    full = train(_net(), denoise_loss, data, cfg, checkpoint_path=tmp_path / "full.pt", progress=False,
                 eval_fn=_heldout_eval)
    assert full.stopped_early and full.step < 60

    path = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):  # interrupted after the first unimproved evaluation
        train(_net(), _interrupt_at(full.step - 1), data, cfg, checkpoint_path=path, progress=False,
              eval_fn=_heldout_eval)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["bad_evals"] == 1 and ckpt["best_ema"] is not None
    resumed = train(_net(), denoise_loss, data, cfg, checkpoint_path=path, progress=False, eval_fn=_heldout_eval)
    assert resumed.stopped_early and resumed.step == full.step and resumed.best_step == full.best_step
    assert resumed.eval_history == full.eval_history and resumed.loss_history == full.loss_history
    for a, b in zip(full.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)

    # a finished run returns at once; load_checkpoint gives the best EMA by default
    again = train(_net(), denoise_loss, data, cfg, checkpoint_path=path, progress=False, eval_fn=_heldout_eval)
    assert again.step == full.step and again.resumed_from == full.step and again.stopped_early
    model, ema, last = _net(), _net(), _net()
    load_checkpoint(path, model, ema)
    load_checkpoint(path, model, last, best=False)
    for a, b in zip(ema.state_dict().values(), full.ema_model.state_dict().values()):
        assert torch.equal(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(ema.parameters(), last.parameters()))


@pytest.mark.parametrize("field, value", [("eval_every", 0), ("patience", 0), ("min_delta", -0.1),
                                          ("checkpoint_every_s", -1.0), ("log_every", 0), ("batch_size", 0)])
def test_bad_config(field, value):
    cfg = TrainConfig(steps=2, batch_size=4)
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=field):
        train(_net(), denoise_loss, _data(), cfg, progress=False)


def test_bad_deadline_and_eval_fn():
    cfg = TrainConfig(steps=2, batch_size=4, eval_every=1)
    with pytest.raises(ValueError, match="deadline"):
        train(_net(), denoise_loss, _data(), cfg, progress=False, deadline=float("nan"))
    with pytest.raises(ValueError, match="eval_fn"):
        train(_net(), denoise_loss, _data(), cfg, progress=False, eval_fn=lambda ema: "low")
