"""Robustness: corrupted captions and pictures at five severities, and what they do to retrieval.

    from crosslab import robustness as rb
    rb.corrupt_text("a red apple", "typo", 3, seed=0)          # 'a red aople'
    rb.corrupt_image(picture, "blur", 2, seed=0)               # a PIL image
    curve = rb.severity_curve(pipeline, ds, "text", "typo")    # test t2i R@10 at severities 0..5
    rb.mean_relative_drop(curve)                               # ImageNet-C's summary, per pipeline

Corruptions in the spirit of ImageNet-C (Hendrycks and Dietterich, 2019): each kind has five
severities, 1 (mild) to 5 (severe), and severity 0 is the identity -- exactly the input. Every
corruption is a pure function of ``(input, kind, severity, seed, index)``: the same call gives the same
output, and the *same* draw at every severity (a picture's noise grows with the severity, it is not
re-drawn), so a curve shows the effect of the severity, not of new random draws.

* Captions (:data:`TEXT_KINDS`): keyboard-neighbour typos, word dropout, word-order shuffle, synonym
  swaps (each word's nearest GloVe neighbour that is not the same word in another form), case and
  punctuation noise.
* Pictures (:data:`IMAGE_KINDS`): Gaussian noise, blur, JPEG compression, crop and shift, rotation,
  greyscale, colour inversion. :class:`CorruptedImages` is a corrupted view of a dataset that the image
  encoders extract and cache like any other.

:func:`severity_curve` scores one pipeline on the test split (text→image R@10 against severity, the
gallery clean for caption corruptions and corrupted for picture ones); :func:`mean_relative_drop` is
the curve's mean drop relative to severity 0, ImageNet-C's summary.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from .errors import CrosslabError

__all__ = ["TEXT_KINDS", "IMAGE_KINDS", "SEVERITIES", "corrupt_text", "corrupt_texts", "corrupt_image",
           "CorruptedImages", "augment_texts", "AugmentedImages", "severity_curve", "mean_relative_drop"]

SEVERITIES = (0, 1, 2, 3, 4, 5)

#: Per kind, the strength at severities 1..5 (severity 0 is always the identity).
TEXT_LEVELS: dict[str, tuple[float, ...]] = {
    "typo": (0.02, 0.05, 0.08, 0.12, 0.18),       # share of letters replaced by a keyboard neighbour
    "dropout": (0.1, 0.2, 0.3, 0.4, 0.5),         # share of words dropped (one is always kept)
    "shuffle": (0.2, 0.4, 0.6, 0.8, 1.0),         # share of words moved to random places
    "synonym": (0.1, 0.2, 0.3, 0.4, 0.5),         # share of words replaced by a GloVe neighbour
    "case": (0.1, 0.2, 0.3, 0.4, 0.5),            # share of words with random case and punctuation
}
IMAGE_LEVELS: dict[str, tuple[float, ...]] = {
    "noise": (0.04, 0.08, 0.12, 0.18, 0.26),      # Gaussian sigma, as a share of the pixel range
    "blur": (0.5, 1.0, 1.5, 2.0, 3.0),            # Gaussian blur radius, pixels
    "jpeg": (60, 35, 20, 12, 6),                  # JPEG quality
    "shift": (0.05, 0.1, 0.15, 0.2, 0.3),         # share of the side the picture moves (white fills in)
    "rotate": (5, 10, 15, 20, 30),                # degrees
    "greyscale": (0.2, 0.4, 0.6, 0.8, 1.0),       # blend towards the greyscale picture
    "invert": (0.2, 0.4, 0.6, 0.8, 1.0),          # blend towards the inverted picture
}
TEXT_KINDS = tuple(TEXT_LEVELS)
IMAGE_KINDS = tuple(IMAGE_LEVELS)

_KEYBOARD = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _neighbours_on_keyboard() -> dict[str, str]:
    pos = {ch: (r, c) for r, row in enumerate(_KEYBOARD) for c, ch in enumerate(row)}
    out = {}
    for ch, (r, c) in pos.items():
        out[ch] = "".join(o for o, (r2, c2) in pos.items() if o != ch and abs(r2 - r) <= 1 and abs(c2 - c) <= 1)
    return out


KEYBOARD_NEIGHBOURS = _neighbours_on_keyboard()


def _check(kind: str, severity: int, levels: dict[str, tuple]) -> None:
    if kind not in levels:
        raise CrosslabError(f"unknown corruption {kind!r}; choose one of {list(levels)}.")
    if severity not in SEVERITIES:
        raise CrosslabError(f"severity must be one of {list(SEVERITIES)} (0 = none), got {severity!r}.")


def _rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """The draw of one input: independent of the severity, so severities differ only in strength."""
    k = int.from_bytes(hashlib.sha256(kind.encode()).digest()[:4], "little")
    return np.random.default_rng([int(seed), k, int(index)])


# ----------------------------------------------------------------------------- captions
_WORD = re.compile(r"[A-Za-z]+")


def corrupt_text(text: str, kind: str, severity: int, *, seed: int = 0, index: int = 0,
                 synonyms: Callable[[str], str | None] | None = None) -> str:
    """``text`` corrupted by ``kind`` at ``severity`` (0: returned unchanged).

    ``index`` tells inputs apart under one seed (the caption's row). ``synonyms`` (word -> replacement
    or None) is needed for ``"synonym"``; :func:`glove_synonyms` gives GloVe's.
    """
    _check(kind, severity, TEXT_LEVELS)
    if severity == 0 or not text:
        return text
    level = TEXT_LEVELS[kind][severity - 1]
    rng = _rng(seed, kind, index)
    if kind == "typo":
        chars = list(text)
        u = rng.random(len(chars))
        picks = rng.random(len(chars))
        for i, ch in enumerate(chars):
            near = KEYBOARD_NEIGHBOURS.get(ch.lower())
            if near and u[i] < level:
                new = near[int(picks[i] * len(near))]
                chars[i] = new.upper() if ch.isupper() else new
        return "".join(chars)
    words = text.split()
    u = rng.random(len(words))
    if kind == "dropout":
        keep = [w for w, x in zip(words, u, strict=True) if x >= level]
        return " ".join(keep) if keep else words[int(np.argmax(u))]
    if kind == "shuffle":
        moved = [i for i in range(len(words)) if u[i] < level]
        order = list(range(len(words)))
        perm = rng.permutation(len(moved)) if moved else []
        for i, j in zip(moved, perm, strict=True):
            order[i] = moved[j]
        return " ".join(words[i] for i in order)
    if kind == "synonym":
        if synonyms is None:
            raise CrosslabError("corrupt_text(..., 'synonym') needs synonyms=; use robustness.glove_synonyms().")
        out = []
        for w, x in zip(words, u, strict=True):
            m = _WORD.fullmatch(w.strip(".,;:!?"))
            new = synonyms(m.group(0).lower()) if m and x < level else None
            out.append(w.replace(m.group(0), new) if new else w)
        return " ".join(out)
    # case and punctuation
    marks = rng.integers(0, 4, len(words))
    out = []
    for w, x, mark in zip(words, u, marks, strict=True):
        if x < level:
            w = (w.upper(), w.lower(), w.capitalize(), w + rng.choice([",", ".", "!", "?"]))[int(mark)]
        out.append(w)
    return " ".join(out)


def corrupt_texts(texts: Sequence[str], kind: str, severity: int, *, seed: int = 0,
                  synonyms: Callable[[str], str | None] | None = None) -> list[str]:
    """Every text corrupted, each with its own draw (``index`` = its position)."""
    return [corrupt_text(t, kind, severity, seed=seed, index=i, synonyms=synonyms) for i, t in enumerate(texts)]


def glove_neighbours(topn: int = 5, search: int = 20) -> Callable[[str], list[str]]:
    """word -> up to ``topn`` of its nearest GloVe neighbours (among the ``search`` nearest) that are other
    words (not the word with a suffix, a plural or another form sharing its first five letters); [] for
    unknown and very short words. Memoised."""
    from .text import load_glove

    kv = load_glove()
    memo: dict[str, list[str]] = {}

    def neighbours(word: str) -> list[str]:
        if word not in memo:
            memo[word] = []
            if len(word) >= 3 and word in kv.key_to_index:
                memo[word] = [o for o, _ in kv.most_similar(word, topn=search)
                              if o.isalpha() and o[:5] != word[:5] and word not in o and o not in word][:topn]
        return memo[word]

    return neighbours


def glove_synonyms(topn: int = 10) -> Callable[[str], str | None]:
    """word -> its nearest GloVe neighbour that is a different word (see :func:`glove_neighbours`), or None."""
    near = glove_neighbours(1, topn)
    return lambda word: (near(word) or [None])[0]


# ----------------------------------------------------------------------------- pictures
def corrupt_image(image: Image.Image, kind: str, severity: int, *, seed: int = 0, index: int = 0) -> Image.Image:
    """An RGB picture corrupted by ``kind`` at ``severity`` (0: the same picture, unchanged)."""
    _check(kind, severity, IMAGE_LEVELS)
    if severity == 0:
        return image
    im = image.convert("RGB")
    level = IMAGE_LEVELS[kind][severity - 1]
    rng = _rng(seed, kind, index)
    if kind == "noise":
        x = np.asarray(im, dtype=np.float64) + rng.standard_normal((im.height, im.width, 3)) * level * 255
        return Image.fromarray(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    if kind == "blur":
        return im.filter(ImageFilter.GaussianBlur(level))
    if kind == "jpeg":
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(level))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "shift":
        angle = rng.uniform(0, 2 * np.pi)
        dx, dy = (int(round(level * s * f)) for s, f in ((im.width, np.cos(angle)), (im.height, np.sin(angle))))
        return im.transform(im.size, Image.AFFINE, (1, 0, -dx, 0, 1, -dy), fillcolor=(255, 255, 255))
    if kind == "rotate":
        sign = 1 if rng.random() < 0.5 else -1
        return im.rotate(sign * level, resample=Image.BILINEAR, fillcolor=(255, 255, 255))
    other = ImageOps.grayscale(im).convert("RGB") if kind == "greyscale" else ImageOps.invert(im)
    return Image.blend(im, other, float(level))


class CorruptedImages:
    """A dataset's pictures corrupted by ``kind`` at ``severity``: extracted and cached like a dataset.

    ``rows`` picks the pictures (default all); ``captions`` and ``caption_to_image`` are those of the
    pictures kept, so pipelines take it wherever they take a dataset.
    """

    def __init__(self, ds: Any, kind: str, severity: int, *, rows: Any = None, seed: int = 0) -> None:
        _check(kind, severity, IMAGE_LEVELS)
        self.kind, self.severity, self.seed = kind, int(severity), int(seed)
        self.rows = np.arange(len(ds)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.base = ds if rows is None else ds.select(self.rows)
        self.name = f"{str(ds.name).split('/')[0]}/{kind}{severity}"
        self.ids = list(self.base.ids)
        self.captions, self.caption_to_image = self.base.captions, self.base.caption_to_image

    def __len__(self) -> int:
        return len(self.rows)

    def load_image(self, i: int) -> Image.Image:
        return corrupt_image(self.base.load_image(i), self.kind, self.severity, seed=self.seed,
                             index=int(self.rows[i]))

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.base.fingerprint().encode())
        h.update(json.dumps([self.kind, self.severity, self.seed, IMAGE_LEVELS[self.kind],
                             self.rows.tolist()]).encode())
        return h.hexdigest()


# ----------------------------------------------------------------------------- augmentation
def _augment_draw(seed: int, view: int, index: int, kinds: Sequence[str], max_severity: int) -> tuple[str, int, int]:
    """One input's corruption in one augmented view: ``(kind, severity, seed)``, drawn from its own stream."""
    if not kinds or not 1 <= int(max_severity) <= SEVERITIES[-1]:
        raise CrosslabError(f"augmentation needs at least one kind and max_severity in 1..{SEVERITIES[-1]}, "
                            f"got {list(kinds)} and {max_severity!r}.")
    rng = _rng(seed, f"augment-view-{view}", index)
    return kinds[int(rng.integers(len(kinds)))], int(rng.integers(1, int(max_severity) + 1)), seed * 1009 + view


