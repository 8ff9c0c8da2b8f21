"""Evaluation: the Flickr30k / COCO protocol with several captions per image.

Text->image ranks each caption's image among all images; image->text takes, per
image, the best rank among its captions. R@1/5/10 (in percent), median and mean
rank, and rSum (sum of the six R@K). :func:`evaluate` takes a score matrix, a head
with features, or a :class:`~crosslab.pipeline.Pipeline` with a dataset split.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from .errors import ShapeError
from .similarity import as_tensor, scores

Array = np.ndarray | torch.Tensor


def _caption_to_image(c2i: Any) -> np.ndarray:
    c2i = getattr(c2i, "caption_to_image", c2i)  # accept a CaptionedImages
    if c2i is None:
        raise ShapeError("evaluate needs caption_to_image (an array, or the CaptionedImages split).")
    arr = np.asarray(c2i)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ShapeError(f"caption_to_image must be a 1-D integer array, got shape {arr.shape} {arr.dtype}.")
    return arr.astype(np.int64)


def ranks(scores_: Array, caption_to_image: Any) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of the correct answers in both directions, from a ``(C, N)`` caption x image score matrix.

    Higher score = better. Ties are broken like :func:`crosslab.search.topk` (lower index first).

    Returns:
        ``t2i`` ``(C,)``: rank of each caption's image among the N images;
        ``i2t`` ``(N',)``: for each image that has captions, the best rank among
        its captions when all C captions are ranked for it (images without
        captions are left out).
    """
    S = as_tensor(scores_, "scores", check_finite=False).cpu()
    if bool(torch.isnan(S).any()):
        raise ShapeError("scores contain NaN; a NaN cannot be ranked. Check the embeddings.")
    c2i = _caption_to_image(caption_to_image)
    C, N = S.shape
    if len(c2i) != C:
        raise ShapeError(f"scores have {C} rows (captions) but caption_to_image has {len(c2i)} entries.")
    if C == 0 or N == 0:
        raise ShapeError(f"cannot evaluate an empty score matrix of shape {(C, N)}.")
    if c2i.min() < 0 or c2i.max() >= N:
        raise ShapeError(f"caption_to_image points outside 0..{N - 1} (the score matrix has {N} columns).")
    t = torch.from_numpy(c2i)
    cols = torch.arange(N)
    gt = S[torch.arange(C), t][:, None]
    t2i = 1 + (S > gt).sum(1) + ((S == gt) & (cols[None, :] < t[:, None])).sum(1)
    # Image -> text: an image's best rank is that of its best-scoring caption
    # (lowest caption index among equals), so one pass over each column suffices.
    own = S[torch.arange(C), t]
    best = torch.full((N,), -math.inf, dtype=S.dtype)
    best.scatter_reduce_(0, t, own, reduce="amax")
    has = torch.zeros(N, dtype=torch.bool)
    has[t] = True
    is_best = own == best[t]
    cap_idx = torch.arange(C)
    first = torch.full((N,), C, dtype=torch.int64)
    first.scatter_reduce_(0, t[is_best], cap_idx[is_best], reduce="amin")
    imgs = torch.nonzero(has).flatten()
    i2t = torch.empty(len(imgs), dtype=torch.int64)
    St = S.T
    for s in range(0, len(imgs), 1024):
        ii = imgs[s : s + 1024]
        col = St[ii]  # (n, C)
        b = best[ii][:, None]
        i2t[s : s + 1024] = 1 + (col > b).sum(1) + ((col == b) & (cap_idx[None, :] < first[ii][:, None])).sum(1)
    return t2i.numpy().astype(np.int64), i2t.numpy()


def rank_metrics(r: np.ndarray, ks: Sequence[int] = (1, 5, 10), prefix: str = "") -> dict[str, float]:
    """R@K (percent), median and mean rank of 1-based ranks ``r``."""
    out = {f"{prefix}r{k}": float(100.0 * np.mean(r <= k)) for k in ks}
    out[f"{prefix}medr"] = float(np.median(r))
    out[f"{prefix}meanr"] = float(np.mean(r))
    return out


