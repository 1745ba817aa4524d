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


def test_text_px_smallest_text_and_width():
    from gud.plotting import text_px

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.set_title("title", fontsize=14)
    ax.tick_params(labelsize=7)
    ax.text(0.5, 0.5, "", fontsize=2)  # empty: ignored
    px, width = text_px(fig, dpi=72)
    assert px == pytest.approx(7.0)  # 7 pt at 72 px per inch
    assert 3.0 < width < 4.5
    hidden, ax2 = plt.subplots(figsize=(4, 3))
    ax2.tick_params(labelsize=3)
    ax2.set_axis_off()
    ax2.set_title("shown", fontsize=12)
    assert text_px(hidden, dpi=144)[0] == pytest.approx(24.0)  # hidden axes' ticks do not count
    plt.close("all")


def test_se_heatmap_marks_cells_within_two_combined_se_and_spans_the_noise():
    from gud.plotting import se_heatmap

    mean = np.array([[1.00, 1.01], [1.05, 1.50]])
    se = np.full((2, 2), 0.01)
    fig, ax = plt.subplots()
    im, close = se_heatmap(ax, mean, se, xticks=["a", "b"], yticks=["c", "d"])
    # 1.01 - 1.00 = 0.01 <= 2 * sqrt(2) * 0.01; 0.05 is not
    assert close.tolist() == [[True, True], [False, False]]
    assert im.get_clim() == pytest.approx((1.00, 1.50))
    flat = np.array([[1.000, 1.001], [1.002, 1.003]])
    im, _ = se_heatmap(ax, flat, se, xticks=["a", "b"], yticks=["c", "d"])
    assert im.get_clim()[1] - im.get_clim()[0] == pytest.approx(4 * 0.01)  # not the 0.003 range of the noise
    # paired differences: far smaller errors than the cells' own, so fewer cells tie with the best
    _, close = se_heatmap(ax, mean, se, xticks=["a", "b"], yticks=["c", "d"], diff_se=np.full((2, 2), 0.001))
    assert close.tolist() == [[True, False], [False, False]]
    with pytest.raises(ValueError):
        se_heatmap(ax, mean, se[:1], xticks=[], yticks=[])
    plt.close(fig)


def test_wavelet_mosaic_layout_matches_pywavelets():
    pywt = pytest.importorskip("pywt")
    from gud.plotting import wavelet_mosaic

    img = np.arange(64.0).reshape(8, 8)
    coeffs = pywt.wavedec2(img, "haar", level=2, mode="periodization")
    flat = np.concatenate([coeffs[0].ravel()] + [c.ravel() for lev in coeffs[1:] for c in lev])
    arr, _ = pywt.coeffs_to_array(coeffs)  # PyWavelets' own layout of the same coefficients
    np.testing.assert_allclose(wavelet_mosaic(flat, (1, 8, 8), 2), arr)
    with pytest.raises(ValueError):
        wavelet_mosaic(flat[:10], (1, 8, 8), 2)


def test_wavelet_trajectory_and_windows_draw():
    from matplotlib.colors import Normalize

    from gud.plotting import draw_windows, wavelet_trajectory

    traj = np.zeros((3, 2, 16))  # 3 times, 2 samples, 4x4 grey images
    pic = wavelet_trajectory(traj, np.linspace(0, 1, 48).reshape(3, 16), (1, 4, 4), 1, Normalize(0, 1))
    assert pic.shape == (2 * 5 - 1 + 6, 3 * 5 - 1, 3)  # two image rows, then the mosaics 2 px below
    np.testing.assert_allclose(pic[:4, :4], 0.5)  # zero pixels are mid grey
    fig, ax = plt.subplots()
    draw_windows(ax, np.zeros(3), np.ones(3), np.array([2.0, 0.0, 1.0]), Normalize(0, 2))
    assert ax.get_xlim() == (0, 1) and ax.get_ylim() == (-0.5, 2.5)
    plt.close(fig)


def _chapter(monkeypatch, tmp_path, shown=[]):  # noqa: B006 (collects the displayed HTML)
    from gud import book

    monkeypatch.setattr(book, "save_figure", lambda fig, stem, profile: _save(fig, tmp_path / f"{stem}.png"))
    monkeypatch.setattr(book, "display_html", shown.append)
    ch = book.Chapter("e1", "ci", {"seeds": [0, 1], "sampler": "dpmpp_3m_sde", "sampler_steps": 49})
    ch.shown_profile = "ci"
    monkeypatch.setattr(book, "_CURRENT", ch)
    return ch, shown


def _save(fig, path):
    fig.savefig(path, dpi=50)
    return path


def test_chapter_numbers_figures_and_tables_per_chapter(monkeypatch, tmp_path):
    from gud import book

    ch, shown = _chapter(monkeypatch, tmp_path, [])
    for name in ("e1-curves", "e1-samples"):
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot([0, 1])
        ch.figure(fig, name, "What is shown.", sampler=True)
    for ds in ("mnist", "cifar10"):
        fig, ax = plt.subplots(figsize=(4, 3))
        ch.figure(fig, "e1-grid", "Per data set.", part=ds)
    book.table(["a"], [[1]], caption="numbers")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "e1-1-curves.png", "e1-2-samples.png", "e1-3a-grid-mnist.png", "e1-3b-grid-cifar10.png"]
    assert 'id="fig-e1-2"' in shown[1] and "<b>Figure E1.2.</b> What is shown." in shown[1]
    assert "seeds 0, 1" in shown[1] and "DPM-Solver++(3M) SDE, 49 steps" in shown[1] and "profile ci" in shown[1]
    assert 'id="fig-e1-3b"' in shown[3] and "Figure E1.3b." in shown[3]
    assert 'id="tab-e1-1"' in shown[4] and "Table E1.1. Numbers; profile ci." in shown[4]


def test_chapter_figure_refuses_text_too_small_at_page_width(monkeypatch, tmp_path):
    ch, _ = _chapter(monkeypatch, tmp_path, [])
    fig, ax = plt.subplots(figsize=(14, 3))  # shown at the 672 px column: about half size
    ax.set_title("title", fontsize=10)
    ax.tick_params(labelsize=8)
    with pytest.raises(ValueError, match="smallest text"):
        ch.figure(fig, "e1-wide")
    assert not list(tmp_path.iterdir())


def test_settings_rows_in_words():
    from gud.book import settings_rows

    rows = dict(settings_rows({"basis": "pca", "sampler": "dpmpp_3m_sde", "seeds": [0, 1], "net_kwargs": {"hidden": 8},
                               "limit": None, "eval_every": 200, "label_rows": {"x": 1}}))
    assert rows == {"basis": "PCA", "sampler": "DPM-Solver++(3M) SDE", "seeds": "0, 1", "network size": "hidden 8",
                    "validation loss every (steps)": "200"}
