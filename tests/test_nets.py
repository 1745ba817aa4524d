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


def test_epsnet_identity_equals_net():
    torch.manual_seed(0)
    net = _tiny_unet(1, 8, 8)
    _randomise_output(net)
    eps = EpsNet(net, IdentityBasis(), image_shape=(1, 8, 8))
    y, gamma = torch.randn(2, 64), torch.randn(2, 64)
    assert torch.allclose(eps(y, gamma), net(y.reshape(2, 1, 8, 8), gamma).reshape(2, 64))


def test_epsnet_orthogonal_basis_commutes():
    torch.manual_seed(0)
    c, h, w = 2, 4, 6
    d = c * h * w
    net = _tiny_unet(c, h, w)
    _randomise_output(net)
    basis = RandomOrthogonalBasis(d)
    eps = EpsNet(net, basis, image_shape=(c, h, w))
    assert "basis.U" in dict(eps.named_buffers())  # registered: moves with .to(device)
    y, gamma = torch.randn(3, d), torch.randn(3, d)
    U = basis.U
    expected = net((y @ U).reshape(3, c, h, w), gamma).reshape(3, d) @ U.T  # U (net(U^T y))
    assert torch.allclose(eps(y, gamma), expected, atol=1e-5)


def test_epsnet_flat_mlp():
    net = MLP(6, cond_dim=6, hidden=16, depth=1, cond_embed_dim=8)
    _randomise_output(net)
    eps = EpsNet(net, RandomOrthogonalBasis(6))
    y, gamma = torch.randn(2, 6), torch.randn(2, 6)
    assert torch.equal(eps(y, gamma), net(y, gamma))
    with pytest.raises(ValueError, match="gamma"):
        eps(y, gamma[:, :5])
