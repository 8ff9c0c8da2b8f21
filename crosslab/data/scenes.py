"""Synthetic scenes: small images of 1-3 coloured shapes, each with 5 paraphrased captions.

Unbounded, instant, and exactly described: every caption is true of its
picture by construction, so lessons and tests can use them where the clip art
is too slow or too noisy. With ``hard_pairs=True`` the scenes come in pairs
whose captions use exactly the same words (same bag of words) but describe
different pictures, by swapping the colours of two shapes (attribute binding)
or their places (relation): a bag-of-words text encoder cannot tell the two
apart, an order-aware one can.

Layout: the canvas is a 3 x 3 grid of cells; each shape sits in its own cell
(with a little jitter), so shapes never overlap and "left of" / "above" are
unambiguous. Drawing is vectorised numpy (one mask per shape over the canvas).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .base import CaptionedImages

SHAPES = ("circle", "square", "triangle", "diamond")
#: Colour names and their exact RGB values (distinct, so a pixel's colour names its shape).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 150, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
}
SIZES = {"small": 0.10, "large": 0.16}  # radius as a fraction of the canvas side
ROWS = ("top", "middle", "bottom")
COLS = ("left", "centre", "right")
SPLIT_P = (0.7, 0.1, 0.2)  # train, val, test

_SIZE_WORD = {"small": ("small", "little", "tiny"), "large": ("large", "big", "large")}


# ----- drawing -------------------------------------------------------------------
def _mask(shape: str, cx: float, cy: float, r: float, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Boolean (S, S) mask of one shape centred at (cx, cy) with 'radius' r."""
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        h = 0.85 * r  # same visual weight as the circle
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.15 * r
    if shape == "triangle":  # apex up, base below the centre
        top, base = -r, 0.75 * r
        return (dy >= top) & (dy <= base) & (np.abs(dx) <= r * (dy - top) / (base - top))
    raise DataError(f"unknown shape {shape!r}; use one of {SHAPES}.")


def draw_scene(objects: list[dict], size: int = 64) -> np.ndarray:
    """Render objects (dicts with shape, colour, cx, cy, r in pixels) on white: (size, size, 3) uint8."""
    img = np.full((size, size, 3), 255, dtype=np.uint8)
    for o in objects:
        # Only the shape's bounding box is tested, pixel centres at +0.5.
        reach = 1.2 * o["r"] + 1
        y0, y1 = max(0, int(o["cy"] - reach)), min(size, int(o["cy"] + reach) + 1)
        x0, x1 = max(0, int(o["cx"] - reach)), min(size, int(o["cx"] + reach) + 1)
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
        mask = _mask(o["shape"], o["cx"], o["cy"], o["r"], yy, xx)
        img[y0:y1, x0:x1][mask] = COLOURS[o["colour"]]
    return img


# ----- captions ------------------------------------------------------------------
def _np(o: dict, size_word: int = 0) -> str:
    """Noun phrase: 'small red circle' (the size word varies with the template)."""
    return f"{_SIZE_WORD[o['size']][size_word]} {o['colour']} {o['shape']}"


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _relation(a: dict, b: dict) -> tuple[str, str]:
    """How a stands to b, and the converse: ('left of', 'right of') or ('above', 'below')."""
    if a["col"] != b["col"]:
        return ("left of", "right of") if a["col"] < b["col"] else ("right of", "left of")
    return ("above", "below") if a["row"] < b["row"] else ("below", "above")


def _order(objects: list[dict]) -> list[dict]:
    """Objects in reading order (left to right, then top to bottom): captions use this order,
    so two scenes with the same words in the same places get captions with the same words."""
    return sorted(objects, key=lambda o: (o["col"], o["row"]))


def scene_captions(objects: list[dict]) -> list[str]:
    """Five different true captions of a scene, from a small grammar."""
    obs = _order(objects)
    if len(obs) == 1:
        o = obs[0]
        where = (
            "the centre"
            if (o["row"], o["col"]) == (1, 1)
            else (f"the {ROWS[o['row']]} {COLS[o['col']]}".replace("middle centre", "centre"))
        )
        return [
            _a(_np(o)),
            f"{_a(_np(o, 1))} on a white background",
            f"{_a(_np(o, 2))} in {where}",
            f"there is one {o['colour']} {o['shape']}",
            f"a single {o['shape']}, {o['colour']} and {_SIZE_WORD[o['size']][0]}",
        ]
    if len(obs) == 2:
        a, b = obs
        rel, inv = _relation(a, b)
        return [
            f"{_a(_np(a))} {rel} {_a(_np(b))}",
            f"{_a(_np(b))} {inv} {_a(_np(a))}",
            f"{_a(_np(a, 1))} and {_a(_np(b, 1))}",
            f"two shapes: {_a(_np(a, 2))} {rel} {_a(_np(b, 2))}",
            f"there is {_a(_np(b))} {inv} {_a(_np(a))}",
        ]
    a, b, c = obs[:3]
    rab, iab = _relation(a, b)
    rbc, ibc = _relation(b, c)
    return [
        f"{_a(_np(a))}, {_a(_np(b))} and {_a(_np(c))}",
        f"{_a(_np(a))} {rab} {_a(_np(b))}, and {_a(_np(c))}",
        f"{_a(_np(c))} {ibc} {_a(_np(b))}, and {_a(_np(a, 1))}",
        f"three shapes: {_a(_np(a, 2))}, {_a(_np(b, 2))} and {_a(_np(c, 2))}",
        f"{_a(_np(b))} {iab} {_a(_np(a))} and {rbc} {_a(_np(c))}",
    ]


