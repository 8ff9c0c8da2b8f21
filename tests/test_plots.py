"""Dataset-tour plots: they return Figures with the expected axes, without touching pyplot state."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from crosslab.data import make_scenes
from crosslab.plots import plot_dataset_summary, show_images


def _pyplot_figures() -> int:
    import matplotlib.pyplot as plt

    return len(plt.get_fignums())


def test_show_images_grid(tmp_path):
    ds = make_scenes(12, seed=0)
    n_before = _pyplot_figures()
    fig = show_images(ds, [0, 3, 5, 7, 9], ncols=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    geoms = {ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes}
    assert geoms == {(2, 3)}
    # the wrapped captions are the axes' labels, and the pixels are the scene's
    assert fig.axes[1].get_xlabel().split("\n")[0] in ds.image_captions(3)[0]
    shown = fig.axes[1].get_images()[0].get_array()
    assert np.array_equal(np.asarray(shown), ds.images[3])
    fig.savefig(tmp_path / "grid.png")  # renders with whatever backend is active (Agg in CI)
    assert _pyplot_figures() == n_before


def test_show_images_defaults_and_no_captions():
    ds = make_scenes(3, seed=1)
    assert len(show_images(ds).axes) == 3
    fig = show_images(ds, [0, 1], captions=False, ncols=5)
    assert len(fig.axes) == 2 and all(ax.get_xlabel() == "" for ax in fig.axes)


def test_plot_dataset_summary(tmp_path):
    ds = make_scenes(60, seed=2)
    fig = plot_dataset_summary(ds, by="n_objects")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    ax_cat, ax_split, ax_len = fig.axes
    # stacked bars: per category, the heights over splits add up to the category's count
    total = sum(p.get_width() for p in ax_cat.patches)
    assert total == len(ds)
    heights = [p.get_height() for p in ax_split.patches]
    assert heights == [int((ds.split == s).sum()) for s in ("train", "val", "test")]
    counts = sum(p.get_height() for p in ax_len.patches)
    assert counts == ds.n_captions
    fig.savefig(tmp_path / "summary.png")
    assert matplotlib.get_backend()  # nothing above switched or required a GUI backend
