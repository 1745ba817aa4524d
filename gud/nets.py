"""Networks conditioned on the full noise state, and the wrapper to whitened components.

The networks here know nothing about diffusion: they map an input and a conditioning
vector to an output of the input's shape,

    UNet: (x_img [B, C, H, W], cond [B, D]) -> [B, C, H, W]
    MLP:  (x [B, D], cond [B, D])           -> [B, D]

The conditioning is the noise state gamma(t) in R^D (as in the GUD paper: one
gamma_i per whitened component, the negative log SNR of its OU process), not the
scalar time t, so that one network serves a whole family of component-wise
schedules. `EpsNet` turns such a network into an epsilon predictor in whitened
component space, `eps_model(y_t [B, D], gamma [B, D]) -> eps_hat [B, D]`
(CONTRIBUTING.md shape contract).

Conditioning mechanism. The paper conditions on the noise state with
cross-attention. We replace it with a cheaper global FiLM conditioning: gamma is
embedded once per example by an MLP (`NoiseStateEmbedding`; input features
clamp(gamma, -20, 20) / 10 and alpha^2 = sigmoid(-gamma)), and every residual
block applies a per-channel scale and shift computed from that embedding. The
embedding sees every gamma_i with its own weights, so the network can tell which
components are how noisy, but it cannot attend spatially to the noise state.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NoiseStateEmbedding", "UNet", "MLP", "EpsNet", "build_net"]


def _num_groups(channels: int, max_groups: int = 32) -> int:
    """Largest number of GroupNorm groups <= max_groups that divides `channels`."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_num_groups(channels), channels)


