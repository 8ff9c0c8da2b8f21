"""The search engine and the two apps, driven without a browser (set widget values, read results)."""

from __future__ import annotations

import html
import io

import numpy as np
import pytest
from PIL import Image

import crosslab as cl
from crosslab.baselines import RandomModel, RegularizedCCA
from crosslab.errors import CrosslabError, QueryError
from crosslab.recipes import split_rows
from crosslab.widgets import (
    CrossModalSearch,
    ImageToTextApp,
    SearchModel,
    TextToImageApp,
    default_choices,
    png_bytes,
)

COLOURS = ("red", "green", "blue", "yellow", "purple")


def tiny_image_features(ims: list[Image.Image]) -> np.ndarray:
    """An 8 x 8 colour thumbnail, flattened: a real (if crude) image feature for shape scenes."""
    return np.stack([
        np.asarray(im.convert("RGB").resize((8, 8), Image.BILINEAR), dtype=np.float32).ravel() / 255
        for im in ims
    ])


@pytest.fixture(scope="module")
def search() -> CrossModalSearch:
    ds = cl.data.make_scenes(300, seed=1)
    Y = tiny_image_features([ds.load_image(i) for i in range(len(ds))])
    kv = cl.text.train_word2vec(ds.train.captions, vector_size=32, epochs=10)
    enc = cl.text.SentenceEncoder(kv, "mean")
    X = enc.transform(ds.captions)
    keep, train, c2i = split_rows(ds, "train")
    cca = RegularizedCCA(d=24, reg=0.1).fit(X[keep], Y[train], c2i)
    cca_small = RegularizedCCA(d=4, reg=0.1).fit(X[keep], Y[train], c2i)
    return CrossModalSearch(ds, [
        SearchModel("cca 24", cca, enc.encode_query, tiny_image_features, Y, X),
        SearchModel("cca 4", cca_small, enc.encode_query, tiny_image_features, Y, X),
    ])


def naive_ranking(search: CrossModalSearch, query: str, model: str) -> list[int]:
    """Cosine of the query against every gallery image, one pair at a time."""
    m = search.models[model]
    q = m.model.embed_text(m.encode_text(query)[None])[0]
    imgs = m.model.embed_image(m.image_features)
    cos = [float(q @ v / (np.linalg.norm(q) * np.linalg.norm(v))) for v in imgs]
    return sorted(range(len(cos)), key=lambda i: (-cos[i], i))


def test_text_to_image_matches_naive_ranking(search):
    hits = search.text_to_image("a small red circle", k=7, model="cca 24")
    assert [h.image for h in hits] == naive_ranking(search, "a small red circle", "cca 24")[:7]
    assert all(a.value >= b.value for a, b in zip(hits, hits[1:], strict=False))
    assert hits[0].text == search.gallery.image_captions(hits[0].image)[0]


def test_colour_queries_find_that_colour_more_often_than_chance(search):
    ds = search.gallery
    precision, base = [], []
    for c in COLOURS:
        has = np.array([c in " ".join(ds.image_captions(i)) for i in range(len(ds))])
        hits = search.text_to_image(f"{c} shape", k=10)
        precision.append(np.mean([has[h.image] for h in hits]))
        base.append(has.mean())
    assert np.mean(precision) > np.mean(base) + 0.2


@pytest.mark.parametrize("metric", ["euclidean", "kl"])
def test_other_metrics_rank_by_their_own_values(search, metric):
    hits = search.text_to_image("blue square", k=5, metric=metric)
    vals = [h.value for h in hits]
    assert vals == sorted(vals)  # distances / divergences: smaller first
    assert all(v >= -1e-6 for v in vals)


def test_empty_and_unknown_queries_raise_clear_errors(search):
    with pytest.raises(QueryError, match="type a few words"):
        search.text_to_image("   ")
    with pytest.raises(QueryError, match="none of the words 'xyzzy plugh'"):
        search.text_to_image("xyzzy plugh")
    with pytest.raises(CrosslabError, match="unknown model"):
        search.text_to_image("red", model="nope")


