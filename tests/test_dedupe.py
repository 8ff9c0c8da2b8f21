"""crosslab.data.dedupe against a brute-force reference and hand-made pictures."""

from __future__ import annotations

import itertools

import numpy as np
from PIL import Image, ImageDraw

from crosslab.data import dedupe


def drawing(shapes, size=144):
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    for kind, box, colour in shapes:
        (d.ellipse if kind == "o" else d.rectangle)(box, fill=colour, outline="black")
    return im


def brute_force(thumbs, threshold):
    ink = thumbs.sum(1)
    out = []
    for i, j in itertools.combinations(range(len(thumbs)), 2):
        d = np.abs(thumbs[i] - thumbs[j]).sum() / max(ink[i], ink[j], 1.0)
        if d <= threshold:
            out.append((i, j, d))
    return sorted(out, key=lambda p: (p[2], p[0], p[1]))


def test_distance_by_hand():
    """One black pixel's worth of ink against twice that: |1 - 2| / 2 = 0.5."""
    a = np.zeros(dedupe.SIDE * dedupe.SIDE * 3, np.float32)
    b = a.copy()
    a[:3] = 255.0
    b[:6] = 255.0
    d = dedupe.distances_to(np.stack([a, b]), 0, [1])
    assert np.isclose(d[0], 0.5)


def test_same_render_is_zero_and_small_changes_are_near():
    apple = [("o", (20, 20, 120, 120), "red")]
    same = dedupe.thumbnails([drawing(apple), drawing(apple)])
    assert dedupe.distances_to(same, 0, [1])[0] == 0.0
    with_leaf = apple + [("o", (66, 10, 74, 18), "green")]
    square = [("r", (20, 20, 120, 120), "blue")]
    t = dedupe.thumbnails([drawing(apple), drawing(with_leaf), drawing(square)])
    d_leaf, d_square = dedupe.distances_to(t, 0, [1, 2])
    assert d_leaf <= dedupe.THRESHOLD < d_square
    # an RGBA picture is flattened on white: a transparent canvas with the apple is the same picture
    rgba = Image.new("RGBA", (144, 144), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).ellipse((20, 20, 120, 120), fill="red", outline="black")
    assert dedupe.distances_to(dedupe.thumbnails([drawing(apple), rgba]), 0, [1])[0] < 0.01


def test_near_pairs_equals_brute_force():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 255, (12, 30)).astype(np.float32)
    # copies with small and large noise, and pure copies, so every kind of pair occurs
    thumbs = np.concatenate([base, base[:6] * 1.02, base[:3] + rng.uniform(0, 60, (3, 30)), base[:2]])
    thumbs = np.clip(thumbs, 0, 255).astype(np.float32)
    for t in (0.0, 0.03, 0.1, 0.3):
        got = dedupe.near_pairs(thumbs, t)
        ref = brute_force(thumbs, t)
        assert [(i, j) for i, j, _ in got] == [(i, j) for i, j, _ in ref]
        assert np.allclose([d for *_, d in got], [d for *_, d in ref])


def test_groups_are_transitive_and_include_singletons():
    assert dedupe.groups([(0, 2, 0.0), (2, 5, 0.0), (3, 4, 0.0)], 7) == [[0, 2, 5], [1], [3, 4], [6]]


def test_cross_split_pairs():
    a = np.full((3, 6), 100.0, np.float32)
    a[2] = 0.0
    a[2, 0] = 255.0
    assert dedupe.cross_split_pairs(a, ["train", "test", "test"]) == [(0, 1, 0.0)]
    assert dedupe.cross_split_pairs(a, ["test", "test", "train"]) == []
