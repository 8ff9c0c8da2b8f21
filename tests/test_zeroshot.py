"""ConSE and score fusion against hand-computed values and naive loops."""

from __future__ import annotations

import numpy as np
import pytest

from crosslab import zeroshot as Z
from crosslab.errors import ModelError, ShapeError
from crosslab.evaluation import evaluate, evaluate_pipeline, ranks
from crosslab.pipeline import FusionPipeline, Head, Pipeline, Retriever


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test caches under its own temporary folder, never the user's cache."""
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "crosslab-cache"))


def test_conse_hand_computed_three_classes():
    # Three classes with unit embeddings e0, e1, e2 in 2-D; probabilities chosen, logits = log p.
    E = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])  # rows are normalised by ConSE
    e = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    L = np.log(p) + 3.0  # any constant shift: softmax is invariant
    full = Z.ConSE(E, T=3).embed_image(L)
    np.testing.assert_allclose(full, p @ e, atol=1e-6)  # T = K: plain expectation
    top2 = Z.ConSE(E, T=2).embed_image(L)
    want = np.array([(0.5 * e[0] + 0.3 * e[1]) / 0.8, (0.7 * e[2] + 0.2 * e[1]) / 0.9])
    np.testing.assert_allclose(top2, want, atol=1e-6)
    top1 = Z.ConSE(E, T=1).embed_image(L)
    np.testing.assert_allclose(top1, e[[0, 2]], atol=1e-6)
    X = np.ones((4, 2), np.float32)
    assert Z.ConSE(E, T=1).embed_text(X) is X


def test_conse_temperature_and_centring_hand_computed():
    E = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    e = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    L = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    for tau in (1.0, 2.0, 5.0):
        q = np.exp(L / tau)
        q /= q.sum(1, keepdims=True)  # the flattened softmax, by hand
        np.testing.assert_allclose(Z.ConSE(E, T=3, temperature=tau).embed_image(L), q @ e, atol=1e-6)
    with pytest.raises(ModelError, match="temperature"):
        Z.ConSE(E, T=1, temperature=0.0)
    # Centring: subtract the mean caption vector and the mean image vector of unpaired samples.
    Xtr = np.array([[1.0, 1.0], [3.0, -1.0]], np.float32)
    m = Z.ConSE(E, T=2, temperature=2.0).center(Xtr, L)
    raw = Z.ConSE(E, T=2, temperature=2.0).embed_image(L)
    np.testing.assert_allclose(m.embed_image(L), raw - raw.mean(0), atol=1e-6)
    np.testing.assert_allclose(m.embed_text(np.array([[2.0, 0.0]])), [[0.0, 0.0]], atol=1e-6)
    torch = pytest.importorskip("torch")
    out = m.embed_text(torch.tensor([[2.0, 1.0]]))
    assert isinstance(out, torch.Tensor) and torch.allclose(out, torch.tensor([[0.0, 1.0]]))
    assert "centred" in repr(m) and "temperature=2" in repr(m)
    assert m.with_T(3).text_mean_ is None  # a new T means new means


def test_choose_conse_grid_and_centring():
    rng = np.random.default_rng(0)
    E = rng.normal(size=(6, 4))
    L = rng.normal(size=(5, 6)) * 3
    X = Z.ConSE(E, T=6).embed_image(L) + 0.05 * rng.normal(size=(5, 4))
    c2i = np.arange(5)
    best, scores = Z.choose_conse(Z.ConSE(E, T=1), (X, L, c2i), train=(X, L), Ts=(1, 3, 6),
                                  temperatures=(1.0, 4.0))
    assert set(scores) == {(T, t) for T in (1, 3, 6) for t in (1.0, 4.0)}
    assert scores[(best.T, best.temperature)] == max(scores.values())
    assert best.text_mean_ is not None
    again = Z.ConSE(E, T=best.T, temperature=best.temperature).center(X, L)
    assert evaluate(again, c2i, text=X, image=L)["rsum"] == scores[(best.T, best.temperature)]


