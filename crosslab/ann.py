"""Approximate search, built by hand: an inverted-file index (IVF) over k-means cells.

Exact search scores every vector for every query, so its cost grows with the collection. An
IVF index first clusters the collection into ``n_cells`` cells (k-means); each vector is stored
in the *inverted list* of its nearest centroid. A query is compared with the centroids, and only
the vectors of its ``nprobe`` best cells are scored exactly. With ``nprobe = n_cells`` every
vector is scored and the result equals exact search; with a small ``nprobe`` a query reads about
``nprobe / n_cells`` of the collection and may miss a neighbour that sits in another cell — the
trade of recall for speed that every approximate index makes (FAISS's ``IndexIVFFlat`` is this
idea, in C++).

Scores are inner products: with ``metric="cosine"`` (the default) vectors and queries are
L2-normalised first, so the k-means is *spherical* (centroids re-normalised after each update).

    >>> index = IVFIndex(n_cells=64).fit(vectors)          # (N, d)
    >>> scores, ids = index.search(queries, k=10, nprobe=8)
    >>> recall_at_k(ids, exact_ids)                          # share of the exact top-k found
    >>> pq = ProductQuantizer(m=16, bits=8).fit(vectors)     # 16 bytes per vector instead of 4 d
    >>> codes = pq.encode(vectors); pq.scores(queries, codes)

Both are for teaching and for curves at laptop scale; FAISS does the same in C++.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .errors import ShapeError
from .search import topk


def _rows(X: np.ndarray, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or 0 in X.shape or not np.isfinite(X).all():
        raise ShapeError(f"{name} must be a non-empty (n, d) array of finite numbers, got shape {X.shape}.")
    return X


def _unit(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def kmeans(X: np.ndarray, n_cells: int, *, n_iter: int = 20, seed: int = 0,
           spherical: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means: ``(centroids (n_cells, d), assignment (N,))``, deterministic for a seed.

    Starts from ``n_cells`` distinct rows drawn at random; a cell left empty is re-seeded with
    the row farthest from its centroid, so every cell keeps at least one vector. ``spherical``:
    assign by the largest inner product with unit centroids (for unit vectors).
    """
    X = _rows(X, "X")
    if not 1 <= n_cells <= len(X):
        raise ShapeError(f"n_cells must be between 1 and the number of vectors ({len(X)}), got {n_cells}.")
    rng = np.random.default_rng(seed)
    C = X[rng.choice(len(X), n_cells, replace=False)].copy()
    assign = np.zeros(len(X), dtype=np.int64)
    for _ in range(max(1, n_iter)):
        if spherical:
            S = X @ C.T
        else:
            S = 2 * X @ C.T - (C * C).sum(1)[None, :]  # -||x - c||^2 + ||x||^2, same argmax
        new = S.argmax(1)
        best = S[np.arange(len(X)), new]
        counts = np.bincount(new, minlength=n_cells)
        for empty in np.flatnonzero(counts == 0):  # re-seed: the worst-served vector
            far = int(np.argmin(best))
            new[far], best[far] = empty, np.inf
            counts = np.bincount(new, minlength=n_cells)
        sums = np.zeros_like(C)
        np.add.at(sums, new, X)
        C = sums / counts[:, None]
        if spherical:
            C = _unit(C)
        if np.array_equal(new, assign):
            break
        assign = new
    return C.astype(np.float32), assign


