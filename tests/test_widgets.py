"""Search and the two apps over pipelines, driven without a browser (set widgets, read results).

Real pipelines (word2vec text, regularised CCA, ConSE, their fusion) over a stand-in "CNN"
(8 x 8 thumbnails; per-colour pixel shares as logits); references are naive per-pair loops."""

from __future__ import annotations

import html
import io
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import crosslab as cl
from crosslab.baselines import RegularizedCCA
from crosslab.data.base import to_rgb
from crosslab.errors import CrosslabError, QueryError
from crosslab.pipeline import FusionPipeline, Pipeline
from crosslab.pipelines import split_rows
from crosslab.text_encoders import WordVectorEncoder
from crosslab.widgets import ImageToTextApp, TextToImageApp, default_choices, png_bytes
from crosslab.zeroshot import ConSE

COLOUR_NAMES = list(cl.data.scenes.COLOURS)
COLOUR_RGB = np.array(list(cl.data.scenes.COLOURS.values()), dtype=np.float32)
FUSION = "fusion(cca 24,conse)"


def _rgb(im) -> Image.Image:
    """A PIL picture or an RGB array (what crosslab.explain hands the encoder), as RGB PIL."""
    return to_rgb(im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im, np.uint8)))


def tiny_image_features(ims: list[Image.Image]) -> np.ndarray:
    """An 8 x 8 colour thumbnail, flattened: a real (if crude) image feature for shape scenes."""
    return np.stack([
        np.asarray(_rgb(im).resize((8, 8), Image.BILINEAR), dtype=np.float32).ravel() / 255 for im in ims
    ])


def tiny_logits(ims: list[Image.Image]) -> np.ndarray:
    """Per-colour "class logits": 50 x the share of the picture's pixels painted in that colour."""
    return np.stack([
        50 * (np.abs(np.asarray(_rgb(im), np.float32)[..., None, :] - COLOUR_RGB).sum(-1) < 3).mean((0, 1))
        for im in ims
    ]).astype(np.float32)


class TinyEncoder:
    """A stand-in for the CNN with ImageEncoder's ``extract``: a dataset or a list of pictures."""

    name, image_size = "tiny-8x8", 8

    def extract(self, data, cache=False, progress=False, return_logits=False):
        ims = [data.load_image(i) for i in range(len(data))] if hasattr(data, "load_image") else list(data)
        feats = tiny_image_features(ims)
        return (feats, tiny_logits(ims)) if return_logits else feats


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CROSSLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
        ds = cl.data.make_scenes(300, seed=1)
        caps, train, c2i = split_rows(ds, "train")
        enc = WordVectorEncoder("w2v-mean", w2v_size=32).fit([ds.captions[j] for j in caps])
        X = enc.transform(ds.captions)
        Y, L = TinyEncoder().extract(ds, return_logits=True)  # what the "CNN" sees of the gallery

        def pipe(name, head, image_input="features"):
            return Pipeline(name, "test", enc, TinyEncoder(), head, image_input=image_input, gallery=ds)

        cca = pipe("cca 24", RegularizedCCA(d=24, reg=0.1).fit(X[caps], Y[train], c2i))
        small = pipe("cca 4", RegularizedCCA(d=4, reg=0.1).fit(X[caps], Y[train], c2i))
        conse = pipe("conse", ConSE.from_encoder(enc, T=2, class_names=COLOUR_NAMES), "logits")
        fusion = FusionPipeline(FUSION, cca, conse, 0.3)
        yield SimpleNamespace(ds=ds, enc=enc, X=X, Y=Y, L=L, cca=cca, small=small, conse=conse, fusion=fusion)


# ----------------------------------------------------------------------------- naive references
def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _value(metric: str, q, v, temperature: float = 1.0) -> float:
    """One pair's value in the metric's own terms (cosine; distance; KL(p_query || q_item))."""
    q, v = np.asarray(q, np.float64), np.asarray(v, np.float64)
    if metric == "cosine":
        return _cos(q, v)
    if metric == "euclidean":
        return float(np.sqrt(((q - v) ** 2).sum()))
    p, r = _softmax(q / temperature), _softmax(v / temperature)
    return float((p * (np.log(p) - np.log(r))).sum())


