"""Tests of gud.plotting: image conversion, grid layout, SNR-path colouring."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gud.plotting import image_grid, plot_snr_paths, to_images  # noqa: E402


def test_to_images_shapes_and_range():
    x = torch.linspace(-2, 2, 2 * 3 * 4 * 5).reshape(2, 60)
    rgb = to_images(x, (3, 4, 5))
    assert rgb.shape == (2, 4, 5, 3) and rgb.min() == 0.0 and rgb.max() == 1.0
    # channel-first flat layout: pixel (0, 0) of channel 1 is element H*W
    np.testing.assert_allclose(rgb[0, 0, 0, 1], np.clip((x[0, 20].item() + 1) / 2, 0, 1))
    gray = to_images(np.zeros((3, 16)), (1, 4, 4))
    assert gray.shape == (3, 4, 4) and np.all(gray == 0.5)
    sym = to_images(torch.tensor([[0.0, -0.5, 0.25, 0.5]]), (1, 2, 2), scale="symmetric")
    np.testing.assert_allclose(sym.ravel(), [0.5, 0.0, 0.75, 1.0])
    with pytest.raises(ValueError):
        to_images(x, (3, 4, 5), scale="nope")


def test_image_grid_layout():
    fig = image_grid(torch.zeros(7, 16), (1, 4, 4), ncols=3, titles=list("abcdefg"), row_labels=["r0", "r1", "r2"])
    axes = fig.axes
    assert len(axes) == 9  # 3 rows x 3 columns, two left empty
    assert sum(len(ax.images) for ax in axes) == 7
    assert axes[0].get_title() == "a" and axes[3].get_ylabel() == "r1"
    plt.close(fig)


def test_plot_snr_paths_colours_by_label():
    t = torch.linspace(0, 1, 5)
    labels = torch.tensor([2.0, 0.0, 1.0])
    log_snr = -(t[:, None] * 10 + labels[None])  # [T, D]
    fig, ax = plt.subplots()
    lc = plot_snr_paths(ax, t, log_snr, labels, colorbar=False)
    segs = lc.get_segments()
    assert len(segs) == 3
    np.testing.assert_allclose(lc.get_array(), [0.0, 1.0, 2.0])  # sorted by label
    np.testing.assert_allclose(segs[0][:, 1], log_snr[:, 1].numpy())  # first line = label 0 = component 1
    with pytest.raises(ValueError):
        plot_snr_paths(ax, t, log_snr.T, labels)
    plt.close(fig)
    fig, ax = plt.subplots()
    assert len(plot_snr_paths(ax, t, torch.zeros(5, 1000), torch.arange(1000.0), max_lines=50).get_segments()) == 50
    plt.close(fig)


def test_active_windows_limits():
    from gud.experiments.framework import active_windows, max_overlap
    from gud.schedules import SoftConditioningSchedule

    ranks = torch.arange(8, dtype=torch.float64)
    zeros = torch.zeros(8, dtype=torch.float64)
    together = SoftConditioningSchedule(ranks, zeros, a=0.0, gamma_denoise=-7, gamma_noise=3)
    start, end = active_windows(together)
    assert torch.allclose(start, zeros) and torch.allclose(end, torch.ones(8, dtype=torch.float64))
    assert max_overlap(start, end) == 8
    autoregressive = SoftConditioningSchedule(ranks, zeros, a=10.0, gamma_denoise=-7, gamma_noise=3)
    start, end = active_windows(autoregressive)
    assert max_overlap(start, end) == 1 and torch.allclose(end - start, torch.full((8,), 1 / 8, dtype=torch.float64))