def test_conse_ties_and_errors():
    E = np.eye(3)
    # All three classes equally likely: the lower indices win the top-2.
    idx, p = Z.ConSE(E, T=2).top_classes(np.zeros((1, 3)))
    assert idx.tolist() == [[0, 1]] and np.allclose(p, 1 / 3)
    with pytest.raises(ModelError, match="T must be"):
        Z.ConSE(E, T=4)
    with pytest.raises(ShapeError, match="3 class embeddings"):
        Z.ConSE(E, T=1).embed_image(np.zeros((2, 5)))
    with pytest.raises(ShapeError, match="features"):
        Z.ConSE(E, T=1).embed_text(np.zeros((2, 4)))


class _Bag:
    """A toy text encoder: one-hot bag of a fixed vocabulary."""

    vocab = ["cat", "dog", "car", "tabby"]

    def transform(self, texts):
        out = np.zeros((len(texts), len(self.vocab)), np.float32)
        for i, t in enumerate(texts):
            for w in t.split():
                if w in self.vocab:
                    out[i, self.vocab.index(w)] += 1
        return out


def test_from_encoder_averages_synonyms():
    m = Z.ConSE.from_encoder(_Bag(), T=1, class_names=[["cat", "tabby"], "dog", "car"])
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(m.class_embeddings[0], [s, 0, 0, s], atol=1e-9)
    np.testing.assert_allclose(m.class_embeddings[1:], np.eye(4)[[1, 2]], atol=1e-9)
    # An image whose most probable class is 0 lands on that class's text vector.
    out = m.embed_image(np.array([[5.0, 1.0, 0.0]]))
    np.testing.assert_allclose(out[0], m.class_embeddings[0], atol=1e-6)


def test_choose_conse_picks_best_T_on_val():
    rng = np.random.default_rng(0)
    K, d, N = 20, 8, 30
    E = rng.normal(size=(K, d))
    logits = rng.normal(size=(N, K)) * 3
    model = Z.ConSE(E, T=1)
    X = model.with_T(3).embed_image(logits) + 0.05 * rng.normal(size=(N, d))  # captions from T=3
    best, val = Z.choose_conse(model, (X, logits, np.arange(N)), Ts=(1, 3, 20, 50), temperatures=(1.0,))
    assert set(val) == {(1, 1.0), (3, 1.0), (20, 1.0)}  # T=50 > K classes is skipped
    assert (best.T, best.temperature) == max(val, key=val.get)
    assert best.text_mean_ is None  # no train split given: not centred
    assert val[(best.T, 1.0)] == evaluate(best, np.arange(N), text=X, image=logits)["rsum"]
    with pytest.raises(ModelError, match="no T"):
        Z.choose_conse(model, (X, logits, np.arange(N)), Ts=(50,))


def test_imagenet_class_names_match_logit_order():
    names = Z.imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[967] == "espresso"


# ----------------------------------------------------------------------------- fusion
def _two_scores(seed=0, C=12, N=7):
    rng = np.random.default_rng(seed)
    c2i = np.concatenate([np.arange(N), rng.integers(0, N, C - N)])
    return rng.normal(size=(C, N)), 0.3 * rng.normal(size=(C, N)) + 5, c2i


def test_zscore_fusion_equals_naive_loop():
    Sa, Sb, _ = _two_scores()
    w = 0.3
    rows = np.array([(1 - w) * (a - a.mean()) / a.std() + w * (b - b.mean()) / b.std()
                     for a, b in zip(Sa, Sb, strict=True)])
    cols = np.array([(1 - w) * (a - a.mean()) / a.std() + w * (b - b.mean()) / b.std()
                     for a, b in zip(Sa.T, Sb.T, strict=True)]).T
    np.testing.assert_allclose(Z.fused_scores(Sa, Sb, w, axis=1), rows, atol=1e-12)
    np.testing.assert_allclose(Z.fused_scores(Sa, Sb, w, axis=0), cols, atol=1e-12)
    # A constant row has no spread: it contributes zeros, never NaN.
    Sa[0] = 1.0
    assert np.isfinite(Z.fused_scores(Sa, Sb, w, axis=1)).all()