def test_gallery_and_features_must_agree(search):
    m = search.models["cca 24"]
    bad = SearchModel("bad", m.model, m.encode_text, m.encode_images, m.image_features[:5],
                      m.caption_features)
    with pytest.raises(CrosslabError, match="same dataset"):
        CrossModalSearch(search.gallery, bad)


def test_image_to_text_ranks_captions_of_the_query_image_first(search):
    ds = search.gallery
    i = int(np.flatnonzero(ds.split == "train")[0])
    hits = search.image_to_text(ds.load_image(i), k=5)
    # The naive reference: cosine of the image against every caption.
    m = search.models["cca 24"]
    v = m.model.embed_image(tiny_image_features([ds.load_image(i)]))[0]
    T = m.model.embed_text(m.caption_features)
    cos = T @ v / (np.linalg.norm(T, axis=1) * np.linalg.norm(v))
    assert [h.index for h in hits] == sorted(range(len(cos)), key=lambda c: (-cos[c], c))[:5]
    assert all(h.text == ds.captions[h.index] for h in hits)
    assert all(h.image == ds.caption_to_image[h.index] for h in hits)


def test_text_app_updates_on_every_control(search):
    app = TextToImageApp(search, k=4)
    assert app.hits == [] and "type a few words" in html.unescape(app.message.value)
    app.query.value = "a large green square"
    assert len(app.hits) == 4 and len(app.grid.children) == 4
    assert [h.image for h in app.hits] == naive_ranking(search, "a large green square", "cca 24")[:4]
    card = app.grid.children[0]
    assert bytes(card.children[0].value)[:4] == b"\x89PNG"
    assert "cosine" in card.children[1].value
    assert "a large green square" in html.unescape(app.message.value)

    app.k.value = 6
    assert len(app.grid.children) == 6
    app.metric.value = "euclidean"
    assert "distance" in app.grid.children[0].children[1].value
    app.metric.value = "kl"
    assert "KL" in app.grid.children[0].children[1].value
    assert app.model.layout.display != "none"  # two models: the choice is shown
    app.model.value = "cca 4"
    assert app.hits == search.text_to_image("a large green square", 6, "kl", "cca 4")

    app.query.value = "xyzzy"
    assert app.hits == [] and app.grid.children == ()
    assert "none of the words" in html.unescape(app.message.value) and "xyzzy" in html.unescape(app.message.value)
    app.query.value = ""
    assert "type a few words" in html.unescape(app.message.value)


def test_image_app_picker_buttons_and_upload(search):
    ds = search.gallery
    choices = [(f"scene {i}", ds.load_image(i)) for i in (0, 1, 2)]
    app = ImageToTextApp(search, choices=choices, k=3)
    assert app.picker.value == "scene 0" and len(app.hits) == 3
    assert app.hits == search.image_to_text(ds.load_image(0), 3)
    assert "<table" in app.table.value and app.hits[0].text.split()[0] in app.table.value

    app.picker.value = "scene 2"
    assert app.hits == search.image_to_text(ds.load_image(2), 3)
    # The thumbnail buttons pick too.
    app.thumbnails.children[1].children[1].click()
    assert app.picker.value == "scene 1"
    assert app.hits == search.image_to_text(ds.load_image(1), 3)

    app.k.value = 5
    assert len(app.hits) == 5

    buf = io.BytesIO()
    ds.load_image(2).save(buf, format="PNG")
    app.set_upload(buf.getvalue(), "mine.png")
    assert "'mine.png'" in html.unescape(app.message.value)
    assert [h.index for h in app.hits] == [h.index for h in search.image_to_text(ds.load_image(2), 5)]

    app.set_upload(b"not an image", "notes.txt")
    assert app.hits == [] and "could not read 'notes.txt'" in html.unescape(app.message.value)