def naive_conse_vector(conse: ConSE, logits: np.ndarray) -> np.ndarray:
    """Softmax, the T most probable classes, their unit name vectors weighted by probability."""
    p = _softmax(logits.astype(np.float64))
    top = sorted(range(len(p)), key=lambda k: (-p[k], k))[: conse.T]
    E = conse.class_embeddings
    return sum(p[k] * E[k] / np.linalg.norm(E[k]) for k in top) / sum(p[k] for k in top)


def image_vectors(env, p) -> list[np.ndarray]:
    if p is env.conse:
        return [naive_conse_vector(p.head, lg) for lg in env.L]
    return list(p.head.embed_image(env.Y))


def naive_t2i(env, p, query: str, metric: str = "cosine", temperature: float = 1.0) -> np.ndarray:
    """The query against every gallery image, one pair at a time, "higher = better"."""
    q = p.head.embed_text(env.enc.encode_query(query)[None])[0]
    vals = np.array([_value(metric, q, v, temperature) for v in image_vectors(env, p)])
    return vals if metric == "cosine" else -vals


def ranking(s: np.ndarray) -> list[int]:
    return sorted(range(len(s)), key=lambda i: (-s[i], i))


def z(s: np.ndarray) -> np.ndarray:
    return (s - s.mean()) / s.std()


def card_text(app, i: int = 0) -> str:
    return html.unescape(app.grid.children[i].children[1].value)


def msg(app) -> str:
    return html.unescape(app.message.value)


# ----------------------------------------------------------------------------- search
def test_text_to_image_matches_naive_ranking(env):
    hits = env.cca.search("a small red circle", k=7)
    ref = naive_t2i(env, env.cca, "a small red circle")
    assert [h.image for h in hits] == ranking(ref)[:7] and [h.id for h in hits] == [h.image for h in hits]
    assert np.allclose([h.score for h in hits], ref[ranking(ref)[:7]], atol=1e-5)
    assert hits[0].caption == env.ds.image_captions(hits[0].image)[0] and hits[0].path is None


def test_colour_queries_find_that_colour_more_often_than_chance(env):
    ds = env.ds
    # CCA on 8 x 8 thumbnails is crude (+0.18 here: 4 standard errors); ConSE's colour
    # "classes" need no training, yet are right nearly every time.
    for p, margin in ((env.cca, 0.1), (env.conse, 0.4)):
        precision, base = [], []
        for c in COLOUR_NAMES:
            has = np.array([c in " ".join(ds.image_captions(i)) for i in range(len(ds))])
            precision.append(has[[h.image for h in p.search(f"{c} shape", k=20)]].mean())
            base.append(has.mean())
        assert np.mean(precision) > np.mean(base) + margin, p.name


@pytest.mark.parametrize("metric", ["euclidean", "kl"])
def test_other_metrics_rank_by_their_own_values(env, metric):
    ref = -naive_t2i(env, env.cca, "blue square", metric, temperature=0.1)  # the metric's own values
    hits = env.cca.search("blue square", k=5, metric=metric, temperature=0.1)
    vals = [-h.score for h in hits]  # distances are negated: "higher = better"
    assert vals == sorted(vals) and all(v >= -1e-6 for v in vals)
    assert np.allclose([ref[h.image] for h in hits], np.sort(ref)[:5], atol=1e-4)
    assert np.allclose(vals, np.sort(ref)[:5], atol=1e-4)
    # The app reports the same values, in the metric's own terms, at its KL temperature.
    app = TextToImageApp(env.cca, query="blue square", k=5, kl_temperature=0.1)
    app.metric.value = metric
    assert app.hits == hits
    label, number = re.search(r"(distance|KL) (-?[\d.]+)", card_text(app)).groups()
    assert label == {"euclidean": "distance", "kl": "KL"}[metric] and abs(float(number) - vals[0]) < 1e-3


def test_empty_and_unknown_queries_raise_clear_errors(env):
    for p in (env.cca, env.fusion):
        with pytest.raises(QueryError, match="type a few words"):
            p.search("   ")
        with pytest.raises(QueryError, match="none of the words 'xyzzy plugh'"):
            p.search("xyzzy plugh")


