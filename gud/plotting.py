"""Small plotting helpers shared by the book's chapters.

* :func:`to_images` -- flat data ``x [N, D]`` in [-1, 1] to displayable arrays
  ``[N, H, W]`` (one channel) or ``[N, H, W, 3]`` in [0, 1].
* :func:`image_grid` -- a grid of flat images with optional row and column titles.
* :func:`plot_snr_paths` -- true log SNR against time, one line per component,
  coloured by its ordering label.

Only matplotlib and numpy; inputs may be torch tensors or numpy arrays.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["to_images", "image_grid", "plot_snr_paths", "tile", "show_tiles", "curves"]


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def to_images(x, shape: Sequence[int], scale: str = "data") -> np.ndarray:
    """Flat images ``x [N, D]`` (``D = C*H*W``) as ``[N, H, W]`` or ``[N, H, W, C]`` in [0, 1].

    ``scale="data"``: pixels in [-1, 1] map to [0, 1] (clipped).
    ``scale="symmetric"``: each image is divided by its largest absolute value and
    0 maps to 0.5 (for basis vectors and noise, which have no natural range).
    """
    c, h, w = (int(s) for s in shape)
    a = _numpy(x).reshape(-1, c, h, w)
    if scale == "data":
        a = (a + 1.0) / 2.0
    elif scale == "symmetric":
        m = np.abs(a).reshape(a.shape[0], -1).max(1)
        a = 0.5 + 0.5 * a / np.where(m > 0, m, 1.0)[:, None, None, None]
    else:
        raise ValueError(f"scale must be 'data' or 'symmetric', got {scale!r}")
    a = np.clip(a, 0.0, 1.0)
    return a[:, 0] if c == 1 else a.transpose(0, 2, 3, 1)


def image_grid(x, shape: Sequence[int], ncols: int | None = None, *, scale: str = "data",
               titles: Sequence[str] | None = None, row_labels: Sequence[str] | None = None,
               cmap: str | None = None, size: float = 1.2, fig=None):
    """Show flat images ``x [N, D]`` on a grid of ``ceil(N / ncols)`` rows; returns the figure.

    ``titles`` (one per image) go above the images, ``row_labels`` (one per row) on the
    left.  One-channel images use ``cmap`` (default ``"gray"`` for ``scale="data"``,
    ``"RdBu_r"`` for ``"symmetric"``, fixed to [0, 1] so that 0.5 means zero).
    """
    import matplotlib.pyplot as plt

    imgs = to_images(x, shape, scale)
    n = imgs.shape[0]
    ncols = n if ncols is None else int(ncols)
    nrows = max(1, -(-n // ncols))
    if fig is None:
        fig = plt.figure(figsize=(size * ncols + (0.8 if row_labels else 0), size * nrows + (0.3 if titles else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    if cmap is None:
        cmap = "gray" if scale == "data" else "RdBu_r"
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([]); ax.set_yticks([])
        if k >= n:
            ax.set_axis_off()
            continue
        ax.imshow(imgs[k], cmap=cmap if imgs[k].ndim == 2 else None, vmin=0.0, vmax=1.0,
                  interpolation="nearest")
        if titles is not None and k < len(titles):
            ax.set_title(titles[k], fontsize=8)
    if row_labels is not None:
        for r, label in enumerate(row_labels[:nrows]):
            axes[r, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    return fig


def plot_snr_paths(ax, t, log_snr, labels, *, cmap: str = "viridis", max_lines: int = 256,
                   label_name: str = "label", colorbar: bool = True, linewidth: float = 0.8):
    """Plot ``log_snr [T, D]`` against ``t [T]``, one line per component coloured by
    ``labels [D]``; at most ``max_lines`` components (evenly spaced in label order).

    Returns the ``LineCollection``.  A horizontal band is not drawn: callers mark
    thresholds themselves.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    t, s, lab = _numpy(t).reshape(-1), _numpy(log_snr), _numpy(labels).reshape(-1)
    if s.shape != (t.size, lab.size):
        raise ValueError(f"log_snr must be [T, D] = [{t.size}, {lab.size}], got {s.shape}")
    order = np.argsort(lab, kind="stable")
    if order.size > max_lines:
        order = order[np.linspace(0, order.size - 1, max_lines).round().astype(int)]
    segs = np.stack([np.broadcast_to(t, (order.size, t.size)), s[:, order].T], -1)  # [L, T, 2]
    norm = Normalize(lab.min(), lab.max() if lab.max() > lab.min() else lab.min() + 1)
    lc = LineCollection(segs, cmap=cmap, norm=norm, linewidths=linewidth)
    lc.set_array(lab[order])
    ax.add_collection(lc)
    ax.set_xlim(t.min(), t.max())
    lo, hi = np.nanmin(s), np.nanmax(s)
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("t")
    ax.set_ylabel("true log SNR")
    if colorbar:
        ax.figure.colorbar(lc, ax=ax, label=label_name)
    return lc


def tile(images, shape: Sequence[int], gap: int = 1, fill: float = 1.0) -> np.ndarray:
    """Images ``[rows, cols, D]`` (flat, in [-1, 1]) as one picture ``[rows*(H+gap)-gap,
    cols*(W+gap)-gap(, 3)]`` in [0, 1] with ``gap`` pixels of ``fill`` between images."""
    c, h, w = (int(s) for s in shape)
    a = _numpy(images)
    if a.ndim != 3:
        raise ValueError(f"images must be [rows, cols, D]; got shape {a.shape}")
    r, k = a.shape[:2]
    a = np.clip((a.reshape(r, k, c, h, w) + 1) / 2, 0, 1)
    out = np.full((c, r * (h + gap) - gap, k * (w + gap) - gap), fill)
    for i in range(r):
        for j in range(k):
            out[:, i * (h + gap):i * (h + gap) + h, j * (w + gap):j * (w + gap) + w] = a[i, j]
    return out[0] if c == 1 else out.transpose(1, 2, 0)


def show_tiles(ax, images, shape: Sequence[int], *, row_labels: Sequence[str] | None = None,
               col_labels: Sequence[str] | None = None, gap: int = 1, title: str | None = None,
               fontsize: float = 9):
    """Draw :func:`tile` on ``ax`` with row labels on the left and column labels on top."""
    pic = tile(images, shape, gap)
    _, h, w = (int(s) for s in shape)
    ax.imshow(pic, cmap="gray" if pic.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    r, k = _numpy(images).shape[:2]
    ax.set_yticks([i * (h + gap) + h / 2 - 0.5 for i in range(r)], row_labels or [], fontsize=fontsize)
    ax.set_xticks([j * (w + gap) + w / 2 - 0.5 for j in range(k)], col_labels or [], fontsize=fontsize)
    ax.tick_params(length=0)
    if col_labels:
        ax.xaxis.tick_top()
    for side in ax.spines.values():
        side.set_visible(False)
    if title:
        ax.set_title(title, fontsize=fontsize + 1)
    return ax


def curves(ax, history, *, label: str | None = None, **kw):
    """Plot a training history ``[(step, value), ...]`` (array ``[n, 2]``)."""
    h = _numpy(history)
    if h.size:
        ax.plot(h[:, 0], h[:, 1], label=label, **kw)
    return ax
