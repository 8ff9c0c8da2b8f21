"""The fitted Pipeline: the table, search against naive loops, the cache, save / load, fusion.

Everything runs on 60 synthetic scenes (the real EfficientNet-Lite0 and GloVe) with a
temporary CROSSLAB_CACHE shared by the module, so each pipeline is fitted once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import crosslab as cl
from crosslab import evaluation, pipelines
from crosslab.errors import ModelError
from crosslab.pipeline import IMAGE_INPUTS, FusionPipeline, Head, Pipeline, _heads, load_pipeline
from crosslab.pipelines import create_pipeline

pytest.importorskip("efficientnet_lite_pytorch")

FUSION = "fusion(cca+glove,conse+glove)"
QUERIES = ["a red circle", "a small blue square left of a yellow triangle", "three shapes"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("crosslab-cache")
    mp.setenv("CROSSLAB_CACHE", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def ds(cache_dir):
    return cl.data.make_scenes(60, seed=0)


@pytest.fixture(scope="module")
def cca(ds):
    return create_pipeline("cca+glove", ds, progress=False, device="cpu")


@pytest.fixture(scope="module")
def fusion(ds, cca):
    return create_pipeline(FUSION, ds, progress=False, device="cpu")


def _cosine_ranking(t, V):
    """Gallery order for one query vector by a per-pair cosine loop (ties: lower index first)."""
    t = np.asarray(t, np.float64)
    cos = np.array([t @ v / (np.linalg.norm(t) * np.linalg.norm(v)) for v in np.asarray(V, np.float64)])
    return np.argsort(-cos, kind="stable"), cos


# ----------------------------------------------------------------------------- the table
def test_every_head_class_satisfies_the_head_protocol():
    from crosslab.joint import JointConfig

    rng = np.random.default_rng(0)
    X, Y, c2i = rng.normal(size=(12, 6)), rng.normal(size=(6, 5)), np.arange(12) % 6
    heads = _heads()
    # (AttentionHead reads sequences and FineTunedHead activation maps, not rows: tests/test_attention.py and
    # tests/test_finetune.py check them the same way.)
    assert set(heads) == {"JointModel", "RandomModel", "CCAModel", "RegularizedCCA", "ConSE", "AttentionHead",
                          "FineTunedHead"}
    made = {
        "RandomModel": heads["RandomModel"](d=3).fit(X, Y, c2i),
        "CCAModel": heads["CCAModel"](d=2, pca=None).fit(X, Y, c2i),
        "RegularizedCCA": heads["RegularizedCCA"](d=2).fit(X, Y, c2i),
        "ConSE": heads["ConSE"](rng.normal(size=(5, 6)), T=2),
        "JointModel": heads["JointModel"](JointConfig(text_dim=6, image_dim=5, d=3)),
    }
    for name, head in made.items():
        assert isinstance(head, Head), name
        assert head.metric in ("cosine", "dot"), name
        # Plain arrays, no pickle, and back: the same embeddings.
        arrays = head.to_arrays()
        assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values()), name
        again = type(head).from_arrays(arrays)
        Yin = rng.normal(size=(4, 5)) if name == "ConSE" else Y[:4]
        Xin = X[:4].astype(np.float32)
        np.testing.assert_array_equal(np.asarray(again.embed_text(Xin)), np.asarray(head.embed_text(Xin)))
        np.testing.assert_array_equal(np.asarray(again.embed_image(Yin)), np.asarray(head.embed_image(Yin)))
    # Not a head: refused when a pipeline is built.
    with pytest.raises(ModelError, match="lacks embed_text"):
        Pipeline("x", "toy", None, ("efficientnet_lite0", 224), object())


def test_table_names_specs_and_fitters():
    names = pipelines.list_pipelines()
    assert names == list(pipelines.PIPELINES) and len(set(names)) == len(names)
    assert set(pipelines.LESSON05) <= set(names) and set(pipelines.LESSON08) <= set(names)
    assert pipelines.DEFAULT_PIPELINE in names
    for name, spec in pipelines.PIPELINES.items():
        assert spec.name == name and spec.kind and spec.about
        if spec.parts:
            assert spec.kind == "fusion" and len(spec.parts) == 2 and not spec.head
            assert all(p in pipelines.PIPELINES and not pipelines.PIPELINES[p].parts for p in spec.parts)
        else:
            assert spec.head in pipelines.FITTERS, name
            assert spec.text in cl.text_encoders.list_text_encoders(), name
            assert spec.image_input in IMAGE_INPUTS
        assert spec.needs()
    with pytest.raises(ModelError, match=r"unknown pipeline 'nope'.*cca\+glove"):
        pipelines.get_spec("nope")
    with pytest.raises(ModelError, match="unknown pipeline"):
        create_pipeline("nope", object())


# ----------------------------------------------------------------------------- search
def test_search_and_describe_equal_naive_cosine_loops(ds, cca):
    assert isinstance(cca, Pipeline) and cca.kind == "cca" and cca.head.metric == "cosine"
    assert cca.gallery is ds and "reg" in cca.choice
    head = cca.head
    V = head.embed_image(cca.image_features(ds))
    t = head.embed_text(cca.text_features("a red circle"))[0]
    order, cos = _cosine_ranking(t, V)
    hits = cca.search("a red circle", k=8)
    assert [h.id for h in hits] == order[:8].tolist()
    np.testing.assert_allclose([h.score for h in hits], cos[order[:8]], atol=1e-5)
    for h in hits:
        assert h.image == h.id and h.caption == ds.image_captions(h.id)[0] and h.path is None
    assert len(cca.search("a red circle", k=10_000)) == len(ds)  # k is capped at the gallery
    with pytest.raises(cl.errors.QueryError):
        cca.search("   ")

    picture = ds.images[7]
    v = head.embed_image(cca.image_features([picture]))[0]
    order, cos = _cosine_ranking(v, head.embed_text(cca.text_features(ds)))
    hits = cca.describe(picture, k=6)
    assert [h.id for h in hits] == order[:6].tolist()
    np.testing.assert_allclose([h.score for h in hits], cos[order[:6]], atol=1e-5)
    for h in hits:
        assert h.caption == ds.captions[h.id] and h.image == ds.caption_to_image[h.id]


def test_evaluate_pipeline_equals_evaluate_of_naive_scores(ds, cca):
    caps, imgs, c2i = pipelines.split_rows(ds, "test")
    assert len(imgs) == int(np.sum(ds.split == "test")) and len(caps) == len(c2i)
    T = np.asarray(cca.head.embed_text(cca.text_features(ds)[caps]), np.float64)
    V = np.asarray(cca.head.embed_image(cca.image_features(ds)[imgs]), np.float64)
    S = np.array([[t @ v / (np.linalg.norm(t) * np.linalg.norm(v)) for v in V] for t in T])
    want = evaluation.evaluate(S, c2i)
    got = evaluation.evaluate_pipeline(cca, ds, "test")
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k
    assert got["rsum"] > 400  # far above chance (~240) on these easy scenes


# ----------------------------------------------------------------------------- the cache
def test_second_create_is_a_cache_hit_and_refit_is_deterministic(ds, cca):
    assert cca.cache_info_.hit is False and cca.cache_info_.path.is_file()
    again = create_pipeline("cca+glove", ds, progress=False, device="cpu")
    assert again.cache_info_.hit is True and again.cache_info_.path == cca.cache_info_.path
    assert again is not cca and again.gallery is ds
    want = cca.scores(QUERIES, ds)
    assert want.shape == (len(QUERIES), len(ds)) and want.dtype == np.float64
    np.testing.assert_array_equal(again.scores(QUERIES, ds), want)
    assert again.choice["reg"] == cca.choice["reg"]
    refit = create_pipeline("cca+glove", ds, progress=False, device="cpu", cache=False)
    assert refit.cache_info_.hit is False and refit.cache_info_.path is None
    np.testing.assert_array_equal(refit.scores(QUERIES, ds), want)


def test_cached_choice_equals_fresh_choice(ds, cca, fusion):
    for p in (cca, fusion):
        again = create_pipeline(p.name, ds, progress=False, device="cpu")
        assert again.cache_info_.hit
        assert again.choice == p.choice, p.name


# ----------------------------------------------------------------------------- save / load
def test_save_and_load_in_a_fresh_process_give_identical_scores(ds, cca, fusion, tmp_path, cache_dir):
    single, fused = cca.save(tmp_path / "cca.npz"), fusion.save(tmp_path / "fusion.npz")
    script = textwrap.dedent(f"""
        import numpy as np, crosslab as cl
        ds = cl.data.make_scenes(60, seed=0)
        for name in ("cca", "fusion"):
            p = cl.load_pipeline({str(tmp_path)!r} + f"/{{name}}.npz", gallery=ds, device="cpu")
            np.save({str(tmp_path)!r} + f"/{{name}}-scores.npy", p.scores({QUERIES!r}, ds))
            np.save({str(tmp_path)!r} + f"/{{name}}-i2t.npy", p.scores(ds, ds, axis=0))
            print(name, type(p).__name__, p.kind, p.w)
    """)
    env = os.environ | {"CROSSLAB_CACHE": str(cache_dir)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["cca Pipeline cca None", f"fusion FusionPipeline fusion {fusion.w}"]
    for name, p in (("cca", cca), ("fusion", fusion)):
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}-scores.npy"), p.scores(QUERIES, ds))
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}-i2t.npy"), p.scores(ds, ds, axis=0))
    # And in this process: the same kind of object with the same settings.
    back = load_pipeline(fused, gallery=ds, device="cpu")
    assert isinstance(back, FusionPipeline) and back.w == fusion.w and back.name == FUSION
    assert back.a.name == "cca+glove" and back.b.name == "conse+glove" and back.b.image_input == "logits"
    assert back.b.choice["T"] == fusion.b.choice["T"] and back.gallery is ds
    assert [h.id for h in back.search("a red circle", k=5)] == [h.id for h in fusion.search("a red circle", k=5)]
    assert load_pipeline(single).gallery is None
    with pytest.raises(ModelError, match="no gallery"):
        load_pipeline(single).search("a red circle")


def test_bad_files_are_refused_with_a_clear_error(cca, tmp_path):
    good = cca.save(tmp_path / "good.npz")
    body = good.read_bytes()
    bad = {}
    bad["truncated"] = tmp_path / "truncated.npz"
    bad["truncated"].write_bytes(body[: len(body) // 2])
    bad["garbage"] = tmp_path / "garbage.npz"
    bad["garbage"].write_bytes(b"not a zip file at all")
    bad["foreign"] = tmp_path / "foreign.npz"
    np.savez(bad["foreign"], weights=np.arange(5.0), names=np.array(["a", "b"]))
    bad["pickled"] = tmp_path / "pickled.npz"
    np.savez(bad["pickled"], config=np.array([{"format": "crosslab-pipeline/1"}], dtype=object))
    bad["other-format"] = tmp_path / "other-format.npz"
    np.savez(bad["other-format"], config=np.array(json.dumps({"format": "something/2"})), checksum=np.array("0"))
    # Tampered: one number changed, re-saved with the old checksum.
    with np.load(good, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    key = next(k for k in arrays if k.startswith("head/a/") and arrays[k].dtype.kind == "f")
    arrays[key] = arrays[key].copy()
    arrays[key].flat[0] += 1e-3
    bad["tampered"] = tmp_path / "tampered.npz"
    np.savez(bad["tampered"], **arrays)
    bad["missing"] = tmp_path / "missing.npz"
    for what, path in bad.items():
        with pytest.raises(ModelError, match=re.escape(path.name)) as e:
            load_pipeline(path)
        msg = str(e.value)
        assert "Traceback" not in msg and "zipfile" not in msg, what
        # No numpy / zip exception chained under it ("During handling of ... another exception").
        err = e.value
        assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__), what
    assert "checksum" in str(pytest.raises(ModelError, load_pipeline, bad["tampered"]).value)
    assert "no such pipeline file" in str(pytest.raises(ModelError, load_pipeline, bad["missing"]).value)
    # The intact file still loads.
    assert load_pipeline(good).name == "cca+glove"


# ----------------------------------------------------------------------------- fusion
def test_fusion_endpoints_rank_like_their_parts(ds, fusion):
    assert isinstance(fusion, FusionPipeline) and fusion.kind == "fusion"
    assert fusion.name == FUSION and fusion.a.name == "cca+glove" and fusion.b.name == "conse+glove"
    assert 0 <= fusion.w <= 1 and fusion.choice["w"] == fusion.w and fusion.choice["chosen_on"] == "val captions"
    assert fusion.gallery is ds and fusion.a.gallery is ds and fusion.b.gallery is ds
    w = fusion.w
    for end, part in ((0.0, fusion.a), (1.0, fusion.b)):
        f = fusion.with_w(end)
        assert isinstance(f, FusionPipeline) and f is not fusion and f.w == end and f.a is fusion.a
        for q in QUERIES:
            assert [h.id for h in f.search(q, k=15)] == [h.id for h in part.search(q, k=15)], (end, q)
        assert [h.id for h in f.describe(ds.images[3], k=10)] == [h.id for h in part.describe(ds.images[3], k=10)]
        assert evaluation.evaluate_pipeline(f, ds, "test") == evaluation.evaluate_pipeline(part, ds, "test")
    assert fusion.w == w  # with_w left the original alone
    with pytest.raises(ModelError, match="w must be"):
        fusion.with_w(2.0)
    with pytest.raises(ModelError, match="not a fusion"):
        fusion.a.with_w(0.5)


# ----------------------------------------------------------------------------- trained
def test_trained_entry_fits_and_round_trips(ds, monkeypatch, tmp_path):
    from crosslab.joint import JointModel

    name = "mlp infonce"
    spec = pipelines.PIPELINES[name]
    monkeypatch.setitem(pipelines.PIPELINES, name, dataclasses.replace(
        spec, settings={**spec.settings, "epochs": 2, "batch_size": 32, "hidden": 32}))
    p = create_pipeline(name, ds, progress=False, device="cpu")
    assert not p.cache_info_.hit
    assert p.kind == "trained" and isinstance(p.head, JointModel) and p.head.cfg.hidden == 32
    assert p.text.name == "glove+w2v-tfidf"
    assert 1 <= p.choice["best_epoch"] <= p.choice["epochs_run"] <= 2
    assert len(p.choice["loss"]) == p.choice["epochs_run"] and np.isfinite(p.choice["loss"]).all()
    want = p.scores(QUERIES, ds)
    assert np.isfinite(want).all()
    back = load_pipeline(p.save(tmp_path / "mlp.npz"), gallery=ds, device="cpu")
    assert isinstance(back.head, JointModel) and back.choice["best_epoch"] == p.choice["best_epoch"]
    np.testing.assert_array_equal(back.scores(QUERIES, ds), want)
    # The cache entry is keyed by the settings: the patched spec is found again, and is what it was.
    again = create_pipeline(name, ds, progress=False, device="cpu")
    assert again.cache_info_.hit
    np.testing.assert_array_equal(again.scores(QUERIES, ds), want)


def test_a_cached_pipeline_searches_without_the_cnn(ds, cca, monkeypatch):
    """The gallery's embeddings are cached with the pipeline: a new process needs no image encoder."""
    from crosslab import pipeline as P

    want = [(h.id, h.score) for h in cca.search("a red circle", k=5)]  # fills the gallery cache
    fresh = create_pipeline("cca+glove", ds, progress=False, device="cpu")
    assert fresh.cache_info_.hit
    other = dataclasses.replace(pipelines.get_spec("cca+glove"), settings={**pipelines.RCCA, "d": 8})
    with monkeypatch.context() as m:
        m.setitem(pipelines.PIPELINES, "cca+glove", other)
        changed = create_pipeline("cca+glove", ds, progress=False, device="cpu", cache=False)

    def no_cnn(*args, **kwargs):
        raise AssertionError("the CNN was built for a cached gallery")

    monkeypatch.setattr(P, "_image_encoder", no_cnn)
    assert [(h.id, h.score) for h in fresh.search("a red circle", k=5)] == want
    with pytest.raises(AssertionError, match="CNN was built"):  # another head: its own gallery entry
        changed.search("a red circle", k=5)