def augment_texts(texts: Sequence[str], kinds: Sequence[str], max_severity: int, *, view: int = 1, seed: int = 0,
                  synonyms: Callable[[str], str | None] | None = None) -> list[str]:
    """One augmented view of ``texts`` for training: each text corrupted by a kind drawn from ``kinds`` at
    a severity drawn from 1..``max_severity`` (its own draw per text and per ``view``)."""
    for k in kinds:
        _check(k, 0, TEXT_LEVELS)
    out = []
    for i, t in enumerate(texts):
        kind, sev, s = _augment_draw(seed, view, i, kinds, max_severity)
        out.append(corrupt_text(t, kind, sev, seed=s, index=i, synonyms=synonyms))
    return out


class AugmentedImages(CorruptedImages):
    """One augmented view of a dataset's pictures for training: each picture corrupted by a kind drawn from
    ``kinds`` at a severity drawn from 1..``max_severity`` (its own draw per picture and ``view``)."""

    def __init__(self, ds: Any, kinds: Sequence[str], max_severity: int, *, view: int = 1, rows: Any = None,
                 seed: int = 0) -> None:
        for k in kinds:
            _check(k, 0, IMAGE_LEVELS)
        super().__init__(ds, kinds[0], 0, rows=rows, seed=seed)
        self.kinds, self.max_severity, self.view = list(kinds), int(max_severity), int(view)
        _augment_draw(seed, view, 0, self.kinds, self.max_severity)  # checks the settings now
        self.name = f"{str(ds.name).split('/')[0]}/augmented{view}"

    def load_image(self, i: int) -> Image.Image:
        row = int(self.rows[i])
        kind, sev, s = _augment_draw(self.seed, self.view, row, self.kinds, self.max_severity)
        return corrupt_image(self.base.load_image(i), kind, sev, seed=s, index=row)

    def fingerprint(self) -> str:
        h = hashlib.sha256(super().fingerprint().encode())
        h.update(json.dumps(["augmented", self.kinds, self.max_severity, self.view,
                             [IMAGE_LEVELS[k] for k in self.kinds]]).encode())
        return h.hexdigest()


