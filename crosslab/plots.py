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


# =====================================================================================
# Lessons 01-05: word and feature maps, neighbours, training curves, heatmaps, results
# =====================================================================================


def pca_2d(X: np.ndarray) -> np.ndarray:
    """Project ``(N, d)`` rows on their first two principal axes -> ``(N, 2)``.

    Signs are fixed (largest loading of each axis positive) so the map does not flip
    between runs or machines.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or len(X) < 2:
        raise ValueError(f"pca_2d needs an (N, d) array with N >= 2, got shape {X.shape}.")
    Xc = X - X.mean(0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    vt = vt[:2]
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    vt = vt * signs[:, None]
    out = Xc @ vt.T
    if out.shape[1] < 2:  # d == 1: a flat second axis
        out = np.hstack([out, np.zeros((len(out), 1))])
    return out


def _unit_pairs(T: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matched ``(n, d)`` rows, L2-normalised (float64)."""
    T, V = (np.asarray(X, dtype=np.float64) for X in (T, V))
    if T.shape[0] != V.shape[0] or T.ndim != 2 or V.ndim != 2 or len(T) < 2:
        raise ValueError(f"need matched (n, d) arrays with n >= 2, got {T.shape} and {V.shape}.")
    return tuple(X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12) for X in (T, V))


def pair_distances(T: np.ndarray, V: np.ndarray) -> tuple[float, float]:
    """Mean cosine distance of matched rows ``(T[i], V[i])`` and of all mismatched rows ``i != j``."""
    T, V = _unit_pairs(T, V)
    D = 1.0 - T @ V.T
    n = len(D)
    return float(np.trace(D) / n), float((D.sum() - np.trace(D)) / (n * n - n))


def plot_shared_space(spaces: dict[str, tuple[np.ndarray, np.ndarray]], title: str = "") -> Figure:
    """Both modalities on one 2-D map per model: captions (o) and their images (s), a line per pair.

    ``spaces`` maps a label (e.g. "before training") to ``(T, V)``: ``n`` caption embeddings and
    the embeddings of their ``n`` images, row ``i`` of each a matching pair, in the model's shared
    space. Rows are L2-normalised (retrieval ranks by cosine) and both modalities are projected
    together on the first two principal axes of their union, so closeness on the map is closeness
    of a caption to an image. A good shared space draws short lines.
    """
    fig = Figure(figsize=(5 * len(spaces), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(spaces)))
    for ax, (label, (T, V)) in zip(axes, spaces.items(), strict=True):
        matched, other = pair_distances(T, V)
        T, V = _unit_pairs(T, V)
        P = pca_2d(np.vstack([T, V]))
        pt, pv = P[: len(T)], P[len(T):]
        for a, b in zip(pt, pv, strict=True):
            ax.plot([a[0], b[0]], [a[1], b[1]], color="grey", lw=0.6, alpha=0.6)
        ax.scatter(pt[:, 0], pt[:, 1], s=22, marker="o", color="C0", label="caption", zorder=3)
        ax.scatter(pv[:, 0], pv[:, 1], s=22, marker="s", color="C1", label="its image", zorder=3)
        ax.set(title=f"{label}\ncosine distance: pairs {matched:.2f}, non-pairs {other:.2f}",
               xticks=[], yticks=[])
        ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    return fig


def plot_word_map(kv, groups: dict[str, Sequence[str]], title: str = "") -> Figure:
    """Words of several groups (e.g. colours, animals) on a 2-D PCA map of their vectors.

    Words missing from ``kv`` are skipped (and listed in the title).
    """
    words, labels, missing = [], [], []
    for g, ws in groups.items():
        for w in ws:
            (words if w in kv.key_to_index else missing).append(w)
            if w in kv.key_to_index:
                labels.append(g)
    P = pca_2d(np.stack([kv[w] for w in words]))
    fig = Figure(figsize=(7, 5.5), layout="constrained")
    ax = fig.add_subplot()
    for k, g in enumerate(groups):
        sel = [j for j, lab in enumerate(labels) if lab == g]
        ax.scatter(P[sel, 0], P[sel, 1], color=f"C{k}", label=g)
        for j in sel:
            ax.annotate(words[j], P[j], fontsize=9, xytext=(3, 3), textcoords="offset points")
    ax.legend(fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title + (f" (unknown: {', '.join(missing)})" if missing else ""), fontsize=10)
    return fig


