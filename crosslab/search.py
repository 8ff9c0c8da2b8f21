"""Search: the k best items for each query, exactly, from a few items to millions.

* :func:`topk` — the k best entries of each row of a score matrix, with a
  deterministic tie-break: among equal scores the lower index wins.
* :class:`Index` — add items once, search many queries; streams over query
  batches *and* item chunks, so a million items never need an ``(n_queries, M)``
  matrix. Scores come from cache-sized float32 GEMM tiles; a group of 128 items is
  only looked at when its maximum can beat a query's current k-th score, which
  after the first chunk almost no group can. Optional exact FAISS backend
  (``backend="faiss"``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .errors import QueryError, ShapeError
from .similarity import GEMM_FORMS, HIGHER_IS_BETTER, as_tensor, check_metric, pairwise, unit_rows

Array = np.ndarray | torch.Tensor

# Items per score tile on the CPU. A (1024 queries x 1024 items) float32 tile (4 MiB) stays
# in cache between the GEMM that writes it and the max that reads it, and this GEMM shape
# runs near the machine's peak; wider tiles are slower (benchmarks/RESULTS.md, issue 8).
CPU_TILE = 1024
GROUP = 128  # items per group whose maximum decides whether the group is looked at
LIST_PER_QUERY = 32  # candidates listed per query and slice before falling back to top-k per group
_NO_ID = torch.iinfo(torch.int64).max  # id of an empty slot; sorts after every real id


# ----------------------------------------------------------------------------- top-k
def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ShapeError(f"k must be a positive integer, got {k!r}.")
    return int(k)


def _lexsort_rows(vals: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by value descending, then id ascending (two stable sorts)."""
    ids, o = torch.sort(ids, dim=1, stable=True)
    vals = vals.gather(1, o)
    vals, o = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, ids.gather(1, o)


