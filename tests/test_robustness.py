"""Corruptions (crosslab.robustness): identity at severity 0, seeded, growing with the severity; the curves."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import crosslab as cl
from crosslab import robustness as rb
from crosslab.errors import CrosslabError

CAPTION = "A small red apple, left of a big Blue square on the table"


def _synonyms(word: str) -> str | None:  # a stand-in for GloVe's neighbours: deterministic and fast
    return {"red": "crimson", "apple": "pear", "small": "tiny", "table": "desk"}.get(word)


def _picture(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    x = np.full((48, 40, 3), 255, np.uint8)
    x[10:30, 8:28] = rng.integers(0, 255, 3)
    return Image.fromarray(x)


@pytest.mark.parametrize("kind", rb.TEXT_KINDS)
def test_text_corruptions_are_the_identity_at_zero_and_seeded(kind):
    kw = {"synonyms": _synonyms}
    assert rb.corrupt_text(CAPTION, kind, 0, seed=3, **kw) == CAPTION
    a = rb.corrupt_text(CAPTION, kind, 5, seed=3, **kw)
    assert a == rb.corrupt_text(CAPTION, kind, 5, seed=3, **kw) != CAPTION
    others = {rb.corrupt_text(CAPTION, kind, 5, seed=s, **kw) for s in range(8)}
    assert len(others) > 1  # the seed matters


@pytest.mark.parametrize("kind", rb.IMAGE_KINDS)
def test_image_corruptions_are_the_identity_at_zero_and_seeded(kind):
    im = _picture()
    assert rb.corrupt_image(im, kind, 0) is im
    a, b = (np.asarray(rb.corrupt_image(im, kind, 3, seed=1, index=7)) for _ in range(2))
    assert np.array_equal(a, b) and a.shape == np.asarray(im).shape and a.dtype == np.uint8
    assert not np.array_equal(a, np.asarray(im))


@pytest.mark.parametrize("kind", ["noise", "blur", "greyscale", "invert", "jpeg"])
def test_pictures_move_further_from_the_original_as_the_severity_grows(kind):
    im = _picture(2)
    x0 = np.asarray(im, np.float64)
    dist = [np.abs(np.asarray(rb.corrupt_image(im, kind, s, seed=0), np.float64) - x0).mean() for s in rb.SEVERITIES]
    assert dist[0] == 0 and all(a <= b + 1e-9 for a, b in zip(dist[:-1], dist[1:], strict=True)) and dist[-1] > dist[1]


def test_one_draw_per_caption_so_severities_nest():
    """The same random draw at every severity: a letter changed at severity s is changed at s + 1 too."""
    changed = []
    for s in rb.SEVERITIES:
        t = rb.corrupt_text(CAPTION, "typo", s, seed=0)
        assert len(t) == len(CAPTION)
        changed.append({i for i, (a, b) in enumerate(zip(CAPTION, t, strict=True)) if a != b})
    assert all(a <= b for a, b in zip(changed[:-1], changed[1:], strict=True)) and len(changed[-1]) > len(changed[1])
    for i in changed[-1]:  # every typo is a keyboard neighbour of the letter it replaces
        assert rb.corrupt_text(CAPTION, "typo", 5, seed=0)[i].lower() in rb.KEYBOARD_NEIGHBOURS[CAPTION[i].lower()]


def test_word_level_corruptions_keep_what_they_promise():
    words = CAPTION.split()
    for s in rb.SEVERITIES:
        shuffled = rb.corrupt_text(CAPTION, "shuffle", s, seed=1).split()
        assert sorted(shuffled) == sorted(words)  # the same words, moved
        kept = rb.corrupt_text(CAPTION, "dropout", s, seed=1).split()
        assert 1 <= len(kept) <= len(words) and all(w in words for w in kept)
    assert rb.corrupt_text("apple", "dropout", 5, seed=0) == "apple"  # never empty
    replaced = set()
    for seed in range(10):  # every change is a synonym in place of its word; punctuation stays
        swapped = rb.corrupt_text(CAPTION, "synonym", 5, seed=seed, synonyms=_synonyms).split()
        assert len(swapped) == len(words)
        for old, new in zip(words, swapped, strict=True):
            if old != new:
                assert new.lower().strip(",") == _synonyms(old.lower().strip(",")) and old.endswith(",") == new.endswith(",")
                replaced.add(new.strip(","))
    assert replaced == {"crimson", "pear", "tiny", "desk"}
    with pytest.raises(CrosslabError, match="synonyms="):
        rb.corrupt_text(CAPTION, "synonym", 2)


def test_keyboard_neighbours_are_symmetric():
    for a, near in rb.KEYBOARD_NEIGHBOURS.items():
        assert near and all(a in rb.KEYBOARD_NEIGHBOURS[b] for b in near)


def test_bad_kinds_and_severities_are_named():
    with pytest.raises(CrosslabError, match="unknown corruption 'smudge'"):
        rb.corrupt_image(_picture(), "smudge", 1)
    with pytest.raises(CrosslabError, match="severity must be one of"):
        rb.corrupt_text(CAPTION, "typo", 6)


def test_corrupted_images_are_a_dataset_with_its_own_fingerprint(scenes):
    v = rb.CorruptedImages(scenes, "blur", 2, rows=[1, 4])
    assert len(v) == 2 and v.ids == [scenes.ids[1], scenes.ids[4]]
    assert np.array_equal(np.asarray(v.load_image(1)),
                          np.asarray(rb.corrupt_image(scenes.load_image(4), "blur", 2, index=4)))
    assert v.fingerprint() != rb.CorruptedImages(scenes, "blur", 3, rows=[1, 4]).fingerprint() != scenes.fingerprint()


@pytest.mark.parametrize("side,kind", [("text", "dropout"), ("image", "noise")])
def test_the_curve_starts_at_the_clean_score_and_sums_up_by_hand(scenes, side, kind):
    p = cl.create_pipeline("cca+glove", scenes, progress=False)
    curve = rb.severity_curve(p, scenes, side, kind, severities=(0, 2, 5))
    clean = cl.evaluation.evaluate_pipeline(p, scenes, "test")["t2i_r10"]
    assert curve["r10"][0] == pytest.approx(clean)
    by_hand = 100 * np.mean([(curve["r10"][0] - r) / curve["r10"][0] for r in curve["r10"][1:]])
    assert rb.mean_relative_drop(curve) == pytest.approx(by_hand)
    assert curve["r10"][-1] < curve["r10"][0]  # severity 5 hurts


def test_the_command_prints_one_curve_per_pipeline_and_corruption(scenes, capsys):
    import json

    from crosslab.__main__ import main

    assert main(["robustness", "--data", "scenes:60", "--pipeline", "cca+glove", "--text", "typo",
                 "--image", "invert", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["pipeline"], r["side"], r["kind"]) for r in rows] == [("cca+glove", "text", "typo"),
                                                                    ("cca+glove", "image", "invert")]
    assert all(len(r["r10"]) == 6 and r["r10"][0] >= r["r10"][-1] for r in rows)
    assert main(["robustness", "--data", "scenes:60", "--pipeline", "cca+glove", "--text", "case"]) == 0
    assert "drop" in capsys.readouterr().out


def test_augmented_captions_draw_a_seen_kind_per_caption_and_view():
    texts = [CAPTION, "two blue birds on a wire", "an old wooden boat"] * 10
    kinds = ("typo", "dropout")
    a = rb.augment_texts(texts, kinds, 3, view=1, seed=0)
    assert a == rb.augment_texts(texts, kinds, 3, view=1, seed=0) != rb.augment_texts(texts, kinds, 3, view=2, seed=0)
    assert sum(x != t for x, t in zip(a, texts, strict=True)) > len(texts) // 2
    for i, (t, x) in enumerate(zip(texts, a, strict=True)):  # each one is one seen kind at 1..3
        possible = {rb.corrupt_text(t, k, s, seed=0 * 1009 + 1, index=i) for k in kinds for s in (1, 2, 3)}
        assert x in possible
    with pytest.raises(CrosslabError, match="unknown corruption"):
        rb.augment_texts(texts, ("typo", "blur"), 3)
    with pytest.raises(CrosslabError, match="max_severity"):
        rb.augment_texts(texts, kinds, 0)


def test_augmented_pictures_are_seeded_views_with_their_own_fingerprints(scenes):
    v1 = rb.AugmentedImages(scenes, ["noise", "blur"], 2, view=1, rows=[0, 3, 5])
    again = rb.AugmentedImages(scenes, ["noise", "blur"], 2, view=1, rows=[0, 3, 5])
    v2 = rb.AugmentedImages(scenes, ["noise", "blur"], 2, view=2, rows=[0, 3, 5])
    assert len(v1) == 3 and v1.fingerprint() == again.fingerprint() != v2.fingerprint()
    assert v1.fingerprint() != rb.AugmentedImages(scenes, ["noise"], 2, view=1, rows=[0, 3, 5]).fingerprint()
    for i in range(3):
        a, b = np.asarray(v1.load_image(i)), np.asarray(again.load_image(i))
        assert np.array_equal(a, b) and not np.array_equal(a, np.asarray(scenes.load_image([0, 3, 5][i]).convert("RGB")))
    with pytest.raises(CrosslabError, match="unknown corruption"):
        rb.AugmentedImages(scenes, ["typo"], 2)


def test_the_tables_defences_are_what_val_chose():
    """scripts/robustness.py chose each defence's setting on val; the table must hold that choice."""
    import json
    from pathlib import Path

    res = json.loads((Path(cl.__file__).resolve().parents[1] / "docs" / "results" / "robustness.json").read_text())
    chosen = res["val"]["chosen"]
    assert cl.pipelines.AUGMENT["max_severity"] == chosen["max_severity"]
    assert cl.pipelines.FGSM["feature_eps"] == chosen["feature_eps"]
    assert cl.pipelines.ACMR["adversary"] == chosen["adversary"]
    for name in ("augmented+minilm", "fgsm+minilm", "acmr+minilm"):
        assert name in cl.list_pipelines()
    assert cl.pipelines.get_spec("augmented+minilm").settings["augment"] == cl.pipelines.AUGMENT
    # the rule as written: the augmentation kept is the lowest val drop among those within 2 points clean
    ok = [r for r in res["val"]["augment"] if r["val_t2i_r10"] >= res["val"]["base_val_t2i_r10"] - 2]
    assert min(ok, key=lambda r: r["val_drop"])["max_severity"] == chosen["max_severity"]