def plot_feature_map(
    points: np.ndarray, images: Sequence, labels: Sequence[str] | None = None,
    zoom: float = 0.25, title: str = "",
) -> Figure:
    """A 2-D map ``(N, 2)`` with each point drawn as its thumbnail (PIL images), framed by label colour."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    points = np.asarray(points, dtype=float)
    fig = Figure(figsize=(9, 7), layout="constrained")
    ax = fig.add_subplot()
    ax.scatter(points[:, 0], points[:, 1], s=1, alpha=0)
    cats = sorted(set(labels)) if labels is not None else []
    colour = {c: f"C{k % 10}" for k, c in enumerate(cats)}
    for j, (p, im) in enumerate(zip(points, images, strict=True)):
        ec = colour[labels[j]] if labels is not None else "none"
        box = AnnotationBbox(OffsetImage(np.asarray(im), zoom=zoom), p, frameon=labels is not None,
                             bboxprops={"edgecolor": ec, "linewidth": 1.5}, pad=0.1)
        ax.add_artist(box)
    for c in cats:
        ax.plot([], [], "s", color=colour[c], label=c)
    if cats:
        ax.legend(fontsize=8, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    return fig


def show_ranked(
    ds: CaptionedImages, rows: Sequence[tuple[str, Sequence[int], Sequence[str]]],
    width: int = 20, query_images: Sequence | None = None,
) -> Figure:
    """One row per query: its text (or its image) then its ranked result images, each with a label.

    ``rows``: ``(query text, result image indices, result labels)``. With
    ``query_images`` (one PIL image per row) the first column shows that image.
    """
    ncols = max(len(r[1]) for r in rows) + 1
    fig = Figure(figsize=(2.1 * ncols, 2.5 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (query, idx, labs) in enumerate(rows):
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
        q = axes[r][0]
        if query_images is not None:
            q.imshow(np.asarray(query_images[r]))
        q.set_xlabel(textwrap.fill(query, width, max_lines=4, placeholder=" ..."), fontsize=8, loc="left")
        q.set_title("query", fontsize=9)
        for c, (i, lab) in enumerate(zip(idx, labs, strict=True), start=1):
            ax = axes[r][c]
            ax.imshow(np.asarray(ds.load_image(int(i))))
            ax.set_xlabel(textwrap.fill(str(lab), width, max_lines=3, placeholder=" ..."), fontsize=8,
                          loc="left")
    return fig


def show_hits(rows: Sequence[tuple[str, object, Sequence]], width: int = 18) -> Figure:
    """One row per query: its label (and its picture, when it has one), then its hits' pictures.

    ``rows``: ``(label, picture or None, hits)``; a hit has a ``path`` (a picture file) and a
    ``score`` (e.g. :class:`crosslab.store.StoreHit` from a collection). Each hit is titled with its
    score and its folder's name.
    """
    from pathlib import Path

    from .collection import read_picture

    if not rows:
        raise ValueError("show_hits needs at least one row (label, picture or None, hits).")
    ncols = max(1, max(len(r[2]) for r in rows)) + 1
    fig = Figure(figsize=(1.9 * ncols, 2.3 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (label, picture, hits) in enumerate(rows):
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
        axes[r][0].set_title(textwrap.fill(str(label), width, max_lines=3, placeholder=" ..."), fontsize=9,
                             loc="left")
        if picture is not None:
            axes[r][0].imshow(np.asarray(read_picture(picture)))
        for c, h in enumerate(hits, start=1):
            axes[r][c].imshow(np.asarray(read_picture(h.path)))
            axes[r][c].set_title(f"{h.score:.2f} {Path(h.path).parent.name}", fontsize=8)
    return fig


def plot_history(histories: dict[str, dict], keys: Sequence[str] = ("val_t2i_r10", "val_i2t_r10")) -> Figure:
    """Training curves: loss per epoch (left) and validation R@10 per epoch (right), one line per run.

    ``histories``: name -> the ``history_`` dict of a fitted :class:`crosslab.joint.JointTrainer`.
    Each run's loss is divided by its first epoch's so different losses share one axis.
    """
    fig = Figure(figsize=(11, 3.8), layout="constrained")
    ax_l, ax_r = fig.subplots(1, 2)
    for k, (name, h) in enumerate(histories.items()):
        loss = np.asarray(h["loss"], dtype=float)
        ep = np.arange(1, len(loss) + 1)
        ax_l.plot(ep, loss / loss[0], color=f"C{k}", label=name)
        for key, style in zip(keys, ("-", "--"), strict=False):
            if h.get(key):
                ax_r.plot(ep[: len(h[key])], h[key], style, color=f"C{k}",
                          label=f"{name}: {key.replace('val_', '')}")
        if h.get("best_epoch"):
            ax_r.axvline(h["best_epoch"], color=f"C{k}", lw=0.6, alpha=0.5)
    ax_l.set(xlabel="epoch", ylabel="loss / first-epoch loss", title="training loss")
    ax_r.set(xlabel="epoch", ylabel="R@10 (%)", title="validation recall (line: kept epoch)")
    ax_l.legend(fontsize=8)
    ax_r.legend(fontsize=7)
    return fig


def plot_finetune(histories: dict[str, dict]) -> Figure:
    """Fine-tuning runs (:class:`crosslab.finetune.FineTuneTrainer` ``history_``): training loss per epoch
    (left) and val rSum per epoch with the start as epoch 0 (right; a dot marks the kept epoch)."""
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax_l, ax_r = fig.subplots(1, 2)
    for k, (name, h) in enumerate(histories.items()):
        ax_l.plot(np.arange(1, len(h["loss"]) + 1), h["loss"], color=f"C{k}", label=name)
        ax_r.plot(np.arange(len(h["val_rsum"])), h["val_rsum"], color=f"C{k}", label=name)
        ax_r.plot([h["best_epoch"]], [h["val_rsum"][h["best_epoch"]]], "o", color=f"C{k}")
    ax_r.axhline(next(iter(histories.values()))["val_rsum"][0], color="grey", lw=0.8, ls=":")
    ax_l.set(xlabel="epoch", ylabel="InfoNCE loss (train)", title="training loss")
    ax_r.set(xlabel="epoch (0 = the frozen start, dotted)", ylabel="val rSum", title="validation (dot: best epoch)")
    ax_l.legend(fontsize=8)
    return fig


def show_views(ds: CaptionedImages, rows: Sequence[int], n_views: int = 3, seed: int = 0) -> Figure:
    """Each picture of ``rows`` beside its first ``n_views`` augmented views (:class:`crosslab.finetune.AugmentedView`)."""
    from .finetune import AugmentedView

    views = [AugmentedView(ds, v, rows=rows, seed=seed) for v in range(1, n_views + 1)]
    fig = Figure(figsize=(2.1 * (n_views + 1), 2.3 * len(rows)), layout="constrained")
    for r, i in enumerate(rows):
        for c in range(n_views + 1):
            ax = fig.add_subplot(len(rows), n_views + 1, r * (n_views + 1) + c + 1)
            ax.imshow(np.asarray(ds.load_image(int(i)) if c == 0 else views[c - 1].load_image(r)))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title("original" if c == 0 else f"view {c}", fontsize=8)
            if c == 0:
                ax.set_ylabel(textwrap.fill(ds.image_captions(int(i))[0], 18, max_lines=2, placeholder=" ..."),
                              fontsize=8)
    return fig


def plot_heatmaps(mats: dict[str, np.ndarray], row_labels: Sequence[str] = (),
                  col_labels: Sequence[str] = ()) -> Figure:
    """Side-by-side heatmaps of same-shaped matrices (e.g. one per similarity metric), with colour bars."""
    fig = Figure(figsize=(4.2 * len(mats), 4), layout="constrained")
    axes = fig.subplots(1, len(mats), squeeze=False)[0]
    for ax, (name, M) in zip(axes, mats.items(), strict=True):
        im = ax.imshow(np.asarray(M), cmap="viridis")
        ax.set_title(name, fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_xticks(range(len(col_labels)), list(col_labels), rotation=90, fontsize=7)
        ax.set_yticks(range(len(row_labels)), list(row_labels), fontsize=7)
    return fig


def plot_results(rows: Sequence[dict], keys: Sequence[str] = ("t2i_r10", "i2t_r10")) -> Figure:
    """Grouped horizontal bars of R@K per model from ``python -m crosslab evaluate``-style rows."""
    names = [r["name"] for r in rows]
    y = np.arange(len(rows))
    h = 0.8 / len(keys)
    fig = Figure(figsize=(8, 0.45 * len(rows) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    for k, key in enumerate(keys):
        vals = [float(r[key]) for r in rows]
        bars = ax.barh(y + (k - (len(keys) - 1) / 2) * h, vals, h, label=key, color=f"C{k}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_yticks(y, names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("%")
    ax.legend(fontsize=8)
    return fig


def plot_query_sets(
    rows: Sequence[dict], key: str = "t2i_r10", query_sets: Sequence[str] | None = None,
) -> Figure:
    """Grouped horizontal bars of one metric per model, one bar per query set (lesson 07).

    ``rows``: :func:`crosslab.evaluation.run` rows with ``name``, ``queries``
    (e.g. ``"captions"``, ``"people"``) and ``key``. Models keep the order in which they
    first appear; ``query_sets`` picks and orders the bars (default: every set, in order of
    appearance). A missing row or a ``None`` value leaves a gap.
    """
    names = list(dict.fromkeys(r["name"] for r in rows))
    sets = list(query_sets) if query_sets is not None else list(dict.fromkeys(r["queries"] for r in rows))
    if not names or not sets:
        raise ValueError("plot_query_sets needs rows with 'name' and 'queries'.")
    value = {(r["name"], r["queries"]): r.get(key) for r in rows}
    y = np.arange(len(names))
    h = 0.8 / len(sets)
    fig = Figure(figsize=(8, 0.3 * len(names) * len(sets) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    for k, q in enumerate(sets):
        vals = [value.get((n, q)) for n in names]
        keep = [i for i, v in enumerate(vals) if v is not None]
        bars = ax.barh(y[keep] + (k - (len(sets) - 1) / 2) * h, [float(vals[i]) for i in keep], h,
                       label=q, color=f"C{k}")
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=2)
    ax.set_yticks(y, names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(f"{key} (%)")
    ax.legend(fontsize=8, title="queries", title_fontsize=8)
    return fig


def plot_recall_qps(sizes: Sequence[dict], *, target: float | None = 0.95) -> Figure:
    """Recall@10 against queries per second, one panel per collection size and one curve per
    index (the ``ann`` section of ``make bench``'s ``benchmarks/results.json``, lesson 09).

    ``sizes``: dicts with ``n``, ``d``, ``exact`` (``[{"backend", "qps"}]``) and ``points``
    (``[{"index", "qps", "recall", "bytes_per_vector"}]``). Exact search (FAISS flat) is the
    dashed line; ``target`` a recall level drawn as a thin line.
    """
    fig = Figure(figsize=(5.5 * max(1, len(sizes)), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(sizes))))
    for ax, size in zip(axes, sizes, strict=False):
        for name in dict.fromkeys(pt["index"] for pt in size["points"]):  # each index once, in order
            pts = [pt for pt in size["points"] if pt["index"] == name]
            if len(pts) > 1:  # the exhaustive ones (float16, 8-bit) are single points: in the table
                ax.plot([pt["qps"] for pt in pts], [pt["recall"] for pt in pts], "o-", ms=3,
                        label=f"{name} ({pts[0]['bytes_per_vector']:.0f} B)")
        for e in size["exact"]:
            if e["backend"] == "faiss-flat":
                ax.axvline(e["qps"], color="grey", ls="--", label="exact (FAISS flat)")
        if target is not None:
            ax.axhline(target, color="grey", lw=0.6)
        ax.set(xscale="log", xlabel="queries per second (log)", ylabel="recall@10 vs exact",
               title=f"N = {size['n']:,} x {size['d']}")
        ax.legend(fontsize=7)
    return fig


def show_explanation(e, *, words: Sequence[str] | int = 3) -> Figure:
    """A :class:`crosslab.explain.Explanation`: the words as bars, the occlusion map over the picture
    and, for an attention head, the attention maps of the ``words`` that add most to the score
    (a number, or the words themselves). Maps are stretched over the picture (nearest cell)."""
    maps: list[tuple[str, np.ndarray, str]] = []
    if e.occlusion is not None:
        maps.append(("occlusion: score drop", e.occlusion, "coolwarm"))
    if e.attention is not None:
        order = np.argsort(-e.contributions, kind="stable")
        pick = [int(i) for i in order[: int(words)]] if isinstance(words, int) else \
            [e.words.index(w) for w in words if w in e.words]
        maps += [(f"attention of '{e.words[i]}'", e.attention[i], "magma") for i in pick]
    fig = Figure(figsize=(3.0 * (len(maps) + 1) + 0.5, 3.2), layout="constrained")
    axes = fig.subplots(1, len(maps) + 1, squeeze=False)[0]
    y = np.arange(len(e.words))
    axes[0].barh(y, e.contributions, color=np.where(e.contributions >= 0, "tab:green", "tab:red"))
    axes[0].set_yticks(y, e.words)
    axes[0].invert_yaxis()
    axes[0].axvline(0, color="grey", lw=0.8)
    axes[0].set_title(f"words ({e.method}); score {e.score:.3f}", fontsize=9)
    H, W = e.picture.shape[:2]
    for ax, (title, m, cmap) in zip(axes[1:], maps, strict=True):
        ax.imshow(e.picture)
        lim = float(np.abs(m).max()) or 1.0
        kw = {"vmin": -lim, "vmax": lim} if cmap == "coolwarm" else {"vmin": 0.0, "vmax": lim}
        im = ax.imshow(m, cmap=cmap, alpha=0.55, extent=(0, W, H, 0), interpolation="nearest", **kw)
        fig.colorbar(im, ax=ax, shrink=0.7)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def plot_twins(twins: dict[str, dict]) -> Figure:
    """Bars of :func:`crosslab.evaluation.twin_accuracy` per model: the share (%) of pictures whose own
    caption beats its twin's, binding and relation side by side, with their intervals; 50 % dashed."""
    names = list(twins)
    fig = Figure(figsize=(1.8 * len(names) + 1.5, 3.2), layout="constrained")
    ax = fig.add_subplot()
    for j, k in enumerate(("binding", "relation")):
        vals = [twins[n][k] for n in names]
        err = np.array([[v["share"] - v["low"], v["high"] - v["share"]] for v in vals]).T
        ax.bar(np.arange(len(names)) + 0.38 * j, [v["share"] for v in vals], 0.36, yerr=err, capsize=3, label=k)
    ax.axhline(50, color="grey", ls="--", lw=1)
    ax.set_xticks(np.arange(len(names)) + 0.19, names, fontsize=9)
    ax.set_ylabel("own caption above its twin (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    return fig


# Lesson 14's figures live in their own module; they are part of this namespace.
from .plots_robustness import (  # noqa: E402, F401
    plot_modalities,
    plot_severity,
    plot_success,
    plot_tradeoff,
    show_attack,
    show_corruptions,
)
