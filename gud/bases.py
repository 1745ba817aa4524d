r"""Orthogonal bases: the first of GUD's three design choices.

A basis is an orthogonal (real) map :math:`U` acting on the last axis of a flat
tensor: ``c = basis.forward(x)`` computes :math:`c = U x` and
``x = basis.inverse(c)`` computes :math:`x = U^\top c`, both ``[..., D] -> [..., D]``
with ``D = C * H * W``.  A basis knows nothing about priors or schedules; it only
carries, per component, the metadata (``basis.meta``) from which ordering labels
are built: row, column, channel, frequency, wavelet level, ...

Bases here

* :class:`PixelBasis` -- :math:`U = I`.
* :class:`PCABasis` -- eigenvectors of the data covariance, by decreasing
  variance; channels mixed (one ``D x D`` problem) or per channel.
* :class:`FourierBasis` -- a *real* orthonormal Fourier transform built on
  ``torch.fft.rfft2`` (``O(D log D)``): the real and imaginary parts of each
  independent frequency, scaled by :math:`\sqrt 2`, and the self-conjugate
  frequencies (DC, Nyquist) alone.  It diagonalises the covariance of any
  stationary, periodic field.
* :class:`WaveletBasis` -- multi-level orthonormal 2-D discrete wavelet
  transform with periodic boundaries (``pywt`` mode ``"periodization"``) for any
  orthogonal PyWavelets filter, computed with strided convolutions.
"""
from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from typing import Iterable

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "Basis",
    "PixelBasis",
    "PCABasis",
    "FourierBasis",
    "WaveletBasis",
    "make_basis",
    "BASES",
    "rank_labels",
]

Shape = tuple[int, int, int]


def _check_shape(shape: Iterable[int]) -> Shape:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"image shape must be (C, H, W) with positive sizes, got {shape}")
    return shape  # type: ignore[return-value]


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _full_precision(device_type: str):
    """Autocast off (if it is on for ``device_type``): the transforms run in the working dtype."""
    try:
        on = torch.is_autocast_enabled(device_type)
    except (TypeError, RuntimeError):  # a device type without autocast (e.g. meta)
        on = False
    return torch.autocast(device_type, enabled=False) if on else nullcontext()