def test_image_to_text_ranks_the_query_images_own_captions_first(env):
    ds, head = env.ds, env.cca.head
    T = head.embed_text(env.X)
    own_first = []
    for i in np.flatnonzero(ds.split == "train")[:10]:
        pic = ds.load_image(int(i))
        hits = env.cca.describe(pic, k=5)
        v = head.embed_image(tiny_image_features([pic]))[0]
        cos = np.array([_cos(t, v) for t in T])
        assert [h.id for h in hits] == ranking(cos)[:5]
        assert all(h.caption == ds.captions[h.id] and h.image == ds.caption_to_image[h.id] for h in hits)
        own_first.append(i in [h.image for h in hits])
    assert np.mean(own_first) >= 0.6  # an own caption in the top 5 (chance: 5 x 5 / 1500)


# ----------------------------------------------------------------------------- the apps
def test_text_app_updates_on_every_control(env):
    app = TextToImageApp([env.cca, env.small], k=4)
    assert app.hits == [] and app.grid.children == () and "type a few words" in msg(app)
    assert "#555" in app.message.value  # an empty box is a hint, not an error
    app.query.value = "a large green square"
    assert len(app.hits) == 4 and len(app.grid.children) == 4
    assert [h.image for h in app.hits] == ranking(naive_t2i(env, env.cca, "a large green square"))[:4]
    card = app.grid.children[0]
    assert bytes(card.children[0].value)[:4] == b"\x89PNG" and "cosine" in card_text(app)
    assert "a large green square" in msg(app) and "cca 24" in msg(app)

    app.k.value = 6
    assert len(app.grid.children) == 6
    app.metric.value = "euclidean"
    assert "distance" in card_text(app)
    assert app.hits == env.cca.search("a large green square", 6, metric="euclidean")
    app.metric.value = "kl"
    assert "KL" in card_text(app)
    assert app.model.layout.display != "none"  # two models: the choice is shown
    app.model.value = "cca 4"
    assert app.hits == env.small.search("a large green square", 6, metric="kl", temperature=app.kl_t())
    assert "cca 4" in msg(app)

    app.query.value = "xyzzy"
    assert app.hits == [] and app.grid.children == ()
    assert "none of the words" in msg(app) and "xyzzy" in msg(app) and "#b00020" in app.message.value
    app.query.value = ""
    assert "type a few words" in msg(app)
    assert TextToImageApp(env.cca).model.layout.display == "none"  # one model: no choice to show


def test_image_app_picker_buttons_and_upload(env):
    ds, p = env.ds, env.cca
    choices = [(f"scene {i}", ds.load_image(i)) for i in (0, 1, 2)]
    app = ImageToTextApp(p, choices=choices, k=3)
    assert app.picker.value == "scene 0" and app.hits == p.describe(ds.load_image(0), 3)
    assert "<table" in app.table.value and html.escape(app.hits[0].caption) in app.table.value
    assert bytes(app.preview.value)[:4] == b"\x89PNG"

    app.picker.value = "scene 2"
    assert app.hits == p.describe(ds.load_image(2), 3)
    app.thumbnails.children[1].children[1].click()  # the thumbnail buttons pick too
    assert app.picker.value == "scene 1" and app.hits == p.describe(ds.load_image(1), 3)
    app.k.value = 5
    assert len(app.hits) == 5

    buf = io.BytesIO()
    ds.load_image(2).save(buf, format="PNG")
    app.set_upload(buf.getvalue(), "mine.png")
    assert "'mine.png'" in msg(app) and app.hits == p.describe(ds.load_image(2), 5)
    app.thumbnails.children[1].children[1].click()  # a button drops the upload, even for the same pick
    assert app.uploaded is None and app.hits == p.describe(ds.load_image(1), 5)
    # The FileUpload widget's own value goes the same way.
    app.upload.value = ({"name": "up.png", "type": "image/png", "size": len(buf.getvalue()),
                         "content": memoryview(buf.getvalue()),
                         "last_modified": datetime.now(UTC)},)
    assert "'up.png'" in msg(app) and app.hits == p.describe(ds.load_image(2), 5)

    app.set_upload(b"not an image", "notes.txt")
    assert app.hits == [] and app.table.value == ""
    assert "could not read 'notes.txt'" in msg(app) and "#b00020" in app.message.value

    empty = ImageToTextApp(p, choices=[])
    assert empty.hits == [] and "pick a picture" in msg(empty)


