"""The attention head: its score against naive loops and hand-computed cases, training, the table entry."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import crosslab as cl
from crosslab import attention, pipelines
from crosslab.attention import AttentionConfig, AttentionHead, AttentionTrainer, attention_scores
from crosslab.errors import ModelError, ShapeError
from crosslab.pipeline import Head, load_pipeline


def _unit(rng, *shape):
    x = rng.normal(size=shape)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _words(rng, C=4, L=5, d=6):
    """(C, L, d) unit word vectors with 1..L real words per caption (zero rows after them)."""
    u = _unit(rng, C, L, d)
    lengths = rng.integers(1, L + 1, size=C)
    for c, n in enumerate(lengths):
        u[c, n:] = 0
    return u, lengths


def _naive(u, lengths, r, lam, direction):
    """One (caption, picture) pair at a time, straight from the formulas."""
    out = np.zeros((len(u), len(r)))
    for c in range(len(u)):
        W = u[c, : lengths[c]]
        for n in range(len(r)):
            s = W @ r[n].T  # (m, R)
            if direction == "t2i":
                a = np.exp(lam * s) / np.exp(lam * s).sum(1, keepdims=True)
                out[c, n] = np.mean((a * s).sum(1))
            else:
                b = np.exp(lam * s) / np.exp(lam * s).sum(0, keepdims=True)
                out[c, n] = np.mean((b * s).sum(0))
    return out


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_scores_equal_a_naive_loop(direction):
    rng = np.random.default_rng(0)
    u, lengths = _words(rng)
    r = _unit(rng, 3, 7, 6)
    got = attention_scores(torch.tensor(u), torch.tensor(u).abs().sum(2) > 0, torch.tensor(r), lam=9.0,
                           direction=direction)
    np.testing.assert_allclose(got.numpy(), _naive(u, lengths, r, 9.0, direction), atol=1e-12)


def test_one_region_attention_is_the_pooled_dot_product():
    rng = np.random.default_rng(1)
    u, lengths = _words(rng)
    r = _unit(rng, 3, 1, 6)  # one region per picture: nothing to choose between
    mask = torch.tensor(u).abs().sum(2) > 0
    got = attention_scores(torch.tensor(u), mask, torch.tensor(r), lam=9.0).numpy()
    # by hand: the mean of the real words' vectors, dotted with the region
    want = np.array([[u[c, : lengths[c]].mean(0) @ r[n, 0] for n in range(3)] for c in range(4)])
    np.testing.assert_allclose(got, want, atol=1e-12)
    # ... and with many regions, lam = 0 is pooling on both sides
    r = _unit(rng, 3, 7, 6)
    got0 = attention_scores(torch.tensor(u), mask, torch.tensor(r), lam=0.0).numpy()
    pooled = attention_scores(torch.tensor(u), mask, torch.tensor(r), lam=0.0, pooled=True).numpy()
    want0 = np.array([[u[c, : lengths[c]].mean(0) @ r[n].mean(0) for n in range(3)] for c in range(4)])
    np.testing.assert_allclose(got0, want0, atol=1e-12)
    np.testing.assert_allclose(pooled, want0, atol=1e-12)


def _head(**kw):
    torch.manual_seed(0)
    head = AttentionHead(AttentionConfig(text_dim=5, image_dim=8, d=6, **kw)).eval()
    with torch.no_grad():  # a little context, so the convolution is exercised
        head.context.weight.normal_(0, 0.1)
    return head


@pytest.mark.parametrize("kw", [{}, {"direction": "i2t"}, {"pooled": True}])
def test_word_shares_sum_to_the_score_and_chunks_change_nothing(kw, monkeypatch):
    rng = np.random.default_rng(2)
    head = _head(**kw)
    X = rng.normal(size=(7, 4, 5)).astype(np.float32)
    X[0, 2:] = 0  # a short caption
    Y = rng.normal(size=(5, 9, 8)).astype(np.float32)
    T, V = head.embed_text(X), head.embed_image(Y)
    assert np.abs(T[0, 2:]).sum() == 0 and np.allclose(np.linalg.norm(T[0, :2], axis=1), 1)
    S = head.score(T, V)
    assert S.shape == (7, 5) and S.dtype == np.float64
    for c, n in ((0, 1), (3, 4)):
        shares, maps = head.word_attention(T[c], V[n])
        assert len(shares) == (2 if c == 0 else 4) and maps.shape == (len(shares), 9)
        assert shares.sum() == pytest.approx(S[c, n], abs=1e-6)
    monkeypatch.setattr(attention, "CHUNK_BYTES", 4 * 4 * 9 * 2)  # two pictures per chunk
    np.testing.assert_allclose(head.score(T, V), S, atol=1e-6)  # float32 sums in another order


def test_the_head_is_a_head_and_round_trips_through_plain_arrays():
    head = _head()
    assert isinstance(head, Head) and head.metric == "attention"
    arrays = head.to_arrays()
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    back = AttentionHead.from_arrays(arrays, device="cpu")
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(3, 4, 5)), rng.normal(size=(2, 9, 8))
    np.testing.assert_array_equal(back.embed_text(X), head.embed_text(X))
    np.testing.assert_array_equal(back.score(back.embed_text(X), back.embed_image(Y)),
                                  head.score(head.embed_text(X), head.embed_image(Y)))


def test_bad_shapes_and_settings_are_named():
    head = _head()
    with pytest.raises(ModelError, match=r"\(captions, words, numbers\)"):
        head.embed_text(np.zeros((3, 5)))
    with pytest.raises(ModelError, match="width 8, got 7"):
        head.embed_image(np.zeros((2, 9, 7)))
    with pytest.raises(ShapeError, match="need"):
        head.score(np.zeros((2, 3, 6)), np.zeros((2, 6)))
    with pytest.raises(ModelError, match="direction"):
        AttentionHead(AttentionConfig(5, 8, direction="both"))
    with pytest.raises(ModelError, match="unknown attention setting"):
        AttentionTrainer(learning_rate=1)


def _planted(rng, n_img, concepts, R=4):
    """Pictures whose regions hold 2 of the concepts (others noise); captions name them (+ a filler word)."""
    K = len(concepts[1])  # the last word vector is the filler
    word_vecs, region_vecs = concepts
    X, Y, c2i = [], [], []
    for i in range(n_img):
        ks = rng.choice(K, 2, replace=False)
        regions = rng.normal(scale=0.3, size=(R, region_vecs.shape[1]))
        where = rng.choice(R, 2, replace=False)
        regions[where] += region_vecs[ks]
        Y.append(regions)
        for order in (ks, ks[::-1]):
            X.append(np.stack([word_vecs[order[0]], word_vecs[-1], word_vecs[order[1]]]) +
                     rng.normal(scale=0.05, size=(3, word_vecs.shape[1])))
            c2i.append(i)
    return np.array(X, np.float32), np.array(Y, np.float32), np.array(c2i)


def test_training_learns_planted_word_region_matches():
    rng = np.random.default_rng(4)
    concepts = (rng.normal(size=(9, 10)), rng.normal(size=(8, 12)))  # 8 concepts + a filler word
    train, val = _planted(rng, 120, concepts), _planted(rng, 30, concepts)
    t = AttentionTrainer(d=16, lam=5.0, batch_size=32, epochs=25, patience=25, progress=False, device="cpu")
    t.fit(*train, val=val)
    h = t.history_
    assert h["loss"][-1] < h["loss"][0] and 1 <= h["best_epoch"] <= len(h["loss"])
    m = t.model_
    r = cl.evaluation.evaluate(m.score(m.embed_text(val[0]), m.embed_image(val[1])), val[2])
    # 30 pictures: chance R@5 is 17 %; two named concepts out of 8 leave few candidates
    assert r["t2i_r5"] > 60 and max(h["val_rsum"]) == pytest.approx(r["rsum"])
    # deterministic on the CPU
    again = AttentionTrainer(d=16, lam=5.0, batch_size=32, epochs=3, patience=25, progress=False, device="cpu")
    first = AttentionTrainer(d=16, lam=5.0, batch_size=32, epochs=3, patience=25, progress=False, device="cpu")
    assert again.fit(*train).history_["loss"] == first.fit(*train).history_["loss"]


pytest.importorskip("efficientnet_lite_pytorch")


@pytest.mark.parametrize("name", pipelines.LESSON12)
def test_table_entries_fit_search_and_round_trip(name, scenes, monkeypatch, tmp_path):
    spec = pipelines.PIPELINES[name]
    monkeypatch.setitem(pipelines.PIPELINES, name, dataclasses.replace(
        spec, settings={**spec.settings, "epochs": 2, "d": 16}))
    p = pipelines.create_pipeline(name, scenes, progress=False, device="cpu")
    assert isinstance(p.head, AttentionHead) and p.image_input == "grid" and p.text.name == "glove-words"
    assert p.head.cfg.pooled == (name == "pooled+glove") and p.kind == spec.kind
    hits = p.search("a red circle", k=3)
    S = p.scores(["a red circle"], scenes)
    assert [h.image for h in hits] == list(np.argsort(-S[0], kind="stable")[:3])
    assert S.shape == (1, len(scenes)) and np.isfinite(S).all()
    with pytest.raises(ModelError, match="no 'cosine' to choose"):
        p.search("a red circle", metric="cosine")
    back = load_pipeline(p.save(tmp_path / "a.npz"), gallery=scenes, device="cpu")
    np.testing.assert_array_equal(back.scores(["a red circle"], scenes), S)
    # the grid pass filled the pooled features' cache entry too: a pooled pipeline needs no CNN pass
    from crosslab.image import ImageEncoder

    enc = ImageEncoder("efficientnet_lite0", image_size=160)
    enc.extract(scenes, progress=False)
    assert enc.last_cache_info_.hit
