"""Device and precision handling that a CPU can check before a GPU ever runs it.

* Shared objects never move: ``Prior.to`` / ``Basis.to`` return copies, and no public
  evaluation or sampling call moves (``nn.Module._apply``) the prior or basis of a
  :class:`gud.pipeline.Setup`, whatever device it is asked to use.  (The spy on ``_apply``
  is what makes the test independent of the device: ``setup.prior.to(device)`` in place
  calls ``_apply`` on the shared prior even when ``device`` is the CPU.)
* Basis transforms run in float32 or float64: a bf16/fp16 input (a network's output under
  bf16 autocast) is cast up, so FFTs never see bf16 (CPU and CUDA FFTs take none); the
  result comes back in the input's dtype.  A bf16 training step (network in bf16, outside
  autocast) runs for every basis.
"""
import math

import pytest
import torch
from torch import nn

from gud import extension as ext
from gud import pipeline as pl
from gud.bases import BASES, make_basis
from gud.data import ImageData
from gud.diffusion import EpsLoss
from gud.prior import Prior
from gud.schedules import SoftConditioningSchedule
from gud.train import TrainConfig, TrainStep

SHAPE = (1, 4, 4)


def _data(n: int, seed: int) -> ImageData:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, math.prod(SHAPE), generator=g) * 0.3).clamp(-1, 1)
    return ImageData(x, torch.zeros(n, dtype=torch.long), SHAPE, "synthetic", "test")


@pytest.fixture(scope="module", params=["pixel", "pca"])
def setup(request):
    return pl.setup_from_data(_data(64, 0), _data(16, 1), request.param, whitened=True)


def _schedule(setup):
    d = setup.basis.dim
    return SoftConditioningSchedule(torch.linspace(0, 2, d, dtype=torch.float64), setup.prior.log_var, a=1.0)


def _snapshot(module: nn.Module) -> dict:
    return {k: (v.device, v.dtype, v.data_ptr(), v.detach().clone()) for k, v in module.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k][:3] == b[k][:3] and torch.equal(a[k][3], b[k][3]) for k in a)


@pytest.fixture
def moves(monkeypatch):
    """Ids of every module that ``nn.Module._apply`` (``.to``, ``.cuda``, ``.float``, ...) ran on."""
    seen: list[int] = []
    orig = nn.Module._apply

    def spy(self, fn, *args, **kwargs):
        seen.append(id(self))
        return orig(self, fn, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "_apply", spy)
    return seen


def test_prior_and_basis_to_return_copies():
    s = pl.setup_from_data(_data(32, 0), _data(8, 1), "pca")
    before_p, before_b = _snapshot(s.prior), _snapshot(s.basis)
    p32 = s.prior.to(torch.float32)
    assert p32 is not s.prior and p32.basis is not s.basis
    assert p32.mean.dtype == torch.float32 and p32.basis.components.dtype == torch.float32
    b32 = s.basis.to(dtype=torch.float32)
    assert b32 is not s.basis and b32.components.dtype == torch.float32
    assert _same(before_p, _snapshot(s.prior)) and _same(before_b, _snapshot(s.basis))
    assert s.prior.basis is s.basis
    meta = s.prior.to("meta")  # "another device": the copy moves, the original does not
    assert meta.mean.device.type == "meta" and s.prior.mean.device.type == "cpu"


