"""FAISS's approximate indexes behind the course's interface (``fit``, ``search``, memory).

:mod:`crosslab.ann` builds an inverted-file index and a product quantiser by hand, to see how
they work. FAISS does the same in C++, with more tricks; here its indexes wear the same
interface as :class:`crosslab.ann.IVFIndex`, so a lesson can swap one for another:

    >>> index = make_index("ivf-pq", n_cells=1024, m=64).fit(vectors)      # (N, d)
    >>> scores, ids = index.search(queries, k=10, nprobe=16)
    >>> index.bytes_per_vector                                              # measured, not guessed

The kinds (:data:`KINDS`), each a trade between recall, speed and memory:

* ``"flat"``: every vector kept as float32 (``4 d`` bytes) and scored: exact, the reference.
* ``"flat-f16"`` / ``"sq8"``: every vector still scored, but stored as float16 (``2 d`` bytes) or
  as one byte per dimension (*scalar quantisation*: each dimension's range, learnt from the
  training vectors, cut into 256 steps; ``d`` bytes). Half or a quarter of the memory, scores
  slightly off, no speed gained (every vector is still read).
* ``"ivf-flat"``: FAISS's version of ``ann.IVFIndex``: k-means cells, inverted lists, and only
  the ``nprobe`` cells nearest the query scanned. float32 vectors plus an 8-byte id each.
* ``"ivf-pq"``: the same cells, but each vector stored as ``m`` product-quantisation codes of
  its *residual* (vector minus its cell's centroid: small, so the codes describe it finely);
  ``m * bits / 8`` bytes plus the id. Fast and small, but the scores are approximate, so some
  true neighbours rank below impostors whatever ``nprobe`` is. ``refine="sq8" | "f16" | "flat"``
  adds a second copy of the vectors in that form: the IVF-PQ search returns ``k_factor * k``
  candidates and those are re-scored with the better copy (*re-ranking*) -- recall back, at the
  price of the second copy's memory.
* ``"hnsw"``: a graph (Hierarchical Navigable Small World): each vector linked to ``M`` near
  neighbours (``2 M`` on the bottom layer), with sparser layers above for long jumps. A search
  walks the graph greedily towards the query, keeping the ``efSearch`` best nodes seen; larger
  ``efSearch`` = more recall, slower; a larger ``M`` builds a better connected (and bigger,
  slower to build) graph. The links cost ``~8 M`` bytes per vector on top of the float32 vectors.

Scores are inner products; with ``metric="cosine"`` (the default) vectors and queries are scaled
to unit length first. An index is trained (k-means, quantiser ranges, codebooks) on a
seeded sample of at most ``max_train`` rows, then every row is added. Training is deterministic
for a ``seed`` (FAISS's k-means seed) and a thread count; HNSW's graph, built by several threads
at once, can differ slightly from run to run. ``memory_bytes()`` is the length of the index as
FAISS serialises it: what it holds, not an estimate. On a busy machine, OpenMP threads that spin
while they wait can make training several times slower; ``OMP_WAIT_POLICY=PASSIVE`` in the
environment before Python starts avoids it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .ann import _rows, _unit
from .errors import CrosslabError, ShapeError

#: kind -> (what it is, its search knobs, its build options and their defaults).
KINDS: dict[str, tuple[str, tuple[str, ...], dict[str, Any]]] = {
    "flat": ("exact: float32 vectors, every one scored", (), {}),
    "flat-f16": ("every vector scored, stored as float16", (), {}),
    "sq8": ("every vector scored, stored as one byte per dimension", (), {}),
    "ivf-flat": ("k-means cells, float32 vectors, nprobe cells scanned", ("nprobe",), {"n_cells": None}),
    "ivf-pq": ("k-means cells, PQ codes of the residuals, nprobe cells scanned (optional re-ranking)",
               ("nprobe", "k_factor"), {"n_cells": None, "m": None, "bits": 8, "refine": None}),
    "hnsw": ("a navigable small-world graph over float32 vectors", ("efSearch",),
             {"M": 32, "ef_construction": 40}),
}
REFINES = {"flat": "Flat", "f16": "SQfp16", "sq8": "SQ8"}
_FIXED = {"flat": "Flat", "flat-f16": "SQfp16", "sq8": "SQ8"}


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise CrosslabError("crosslab.ann_faiss needs FAISS: pip install faiss-cpu "
                         "(or the project's extra: pip install 'crosslab[faiss]').") from None
    return faiss


def default_cells(n: int) -> int:
    """``n_cells`` when not given: the power of two nearest ``sqrt(n)`` (1,024 at 1M vectors).

    FAISS suggests 4-16 sqrt(N) cells for the fastest search; fewer cells train much faster
    (k-means costs cells x training vectors), which matters on a laptop.
    """
    return int(2 ** round(np.log2(max(1.0, np.sqrt(n)))))


class FaissIndex:
    """One FAISS index of a given ``kind`` (see :data:`KINDS`), with ``ann.IVFIndex``'s interface."""

    def __init__(self, kind: str, *, metric: str = "cosine", seed: int = 0, max_train: int = 100_000,
                 **options: Any) -> None:
        if kind not in KINDS:
            raise ShapeError(f"unknown index kind {kind!r}; choose from {', '.join(KINDS)}.")
        if metric not in ("cosine", "dot"):
            raise ShapeError(f"metric must be 'cosine' or 'dot', got {metric!r}.")
        defaults = KINDS[kind][2]
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise ShapeError(f"{kind!r} has no option {', '.join(unknown)}; its options: "
                             f"{', '.join(defaults) or 'none'}.")
        self.options = {**defaults, **options}
        if self.options.get("refine") not in (None, *REFINES):
            raise ShapeError(f"refine must be None or one of {', '.join(REFINES)}, got {self.options['refine']!r}.")
        for name in ("n_cells", "m", "bits", "M", "ef_construction"):
            value = self.options.get(name)
            if value is not None and (not isinstance(value, int | np.integer) or value < 1):
                raise ShapeError(f"{name} must be a positive integer, got {value!r}.")
        if max_train < 1:
            raise ShapeError(f"max_train must be >= 1, got {max_train}.")
        self.kind, self.metric, self.seed, self.max_train = kind, metric, int(seed), int(max_train)
        self.knobs = KINDS[kind][1] if kind != "ivf-pq" or self.options["refine"] else ("nprobe",)
        self.index_: Any = None

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"FaissIndex({self.kind!r}{', ' + opts if opts else ''}, metric={self.metric!r})"

    def __len__(self) -> int:
        return 0 if self.index_ is None else int(self.index_.ntotal)

    def _prep(self, X: np.ndarray, name: str) -> np.ndarray:
        X = _rows(X, name)
        return np.ascontiguousarray(_unit(X) if self.metric == "cosine" else X, dtype=np.float32)

    def factory_string(self, n: int, d: int) -> str:
        """The FAISS ``index_factory`` description of this index for ``n`` vectors of ``d`` dims."""
        o = self.options
        if self.kind in _FIXED:
            return _FIXED[self.kind]
        if self.kind == "hnsw":
            return f"HNSW{o['M']},Flat"
        cells = min(o["n_cells"] or default_cells(n), n, self.max_train)  # k-means needs a row per cell
        if self.kind == "ivf-flat":
            return f"IVF{cells},Flat"
        m = o["m"] or max(1, d // 4)
        if d % m:
            raise ShapeError(f"m must divide the dimension: {d} dimensions, m = {m}.")
        if not 1 <= o["bits"] <= 16 or 2 ** o["bits"] > min(n, self.max_train):
            raise ShapeError(f"bits = {o['bits']} needs 2**bits <= the training vectors "
                             f"({min(n, self.max_train)}) and bits <= 16.")
        refine = f",Refine({REFINES[o['refine']]})" if o["refine"] else ""
        return f"IVF{cells},PQ{m}x{o['bits']}{refine}"

    def fit(self, X: np.ndarray) -> FaissIndex:
        """Train on a seeded sample of at most ``max_train`` rows, then add every row."""
        faiss = _faiss()
        X = self._prep(X, "vectors")
        n, d = X.shape
        index = faiss.index_factory(d, self.factory_string(n, d), faiss.METRIC_INNER_PRODUCT)
        if self.kind.startswith("ivf"):
            ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
            ivf.cp.seed = self.seed  # the k-means of the cells
            if self.kind == "ivf-pq":
                ivf.pq.cp.seed = self.seed  # the k-means of each codebook
                ivf.do_polysemous_training = False  # codes for Hamming filtering: unused here, slow
        if self.kind == "hnsw":
            index.hnsw.efConstruction = self.options["ef_construction"]
        if not index.is_trained:
            index.train(X[self._sample(n)])
        index.add(X)
        self.index_, self.dim_ = index, d
        return self

    def _sample(self, n: int) -> np.ndarray:
        """The training rows: all, or ``max_train`` drawn with ``seed`` (sorted)."""
        if n <= self.max_train:
            return np.arange(n)
        return np.sort(np.random.default_rng(self.seed).choice(n, self.max_train, replace=False))

    def with_refine(self, refine: str, X: np.ndarray) -> FaissIndex:
        """This fitted IVF-PQ index plus a re-ranking copy of ``X`` (the vectors it was fitted on) in
        the form ``refine``: the same as ``make_index("ivf-pq", refine=...)``, without training the
        IVF-PQ part again (it is shared, not copied)."""
        faiss = _faiss()
        if self.kind != "ivf-pq" or self.options["refine"] or self.index_ is None:
            raise ShapeError("with_refine needs a fitted 'ivf-pq' index without refine.")
        if refine not in REFINES:
            raise ShapeError(f"refine must be one of {', '.join(REFINES)}, got {refine!r}.")
        X = self._prep(X, "vectors")
        if X.shape != (len(self), self.dim_):
            raise ShapeError(f"X must be the {len(self)} x {self.dim_} vectors the index holds, got {X.shape}.")
        store = faiss.index_factory(self.dim_, REFINES[refine], faiss.METRIC_INNER_PRODUCT)
        store.train(X[self._sample(len(X))])
        store.add(X)
        out = FaissIndex("ivf-pq", metric=self.metric, seed=self.seed, max_train=self.max_train,
                         **{**self.options, "refine": refine})
        out.index_, out.dim_ = faiss.IndexRefine(self.index_, store), self.dim_
        return out

    def _params(self, given: dict[str, Any]) -> Any:
        """FAISS search parameters (per call: the index itself is not modified) from ``nprobe=``..."""
        faiss = _faiss()
        unknown = sorted(set(given) - set(self.knobs))
        if unknown:
            raise ShapeError(f"{self.kind!r} search takes {', '.join(self.knobs) or 'no parameters'}, "
                             f"not {', '.join(unknown)}.")
        for name, value in given.items():
            if not isinstance(value, int | np.integer) or value < 1:
                raise ShapeError(f"{name} must be a positive integer, got {value!r}.")
        if self.kind.startswith("ivf"):
            ivf = faiss.SearchParametersIVF(nprobe=int(given.get("nprobe", 1)))
            if self.kind == "ivf-pq" and self.options["refine"]:
                return faiss.IndexRefineSearchParameters(k_factor=float(given.get("k_factor", 1)),
                                                         base_index_params=ivf)
            return ivf
        if self.kind == "hnsw":
            return faiss.SearchParametersHNSW(efSearch=int(given.get("efSearch", 16)))
        return None

    def search(self, Q: np.ndarray, k: int = 10, **params: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float32 (q, k), ids int64 (q, k))``, best first; ids -1 (score -inf) where
        the index found fewer than ``k`` vectors (few cells probed, small collection)."""
        if self.index_ is None:
            raise ShapeError("the index is empty: call fit(vectors) first.")
        if not isinstance(k, int | np.integer) or k < 1:
            raise ShapeError(f"k must be a positive integer, got {k!r}.")
        Q = self._prep(Q, "queries")
        if Q.shape[1] != self.dim_:
            raise ShapeError(f"queries have {Q.shape[1]} dimensions, the index {self.dim_}.")
        scores, ids = self.index_.search(Q, int(k), params=self._params(params))
        scores = np.asarray(scores, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        scores[ids < 0] = -np.inf
        return scores, ids

    def memory_bytes(self) -> int:
        """Bytes of the index as FAISS serialises it: vectors or codes, ids, centroids, codebooks, links."""
        if self.index_ is None:
            raise ShapeError("the index is empty: call fit(vectors) first.")
        return int(_faiss().serialize_index(self.index_).size)

    @property
    def bytes_per_vector(self) -> float:
        return self.memory_bytes() / max(len(self), 1)


def make_index(kind: str, **options: Any) -> FaissIndex:
    """A :class:`FaissIndex`: ``make_index("ivf-pq", n_cells=1024, m=64, refine="sq8")``.

    Options per kind are listed in :data:`KINDS` (besides ``metric``, ``seed``, ``max_train``).
    """
    return FaissIndex(kind, **options)


__all__ = ["KINDS", "FaissIndex", "default_cells", "make_index"]
