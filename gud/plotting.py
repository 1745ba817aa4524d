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

__all__ = ["to_images", "image_grid", "plot_snr_paths", "tile", "show_tiles", "curves", "text_px", "pm", "se_heatmap",
           "wavelet_mosaic", "mosaic", "draw_windows", "wavelet_trajectory"]


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


# ----------------------------------------------------------------------------- legibility


def text_px(fig, dpi: float = 100.0) -> tuple[float, float]:
    """The smallest drawn text of ``fig`` in pixels when the figure is shown at ``dpi`` pixels
    per inch, and the figure's width in inches as saved (tight bounding box).

    Text of hidden axes, empty strings and invisible artists are ignored. Shown ``s`` times
    smaller than that (a page narrower than the figure), the text is ``s`` times smaller too.
    """
    from matplotlib.text import Text

    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    hidden: set[int] = set()
    for ax in fig.axes:
        if not ax.get_visible():
            hidden.update(id(t) for t in ax.findobj(Text))
        elif not ax.axison:  # axis switched off: its tick labels and axis labels are not drawn
            hidden.update(id(t) for axis in (ax.xaxis, ax.yaxis) for t in axis.findobj(Text))
    sizes = []
    for t in fig.findobj(Text):
        if id(t) in hidden or not t.get_visible() or not t.get_text().strip():
            continue
        if t.get_window_extent(renderer).width <= 0:  # not drawn (e.g. a tick outside the view)
            continue
        sizes.append(t.get_fontsize())
    width_in = fig.get_tightbbox(renderer).width + 0.2  # savefig's default pad_inches = 0.1 each side
    return (min(sizes) * dpi / 72.0 if sizes else float("inf")), float(width_in)


# ----------------------------------------------------------------------------- tables of numbers


def pm(mean: float, se: float, digits: int = 3) -> str:
    """``"mean ± se"`` with ``digits`` decimals."""
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def se_heatmap(ax, mean, se, *, xticks: Sequence[str], yticks: Sequence[str], fmt: str = "{:.3f}",
               cmap: str = "magma_r", min_span_se: float = 4.0, fontsize: float = 9, colorbar_label: str = "",
               diff_se=None):
    """A map of ``mean [rows, cols]`` (lower is better) with ``mean`` and ``± se`` in every
    cell. The best cell is framed with a thick line, every cell within two combined standard
    errors of it, ``m - m_best <= 2 sqrt(se² + se_best²)``, with a thin dashed one; where the
    standard error of each cell's difference from the best is known (``diff_se``, e.g. paired over
    the same test images), ``m - m_best <= 2 diff_se`` instead. The colour
    range starts at the best value and spans at least ``min_span_se`` median standard errors,
    so that differences within the noise do not fill the colour scale. Returns
    ``(image, indistinguishable mask)``."""
    import matplotlib.pyplot as plt

    m, s = _numpy(mean), _numpy(se)
    if m.shape != s.shape or m.ndim != 2:
        raise ValueError(f"mean and se must be 2-d arrays of one shape; got {m.shape} and {s.shape}")
    bi = np.unravel_index(np.nanargmin(m), m.shape)
    best, sb = m[bi], s[bi]
    if diff_se is None:
        close = (m - best) <= 2 * np.sqrt(s**2 + sb**2)
    else:
        d = _numpy(diff_se)
        if d.shape != m.shape:
            raise ValueError(f"diff_se must have the shape of mean {m.shape}; got {d.shape}")
        close = (m - best) <= 2 * d
    close[bi] = True
    span = max(np.nanmax(m) - best, min_span_se * float(np.nanmedian(s)), 1e-12)
    im = ax.imshow(m, origin="lower", cmap=cmap, aspect="auto", vmin=best, vmax=best + span)
    for (i, j), v in np.ndenumerate(m):
        if np.isfinite(v):
            dark = (v - best) / span > 0.55 if cmap.endswith("_r") else (v - best) / span < 0.55
            ax.text(j, i, f"{fmt.format(v)}\n± {fmt.format(s[i, j])}", ha="center", va="center", fontsize=fontsize,
                    linespacing=1.1, color="w" if dark else "k")
        if close[i, j]:
            thick = (i, j) == tuple(bi)
            ax.add_patch(plt.Rectangle((j - 0.46, i - 0.46), 0.92, 0.92, fill=False, ec="C0" if thick else "C2",
                                       lw=3 if thick else 1.8, ls="-" if thick else "--"))
    ax.set_xticks(range(m.shape[1]), list(xticks))
    ax.set_yticks(range(m.shape[0]), list(yticks))
    if colorbar_label:
        ax.figure.colorbar(im, ax=ax, label=colorbar_label, fraction=0.05)
    return im, close


# ----------------------------------------------------------------------------- wavelet coefficients