def test_default_choices_include_the_real_photos(search):
    choices = default_choices(search.gallery, n_gallery=3)
    names = [n for n, _ in choices]
    photos = cl.data.load_photos()
    assert names[: len(photos)] == list(photos.ids)
    assert len(names) == len(photos) + 3 and len(set(names)) == len(names)
    app = ImageToTextApp(search, k=2)
    assert app.picker.value == photos.ids[0] and len(app.hits) == 2


def test_png_bytes_shrinks_to_fit():
    im = Image.new("RGBA", (300, 150), (255, 0, 0, 128))
    out = Image.open(io.BytesIO(png_bytes(im, 64)))
    assert out.size == (64, 32) and out.mode == "RGB"


def test_split_arrays_and_fit_search_models():
    from crosslab.widgets import fit_search_models, split_arrays

    ds = cl.data.make_scenes(120, seed=3)
    Y = tiny_image_features([ds.load_image(i) for i in range(len(ds))])
    X = np.arange(ds.n_captions, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    Xt, Yt, c2i = split_arrays(ds, X, Y, "test")
    test_imgs = np.flatnonzero(ds.split == "test")
    assert np.array_equal(Yt, Y[test_imgs])
    # each test caption keeps its text row and points at its own image's new position
    caps = Xt[:, 0].astype(int)
    assert np.array_equal(test_imgs[c2i], ds.caption_to_image[caps])
    assert sorted(caps) == sorted(np.flatnonzero(np.isin(ds.caption_to_image, test_imgs)))

    kv = cl.text.train_word2vec(ds.train.captions, vector_size=16, epochs=5)
    Xs = cl.text.SentenceEncoder(kv, "mean").transform(ds.captions)
    models = fit_search_models(ds, Xs, Y, d=16)
    assert list(models) == ["linear infonce", "regularised cca"]
    for m in models.values():
        metrics = cl.evaluation.evaluate(m, c2i, text=split_arrays(ds, Xs, Y, "test")[0], image=Yt)
        assert metrics["t2i_r10"] > 100 * 10 / len(Yt)  # better than chance


# ----------------------------------------------------------------------------- ConSE and fusion
COLOUR_RGB = np.array(list(cl.data.scenes.COLOURS.values()), dtype=np.float32)
COLOUR_NAMES = list(cl.data.scenes.COLOURS)


class TinyClassifier:
    """A stand-in for the CNN: thumbnail features plus a real (crude) colour classifier.

    The logit of colour k is 50 x the share of the picture's pixels painted in that colour,
    so the softmax favours the colours present, like an ImageNet head favours its classes.
    """

    def extract(self, ims, cache=False, progress=False, return_logits=False):
        feats = tiny_image_features(ims)
        logits = np.stack([
            50 * (np.abs(np.asarray(im.convert("RGB"), np.float32)[..., None, :] - COLOUR_RGB).sum(-1) < 3)
            .mean((0, 1)) for im in ims
        ]).astype(np.float32)
        return (feats, logits) if return_logits else feats


@pytest.fixture(scope="module")
def beyond():
    """A hand-made BeyondSetup on shape scenes: CCA, ConSE over colour classes, their fusion."""
    from crosslab.beyond import BeyondModel, BeyondSetup
    from crosslab.zeroshot import ConSE, FusionModel

    ds = cl.data.make_scenes(200, seed=4)
    ims = [ds.load_image(i) for i in range(len(ds))]
    Y, L = TinyClassifier().extract(ims, return_logits=True)
    kv = cl.text.train_word2vec(ds.train.captions, vector_size=32, epochs=10)
    enc = cl.text.SentenceEncoder(kv, "mean")
    X = enc.transform(ds.captions)
    keep, train, c2i = split_rows(ds, "train")
    cca = RegularizedCCA(d=16, reg=0.1).fit(X[keep], Y[train], c2i)
    conse = ConSE.from_encoder(enc, T=2, class_names=COLOUR_NAMES)
    models = [
        BeyondModel("random", "random", RandomModel(d=16).fit(X[keep], Y[train], c2i), "w2v", "features"),
        BeyondModel("cca+w2v", "cca", cca, "w2v", "features"),
        BeyondModel("conse+w2v", "zero-shot", conse, "w2v", "logits"),
        BeyondModel("fusion(cca+w2v,conse+w2v)", "fusion", FusionModel(cca, conse, 0.3),
                    ("w2v", "w2v"), ("features", "logits")),
    ]
    setup = BeyondSetup(ds, models, {"w2v": enc}, {"w2v": X}, {"features": Y, "logits": L})
    from crosslab.widgets import beyond_search_models

    search = CrossModalSearch(ds, beyond_search_models(setup, image_encoder=TinyClassifier()))
    return setup, search


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def naive_conse_vector(conse, logits: np.ndarray) -> np.ndarray:
    """Softmax, the T most probable classes, their unit name vectors weighted by probability."""
    p = np.exp(logits - logits.max())
    p = p / p.sum()
    top = sorted(range(len(p)), key=lambda k: (-p[k], k))[: conse.T]
    E = conse.class_embeddings
    return sum(p[k] * E[k] / np.linalg.norm(E[k]) for k in top) / sum(p[k] for k in top)


def test_beyond_search_models_reads_what_each_model_was_fitted_on(beyond):
    setup, search = beyond
    assert search.model_names == ["cca+w2v", "conse+w2v", "fusion(cca+w2v,conse+w2v)"]  # no random
    cca, conse, fusion = (search.models[n] for n in search.model_names)
    assert cca.image_features is setup.image["features"] and conse.image_features is setup.image["logits"]
    assert conse.caption_features is setup.text["w2v"]
    assert fusion.a is cca and fusion.b is conse and fusion.w == 0.3  # components shared, val w kept
    assert search.is_fusion("fusion(cca+w2v,conse+w2v)") and not search.is_fusion("conse+w2v")
    # Only the fusion: its components still get their own names from the setup.
    from crosslab.widgets import FusionSearchModel, beyond_search_models

    (only,) = beyond_search_models(setup, ["fusion(cca+w2v,conse+w2v)"], image_encoder=TinyClassifier())
    assert isinstance(only, FusionSearchModel) and (only.a.name, only.b.name) == ("cca+w2v", "conse+w2v")
    with pytest.raises(CrosslabError, match="no model 'nope'"):
        beyond_search_models(setup, ["nope"])


def test_conse_search_equals_naive_ranking(beyond):
    setup, search = beyond
    ds = search.gallery
    m = search.models["conse+w2v"]
    q = m.encode_text("a red shape")
    V = [naive_conse_vector(m.model, setup.image["logits"][i]) for i in range(len(ds))]
    cos = [_cos(q, v) for v in V]
    hits = search.text_to_image("a red shape", k=12, model="conse+w2v")
    # the same ranking up to float32 rounding: each hit's naive cosine is the next best one
    assert np.allclose([cos[h.image] for h in hits], sorted(cos, reverse=True)[:12], atol=1e-6)
    assert np.allclose([h.value for h in hits], sorted(cos, reverse=True)[:12], atol=1e-5)
    # no training, yet each colour is found far above its base rate
    for c in COLOUR_NAMES:
        has = np.array([c in " ".join(ds.image_captions(i)) for i in range(len(ds))])
        top = [h.image for h in search.text_to_image(f"{c} shape", k=10, model="conse+w2v")]
        assert has[top].mean() > has.mean() + 0.4, c
    # image -> text: the picture's logits come from the image encoder, ranked against every caption
    i = int(np.flatnonzero(ds.split == "test")[0])
    v = naive_conse_vector(m.model, TinyClassifier().extract([ds.load_image(i)], return_logits=True)[1][0])
    cos_c = [_cos(x, v) for x in m.caption_features]
    hits = search.image_to_text(ds.load_image(i), k=6, model="conse+w2v")
    assert np.allclose([cos_c[h.index] for h in hits], sorted(cos_c, reverse=True)[:6], atol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "kl"])
