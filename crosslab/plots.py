"""Matplotlib helpers used by the notebooks.

All functions build figures with matplotlib's object API (``Figure`` +
``add_subplot``), never through pyplot's global state, so they work under the
Agg backend, in tests and in notebooks alike, and return the ``Figure``.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from .data.base import SPLITS, CaptionedImages

# =====================================================================================
# Dataset tour (lesson 00): image grids with captions, counts per category and split
# =====================================================================================


def show_images(
    ds: CaptionedImages,
    indices: Sequence[int] | np.ndarray | None = None,
    captions: bool = True,
    ncols: int = 4,
    max_captions: int = 2,
    width: int = 28,
) -> Figure:
    """A grid of images (one axes each) with their first ``max_captions`` captions wrapped below.

    ``indices`` defaults to the first ``ncols * 2`` images.
    """
    if indices is None:
        indices = range(min(len(ds), ncols * 2))
    indices = [int(i) for i in indices]
    n = len(indices)
    ncols = max(1, min(ncols, n))
    nrows = max(1, -(-n // ncols))
    lines = 0
    texts = []
    for i in indices:
        if captions:
            caps = ds.image_captions(i)[:max_captions]
            t = "\n".join(textwrap.fill(c, width, max_lines=3, placeholder=" ...") for c in caps)
        else:
            t = ""
        texts.append(t)
        lines = max(lines, t.count("\n") + 1 if t else 0)
    fig = Figure(figsize=(2.6 * ncols, nrows * (2.6 + 0.17 * lines)), layout="constrained")
    for k, i in enumerate(indices):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.imshow(np.asarray(ds.load_image(i)))
        ax.set_xticks([])
        ax.set_yticks([])
        if texts[k]:
            ax.set_xlabel(texts[k], fontsize=8, loc="left")
    return fig


def plot_dataset_summary(ds: CaptionedImages, by: str = "category", top: int = 20) -> Figure:
    """Three panels: images per category and split (stacked bars), images per split, caption lengths.

    The category is ``meta[i][by]`` (clip art: top-level folder; image folders
    use ``by="label"``); datasets without it show one bar.
    """
    fig = Figure(figsize=(13, 4), layout="constrained")
    ax_cat, ax_split, ax_len = fig.subplots(1, 3, width_ratios=(2.2, 1, 1.4))
    cats = [str((m or {}).get(by, "all")) for m in ds.meta] if ds.meta else ["all"] * len(ds)
    order = [c for c, _ in Counter(cats).most_common(top)]
    splits = [s for s in SPLITS if (ds.split == s).any()] or [""]
    cats_arr = np.asarray(cats, dtype=object)
    left = np.zeros(len(order))
    y = np.arange(len(order))
    for s in splits:
        counts = np.array([np.sum((cats_arr == c) & (ds.split == s)) for c in order])
        ax_cat.barh(y, counts, left=left, label=s or "no split")
        left += counts
    ax_cat.set_yticks(y, order, fontsize=8)
    ax_cat.invert_yaxis()
    ax_cat.set_xlabel("images")
    ax_cat.set_title(f"images per {by}" + (f" (top {top})" if len(set(cats)) > top else ""))
    ax_cat.legend(fontsize=8)

    split_counts = [int(np.sum(ds.split == s)) for s in splits]
    bars = ax_split.bar([s or "no split" for s in splits], split_counts, color="C1")
    ax_split.bar_label(bars, fontsize=8)
    ax_split.set_title("images per split")

    lengths = np.array([len(c.split()) for c in ds.captions])
    ax_len.hist(lengths, bins=np.arange(0.5, min(lengths.max(), 60) + 1.5), color="C2")
    ax_len.set_xlabel("words per caption")
    ax_len.set_ylabel("captions")
    ax_len.set_title(f"caption length (median {np.median(lengths):.0f} words)")
    return fig


# ======================================= end of dataset tour =========================
