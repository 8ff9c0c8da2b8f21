"""An embedded vector store: a pipeline's image embeddings on disk, searchable by a new process.

    store = VectorStore.create("my-store", cl.create_pipeline("cca+glove"))
    store.add_dataset(cl.data.load_clipart())      # embed every picture once, write the rows
    VectorStore.open("my-store").search_text("a red apple", k=5)   # tomorrow, in another process

Until now a search re-embedded its gallery in every new process (or read it from the cache).
A *vector store* keeps the embeddings themselves, with what each row stands for, so the work
is done once and a search is "open, encode the query, look up". *Embedded* means a library
working on files, not a server: here LanceDB, and one directory holding

* ``crosslab-store.json`` -- what the store is: format and version, the pipeline's name, the
  embedding width ``dim`` and its metric (written atomically by :mod:`crosslab._io`, last);
* ``pipeline.npz`` -- the pipeline (:meth:`~crosslab.pipeline.Retriever.save`), so a query is
  encoded by exactly the model that embedded the pictures;
* ``images.lance/`` -- the table: ``id`` (0, 1, ... in order of adding), ``key`` (a content
  key of the picture, :func:`content_key`: what a resumed build skips), ``path``, ``caption``
  and ``vector`` (``dim`` float32).

Writes are versioned: an append writes new data files, then commits a new version of the
table's manifest in one atomic step, so a crash mid-append leaves the previous version intact
(its half-written files are never referenced) and running the build again resumes. One
writer at a time: ids continue from the row count.

**Search.** Below :data:`MIN_INDEX_ROWS` rows LanceDB scans every vector (exact, and fast at
that size). From there the store keeps an ANN index inside the table, ``IVF_HNSW_SQ``: k-means
cells (one per :data:`ROWS_PER_PARTITION` rows; the inverted file of :mod:`crosslab.ann`), an
HNSW graph in each, vectors as 8-bit scalar-quantised codes; its candidates are re-ranked with
the exact vectors (``refine_factor``), so hit scores are exact. Rows added later are scanned
exactly until they reach :data:`REINDEX_FRACTION` of the indexed ones; then the index is
rebuilt on all rows (lancedb's ``optimize()`` would merge them without retraining the cells,
and took longer than a rebuild in lancedb 0.40). Scores are the pipeline's metric, higher =
better, from LanceDB's distances: cosine = 1 - cosine distance, dot = 1 - dot distance
(LanceDB's is ``1 - a.b``), euclidean = -sqrt(l2 distance, which is squared). A fusion has two
embeddings per picture, not one vector: store one of its parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CrosslabError, DataError, ModelError, QueryError, ShapeError

__all__ = ["VectorStore", "StoreHit", "content_key", "check_target", "MIN_INDEX_ROWS"]

FORMAT, VERSION = "crosslab-store", 1
META, PIPELINE_FILE, TABLE = "crosslab-store.json", "pipeline.npz", "images"
INDEX_TYPE = "IVF_HNSW_SQ"
MIN_INDEX_ROWS = 1024  #: below this many rows search is an exact scan (no index)
ROWS_PER_PARTITION = 4096  #: one IVF cell per this many rows
REINDEX_FRACTION = 0.25  #: rebuild the index once rows not in it reach this share of those in it
REFINE_FACTOR = 4  #: re-rank k x this many index candidates with the exact vectors
_DISTANCE = {"cosine": "cosine", "dot": "dot", "euclidean": "l2", "neg_euclidean": "l2"}
_TO_SCORE = {"cosine": lambda d: 1.0 - d, "dot": lambda d: 1.0 - d, "l2": lambda d: -np.sqrt(np.maximum(d, 0))}
# The store's own names in its directory (and atomic_write's temporaries of its two files).
_OWN, _TMP = {META, PIPELINE_FILE, f"{TABLE}.lance"}, (f".{META}.", f".{PIPELINE_FILE}.")


@dataclass(frozen=True)
class StoreHit:
    """One row found: ``id``, ``score`` (the pipeline's metric, higher = better), ``key``,
    ``path`` (None for pictures held in memory) and ``caption`` (None when none was given)."""

    id: int
    score: float
    key: str
    path: str | None
    caption: str | None


def _lancedb() -> Any:
    try:
        import lancedb
    except ImportError:
        raise CrosslabError("the vector store needs LanceDB: pip install lancedb (or, in the course folder: pip install -e '.[scale]').") from None
    # LanceDB warns at every fork of a process that imported it, because a forked child that
    # went on to use LanceDB could deadlock. crosslab's children (subprocess, Ray's workers) exec
    # a new program at once and never share LanceDB's runtime, so the warning is noise here.
    warnings.filterwarnings("ignore", message="lancedb fork support is experimental", category=RuntimeWarning)
    return lancedb


def _rebuild(d: Path) -> str:
    return f"rebuild it with: python -m crosslab index build {d} --overwrite"


def content_key(ref: Any, root: str | Path | None = None) -> str:
    """SHA-256 (hex) of a picture's file bytes, or of an in-memory array's shape, dtype and bytes."""
    if isinstance(ref, np.ndarray):
        a = np.ascontiguousarray(ref)
        return hashlib.sha256(f"{a.shape}{a.dtype}".encode() + a.tobytes()).hexdigest()
    p = Path(ref) if root is None or Path(ref).is_absolute() else Path(root) / ref
    try:
        with open(p, "rb") as fh:  # streamed: a large photo is never held whole
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as e:
        raise DataError(f"{p}: cannot read the picture ({e.strerror}).") from None


def check_target(directory: str | Path, *, overwrite: bool = False) -> Path:
    """The directory a new store may be created in, or a :class:`DataError` saying why not."""
    d = Path(directory).expanduser()
    if d.exists() and not d.is_dir():
        raise DataError(f"{d} is a file; a vector store is a directory.")
    names = set(os.listdir(d)) if d.is_dir() else set()
    foreign = sorted(n for n in names if n not in _OWN and not (n.startswith(_TMP) and n.endswith(".tmp")))
    if foreign:
        raise DataError(f"{d} holds files that are not a crosslab store's ({', '.join(foreign[:3])}"
                        f"{', ...' if len(foreign) > 3 else ''}); choose a new or empty directory "
                        "(crosslab never deletes files it did not write).")
    if names and not overwrite:
        raise DataError(f"{d} already holds a crosslab vector store: open it to add to it (a build resumes), "
                        "or pass overwrite=True (--overwrite) to replace it.")
    return d


class VectorStore:
    """A pipeline's embeddings in one LanceDB directory; make one with :meth:`create` or :meth:`open`."""

    #: Build / rebuild the ANN index after each :meth:`add` (False: add many batches, then :meth:`update_index`).
    auto_index = True

    def __init__(self, directory: Path, meta: dict[str, Any], table: Any, pipeline: Any = None) -> None:
        self.directory, self.meta, self._table, self._pipeline = directory, meta, table, pipeline
        self.dim, self.metric = int(meta["dim"]), str(meta["metric"])
        self._distance = _DISTANCE[self.metric]
        self._keys: set[str] | None = None

    # ----- making and opening ------------------------------------------------------
    @classmethod
    def create(cls, directory: str | Path, pipeline: Any, *, overwrite: bool = False) -> VectorStore:
        """A new, empty store for ``pipeline`` (a single :class:`~crosslab.pipeline.Pipeline`)."""
        from . import __version__
        from ._io import atomic_write_text
        from .pipeline import _np

        if not (hasattr(pipeline, "head") and hasattr(pipeline, "text")):
            raise ModelError(f"pipeline {getattr(pipeline, 'name', pipeline)!r} is a fusion or not a Pipeline: "
                             "it has no single vector per picture. Store one of its parts (e.g. 'cca+glove').")
        if getattr(pipeline, "image_input", "features") not in ("features", "logits"):
            raise ModelError(f"pipeline {pipeline.name!r} reads the CNN's {pipeline.image_input} (not its pooled "
                             "features or logits), which the indexing path does not extract yet: store a pipeline "
                             "such as mlp+minilm.")
        metric = pipeline.head.metric
        if metric not in _DISTANCE:
            raise ModelError(f"pipeline {pipeline.name!r} scores with {metric!r}; a store holds one vector per "
                             f"picture, compared by {list(_DISTANCE)}: use a pipeline such as mlp+minilm.")
        try:  # the embedding width: embed one zero text-feature row
            dim = int(_np(pipeline.head.embed_text(np.zeros((1, pipeline.text.dim), np.float32))).shape[1])
        except Exception as e:
            raise ModelError(f"pipeline {pipeline.name!r}: cannot tell its embedding width ({e}).") from None
        d = check_target(directory, overwrite=overwrite)
        for name in os.listdir(d) if d.is_dir() else ():  # only the store's own names are left here
            (shutil.rmtree if (d / name).is_dir() else os.unlink)(d / name)
        pipeline.save(d / PIPELINE_FILE)
        lancedb = _lancedb()
        table = lancedb.connect(str(d)).create_table(TABLE, schema=_schema(dim))
        meta = {"format": FORMAT, "version": VERSION, "pipeline": pipeline.name, "dim": dim, "metric": metric,
                "lancedb_distance": _DISTANCE[metric], "crosslab_version": __version__,
                "lancedb_version": lancedb.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        atomic_write_text(d / META, json.dumps(meta, indent=1) + "\n")  # last: then the store is complete
        return cls(d, meta, table, pipeline)

    @classmethod
    def open(cls, directory: str | Path) -> VectorStore:
        """Reopen a store (any process); a missing, foreign, damaged or outdated one is a :class:`DataError`."""
        d = Path(directory).expanduser()
        if not d.is_dir():
            raise DataError(f"{d}: no such vector store; build one with: python -m crosslab index build {d}")
        if not (d / META).is_file():
            raise DataError(f"{d} is not a crosslab vector store (it has no {META}); build one with: "
                            "python -m crosslab index build DIR (a new or empty directory).")
        try:
            meta = json.loads((d / META).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise DataError(f"{d / META} is damaged ({type(e).__name__}); {_rebuild(d)}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"{d / META} was not written by crosslab (no format {FORMAT!r}); {_rebuild(d)}")
        if meta.get("version") != VERSION:
            raise DataError(f"{d} is a store of format version {meta.get('version')!r}; this crosslab reads "
                            f"version {VERSION}: {_rebuild(d)}")
        if not (type(meta.get("dim")) is int and meta["dim"] > 0 and meta.get("metric") in _DISTANCE
                and isinstance(meta.get("pipeline"), str) and (d / PIPELINE_FILE).is_file()):
            raise DataError(f"{d} is damaged (its dim, metric or pipeline is missing or wrong); {_rebuild(d)}")
        try:
            table = _lancedb().connect(str(d)).open_table(TABLE)
            width, names = getattr(table.schema.field("vector").type, "list_size", None), set(table.schema.names)
        except CrosslabError:
            raise
        except Exception as e:
            raise DataError(f"{d}: the table {TABLE}.lance is missing or damaged ({type(e).__name__}); "
                            f"{_rebuild(d)}") from None
        if width != meta["dim"] or not {"id", "key", "path", "caption"} <= names:
            raise DataError(f"{d}: the table holds {width}-d vectors but {META} says {meta['dim']}-d; {_rebuild(d)}")
        return cls(d, meta, table)

    # ----- what is in it ---------------------------------------------------------------
    @property
    def pipeline(self) -> Any:
        """The stored pipeline, loaded on first use."""
        if self._pipeline is None:
            from .pipeline import load_pipeline

            self._pipeline = load_pipeline(self.directory / PIPELINE_FILE)
        return self._pipeline

    def __len__(self) -> int:
        return int(self._lance("count the rows", self._table.count_rows))

    def keys(self) -> set[str]:
        """The keys of every stored row (what a resumed build skips)."""
        return set(self._stored_keys())

    def _stored_keys(self) -> set[str]:
        if self._keys is None:
            self._keys = set(self._scan("key")["key"].to_pylist())
        return self._keys

    def vectors(self) -> np.ndarray:
        """Every stored vector, ``(N, dim)`` float32; row ``i`` is id ``i``."""
        t = self._scan("id", "vector")
        return t["vector"].combine_chunks().flatten().to_numpy().reshape(-1, self.dim)[np.argsort(t["id"].to_numpy())]

    def rows(self) -> dict[str, list]:
        """Every stored row as columns, in id order: ``id``, ``key``, ``path``, ``caption``, ``vector``."""
        t = self._scan("id", "key", "path", "caption", "vector")
        order = np.argsort(t["id"].to_numpy(), kind="stable")
        cols = {c: t[c].to_pylist() for c in ("id", "key", "path", "caption")}
        out = {c: [v[i] for i in order] for c, v in cols.items()}
        out["vector"] = list(t["vector"].combine_chunks().flatten().to_numpy().reshape(-1, self.dim)[order])
        return out

    def _scan(self, *columns: str) -> Any:
        return self._lance("read the table", lambda: self._table.search().select(list(columns)).limit(None).to_arrow())

    def _lance(self, what: str, fn: Any) -> Any:
        """``fn()``, with any LanceDB / Arrow error turned into a :class:`DataError` naming the store."""
        try:
            return fn()
        except CrosslabError:
            raise
        except Exception as e:
            raise DataError(f"{self.directory}: could not {what} ({type(e).__name__}: {e}); "
                            f"{_rebuild(self.directory)}") from None

    # ----- writing ---------------------------------------------------------------------
    def add(self, vectors: Any, *, keys: Sequence[str], paths: Sequence[str | None],
            captions: Sequence[str | None] | None = None) -> np.ndarray:
        """Append rows (ids continue from ``len(self)``) and return their ids. Keys must be new."""
        import pyarrow as pa

        try:
            V = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            V = np.zeros(0, np.float32)
        if V.ndim != 2 or V.shape[1] != self.dim:
            raise ShapeError(f"add: vectors must be an (n, {self.dim}) array of numbers, got shape {V.shape}.")
        n = len(V)
        captions = [None] * n if captions is None else list(captions)
        keys, paths = [str(k) for k in keys], [None if p is None else str(p) for p in paths]
        if not (len(keys) == len(paths) == len(captions) == n):
            raise ShapeError(f"add: {n} vectors but {len(keys)} keys, {len(paths)} paths, {len(captions)} captions.")
        if len(bad := np.flatnonzero(~np.isfinite(V).all(1))):
            raise ShapeError(f"add: rows {bad[:5].tolist()} hold NaN or infinite values.")
        if self.metric == "cosine" and len(zero := np.flatnonzero(~V.any(1))):
            raise ShapeError(f"add: rows {zero[:5].tolist()} are zero vectors, which have no cosine.")
        if len(set(keys)) != n or not self._stored_keys().isdisjoint(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1} | (set(keys) & self._stored_keys()))[:3]
            raise ShapeError(f"add: keys {dup} are repeated or already stored; skip those in store.keys().")
        if n == 0:
            return np.zeros(0, np.int64)
        ids = np.arange(len(self), len(self) + n, dtype=np.int64)
        rows = pa.table({"id": ids, "key": keys, "path": paths, "caption": captions,
                         "vector": pa.FixedSizeListArray.from_arrays(pa.array(V.ravel()), self.dim)},
                        schema=_schema(self.dim))
        self._lance("append the rows", lambda: self._table.add(rows))  # one new version of the table
        self._stored_keys().update(keys)
        if self.auto_index:
            self.update_index()
        return ids

    def add_dataset(self, ds: Any, *, progress: bool = True) -> int:
        """Embed ``ds``'s pictures with the pipeline and add those not stored yet (by :func:`content_key`;
        a picture that appears twice, once); returns how many were added."""
        from .pipeline import _first_caption, _image_path

        have, keys, rows = self._stored_keys(), [content_key(ref, ds.root) for ref in ds.images], {}
        for i, k in enumerate(keys):
            if k not in have:
                rows.setdefault(k, i)
        rows = list(rows.values())
        if not rows:
            return 0
        V = np.asarray(self.pipeline.encode_image(ds, progress=progress))[rows]  # cached per pipeline and data
        auto, self.auto_index = self.auto_index, False
        try:
            for s in range(0, len(rows), 65536):  # one version per chunk: a crash loses one chunk at most
                part = rows[s:s + 65536]
                self.add(V[s:s + 65536], keys=[keys[i] for i in part], paths=[_image_path(ds, i) for i in part],
                         captions=[_first_caption(ds, i) for i in part])
        finally:
            self.auto_index = auto
        if auto:
            self.update_index()
        return len(rows)

    # ----- the index -------------------------------------------------------------------
    def index_stats(self) -> tuple[int, int] | None:
        """``(rows in the ANN index, newer rows not in it)``, or None when there is no index."""
        for ix in self._lance("list the indices", self._table.list_indices):
            if list(ix.columns) == ["vector"]:
                return int(ix.num_indexed_rows), int(ix.num_unindexed_rows)
        return None

    def build_index(self, *, min_rows: int = MIN_INDEX_ROWS) -> bool:
        """(Re)build the ANN index on all rows if there are ``min_rows``; False (exact scans) if not."""
        from lancedb.index import IvfHnswSq

        n = len(self)
        if n < max(1, min_rows):
            return False
        config = IvfHnswSq(distance_type=self._distance, num_partitions=max(1, n // ROWS_PER_PARTITION))
        self._lance("build the index", lambda: self._table.create_index("vector", config=config, replace=True))
        return True

    def update_index(self) -> bool:
        """Build the index once the store is big enough, rebuild it once the rows not in it reach
        :data:`REINDEX_FRACTION`; True if it (re)built."""
        stats = self.index_stats()
        return self.build_index() if stats is None or stats[1] >= REINDEX_FRACTION * stats[0] else False

    # ----- search ------------------------------------------------------------------------
    def search(self, vector: Any, k: int = 10, *, exact: bool = False) -> list[StoreHit]:
        """The ``k`` rows nearest ``vector`` (``(dim,)``), best first; ``exact`` scans past the index."""
        try:
            q = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError):
            q = np.zeros(0, np.float32)
        q = q.reshape(-1) if q.ndim == 2 and len(q) == 1 else q
        if q.shape != (self.dim,) or not np.isfinite(q).all():
            raise QueryError(f"search: the query must be {self.dim} finite numbers, got shape {np.shape(vector)}.")
        if not isinstance(k, int | np.integer) or k < 1:
            raise QueryError(f"search: k must be a positive integer, got {k!r}.")
        if len(self) == 0:
            return []

        def run() -> Any:
            s = self._table.search(q, vector_column_name="vector").distance_type(self._distance).limit(int(k))
            if exact:
                s = s.bypass_vector_index()
            elif self.index_stats() is not None:
                s = s.ef(max(100, 2 * int(k))).refine_factor(REFINE_FACTOR)
            return s.select(["id", "key", "path", "caption", "_distance"]).to_arrow()

        t = self._lance("search", run)
        scores = _TO_SCORE[self._distance](t["_distance"].to_numpy().astype(np.float64))
        cols = [t[c].to_pylist() for c in ("id", "key", "path", "caption")]
        hits = [StoreHit(i, float(s), key, path, cap) for s, i, key, path, cap in zip(scores, *cols, strict=True)]
        return sorted(hits, key=lambda h: (-h.score, h.id))

    def search_text(self, query: str, k: int = 10, *, exact: bool = False) -> list[StoreHit]:
        """The ``k`` pictures that best match ``query``, encoded by the stored pipeline."""
        if not isinstance(query, str) or not query.strip():
            raise QueryError("type a few words describing an image, e.g. 'a red car'.")
        return self.search(np.asarray(self.pipeline.encode_text(query))[0], k, exact=exact)

    def describe(self) -> str:
        """What the store holds and how it searches, in words."""
        n, stats = len(self), self.index_stats()
        if stats is None:
            how = "exact scan of every vector " + (f"(no ANN index below {MIN_INDEX_ROWS:,} rows)" if n < MIN_INDEX_ROWS
                                                   else "(no ANN index yet: call update_index())")
        else:
            cells = max(1, stats[0] // ROWS_PER_PARTITION)
            how = (f"ANN index {INDEX_TYPE} ({cells} IVF cell{'s' * (cells > 1)}) on {stats[0]:,} rows, re-ranked "
                   f"exactly x{REFINE_FACTOR}" + (f"; {stats[1]:,} newer rows scanned exactly" if stats[1] else ""))
        return (f"vector store {self.directory}: {n:,} images, {self.dim}-d vectors of pipeline "
                f"{self.meta['pipeline']!r} ({self.metric}); search: {how}.")

    __repr__ = describe


def _schema(dim: int) -> Any:
    import pyarrow as pa

    return pa.schema([("id", pa.int64()), ("key", pa.string()), ("path", pa.string()), ("caption", pa.string()),
                      ("vector", pa.list_(pa.float32(), dim))])