def _zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class NoiseStateEmbedding(nn.Module):
    """Embed the noise state gamma [B, D] into a vector [B, embed_dim].

    Input features per component: clamp(gamma, -20, 20) / 10 and
    alpha^2 = sigmoid(-gamma) (see gud.schedules), so 2 D features in all,
    followed by Linear -> SiLU -> Linear.
    """

    def __init__(self, cond_dim: int, embed_dim: int = 128) -> None:
        super().__init__()
        if cond_dim < 1:
            raise ValueError(f"cond_dim must be >= 1, got {cond_dim}")
        self.cond_dim = cond_dim
        self.mlp = nn.Sequential(
            nn.Linear(2 * cond_dim, embed_dim),
            nn.SiLU(),
            nn.Linear(embed_dim, embed_dim),
        )

    def forward(self, gamma: torch.Tensor) -> torch.Tensor:
        if gamma.ndim != 2 or gamma.shape[-1] != self.cond_dim:
            raise ValueError(
                f"expected noise state gamma of shape [B, {self.cond_dim}], got {list(gamma.shape)}"
            )
        feats = torch.cat(
            [gamma.clamp(-20.0, 20.0) / 10.0, torch.sigmoid(-gamma)], dim=-1
        )  # [B, 2 D]
        return self.mlp(feats)  # [B, E]


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, FiLM from the noise-state embedding, GroupNorm-SiLU-conv, skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_ch))
        self.norm2 = _group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)  # [B, C, 1, 1] each
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class _AttnBlock(nn.Module):
    """Spatial self-attention (heads of width 64 where possible), residual, zero-init output."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.heads = max(1, ch // 64) if ch % 64 == 0 else 1
        self.norm = _group_norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero_(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # [B, heads, HW, c/heads]
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)


class _Downsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Upsample(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """U-Net conditioned on the full noise state: (x [B, C, H, W], cond [B, D]) -> [B, C, H, W].

    A small DDPM/ADM-style U-Net. `len(channel_mults)` resolution levels, each with
    `num_res_blocks` residual blocks of width `base_channels * mult`; a factor-2
    downsampling between levels. Inputs whose height or width is not divisible by
    2^(levels - 1) are zero-padded at the bottom/right and the output is cropped
    back, so any H, W works (8x8, 28x28, 32x32, non-square windows such as 8x32).
    Self-attention is added at every level whose (padded) feature-map height is in
    `attention_resolutions`.

    Conditioning: the noise state gamma in R^D (D = `cond_dim`, normally C*H*W) is
    embedded by `NoiseStateEmbedding` into `cond_embed_dim` features, and every
    residual block applies FiLM (per-channel scale and shift) from it. This
    replaces the paper's cross-attention on the noise state with a cheaper global
    FiLM conditioning. GroupNorm (groups dividing the channels), SiLU, and a
    zero-initialised final convolution, so the untrained network outputs 0.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int] | Sequence[int],
        cond_dim: int,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attention_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        cond_embed_dim: int = 128,
    ) -> None:
        super().__init__()
        if len(image_size) != 2:
            raise ValueError(f"image_size must be (H, W), got {image_size}")
        if len(channel_mults) < 1:
            raise ValueError("channel_mults must have at least one level")
        self.in_channels = in_channels
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.cond_dim = cond_dim
        levels = len(channel_mults)
        self._multiple = 2 ** (levels - 1)
        h_pad = math.ceil(self.image_size[0] / self._multiple) * self._multiple

        self.embed = NoiseStateEmbedding(cond_dim, cond_embed_dim)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        # Encoder. `skip_chs` records the channels of every stored skip connection.
        self.down = nn.ModuleList()
        skip_chs = [base_channels]
        ch, res = base_channels, h_pad
        for level, mult in enumerate(channel_mults):
            out_ch = base_channels * mult
            for _ in range(num_res_blocks):
                blocks = [_ResBlock(ch, out_ch, cond_embed_dim, dropout)]
                if res in attention_resolutions:
                    blocks.append(_AttnBlock(out_ch))
                self.down.append(nn.ModuleList(blocks))
                ch = out_ch
                skip_chs.append(ch)
            if level != levels - 1:
                self.down.append(nn.ModuleList([_Downsample(ch)]))
                skip_chs.append(ch)
                res //= 2

        mid = [_ResBlock(ch, ch, cond_embed_dim, dropout)]
        if res in attention_resolutions:
            mid.append(_AttnBlock(ch))
        mid.append(_ResBlock(ch, ch, cond_embed_dim, dropout))
        self.mid = nn.ModuleList(mid)

        # Decoder: num_res_blocks + 1 blocks per level, each consuming one skip.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            out_ch = base_channels * mult
            for _ in range(num_res_blocks + 1):
                blocks = [_ResBlock(ch + skip_chs.pop(), out_ch, cond_embed_dim, dropout)]
                if res in attention_resolutions:
                    blocks.append(_AttnBlock(out_ch))
                self.up.append(nn.ModuleList(blocks))
                ch = out_ch
            if level != 0:
                self.up.append(nn.ModuleList([_Upsample(ch)]))
                res *= 2
        assert not skip_chs

        self.norm_out = _group_norm(ch)
        self.conv_out = _zero_(nn.Conv2d(ch, in_channels, 3, padding=1))

    @staticmethod
    def _run_blocks(blocks: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            h = block(h, emb) if isinstance(block, (_ResBlock, _AttnBlock)) else block(h)
        return h

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        expected = (self.in_channels, *self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected x of shape [B, {', '.join(map(str, expected))}], got {list(x.shape)}")
        if cond.shape[0] != x.shape[0]:
            raise ValueError(f"batch sizes differ: x {x.shape[0]}, cond {cond.shape[0]}")
        emb = self.embed(cond)  # [B, E]
        H, W = self.image_size
        pad_h, pad_w = (-H) % self._multiple, (-W) % self._multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))

        h = self.conv_in(x)
        skips = [h]
        for blocks in self.down:
            h = self._run_blocks(blocks, h, emb)
            skips.append(h)
        h = self._run_blocks(self.mid, h, emb)
        for blocks in self.up:
            if isinstance(blocks[0], _ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run_blocks(blocks, h, emb)
        out = self.conv_out(F.silu(self.norm_out(h)))
        return out[:, :, :H, :W]


class _MLPBlock(nn.Module):
    """LayerNorm, FiLM from the noise-state embedding, SiLU, Linear; residual."""

    def __init__(self, hidden: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * hidden))
        self.linear = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb).chunk(2, dim=-1)
        z = self.norm(h) * (1.0 + scale) + shift
        return h + self.linear(self.dropout(F.silu(z)))