def test_search_a_gallery_whose_images_have_no_captions(ds, cca):
    """A folder of pictures has no captions: hits show the image's id instead."""
    bare = ds.select(np.arange(len(ds)))
    bare = type(bare)(name=bare.name, ids=bare.ids, images=bare.images, captions=[],
                      caption_to_image=np.zeros(0, dtype=np.int64), split=bare.split, root=bare.root)
    hits = cca.search("a red circle", k=3, gallery=bare)
    assert [h.id for h in hits] == [h.id for h in cca.search("a red circle", k=3)]
    assert all(h.caption == bare.ids[h.image] for h in hits)


@pytest.mark.slow
def test_a_fusion_reuses_its_fitted_parts_instead_of_refitting_them(monkeypatch):
    ds = cl.data.load_clipart()
    name = "fusion(cca+glove,conse+glove)"
    parts = [cl.create_pipeline(n, ds, progress=False) for n in pipelines.get_spec(name).parts]  # fitted or cached

    def refit(*_args, **_kw):
        raise AssertionError("a fusion refitted one of its parts")

    monkeypatch.setattr(pipelines, "FITTERS", {k: refit for k in pipelines.FITTERS})
    fused = pipelines._fit(pipelines._Context(ds, None, False), name)  # the fusion itself, not from the cache
    for part, mine in zip(parts, (fused.a, fused.b), strict=True):
        assert part.name == mine.name
        for k, v in part.to_arrays().items():
            assert np.array_equal(v, mine.to_arrays()[k])