# ----------------------------------------------------------------------------- curves
def _text_vectors(p: Any, texts: list[str]) -> Any:
    """A pipeline's joint-space vectors of texts, the text encoder's features cached on disk (so one set of
    corrupted captions is encoded once per text encoder, however many pipelines read it)."""
    if hasattr(p, "text") and hasattr(p.text, "transform") and hasattr(p, "head"):
        from .pipeline import _np

        return _np(p.head.embed_text(p.text.transform(texts, cache=True)))
    return p.encode_text(texts)

def severity_curve(p: Any, ds: Any, side: str, kind: str, *, split: str = "test", seed: int = 0,
                   severities: Sequence[int] = SEVERITIES, synonyms: Any = None,
                   progress: bool = False) -> dict[str, Any]:
    """Text→image R@10 of pipeline ``p`` on ``split`` at each severity of one corruption.

    ``side="text"``: the split's captions corrupted, its pictures clean; ``side="image"``: the pictures
    corrupted, the captions clean. Returns ``{"kind", "side", "severities", "r10", "ranks"}`` (ranks per
    severity, for paired intervals).
    """
    from .evaluation import ranks
    from .pipelines import split_rows

    if side not in ("text", "image"):
        raise CrosslabError(f"side must be 'text' or 'image', got {side!r}.")
    caps, imgs, c2i = split_rows(ds, split)
    texts = [ds.captions[int(c)] for c in caps]
    if side == "text" and kind == "synonym" and synonyms is None:
        synonyms = glove_synonyms()
    out: dict[str, Any] = {"kind": kind, "side": side, "split": split, "severities": list(severities),
                           "r10": [], "ranks": []}
    V = p.encode_image(ds, rows=imgs) if side == "text" else None
    T = p.encode_text(texts) if side == "image" else None
    for s in severities:
        if side == "text":
            S = p.score(_text_vectors(p, corrupt_texts(texts, kind, s, seed=seed, synonyms=synonyms)), V)
        else:
            view = CorruptedImages(ds, kind, s, rows=imgs, seed=seed) if s else None
            S = p.score(T, p.encode_image(ds, rows=imgs) if view is None else p.encode_image(view, progress=progress))
        r = ranks(np.asarray(S), c2i)[0]
        out["ranks"].append(r)
        out["r10"].append(100.0 * float((r <= 10).mean()))
    return out


def mean_relative_drop(curve: dict[str, Any]) -> float:
    """Mean over severities 1..5 of (R@10 at 0 - R@10 at s) / R@10 at 0, in percent (ImageNet-C's summary)."""
    sev, r10 = list(curve["severities"]), list(curve["r10"])
    if 0 not in sev or r10[sev.index(0)] <= 0:
        raise CrosslabError("a relative drop needs the clean score (severity 0) and it must be above 0.")
    clean = r10[sev.index(0)]
    drops = [(clean - r) / clean for s, r in zip(sev, r10, strict=True) if s > 0]
    return 100.0 * float(np.mean(drops)) if drops else 0.0
