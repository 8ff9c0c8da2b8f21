"""crosslab.evaluation: ranks, R@K, MedR and rSum (the Flickr30k / COCO protocol)."""

from __future__ import annotations

import numpy as np
import pytest

from crosslab import evaluation as R
from crosslab.errors import ShapeError


def test_evaluate_hand_computed():
    # 3 images; captions 0,1 -> image 0, caption 2 -> image 1, caption 3 -> image 2
    c2i = np.array([0, 0, 1, 2])
    S = np.array([
        [0.9, 0.1, 0.0],  # caption 0: image 0 first            -> t2i rank 1
        [0.2, 0.5, 0.4],  # caption 1: image 0 third            -> rank 3
        [0.3, 0.3, 0.1],  # caption 2: tie with image 0 (lower) -> rank 2
        [0.0, 0.8, 0.7],  # caption 3: image 2 second           -> rank 2
    ])
    t2i, i2t = R.ranks(S, c2i)
    assert t2i.tolist() == [1, 3, 2, 2]
    # image 0 column (0.9, 0.2, 0.3, 0.0): caption 0 is first -> 1
    # image 1 column (0.1, 0.5, 0.3, 0.8): caption 2 (0.3) behind 0.8, 0.5 -> 3
    # image 2 column (0.0, 0.4, 0.1, 0.7): caption 3 first -> 1
    assert i2t.tolist() == [1, 3, 1]
    m = R.evaluate(S, c2i, ks=(1, 2))
    assert m["t2i_r1"] == pytest.approx(25.0) and m["t2i_r2"] == pytest.approx(75.0)
    assert m["i2t_r1"] == pytest.approx(200 / 3) and m["i2t_r2"] == pytest.approx(200 / 3)
    assert m["t2i_medr"] == 2.0 and m["t2i_meanr"] == 2.0 and m["i2t_medr"] == 1.0
    assert m["rsum"] == pytest.approx(25 + 75 + 200 / 3 + 200 / 3)


def naive_ranks(S, c2i):
    C, N = S.shape
    t2i = []
    for c in range(C):
        order = sorted(range(N), key=lambda j: (-S[c, j], j))
        t2i.append(order.index(c2i[c]) + 1)
    i2t = []
    for i in range(N):
        caps = [c for c in range(C) if c2i[c] == i]
        if not caps:
            continue
        order = sorted(range(C), key=lambda c: (-S[c, i], c))
        i2t.append(min(order.index(c) + 1 for c in caps))
    return np.array(t2i), np.array(i2t)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_match_naive_loop(seed):
    rng = np.random.default_rng(seed)
    N, C = 25, 70
    c2i = rng.integers(0, N, size=C)  # some images have no caption: left out of i2t
    S = rng.integers(0, 6, size=(C, N)).astype(np.float64) if seed == 2 else rng.normal(size=(C, N))
    t2i, i2t = R.ranks(S, c2i)
    nt, ni = naive_ranks(S, c2i)
    np.testing.assert_array_equal(t2i, nt)
    np.testing.assert_array_equal(i2t, ni)
    m = R.evaluate(S, c2i)
    assert m["t2i_r5"] == pytest.approx(100 * np.mean(nt <= 5))
    assert m["i2t_medr"] == pytest.approx(np.median(ni))


def test_evaluate_with_model_and_dataset_like():
    class Identity:
        metric = "dot"

        def embed_text(self, X):
            return X

        def embed_image(self, Y):
            return Y

    class DS:
        caption_to_image = np.array([0, 1, 2])

    X = np.eye(3)
    m = R.evaluate(Identity(), DS(), text=X, image=X)
    assert m["t2i_r1"] == 100 and m["i2t_r1"] == 100 and m["rsum"] == 600
    with pytest.raises(ShapeError, match="text="):
        R.evaluate(Identity(), DS())
    with pytest.raises(ShapeError, match="rows"):
        R.evaluate(np.zeros((2, 3)), np.array([0, 1, 2]))
    row = R.metrics_row("id", "trained", m)
    assert list(row) == list(R.ROW_KEYS)
    df = R.results_table([row])
    assert df.loc["id", "rsum"] == 600


def test_bootstrap_ci_edges_and_determinism():
    assert R.bootstrap_ci(np.ones(50, int), 10) == (100.0, 100.0)
    assert R.bootstrap_ci(np.full(50, 99), 10) == (0.0, 0.0)
    r = np.random.default_rng(0).integers(1, 30, 300)
    low, high = R.bootstrap_ci(r, 10)
    assert low < 100 * np.mean(r <= 10) < high
    assert R.bootstrap_ci(r, 10) == (low, high)  # seeded
    assert R.bootstrap_ci(r, 10, seed=1) != (low, high)
    with pytest.raises(ShapeError):
        R.bootstrap_ci(np.array([]), 10)