def test_default_choices_include_the_real_photos(env):
    choices = default_choices(env.ds, n_gallery=3)
    names = [n for n, _ in choices]
    photos = cl.data.load_photos()
    assert names[: len(photos)] == list(photos.ids)
    assert len(names) == len(photos) + 3 and len(set(names)) == len(names)
    app = ImageToTextApp(env.cca, k=2)
    assert app.picker.value == photos.ids[0] and len(app.hits) == 2


def test_png_bytes_shrinks_to_fit():
    im = Image.new("RGBA", (300, 150), (255, 0, 0, 128))
    out = Image.open(io.BytesIO(png_bytes(im, 64)))
    assert out.size == (64, 32) and out.mode == "RGB"


def test_apps_need_pipelines_with_distinct_names(env):
    with pytest.raises(CrosslabError, match="unique"):
        TextToImageApp([env.cca, env.cca])
    with pytest.raises(CrosslabError, match="unique"):
        ImageToTextApp([env.cca, Pipeline("cca 24", "test", env.enc, TinyEncoder(), env.small.head,
                                          gallery=env.ds)])
    with pytest.raises(CrosslabError, match="one or more pipelines"):
        TextToImageApp([])


# ----------------------------------------------------------------------------- fusion
@pytest.mark.parametrize("metric", ["cosine", "euclidean", "kl"])
def test_fusion_with_w_0_or_1_is_each_part(env, metric):
    pic = env.ds.load_image(int(np.flatnonzero(env.ds.split == "test")[3]))
    for w, part in ((0.0, env.cca), (1.0, env.conse)):
        fused = env.fusion.with_w(w)
        assert fused.w == w and env.fusion.w == 0.3  # with_w leaves the original alone
        assert [h.image for h in fused.search("large blue circle", 9, metric=metric)] == \
            [h.image for h in part.search("large blue circle", 9, metric=metric)]
        assert [h.id for h in fused.describe(pic, 7, metric=metric)] == \
            [h.id for h in part.describe(pic, 7, metric=metric)]


def test_fusion_scores_are_fused_per_query_zscores(env):
    query = "small green square"
    fused = 0.7 * z(naive_t2i(env, env.cca, query)) + 0.3 * z(naive_t2i(env, env.conse, query))
    hits = env.fusion.search(query, k=10)  # the pipeline's own w
    assert [h.image for h in hits] == ranking(fused)[:10]
    assert np.allclose([h.score for h in hits], fused[ranking(fused)[:10]], atol=1e-4)

    # image -> text: z over the captions of the one picture
    pic = env.ds.load_image(int(np.flatnonzero(env.ds.split == "test")[0]))
    va = env.cca.head.embed_image(tiny_image_features([pic]))[0]
    vb = naive_conse_vector(env.conse.head, tiny_logits([pic])[0])
    sa = np.array([_cos(t, va) for t in env.cca.head.embed_text(env.X)])
    sb = np.array([_cos(x, vb) for x in env.X])
    fused = 0.3 * z(sa) + 0.7 * z(sb)
    hits = env.fusion.with_w(0.7).describe(pic, k=6)
    assert [h.id for h in hits] == ranking(fused)[:6]
    assert np.allclose([h.score for h in hits], fused[ranking(fused)[:6]], atol=1e-4)

    with pytest.raises(CrosslabError, match=r"w must be in \[0, 1\]"):
        env.fusion.with_w(1.5)
    with pytest.raises(CrosslabError, match="not a fusion"):
        env.cca.with_w(0.5)


