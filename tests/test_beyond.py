"""crosslab.beyond end to end on small synthetic scenes, with a hand-made people-style query set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from crosslab import beyond, recipes, zeroshot
from crosslab.data import make_scenes
from crosslab.retrieval import ROW_KEYS, evaluate


@dataclass
class _Queries:
    texts: list
    kinds: np.ndarray
    ids: list
    targets: np.ndarray
    split: str = "test"
    name: str = "scene-queries"

    def subset(self, kind):
        keep = np.flatnonzero(self.kinds == kind)
        return _Queries([self.texts[i] for i in keep], self.kinds[keep], [self.ids[i] for i in keep],
                        self.targets[keep])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("efficientnet_lite_pytorch")
    mp = pytest.MonkeyPatch()
    mp.setenv("CROSSLAB_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setitem(recipes.TRAIN_DEFAULTS, "epochs", 3)
    mp.setitem(recipes.TRAIN_DEFAULTS, "batch_size", 32)
    ds = make_scenes(60, seed=0)
    s = beyond.fit_beyond(ds, d=16, progress=False, device="cpu")
    yield s
    mp.undo()


def _queries(ds, split="test"):
    test = np.flatnonzero(ds.split == split)
    texts, kinds, ids, targets = [], [], [], []
    for t, i in enumerate(test[:6]):
        shapes = " and ".join(f"a {o['colour']} {o['shape']}" for o in ds.meta[i]["objects"])
        texts += [shapes, f"a picture with {len(ds.meta[i]['objects'])} coloured shapes in it"]
        kinds += ["short", "description"]
        ids += [ds.ids[i]] * 2
        targets += [t, t]
    return _Queries(texts, np.array(kinds), ids, np.array(targets))


def test_rows_choices_and_people(setup):
    ds = setup.ds
    qs = _queries(ds)
    rows = beyond.run_beyond(queries=("captions", "people"), people=qs, setup=setup, progress=False)
    groups = ["captions", "people", "people:short", "people:description"]
    assert [r["queries"] for r in rows] == [g for g in groups for _ in beyond.BEYOND_MODELS]
    assert [r["name"] for r in rows[: len(beyond.BEYOND_MODELS)]] == list(beyond.BEYOND_MODELS)
    kinds = {r["name"]: r["kind"] for r in rows}
    assert kinds["conse+minilm"] == "zero-shot" and kinds["fusion(cca+minilm,conse+minilm)"] == "fusion"
    assert kinds["mlp+minilm"] == "trained" and kinds["cca+glove"] == "cca"
    for r in rows:
        assert set(ROW_KEYS) <= set(r)
        assert 0 <= r["t2i_r1"] <= r["t2i_r5"] <= r["t2i_r10"] <= 100
        if r["queries"] != "captions":
            assert r["i2t_r10"] is None and r["rsum"] is None
            assert r["n_queries"] == {"people": 12}.get(r["queries"], 6)
    # Val choices are recorded and come from the grids.
    assert setup.model("cca+minilm").choice["reg"] in recipes.RCCA_REGS
    assert setup.model("conse+minilm").choice["T"] in zeroshot.T_GRID
    assert setup.model("conse+minilm").choice["temperature"] in zeroshot.TEMPERATURE_GRID
    assert 0 <= setup.model("fusion(cca+minilm,conse+minilm)").choice["w"] <= 1
    # Not the clip art: no people-style val set, so w is chosen on the val captions.
    assert setup.model("fusion(cca+minilm,conse+minilm)").choice["chosen_on"] == "val captions"

    # The captions row of cca+minilm is retrieval.evaluate on the test split's features.
    caps, imgs, c2i = beyond._split(ds, "test")
    m = setup.model("cca+minilm").model
    want = evaluate(m, c2i, text=setup.text["minilm"][caps], image=setup.image["features"][imgs])
    got = next(r for r in rows if r["name"] == "cca+minilm" and r["queries"] == "captions")
    assert got["rsum"] == pytest.approx(want["rsum"], abs=0.01)

    # A people row against a naive loop: ConSE + MiniLM, rank of each query's target image.
    conse = setup.model("conse+minilm").model
    Q = conse.embed_text(setup.encoders["minilm"].transform(qs.texts))  # centred text vectors
    V = conse.embed_image(setup.image["logits"][imgs])
    V = V / np.linalg.norm(V, axis=1, keepdims=True)
    hits = 0
    for q, t in zip(Q, qs.targets, strict=True):
        s = V @ (q / np.linalg.norm(q))
        rank = 1 + np.sum(s > s[t]) + np.sum((s == s[t]) & (np.arange(len(s)) < t))
        hits += rank <= 5
    got = next(r for r in rows if r["name"] == "conse+minilm" and r["queries"] == "people")
    assert got["t2i_r5"] == pytest.approx(100 * hits / len(Q), abs=0.01)


def test_query_scores(setup):
    n_test = int((setup.ds.split == "test").sum())
    for name in ("conse+minilm", "cca+glove", "fusion(cca+minilm,conse+minilm)"):
        one = setup.query_scores(name, "a red circle")
        many = setup.query_scores(name, ["a red circle", "two blue squares"])
        assert one.shape == (1, n_test) and many.shape == (2, n_test)
        np.testing.assert_allclose(one[0], many[0], atol=1e-5)
    with pytest.raises(Exception, match="no words"):
        setup.query_scores("cca+glove", "  ")


def test_fusion_weight_chosen_on_a_val_query_set(setup):
    ds = setup.ds
    names = ("cca+minilm", "conse+minilm", "fusion(cca+minilm,conse+minilm)")
    vq = _queries(ds, "val")
    vq.split, vq.name = "val", "scene-val"
    s = beyond.fit_beyond(ds, models=names, d=16, progress=False, device="cpu", fusion_val=vq)
    c = s.model(names[2]).choice
    assert c["chosen_on"] == f"scene-val ({len(vq.texts)} queries)" and c["directions"] == "t2i" and c["rule"] == "best"
    # The choice is choose_w on the val query set's scores of the two models.
    va_imgs = beyond._split(ds, "val")[1]
    text = {k: e.transform(vq.texts) for k, e in s.encoders.items()}
    image = {k: v[va_imgs] for k, v in s.image.items()}
    Sa, Sb = (beyond.score_matrix(s.model(n), text, image) for n in names[:2])
    assert c["w"] == zeroshot.choose_w(Sa, Sb, vq.targets, rule="best", directions="t2i")[0]
    tq = _queries(ds)
    tq.split = "test"
    with pytest.raises(Exception, match="val split"):
        beyond.fit_beyond(ds, models=names, d=16, progress=False, device="cpu", fusion_val=tq)
    with pytest.raises(Exception, match="fusion_val must be"):
        beyond.fit_beyond(ds, models=names, d=16, progress=False, device="cpu", fusion_val="people")


def test_bad_targets_and_queries(setup):
    qs = _queries(setup.ds)
    qs.targets = qs.targets + 1000
    with pytest.raises(Exception, match="test images"):
        beyond.run_beyond(queries=("people",), people=qs, setup=setup, progress=False)
    with pytest.raises(Exception, match="queries must be"):
        beyond.run_beyond(queries=("tweets",), setup=setup)