def test_no_public_call_moves_the_shared_prior_or_basis(setup, moves):
    """Every public evaluation/sampling call of gud.pipeline (and gud.extension for the pixel
    basis) leaves ``setup.prior`` and ``setup.basis`` where they were: same device, dtype,
    storage and values, and ``_apply`` never ran on them."""
    sch = _schedule(setup)
    model = pl.build_model("mlp", setup, seed=0, hidden=16, depth=1)
    shared = {id(setup.prior): "prior", id(setup.basis): "basis", id(setup.prior.basis): "prior.basis"}
    before_p, before_b = _snapshot(setup.prior), _snapshot(setup.basis)
    dev = "cpu"  # the spy catches an in-place move to any device, the CPU included
    out = pl.evaluate_at(model, setup, sch, n_samples=4, keep=2, keep_u8=2, steps=3, n_time_samples=1,
                         device=dev, method="ddim")
    assert math.isfinite(out["bpd"]) and out["samples"].shape == (2, setup.basis.dim)
    pl.evaluate_bpd(model, setup, sch, n_time_samples=1, device=dev)
    pl.generate(model, setup, sch, 3, steps=3, device=dev)
    pl.denoised_trajectory(model, setup, sch, times=[0.5, 0.0], n=2, steps=3, device=dev)
    if setup.basis.name == "pixel":
        ext.slide_extend(model, setup, sch, 2, 6, stride=2, steps=3, device=dev)
        ext.independent_tiles(model, setup, sch, 2, 6, steps=3, device=dev)
    moved = [shared[i] for i in moves if i in shared]
    assert not moved, f"moved in place: {moved}"
    assert _same(before_p, _snapshot(setup.prior)) and _same(before_b, _snapshot(setup.basis))
    assert setup.prior.basis is setup.basis


def _bf16_tolerance(ref: torch.Tensor) -> torch.Tensor:
    """Rounding the exact result to bf16 (8 significant bits) errs by at most 2^-8 of it; the
    float32 arithmetic on top adds ~D * 2^-24 of the vector's norm."""
    return ref.abs() * 2.0 ** -8 + ref.norm(dim=-1, keepdim=True) * ref.shape[-1] * 2.0 ** -23


@pytest.mark.parametrize("name", BASES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_basis_on_low_precision_input(name, dtype):
    """Each basis on bf16/fp16 input, without autocast: no error, result in the input's dtype,
    equal to the float64 transform of the same (rounded) input up to rounding the result."""
    shape = (3, 8, 8)
    d = math.prod(shape)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(64, d, generator=g, dtype=torch.float64) if name == "pca" else None
    basis = make_basis(name, shape, data=data)
    x = torch.randn(5, d, generator=g).to(dtype)
    for fn in (basis.forward, basis.inverse):
        out = fn(x)
        assert out.dtype == dtype and out.shape == x.shape
        ref = fn(x.double())
        assert ((out.double() - ref).abs() <= _bf16_tolerance(ref)).all()  # fp16 rounds finer


@pytest.mark.parametrize("name", BASES)
def test_basis_under_cpu_autocast_runs_in_float32(name):
    """Under bf16 autocast the transforms run with autocast off: a float32 input gives the
    float32 transform exactly (a PCA matmul is not done in bf16)."""
    shape = (1, 8, 8)
    d = math.prod(shape)
    g = torch.Generator().manual_seed(1)
    data = torch.randn(64, d, generator=g, dtype=torch.float64) if name == "pca" else None
    basis = make_basis(name, shape, data=data).to(torch.float32)
    x = torch.randn(4, d, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = basis.forward(x)
        back = basis.inverse(c)
    assert c.dtype == torch.float32 and torch.equal(c, basis.forward(x)) and torch.equal(back, basis.inverse(c))


@pytest.mark.parametrize("name", BASES)
def test_training_step_in_bf16_outside_autocast(name):
    """A U-Net denoiser held in bf16, data in bf16, no autocast: one optimiser step of the
    real training step runs for every basis, with a finite loss, and changes the weights."""
    setup = pl.setup_from_data(_data(32, 0), _data(8, 1), name, whitened=True) if name != "wavelet" else \
        pl.setup_from_data(_data(32, 0), _data(8, 1), name, whitened=True, basis_kwargs={"levels": 1})
    model = pl.build_model("unet", setup, seed=0, base_channels=8, channel_mults=(1,), cond_embed_dim=16)
    model = model.to(torch.bfloat16)
    cfg = TrainConfig(steps=1, batch_size=8, lr=1e-3, warmup=0)
    stepper = TrainStep(model, EpsLoss(_schedule(setup)), cfg)
    before = [p.detach().clone() for p in model.parameters()]
    loss = stepper.step(setup.y_train[:8].to(torch.bfloat16), torch.Generator().manual_seed(0), 0)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
