"""The search engine and the two apps, driven without a browser (set widget values, read results)."""

from __future__ import annotations

import html
import io

import numpy as np
import pytest
from PIL import Image

import crosslab as cl
from crosslab.baselines import RegularizedCCA
from crosslab.errors import CrosslabError, QueryError
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
    train = np.flatnonzero(ds.split == "train")
    keep = np.isin(ds.caption_to_image, train)
    c2i = np.searchsorted(train, ds.caption_to_image[keep])
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
        metrics = cl.retrieval.evaluate(m, c2i, text=split_arrays(ds, Xs, Y, "test")[0], image=Yt)
        assert metrics["t2i_r10"] > 100 * 10 / len(Yt)  # better than chance