class Basis(nn.Module):
    """An orthogonal map on the last axis, with per-component metadata.

    Subclasses implement :meth:`_forward` and :meth:`_inverse` on ``[N, D]``
    tensors; this class handles shapes, dtype checks and metadata.

    Precision: the transforms run in float32 or float64, never lower, and never under
    autocast: a bf16 or fp16 input (e.g. a network's output under bf16 autocast) is cast
    up to float32, transformed, and the result returned in the *input's* dtype, so that
    a network held in bf16 outside autocast gets bf16 back.  float32 and float64 inputs
    are transformed in their own dtype.

    ``to`` returns a copy (like :meth:`gud.schedules.Schedule.to`): a basis shared by
    an experiment never moves.  A parent module's ``.to`` (e.g. a network holding its
    own copy of the basis) still moves the copy it holds.
    """

    name: str = "basis"

    def __init__(self, shape: Iterable[int]):
        super().__init__()
        self.shape: Shape = _check_shape(shape)
        self.dim = int(np.prod(self.shape))
        self.meta: dict[str, Tensor] = {}

    # --- public API -----------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - documented in class
        """Components ``c = U x`` of flat data ``x [..., D]``."""
        return self._on_last_axis(x, self._forward)

    def inverse(self, c: Tensor) -> Tensor:
        """Data ``x = U^T c`` from components ``c [..., D]``."""
        return self._on_last_axis(c, self._inverse)

    def matrix(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The dense matrix ``U [D, D]`` (rows are basis vectors).  For tests and
        small ``D`` only: the hot path never builds it."""
        eye = torch.eye(self.dim, dtype=dtype, device=self._device())
        return self.forward(eye).T.contiguous()

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    def to(self, *args, **kwargs) -> "Basis":
        """A copy with its tensors moved/cast as ``nn.Module.to`` would; ``self`` is unchanged."""
        return _moved_copy(self, *args, **kwargs)

    # --- helpers --------------------------------------------------------
    def _device(self) -> torch.device:
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def _on_last_axis(self, x: Tensor, fn) -> Tensor:
        if not torch.is_tensor(x):
            raise TypeError(f"{self.name} basis expects a torch.Tensor, got {type(x).__name__}")
        if x.shape[-1:] != (self.dim,):
            raise ValueError(
                f"{self.name} basis for images {self.shape} acts on the last axis of size "
                f"D={self.dim}; got a tensor of shape {tuple(x.shape)} (flatten images to [..., D])"
            )
        lead = x.shape[:-1]
        dtype = x.dtype
        if dtype in _LOW_PRECISION:  # FFTs (CUDA and CPU) take no bf16/fp16; work in float32
            x = x.float()
        with _full_precision(x.device.type):
            out = fn(x.reshape(-1, self.dim))
        return out.reshape(*lead, self.dim).to(dtype)

    def _forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _inverse(self, c: Tensor) -> Tensor:
        raise NotImplementedError

    def _pixel_meta(self) -> dict[str, Tensor]:
        c, h, w = self.shape
        ch, row, col = torch.meshgrid(
            torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij"
        )
        return {"channel": ch.flatten(), "row": row.flatten(), "col": col.flatten()}


class PixelBasis(Basis):
    """The identity: components are pixels.  ``meta``: ``channel``, ``row``, ``col``."""

    name = "pixel"

    def __init__(self, shape: Iterable[int]):
        super().__init__(shape)
        self.meta = self._pixel_meta()

    def _forward(self, x: Tensor) -> Tensor:
        return x.clone()

    def _inverse(self, c: Tensor) -> Tensor:
        return c.clone()


class PCABasis(Basis):
    """Principal components of data, by decreasing variance.

    ``PCABasis.fit(x, shape)`` computes the covariance in float64 (streaming over
    batches when ``x`` is an iterable of ``[B, D]`` tensors) and its
    eigenvectors.  ``per_channel=True`` fits one ``HW x HW`` problem per channel
    (a block-diagonal ``U``; components of all channels are then sorted together
    by variance).  ``meta``: ``rank`` (0 = largest variance), ``channel`` (-1 when
    channels are mixed), ``variance`` (the eigenvalue).
    """

    name = "pca"

    def __init__(self, shape: Iterable[int], components: Tensor, variances: Tensor,
                 channel: Tensor | None = None):
        super().__init__(shape)
        d = self.dim
        if components.shape != (d, d):
            raise ValueError(f"PCA components must be [D, D] = [{d}, {d}], got {tuple(components.shape)}")
        self.register_buffer("components", components.to(torch.float64))  # rows = eigenvectors
        self.meta = {
            "rank": torch.arange(d),
            "channel": channel if channel is not None else torch.full((d,), -1),
            "variance": variances.to(torch.float64),
        }

    @classmethod
    def fit(cls, data: Tensor | Iterable[Tensor], shape: Iterable[int], per_channel: bool = False) -> "PCABasis":
        shape = _check_shape(shape)
        c, h, w = shape
        d = c * h * w
        mean, cov = _streaming_covariance(data, d)
        if not per_channel or c == 1:
            evals, evecs = torch.linalg.eigh(cov)
            order = torch.argsort(evals, descending=True)
            return cls(shape, evecs[:, order].T, evals[order].clamp_min(0.0))
        hw = h * w
        rows, vals, chans = [], [], []
        for k in range(c):
            block = cov[k * hw:(k + 1) * hw, k * hw:(k + 1) * hw]
            ev, vec = torch.linalg.eigh(block)
            full = torch.zeros(hw, d, dtype=torch.float64)
            full[:, k * hw:(k + 1) * hw] = vec.T
            rows.append(full)
            vals.append(ev.clamp_min(0.0))
            chans.append(torch.full((hw,), k))
        rows_t, vals_t, chans_t = torch.cat(rows), torch.cat(vals), torch.cat(chans)
        order = torch.argsort(vals_t, descending=True)
        return cls(shape, rows_t[order], vals_t[order], chans_t[order])

    def _forward(self, x: Tensor) -> Tensor:
        u = self.components.to(x.dtype)
        return x @ u.T

    def _inverse(self, c: Tensor) -> Tensor:
        u = self.components.to(c.dtype)
        return c @ u


def _streaming_covariance(data: Tensor | Iterable[Tensor], d: int) -> tuple[Tensor, Tensor]:
    """Mean and covariance in float64, accumulated over batches (shifted sums)."""
    batches = [data] if torch.is_tensor(data) else data
    n = 0
    shift = None
    s1 = torch.zeros(d, dtype=torch.float64)
    s2 = torch.zeros(d, d, dtype=torch.float64)
    for xb in batches:
        xb = torch.as_tensor(xb)
        if xb.ndim != 2 or xb.shape[1] != d:
            raise ValueError(f"data must be flat [N, D] with D = C*H*W = {d}; got shape {tuple(xb.shape)}")
        xb = xb.to(torch.float64).cpu()
        if not torch.isfinite(xb).all():
            raise ValueError("data contains NaN or infinite values")
        if xb.shape[0] == 0:
            continue
        if shift is None:
            shift = xb[0].clone()
        xc = xb - shift
        s1 += xc.sum(0)
        s2 += xc.T @ xc
        n += xb.shape[0]
    if n < 2 or shift is None:
        raise ValueError(f"need at least two data points to fit a covariance; got {n}")
    m = s1 / n
    cov = (s2 - n * torch.outer(m, m)) / (n - 1)
    return m + shift, 0.5 * (cov + cov.T)


class FourierBasis(Basis):
    r"""Real orthonormal 2-D Fourier basis per channel, via ``torch.fft.rfft2``.

    Components are, for each independent frequency :math:`k = (k_y, k_x)`, the
    parts :math:`\sqrt2\,\mathrm{Re}\,X_k` and :math:`\sqrt2\,\mathrm{Im}\,X_k`
    of the orthonormal DFT :math:`X`; self-conjugate frequencies (:math:`k = -k`
    modulo the grid: DC and Nyquist) contribute :math:`\mathrm{Re}\,X_k` alone.
    ``meta``: ``channel``, ``ky``, ``kx`` (signed integers), ``freq``
    (:math:`|k|` in cycles per pixel), ``part`` (0 real, 1 imaginary).
    Components are ordered by channel, then by increasing ``freq``.
    """

    name = "fourier"

    def __init__(self, shape: Iterable[int]):
        super().__init__(shape)
        c, h, w = self.shape
        wr = w // 2 + 1
        # Enumerate the independent real components of one channel.
        prim, mirr, scale, ky_l, kx_l, part_l = [], [], [], [], [], []

        def flat(ky: int, kx: int, p: int) -> int:
            return ((ky % h) * wr + kx) * 2 + p

        for kx in range(wr):
            self_conj_col = kx == 0 or (w % 2 == 0 and kx == w // 2)
            for ky_i in range(h):
                ky = ky_i if ky_i <= h // 2 else ky_i - h  # signed
                if self_conj_col:
                    neg = (-ky) % h
                    if neg == ky_i:  # self-conjugate frequency: real part only
                        prim.append(flat(ky, kx, 0)); mirr.append(-1); scale.append(1.0)
                        ky_l.append(ky); kx_l.append(kx); part_l.append(0)
                        continue
                    if ky < 0 or (h % 2 == 0 and ky_i == h // 2):
                        continue  # the conjugate partner is enumerated instead
                    for p in (0, 1):
                        prim.append(flat(ky, kx, p)); mirr.append(flat(-ky, kx, p)); scale.append(math.sqrt(2))
                        ky_l.append(ky); kx_l.append(kx); part_l.append(p)
                else:
                    for p in (0, 1):
                        prim.append(flat(ky, kx, p)); mirr.append(-1); scale.append(math.sqrt(2))
                        ky_l.append(ky); kx_l.append(kx); part_l.append(p)
        assert len(prim) == h * w, (len(prim), h * w)
        ky_t = torch.tensor(ky_l)
        kx_t = torch.tensor(kx_l)
        freq = torch.sqrt((ky_t / h) ** 2 + (kx_t / w) ** 2).to(torch.float64)
        order = torch.argsort(freq * 4 + torch.tensor(part_l) * 1e-6 + torch.arange(h * w) * 1e-9, stable=True)
        sel = lambda v: torch.as_tensor(v)[order]  # noqa: E731
        scale = torch.tensor(scale, dtype=torch.float64)
        self.register_buffer("_prim", sel(prim), persistent=False)
        self.register_buffer("_mirr", sel(mirr), persistent=False)
        self.register_buffer("_scale", scale[order], persistent=False)
        self._half_len = h * wr * 2
        ch = torch.arange(c).repeat_interleave(h * w)
        self.meta = {
            "channel": ch,
            "ky": sel(ky_l).repeat(c),
            "kx": sel(kx_l).repeat(c),
            "freq": freq[order].repeat(c),
            "part": sel(part_l).repeat(c),
        }

    def _forward(self, x: Tensor) -> Tensor:
        c, h, w = self.shape
        n = x.shape[0]
        spec = torch.fft.rfft2(x.reshape(n, c, h, w), norm="ortho")
        flat = torch.view_as_real(spec).reshape(n, c, self._half_len)
        out = flat[..., self._prim] * self._scale.to(x.dtype)
        return out.reshape(n, self.dim)

    def _inverse(self, comp: Tensor) -> Tensor:
        c, h, w = self.shape
        n = comp.shape[0]
        v = comp.reshape(n, c, h * w) / self._scale.to(comp.dtype)
        flat = comp.new_zeros(n, c, self._half_len)
        flat[..., self._prim] = v
        has_m = self._mirr >= 0
        m_idx = self._mirr[has_m]
        sign = torch.where(m_idx % 2 == 1, -1.0, 1.0).to(comp.dtype)  # conj: flip imaginary parts
        flat[..., m_idx] = v[..., has_m] * sign
        spec = torch.view_as_complex(flat.reshape(n, c, h, w // 2 + 1, 2).contiguous())
        x = torch.fft.irfft2(spec, s=(h, w), norm="ortho")
        return x.reshape(n, self.dim)


class WaveletBasis(Basis):
    """Multi-level orthonormal 2-D DWT with periodic boundaries.

    Coefficients agree with ``pywt.wavedec2(x, wavelet, mode="periodization",
    level=levels)`` and are ordered like it, per channel: the approximation
    ``cA_L``, then ``(cH, cV, cD)`` from the coarsest level to the finest.
    ``meta``: ``channel``; ``scale`` (0 = approximation, 1 = coarsest details,
    ..., ``levels`` = finest details: coarse to fine); ``level`` (PyWavelets'
    decomposition level, 1 = finest; the approximation has ``levels``);
    ``orientation`` (0 approximation, 1 horizontal ``cH``, 2 vertical ``cV``,
    3 diagonal ``cD``); ``row``, ``col`` on the coefficient's own grid;
    ``col_frac`` = (col + 0.5) / grid width, the horizontal position in [0, 1].
    """

    name = "wavelet"

    def __init__(self, shape: Iterable[int], wavelet: str = "haar", levels: int | None = None):
        super().__init__(shape)
        import pywt

        if wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(
                f"unknown wavelet {wavelet!r}; use an orthogonal discrete PyWavelets name such as "
                f"'haar', 'db2', 'sym4' (see pywt.wavelist(kind='discrete'))"
            )
        wav = pywt.Wavelet(wavelet)
        if not wav.orthogonal:
            raise ValueError(f"wavelet {wavelet!r} is not orthogonal; the basis must be orthonormal")
        c, h, w = self.shape
        if levels is not None and (isinstance(levels, bool) or int(levels) != levels or levels < 1):
            raise ValueError(f"levels must be an integer >= 1 (or None: as many as H and W allow), got {levels!r}")
        if h % 2 or w % 2:
            raise ValueError(
                f"a wavelet basis needs even H and W (at least one level halves both); got shape "
                f"{(c, h, w)}: use even sizes (e.g. 8x8, 28x28, 32x32), or another basis (pixel, pca, fourier)"
            )
        if levels is None:
            levels = 0
            while h % (2 ** (levels + 1)) == 0 and w % (2 ** (levels + 1)) == 0:
                levels += 1
        if h % (2 ** levels) or w % (2 ** levels):
            most = 0
            while h % (2 ** (most + 1)) == 0 and w % (2 ** (most + 1)) == 0:
                most += 1
            raise ValueError(
                f"{levels} wavelet levels need H and W divisible by 2**{levels} = {2 ** levels}; got H={h}, W={w}, "
                f"which allow at most {most} level{'s' if most > 1 else ''}"
            )
        self.wavelet, self.levels = wavelet, int(levels)
        # analysis: lo[k] = sum_m dec_lo[L-1-m] x[(2k + m - (L/2 - 1)) mod n], as pywt "periodization"
        self._lo = tuple(float(v) for v in wav.dec_lo[::-1])
        self._hi = tuple(float(v) for v in wav.dec_hi[::-1])
        self._flen = len(self._lo)
        self.meta = self._make_meta()

    # 1-D periodic analysis / synthesis along the last axis.  The filters are short, so a
    # sum over taps of strided slices beats a convolution call at these sizes.
    def _index(self, n: int, device) -> Tensor:
        pad_left = self._flen // 2 - 1
        return (torch.arange(n + self._flen - 2, device=device) - pad_left) % n

    def _analysis(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n = x.shape[-1]
        xp = x if self._flen == 2 else x[..., self._index(n, x.device)]  # Haar needs no wrap
        taps = [xp[..., m:m + n:2] for m in range(self._flen)]
        lo = sum(h * v for h, v in zip(self._lo, taps))
        hi = sum(g * v for g, v in zip(self._hi, taps))
        return lo, hi

    def _synthesis(self, lo: Tensor, hi: Tensor) -> Tensor:
        n = 2 * lo.shape[-1]
        xp = lo.new_zeros(*lo.shape[:-1], n + self._flen - 2)
        for m in range(self._flen):
            xp[..., m:m + n:2] += self._lo[m] * lo + self._hi[m] * hi
        if self._flen == 2:
            return xp
        return lo.new_zeros(*lo.shape[:-1], n).index_add_(-1, self._index(n, lo.device), xp)

    def _dwt2(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        lo_w, hi_w = self._analysis(x)  # along W
        t = lambda a: a.transpose(-1, -2)  # noqa: E731
        ll, hl = self._analysis(t(lo_w))  # along H
        lh, hh = self._analysis(t(hi_w))
        # pywt: cH = hi along H, lo along W; cV = lo along H, hi along W
        return t(ll), t(hl), t(lh), t(hh)

    def _idwt2(self, ca: Tensor, ch: Tensor, cv: Tensor, cd: Tensor) -> Tensor:
        t = lambda a: a.transpose(-1, -2)  # noqa: E731
        lo_w = t(self._synthesis(t(ca), t(ch)))
        hi_w = t(self._synthesis(t(cv), t(cd)))
        return self._synthesis(lo_w, hi_w)

    def _forward(self, x: Tensor) -> Tensor:
        c, h, w = self.shape
        a = x.reshape(-1, c, h, w)
        details = []
        for _ in range(self.levels):
            a, ch_, cv, cd = self._dwt2(a)
            details.append((ch_, cv, cd))
        parts = [a.flatten(2)]
        for ch_, cv, cd in reversed(details):
            parts += [ch_.flatten(2), cv.flatten(2), cd.flatten(2)]
        return torch.cat(parts, -1).reshape(x.shape[0], self.dim)

    def _inverse(self, comp: Tensor) -> Tensor:
        c, h, w = self.shape
        n = comp.shape[0]
        v = comp.reshape(n, c, h * w)
        hl, wl = h >> self.levels, w >> self.levels
        pos = hl * wl
        a = v[..., :pos].reshape(n, c, hl, wl)
        for _ in range(self.levels):
            k = hl * wl
            ch_, cv, cd = (v[..., pos + i * k: pos + (i + 1) * k].reshape(n, c, hl, wl) for i in range(3))
            pos += 3 * k
            a = self._idwt2(a, ch_, cv, cd)
            hl, wl = 2 * hl, 2 * wl
        return a.reshape(n, self.dim)

    def _make_meta(self) -> dict[str, Tensor]:
        c, h, w = self.shape
        scale, level, orient, row, col, frac = [], [], [], [], [], []

        def block(s: int, lev: int, o: int, hh: int, ww: int) -> None:
            r, cc = torch.meshgrid(torch.arange(hh), torch.arange(ww), indexing="ij")
            scale.append(torch.full((hh * ww,), s)); level.append(torch.full((hh * ww,), lev))
            orient.append(torch.full((hh * ww,), o)); row.append(r.flatten()); col.append(cc.flatten())
            frac.append((cc.flatten().to(torch.float64) + 0.5) / ww)

        hl, wl = h >> self.levels, w >> self.levels
        block(0, self.levels, 0, hl, wl)
        for s in range(1, self.levels + 1):
            for o in (1, 2, 3):
                block(s, self.levels - s + 1, o, hl, wl)
            hl, wl = 2 * hl, 2 * wl
        per = {k: torch.cat(v) for k, v in
               dict(scale=scale, level=level, orientation=orient, row=row, col=col, col_frac=frac).items()}
        meta = {k: v.repeat(c) for k, v in per.items()}
        meta["channel"] = torch.arange(c).repeat_interleave(h * w)
        return meta


def _moved_copy(module: nn.Module, *args, **kwargs) -> nn.Module:
    """A deep copy of ``module`` with ``nn.Module.to(*args, **kwargs)`` applied to the copy."""
    out = copy.deepcopy(module)
    nn.Module.to(out, *args, **kwargs)
    return out


BASES = ("pixel", "pca", "fourier", "wavelet")


def make_basis(name: str, shape: Iterable[int], data: Tensor | None = None, **kwargs) -> Basis:
    """Build a basis by name: ``"pixel"``, ``"pca"`` (needs ``data [N, D]``),
    ``"fourier"``, ``"wavelet"`` (``wavelet="haar"``, ``levels=None``) or ``"haar"``."""
    key = str(name).lower()
    if key == "pixel":
        return PixelBasis(shape, **kwargs)
    if key == "pca":
        if data is None:
            raise ValueError("the PCA basis is fitted to data: pass data=[N, D]")
        return PCABasis.fit(data, shape, **kwargs)
    if key == "fourier":
        return FourierBasis(shape, **kwargs)
    if key in ("wavelet", "haar"):
        if key == "haar":
            kwargs.setdefault("wavelet", "haar")
        return WaveletBasis(shape, **kwargs)
    raise ValueError(f"unknown basis {name!r}; choose one of {BASES + ('haar',)}")


def rank_labels(values: Tensor, descending: bool = False) -> Tensor:
    """Ranks ``0 .. D-1`` of ``values`` (ties broken by index), as float64 labels."""
    order = torch.argsort(torch.as_tensor(values), descending=descending, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel())
    return ranks.to(torch.float64)