def test_fusion_with_w_0_or_1_is_each_component(beyond, metric):
    _, search = beyond
    ds = search.gallery
    name = "fusion(cca+w2v,conse+w2v)"
    pic = ds.load_image(int(np.flatnonzero(ds.split == "test")[3]))
    for w, part in ((0.0, "cca+w2v"), (1.0, "conse+w2v")):
        fused = search.text_to_image("large blue circle", 9, metric, name, w=w)
        alone = search.text_to_image("large blue circle", 9, metric, part)
        assert [h.image for h in fused] == [h.image for h in alone]
        fused = search.image_to_text(pic, 7, metric, name, w=w)
        alone = search.image_to_text(pic, 7, metric, part)
        assert [h.index for h in fused] == [h.index for h in alone]


def test_fusion_scores_are_fused_per_query_zscores(beyond):
    setup, search = beyond
    ds = search.gallery
    cca, conse = search.models["cca+w2v"], search.models["conse+w2v"]
    query = "small green square"
    qa = cca.model.embed_text(cca.encode_text(query)[None])[0]
    A = cca.model.embed_image(setup.image["features"])
    sa = np.array([_cos(qa, a) for a in A])
    qb = conse.encode_text(query)
    sb = np.array([_cos(qb, naive_conse_vector(conse.model, lg)) for lg in setup.image["logits"]])
    z = lambda s: (s - s.mean()) / s.std()  # noqa: E731
    fused = 0.7 * z(sa) + 0.3 * z(sb)
    hits = search.text_to_image(query, k=10, model="fusion(cca+w2v,conse+w2v)")  # the model's own w
    assert [h.image for h in hits] == sorted(range(len(ds)), key=lambda i: (-fused[i], i))[:10]
    assert np.allclose([h.value for h in hits], np.sort(fused)[::-1][:10], atol=1e-4)
    with pytest.raises(CrosslabError, match=r"w must be in \[0, 1\]"):
        search.text_to_image(query, model="fusion(cca+w2v,conse+w2v)", w=1.5)
    with pytest.raises(QueryError):
        search.text_to_image("xyzzy plugh", model="fusion(cca+w2v,conse+w2v)")


