"""Why did this picture match this query? Word contributions and region maps, for any pipeline.

    e = cl.explain(p, "a red apple", 12)      # the picture: an index of p's gallery, a path, PIL or array
    e.words, e.contributions, e.rest          # contributions.sum() + rest == e.score
    e.method                                  # "attention" | "exact" | "leave-one-out"
    e.occlusion                               # (g, g): how much the score drops when a cell is greyed out
    e.attention                               # (m, h, w): each word's attention over the regions, or None
    cl.plots.show_explanation(e)

Words, from the most exact account to the most general:

* **attention** heads (:mod:`crosslab.attention`): the score is a mean of one relevance per
  word (``t2i``; for ``i2t`` a mean over regions of attention-weighted word similarities), so
  each word's share is exact; the map is the word's attention over the regions (``t2i``) or how
  much each region attends to the word (``i2t``, which need not sum to 1).
* **exact**, for a pooled text encoder that is a sum of one term per word
  (``WordVectorEncoder.word_terms``: mean, TF-IDF and SIF pooling are all linear) under a head
  that is affine in it (CCA, linear towers: ``text_is_affine``) with the cosine or dot metric:
  ``t = sum_w A x_w + b``, so ``score = sum_w (A x_w) . v / (|t| |v|) + b . v / (|t| |v|)``; the
  last term (``rest``) belongs to no word.
* **leave-one-out** otherwise (MLPs, MiniLM, ConSE, fusions): a word's contribution is the
  score minus the score of the query without it (which need not sum to the score; ``rest`` is
  the difference).

Regions, for every model: **occlusion** (Zeiler and Fergus 2014) greys out each cell of a
``g x g`` grid over the picture in turn and records the drop in the score; a cell the model
does not use changes nothing. A fusion's score is a z-score over the gallery, so a picture's
score is z-scored with the gallery's mean and spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ModelError, QueryError

__all__ = ["Explanation", "explain", "word_contributions", "occlusion_map", "GREY"]

#: The fill of an occluded cell (mid grey: no colour, no edge inside the cell).
GREY = 128


@dataclass
class Explanation:
    """One query and one picture, taken apart (see the module docstring)."""

    query: str
    picture: np.ndarray  # (H, W, 3) uint8, as the model saw it before resizing
    score: float
    words: list[str]
    contributions: np.ndarray  # (m,), one per word
    rest: float  # the score's part that no word holds
    method: str  # "attention" | "exact" | "leave-one-out"
    occlusion: np.ndarray | None = None  # (g, g) score drops
    attention: np.ndarray | None = None  # (m, h, w) attention over the regions, per word

    def by_word(self) -> dict[str, float]:
        """The shares summed per distinct word, in order of first appearance ("of" twice counts once)."""
        out: dict[str, float] = {}
        for w, c in zip(self.words, self.contributions, strict=True):
            out[w] = out.get(w, 0.0) + float(c)
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{w} {c:+.3f}" for w, c in zip(self.words, self.contributions, strict=True))
        return f"Explanation({self.query!r}: score {self.score:.3f} = {parts}, rest {self.rest:+.3f}; {self.method})"


def _picture(p: Any, picture: Any) -> np.ndarray:
    """An RGB uint8 array of ``picture``: an index of ``p``'s gallery, a path, bytes, PIL or an array."""
    from .data import load_image

    if isinstance(picture, int | np.integer):
        g = p.gallery
        if g is None:
            raise ModelError(f"pipeline {p.name!r} has no gallery, so picture {picture} names nothing; "
                             "pass the picture itself (a path or an array).")
        if not 0 <= int(picture) < len(g):
            raise ModelError(f"picture {picture} is not in the gallery of {len(g)} pictures.")
        picture = g.load_image(int(picture))
    if isinstance(picture, np.ndarray) and picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3:
        return picture
    if hasattr(picture, "convert"):  # a PIL image
        return np.asarray(picture.convert("RGB"))
    return np.asarray(load_image(picture).convert("RGB"))