class IVFIndex:
    """An inverted-file index: k-means cells, one list of vector ids per cell, exact scores inside.

    ``fit(X)`` clusters and fills the lists; ``search(Q, k, nprobe)`` scores each query against
    the centroids, gathers the vectors of its ``nprobe`` best cells and returns their exact top-k
    (ties: the lower id first, as :func:`crosslab.search.topk`).
    """

    def __init__(self, n_cells: int = 64, *, metric: str = "cosine", n_iter: int = 20, seed: int = 0,
                 train_size: int | None = None) -> None:
        if metric not in ("cosine", "dot"):
            raise ShapeError(f"metric must be 'cosine' or 'dot', got {metric!r}.")
        if train_size is not None and int(train_size) < 1:
            raise ShapeError(f"train_size must be a positive number of vectors (or None: all), got {train_size}.")
        self.n_cells, self.metric, self.n_iter, self.seed = int(n_cells), metric, int(n_iter), int(seed)
        self.train_size = None if train_size is None else int(train_size)

    def _prep(self, X: np.ndarray, name: str) -> np.ndarray:
        X = _rows(X, name)
        return _unit(X) if self.metric == "cosine" else X

    def fit(self, X: np.ndarray) -> IVFIndex:
        """Cluster (on all vectors, or on a seeded sample of ``train_size`` as FAISS does) and fill
        the lists; every vector goes to the cell of its nearest centroid."""
        self.vectors_ = V = self._prep(X, "vectors")
        train = V
        if self.train_size is not None and self.train_size < len(V):
            train = V[np.sort(np.random.default_rng(self.seed).choice(len(V), self.train_size, replace=False))]
        self.centroids_, assign = kmeans(train, min(self.n_cells, len(train)), n_iter=self.n_iter,
                                         seed=self.seed, spherical=self.metric == "cosine")
        if train is not V:
            sims = V @ self.centroids_.T if self.metric == "cosine" else \
                2 * V @ self.centroids_.T - (self.centroids_ ** 2).sum(1)[None, :]
            assign = sims.argmax(1)
        order = np.argsort(assign, kind="stable")  # ids sorted within each cell
        bounds = np.searchsorted(assign[order], np.arange(len(self.centroids_) + 1))
        self.lists_ = [order[bounds[c]:bounds[c + 1]] for c in range(len(self.centroids_))]
        return self

    def __len__(self) -> int:
        return len(getattr(self, "vectors_", ()))

    def search(self, Q: np.ndarray, k: int = 10, nprobe: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, each ``(n_queries, k)``; ids are -1 (score -inf) where fewer than k
        vectors lie in the probed cells."""
        if not hasattr(self, "vectors_"):
            raise ShapeError("the index is empty: call fit(vectors) first.")
        Q = self._prep(Q, "queries")
        if Q.shape[1] != self.vectors_.shape[1]:
            raise ShapeError(f"queries have {Q.shape[1]} dimensions, the index {self.vectors_.shape[1]}.")
        nprobe = max(1, min(int(nprobe), len(self.centroids_)))
        _, cells = topk(Q @ self.centroids_.T, nprobe)
        scores = np.full((len(Q), k), -np.inf, dtype=np.float32)
        ids = np.full((len(Q), k), -1, dtype=np.int64)
        for q in range(len(Q)):
            cand = np.sort(np.concatenate([self.lists_[c] for c in cells[q]]))
            v, i = topk((self.vectors_[cand] @ Q[q])[None, :], k)
            scores[q, : v.shape[1]], ids[q, : i.shape[1]] = v[0], cand[i[0]]
        return scores, ids

    def scanned(self, Q: np.ndarray, nprobe: int = 1) -> float:
        """Average share of the collection a query scores at this ``nprobe`` (its cost)."""
        Q = self._prep(Q, "queries")
        _, cells = topk(Q @ self.centroids_.T, max(1, min(int(nprobe), len(self.centroids_))))
        sizes = np.array([len(lst) for lst in self.lists_])
        return float(sizes[cells].sum(1).mean() / len(self.vectors_))


class ProductQuantizer:
    """Product quantisation (Jégou et al., 2011): a vector stored as ``m`` small codes.

    The ``d`` dimensions are cut into ``m`` sub-vectors of ``d / m`` dimensions; each part gets
    its own codebook of ``2**bits`` centroids (k-means on that part of the training vectors), and a
    vector is stored as the index of the nearest centroid in each part: ``m * bits / 8`` bytes
    instead of ``4 d``. ``decode`` rebuilds the approximation by concatenating the chosen
    centroids. ``scores`` ranks stored codes against full-precision queries without decoding
    them (*asymmetric distance computation*): one table of query-part · centroid inner products
    per query, then a sum of ``m`` table look-ups per stored vector.
    """

    def __init__(self, m: int = 8, bits: int = 8, *, n_iter: int = 20, seed: int = 0) -> None:
        if not 1 <= bits <= 16:
            raise ShapeError(f"bits must be between 1 and 16, got {bits}.")
        self.m, self.bits, self.n_iter, self.seed = int(m), int(bits), int(n_iter), int(seed)

    def fit(self, X: np.ndarray) -> ProductQuantizer:
        X = _rows(X, "vectors")
        d = X.shape[1]
        if self.m < 1 or d % self.m:
            raise ShapeError(f"m must divide the dimension: {d} dimensions, m = {self.m}.")
        ks = min(2 ** self.bits, len(X))
        self.sub_ = d // self.m
        self.codebooks_ = np.stack([
            kmeans(X[:, j * self.sub_:(j + 1) * self.sub_], ks, n_iter=self.n_iter, seed=self.seed + j,
                   spherical=False)[0]
            for j in range(self.m)])  # (m, ks, d / m)
        return self

    def _check(self, X: np.ndarray, name: str) -> np.ndarray:
        if not hasattr(self, "codebooks_"):
            raise ShapeError("the quantizer is not trained: call fit(vectors) first.")
        X = _rows(X, name)
        if X.shape[1] != self.m * self.sub_:
            raise ShapeError(f"{name} have {X.shape[1]} dimensions, the quantizer {self.m * self.sub_}.")
        return X

    def encode(self, X: np.ndarray) -> np.ndarray:
        """``(n, m)`` codes: the nearest centroid of each part (uint8 for bits <= 8, else uint16)."""
        X = self._check(X, "vectors")
        codes = np.empty((len(X), self.m), dtype=np.uint8 if self.bits <= 8 else np.uint16)
        for j, C in enumerate(self.codebooks_):
            part = X[:, j * self.sub_:(j + 1) * self.sub_]
            codes[:, j] = (2 * part @ C.T - (C * C).sum(1)[None, :]).argmax(1)  # nearest centroid
        return codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """The approximation of each coded vector: its centroids side by side, ``(n, d)``."""
        codes = np.asarray(codes, dtype=np.int64)
        return np.concatenate([self.codebooks_[j][codes[:, j]] for j in range(self.m)], axis=1)

    def scores(self, Q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """Inner products ``(n_queries, n)`` of queries with the coded vectors, by table look-up."""
        Q = self._check(Q, "queries")
        codes = np.asarray(codes, dtype=np.int64)
        out = np.zeros((len(Q), len(codes)), dtype=np.float32)
        for j, C in enumerate(self.codebooks_):
            table = Q[:, j * self.sub_:(j + 1) * self.sub_] @ C.T  # (n_queries, ks)
            out += table[:, codes[:, j]]
        return out

    @property
    def bytes_per_vector(self) -> float:
        return self.m * self.bits / 8


class Clustered(NamedTuple):
    """What :func:`clustered_vectors` returns: unit ``vectors`` (n, d), unit ``queries`` (q, d),
    and the mixture component each vector was drawn from (``labels``, (n,))."""

    vectors: np.ndarray
    queries: np.ndarray
    labels: np.ndarray


def clustered_vectors(n: int, d: int, *, n_clusters: int | None = None, spread: float = 1.0,
                      zipf: float = 1.0, decay: float = 1.0, queries: int = 0, seed: int = 0) -> Clustered:
    """Unit vectors from a Gaussian mixture shaped like real embeddings, and queries from the same law.

    How they are made (deterministic for ``seed``):

    * ``n_clusters`` unit centres (default ``ceil(sqrt(n))``), drawn from a Gaussian whose variance
      along the ``j``-th axis of a random rotation falls off as ``1 / (j + 1) ** decay`` -- so the
      centres, like real embeddings, fill a few directions much more than the others;
    * unequal cluster sizes: cluster ``c`` is chosen with probability proportional to
      ``1 / (c + 1) ** zipf`` (Zipf-like: a few large topics and a long tail of small ones);
    * anisotropic spread: a vector is its centre plus noise of RMS norm ``spread``, whose
      variances follow the same power law, assigned to the rotated axes in a different random
      order for each cluster -- each cluster is long in its own few directions;
    * every row is scaled to unit norm (cosine = inner product). Queries are *new* draws from the
      same mixture (other random numbers), never copies of stored vectors.

    Why not iid Gaussian vectors: in 256 dimensions independent Gaussian points are almost
    orthogonal to one another and the nearest neighbour is barely closer than a random point
    (distances concentrate), with no cells for an IVF index to exploit and no low-dimensional
    structure for product quantisation. An approximate index must then scan most of the data to
    find the true neighbours -- a pessimistic case that real embeddings (clumped, of low
    effective dimension) are not. The defaults were set to resemble the default pipeline's
    clip-art gallery embeddings (2,776 x 256) at their size: random pairs near 0 cosine, close
    nearest and 10th-nearest neighbours, and a participation-ratio dimension (effective number
    of principal directions) of a few tens where iid Gaussian vectors have over 200 (lesson 09
    prints the neighbour cosines of the three side by side).
    """
    n, d, queries = int(n), int(d), int(queries)
    if n < 1 or d < 1 or queries < 0:
        raise ShapeError(f"n and d must be >= 1 and queries >= 0, got n={n}, d={d}, queries={queries}.")
    n_clusters = int(np.ceil(np.sqrt(n))) if n_clusters is None else int(n_clusters)
    if n_clusters < 1 or spread < 0 or zipf < 0 or decay < 0:
        raise ShapeError("n_clusters must be >= 1 and spread, zipf, decay >= 0, got "
                         f"n_clusters={n_clusters}, spread={spread}, zipf={zipf}, decay={decay}.")
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.arange(1, d + 1) ** decay).astype(np.float32)
    scale = np.sqrt(scale / scale.sum())  # std per axis, total variance 1
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0].astype(np.float32)
    centres = _unit((rng.normal(size=(n_clusters, d)).astype(np.float32) * scale) @ rot.T)
    stds = np.stack([scale[rng.permutation(d)] for _ in range(n_clusters)]) * np.float32(spread)
    weights = 1.0 / np.arange(1, n_clusters + 1) ** zipf

    def draw(m: int, stream: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        labels = stream.choice(n_clusters, size=m, p=weights / weights.sum())
        out = np.empty((m, d), dtype=np.float32)
        for a in range(0, m, 65536):  # chunks: the (m, d) noise is never held twice
            lab = labels[a:a + 65536]
            noise = stream.standard_normal((len(lab), d), dtype=np.float32) * stds[lab]
            out[a:a + 65536] = _unit(centres[lab] + noise @ rot.T)
        return out, labels

    X, labels = draw(n, np.random.default_rng([seed, 1]))
    Q, _ = draw(queries, np.random.default_rng([seed, 2]))
    return Clustered(X, Q, labels.astype(np.int64))


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Share of the exact top-k ids that an approximate search also returned (mean over queries)."""
    found, exact = np.asarray(found), np.asarray(exact)
    if found.shape[0] != exact.shape[0]:
        raise ShapeError(f"found and exact cover {found.shape[0]} and {exact.shape[0]} queries.")
    hits = [len(set(f.tolist()) & set(e.tolist())) / max(len(e), 1) for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits))


__all__ = ["Clustered", "IVFIndex", "ProductQuantizer", "clustered_vectors", "kmeans", "recall_at_k"]
