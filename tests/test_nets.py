"""Tests for gud.nets: shapes, conditioning gradients, EpsNet basis round trip."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gud.nets import MLP, EpsNet, UNet, build_net


class IdentityBasis:
    """Stand-in pixel basis (not a module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def inverse(self, c: torch.Tensor) -> torch.Tensor:
        return c


class RandomOrthogonalBasis(nn.Module):
    """Stand-in basis c = U x with a random orthogonal U held as a buffer."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        self.register_buffer("U", q.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.U.T

    def inverse(self, c: torch.Tensor) -> torch.Tensor:
        return c @ self.U


def _tiny_unet(c: int, h: int, w: int, **kw) -> UNet:
    return UNet(c, (h, w), cond_dim=c * h * w, base_channels=8, cond_embed_dim=16, **kw)


def _randomise_output(net: nn.Module) -> None:
    """Give the zero-initialised output layer random weights so outputs depend on inputs."""
    g = torch.Generator().manual_seed(1)
    last = net.conv_out if isinstance(net, UNet) else net.linear_out
    with torch.no_grad():
        for p in last.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize(
    "shape, mults",
    [((1, 8, 8), (1, 2)), ((1, 28, 28), (1, 2, 2)), ((3, 32, 32), (1, 2)), ((1, 8, 32), (1, 2)), ((1, 28, 28), (1, 2, 2, 2))],
)
def test_unet_shapes(shape, mults):
    torch.manual_seed(0)
    c, h, w = shape
    net = _tiny_unet(c, h, w, channel_mults=mults, attention_resolutions=(8,))
    x = torch.randn(2, c, h, w)
    out = net(x, torch.randn(2, c * h * w))
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised final conv


def test_unet_moves_and_casts():
    net = _tiny_unet(1, 8, 8).to("cpu").to(torch.float64)
    out = net(torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 64, dtype=torch.float64))
    assert out.dtype == torch.float64


def test_unet_rejects_wrong_shape():
    net = _tiny_unet(1, 8, 8)
    with pytest.raises(ValueError, match=r"\[B, 1, 8, 8\]"):
        net(torch.randn(2, 1, 8, 9), torch.randn(2, 64))
    with pytest.raises(ValueError, match="gamma"):
        net(torch.randn(2, 1, 8, 8), torch.randn(2, 63))


def test_mlp_shape():
    net = MLP(5, cond_dim=5, hidden=32, depth=2, cond_embed_dim=16)
    out = net(torch.randn(4, 5), torch.randn(4, 5))
    assert out.shape == (4, 5)


@pytest.mark.parametrize("kind", ["unet", "mlp"])
def test_conditioning_gets_gradients(kind):
    torch.manual_seed(0)
    shape = (1, 8, 8)
    net = build_net(kind, shape, **({"base_channels": 8} if kind == "unet" else {"hidden": 32}), cond_embed_dim=16)
    _randomise_output(net)
    x = torch.randn(3, 64)
    x_in = x.reshape(3, *shape) if kind == "unet" else x
    g1, g2 = torch.full((3, 64), -5.0), torch.full((3, 64), 5.0)
    assert not torch.allclose(net(x_in, g1), net(x_in, g2))
    net(x_in, torch.randn(3, 64)).square().mean().backward()
    for name, p in net.embed.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_build_net_unknown_kind():
    with pytest.raises(ValueError, match="mlp.*unet"):
        build_net("transformer", (1, 8, 8))


def test_epsnet_residual_identity_equals_net():
    net = build_net("unet", (1, 8, 8), base_channels=8, cond_embed_dim=16)
    _randomise_output(net)
    eps = EpsNet(net, IdentityBasis(), torch.zeros(64), image_shape=(1, 8, 8))
    y, gamma = torch.randn(2, 64), torch.randn(2, 64)
    assert torch.allclose(eps.residual(y, gamma), net(y.reshape(2, 1, 8, 8), gamma).reshape(2, 64))


def test_epsnet_orthogonal_basis_commutes():
    c, h, w = 2, 4, 6
    d = c * h * w
    net = build_net("unet", (c, h, w), base_channels=8, cond_embed_dim=16)
    _randomise_output(net)
    basis = RandomOrthogonalBasis(d)
    eps = EpsNet(net, basis, torch.zeros(d), image_shape=(c, h, w))
    assert "basis.U" in dict(eps.named_buffers())  # registered: moves with .to(device)
    y, gamma = torch.randn(3, d), torch.randn(3, d)
    U = basis.U
    expected = net((y @ U).reshape(3, c, h, w), gamma).reshape(3, d) @ U.T  # U (net(U^T y))
    assert torch.allclose(eps.residual(y, gamma), expected, atol=1e-5)


def test_epsnet_preconditioning_formula():
    d = 6
    net = MLP(d, cond_dim=d, hidden=16, depth=1, cond_embed_dim=8)
    _randomise_output(net)
    log_v = torch.linspace(-3, 2, d)
    eps = EpsNet(net, RandomOrthogonalBasis(d), log_v)
    y, gamma = torch.randn(5, d), 4 * torch.randn(5, d)
    a2, s2, v = torch.sigmoid(-gamma), torch.sigmoid(gamma), log_v.exp()
    c = a2 * v + s2
    expected = s2.sqrt() * y / c + (a2 * v / c).sqrt() * net(y / c.sqrt(), gamma)
    torch.testing.assert_close(eps(y, gamma), expected)
    with pytest.raises(ValueError, match="gamma"):
        eps(y, gamma[:, :5])
    with pytest.raises(ValueError, match="log_var"):
        EpsNet(net, RandomOrthogonalBasis(d), torch.full((d,), float("nan")))


@pytest.mark.parametrize("kind", ["mlp", "unet"])
@pytest.mark.parametrize("whitened", [True, False])
def test_untrained_epsnet_is_the_diagonal_gaussian_denoiser(kind, whitened):
    """Zero output layer: the wrapper alone is E[eps | y_t] for independent Gaussian components."""
    from gud.oracle import GaussianOracle

    c, h, w = 1, 4, 4
    d = c * h * w
    kw = {"base_channels": 8} if kind == "unet" else {"hidden": 16}
    net = build_net(kind, (c, h, w), cond_embed_dim=8, **kw)
    g = torch.Generator().manual_seed(0)
    var = torch.ones(d) if whitened else torch.exp(torch.linspace(-6, 1, d))
    eps = EpsNet(net, RandomOrthogonalBasis(d), var.log(), image_shape=(c, h, w) if kind == "unet" else None)
    oracle = GaussianOracle(torch.zeros(d), torch.diag(var.double()))
    gamma = torch.linspace(-12, 12, 7)[:, None].repeat(1, d) + torch.linspace(-1, 1, d)
    y = torch.randn(7, d, generator=g) * (torch.sigmoid(-gamma) * var + torch.sigmoid(gamma)).sqrt()
    torch.testing.assert_close(eps(y, gamma), oracle(y, gamma), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["mlp", "unet"])
def test_build_net_seeded_not_global_rng(kind):
    kw = {"base_channels": 8} if kind == "unet" else {"hidden": 16}
    torch.manual_seed(123)
    a = build_net(kind, (1, 8, 8), seed=3, **kw)
    torch.rand(17)  # disturb the global RNG
    state = torch.random.get_rng_state()
    b = build_net(kind, (1, 8, 8), seed=3, **kw)
    assert torch.equal(state, torch.random.get_rng_state())  # building drew nothing from it
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    c = build_net(kind, (1, 8, 8), seed=4, **kw)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