# ----- sampling ------------------------------------------------------------------
def _sample_objects(rng: np.random.Generator, k: int, size: int) -> list[dict]:
    # Few, batched generator calls: per-call overhead, not arithmetic, dominates here.
    cells = rng.permutation(9)[:k]
    colours = rng.permutation(len(COLOURS))[:k]  # distinct colours per scene
    u = rng.random((k, 4))  # size, shape, jitter x, jitter y
    names = list(COLOURS)
    cell = size / 3
    objects = []
    for j in range(k):
        row, col = divmod(int(cells[j]), 3)
        sz = "small" if u[j, 0] < 0.5 else "large"
        r = SIZES[sz] * size
        jitter = max(0.0, cell / 2 - r - 1)  # stay inside the cell
        objects.append(
            {
                "shape": SHAPES[int(u[j, 1] * len(SHAPES))],
                "colour": names[int(colours[j])],
                "size": sz,
                "row": row,
                "col": col,
                "cx": (col + 0.5) * cell + (2 * float(u[j, 2]) - 1) * jitter,
                "cy": (row + 0.5) * cell + (2 * float(u[j, 3]) - 1) * jitter,
                "r": float(r),
            }
        )
    return objects


def _hard_partner(objects: list[dict], kind: str) -> list[dict]:
    """The partner scene: swap colours ('binding') or swap places ('relation') of two objects."""
    a, b = (dict(o) for o in _order(objects))
    if kind == "binding":
        a["colour"], b["colour"] = b["colour"], a["colour"]
    else:
        for key in ("row", "col", "cx", "cy"):
            a[key], b[key] = b[key], a[key]
    return [a, b]


def make_scenes(n: int, seed: int = 0, size: int = 64, hard_pairs: bool = False) -> CaptionedImages:
    """``n`` synthetic scenes of 1-3 shapes with 5 captions each, deterministic from ``seed``.

    Images are ``(size, size, 3)`` uint8 arrays on white; ``meta[i]["objects"]``
    lists each shape (shape, colour, size, row, col, cx, cy, r). Splits are
    70/10/20 (train/val/test), drawn from the same seed.

    With ``hard_pairs=True`` images ``2k`` and ``2k + 1`` form a pair of two-shape
    scenes whose captions have the same bag of words, caption for caption, but
    which differ in attribute binding (colours swapped, even k) or relation
    (places swapped, odd k); ``meta[i]["pair"]`` is k and ``meta[i]["pair_kind"]``
    "binding" or "relation". Both members of a pair share a split. ``n`` must be even.
    """
    if n < 0 or int(n) != n:
        raise DataError(f"make_scenes: n must be a non-negative integer, got {n!r}.")
    if size < 24:
        raise DataError(f"make_scenes: size must be at least 24 pixels, got {size}.")
    if hard_pairs and n % 2:
        raise DataError(f"make_scenes: hard_pairs needs an even n, got {n}.")
    rng = np.random.default_rng(seed)
    scenes: list[list[dict]] = []
    extra: list[dict] = []
    if hard_pairs:
        for k in range(n // 2):
            kind = "binding" if k % 2 == 0 else "relation"
            while True:
                obs = _sample_objects(rng, 2, size)
                # A pair must really differ: different shapes (else swapping colours would just
                # mirror it), and for relations, different sizes or shapes keep both scenes distinct.
                if obs[0]["shape"] != obs[1]["shape"]:
                    break
            scenes += [obs, _hard_partner(obs, kind)]
            extra += [{"pair": k, "pair_kind": kind}] * 2
        draws = rng.random(n // 2)
        split_draw = np.repeat(draws, 2)
    else:
        for k in rng.integers(1, 4, size=n):
            scenes.append(_sample_objects(rng, int(k), size))
            extra.append({})
        split_draw = rng.random(n)
    split = np.where(
        split_draw < SPLIT_P[0],
        "train",
        np.where(split_draw < SPLIT_P[0] + SPLIT_P[1], "val", "test"),
    ).astype(object)

    images, captions, c2i, meta = [], [], [], []
    for i, obs in enumerate(scenes):
        images.append(draw_scene(obs, size))
        caps = scene_captions(obs)
        captions += caps
        c2i += [i] * len(caps)
        meta.append({"objects": obs, "n_objects": len(obs), **extra[i]})
    name = "scenes-hard" if hard_pairs else "scenes"
    return CaptionedImages(
        name=f"{name}-{seed}",
        ids=[f"{name}-{seed}-{i:06d}" for i in range(n)],
        images=images,
        captions=captions,
        caption_to_image=np.asarray(c2i, dtype=np.int64),
        split=split,
        meta=meta,
    )