def _scorer(p: Any) -> Any:
    """``f(texts, pictures) -> (len(texts), len(pictures))`` scores of ``p``. A fusion z-scores each
    part's scores of the pictures with the mean and spread of that part's scores over the gallery,
    so a gallery picture gets exactly the score it has in a search."""
    if not hasattr(p, "a"):
        return lambda texts, pics: p.score(p.encode_text(texts), p.encode_image(list(pics)))
    g = p._gallery(None)

    def fused(texts: list[str], pics: list[np.ndarray]) -> np.ndarray:
        out = 0.0
        for part, weight in ((p.a, 1 - p.w), (p.b, p.w)):
            T = part.encode_text(texts)
            Sg, Sp = part.score(T, part.encode_image(g)), part.score(T, part.encode_image(list(pics)))
            mu, sd = Sg.mean(1, keepdims=True), Sg.std(1, keepdims=True)
            out = out + weight * np.divide(Sp - mu, sd, out=np.zeros_like(Sp), where=sd > 0)
        return np.asarray(out)

    return fused


def word_contributions(p: Any, query: str, picture: Any) -> tuple[list[str], np.ndarray, float, str, Any]:
    """``(words, contributions, rest, method, attention maps or None)`` of ``query`` for ``picture``."""
    pic = _picture(p, picture)
    head = getattr(p, "head", None)
    if hasattr(head, "word_attention"):
        T, V = p.encode_text(query)[0], p.encode_image([pic])[0]
        contrib, maps = head.word_attention(T, V)
        return p.text.words(query), contrib, 0.0, "attention", maps
    metric = getattr(head, "metric", None)
    if getattr(head, "text_is_affine", False) and hasattr(p.text, "word_terms") and metric in ("cosine", "dot"):
        words, terms = p.text.word_terms(query)
        A = np.asarray(head.affine_text(np.vstack([terms.sum(0), terms, np.zeros(terms.shape[1])])), np.float64)
        t, parts, bias = A[0], A[1:-1] - A[-1], A[-1]
        v = np.asarray(head.embed_image(p.image_features([pic])), np.float64)[0]
        norm = np.linalg.norm(t) * np.linalg.norm(v) if metric == "cosine" else 1.0
        norm = norm if norm > 0 else 1.0
        return words, parts @ v / norm, float(bias @ v / norm), "exact", None
    from .text import tokenize

    words = tokenize(query)
    if not words:
        raise QueryError("type a few words to explain, e.g. 'a red car'.")
    score = _scorer(p)
    full = float(score([query], [pic])[0, 0])
    without = []
    for i in range(len(words)):
        rest_q = " ".join(words[:i] + words[i + 1:])
        try:
            without.append(float(score([rest_q], [pic])[0, 0]) if rest_q else np.nan)
        except QueryError:  # nothing known is left without this word: it carries the whole score
            without.append(np.nan)
    contrib = np.array([full - (0.0 if np.isnan(w) else w) for w in without])
    return words, contrib, full - float(contrib.sum()), "leave-one-out", None


def occlusion_map(p: Any, query: str, picture: Any, grid: int = 5) -> np.ndarray:
    """``(grid, grid)`` drops of ``p``'s score of ``query`` when each cell of the picture is greyed out."""
    if int(grid) < 1:
        raise ModelError(f"grid must be >= 1, got {grid!r}.")
    pic = _picture(p, picture)
    H, W = pic.shape[:2]
    ys, xs = np.linspace(0, H, grid + 1).round().astype(int), np.linspace(0, W, grid + 1).round().astype(int)
    masked = []
    for i in range(grid):
        for j in range(grid):
            m = pic.copy()
            m[ys[i]:ys[i + 1], xs[j]:xs[j + 1]] = GREY
            masked.append(m)
    S = _scorer(p)([query], [pic, *masked])[0]
    return (S[0] - S[1:]).reshape(grid, grid)


def explain(p: Any, query: str, picture: Any, *, grid: int = 5, occlusion: bool = True) -> Explanation:
    """Take apart ``p``'s score of ``query`` for ``picture`` (see the module docstring).

    ``picture``: an index of ``p``'s gallery, a path, bytes, a PIL image or an RGB array.
    ``occlusion=False`` skips the ``grid * grid`` extra forward passes of the region map.
    """
    if not isinstance(query, str) or not query.strip():
        raise QueryError("type a few words to explain, e.g. 'a red car'.")
    pic = _picture(p, picture)
    words, contrib, rest, method, maps = word_contributions(p, query, pic)
    score = float(_scorer(p)([query], [pic])[0, 0])
    attention = None
    if maps is not None:
        side = int(round(np.sqrt(maps.shape[1])))
        attention = maps.reshape(len(maps), side, side) if side * side == maps.shape[1] else None
    return Explanation(query, pic, score, list(words), np.asarray(contrib, np.float64), float(rest), method,
                       occlusion_map(p, query, pic, grid) if occlusion else None, attention)
