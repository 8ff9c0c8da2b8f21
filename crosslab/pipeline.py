"""A fitted pipeline: text encoder + image encoder + head, the package's one currency.

    p = cl.create_pipeline("mlp+minilm", ds)   # the table (crosslab.pipelines): fit on train, choose on val
    p.search("a red apple", k=5)               # [Hit(id, score, caption, path, image), ...]
    p.describe(picture, k=5)                   # image -> the gallery's best captions
    p.scores(["a red apple"], ds)              # (1, N), higher = better
    p.save("apple.npz"); cl.load_pipeline("apple.npz", gallery=ds)

Every pipeline honours one small interface, :class:`Retriever`: ``encode_text``,
``encode_image`` (to opaque embeddings) and ``score`` (embeddings -> a ``(n, N)`` score
matrix, higher = better). Search, evaluation, the apps and the commands use nothing
else, so a new kind of model is one more class here (or one more head) and one more
entry in the table, never a special case in a caller.

* :class:`Pipeline` -- one head (:class:`Head`: linear/MLP towers, random, CCA,
  regularised CCA, ConSE, ...) between a text encoder (:mod:`crosslab.text_encoders`)
  and an image encoder (:mod:`crosslab.image`) whose pooled features or ImageNet
  logits it reads.
* :class:`FusionPipeline` -- a pipeline made of two pipelines: each scores the
  gallery, the scores are z-scored per query (``axis``) and mixed,
  ``(1 - w) z(a) + w z(b)`` (:func:`crosslab.zeroshot.fused_scores`).

Saved as one ``.npz`` file: a JSON config and plain arrays, loaded with
``allow_pickle=False`` and checked against a SHA-256 of its contents, so a foreign,
truncated or edited file is refused with a clear error.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .errors import ModelError, QueryError

__all__ = ["Head", "Retriever", "Pipeline", "FusionPipeline", "Hit", "load_pipeline", "from_arrays", "FORMAT"]

FORMAT = "crosslab-pipeline/1"
#: What a pipeline's head reads of a picture: pooled CNN features, ImageNet logits, the CNN's grid, or
#: the activations below the CNN's top blocks (a head that fine-tunes them, :mod:`crosslab.finetune`).
IMAGE_INPUTS = ("features", "logits", "grid", "trunk")


@runtime_checkable
class Head(Protocol):
    """What maps text features ``(C, n)`` and image features ``(N, m)`` into one space ``(., d)``.

    ``metric`` is the :mod:`crosslab.similarity` metric the two outputs are compared with.
    A head whose outputs are not one vector per item (attention: a vector per word and per
    region) defines ``score(T, V) -> (n, N)`` instead and names its own ``metric``.
    ``to_arrays`` / ``from_arrays`` persist it as plain arrays (no pickle).
    """

    metric: str

    def embed_text(self, X: np.ndarray) -> Any: ...

    def embed_image(self, Y: np.ndarray) -> Any: ...

    def to_arrays(self) -> dict[str, np.ndarray]: ...


def _heads() -> dict[str, Any]:
    """Head classes by name, for loading (the only place that lists them)."""
    from .attention import AttentionHead
    from .baselines import CCAModel, RandomModel, RegularizedCCA
    from .finetune import FineTunedHead
    from .joint import JointModel
    from .zeroshot import ConSE

    return {c.__name__: c for c in (JointModel, RandomModel, CCAModel, RegularizedCCA, ConSE, AttentionHead,
                                    FineTunedHead)}


#: Heads that hold torch weights and load onto a device.
_TORCH_HEADS = ("JointModel", "AttentionHead", "FineTunedHead")


@dataclass(frozen=True)
class Hit:
    """One search result: ``id`` (image for text->image, caption for image->text), ``score``
    (higher = better, or the metric's own value), the ``caption`` shown, the ``image`` index
    and its ``path`` (None for images held in memory)."""

    id: int
    score: float
    caption: str
    image: int
    path: str | None


@functools.lru_cache(maxsize=4)
def _image_encoder(name: str, image_size: int, device: str | None) -> Any:
    """One ImageEncoder per (name, size, device) and process: fusions share their CNN."""
    from .image import ImageEncoder

    return ImageEncoder(name, image_size=image_size, device=device)


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _is_dataset(x: Any) -> bool:
    return hasattr(x, "captions") and hasattr(x, "caption_to_image") and hasattr(x, "fingerprint")


def _first_caption(gallery: Any, i: int) -> str:
    """Image ``i``'s first caption, or its id when it has none (a folder of pictures)."""
    caps = gallery.image_captions(i)
    return caps[0] if caps else str(gallery.ids[i])


def _image_path(gallery: Any, i: int) -> str | None:
    ref = gallery.images[i]
    if isinstance(ref, str | Path):
        p = Path(ref)
        return str(p if p.is_absolute() or gallery.root is None else Path(gallery.root) / p)
    return None


class Retriever:
    """The interface every pipeline honours, and the search built on it.

    Subclasses define ``encode_text``, ``encode_image`` and ``score``; embeddings are
    opaque to callers (an array for one head, a pair for a fusion).
    """

    name: str
    kind: str
    gallery: Any = None
    #: A fusion's weight of its second part; None for every other pipeline.
    w: float | None = None

    def encode_text(self, texts: Any, *, rows: Any = None) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def encode_image(self, images: Any, *, rows: Any = None, progress: bool = False) -> Any:  # pragma: no cover
        raise NotImplementedError

    def score(self, T: Any, V: Any, *, axis: int = 1, metric: str | None = None,
              temperature: float = 1.0) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def with_w(self, w: float) -> Retriever:
        """The same pipeline with fusion weight ``w`` (only fusions have one)."""
        raise ModelError(f"pipeline {self.name!r} is not a fusion; it has no weight w.")

    # ----- built on the interface --------------------------------------------
    def scores(self, texts: Any, images: Any, *, axis: int = 1, metric: str | None = None) -> np.ndarray:
        """``(n, N)`` float64 scores of ``texts`` against ``images``, higher = better."""
        return self.score(self.encode_text(texts), self.encode_image(images), axis=axis, metric=metric)

    def _gallery(self, gallery: Any) -> Any:
        g = self.gallery if gallery is None else gallery
        if g is None:
            raise ModelError(
                f"pipeline {self.name!r} has no gallery to search; pass gallery=<a CaptionedImages> "
                "(e.g. crosslab.data.load_clipart())."
            )
        return g

    def search(self, query: str, k: int = 10, gallery: Any = None, *, metric: str | None = None,
               temperature: float = 1.0) -> list[Hit]:
        """The ``k`` gallery images that best match ``query``, best first.

        :class:`~crosslab.errors.QueryError` for an empty query or one with no known word.
        ``metric`` overrides the head's (the apps' dropdown); scores are then that metric's
        "higher = better" form (distances negated).
        """
        from .search import topk

        if not isinstance(query, str) or not query.strip():
            raise QueryError("type a few words describing an image, e.g. 'a red car'.")
        g = self._gallery(gallery)
        S = self.score(self.encode_text(query), self.encode_image(g), axis=1, metric=metric,
                       temperature=temperature)
        vals, ids = topk(S, min(int(k), S.shape[1]))
        return [Hit(int(i), float(v), _first_caption(g, int(i)), int(i), _image_path(g, int(i)))
                for v, i in zip(vals[0], ids[0], strict=True)]

    def describe(self, image: Any, k: int = 5, gallery: Any = None, *, metric: str | None = None,
                 temperature: float = 1.0) -> list[Hit]:
        """The ``k`` gallery captions that best describe ``image`` (PIL, uint8 array or path), best first."""
        from .search import topk

        g = self._gallery(gallery)
        S = self.score(self.encode_text(g), self.encode_image([image]), axis=0, metric=metric,
                       temperature=temperature)
        vals, ids = topk(S.T, min(int(k), S.shape[0]))
        c2i = g.caption_to_image
        return [Hit(int(c), float(v), g.captions[int(c)], int(c2i[int(c)]), _image_path(g, int(c2i[int(c)])))
                for v, c in zip(vals[0], ids[0], strict=True)]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The pipeline as plain arrays: ``config`` (a JSON string) and each part's arrays."""
        config, arrays = self._state()
        return {"config": np.array(json.dumps({"format": FORMAT, **config}, default=float))} | arrays

    def save(self, path: str | Path) -> Path:
        """Write the pipeline to one ``.npz`` file (JSON config + arrays, checksummed), atomically."""
        from ._io import atomic_write
        from .cache import hash_arrays

        body = self.to_arrays()
        body["checksum"] = np.array(hash_arrays(body))
        path = Path(path)
        with atomic_write(path, "wb") as f:
            np.savez(f, **body)
        return path

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:  # pragma: no cover
        raise NotImplementedError


class Pipeline(Retriever):
    """A text encoder, an image encoder and a head.

    Args:
        name, kind: the table's name and kind ("cca", "trained", "zero-shot", ...).
        text: a fitted :class:`~crosslab.text_encoders.TextEncoder`.
        image: ``(encoder name, image size)`` of a :class:`~crosslab.image.ImageEncoder`
            (built on first use, shared between pipelines), or an encoder object with the
            same ``extract`` (e.g. a small stand-in in tests).
        head: a fitted :class:`Head`. image_input: ``"features"`` (pooled CNN features),
            ``"logits"`` (ImageNet logits, for ConSE), ``"grid"`` (the CNN's regions,
            ``(N, h * w, C)``, for attention) or ``"trunk"`` (the activations below the CNN's top
            blocks, ``(N, C, h, w)``, for a head that fine-tunes them).
        choice: what was chosen on val (ridge, T, epochs, ...), for display.
        gallery: the default :class:`~crosslab.data.CaptionedImages` to search.
    """

    def __init__(self, name: str, kind: str, text: Any, image: tuple[str, int], head: Head, *,
                 image_input: str = "features", choice: dict | None = None, gallery: Any = None,
                 device: Any = None) -> None:
        if image_input not in IMAGE_INPUTS:
            raise ModelError(f"image_input must be one of {IMAGE_INPUTS}, got {image_input!r}.")
        if not isinstance(head, Head):
            raise ModelError(f"{name}: the head {type(head).__name__} lacks embed_text / embed_image / to_arrays.")
        self.name, self.kind, self.text, self.head = name, kind, text, head
        self._encoder = None if isinstance(image, tuple | list) else image
        self.image = (str(image[0]), int(image[1])) if self._encoder is None else \
            (str(getattr(image, "name", type(image).__name__)), int(getattr(image, "image_size", 0)))
        self.image_input = image_input
        self.choice = dict(choice or {})
        self.gallery = gallery
        self.device = device
        self._memo: dict[tuple[int, str], tuple[Any, np.ndarray]] = {}

    def __repr__(self) -> str:
        enc, size = self.image
        return (f"Pipeline({self.name!r}, kind={self.kind!r}, text={self.text.name}, "
                f"image={enc}@{size}px {self.image_input}, head={type(self.head).__name__}, "
                f"metric={self.head.metric})")

    @property
    def image_encoder(self) -> Any:
        if self._encoder is not None:
            return self._encoder
        return _image_encoder(*self.image, None if self.device is None else str(self.device))

    # ----- features: what the encoders give ----------------------------------
    def text_features(self, texts: Any) -> np.ndarray:
        """``(n, dim)`` text-encoder features: one query string (QueryError if it has no known
        word), a list of strings, or a dataset's captions (cached on disk)."""
        if isinstance(texts, str):
            return self.text.encode_query(texts)[None]
        if _is_dataset(texts):
            return self.text.transform(texts.captions, cache=True)
        return self.text.transform(list(texts))

    def image_features(self, images: Any, *, progress: bool = False) -> np.ndarray:
        """``(n, m)`` pooled features or logits, or ``(n, h * w, m)`` regions, of a dataset (cached
        on disk), one picture or a list."""
        single = not _is_dataset(images) and not isinstance(images, Sequence | np.ndarray)
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim in (2, 3):
            single = True
        data = [images] if single or isinstance(images, str) else images
        if self.image_input == "grid":
            G = self.image_encoder.extract_grid(data, cache=_is_dataset(data), progress=progress)
            return G.reshape(*G.shape[:2], -1).transpose(0, 2, 1)  # (n, regions, channels)
        if self.image_input == "trunk":
            return self.image_encoder.extract_trunk(data, blocks=self.head.blocks, cache=_is_dataset(data),
                                                    progress=progress)
        feats, logits = self.image_encoder.extract(data, cache=_is_dataset(data), progress=progress,
                                                   return_logits=True)
        return logits if self.image_input == "logits" else feats

    # ----- the interface --------------------------------------------------------
    def _memoised(self, x: Any, what: str, compute: Any) -> Any:
        if not _is_dataset(x):
            return compute()
        key = (id(x), what)
        if key not in self._memo or self._memo[key][0] is not x:
            self._memo[key] = (x, compute())
        return self._memo[key][1]

    def encode_text(self, texts: Any, *, rows: Any = None) -> np.ndarray:
        """``(n, d)`` joint-space vectors of texts (see :meth:`text_features`); ``rows`` picks
        some captions of a dataset (their features are embedded, not the dataset's)."""
        if rows is not None:
            X = self._memoised(texts, "text-features", lambda: self.text_features(texts))
            return _np(self.head.embed_text(X[np.asarray(rows)]))
        return self._memoised(texts, "text", lambda: _np(self.head.embed_text(self.text_features(texts))))

    def encode_image(self, images: Any, *, rows: Any = None, progress: bool = False) -> np.ndarray:
        """``(n, d)`` joint-space vectors of images (see :meth:`image_features`); ``rows`` as for text."""
        if rows is not None:
            Y = self._memoised(images, "image-features", lambda: self.image_features(images, progress=progress))
            return _np(self.head.embed_image(Y[np.asarray(rows)]))
        if not _is_dataset(images):
            return _np(self.head.embed_image(self.image_features(images, progress=progress)))
        return self._memoised(images, "image", lambda: self._gallery_embeddings(images, progress))

    def _gallery_embeddings(self, ds: Any, progress: bool) -> np.ndarray:
        """A dataset's embeddings, cached on disk by the pipeline's content and the images': a
        search in a new process then needs neither the CNN nor the images' features."""
        from .cache import FeatureCache, hash_arrays

        def compute() -> dict[str, np.ndarray]:
            return {"embeddings": _np(self.head.embed_image(self.image_features(ds, progress=progress)))}

        if self._encoder is not None:  # a stand-in image encoder (tests): nothing identifies it on disk
            return compute()["embeddings"]
        if not hasattr(self, "_hash"):
            self._hash = hash_arrays(self.to_arrays())[:24]
        weights = None
        if self.image[0] == "efficientnet_lite0":
            from .image_models import lite0_weights_path, weights_file_hash

            weights = weights_file_hash(str(lite0_weights_path()))
        arrays, _ = FeatureCache(namespace="pipelines").get_or_compute(
            {"kind": "pipeline-gallery", "pipeline": self._hash, "weights": weights, "dataset": ds.fingerprint(),
             "n": len(ds)},
            compute, label=f"gallery-{str(ds.name).split('/')[0]}")
        return arrays["embeddings"]

    def score(self, T: Any, V: Any, *, axis: int = 1, metric: str | None = None,
              temperature: float = 1.0) -> np.ndarray:
        """``(n, N)`` float64 scores, higher = better (``axis`` matters only to fusions)."""
        from .similarity import scores

        if hasattr(self.head, "score"):  # a head with its own score (attention) has no metric to choose
            if metric not in (None, self.head.metric):
                raise ModelError(f"pipeline {self.name!r} scores with {self.head.metric}, over each word and "
                                 f"region; it has no {metric!r} to choose. Leave metric unset.")
            return np.asarray(self.head.score(T, V), dtype=np.float64)
        S = scores(T, V, metric or self.head.metric, temperature=temperature)
        return np.asarray(_np(S), dtype=np.float64)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config = {"type": "single", "name": self.name, "kind": self.kind, "head": type(self.head).__name__,
                  "image": list(self.image), "image_input": self.image_input, "choice": self.choice}
        arrays = {f"text/{k}": v for k, v in self.text.to_arrays().items()}
        arrays |= {f"head/{k}": v for k, v in self.head.to_arrays().items()}
        return config, arrays


class FusionPipeline(Retriever):
    """Two pipelines ranked by ``(1 - w) z(a) + w z(b)``, z over the gallery of each query.

    Embeddings are pairs (one per part). ``axis=1`` z-scores each text's row over the
    images (text->image), ``axis=0`` each image's column over the texts (image->text).
    A ``metric`` given to :meth:`score` applies to both parts.
    """

    kind = "fusion"

    def __init__(self, name: str, a: Retriever, b: Retriever, w: float, *, choice: dict | None = None) -> None:
        if not (isinstance(w, int | float) and np.isfinite(w) and 0 <= w <= 1):
            raise ModelError(f"fusion {name!r}: the weight w must be in [0, 1], got {w!r}.")
        self.name, self.a, self.b, self.w = name, a, b, float(w)
        self.choice = dict(choice or {})

    def __repr__(self) -> str:
        return f"FusionPipeline({self.name!r}, w={self.w:g}, a={self.a!r}, b={self.b!r})"

    @property
    def gallery(self) -> Any:  # type: ignore[override]
        return self.a.gallery

    @gallery.setter
    def gallery(self, ds: Any) -> None:
        self.a.gallery = self.b.gallery = ds

    def with_w(self, w: float) -> FusionPipeline:
        return FusionPipeline(self.name, self.a, self.b, w, choice=self.choice)

    def encode_text(self, texts: Any, *, rows: Any = None) -> tuple[Any, Any]:
        return self.a.encode_text(texts, rows=rows), self.b.encode_text(texts, rows=rows)

    def encode_image(self, images: Any, *, rows: Any = None, progress: bool = False) -> tuple[Any, Any]:
        return (self.a.encode_image(images, rows=rows, progress=progress),
                self.b.encode_image(images, rows=rows, progress=progress))

    def score(self, T: Any, V: Any, *, axis: int = 1, metric: str | None = None,
              temperature: float = 1.0) -> np.ndarray:
        from .zeroshot import fused_scores

        kw = {"axis": axis, "metric": metric, "temperature": temperature}
        return fused_scores(self.a.score(T[0], V[0], **kw), self.b.score(T[1], V[1], **kw), self.w, axis)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config: dict[str, Any] = {"type": "fusion", "name": self.name, "kind": self.kind, "w": self.w,
                                  "choice": self.choice}
        arrays: dict[str, np.ndarray] = {}
        for part, p in (("a", self.a), ("b", self.b)):
            c, arr = p._state()
            config[part] = c
            arrays |= {f"{part}/{k}": v for k, v in arr.items()}
        return config, arrays


# ----------------------------------------------------------------------------- loading
def _sub(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _build(config: dict[str, Any], arrays: dict[str, np.ndarray], gallery: Any, device: Any) -> Retriever:
    from .text_encoders import text_encoder_from_arrays

    if config["type"] == "fusion":
        a = _build(config["a"], _sub(arrays, "a/"), gallery, device)
        b = _build(config["b"], _sub(arrays, "b/"), gallery, device)
        return FusionPipeline(config["name"], a, b, config["w"], choice=config.get("choice"))
    heads = _heads()
    if config["head"] not in heads:
        raise ModelError(f"unknown head {config['head']!r}; known: {sorted(heads)}.")
    head_arrays = _sub(arrays, "head/")
    cls = heads[config["head"]]
    head = cls.from_arrays(head_arrays, device=device) if config["head"] in _TORCH_HEADS else \
        cls.from_arrays(head_arrays)
    text = text_encoder_from_arrays(_sub(arrays, "text/"), device=device)
    return Pipeline(config["name"], config["kind"], text, tuple(config["image"]), head,
                    image_input=config["image_input"], choice=config.get("choice"), gallery=gallery,
                    device=device)


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a saved pipeline file, after checking its format and checksum."""
    from .cache import hash_arrays

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such pipeline file; save one with pipeline.save(path).")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        raw = str(arrays.pop("config"))
        checksum = str(arrays.pop("checksum"))
        config = json.loads(raw)
    except Exception as e:  # zip, npy, JSON and key errors: all mean "not one of ours"
        raise ModelError(
            f"{path} is not a crosslab pipeline file, or it is damaged ({type(e).__name__}). "
            "Re-create it with crosslab.create_pipeline(...).save(path)."
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelError(f"{path} is not a crosslab pipeline ({FORMAT}) file.")
    body = {"config": np.array(raw)} | arrays
    if hash_arrays(body) != checksum:
        raise ModelError(
            f"{path} does not match its checksum: it was changed or damaged after it was saved. "
            "Re-create it with crosslab.create_pipeline(...).save(path)."
        )
    return body


def from_arrays(body: dict[str, np.ndarray], *, gallery: Any = None, device: Any = None,
                where: str = "these arrays") -> Retriever:
    """Rebuild a pipeline from :meth:`Retriever.to_arrays` output (a cache entry, a loaded file)."""
    try:
        arrays = dict(body)
        config = json.loads(str(arrays.pop("config")))
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ModelError(f"{where} do not hold a crosslab pipeline ({FORMAT}).")
        return _build(config, arrays, gallery, device)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"{where}: the pipeline's config or arrays are incomplete ({type(e).__name__}: {e}).") \
            from None


def load_pipeline(path: str | Path, *, gallery: Any = None, device: Any = None) -> Retriever:
    """Load a pipeline saved with :meth:`Retriever.save`; ``gallery`` is what :meth:`search` searches."""
    body = read_arrays(path)
    return from_arrays(body, gallery=gallery, device=device, where=str(path))