class _ToyData:
    """The few attributes of a CaptionedImages that pipelines and evaluate_pipeline read."""

    name = "toy"

    def __init__(self, c2i, split):
        self.caption_to_image = np.asarray(c2i, dtype=np.int64)
        self.split = np.asarray(split)
        self.captions = [f"c{i}" for i in range(len(self.caption_to_image))]

    def __len__(self):
        return len(self.split)

    def fingerprint(self):
        return "toy"


class _Fixed(Retriever):
    """A retriever with a fixed ``(C, N)`` score matrix over one toy dataset: embeddings are row indices."""

    kind = "fixed"

    def __init__(self, S, name="fixed"):
        self.S, self.name = np.asarray(S, dtype=np.float64), name

    def encode_text(self, texts, *, rows=None):
        return np.arange(len(self.S)) if rows is None else np.asarray(rows)

    def encode_image(self, images, *, rows=None, progress=False):
        return np.arange(self.S.shape[1]) if rows is None else np.asarray(rows)

    def score(self, T, V, *, axis=1, metric=None, temperature=1.0):
        return self.S[np.ix_(T, V)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fusion_endpoints_equal_each_model(seed):
    Sa, Sb, c2i = _two_scores(seed)
    ds = _ToyData(c2i, ["test"] * Sa.shape[1])
    fusion = FusionPipeline("fusion(a,b)", _Fixed(Sa), _Fixed(Sb), 0.5)
    # z-scoring is a per-query increasing map, so w=0 / w=1 rank exactly like a / b.
    for w, S in ((0.0, Sa), (1.0, Sb)):
        t2i, _ = ranks(Z.fused_scores(Sa, Sb, w, axis=1), c2i)
        _, i2t = ranks(Z.fused_scores(Sa, Sb, w, axis=0), c2i)
        want_t2i, want_i2t = ranks(S, c2i)
        np.testing.assert_array_equal(t2i, want_t2i)
        np.testing.assert_array_equal(i2t, want_i2t)
        assert evaluate_pipeline(fusion.with_w(w), ds, "test") == evaluate(S, c2i)
    assert fusion.w == 0.5  # with_w made new pipelines


def _naive_z(v):
    v = np.asarray(v, dtype=np.float64)
    sd = v.std()
    return np.zeros_like(v) if sd == 0 else (v - v.mean()) / sd


def _naive_metrics(S_t2i, S_i2t, c2i, ks=(1, 5, 10)):
    """Flickr30k protocol by loops: t2i from ``S_t2i``, i2t (best caption per image) from ``S_i2t``."""
    C, N = S_t2i.shape
    t2i = []
    for c in range(C):
        row, g = S_t2i[c], c2i[c]
        t2i.append(1 + sum(row[j] > row[g] or (row[j] == row[g] and j < g) for j in range(N)))
    i2t = []
    for i in sorted(set(c2i.tolist())):
        col = S_i2t[:, i]
        i2t.append(min(1 + sum(col[j] > col[c] or (col[j] == col[c] and j < c) for j in range(C))
                       for c in range(C) if c2i[c] == i))
    out = {}
    for d, r in (("t2i", np.array(t2i)), ("i2t", np.array(i2t))):
        for k in ks:
            out[f"{d}_r{k}"] = 100.0 * np.mean(r <= k)
        out[f"{d}_medr"], out[f"{d}_meanr"] = float(np.median(r)), float(np.mean(r))
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("t2i", "i2t") for k in ks)
    return out