def test_bootstrap_ci_covers_the_true_recall_about_95_percent_of_the_time():
    """Coverage against the truth: queries hit with probability 0.4; intervals from 200 samples."""
    rng = np.random.default_rng(3)
    covered = 0
    for t in range(200):
        r = np.where(rng.random(300) < 0.4, 1, 50)
        low, high = R.bootstrap_ci(r, 10, n_boot=500, seed=t)
        covered += low <= 40.0 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_paired_bootstrap_cancels_what_two_models_share():
    rng = np.random.default_rng(4)
    base = rng.integers(1, 40, 400)
    same = R.paired_bootstrap(base, base)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0, "real": False}
    better = base.copy()
    better[(base > 10) & (base <= 14)] = 1  # a few more hits, the rest identical
    d = R.paired_bootstrap(better, base)
    assert d["real"] and d["low"] > 0 and d["diff"] == pytest.approx(100 * np.mean((base > 10) & (base <= 14)))
    # Paired is narrower than the two separate intervals would suggest.
    la, ha = R.bootstrap_ci(better, 10)
    lb, hb = R.bootstrap_ci(base, 10)
    assert d["high"] - d["low"] < (ha - la) + (hb - lb)
    with pytest.raises(ShapeError):
        R.paired_bootstrap(base, base[:-1])


def test_unseen_captions_by_hand():
    """Test captions that occur among train's (case and spacing ignored) are 'seen'."""
    from crosslab.data.base import CaptionedImages
    from crosslab.evaluation import unseen_captions

    img = np.zeros((4, 4, 3), np.uint8)
    ds = CaptionedImages(
        "toy", ["a", "b", "c", "d"], [img] * 4,
        ["A red apple", "green pear", "a  RED apple", "blue car", "green pear ", "lemon"],
        [0, 1, 2, 2, 3, 3], ["train", "train", "test", "test"])
    # test captions in split order: "a  RED apple", "blue car", "green pear ", "lemon"
    assert unseen_captions(ds).tolist() == [False, True, False, True]
    assert unseen_captions(ds, "train", seen="test").tolist() == [False, False]


def test_cluster_bootstrap_draws_whole_groups():
    from crosslab.evaluation import bootstrap_ci, paired_bootstrap

    rng = np.random.default_rng(3)
    r = rng.integers(1, 30, size=40)
    r2 = rng.integers(1, 30, size=40)
    # one group per query, in query order: exactly the plain bootstrap
    assert bootstrap_ci(r, 10, groups=np.arange(40)) == bootstrap_ci(r, 10)
    assert paired_bootstrap(r, r2, groups=np.arange(40)) == paired_bootstrap(r, r2)
    # every query twice (two captions of one picture that always agree): drawing pictures gives
    # exactly the interval of the 40 pictures alone; drawing captions pretends to twice the data
    doubled, doubled2 = np.repeat(r, 2), np.repeat(r2, 2)
    pictures = np.repeat([f"p{i:02d}" for i in range(40)], 2)
    assert bootstrap_ci(doubled, 10, groups=pictures) == bootstrap_ci(r, 10)
    assert paired_bootstrap(doubled, doubled2, groups=pictures) == paired_bootstrap(r, r2)
    lo, hi = bootstrap_ci(doubled, 10)
    glo, ghi = bootstrap_ci(doubled, 10, groups=pictures)
    assert hi - lo < ghi - glo  # the naive interval is too narrow
    with pytest.raises(ShapeError, match="one label per query"):
        bootstrap_ci(r, 10, groups=np.arange(39))


class _Oracle:
    """A stand-in pipeline scoring a caption against a picture by a rule on their indices."""

    w = None

    def __init__(self, ds, rule):
        self.ds, self.rule = ds, rule

    def encode_text(self, ds, rows=None):
        return np.asarray(rows)

    def encode_image(self, ds, rows=None):
        return np.asarray(rows)

    def score(self, T, V, axis=1):
        own = self.ds.caption_to_image[T][:, None] == V[None, :]
        return {"right": own * 1.0, "wrong": -1.0 * own, "blind": np.zeros(own.shape)}[self.rule]


def test_twin_accuracy_against_oracles():
    from crosslab.data import make_scenes
    from crosslab.evaluation import twin_accuracy, twin_outcomes

    ds = make_scenes(60, seed=1, hard_pairs=True)
    out, pair, kind = twin_outcomes(_Oracle(ds, "right"), ds, "test")
    n_test = int((ds.split == "test").sum())
    assert len(out) == 5 * n_test and set(kind) <= {"binding", "relation"} and (out == 1).all()
    assert all(ds.meta[2 * p]["pair"] == p for p in pair)
    for rule, share in (("right", 100.0), ("wrong", 0.0), ("blind", 50.0)):
        acc = twin_accuracy(_Oracle(ds, rule), ds, "test")
        assert acc["all"]["share"] == acc["all"]["low"] == acc["all"]["high"] == share
        assert acc["all"]["n"] == 5 * n_test and acc["all"]["pairs"] == n_test // 2
    with pytest.raises(ShapeError, match="hard_pairs=True"):
        twin_outcomes(_Oracle(ds, "right"), make_scenes(10, seed=1), "test")
