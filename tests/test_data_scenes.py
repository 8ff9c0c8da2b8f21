"""Synthetic scenes: deterministic, captions true of the pixels, hard pairs with equal bags of words."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from crosslab.data import make_scenes
from crosslab.data.scenes import COLOURS, SHAPES, draw_scene, scene_captions
from crosslab.errors import DataError

WORD = re.compile(r"[a-z]+")
SIZE_WORDS = {"small": {"small", "little", "tiny"}, "large": {"large", "big"}}


def _centroids(img: np.ndarray) -> dict[str, tuple[float, float]]:
    """Colour name -> (x, y) centroid of the pixels painted exactly in that colour."""
    out = {}
    for name, rgb in COLOURS.items():
        ys, xs = np.nonzero((img == np.array(rgb, dtype=np.uint8)).all(axis=2))
        if len(xs):
            out[name] = (xs.mean(), ys.mean())
    return out


def test_deterministic_and_seed_dependent():
    a, b = make_scenes(50, seed=3), make_scenes(50, seed=3)
    assert a.captions == b.captions and (a.split == b.split).all()
    assert all((x == y).all() for x, y in zip(a.images, b.images, strict=True))
    assert a.fingerprint() == b.fingerprint()
    c = make_scenes(50, seed=4)
    assert c.captions != a.captions


def test_structure():
    ds = make_scenes(300, seed=0, size=64)
    assert len(ds) == 300 and ds.n_captions == 1500
    assert all(img.shape == (64, 64, 3) and img.dtype == np.uint8 for img in ds.images)
    assert (np.bincount(ds.caption_to_image) == 5).all()
    for i in range(len(ds)):
        assert len(set(ds.image_captions(i))) == 5  # five different paraphrases
    counts = Counter(ds.split)
    assert set(counts) == {"train", "val", "test"}
    assert 0.6 < counts["train"] / 300 < 0.8 and 0.12 < counts["test"] / 300 < 0.28
    assert Counter(m["n_objects"] for m in ds.meta).keys() == {1, 2, 3}
    assert ds.load_image(0).size == (64, 64)


def test_captions_match_pixels():
    """Every colour, shape and relation a caption names is checked against the drawn pixels."""
    ds = make_scenes(200, seed=1, size=72)
    for i in range(len(ds)):
        img, objs = ds.images[i], ds.meta[i]["objects"]
        cent = _centroids(img)
        # exactly the objects' colours are on the canvas, each at its object's centre
        assert set(cent) == {o["colour"] for o in objs}
        for o in objs:
            x, y = int(o["cx"]), int(o["cy"])
            assert tuple(img[y, x]) == COLOURS[o["colour"]]
        for cap in ds.image_captions(i):
            words = WORD.findall(cap)
            named = [w for w in words if w in COLOURS]
            assert sorted(named) == sorted(o["colour"] for o in objs)  # every object named once
            by_colour = {o["colour"]: o for o in objs}
            # each "<size> <colour> <shape>" phrase agrees with the object of that colour
            for m in re.finditer(
                r"(\w+) (" + "|".join(COLOURS) + r") (" + "|".join(SHAPES) + r")", cap
            ):
                o = by_colour[m.group(2)]
                assert m.group(3) == o["shape"]
                if m.group(1) in SIZE_WORDS["small"] | SIZE_WORDS["large"]:
                    assert m.group(1) in SIZE_WORDS[o["size"]]
            # relations, checked on pixel centroids: "<colour> <shape> left of a ... <colour2>"
            pat = (
                r"("
                + "|".join(COLOURS)
                + r") \w+ (left of|right of|above|below) an? \w+ ("
                + "|".join(COLOURS)
                + r")"
            )
            for m in re.finditer(pat, cap):
                (ax, ay), (bx, by) = cent[m.group(1)], cent[m.group(3)]
                rel = m.group(2)
                assert {
                    "left of": ax < bx,
                    "right of": ax > bx,
                    "above": ay < by,
                    "below": ay > by,
                }[rel], cap


def test_shapes_are_drawn_as_named():
    """Pixel area of each shape relative to the circle of the same radius."""
    r, size = 12.0, 64
    areas = {}
    for shape in SHAPES:
        img = draw_scene([{"shape": shape, "colour": "red", "cx": 32, "cy": 32, "r": r}], size)
        areas[shape] = int((img != 255).any(axis=2).sum())
    assert abs(areas["circle"] - np.pi * r * r) < 0.05 * np.pi * r * r
    assert abs(areas["square"] - (2 * 0.85 * r) ** 2) < 0.1 * (2 * 0.85 * r) ** 2
    assert areas["triangle"] < areas["circle"] / 1.5  # a triangle covers much less than its circle


def test_hard_pairs_same_bag_of_words_different_pictures():
    ds = make_scenes(40, seed=2, hard_pairs=True)
    kinds = Counter()
    for k in range(0, len(ds), 2):
        a, b = ds.meta[k], ds.meta[k + 1]
        assert a["pair"] == b["pair"] and a["pair_kind"] == b["pair_kind"]
        kinds[a["pair_kind"]] += 1
        assert ds.split[k] == ds.split[k + 1]
        ca, cb = ds.image_captions(k), ds.image_captions(k + 1)
        for x, y in zip(ca, cb, strict=True):
            assert Counter(WORD.findall(x)) == Counter(WORD.findall(y))
        assert set(ca) != set(cb)  # ... but the sentences differ
        assert not (ds.images[k] == ds.images[k + 1]).all()  # and so do the pictures
        oa, ob = a["objects"], b["objects"]
        if a["pair_kind"] == "binding":  # same shapes in the same places, colours swapped
            assert sorted((o["shape"], o["col"], o["row"]) for o in oa) == sorted(
                (o["shape"], o["col"], o["row"]) for o in ob
            )
            assert {(o["shape"], o["colour"]) for o in oa} != {
                (o["shape"], o["colour"]) for o in ob
            }
        else:  # same objects, places swapped
            key = lambda o: (o["shape"], o["colour"], o["size"])  # noqa: E731
            assert sorted(map(key, oa)) == sorted(map(key, ob))
            assert {(key(o), o["col"], o["row"]) for o in oa} != {
                (key(o), o["col"], o["row"]) for o in ob
            }
    assert kinds["binding"] == kinds["relation"] == 10


def test_scene_captions_single_object():
    obj = {
        "shape": "circle",
        "colour": "red",
        "size": "small",
        "row": 1,
        "col": 1,
        "cx": 32,
        "cy": 32,
        "r": 6,
    }
    caps = scene_captions([obj])
    assert caps[0] == "a small red circle" and "centre" in caps[2]


def test_bad_arguments():
    with pytest.raises(DataError):
        make_scenes(3, hard_pairs=True)
    with pytest.raises(DataError):
        make_scenes(-1)
    with pytest.raises(DataError):
        make_scenes(2, size=8)
    assert len(make_scenes(0)) == 0