class _Lin:
    """A linear head: text ``X @ A``, image ``Y @ B``, compared by cosine."""

    metric = "cosine"

    def __init__(self, A, B):
        self.A, self.B = A, B

    def embed_text(self, X):
        return X @ self.A

    def embed_image(self, Y):
        return Y @ self.B

    def to_arrays(self):
        return {"A": self.A, "B": self.B}


class _ToyText:
    """A fitted text encoder for toy captions 'c<i>': row i of ``X``."""

    name = "toy-text"

    def __init__(self, X):
        self.X = X

    def transform(self, texts, cache=False, progress=False):
        return self.X[[int(t[1:]) for t in texts]]


class _ToyImage:
    """An image encoder of one toy dataset: its features are ``Y`` (and so are its 'logits')."""

    name, image_size = "toy-image", 0

    def __init__(self, Y):
        self.Y = Y

    def extract(self, data, cache=False, progress=False, return_logits=False):
        return (self.Y, self.Y) if return_logits else self.Y


def _cos(A, B):
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    return A @ B.T


@pytest.mark.parametrize("w", [0.0, 0.3, 0.7, 1.0])
def test_fusion_pipeline_evaluation_equals_naive_zscored_ranks(w):
    rng = np.random.default_rng(5)
    N, C = 20, 50
    c2i = np.concatenate([np.arange(N), rng.integers(0, N, C - N)])
    split = np.array(["train"] * 6 + ["test"] * 14)
    ds = _ToyData(c2i, split)
    Y1, Y2 = rng.normal(size=(N, 5)), rng.normal(size=(N, 4))
    X1 = Y1[c2i] + 0.9 * rng.normal(size=(C, 5))
    X2 = Y2[c2i] + 1.2 * rng.normal(size=(C, 4))
    h1 = _Lin(rng.normal(size=(5, 3)), rng.normal(size=(5, 3)))
    h2 = _Lin(np.eye(4), np.eye(4))
    a = Pipeline("a", "toy", _ToyText(X1), _ToyImage(Y1), h1, gallery=ds)
    b = Pipeline("b", "toy", _ToyText(X2), _ToyImage(Y2), h2, gallery=ds)
    assert isinstance(h1, Head)
    fusion = FusionPipeline("fusion(a,b)", a, b, w)
    # The test split by hand: its captions, its images, local caption -> image indices.
    imgs = np.flatnonzero(split == "test")
    caps = np.flatnonzero(np.isin(c2i, imgs))
    local = np.searchsorted(imgs, c2i[caps])
    Sa = _cos(h1.embed_text(X1[caps]), h1.embed_image(Y1[imgs]))
    Sb = _cos(X2[caps], Y2[imgs])
    np.testing.assert_allclose(a.score(a.encode_text(ds, rows=caps), a.encode_image(ds, rows=imgs)), Sa,
                               atol=1e-5)
    # Text->image: each caption's row z-scored over the images; image->text: each image's column
    # z-scored over the captions.
    rows = np.array([(1 - w) * _naive_z(ra) + w * _naive_z(rb) for ra, rb in zip(Sa, Sb, strict=True)])
    cols = np.array([(1 - w) * _naive_z(ca) + w * _naive_z(cb) for ca, cb in zip(Sa.T, Sb.T, strict=True)]).T
    want = _naive_metrics(rows, cols, local)
    got = evaluate_pipeline(fusion, ds, "test")
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k
    # The two directions really differ in general (one matrix for both would be wrong).
    assert not np.allclose(rows, cols) or w in (0.0, 1.0)