def test_apps_offer_the_fusion_weight_only_for_fusion_models(beyond):
    _, search = beyond
    name = "fusion(cca+w2v,conse+w2v)"
    app = TextToImageApp(search, query="red circle", k=5)
    assert app.model.value == "cca+w2v" and app.fusion_w.layout.display == "none"
    assert "cosine" in app.grid.children[0].children[1].value
    app.model.value = name
    assert app.fusion_w.layout.display != "none" and app.fusion_w.value == 0.3
    assert app.hits == search.text_to_image("red circle", 5, "cosine", name)
    assert "fused z" in app.grid.children[0].children[1].value
    assert "w=0.30" in html.unescape(app.message.value)
    app.fusion_w.value = 1.0
    assert [h.image for h in app.hits] == [h.image for h in search.text_to_image("red circle", 5,
                                                                                 model="conse+w2v")]
    app.metric.value = "euclidean"  # the metric applies to both components; values stay z-scores
    assert app.hits == search.text_to_image("red circle", 5, "euclidean", name, w=1.0)
    assert "fused z" in app.grid.children[0].children[1].value
    app.model.value = "conse+w2v"
    assert app.fusion_w.layout.display == "none" and "distance" in app.grid.children[0].children[1].value
    app.model.value = name  # back to the fusion: its own w again
    assert app.fusion_w.value == 0.3

    ds = search.gallery
    choices = [(f"scene {i}", ds.load_image(i)) for i in (0, 1)]
    iapp = ImageToTextApp(search, choices=choices, k=4)
    iapp.model.value = name
    assert iapp.hits == search.image_to_text(ds.load_image(0), 4, "cosine", name)
    assert "fused z" in iapp.table.value
    iapp.fusion_w.value = 0.0
    assert [h.index for h in iapp.hits] == [h.index for h in search.image_to_text(ds.load_image(0), 4,
                                                                                  model="cca+w2v")]