def _topk_desc(S: torch.Tensor, k: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each row of ``S`` (n, m), larger first, lower column wins ties; ids + offset."""
    n, m = S.shape
    if k >= m:
        vals, idx = torch.sort(S, dim=1, descending=True, stable=True)
        return vals, idx + offset
    # torch.topk is fast but picks arbitrarily among ties at the k-th place. Ask for
    # k + 1: where the (k+1)-th value differs from the k-th no tie crosses the cut,
    # and only the rare rows where it does are redone with a stable sort.
    vals, idx = torch.topk(S, k + 1, dim=1, largest=True, sorted=True)
    tied = vals[:, k - 1] == vals[:, k]
    vals, idx = vals[:, :k], idx[:, :k]
    if bool(tied.any()):
        rows = torch.nonzero(tied).flatten()
        v, i = torch.sort(S[rows], dim=1, descending=True, stable=True)
        vals[rows], idx[rows] = v[:, :k], i[:, :k]
    vals, idx = _lexsort_rows(vals, idx)
    return vals, idx + offset


def topk(scores_: Array, k: int, *, largest: bool = True) -> tuple[Array, Array]:
    """The ``k`` best entries of each row of an ``(N, M)`` score matrix.

    Ties are broken deterministically: among equal scores the lower column index
    comes first. ``k > M`` is clamped to ``M`` (the result has ``min(k, M)`` columns).
    ``largest=False`` returns the smallest entries (for distances).

    Returns:
        ``(values, indices)``, each ``(N, min(k, M))``, best first; NumPy in -> NumPy out.
    """
    k = _check_k(k)
    S = as_tensor(scores_, "scores", check_finite=False)
    if bool(torch.isnan(S).any()):
        raise ShapeError("scores contain NaN; a NaN cannot be ranked. Check the inputs of the scores.")
    S = S if largest else -S
    m = S.shape[1]
    if m == 0 or S.shape[0] == 0:
        vals = S[:, :0]
        idx = torch.zeros((S.shape[0], 0), dtype=torch.int64, device=S.device)
    else:
        vals, idx = _topk_desc(S, min(k, m))
    vals = vals if largest else -vals
    if isinstance(scores_, np.ndarray):
        return vals.cpu().numpy(), idx.cpu().numpy()
    return vals, idx


def _merge_candidates(
    best_v: torch.Tensor, best_i: torch.Tensor, qid: torch.Tensor, vals: torch.Tensor, ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge loose candidates ``(query, score, id)`` into each query's sorted top-k list.

    Candidates must come later in the item order than everything in the lists, and among
    one query's candidates with equal scores the lower id must come first (true of
    ``nonzero``'s order, and of per-group top-k lists taken group by group); then two
    stable sorts give score descending with the lower id first among equal scores.
    """
    n, k = best_v.shape
    q = torch.cat([torch.arange(n, device=qid.device).repeat_interleave(k), qid])
    v = torch.cat([best_v.flatten(), vals])
    i = torch.cat([best_i.flatten(), ids])
    o = torch.sort(v, descending=True, stable=True).indices
    o = o[torch.sort(q[o], stable=True).indices]
    q, v, i = q[o], v[o], i[o]
    counts = torch.bincount(q, minlength=n)
    rank = torch.arange(len(q), device=q.device) - (torch.cumsum(counts, 0) - counts)[q]
    keep = rank < k  # every query has at least its k listed entries
    pos = q[keep] * k + rank[keep]
    out_v, out_i = torch.empty_like(best_v), torch.empty_like(best_i)
    out_v.view(-1)[pos], out_i.view(-1)[pos] = v[keep], i[keep]
    return out_v, out_i


# ----------------------------------------------------------------------------- Index
class Index:
    """Exact nearest-neighbour search over a fixed set of items, for any metric of :mod:`similarity`.

    ``Index(metric).add(items)`` stores ``(M, d)`` items prepared once in the metric's
    matrix-product form, :data:`crosslab.similarity.GEMM_FORMS` (normalised for cosine,
    log-softmaxed for KL, with a ``-|b|^2/2`` column term for Euclidean): the form
    :func:`~crosslab.similarity.pairwise` computes with, so both rank alike. JS items
    are kept as they are. ``search(queries, k)`` returns the ``k`` best items per query
    as ``(scores, ids)``, each ``(n, min(k, M))``, best first, where ``scores`` are the
    metric's own values (distances ascending for ``euclidean``, ``kl``, ``js``;
    similarities descending otherwise) and ties go to the lower id. ``k > M`` is
    clamped to ``M``.

    Memory is bounded by :meth:`memory_bytes` whatever ``M`` is: a score block of
    ``batch_size x item_chunk`` floats, filled by ``CPU_TILE``-wide GEMM tiles (on the
    CPU; one GEMM per chunk on a GPU), plus a small scratch. From each block only the
    groups of ``GROUP`` items whose maximum beats a query's k-th best so far are read
    again, and their winners are merged into the query's top-k list: selection costs
    little beside the GEMM (issue 8). ``backend="faiss"`` (exact ``IndexFlatIP`` / ``IndexFlatL2``; cosine,
    dot and Euclidean only; CPU) needs ``faiss-cpu``; its top-k sets equal the torch
    backend's up to ties, whose order follows FAISS.
    """

    def __init__(
        self,
        metric: str = "cosine",
        *,
        backend: str = "torch",
        temperature: float = 1.0,
        device: str | torch.device | None = None,
        item_chunk: int = 16384,
    ) -> None:
        self.metric = check_metric(metric)
        if backend not in ("torch", "faiss"):
            raise ShapeError(f"unknown backend {backend!r}; use 'torch' or 'faiss'.")
        if backend == "faiss" and metric not in ("cosine", "dot", "euclidean", "neg_euclidean"):
            raise ShapeError(f"the FAISS backend supports cosine, dot and euclidean, not {metric!r}.")
        if item_chunk < 1:
            raise ShapeError(f"item_chunk must be >= 1, got {item_chunk}.")
        self.backend = backend
        self.temperature = float(temperature)
        self.device = torch.device(device) if device is not None else None
        self.item_chunk = int(item_chunk)
        # The metric's GEMM form (None for JS, which is scored by pairwise in chunks).
        self._form = GEMM_FORMS.get(metric)
        self._items: torch.Tensor | None = None  # prepared (M, d); raw for JS
        self._col: torch.Tensor | None = None  # column term added to the GEMM, (M,)
        self._faiss = None

    def __len__(self) -> int:
        return 0 if self._items is None else int(self._items.shape[0])

    @property
    def dim(self) -> int | None:
        return None if self._items is None else int(self._items.shape[1])

    def add(self, items: Array) -> Index:
        """Append ``(M, d)`` items; returns ``self`` so ``Index().add(X)`` chains."""
        x = as_tensor(items, "items")
        if self.device is not None:
            x = x.to(self.device)
        elif isinstance(items, torch.Tensor):
            self.device = items.device
        if self.dim is not None and x.shape[1] != self.dim:
            raise ShapeError(f"items have {x.shape[1]} features but the index holds {self.dim}.")
        if x.shape[1] == 0:
            raise ShapeError("items have 0 features; there is nothing to index.")
        if self.backend == "faiss":
            self._add_faiss(x)
        prep, col = (x, None) if self._form is None else self._form.prepare_items(x, self.temperature)
        if self._items is None:
            self._items, self._col = prep, col
        else:
            self._items = torch.cat([self._items, prep.to(self._items.dtype)])
            if col is not None:
                self._col = torch.cat([self._col, col.to(self._col.dtype)])
        return self

    def search(
        self, queries: Array, k: int = 10, *, batch_size: int = 1024
    ) -> tuple[Array, Array]:
        """The ``k`` best items for each of the ``(n, d)`` queries: ``(scores, ids)``, each ``(n, min(k, M))``."""
        k = _check_k(k)
        if batch_size < 1:
            raise ShapeError(f"batch_size must be >= 1, got {batch_size}.")
        if self._items is None or len(self) == 0:
            raise QueryError("the index is empty; call .add(items) before .search(queries).")
        q = as_tensor(queries, "queries")
        if q.shape[1] != self.dim:
            raise ShapeError(
                f"queries have {q.shape[1]} features but the index items have {self.dim}; "
                "embed queries with the same model as the items."
            )
        k = min(k, len(self))
        if self.backend == "faiss":
            vals, ids = self._search_faiss(q, k)
        else:
            q = q.to(self._items.device, self._items.dtype)
            # One score buffer for the whole search (batch_size x item_chunk floats): no
            # fresh allocation, and no page faults, per block. JS scores chunks in full.
            tile = self._tile()
            block = 0 if self.metric == "js" else -(-min(self.item_chunk, len(self)) // tile) * tile
            buf = torch.empty(min(batch_size, len(q)) * block,
                              dtype=self._items.dtype, device=self._items.device)
            outs = [self._search_batch(q[i : i + batch_size], k, buf)
                    for i in range(0, len(q), batch_size)]
            if outs:
                vals = torch.cat([o[0] for o in outs])
                ids = torch.cat([o[1] for o in outs])
            else:
                vals = torch.zeros((0, k), dtype=self._items.dtype, device=self._items.device)
                ids = torch.zeros((0, k), dtype=torch.int64, device=self._items.device)
        if isinstance(queries, torch.Tensor):
            return vals, ids
        return vals.cpu().numpy(), ids.cpu().numpy()

    def _tile(self) -> int:
        """Items per GEMM tile: cache-sized on the CPU, the whole chunk on accelerators."""
        width = min(self.item_chunk, len(self))
        return min(CPU_TILE, width) if self._items.device.type == "cpu" else width

    def memory_bytes(self, batch_size: int = 1024) -> int:
        """Upper bound on the working memory of one :meth:`search`, whatever the number of items.

        The score block (``batch_size x item_chunk`` floats, rounded up to whole tiles)
        plus a scratch of four ``batch_size x CPU_TILE`` float blocks: the list of
        groups to look at, one gathered slice of them (a quarter block) with its mask
        and selection temporaries, and the slice's candidates (at most
        ``LIST_PER_QUERY`` per query, on both selection paths) with the temporaries of
        merging them. Not counted: the answer itself, ``batch_size x k``
        scores and ids, which grows with k but not with the number of items.
        """
        item_size = 4 if self._items is None else self._items.element_size()
        tile = min(CPU_TILE, self.item_chunk)
        return batch_size * (-(-self.item_chunk // tile) * tile + 4 * tile) * item_size

    def _search_batch(
        self, q: torch.Tensor, k: int, buf: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.metric == "js":
            return self._search_batch_js(q, k)
        # The queries' side of the form, once per batch; the loop below is the GEMM alone.
        qp = self._form.prepare_queries(q, self.temperature)
        n, dev, dt = len(qp), self._items.device, self._items.dtype
        tile = self._tile()
        # best_v[:, -1] is each query's current k-th score. An item can only enter the
        # answer if it beats it strictly: it comes later, so it loses every tie.
        best_v = torch.full((n, k), -math.inf, dtype=dt, device=dev)
        best_i = torch.full((n, k), _NO_ID, dtype=torch.int64, device=dev)
        n_tiles = -(-min(self.item_chunk, len(self)) // tile)
        group = GROUP if tile % GROUP == 0 else tile
        G = tile // group
        tops = torch.empty((n_tiles, n, G), dtype=dt, device=dev)  # max of each group of items
        # Gathered group rows stay within n x CPU_TILE / 4 floats at a time (see memory_bytes),
        # and the candidates of a slice within n x LIST_PER_QUERY, on either path below.
        kk = min(k, group)
        slice_rows = max(1, min(n * min(CPU_TILE, tile) // (4 * group), n * LIST_PER_QUERY // kk))
        with torch.no_grad():
            for j in range(0, len(self), self.item_chunk):
                chunk = self._items[j : j + self.item_chunk]
                nt = -(-len(chunk) // tile)
                S = buf[: nt * n * tile].view(nt, n, tile)
                for t in range(nt):
                    blk = chunk[t * tile : (t + 1) * tile]
                    if len(blk) == tile:
                        St = torch.mm(qp, blk.T, out=S[t])
                    else:  # a short last tile: pad with -inf, which never beats a score
                        S[t, :, len(blk) :] = -math.inf
                        St = S[t, :, : len(blk)]
                        St.copy_(qp @ blk.T)
                    if self._col is not None:
                        St += self._col[j + t * tile : j + t * tile + len(blk)]
                    torch.amax(S[t].view(n, G, group), dim=2, out=tops[t])
                if j == 0:
                    # Nothing listed yet: the k-th largest group maximum is a lower bound
                    # on the k-th best score (k distinct items reach it), so items below
                    # it cannot win. Items equal to it can, hence >= for this chunk.
                    flat = tops[:nt].permute(1, 0, 2).reshape(n, -1)
                    bound = torch.topk(flat, min(k, flat.shape[1]), dim=1).values[:, -1:]
                    if flat.shape[1] < k:
                        bound = torch.full_like(bound, -math.inf)
                    beats = torch.ge
                else:
                    # An item beats a listed one only strictly: it comes later, so it loses ties.
                    bound, beats = best_v[:, -1:], torch.gt
                # Groups whose maximum cannot beat the bound are skipped without a look.
                ti, qi, gi = torch.nonzero(beats(tops[:nt], bound[None]), as_tuple=True)
                groups = S.view(nt, n, G, group)
                for s in range(0, len(ti), slice_rows):
                    a, b, g = ti[s : s + slice_rows], qi[s : s + slice_rows], gi[s : s + slice_rows]
                    rows = groups[a, b, g]  # (r, group) copy of the groups that may hold a winner
                    first = j + a * tile + g * group  # id of each row's first item
                    hit = beats(rows, bound[b])
                    if int(hit.sum()) <= n * LIST_PER_QUERY:
                        r, c = torch.nonzero(hit, as_tuple=True)
                        v, ids = rows[r, c], first[r] + c
                        qs = b[r]
                    else:  # too many to list (no bound yet): each row's top-k suffices
                        v, i = _topk_desc(rows, kk)
                        v, ids, qs = v.flatten(), (first[:, None] + i).flatten(), b.repeat_interleave(kk)
                    ids = ids.masked_fill(ids >= j + len(chunk), _NO_ID)  # padding of a short tile
                    # Later slices hold later items of each query, so merging slice by slice
                    # keeps _merge_candidates' order condition and bounds the lists.
                    best_v, best_i = _merge_candidates(best_v, best_i, qs, v, ids)
        # Rank scores of the k kept items back to the metric's values (in place).
        return self._form.to_metric(best_v, q, self.temperature), best_i

    def _search_batch_js(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        # JS has no GEMM form: score each item chunk in full and merge the partial lists.
        best_v = best_i = None
        with torch.no_grad():
            for j in range(0, len(self), self.item_chunk):
                S = -pairwise(q, self._items[j : j + self.item_chunk], "js", temperature=self.temperature)
                v, i = _topk_desc(S, min(k, S.shape[1]), offset=j)
                if best_v is None:
                    best_v, best_i = v, i
                else:
                    best_v, best_i = _lexsort_rows(torch.cat([best_v, v], 1), torch.cat([best_i, i], 1))
                    best_v, best_i = best_v[:, :k], best_i[:, :k]
        return -best_v, best_i  # distances again

    # ---- FAISS --------------------------------------------------------------
    def _add_faiss(self, x: torch.Tensor) -> None:
        try:
            import faiss
        except ImportError:
            raise ShapeError(
                "backend='faiss' needs the faiss-cpu package (pip install faiss-cpu); "
                "or use the default backend='torch'."
            ) from None
        if self._faiss is None:
            flat = faiss.IndexFlatL2 if self.metric in ("euclidean", "neg_euclidean") else faiss.IndexFlatIP
            self._faiss = flat(x.shape[1])
        xs = x.detach().cpu().to(torch.float32)
        if self.metric == "cosine":
            xs = unit_rows(xs)
        self._faiss.add(np.ascontiguousarray(xs.numpy()))

    def _search_faiss(self, q: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        qs = q.detach().cpu().to(torch.float32)
        if self.metric == "cosine":
            qs = unit_rows(qs)
        dist, idx = self._faiss.search(np.ascontiguousarray(qs.numpy()), k)
        vals, ids = torch.from_numpy(dist), torch.from_numpy(idx).to(torch.int64)
        if self.metric in ("euclidean", "neg_euclidean"):
            vals = vals.clamp(min=0).sqrt()  # FAISS returns squared distances
            if self.metric == "neg_euclidean":
                vals = -vals
        dev = self._items.device
        return vals.to(dev, self._items.dtype), ids.to(dev)


__all__ = ["topk", "Index", "HIGHER_IS_BETTER"]