def both_directions(t2i: np.ndarray, i2t: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """:func:`rank_metrics` of both directions (``t2i_``, ``i2t_`` keys) plus ``rsum``, the sum of the R@K."""
    out = rank_metrics(t2i, ks, "t2i_") | rank_metrics(i2t, ks, "i2t_")
    out["rsum"] = float(sum(out[f"{d}_r{k}"] for d in ("t2i", "i2t") for k in ks))
    return out


def evaluate(
    source: Any,
    caption_to_image: Any,
    *,
    text: Array | None = None,
    image: Array | None = None,
    metric: str | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Retrieval metrics in both directions (Flickr30k / COCO protocol).

    Two ways to call it:

    * ``evaluate(S, caption_to_image)`` with ``S`` a ``(C, N)`` score matrix
      (captions x images, higher = better);
    * ``evaluate(model, caption_to_image, text=X, image=Y, metric="cosine")`` with
      a model that has ``embed_text`` / ``embed_image`` (trained models and the
      baselines), ``X`` ``(C, n)`` caption features and ``Y`` ``(N, m)`` image features.
      ``metric`` defaults to the model's own ``metric`` attribute, else cosine.

    ``caption_to_image`` is a ``(C,)`` integer array or a :class:`CaptionedImages`.

    Returns:
        dict with ``t2i_r1 t2i_r5 t2i_r10 t2i_medr t2i_meanr`` and the same for
        ``i2t_``, R@K in percent, plus ``rsum`` (sum of the six R@K).
    """
    if hasattr(source, "embed_text") and hasattr(source, "embed_image"):
        if text is None or image is None:
            raise ShapeError("evaluate(model, ...) needs text=(C, n) and image=(N, m) features.")
        metric = metric or getattr(source, "metric", "cosine")
        S = scores(source.embed_text(text), source.embed_image(image), metric)
    else:
        S = source
    t2i, i2t = ranks(S, caption_to_image)
    return both_directions(t2i, i2t, ks)


# ----------------------------------------------------------------------------- uncertainty
def bootstrap_ci(r: np.ndarray, k: int = 10, *, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0, groups: Any = None) -> tuple[float, float]:
    """Percentile bootstrap interval of R@``k`` (in %) over the queries whose ranks are ``r``.

    The queries (captions for text->image, images for image->text) are drawn with
    replacement ``n_boot`` times (seeded); the interval holds the middle ``level`` of the
    resampled R@K. It says how much R@K would move on another draw of queries like these.
    ``groups`` (one label per query, e.g. the picture a caption describes) draws whole groups
    instead -- a *cluster* bootstrap: two captions of one picture are not two independent
    draws, and treating them as such makes the interval too narrow.
    """
    hit = _hits(r, k)
    boot = 100.0 * _draw(hit, None, n_boot, seed, groups)
    a = (1 - level) / 2
    return float(np.quantile(boot, a)), float(np.quantile(boot, 1 - a))


def paired_bootstrap(r_a: np.ndarray, r_b: np.ndarray, k: int = 10, *, n_boot: int = 1000,
                     level: float = 0.95, seed: int = 0, groups: Any = None) -> dict[str, float]:
    """The difference R@``k``(a) - R@``k``(b) in points, for two models ranked on the same queries.

    The same resampled queries score both models (paired), so what the two have in
    common cancels and the interval is narrower than two separate ones. ``real`` is True
    when the interval excludes 0: the difference is unlikely to be noise of the query draw.
    ``groups`` as for :func:`bootstrap_ci` (whole groups are drawn, the same for both models).
    """
    a, b = _hits(r_a, k), _hits(r_b, k)
    if a.shape != b.shape:
        raise ShapeError(f"paired ranks must cover the same queries: {a.shape} vs {b.shape}.")
    boot = 100.0 * _draw(a, b, n_boot, seed, groups)
    q = (1 - level) / 2
    low, high = float(np.quantile(boot, q)), float(np.quantile(boot, 1 - q))
    return {"diff": 100.0 * float(a.mean() - b.mean()), "low": low, "high": high, "real": bool(low > 0 or high < 0)}


def _draw(a: np.ndarray, b: np.ndarray | None, n_boot: int, seed: int, groups: Any) -> np.ndarray:
    """``n_boot`` resampled means of ``a`` (minus ``b``'s on the same draw): queries, or whole groups."""
    rng = np.random.default_rng(seed)
    d = a if b is None else a - b
    if groups is None:
        idx = rng.integers(0, len(d), size=(n_boot, len(d)))
        return d[idx].mean(1)
    labels = np.asarray(groups)
    if labels.shape != d.shape:
        raise ShapeError(f"groups must give one label per query: {labels.shape} for {d.shape} ranks.")
    _, g = np.unique(labels, return_inverse=True)  # groups numbered by sorted label
    order = np.argsort(np.unique(g, return_index=True)[1], kind="stable")  # ... renumbered by first appearance
    g = np.argsort(order)[g]
    sums, sizes = np.bincount(g, weights=d), np.bincount(g).astype(np.float64)
    idx = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    return sums[idx].sum(1) / sizes[idx].sum(1)


def _hits(r: np.ndarray, k: int) -> np.ndarray:
    r = np.asarray(r)
    if r.ndim != 1 or len(r) == 0:
        raise ShapeError(f"ranks must be a non-empty 1-D array, got shape {r.shape}.")
    return (r <= k).astype(np.float64)


ROW_KEYS = (
    "name", "kind", "t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr",
    "i2t_r1", "i2t_r5", "i2t_r10", "i2t_medr", "rsum",
)


def metrics_row(name: str, kind: str, metrics: dict[str, float], *, digits: int = 2) -> dict[str, Any]:
    """One table row (the keys of ``python -m crosslab evaluate --json``) from :func:`evaluate`'s dict."""
    row: dict[str, Any] = {"name": name, "kind": kind}
    for key in ROW_KEYS[2:]:
        row[key] = round(float(metrics[key]), digits)
    return row


def results_table(rows: Iterable[dict[str, Any]]):
    """A pandas DataFrame of :func:`metrics_row` rows, indexed by name."""
    import pandas as pd

    return pd.DataFrame(list(rows), columns=list(ROW_KEYS)).set_index("name")


def pipeline_ranks(p: Any, ds: Any, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The ``(t2i, i2t)`` ranks (see :func:`ranks`) of a pipeline on one split of ``ds``.

    Text->image ranks come from scores z-scored (for a fusion) over the images of each
    caption (``axis=1``), image->text from scores over the captions of each image (``axis=0``);
    for one head the two are the same matrix.
    """
    from .pipelines import split_rows

    caps, imgs, c2i = split_rows(ds, split)
    T, V = p.encode_text(ds, rows=caps), p.encode_image(ds, rows=imgs)
    S = p.score(T, V, axis=1)
    t2i, i2t = ranks(S, c2i)
    if getattr(p, "w", None) is not None:  # a fusion z-scores per axis: image->text needs its own matrix
        _, i2t = ranks(p.score(T, V, axis=0), c2i)
    return t2i, i2t


def evaluate_pipeline(p: Any, ds: Any, split: str = "test", ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """:func:`evaluate`'s metrics for a pipeline on one split of ``ds``, both directions."""
    t2i, i2t = pipeline_ranks(p, ds, split)
    return both_directions(t2i, i2t, ks)


def query_ranks(p: Any, ds: Any, queries: Any, split: str = "test") -> np.ndarray:
    """``(Q,)`` rank of each query's target among ``split``'s images (text->image only).

    ``queries`` has ``texts`` and ``targets`` (indices into the split's images), like
    :class:`crosslab.data.people.QuerySet`.
    """
    from .errors import CrosslabError
    from .pipelines import split_rows

    _, imgs, _ = split_rows(ds, split)
    targets = np.asarray(queries.targets, dtype=np.int64)
    if len(targets) == 0 or targets.min() < 0 or targets.max() >= len(imgs):
        raise CrosslabError(f"query targets must index the {len(imgs)} {split} images of {ds.name}.")
    S = p.score(p.encode_text(list(queries.texts)), p.encode_image(ds, rows=imgs), axis=1)
    return ranks(S, targets)[0]


def twin_outcomes(p: Any, ds: Any, split: str = "test") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Does ``p`` prefer a picture's own caption to its twin's? For ``make_scenes(hard_pairs=True)``.

    Pictures ``2k`` and ``2k + 1`` have captions with the same words, caption for caption, but
    swapped colours (``binding``) or places (``relation``). For every picture of ``split`` and
    each of its captions: 1 when ``p`` scores the picture's own caption above its twin's, 0 when
    below, 0.5 on a tie (a bag of words ties every time: it cannot tell the two apart).
    Returns ``(outcomes, pair ids, kinds)``, one entry per (picture, caption).
    """
    from .pipelines import split_rows

    meta = getattr(ds, "meta", None)
    if not meta or "pair" not in meta[0]:
        raise ShapeError(f"{getattr(ds, 'name', 'this dataset')} has no twin captions; "
                         "make one with crosslab.data.make_scenes(n, hard_pairs=True).")
    caps, imgs, c2i = split_rows(ds, split)
    S = p.score(p.encode_text(ds, rows=caps), p.encode_image(ds, rows=imgs))
    local = {int(i): j for j, i in enumerate(imgs)}
    row_of = {int(c): j for j, c in enumerate(caps)}
    out, pair, kind = [], [], []
    for i in imgs:
        own, twin = (np.flatnonzero(ds.caption_to_image == j) for j in (int(i), int(i) ^ 1))
        for a, b in zip(own, twin, strict=True):
            sa, sb = S[row_of[int(a)], local[int(i)]], S[row_of[int(b)], local[int(i)]]
            tie = abs(sa - sb) <= 1e-6 * max(1.0, abs(sa))
            out.append(0.5 if tie else float(sa > sb))
            pair.append(meta[int(i)]["pair"])
            kind.append(meta[int(i)]["pair_kind"])
    return np.array(out), np.array(pair), np.array(kind)


def twin_accuracy(p: Any, ds: Any, split: str = "test", *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """:func:`twin_outcomes` as shares in % per kind (``binding``, ``relation``, ``all``), each with a
    95 % cluster-bootstrap interval that draws whole pairs, and the numbers of comparisons and pairs."""
    out, pair, kind = twin_outcomes(p, ds, split)
    res: dict[str, Any] = {}
    for k in ("binding", "relation", "all"):
        m = np.ones(len(out), bool) if k == "all" else kind == k
        if not m.any():
            continue
        boot = 100.0 * _draw(out[m], None, n_boot, seed, pair[m])
        res[k] = {"share": 100.0 * float(out[m].mean()), "low": float(np.quantile(boot, 0.025)),
                  "high": float(np.quantile(boot, 0.975)), "n": int(m.sum()), "pairs": len(np.unique(pair[m]))}
    return res


def _norm_caption(c: str) -> str:
    return " ".join(str(c).lower().split())


def unseen_captions(ds: Any, split: str = "test", seen: str = "train") -> np.ndarray:
    """``(C,)`` bool over ``split``'s captions (the order of :func:`pipeline_ranks`): True where
    the caption never occurs, word for word (case and spacing ignored), among ``seen``'s.

    A caption the model met in training ("Sweden", "Arrow up red") can be found by memory rather
    than by generalising; R@K on the unseen ones alone says how much that matters.
    """
    from .pipelines import split_rows

    caps, _, _ = split_rows(ds, split)
    seen_caps, _, _ = split_rows(ds, seen)
    known = {_norm_caption(ds.captions[c]) for c in seen_caps}
    return np.array([_norm_caption(ds.captions[c]) not in known for c in caps], dtype=bool)


def _ci(r: np.ndarray) -> list[float]:
    """The 95 % bootstrap interval of R@10 for a table row, rounded like the row."""
    return [round(v, 2) for v in bootstrap_ci(r, 10)]


def _choice(p: Any) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.choice.items() if k in ("reg", "T", "temperature", "w"))


def run(names: Sequence[str], ds: Any = None, *, split: str = "test", queries: Sequence[str] = ("captions",),
        people: Any = None, progress: bool = True, device: Any = None, cache: bool = True) -> list[dict[str, Any]]:
    """Create each named pipeline (fitted on train, chosen on val) and score ``split`` once: table rows.

    Rows have :data:`ROW_KEYS` plus ``t2i_r10_ci`` / ``i2t_r10_ci`` (95 % bootstrap intervals,
    ``[low, high]``, :func:`bootstrap_ci`), ``queries``, ``n_queries``, ``choice`` (what val chose),
    for own captions ``t2i_unseen_r10`` / ``t2i_unseen_r10_ci`` / ``n_unseen`` (text->image on
    the captions that never occur among the train captions, :func:`unseen_captions`),
    ``seconds`` (creating and scoring; a cached pipeline takes a second) and ``cached``.

    * ``"captions"``: the split's own captions, both directions.
    * ``"people"``: a query set (``people``, default the people-style set of the clip art,
      ``crosslab.data.load_people_queries``), text->image only, in three groups of rows:
      ``people`` (all), ``people:short`` and ``people:description``. The i2t keys and
      ``rsum`` are None: a query set covers only some images.
    """
    import time

    from .errors import CrosslabError
    from .pipelines import create_pipeline

    bad = [q for q in queries if q not in ("captions", "people")]
    if bad or not queries:
        raise CrosslabError(f"queries must be 'captions' and/or 'people', got {list(queries)}.")
    if ds is None:
        from .data import load_clipart

        ds = load_clipart()
    if "people" in queries and people is None:
        from .data.people import load_people_queries

        people = load_people_queries(ds, split=split)
    rows: list[dict[str, Any]] = []
    per_query: dict[str, np.ndarray] = {}
    made = {}
    for name in names:
        t0 = time.perf_counter()
        p = made[name] = create_pipeline(name, ds, device=device, cache=cache, progress=progress)
        extra = {"choice": _choice(p), "cached": bool(getattr(p.cache_info_, "hit", False))}
        if "captions" in queries:
            t2i, i2t = pipeline_ranks(p, ds, split)
            row = metrics_row(name, p.kind, both_directions(t2i, i2t)) | {"t2i_r10_ci": _ci(t2i), "i2t_r10_ci": _ci(i2t)}
            if split != "train":  # text->image on the captions that never occur among train's
                new = unseen_captions(ds, split)
                row |= {"t2i_unseen_r10": round(float(rank_metrics(t2i[new], (10,))["r10"]), 2),
                        "t2i_unseen_r10_ci": _ci(t2i[new]), "n_unseen": int(new.sum())}
            rows.append(row | {"queries": "captions", "n_queries": len(t2i)} | extra)
        if "people" in queries:
            per_query[name] = query_ranks(p, ds, people, split)
        extra["seconds"] = round(time.perf_counter() - t0, 2)
        for r in rows:
            if r["name"] == name:
                r |= extra
    if "people" in queries:
        kinds = np.asarray(people.kinds)
        groups = [("people", np.ones(len(kinds), bool))] + [
            (f"people:{k}", kinds == k) for k in ("short", "description") if np.any(kinds == k)]
        for label, sel in groups:
            for name in names:
                m = rank_metrics(per_query[name][sel], (1, 5, 10), "t2i_")
                row: dict[str, Any] = {k: None for k in ROW_KEYS} | {"name": name, "kind": made[name].kind}
                row |= {k: round(float(m[k]), 2) for k in ("t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr")}
                row |= {"t2i_r10_ci": _ci(per_query[name][sel]), "i2t_r10_ci": None}
                rows.append(row | {"queries": label, "n_queries": int(sel.sum()), "choice": _choice(made[name]),
                                   "cached": bool(getattr(made[name].cache_info_, "hit", False))})
    return rows


__all__ = ["ranks", "rank_metrics", "both_directions", "evaluate", "evaluate_pipeline", "pipeline_ranks", "query_ranks", "run",
           "unseen_captions",
           "bootstrap_ci", "paired_bootstrap", "metrics_row", "results_table", "ROW_KEYS"]
