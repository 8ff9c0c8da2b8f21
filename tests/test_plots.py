"""Dataset-tour plots: they return Figures with the expected axes, without touching pyplot state."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.decomposition import PCA

import crosslab as cl
from crosslab import plots
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


# ---- lesson plots (01-05) ----------------------------------------------------------
@pytest.fixture(scope="module")
def scenes():
    return cl.data.make_scenes(12, seed=0)


def test_pca_2d_matches_sklearn_up_to_sign_and_is_sign_stable():
    X = np.random.default_rng(0).normal(size=(40, 6)) * [5, 3, 1, 1, 1, 1]
    P = plots.pca_2d(X)
    ref = PCA(2).fit_transform(X)
    assert np.allclose(np.abs(P), np.abs(ref), atol=1e-8)
    assert np.allclose(plots.pca_2d(X[::-1])[::-1], P)  # row order does not flip the axes
    with pytest.raises(ValueError, match="N >= 2"):
        plots.pca_2d(X[:1])


def test_word_map_skips_unknown_words():
    kv = cl.text.train_word2vec(["red blue green", "cat dog cow", "red cat", "blue dog"],
                                vector_size=8, epochs=2)
    fig = plots.plot_word_map(kv, {"colours": ["red", "blue", "green"], "animals": ["cat", "dog", "zebra"]})
    ax = fig.axes[0]
    assert "zebra" in ax.get_title()
    assert sorted(t.get_text() for t in ax.texts) == ["blue", "cat", "dog", "green", "red"]


def test_feature_map_and_ranked_grid(scenes):
    pts = np.random.default_rng(0).normal(size=(len(scenes), 2))
    ims = [scenes.load_image(i) for i in range(len(scenes))]
    fig = plots.plot_feature_map(pts, ims, labels=["a", "b"] * 6)
    assert isinstance(fig, Figure) and len(fig.axes[0].artists) == len(scenes)
    fig = plots.show_ranked(scenes, [("red circle", [0, 1, 2], ["x", "y", "z"]),
                                     ("blue", [3, 4], ["u", "v"])])
    assert len(fig.axes) == 2 * 4
    assert fig.axes[0].get_xlabel() == "red circle"
    assert fig.axes[1].get_xlabel() == "x"


def test_history_heatmaps_and_results():
    h = {"loss": [2.0, 1.0, 0.5], "val_t2i_r10": [10, 20, 30], "val_i2t_r10": [12, 18, 25], "best_epoch": 3}
    fig = plots.plot_history({"infonce": h})
    left, right = fig.axes
    assert np.allclose(left.lines[0].get_ydata(), [1.0, 0.5, 0.25])
    assert len(right.lines) == 3  # two curves + the kept-epoch marker
    fig = plots.plot_heatmaps({"cosine": np.eye(3), "kl": np.ones((3, 3))}, ["a", "b", "c"], ["x", "y", "z"])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["cosine", "kl"]
    rows = [{"name": "random", "t2i_r10": 1.5, "i2t_r10": 2.0}, {"name": "cca", "t2i_r10": 40, "i2t_r10": 45}]
    fig = plots.plot_results(rows)
    widths = sorted(round(p.get_width(), 1) for p in fig.axes[0].patches)
    assert widths == [1.5, 2.0, 40.0, 45.0]


def test_plot_query_sets_groups_bars_by_model_and_query_set():
    rows = [
        {"name": "cca+glove", "queries": "captions", "t2i_r10": 38.3},
        {"name": "cca+minilm", "queries": "captions", "t2i_r10": 54.2},
        {"name": "cca+glove", "queries": "people", "t2i_r10": 17.7},
        {"name": "cca+minilm", "queries": "people", "t2i_r10": None},  # a gap, not a zero bar
        {"name": "conse+minilm", "queries": "people", "t2i_r10": 14.6},
    ]
    n_before = _pyplot_figures()
    fig = plots.plot_query_sets(rows)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cca+glove", "cca+minilm", "conse+minilm"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["captions", "people"]
    bars = {(round(p.get_y() + p.get_height() / 2, 2), round(p.get_width(), 1)) for p in ax.patches}
    # captions bars sit 0.2 above each model's tick, people bars 0.2 below
    assert bars == {(-0.2, 38.3), (0.8, 54.2), (0.2, 17.7), (2.2, 14.6)}
    only = plots.plot_query_sets(rows, query_sets=["people"])
    assert sorted(round(p.get_width(), 1) for p in only.axes[0].patches) == [14.6, 17.7]
    assert _pyplot_figures() == n_before
    with pytest.raises(ValueError):
        plots.plot_query_sets([])


def test_pair_distances_by_hand_and_shared_space_map():
    from crosslab.plots import pair_distances, plot_shared_space

    T = np.array([[1.0, 0.0], [0.0, 1.0]])
    V = np.array([[2.0, 0.0], [0.0, 3.0]])  # same directions: matched distance 0, others 1
    assert pair_distances(T, V) == (0.0, 1.0)
    assert pair_distances(T, V[::-1]) == (1.0, 0.0)
    with pytest.raises(ValueError, match="matched"):
        pair_distances(T, V[:1])
    rng = np.random.default_rng(0)
    A = rng.normal(size=(12, 5))
    fig = plot_shared_space({"random": (A, rng.normal(size=(12, 5))), "aligned": (A, A + 0.01)})
    axes = fig.get_axes()
    assert len(axes) == 2
    assert all(len(ax.lines) == 12 for ax in axes)  # one line per pair
    assert "pairs 0.00" in axes[1].get_title()


def test_plot_recall_qps_draws_one_curve_per_index_and_the_exact_line():
    sizes = [{"n": 1000, "d": 8, "exact": [{"backend": "faiss-flat", "qps": 100.0}, {"backend": "crosslab", "qps": 90.0}],
              "points": [{"index": "ivf", "qps": q, "recall": r, "bytes_per_vector": 40.0}
                         for q, r in ((900, 0.5), (500, 0.8), (200, 0.99))]
              + [{"index": "sq8", "qps": 80.0, "recall": 0.97, "bytes_per_vector": 8.0}]}] * 2
    fig = cl.plots.plot_recall_qps(sizes)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    curves = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == 3]
    assert len(curves) == 1 and list(curves[0].get_ydata()) == [0.5, 0.8, 0.99]  # sq8: one point, no curve
    assert any(list(ln.get_xdata()) == [100.0, 100.0] for ln in ax.get_lines())  # exact: FAISS flat only
    assert ax.get_title() == "N = 1,000 x 8" and ax.get_xscale() == "log"


def test_show_hits_draws_each_hit_with_its_score_and_folder(tmp_path):
    from PIL import Image

    from crosslab.store import StoreHit

    (tmp_path / "photos").mkdir()
    paths = []
    for i, colour in enumerate(("red", "blue", "green")):
        paths.append(tmp_path / "photos" / f"{colour}.png")
        Image.new("RGB", (20 + i, 10), colour).save(paths[-1])
    hits = [StoreHit(i, 0.9 - i / 10, f"k{i}", str(p), None) for i, p in enumerate(paths)]
    fig = plots.show_hits([("a red square", None, hits), ("like this", paths[0], hits[:1])])
    axes = fig.get_axes()
    assert len(axes) == 2 * 4  # 2 rows x (label + 3 hits)
    assert [axes[c].get_title() for c in range(1, 4)] == ["0.90 photos", "0.80 photos", "0.70 photos"]
    assert axes[0].get_title(loc="left") == "a red square" and not axes[0].images  # words: no picture
    assert axes[4].images and axes[5].images and not axes[6].images  # the query picture, one hit, empty
    assert tuple(axes[1].images[0].get_array().shape[:2]) == (10, 20)  # the file's own pixels


def test_plot_twins_draws_a_bar_per_model_and_kind():
    from crosslab.plots import plot_twins

    row = {"share": 75.0, "low": 60.0, "high": 90.0, "n": 10, "pairs": 2}
    fig = plot_twins({"a": {"binding": row, "relation": row}, "b": {"binding": row, "relation": row}})
    ax = fig.axes[0]
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == [75.0] * 4 and [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]


def test_robustness_figures_draw_what_they_are_given():
    from PIL import Image

    from crosslab import attacks
    from crosslab.plots_robustness import _wilson

    pic = Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
    fig = plots.show_corruptions(pic, ["blur", "invert"], (1, 5))
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "clean" and fig.axes[3].get_ylabel() == "invert"
    curves = [{"pipeline": p, "side": s, "kind": k, "r10": [50, 40, 30, 20, 10, 5]}
              for p in ("a", "b") for s, k in (("text", "typo"), ("image", "noise"))]
    fig = plots.plot_severity(curves)
    assert len(fig.axes) == 2 and all(len(ax.lines) == 2 for ax in fig.axes)
    assert len(plots.plot_severity(curves, side="text").axes) == 1
    clean = np.full((2, 3, 8, 8), 0.5)
    adv = attacks.Adversarial(clean + 4 / 255, clean, 4 / 255, False, np.zeros(2), np.zeros(2))
    fig = plots.show_attack(adv, ["one", "two"])
    assert len(fig.axes) == 6 and fig.axes[0].get_ylabel() == "one"
    # the change panel: +eps maps to the top of the colour range
    assert fig.axes[1].images[0].get_array().max() == 255
    rows = [{"pipeline": "a", "eps": e, "success": s, "n": 48} for e, s in ((1, 50.0), (4, 100.0))]
    assert len(plots.plot_success(rows).axes[0].lines) == 1
    lo, hi = _wilson(24, 48)  # Wilson's interval of 24/48, by hand: 0.5 -+ 1.96 * sqrt(.25/48 + 1.96^2/(4*48^2)) / (1 + 1.96^2/48)
    half = 1.96 * np.sqrt(0.25 / 48 + 1.96 ** 2 / (4 * 48 ** 2)) / (1 + 1.96 ** 2 / 48)
    assert (lo, hi) == pytest.approx((100 * (0.5 - half), 100 * (0.5 + half)))
    assert _wilson(48, 48)[1] == pytest.approx(100) and _wilson(48, 48)[0] < 100
    pts = [{"feature_eps": e, "val_pgd_success_4": s, "val_t2i_r10": r} for e, s, r in ((0.1, 90, 60), (0.5, 70, 58))]
    assert len(plots.plot_tradeoff(pts, base={"val_pgd_success_4": 100, "val_t2i_r10": 61}).axes[0].lines) == 2
    rng = np.random.default_rng(0)
    fig = plots.plot_modalities({"m": (rng.normal(size=(20, 4)) + 3, rng.normal(size=(30, 4)))})
    assert len(fig.axes[0].collections) == 2
