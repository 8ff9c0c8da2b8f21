"""Figures of lesson 14 (robustness), re-exported by :mod:`crosslab.plots`: corrupted pictures, curves of
R@10 against severity, adversarial pictures and their perturbations, attack success against the budget,
the robustness / clean-accuracy trade-off, and the two modalities on one map."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["show_corruptions", "plot_severity", "show_attack", "plot_success", "plot_tradeoff", "plot_modalities"]


def _bare(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def show_corruptions(picture: Any, kinds: Sequence[str], severities: Sequence[int] = (1, 3, 5), *, seed: int = 0,
                     index: int = 0) -> Figure:
    """One picture under each corruption of ``kinds`` (rows) at severity 0 and ``severities`` (columns)."""
    from .robustness import corrupt_image

    cols = [0, *severities]
    fig = Figure(figsize=(1.7 * len(cols), 1.75 * len(kinds)), layout="constrained")
    for r, kind in enumerate(kinds):
        for c, s in enumerate(cols):
            ax = fig.add_subplot(len(kinds), len(cols), r * len(cols) + c + 1)
            ax.imshow(np.asarray(corrupt_image(picture, kind, s, seed=seed, index=index).convert("RGB")))
            _bare(ax)
            if r == 0:
                ax.set_title("clean" if s == 0 else f"severity {s}", fontsize=8)
            if c == 0:
                ax.set_ylabel(kind, fontsize=9)
    return fig


def plot_severity(curves: Sequence[dict], *, side: str | None = None, ncols: int = 4) -> Figure:
    """R@10 against severity: one panel per corruption, one line per pipeline.

    ``curves``: dicts with ``pipeline``, ``side``, ``kind`` and ``r10`` (severities 0..5), as
    ``scripts/robustness.py`` writes them; ``side`` keeps one side's corruptions.
    """
    rows = [c for c in curves if side in (None, c["side"])]
    kinds = list(dict.fromkeys((c["side"], c["kind"]) for c in rows))
    pipes = list(dict.fromkeys(c["pipeline"] for c in rows))
    n_rows = -(-len(kinds) // ncols)
    fig = Figure(figsize=(3.1 * min(ncols, len(kinds)), 2.5 * n_rows + 0.5), layout="constrained")
    for i, (sd, kind) in enumerate(kinds):
        ax = fig.add_subplot(n_rows, min(ncols, len(kinds)), i + 1)
        for j, p in enumerate(pipes):
            for c in rows:
                if c["pipeline"] == p and (c["side"], c["kind"]) == (sd, kind):
                    ax.plot(range(len(c["r10"])), c["r10"], marker="o", ms=3, color=f"C{j}", label=p)
        ax.set_title(f"{sd}: {kind}", fontsize=9)
        ax.set_xlabel("severity", fontsize=8)
        ax.set_ylim(bottom=0)
        if i % ncols == 0:
            ax.set_ylabel("test t2i R@10", fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(pipes)), fontsize=8)
    return fig


def show_attack(adv: Any, titles: Sequence[str] = (), *, amplify: float | None = None) -> Figure:
    """Per attacked picture (rows): the clean picture, the perturbation (scaled so that ``eps`` fills the
    colour range, or by ``amplify``; grey = no change) and the adversarial picture."""
    from .attacks import to_pil

    scale = 0.5 / adv.eps if amplify is None else float(amplify)
    delta = np.clip(0.5 + adv.delta * scale, 0, 1)
    n = len(adv.pixels)
    fig = Figure(figsize=(6.4, 2.2 * n), layout="constrained")
    for r, (clean, d, x) in enumerate(zip(to_pil(adv.clean), to_pil(delta), to_pil(adv.pixels), strict=True)):
        for c, (im, head) in enumerate(((clean, "clean"), (d, f"change x {2 * scale * adv.eps:.0f}/{2 * adv.eps:.3f}"
                                                           if amplify else f"change, {adv.eps * 255:.0f}/255 = full colour"),
                                        (x, "adversarial"))):
            ax = fig.add_subplot(n, 3, 3 * r + c + 1)
            ax.imshow(np.asarray(im))
            _bare(ax)
            ax.set_title(head if r == 0 else "", fontsize=8)
            if c == 0 and r < len(titles):
                ax.set_ylabel(textwrap.fill(titles[r], 20, max_lines=3, placeholder=" ..."), fontsize=7)
    return fig


def _wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95 % interval of a proportion ``k / n`` (in %)."""
    if n == 0:
        return 0.0, 100.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * (centre - half), 100 * (centre + half)


