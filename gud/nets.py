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

__all__ = ["NoiseStateEmbedding", "UNet", "MLP", "EpsNet", "build_net", "init_weights"]


def _num_groups(channels: int, max_groups: int = 32) -> int:
    """Largest number of GroupNorm groups <= max_groups that divides `channels`."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_num_groups(channels), channels)


def _zero_(module: nn.Module) -> nn.Module:
    """Zero the parameters of ``module`` and mark it so that :func:`init_weights` keeps them zero."""
    for p in module.parameters():
        nn.init.zeros_(p)
    module._zero_init = True
    return module


@torch.no_grad()
def init_weights(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """(Re-)initialise every parameter of ``module`` from ``generator``, never the global RNG.

    Linear and convolution layers get PyTorch's default initialisation (Kaiming-uniform
    weights with ``a = sqrt(5)``, biases uniform in ``±1/sqrt(fan_in)``), layers made by
    ``_zero_`` stay zero, normalisation layers get unit scale and zero shift.
    """
    handled: set[int] = set()
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if getattr(m, "_zero_init", False):
                nn.init.zeros_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            else:
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                if m.bias is not None:
                    bound = 1.0 / math.sqrt(m.weight[0].numel())
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        else:
            continue
        handled.update(id(p) for p in m.parameters(recurse=False))
    missed = [n for n, p in module.named_parameters() if id(p) not in handled]
    if missed:
        raise TypeError(f"init_weights does not know how to initialise {missed[:3]}")
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
    r"""Preconditioned epsilon predictor in whitened component space built from a plain network.

    `forward(y_t [B, D], gamma [B, D]) -> eps_hat [B, D]`.

    Preconditioning (as EDM's `EDMPrecond`, Karras et al. 2022, for epsilon prediction). With
    :math:`v_i` the data variance of whitened component i (`log_var` = :math:`\log v_i`, the
    prior's `log_var`), :math:`\alpha^2 = \mathrm{sigmoid}(-\gamma)`,
    :math:`\sigma^2 = \mathrm{sigmoid}(\gamma)` and the variance of the noisy component
    :math:`c_i = \alpha_i^2 v_i + \sigma_i^2`,

    .. math::
       \hat\varepsilon = \frac{\sigma\,y_t}{c} + c_{out}\,F\big(c_{in}\,y_t,\ \gamma\big),\qquad
       c_{in} = c^{-1/2},\quad c_{out} = \sqrt{\alpha^2 v / c} = \sqrt{\mathrm{sigmoid}(\log v - \gamma)}.

    The first term is :math:`\mathbb E[\varepsilon\mid y_t]` for independent Gaussian
    components of variance :math:`v_i`: an untrained network (zero output layer) *is* the
    diagonal Gaussian denoiser, and at high noise the prediction follows :math:`y_t` exactly
    instead of relying on the network to output it.  :math:`c_{out}^2` is the variance of
    :math:`\varepsilon` left around that term (:math:`1 - \sigma^2/c`), so the residual
    :math:`F` has to learn is O(1) at every noise level; :math:`c_{in}` gives the network
    inputs of unit variance.

    With `image_shape = (C, H, W)` the network runs in whitened data space: the scaled input
    :math:`U^\top(c_{in} y_t)` = `basis.inverse(...)` reshaped to [B, C, H, W] keeps the
    spatial layout, and its output is mapped back with `basis.forward`. Without `image_shape`
    (flat data, `MLP`) the network sees :math:`c_{in} y_t` directly. The network is always
    conditioned on gamma.

    `basis` is any object with orthogonal `forward`/`inverse` on the last axis; if it is an
    `nn.Module` it is registered as a submodule so that `.to(device)` moves its buffers.
    """

    def __init__(self, net: nn.Module, basis: Any, log_var: torch.Tensor,
                 image_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        self.net = net
        self.basis = basis  # a submodule if it is an nn.Module, else a plain attribute
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None
        if self.image_shape is not None and len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape}")
        log_var = torch.as_tensor(log_var)
        if log_var.ndim != 1 or not torch.isfinite(log_var).all():
            raise ValueError(f"log_var must be a finite vector [D]; got shape {tuple(log_var.shape)}")
        self.register_buffer("log_var", log_var.detach().to(torch.float32).clone())

    def skip(self, y_t: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(skip, c_in, c_out)``, each ``[B, D]``: the Gaussian term and the two scales."""
        log_var = self.log_var.to(y_t.dtype)
        alpha2, sigma2 = torch.sigmoid(-gamma), torch.sigmoid(gamma)
        c = alpha2 * log_var.exp() + sigma2
        return sigma2.sqrt() * y_t / c, c.rsqrt(), torch.sigmoid(log_var - gamma).sqrt()

    def forward(self, y_t: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        if y_t.ndim != 2 or y_t.shape[-1] != self.log_var.shape[0]:
            raise ValueError(f"expected y_t of shape [B, {self.log_var.shape[0]}], got {list(y_t.shape)}")
        if gamma.shape != y_t.shape:
            raise ValueError(f"gamma must have the shape of y_t {list(y_t.shape)}, got {list(gamma.shape)}")
        skip, c_in, c_out = self.skip(y_t, gamma)
        return skip + c_out * self.residual(c_in * y_t, gamma)

    def residual(self, y_in: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """The raw network :math:`F` in whitened component space, ``[B, D] -> [B, D]``."""
        if self.image_shape is None:
            return self.net(y_in, gamma)
        B, D = y_in.shape
        C, H, W = self.image_shape
        if D != C * H * W:
            raise ValueError(f"D = {D} does not match image_shape {self.image_shape} (C*H*W = {C * H * W})")
        x_img = self.basis.inverse(y_in).reshape(B, C, H, W)  # whitened data space U^T y
        out = self.net(x_img, gamma)  # [B, C, H, W]
        return self.basis.forward(out.reshape(B, D))  # [B, D]


def build_net(kind: str, shape: Sequence[int], *, seed: int = 0,
              generator: torch.Generator | None = None, **kwargs: Any) -> nn.Module:
    """Build a noise-state-conditioned network for data of shape (C, H, W).

    kind "unet": `UNet(C, (H, W), cond_dim=C*H*W, **kwargs)`;
    kind "mlp": `MLP(C*H*W, cond_dim=C*H*W, **kwargs)`.
    `cond_dim` may be overridden through kwargs. The weights come from `generator`
    (default: a CPU generator seeded with `seed`), never from the global RNG: the network is
    built on the meta device and initialised by :func:`init_weights`. Wrap the result in
    `EpsNet` to get a denoiser.
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
    with torch.device("meta"):
        net = builders[kind]()
    net = net.to_empty(device="cpu")
    return init_weights(net, generator if generator is not None else torch.Generator().manual_seed(seed))