def test_fusion_pipeline_scores_and_choose_w():
    rng = np.random.default_rng(3)
    N, C = 15, 30
    c2i = np.arange(C) % N
    Y1, Y2 = rng.normal(size=(N, 5)), rng.normal(size=(N, 4))
    X1 = Y1[c2i] + 0.8 * rng.normal(size=(C, 5))
    X2 = Y2[c2i] + 0.8 * rng.normal(size=(C, 4))
    ds = _ToyData(c2i, ["val"] * N)
    a = Pipeline("a", "toy", _ToyText(X1), _ToyImage(Y1), _Lin(np.eye(5), np.eye(5)), gallery=ds)
    b = Pipeline("b", "toy", _ToyText(X2), _ToyImage(Y2), _Lin(np.eye(4), np.eye(4)), gallery=ds)
    fm = FusionPipeline("fusion(a,b)", a, b, 0.5)
    T, V = fm.encode_text(ds), fm.encode_image(ds)
    Sa, Sb = a.score(T[0], V[0]), b.score(T[1], V[1])
    np.testing.assert_allclose(Sa, _cos(X1, Y1), atol=1e-6)
    np.testing.assert_allclose(fm.score(T, V), Z.fused_scores(Sa, Sb, 0.5, 1))
    np.testing.assert_allclose(fm.score(T, V, axis=0), Z.fused_scores(Sa, Sb, 0.5, 0))
    np.testing.assert_allclose(fm.scores(ds, ds), Z.fused_scores(Sa, Sb, 0.5, 1))

    def fused_rsum(v):
        t2i = ranks(Z.fused_scores(Sa, Sb, v, 1), c2i)[0]
        i2t = ranks(Z.fused_scores(Sa, Sb, v, 0), c2i)[1]
        return 100 * sum(np.mean(r <= k) for r in (t2i, i2t) for k in (1, 5, 10))

    assert evaluate_pipeline(fm, ds, "val")["rsum"] == pytest.approx(fused_rsum(0.5), abs=1e-9)
    w, det = Z.choose_w(Sa, Sb, c2i, rule="best")
    val = det["val_rsum"]
    assert set(val) == set(Z.W_GRID) and val[w] == max(val.values()) and det["best_w"] == w
    for v in (0.0, 0.3, 1.0):  # the bootstrap's unit-weight pass is the fused rSum
        assert val[v] == pytest.approx(fused_rsum(v), abs=1e-9)
        assert val[v] == pytest.approx(evaluate_pipeline(fm.with_w(v), ds, "val")["rsum"], abs=1e-9)
    # Two independent noisy views: mixing beats either alone on this data.
    assert val[w] > max(val[0.0], val[1.0])
    # One-SE rule: the largest w within one bootstrap SE of the best; deterministic.
    w1, det1 = Z.choose_w(Sa, Sb, c2i)
    assert w1 >= w and det1["best_w"] == w and det1["se"][w] == 0.0
    assert val[w1] >= val[w] - det1["se"][w1]
    assert all(val[v] < val[w] - det1["se"][v] for v in Z.W_GRID if v > w1)
    assert Z.choose_w(Sa, Sb, c2i) == (w1, det1)
    # A query set (t2i only): R@1 + R@5 + R@10 of text->image ranks, from evaluation.ranks.
    q = np.arange(0, C, 3)  # a subset of the queries: some images have none
    wq, detq = Z.choose_w(Sa[q], Sb[q], c2i[q], rule="best", directions="t2i")
    for v in (0.0, 0.4, 1.0):
        r = ranks(Z.fused_scores(Sa[q], Sb[q], v, 1), c2i[q])[0]
        assert detq["val_rsum"][v] == pytest.approx(100 * sum(np.mean(r <= k) for k in (1, 5, 10)))
    assert detq["directions"] == "t2i" and detq["val_rsum"][wq] == max(detq["val_rsum"].values())
    with pytest.raises(ShapeError, match="directions"):
        Z.choose_w(Sa, Sb, c2i, directions="i2t")
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ModelError, match="w must be"):
            FusionPipeline("fusion(a,b)", a, b, bad)
        with pytest.raises(ModelError, match="w must be"):
            fm.with_w(bad)
    with pytest.raises(ModelError, match="not a fusion"):
        a.with_w(0.5)
    with pytest.raises(ShapeError, match="differ in shape"):
        Z.fused_scores(Sa, Sb[:, :3], 0.5, 1)