def wavelet_mosaic(vec, shape: Sequence[int], levels: int) -> np.ndarray:
    """The coefficients of the first channel of a flat multi-level 2-d wavelet vector (PyWavelets
    order: approximation, then per level from coarse to fine the (H, V, D) details) in the usual
    layout ``[H, W]``: approximation top left, each level's details below, right and diagonal."""
    _, h, w = (int(x) for x in shape)
    v = _numpy(vec).reshape(-1)
    if v.size < h * w or h % (1 << levels) or w % (1 << levels):
        raise ValueError(f"a {levels}-level mosaic of shape {tuple(shape)} needs H, W divisible by "
                         f"{1 << levels} and at least {h * w} coefficients; got {v.size}")
    out, hl, wl = np.zeros((h, w)), h >> levels, w >> levels
    out[:hl, :wl] = v[:hl * wl].reshape(hl, wl)
    pos = hl * wl
    for _ in range(levels):
        for o, (r0, c0) in enumerate([(hl, 0), (0, wl), (hl, wl)]):
            out[r0:r0 + hl, c0:c0 + wl] = v[pos + o * hl * wl:pos + (o + 1) * hl * wl].reshape(hl, wl)
        pos, hl, wl = pos + 3 * hl * wl, 2 * hl, 2 * wl
    return out


def mosaic(ax, x, shape: Sequence[int], ncols: int, scale: str = "data", row_labels: Sequence[str] = (),
           col_labels: Sequence[str] = ()):
    """Flat images ``x [N, D]`` drawn on ``ax`` as one picture, ``ncols`` per row with small
    gaps (white for data, grey for ``scale="symmetric"``), row labels left, column labels on top."""
    import matplotlib.pyplot as plt

    imgs = to_images(x, shape, scale)  # [N, H, W] or [N, H, W, 3] in [0, 1]
    n, h, w = imgs.shape[:3]
    nrows, gap = -(-n // ncols), max(1, h // 12)
    canvas = np.full((nrows * (h + gap) - gap, ncols * (w + gap) - gap) + imgs.shape[3:], np.nan)
    for k, im in enumerate(imgs):
        r, c = divmod(k, ncols)
        canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = im
    cmap = plt.get_cmap("gray" if scale == "data" else "RdBu_r")
    cmap = cmap.with_extremes(bad="white" if scale == "data" else "0.8")  # gaps stand out from zero
    ax.imshow(np.nan_to_num(canvas, nan=1.0) if canvas.ndim == 3 else canvas, cmap=cmap, vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([c * (w + gap) + (w - 1) / 2 for c in range(len(col_labels))], list(col_labels))
    ax.set_yticks([r * (h + gap) + (h - 1) / 2 for r in range(len(row_labels))], list(row_labels))
    ax.tick_params(length=0, labeltop=True, labelbottom=False)
    ax.spines[:].set_visible(False)
    return ax


def draw_windows(ax, start, end, labels, norm, cmap: str = "viridis"):
    """Active windows ``[start_i, end_i]`` in t as horizontal bars, one per component, sorted
    by ``labels`` (bottom: smallest) and coloured by ``norm(labels)``."""
    import matplotlib.pyplot as plt

    start, end, labels = _numpy(start), _numpy(end), _numpy(labels)
    order = np.argsort(labels, kind="stable")
    ax.hlines(np.arange(labels.size), start[order], end[order], colors=plt.get_cmap(cmap)(norm(labels[order])),
              lw=max(0.3, min(2.0, 150 / labels.size)))
    ax.set_xlim(0, 1)
    ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])
    ax.set_ylim(-0.5, labels.size - 0.5)
    return ax


def wavelet_trajectory(traj, neg_log_snr, shape: Sequence[int], levels: int, norm, cmap: str = "viridis") -> np.ndarray:
    """One picture ``[rows, cols, 3]`` of a generation in a wavelet basis: the predicted clean
    images ``traj [T, n, D]`` (one row per sample, one column per time), and below them, per
    time, the ``-log SNR [T, D]`` of every coefficient as a :func:`wavelet_mosaic` coloured by
    ``cmap(norm(.))``."""
    import matplotlib.pyplot as plt

    _, h, w = (int(x) for x in shape)
    imgs = tile(_numpy(traj).transpose(1, 0, 2), shape)
    imgs = np.repeat(imgs[..., None], 3, -1) if imgs.ndim == 2 else imgs
    row = np.ones((h + 2, imgs.shape[1], 3))
    for k, g in enumerate(_numpy(neg_log_snr)):
        row[2:, k * (w + 1):k * (w + 1) + w] = plt.get_cmap(cmap)(norm(wavelet_mosaic(g, shape, levels)))[..., :3]
    return np.concatenate([imgs, row])
