"""crosslab.explain: word shares checked by hand and against direct scores, occlusion against a
picture the model only partly reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import crosslab as cl
from crosslab.attention import AttentionConfig, AttentionHead
from crosslab.baselines import RegularizedCCA
from crosslab.errors import ModelError, QueryError
from crosslab.explain import GREY, explain, occlusion_map, word_contributions
from crosslab.joint import JointConfig, JointModel
from crosslab.pipeline import Pipeline
from crosslab.text_encoders import WordSequenceEncoder, WordVectorEncoder

pytest.importorskip("gensim")


def _pil(im):
    return Image.fromarray(im) if isinstance(im, np.ndarray) else im


class Corner:
    """A stand-in CNN that reads only the top-left fifth of a picture (as a 4 x 4 thumbnail of it)."""

    name, image_size = "corner", 4

    def _one(self, im):
        a = np.asarray(_pil(im).convert("RGB"))
        h, w = a.shape[0] // 5, a.shape[1] // 5
        return np.asarray(Image.fromarray(a[:h, :w]).resize((4, 4), Image.BILINEAR), np.float32).ravel() / 255

    def extract(self, data, cache=False, progress=False, return_logits=False):
        ims = [data.load_image(i) for i in range(len(data))] if hasattr(data, "load_image") else list(data)
        f = np.stack([self._one(im) for im in ims])
        return (f, f) if return_logits else f


class Grid:
    """A stand-in grid: 2 x 2 regions of 3 numbers (each quarter's mean colour)."""

    name, image_size = "grid", 2

    def extract_grid(self, data, cache=False, progress=False):
        ims = [data.load_image(i) for i in range(len(data))] if hasattr(data, "load_image") else list(data)
        out = []
        for im in ims:
            a = np.asarray(_pil(im).convert("RGB").resize((2, 2), Image.BOX), np.float32) / 255
            out.append(a.transpose(2, 0, 1))
        return np.stack(out)


@pytest.fixture(scope="module")
def ds():
    return cl.data.make_scenes(40, seed=5)


@pytest.fixture(scope="module")
def glove():
    return WordVectorEncoder("glove-mean").fit(["a"])


def _cca(ds, glove):
    head = RegularizedCCA(d=6, reg=0.3).fit(glove.transform(ds.captions), Corner().extract(ds), ds.caption_to_image)
    return Pipeline("toy cca", "cca", glove, Corner(), head, gallery=ds)


def test_a_linear_heads_word_shares_sum_to_its_score_by_hand(ds, glove):
    p = _cca(ds, glove)
    q = "a red circle near a red square"
    words, c, rest, method, maps = word_contributions(p, q, 3)
    assert method == "exact" and maps is None and words == ["a", "red", "circle", "near", "a", "red", "square"]
    # by hand: t = (mean of the 7 word vectors - mu) A, score = cos(t, v); word w's share is (x_w / 7) A . v / (|t||v|)
    kv, h = glove._parts()[0].kv, p.head
    X = np.stack([kv[w] for w in words]).astype(np.float64)
    t = (X.mean(0) - h.x_mean_) @ h.A_
    v = np.asarray(h.embed_image(Corner().extract([ds.load_image(3)])), np.float64)[0]
    norm = np.linalg.norm(t) * np.linalg.norm(v)
    np.testing.assert_allclose(c, (X / 7) @ h.A_ @ v / norm, rtol=1e-5)
    assert rest == pytest.approx(-(h.x_mean_ @ h.A_) @ v / norm, rel=1e-5)
    score = p.scores(q, [ds.load_image(3)])[0, 0]
    assert c.sum() + rest == pytest.approx(score, abs=1e-5)
    # the two "red"s and the two "a"s hold the same share each
    assert c[1] == pytest.approx(c[5]) and c[0] == pytest.approx(c[4])


def test_linear_towers_are_exact_and_an_mlp_is_left_one_word_out(ds, glove):
    X, Y = glove.transform(ds.captions), Corner().extract(ds)
    torch.manual_seed(0)
    lin = JointModel(JointConfig(text_dim=50, image_dim=48, d=8)).eval()
    mlp = JointModel(JointConfig(text_dim=50, image_dim=48, d=8, head="mlp", hidden=16)).eval()
    for head in (lin, mlp):
        for tower, data in ((head.text, X), (head.image, Y)):
            tower.mean.copy_(torch.as_tensor(data.mean(0)))
    q, pic = "a blue triangle", ds.load_image(0)
    p = Pipeline("lin", "trained", glove, Corner(), lin, gallery=ds)
    words, c, rest, method, _ = word_contributions(p, q, pic)
    assert method == "exact" and c.sum() + rest == pytest.approx(p.scores(q, [pic])[0, 0], abs=1e-5)
    p = Pipeline("mlp", "trained", glove, Corner(), mlp, gallery=ds)
    words, c, rest, method, _ = word_contributions(p, q, pic)
    assert method == "leave-one-out" and words == ["a", "blue", "triangle"]
    full = p.scores(q, [pic])[0, 0]
    want = [full - p.scores(s, [pic])[0, 0] for s in ("blue triangle", "a triangle", "a blue")]
    np.testing.assert_allclose(c, want, atol=1e-6)
    assert c.sum() + rest == pytest.approx(full)


def test_occluding_cells_the_model_does_not_read_changes_nothing(ds, glove):
    p = _cca(ds, glove)
    pic = np.asarray(ds.load_image(7).convert("RGB")).copy()
    pic[:13, :13] = (200, 30, 30)  # something in the corner the stand-in reads
    m = occlusion_map(p, "a red circle", pic, grid=5)
    assert m.shape == (5, 5)
    # only the cell it reads moves the score; the others leave it as it was (to float32 rounding)
    assert abs(m[0, 0]) > 0.01 and np.abs(m.ravel()[1:]).max() < 1e-6
    # by hand: the corner cell greyed out
    grey = pic.copy()
    grey[: round(64 / 5), : round(64 / 5)] = GREY
    s = p.scores("a red circle", [pic, grey])[0]
    assert m[0, 0] == pytest.approx(s[0] - s[1])


def test_an_attention_head_explains_with_its_attention(ds):
    enc = WordSequenceEncoder()
    torch.manual_seed(0)
    head = AttentionHead(AttentionConfig(text_dim=50, image_dim=3, d=4, lam=5.0)).eval()
    p = Pipeline("att", "attention", enc, Grid(), head, image_input="grid", gallery=ds)
    e = explain(p, "a small red circle", 2)
    assert e.method == "attention" and e.words == ["a", "small", "red", "circle"]
    assert e.attention.shape == (4, 2, 2) and np.allclose(e.attention.sum((1, 2)), 1)  # a softmax per word
    assert e.contributions.sum() == pytest.approx(e.score, abs=1e-6) and e.rest == 0
    assert e.score == pytest.approx(p.scores("a small red circle", [ds.load_image(2)])[0, 0], abs=1e-6)
    assert e.occlusion.shape == (5, 5) and "small" in repr(e)
    fig = cl.plots.show_explanation(e, words=2)
    assert len(fig.axes) == 1 + 1 + 2 + 3  # bars, occlusion, two attention maps, three colour bars


def test_a_fusion_is_explained_beside_its_gallery(ds, glove):
    from crosslab.pipeline import FusionPipeline

    f = FusionPipeline("f", _cca(ds, glove), _cca(ds, glove), 0.5)
    e = explain(f, "a red circle", 4, grid=2)
    assert e.method == "leave-one-out" and e.occlusion.shape == (2, 2)
    assert e.score == pytest.approx(f.scores("a red circle", ds)[0, 4], abs=1e-6)  # its gallery z-score


def test_bad_input_is_named(ds, glove):
    p = _cca(ds, glove)
    with pytest.raises(QueryError, match="type a few words"):
        explain(p, "  ", 0)
    with pytest.raises(ModelError, match="not in the gallery of 40"):
        explain(p, "a red circle", 40)
    with pytest.raises(ModelError, match="grid must be"):
        occlusion_map(p, "a red circle", 0, grid=0)