def test_apps_offer_the_fusion_weight_only_for_fusion_pipelines(env):
    pipes = [env.cca, env.conse, env.fusion]
    app = TextToImageApp(pipes, query="red circle", k=5)
    assert app.model.value == "cca 24" and app.fusion_w.layout.display == "none"
    assert "cosine" in card_text(app)
    app.model.value = FUSION
    assert app.fusion_w.layout.display != "none" and app.fusion_w.value == 0.3
    assert app.hits == env.fusion.search("red circle", 5, metric="cosine", temperature=0.1)
    assert "fused z" in card_text(app) and "w=0.30" in msg(app)
    app.fusion_w.value = 1.0
    assert [h.image for h in app.hits] == [h.image for h in env.conse.search("red circle", 5)]
    assert "w=1.00" in msg(app)
    app.metric.value = "euclidean"  # the metric applies to both parts; values stay z-scores
    assert app.hits == env.fusion.with_w(1.0).search("red circle", 5, metric="euclidean")
    assert "fused z" in card_text(app)
    app.model.value = "conse"
    assert app.fusion_w.layout.display == "none" and "distance" in card_text(app)
    app.model.value = FUSION  # back to the fusion: its own w again
    assert app.fusion_w.value == 0.3 and app.hits == env.fusion.search("red circle", 5, metric="euclidean")

    ds = env.ds
    iapp = ImageToTextApp(pipes, choices=[(f"scene {i}", ds.load_image(i)) for i in (0, 1)], k=4)
    assert iapp.fusion_w.layout.display == "none"
    iapp.model.value = FUSION
    assert iapp.fusion_w.value == 0.3 and iapp.hits == env.fusion.describe(ds.load_image(0), 4)
    assert "fused z" in iapp.table.value
    iapp.fusion_w.value = 0.0
    assert [h.id for h in iapp.hits] == [h.id for h in env.cca.describe(ds.load_image(0), 4)]


def test_kl_temperature_is_chosen_on_val_per_pipeline(env):
    """Default: the app's KL temperature is the val-best of the grid for that pipeline (naive check)."""
    from crosslab.pipelines import KL_TEMPERATURES, choose_kl_temperature

    t, val = choose_kl_temperature(env.cca, env.ds)
    caps, imgs, c2i = split_rows(env.ds, "val")
    T, V = env.cca.encode_text(env.ds, rows=caps), env.cca.encode_image(env.ds, rows=imgs)
    ref = {x: cl.evaluation.evaluate(env.cca.score(T, V, metric="kl", temperature=x), c2i)["rsum"]
           for x in KL_TEMPERATURES}
    assert val == pytest.approx(ref) and val[t] == max(ref.values())
    app = TextToImageApp([env.cca, env.small], query="blue square", k=5)
    app.metric.value = "kl"
    assert app.kl_t() == t
    assert app.hits == env.cca.search("blue square", k=5, metric="kl", temperature=t)
    app.model.value = "cca 4"
    assert app.kl_t() == choose_kl_temperature(env.small, env.ds)[0]
    assert TextToImageApp(env.cca, k=5, kl_temperature=0.3).kl_t() == 0.3  # given: used as is


# ----------------------------------------------------------------------------- explain
@pytest.fixture
def explain_calls(monkeypatch):
    """Every call of crosslab.explain.explain (the real one still runs): its pipeline, query, picture."""
    import crosslab.explain as ex

    calls, real = [], ex.explain

    def counting(p, query, picture, **kw):
        calls.append(SimpleNamespace(p=p, query=query, picture=picture))
        return real(p, query, picture, **kw)

    monkeypatch.setattr(ex, "explain", counting)
    return calls


def shown(w) -> bool:
    return w.layout.display != "none"


def test_explain_is_off_by_default_and_computes_nothing(env, explain_calls):
    app = TextToImageApp([env.cca, env.fusion], query="a small red circle", k=4)
    assert app.explain.value is False and app.explain.description == "explain"
    assert "crosslab-explain" in app.explain._dom_classes
    assert "crosslab-explain-pick" in app.explain_pick._dom_classes
    assert app.explain_panel in app.children and app.children.index(app.explain_panel) > app.children.index(app.grid)
    app.query.value = "large blue square"
    app.k.value = 6
    app.model.value = FUSION
    app.metric.value = "euclidean"
    assert explain_calls == [] and app.explanation is None
    assert app.explain_summary.value == "" and bytes(app.explain_image.value) == b""
    assert not any(shown(w) for w in (app.explain_pick, app.explain_summary, app.explain_image))
    assert [label for label, _ in app.explain_pick.options] == ["1", "2", "3", "4", "5", "6"]