def plot_success(rows: Sequence[dict]) -> Figure:
    """Attack success (%) against the budget epsilon (in 1/255), one line per pipeline, with Wilson's 95 %
    intervals. ``rows``: dicts with ``pipeline``, ``eps``, ``success`` (%) and ``n`` (pictures attacked)."""
    fig = Figure(figsize=(5.2, 3.4), layout="constrained")
    ax = fig.add_subplot()
    for j, p in enumerate(dict.fromkeys(r["pipeline"] for r in rows)):
        pts = sorted((r["eps"], r["success"], r["n"]) for r in rows if r["pipeline"] == p)
        eps = [e for e, _, _ in pts]
        lo_hi = np.array([_wilson(s * n / 100, n) for _, s, n in pts])
        ax.plot(eps, [s for _, s, _ in pts], marker="o", color=f"C{j}", label=p)
        ax.fill_between(eps, lo_hi[:, 0], lo_hi[:, 1], color=f"C{j}", alpha=0.15)
    ax.set(xscale="log", xlabel="epsilon (/255, L-infinity)", ylabel="attack success %", ylim=(0, 102))
    ax.set_xticks(sorted({r["eps"] for r in rows}), [str(e) for e in sorted({r["eps"] for r in rows})])
    ax.legend(fontsize=8)
    return fig


def plot_tradeoff(points: Sequence[dict], *, x: str = "val_pgd_success_4", y: str = "val_t2i_r10",
                  label: str = "feature_eps", base: dict | None = None) -> Figure:
    """Clean accuracy against attack success, one point per setting (labelled), the undefended ``base``
    (a dict with the same keys) as a star: down and to the left is worse, up and to the left is better."""
    fig = Figure(figsize=(5.2, 3.4), layout="constrained")
    ax = fig.add_subplot()
    pts = sorted(points, key=lambda r: r[label])
    ax.plot([r[x] for r in pts], [r[y] for r in pts], marker="o", color="C0", label="adversarially trained")
    for r in pts:
        ax.annotate(f"{r[label]:g}", (r[x], r[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if base is not None:
        ax.plot([base[x]], [base[y]], marker="*", ms=12, color="C3", ls="", label="undefended")
    ax.set(xlabel=f"{x} %", ylabel=y)
    ax.legend(fontsize=8)
    return fig


def plot_modalities(spaces: dict[str, tuple[np.ndarray, np.ndarray]], *, seed: int = 0, n: int = 300) -> Figure:
    """Caption vectors and picture vectors on one 2-D map per model (principal axes of the union of up to
    ``n`` of each, L2-normalised): two clouds apart are a modality gap."""
    from .plots import pca_2d

    fig = Figure(figsize=(4.6 * len(spaces), 4.0), layout="constrained")
    rng = np.random.default_rng(seed)
    for i, (name, (T, V)) in enumerate(spaces.items()):
        T = np.asarray(T, np.float64)[rng.choice(len(T), min(n, len(T)), replace=False)]
        V = np.asarray(V, np.float64)[rng.choice(len(V), min(n, len(V)), replace=False)]
        T, V = (X / np.linalg.norm(X, axis=1, keepdims=True).clip(1e-12) for X in (T, V))
        P = pca_2d(np.vstack([T, V]))
        ax = fig.add_subplot(1, len(spaces), i + 1)
        ax.scatter(*P[: len(T)].T, s=8, alpha=0.6, color="C0", label="captions")
        ax.scatter(*P[len(T):].T, s=8, alpha=0.6, color="C1", marker="s", label="pictures")
        ax.set_title(name, fontsize=9)
        _bare(ax)
        ax.legend(fontsize=8)
    return fig
