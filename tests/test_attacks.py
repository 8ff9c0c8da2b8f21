"""PGD (crosslab.attacks): inside its ball and the pixel range, moving scores the way it is asked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import crosslab as cl
from crosslab import attacks, pipelines
from crosslab.errors import ModelError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("CROSSLAB_CACHE", str(tmp_path_factory.mktemp("crosslab-cache")))
    spec = pipelines.PIPELINES["mlp+minilm"]
    mp.setitem(pipelines.PIPELINES, "mlp+minilm", dataclasses.replace(
        spec, settings={**spec.settings, "epochs": 3, "d": 16, "hidden": 32}))
    ds = cl.data.make_scenes(60, seed=0)
    p = cl.create_pipeline("mlp+minilm", ds, progress=False, device="cpu")
    rows = [int(i) for i in np.flatnonzero(ds.split == "test")[:4]]
    texts = [ds.image_captions(r)[0] for r in rows]
    yield ds, p, rows, texts
    mp.undo()


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_stays_in_its_ball_and_the_pixel_range_and_moves_the_score(setup, targeted):
    ds, p, rows, texts = setup
    eps = 4 / 255
    goal = ["a big green triangle"] * len(rows) if targeted else texts
    adv = attacks.pgd(p, [ds.load_image(r) for r in rows], goal, eps=eps, steps=10, targeted=targeted)
    assert adv.pixels.shape == adv.clean.shape == (len(rows), 3, 160, 160)
    assert np.abs(adv.delta).max() <= eps + 1e-6 and adv.pixels.min() >= 0 and adv.pixels.max() <= 1
    if targeted:
        assert (adv.score_adv > adv.score_clean).all()
    else:
        assert (adv.score_adv < adv.score_clean).all()


def test_no_budget_no_change_and_success_matches_the_clean_ranks(setup):
    ds, p, rows, texts = setup
    adv = attacks.pgd(p, [ds.load_image(r) for r in rows], texts, eps=0.0, steps=3)
    assert np.array_equal(adv.pixels, adv.clean)
    np.testing.assert_allclose(adv.score_adv, adv.score_clean, atol=1e-6)
    # with nothing changed, "success" is exactly "the own caption already misses its picture in the top k"
    caps, imgs, _ = pipelines.split_rows(ds, "test")
    S = p.score(p.encode_text(texts), p.encode_image(ds, rows=imgs))
    col = [int(np.flatnonzero(imgs == r)[0]) for r in rows]
    ranks = [1 + int((S[i] > S[i, c]).sum()) for i, c in enumerate(col)]
    for k in (1, 3, 10):
        assert list(attacks.success(p, ds, rows, adv, texts, k=k)) == [r > k for r in ranks]
    before, after = attacks.attacked_ranks(p, ds, rows, adv, texts)
    assert list(before) == list(after) == ranks
    moved = attacks.pgd(p, [ds.load_image(r) for r in rows], texts, eps=8 / 255, steps=10)
    before, after = attacks.attacked_ranks(p, ds, rows, moved, texts)
    assert list(before) == ranks and (after >= before).all() and (after > before).any()
    # the features' shift, in training standard deviations: none without a budget, some with one
    assert np.abs(attacks.feature_shift(p, adv)).max() < 1e-5
    shift = attacks.feature_shift(p, moved)
    assert shift.shape == (len(rows), p.head.image.scale.numel()) and np.abs(shift).mean() > 1e-3


def test_attacks_need_a_torch_head_on_pooled_features(setup):
    ds, _, rows, texts = setup
    cca = cl.create_pipeline("cca+glove", ds, progress=False)
    with pytest.raises(ModelError, match="PGD needs a pipeline with a torch head"):
        attacks.pgd(cca, [ds.load_image(rows[0])], texts[:1])
    assert attacks.to_pil(np.zeros((1, 3, 8, 8)))[0].size == (8, 8)


def test_the_one_word_attack_keeps_the_worst_single_swap(setup):
    ds, p, _, _ = setup
    near = lambda w: {"red": ["blue", "green"], "blue": ["red"], "circle": ["square"], "square": ["circle"]}.get(w, [])  # noqa: E731
    caps = [int(c) for c in np.flatnonzero(ds.split[ds.caption_to_image] == "test")[:6]]
    res = attacks.substitute_word(p, ds, caps, near)
    t2i, _ = cl.evaluation.pipeline_ranks(p, ds, "test")
    test_caps = np.flatnonzero(ds.split[ds.caption_to_image] == "test")
    for r, c in zip(res, caps, strict=True):
        assert r["rank"] == t2i[list(test_caps).index(c)]  # the clean rank, as evaluation ranks it
        assert r["attacked_rank"] >= r["rank"] and r["success"] == (r["rank"] <= 10 < r["attacked_rank"])
        a, b = r["text"].split(), r["attacked"].split()
        assert len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) <= 1
        swaps = [" ".join([*a[:j], w.replace(w.strip(",."), n), *a[j + 1:]])
                 for j, w in enumerate(a) for n in near(w.strip(",.").lower())]
        assert r["tried"] == len(swaps)
        by_hand = [_rank(p, ds, t, c) for t in [r["text"], *swaps]]  # every swap scored on its own
        assert r["attacked_rank"] == max(by_hand) and _rank(p, ds, r["attacked"], c) == max(by_hand)
    assert any(r["tried"] > 0 for r in res)


def _rank(p, ds, text, c):
    imgs = np.flatnonzero(ds.split == "test")
    s = np.asarray(p.score(p.encode_text([text]), p.encode_image(ds, rows=imgs)))[0]
    j = list(imgs).index(int(ds.caption_to_image[c]))
    return 1 + int((s > s[j]).sum()) + int((s[:j] == s[j]).sum())