def test_explain_toggle_renders_the_word_bars_and_a_summary(env, explain_calls):
    app = TextToImageApp(env.cca, query="a small red circle", k=4)
    app.explain.value = True
    assert len(explain_calls) == 1
    call, e, top = explain_calls[0], app.explanation, app.hits[0]
    assert call.p is env.cca and call.query == "a small red circle" and call.picture == top.image
    assert all(shown(w) for w in (app.explain_pick, app.explain_summary, app.explain_image))
    png = bytes(app.explain_image.value)
    assert png[:4] == b"\x89PNG"
    w, h = Image.open(io.BytesIO(png)).size
    assert w > h > 100  # bars + occlusion map side by side
    # CCA over mean word vectors, cosine: an exact split of the very score the search ranked by.
    assert e.method == "exact" and e.occlusion.shape == (5, 5)
    assert e.score == pytest.approx(top.score, abs=1e-4)
    assert e.contributions.sum() + e.rest == pytest.approx(e.score, abs=1e-6)
    summary = html.unescape(app.explain_summary.value)
    assert summary.startswith('<div style="color:#555') and "exact: " in summary
    assert {"small", "red", "circle"} <= set(e.words)
    for word, c in zip(e.words, e.contributions, strict=True):
        assert f"{word} {c:+.3f}" in summary
    assert f"score {e.score:.3f} for result 1, image {top.image}" in summary
    # Words are listed biggest share first.
    listed = [m.group(1) for m in re.finditer(r"(\w+) [+-]\d\.\d{3}", summary.split("(")[0])]
    assert listed == [e.words[i] for i in np.argsort(-e.contributions, kind="stable")]

    app.k.value = 8  # same query, model and first hit: nothing to recompute
    assert len(explain_calls) == 1 and app.explanation is e
    app.explain.value = False
    assert app.explanation is None and not shown(app.explain_image) and len(explain_calls) == 1


def test_explain_pick_query_model_and_metric_choose_what_is_explained(env, explain_calls):
    app = TextToImageApp([env.cca, env.fusion], query="red circle", k=4)
    app.explain.value = True
    assert app.explain_pick.value == 0 and explain_calls[-1].picture == app.hits[0].image
    app.explain_pick.value = 2
    third = app.hits[2]
    assert len(explain_calls) == 2 and explain_calls[-1].picture == third.image != app.hits[0].image
    assert app.explanation.score == pytest.approx(third.score, abs=1e-4)
    assert f"for result 3, image {third.image}" in html.unescape(app.explain_summary.value)

    app.k.value = 2  # result 3 is gone: back to the first
    assert app.explain_pick.value == 0 and explain_calls[-1].picture == app.hits[0].image
    app.query.value = "blue square"
    assert explain_calls[-1].query == "blue square" and explain_calls[-1].picture == app.hits[0].image
    assert "blue" in app.explanation.words

    app.model.value = FUSION  # a fusion is explained word by word (leave one out), at the slider's w
    call = explain_calls[-1]
    assert call.p.name == FUSION and call.p.w == 0.3 and call.picture == app.hits[0].image
    assert app.explanation.method == "leave-one-out"
    assert html.unescape(app.explain_summary.value).count("leave-one-out: ") == 1
    app.fusion_w.value = 0.8
    assert explain_calls[-1].p.w == 0.8

    app.metric.value = "euclidean"  # explain keeps the pipeline's own score, and says so
    assert "not euclidean" in html.unescape(app.explain_summary.value)
    assert app.explanation is not None and explain_calls[-1].picture == app.hits[0].image


def test_explain_with_no_known_word_keeps_the_apps_message(env, explain_calls, monkeypatch):
    app = TextToImageApp(env.cca, query="xyzzy plugh", k=3)
    app.explain.value = True  # no hits: nothing to explain, no traceback
    assert explain_calls == [] and app.explanation is None and app.hits == []
    assert "none of the words 'xyzzy plugh'" in msg(app) and "#b00020" in app.message.value
    assert app.explain_summary.value == "" and bytes(app.explain_image.value) == b""
    assert app.explain_pick.options == ()
    app.query.value = "green square"
    assert len(explain_calls) == 1 and app.explanation is not None
    app.query.value = "xyzzy"
    assert app.explanation is None and bytes(app.explain_image.value) == b"" and "none of the words" in msg(app)

    # explain's own errors become the panel's message too.
    import crosslab.explain as ex

    def fails(*a, **kw):
        raise QueryError("type a few words to explain, e.g. 'a red car'.")

    monkeypatch.setattr(ex, "explain", fails)
    app.query.value = "blue circle"
    assert app.hits and app.explanation is None and bytes(app.explain_image.value) == b""
    assert "cannot explain result 1: type a few words" in html.unescape(app.explain_summary.value)
    assert "#b00020" in app.explain_summary.value and "blue circle" in msg(app)