class MLP(nn.Module):
    """Residual MLP for flat low-dimensional data: (x [B, dim], cond [B, cond_dim]) -> [B, dim].

    `depth` residual blocks of width `hidden`, each with FiLM conditioning on the
    noise-state embedding (same `NoiseStateEmbedding` as `UNet`); zero-initialised
    output layer.
    """

    def __init__(
        self,
        dim: int,
        cond_dim: int,
        hidden: int = 256,
        depth: int = 3,
        cond_embed_dim: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.cond_dim = cond_dim
        self.embed = NoiseStateEmbedding(cond_dim, cond_embed_dim)
        self.linear_in = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_MLPBlock(hidden, cond_embed_dim, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden)
        self.linear_out = _zero_(nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"expected x of shape [B, {self.dim}], got {list(x.shape)}")
        emb = self.embed(cond)  # [B, E]
        h = self.linear_in(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.linear_out(F.silu(self.norm_out(h)))


class EpsNet(nn.Module):
    """Epsilon predictor in whitened component space built from a plain network.

    `forward(y_t [B, D], gamma [B, D]) -> eps_hat [B, D]`.

    With `image_shape = (C, H, W)` the network runs in whitened data space
    (the paper's whitened data space): x_img = U^T y_t = basis.inverse(y_t) reshaped to
    [B, C, H, W] keeps the spatial layout, and the output is mapped back with
    basis.forward (U is orthogonal, so this is the same linear map in both
    directions of the round trip). Without `image_shape` (flat data, `MLP`) the
    network sees y_t directly. The network is always conditioned on gamma.

    `basis` is any object with orthogonal `forward`/`inverse` on the last axis; if
    it is an `nn.Module` it is registered as a submodule so that `.to(device)`
    moves its buffers.
    """

    def __init__(self, net: nn.Module, basis: Any, image_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.net = net
        self.basis = basis  # a submodule if it is an nn.Module, else a plain attribute
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
        if self.image_shape is not None and len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")

    def forward(self, y_t: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        if y_t.ndim != 2:
            raise ValueError(f"expected y_t of shape [B, D], got {list(y_t.shape)}")
        if gamma.shape != y_t.shape:
            raise ValueError(f"gamma must have the shape of y_t {list(y_t.shape)}, got {list(gamma.shape)}")
        if self.image_shape is None:
            return self.net(y_t, gamma)
        B, D = y_t.shape
        C, H, W = self.image_shape
        if D != C * H * W:
            raise ValueError(f"D = {D} does not match image_shape {self.image_shape} (C*H*W = {C * H * W})")
        x_img = self.basis.inverse(y_t).reshape(B, C, H, W)  # whitened data space U^T y
        out = self.net(x_img, gamma)  # [B, C, H, W]
        return self.basis.forward(out.reshape(B, D))  # [B, D]


def build_net(kind: str, shape: Sequence[int], **kwargs: Any) -> nn.Module:
    """Build a noise-state-conditioned network for data of shape (C, H, W).

    kind "unet": `UNet(C, (H, W), cond_dim=C*H*W, **kwargs)`;
    kind "mlp": `MLP(C*H*W, cond_dim=C*H*W, **kwargs)`.
    `cond_dim` may be overridden through kwargs. Wrap the result in `EpsNet`
    to get a denoiser.
    """
    if len(shape) != 3:
        raise ValueError(f"shape must be (C, H, W), got {shape}")
    C, H, W = (int(s) for s in shape)
    D = C * H * W
    cond_dim = kwargs.pop("cond_dim", D)
    builders = {
        "unet": lambda: UNet(C, (H, W), cond_dim=cond_dim, **kwargs),
        "mlp": lambda: MLP(D, cond_dim=cond_dim, **kwargs),
    }
    if kind not in builders:
        raise ValueError(f"unknown network kind {kind!r}; options: {sorted(builders)}")
    return builders[kind]()
