"""Search apps for the course: type words and get pictures, pick a picture and get captions.

Two layers, so the logic can be tested without a browser:

* :class:`CrossModalSearch` -- the search engine. It holds a gallery (a
  :class:`~crosslab.data.CaptionedImages`) and one or more :class:`SearchModel`
  (a text encoder, an image encoder and a model with ``embed_text`` /
  ``embed_image``: a trained :class:`~crosslab.joint.JointModel` or a CCA
  baseline, or ConSE with ImageNet logits as its image features). The gallery's
  images and captions are embedded once; a query is embedded on the fly and
  ranked with :class:`~crosslab.retrieval.Index` under the chosen metric
  (cosine, Euclidean or KL divergence). A :class:`FusionSearchModel` combines two
  of them at the level of scores (lesson 07): each ranks the whole gallery, the
  scores are z-scored per query and mixed, ``(1 - w) z(a) + w z(b)``.
  :func:`beyond_search_models` turns :func:`crosslab.beyond.fit_beyond`'s models
  into search models.
* :class:`TextToImageApp` and :class:`ImageToTextApp` -- ipywidgets views over
  an engine. Every control is an attribute (``app.query``, ``app.k``,
  ``app.metric``, ``app.model``...), so a test sets ``app.query.value = "red car"``
  and reads ``app.hits`` and ``app.message.value``.

Widgets never ``print``: output goes into HTML / Image widgets (a ``print`` inside
``with output:`` leaks into the cell's stdout under nbval).
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as W
import numpy as np
from PIL import Image

from .data.base import CaptionedImages, to_rgb
from .errors import CrosslabError, ImageError, QueryError
from .retrieval import Index

__all__ = [
    "APP_METRICS", "Hit", "SearchModel", "CrossModalSearch", "TextToImageApp", "ImageToTextApp",
    "build_search", "png_bytes", "split_arrays", "fit_search_models", "FusionSearchModel",
    "beyond_search_models",
]

#: The metrics the apps offer: label -> crosslab.similarity metric name.
APP_METRICS = {"cosine": "cosine", "euclidean": "euclidean", "KL divergence": "kl"}


# ----------------------------------------------------------------------------- engine
@dataclass
class Hit:
    """One search result: gallery ``index`` (image or caption), the metric's ``value`` and its text."""

    index: int
    value: float
    text: str
    image: int  # the image shown with it (== index for text->image)


@dataclass
class SearchModel:
    """What it takes to search with one model.

    Args:
        name: label shown in the model dropdown.
        model: has ``embed_text((C, n)) -> (C, d)`` and ``embed_image((N, m)) -> (N, d)``.
        encode_text: one query string -> ``(n,)`` text features; raises QueryError for
            empty or fully-unknown queries (``SentenceEncoder.encode_query`` does).
        encode_images: list of PIL images -> ``(B, m)`` image features (for uploads).
        image_features: ``(N, m)`` features of the gallery images.
        caption_features: ``(C, n)`` features of the gallery captions.
    """

    name: str
    model: Any
    encode_text: Callable[[str], np.ndarray]
    encode_images: Callable[[list[Image.Image]], np.ndarray]
    image_features: np.ndarray
    caption_features: np.ndarray
    _emb: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def image_embeddings(self) -> np.ndarray:
        """``(N, d)`` gallery images in the joint space (computed once)."""
        if "image" not in self._emb:
            self._emb["image"] = _np(self.model.embed_image(self.image_features))
        return self._emb["image"]

    def caption_embeddings(self) -> np.ndarray:
        """``(C, d)`` gallery captions in the joint space (computed once)."""
        if "text" not in self._emb:
            self._emb["text"] = _np(self.model.embed_text(self.caption_features))
        return self._emb["text"]


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


@dataclass
class FusionSearchModel:
    """A score-level model: two :class:`SearchModel` ranked by ``(1 - w) z(a) + w z(b)``.

    For a query, each component scores the *whole* gallery with the chosen metric
    (turned into "higher = better": distances are negated, as in
    :func:`crosslab.similarity.scores`); each score vector is z-scored over the gallery
    (:func:`crosslab.zeroshot.fused_scores`, the evaluation's code) and the two are mixed.
    So the app's metric dropdown applies to *both* components, and a hit's value is the
    fused z-score (higher = better, whatever the metric): how many standard deviations
    the item stands out from the gallery for this query.

    Args:
        name: label shown in the model dropdown.
        a, b: the two components (each may read its own features: CNN features for CCA,
            ImageNet logits for ConSE); they must share the gallery.
        w: weight of ``b`` in [0, 1] (0: ``a`` alone, 1: ``b`` alone), e.g. chosen on val.
    """

    name: str
    a: SearchModel
    b: SearchModel
    w: float

    def __post_init__(self) -> None:
        if not (isinstance(self.w, int | float) and 0 <= self.w <= 1):
            raise CrosslabError(f"fusion {self.name!r}: the weight w must be in [0, 1], got {self.w!r}.")
        self.w = float(self.w)

    @property
    def components(self) -> tuple[SearchModel, SearchModel]:
        return self.a, self.b


def _fused(
    qa: np.ndarray, qb: np.ndarray, items_a: np.ndarray, items_b: np.ndarray, w: float, metric: str,
    temperature: float,
) -> np.ndarray:
    """``(n, M)`` fused z-scores of queries ``qa``/``qb`` against items, per query row."""
    from .similarity import scores
    from .zeroshot import fused_scores

    Sa = scores(qa, items_a, metric, temperature=temperature)
    Sb = scores(qb, items_b, metric, temperature=temperature)
    return fused_scores(Sa, Sb, w, axis=1)


def _top(S: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best ``(values, ids)`` of one score row ``(M,)``, ties to the lower id."""
    from .retrieval import topk

    vals, ids = topk(np.asarray(S, dtype=np.float64)[None], min(int(k), len(S)))
    return np.asarray(vals)[0], np.asarray(ids)[0]


class CrossModalSearch:
    """Search a gallery by text (-> images) or by image (-> captions) with one of several models.

    ``kl_temperature`` is the softmax temperature that turns joint-space vectors into
    distributions for the KL divergence (lesson 04 explains why KL needs one).
    """

    def __init__(
        self,
        gallery: CaptionedImages,
        models: SearchModel | FusionSearchModel | Sequence[SearchModel | FusionSearchModel],
        kl_temperature: float = 0.1,
    ) -> None:
        if isinstance(models, SearchModel | FusionSearchModel):
            models = [models]
        models = list(models)
        if not models:
            raise CrosslabError("CrossModalSearch needs at least one SearchModel.")
        for m in models:
            parts = m.components if isinstance(m, FusionSearchModel) else (m,)
            for p in parts:
                if len(p.image_features) != len(gallery) or len(p.caption_features) != gallery.n_captions:
                    raise CrosslabError(
                        f"model {m.name!r}: {len(p.image_features)} image / {len(p.caption_features)} "
                        f"caption features for a gallery of {len(gallery)} images / "
                        f"{gallery.n_captions} captions; compute them on the same dataset."
                    )
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise CrosslabError(f"model names must be unique, got {names}.")
        self.gallery = gallery
        self.models: dict[str, SearchModel | FusionSearchModel] = {m.name: m for m in models}
        self.kl_temperature = float(kl_temperature)
        self._indexes: dict[tuple[str, str, str], Index] = {}

    @property
    def model_names(self) -> list[str]:
        return list(self.models)

    def is_fusion(self, name: str | None = None) -> bool:
        """Whether model ``name`` (default: the first) is a :class:`FusionSearchModel`."""
        return isinstance(self._model(name), FusionSearchModel)

    def _model(self, name: str | None) -> SearchModel | FusionSearchModel:
        if name is None:
            return next(iter(self.models.values()))
        if name not in self.models:
            raise CrosslabError(f"unknown model {name!r}; choose one of {self.model_names}.")
        return self.models[name]

    def _index(self, m: SearchModel, what: str, metric: str) -> Index:
        key = (m.name, what, metric)
        if key not in self._indexes:
            items = m.image_embeddings() if what == "image" else m.caption_embeddings()
            self._indexes[key] = Index(metric, temperature=self.kl_temperature).add(items)
        return self._indexes[key]

    @staticmethod
    def _embed_query(m: SearchModel, query: str) -> np.ndarray:
        """``(1, d)`` joint-space vector of a text query (QueryError from the encoder)."""
        x = np.asarray(m.encode_text(query), dtype=np.float32)[None]
        return _np(m.model.embed_text(x))

    @staticmethod
    def _embed_picture(m: SearchModel, image: Image.Image) -> np.ndarray:
        """``(1, d)`` joint-space vector of one picture."""
        y = np.asarray(m.encode_images([image]), dtype=np.float32)
        return _np(m.model.embed_image(y))

    def _fusion_w(self, m: FusionSearchModel, w: float | None) -> float:
        if w is None:
            return m.w
        if not (isinstance(w, int | float) and 0 <= w <= 1):
            raise CrosslabError(f"the fusion weight w must be in [0, 1], got {w!r}.")
        return float(w)

    def text_to_image(
        self, query: str, k: int = 8, metric: str = "cosine", model: str | None = None,
        w: float | None = None,
    ) -> list[Hit]:
        """The ``k`` gallery images that best match ``query``, best first.

        For a fusion model the values are fused z-scores (higher = better) and ``w``
        overrides its weight; other models ignore ``w``.
        Raises :class:`QueryError` for an empty query or one without any known word.
        """
        if not isinstance(query, str) or not query.strip():
            raise QueryError("type a few words describing an image, e.g. 'a red car'.")
        m = self._model(model)
        if isinstance(m, FusionSearchModel):
            S = _fused(self._embed_query(m.a, query), self._embed_query(m.b, query),
                       m.a.image_embeddings(), m.b.image_embeddings(), self._fusion_w(m, w), metric,
                       self.kl_temperature)
            vals, ids = _top(S[0], k)
        else:
            vals, ids = (r[0] for r in self._index(m, "image", metric).search(self._embed_query(m, query), k))
        return [
            Hit(int(i), float(v), self.gallery.image_captions(int(i))[0], int(i))
            for v, i in zip(vals, ids, strict=True)
        ]

    def image_to_text(
        self, image: Image.Image | np.ndarray, k: int = 5, metric: str = "cosine",
        model: str | None = None, w: float | None = None,
    ) -> list[Hit]:
        """The ``k`` gallery captions that best describe ``image`` (PIL or uint8 array), best first.

        For a fusion model the values are fused z-scores over the gallery's captions.
        """
        m = self._model(model)
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise ImageError(f"expected a PIL image or a uint8 array, got {type(image).__name__}.")
        image = to_rgb(image)
        if isinstance(m, FusionSearchModel):
            S = _fused(self._embed_picture(m.a, image), self._embed_picture(m.b, image),
                       m.a.caption_embeddings(), m.b.caption_embeddings(), self._fusion_w(m, w), metric,
                       self.kl_temperature)
            vals, ids = _top(S[0], k)
        else:
            vals, ids = (r[0] for r in self._index(m, "text", metric).search(self._embed_picture(m, image), k))
        c2i = self.gallery.caption_to_image
        return [
            Hit(int(c), float(v), self.gallery.captions[int(c)], int(c2i[int(c)]))
            for v, c in zip(vals, ids, strict=True)
        ]


def build_search(
    gallery: CaptionedImages,
    models: Mapping[str, Any],
    text_encoder: Any,
    image_encoder: Any,
    *,
    caption_features: np.ndarray | None = None,
    image_features: np.ndarray | None = None,
    kl_temperature: float = 0.1,
) -> CrossModalSearch:
    """A :class:`CrossModalSearch` from fitted models sharing one text and one image encoder.

    ``text_encoder``: a fitted :class:`~crosslab.text.SentenceEncoder`; ``image_encoder``:
    an :class:`~crosslab.image.ImageEncoder`. Gallery features are computed (and cached)
    unless given.
    """
    if caption_features is None:
        caption_features = text_encoder.transform(gallery.captions)
    if image_features is None:
        image_features = image_encoder.extract(gallery, progress=False)

    def encode_images(ims: list[Image.Image]) -> np.ndarray:
        return image_encoder.extract(ims, cache=False, progress=False)

    return CrossModalSearch(
        gallery,
        [
            SearchModel(name, model, text_encoder.encode_query, encode_images,
                        image_features, caption_features)
            for name, model in models.items()
        ],
        kl_temperature=kl_temperature,
    )


def split_arrays(
    ds: CaptionedImages, X: np.ndarray, Y: np.ndarray, split: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``(text (C_s, n), image (N_s, m), caption_to_image (C_s,))`` rows of one split of ``ds``."""
    from .recipes import split_features

    return split_features(ds, X, Y, split).as_tuple()


#: How the apps' models are trained: linear towers (lesson 03), small enough to fit in
#: seconds on a laptop CPU. (``crosslab.recipes`` holds the evaluation's tuned recipe.)
APP_TRAINING: dict[str, Any] = dict(
    head="linear", lr=1e-3, weight_decay=1e-4, batch_size=128, epochs=40, patience=8, seed=0,
)
APP_LOSS_SETTINGS: dict[str, dict[str, Any]] = {
    "infonce": dict(temperature=0.07), "hinge": dict(margin=0.2),
    "max_violation": dict(margin=0.2), "bce": dict(temperature=0.1, n_negatives=15),
}


def fit_search_models(
    ds: CaptionedImages, X: np.ndarray, Y: np.ndarray, *, losses: Sequence[str] = ("infonce",),
    d: int = 256, rcca: bool = True, progress: bool = False, device: Any = None,
) -> dict[str, Any]:
    """Models for the search apps: one linear two-tower model per loss and a regularised CCA.

    ``X`` ``(C, n)``: features of all captions of ``ds``; ``Y`` ``(N, m)``: of all its images.
    Fitted on the train split with :data:`APP_TRAINING` (early stopping on val).
    Returns name -> model, in a stable order.
    """
    from .baselines import RegularizedCCA
    from .joint import fit

    train = split_arrays(ds, X, Y, "train")
    val = split_arrays(ds, X, Y, "val") if np.any(ds.split == "val") else None
    models: dict[str, Any] = {}
    for loss in losses:
        kw = APP_TRAINING | APP_LOSS_SETTINGS.get(loss, {})
        models[f"linear {loss}"], _ = fit(*train, val=val, d=d, loss=loss, progress=progress,
                                          device=device, **kw)
    if rcca:
        models["regularised cca"] = RegularizedCCA(d=min(d, 128), reg=0.1).fit(*train)
    return models


def beyond_search_models(
    setup: Any, names: Sequence[str] | None = None, *, image_encoder: Any = None,
) -> list[SearchModel | FusionSearchModel]:
    """Search models over the gallery ``setup.ds`` from lesson 07's recipe (:func:`crosslab.beyond.fit_beyond`).

    Args:
        setup: a :class:`crosslab.beyond.BeyondSetup` (fitted models, text encoders, and the
            text / image inputs of every caption / image of ``setup.ds``).
        names: which of its models, in this order (default: all but ``random``).
        image_encoder: turns a picked or uploaded picture into pooled features / ImageNet
            logits, ``extract(images, cache=False, progress=False, return_logits=True)``;
            default the recipe's EfficientNet-Lite0, built on first use.

    Each model reads what it was fitted on: a CCA or trained model the text encoder's
    vectors and the CNN features, ConSE the text encoder's vectors and the ImageNet
    logits (``image_features`` = logits ``(N, 1000)``). A fusion becomes a
    :class:`FusionSearchModel` with the val-chosen ``w`` and its two components (shared
    with the components' own entries when those are listed too).
    """
    from .zeroshot import FusionModel

    if names is None:
        names = [bm.name for bm in setup.models if bm.kind != "random"]
    chosen = [setup.model(n) for n in names]
    enc_state: dict[str, Any] = {}

    def encode_images(kind: str) -> Callable[[list[Image.Image]], np.ndarray]:
        def encode(ims: list[Image.Image]) -> np.ndarray:
            if "enc" not in enc_state:
                if image_encoder is None:
                    from .image import ImageEncoder
                    from .recipes import DEFAULT_ENCODER

                    enc_state["enc"] = ImageEncoder(DEFAULT_ENCODER)
                else:
                    enc_state["enc"] = image_encoder
            feats, logits = enc_state["enc"].extract(ims, cache=False, progress=False, return_logits=True)
            return feats if kind == "features" else logits

        return encode

    built: dict[int, SearchModel] = {}  # id(fitted model) -> its SearchModel, so components are shared

    def single(name: str, model: Any, text: str, image: str) -> SearchModel:
        if id(model) not in built:
            if text not in setup.encoders or image not in setup.image:
                raise CrosslabError(
                    f"model {name!r} reads text {text!r} / images {image!r}, which the setup lacks "
                    f"(text: {sorted(setup.encoders)}, images: {sorted(setup.image)})."
                )
            built[id(model)] = SearchModel(name, model, setup.encoders[text].encode_query,
                                           encode_images(image), setup.image[image], setup.text[text])
        return built[id(model)]

    def component_name(model: Any, fallback: str) -> str:
        return next((bm.name for bm in setup.models if bm.model is model), fallback)

    out: list[SearchModel | FusionSearchModel] = []
    for bm in chosen:  # singles first, so a listed component keeps its own name
        if not isinstance(bm.model, FusionModel):
            single(bm.name, bm.model, bm.text, bm.image)
    for bm in chosen:
        if isinstance(bm.model, FusionModel):
            fm = bm.model
            a = single(component_name(fm.a, f"{bm.name}:a"), fm.a, bm.text[0], bm.image[0])
            b = single(component_name(fm.b, f"{bm.name}:b"), fm.b, bm.text[1], bm.image[1])
            out.append(FusionSearchModel(bm.name, a, b, fm.w))
        else:
            out.append(built[id(bm.model)])
    return out


# ----------------------------------------------------------------------------- widgets
def png_bytes(im: Image.Image, size: int = 128) -> bytes:
    """PNG bytes of ``im`` shrunk to fit ``size`` x ``size`` (for ipywidgets.Image)."""
    im = to_rgb(im).copy()
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _format_value(metric: str, v: float, fused: bool = False) -> str:
    if fused:  # a fusion's value is a z-score, higher = better, whatever the metric
        return f"fused z {v:.2f}"
    if metric == "cosine":
        return f"cosine {v:.3f}"
    if metric == "euclidean":
        return f"distance {v:.3f}"
    return f"KL {v:.4f}"


def _message(text: str, kind: str = "info") -> str:
    color = {"info": "#555", "error": "#b00020"}[kind]
    return f'<div style="color:{color};margin:4px 0">{html.escape(text)}</div>'


class _App(W.VBox):
    """Shared controls: top-k slider, metric dropdown, model dropdown (when several).

    A fusion model (:class:`FusionSearchModel`) also shows ``fusion_w``, a slider for its
    weight w (0: first component only, 1: second only), reset to the model's own w
    whenever that model is chosen.
    """

    def __init__(self, search: CrossModalSearch, k: int, max_k: int, thumb: int) -> None:
        self.search = search
        self.thumb = thumb
        self.hits: list[Hit] = []
        self.k = W.IntSlider(value=k, min=1, max=max_k, description="top k")
        self.metric = W.Dropdown(options=list(APP_METRICS.items()), value="cosine", description="metric")
        self.model = W.Dropdown(options=search.model_names, value=search.model_names[0],
                                description="model")
        self.model.layout.display = None if len(search.model_names) > 1 else "none"
        self.fusion_w = W.FloatSlider(value=0.0, min=0.0, max=1.0, step=0.05, description="fusion w",
                                      continuous_update=False, readout_format=".2f")
        self.message = W.HTML()
        self._thumbs: dict[int, bytes] = {}
        self._quiet = False
        super().__init__()
        self._sync_fusion_w()
        for w in (self.k, self.metric, self.fusion_w):
            w.observe(self._on_change, names="value")
        self.model.observe(self._on_model, names="value")

    def _sync_fusion_w(self) -> None:
        """Show the w slider only for a fusion model, set to that model's w (one update, not two)."""
        m = self.search.models[self.model.value]
        fused = isinstance(m, FusionSearchModel)
        self.fusion_w.layout.display = None if fused else "none"
        if fused:
            self._quiet = True
            try:
                self.fusion_w.value = m.w
            finally:
                self._quiet = False

    def _on_model(self, _change: Any = None) -> None:
        self._sync_fusion_w()
        self.update()

    def _on_change(self, _change: Any = None) -> None:
        if not self._quiet:
            self.update()

    @property
    def _fused(self) -> bool:
        return self.search.is_fusion(self.model.value)

    @property
    def _w(self) -> float | None:
        return float(self.fusion_w.value) if self._fused else None

    def _model_label(self) -> str:
        if self._fused:
            return f"{self.model.value}, w={self.fusion_w.value:.2f}, {self.metric.label}"
        return f"{self.model.value}, {self.metric.label}"

    def _thumb(self, i: int) -> bytes:
        if i not in self._thumbs:
            self._thumbs[i] = png_bytes(self.search.gallery.load_image(i), self.thumb)
        return self._thumbs[i]

    def update(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class TextToImageApp(_App):
    """Type a query, see the top-k gallery images with their scores and first captions.

    Controls: ``query`` (Text; updates on Enter or when focus leaves), ``k``, ``metric``,
    ``model``, ``fusion_w`` (fusion models only). Results: ``hits`` (list of :class:`Hit`), ``grid`` (GridBox of
    Image + HTML cards), ``message`` (HTML: what was searched, or what went wrong).
    """

    def __init__(
        self, search: CrossModalSearch, query: str = "", k: int = 8, max_k: int = 24,
        thumb: int = 128, columns: int = 4,
    ) -> None:
        super().__init__(search, k, max_k, thumb)
        self.query = W.Text(value=query, placeholder="describe a picture, e.g. 'red car'",
                            description="query", continuous_update=False,
                            layout=W.Layout(width="60%"))
        self.grid = W.GridBox(layout=W.Layout(
            grid_template_columns=f"repeat({columns}, {thumb + 40}px)", grid_gap="8px"))
        # CSS classes so a browser test (tests/test_browser.py) can find the parts.
        self.query.add_class("crosslab-t2i-query")
        self.grid.add_class("crosslab-t2i-results")
        self.message.add_class("crosslab-t2i-message")
        self.query.observe(self._on_change, names="value")
        self.children = [W.HBox([self.query, self.model]),
                         W.HBox([self.k, self.metric, self.fusion_w]), self.message, self.grid]
        self.update()

    def update(self) -> None:
        """Run the search for the current control values and redraw."""
        q = self.query.value
        metric = self.metric.value
        try:
            self.hits = self.search.text_to_image(q, self.k.value, metric, self.model.value, self._w)
        except QueryError as e:
            self.hits = []
            self.grid.children = []
            empty = not q.strip()
            self.message.value = _message(str(e), "info" if empty else "error")
            return
        self.message.value = _message(
            f"top {len(self.hits)} of {len(self.search.gallery):,} images for {q.strip()!r} "
            f"({self._model_label()})"
        )
        fused = self._fused
        cards = []
        for rank, h in enumerate(self.hits, 1):
            img = W.Image(value=self._thumb(h.image), format="png", width=self.thumb)
            cap = W.HTML(
                f'<div style="font-size:11px;line-height:1.2;width:{self.thumb + 30}px">'
                f"<b>{rank}.</b> {_format_value(metric, h.value, fused)}<br>{html.escape(h.text[:80])}</div>"
            )
            cards.append(W.VBox([img, cap]))
        self.grid.children = cards


class ImageToTextApp(_App):
    """Pick a picture (thumbnail buttons or an upload), see the top-k captions with scores.

    ``choices`` are the pickable pictures: a list of ``(label, PIL image)``; by default the
    real photos of :func:`crosslab.data.load_photos` followed by a few gallery images.
    Controls: ``picker`` (Dropdown of labels; the thumbnail buttons set it), ``upload``
    (FileUpload), ``k``, ``metric``, ``model``, ``fusion_w``. Results: ``hits``, ``table`` (HTML),
    ``preview`` (Image), ``message``.
    """

    def __init__(
        self, search: CrossModalSearch, choices: Sequence[tuple[str, Image.Image]] | None = None,
        k: int = 5, max_k: int = 20, thumb: int = 96,
    ) -> None:
        super().__init__(search, k, max_k, thumb)
        if choices is None:
            choices = default_choices(search.gallery)
        self.choices: list[tuple[str, Image.Image]] = [(str(n), to_rgb(im)) for n, im in choices]
        self.uploaded: Image.Image | None = None
        labels = [n for n, _ in self.choices]
        self.picker = W.Dropdown(options=labels, value=labels[0] if labels else None,
                                 description="picture")
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="upload")
        buttons = []
        for i, (name, im) in enumerate(self.choices):
            b = W.Button(description=name[:14], tooltip=name, layout=W.Layout(width=f"{thumb}px"))
            b.on_click(lambda _b, i=i: self._pick(i))
            buttons.append(W.VBox([W.Image(value=png_bytes(im, thumb), format="png", width=thumb), b]))
        self.thumbnails = W.GridBox(buttons, layout=W.Layout(
            grid_template_columns=f"repeat(auto-fill, {thumb + 8}px)", grid_gap="4px"))
        self.preview = W.Image(format="png", width=160)
        self.table = W.HTML()
        self.picker.observe(self._on_pick, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.children = [self.thumbnails, W.HBox([self.picker, self.upload, self.model]),
                         W.HBox([self.k, self.metric, self.fusion_w]), self.message,
                         W.HBox([self.preview, self.table])]
        self.update()

    def _pick(self, i: int) -> None:
        self.uploaded = None
        if self.picker.value == self.choices[i][0]:
            self.update()
        else:
            self.picker.value = self.choices[i][0]  # triggers update

    def _on_pick(self, _change: Any = None) -> None:
        self.uploaded = None
        self.update()

    def _on_upload(self, change: Any) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        name = f.get("name", "upload") if isinstance(f, Mapping) else getattr(f, "name", "upload")
        content = f["content"] if isinstance(f, Mapping) else f.content
        self.set_upload(bytes(content), name)

    def set_upload(self, content: bytes, name: str = "upload") -> None:
        """Use the image file ``content`` (bytes) as the query; a bad file gives a message."""
        try:
            with Image.open(io.BytesIO(content)) as im:
                im.load()
                self.uploaded = to_rgb(im)
            self.uploaded_name = name
        except Exception as e:  # PIL raises many kinds for a non-image file
            self.uploaded = None
            self.hits = []
            self.table.value = ""
            self.message.value = _message(
                f"could not read {name!r} as an image ({type(e).__name__}); upload a PNG or JPEG.",
                "error")
            return
        self.update()

    @property
    def current(self) -> tuple[str, Image.Image] | None:
        """The picture being searched with: the upload if any, else the picked choice."""
        if self.uploaded is not None:
            return self.uploaded_name, self.uploaded
        for name, im in self.choices:
            if name == self.picker.value:
                return name, im
        return None

    def update(self) -> None:
        """Rank the gallery's captions for the current picture and redraw."""
        cur = self.current
        if cur is None:
            self.hits, self.table.value = [], ""
            self.message.value = _message("pick a picture or upload one.")
            return
        name, im = cur
        metric = self.metric.value
        self.preview.value = png_bytes(im, 160)
        self.hits = self.search.image_to_text(im, self.k.value, metric, self.model.value, self._w)
        self.message.value = _message(
            f"top {len(self.hits)} of {self.search.gallery.n_captions:,} captions for {name!r} "
            f"({self._model_label()})")
        fused = self._fused
        rows = "".join(
            f"<tr><td>{r}</td><td>{html.escape(_format_value(metric, h.value, fused))}</td>"
            f"<td>{html.escape(h.text)}</td></tr>"
            for r, h in enumerate(self.hits, 1)
        )
        self.table.value = (
            '<table style="font-size:12px"><tr><th>#</th><th>score</th><th>caption</th></tr>'
            f"{rows}</table>"
        )


def default_choices(gallery: CaptionedImages, n_gallery: int = 4) -> list[tuple[str, Image.Image]]:
    """The real photos (scikit-image / scikit-learn) plus ``n_gallery`` test images of the gallery."""
    from .data import load_photos

    out: list[tuple[str, Image.Image]] = []
    try:
        photos = load_photos()
        out += [(str(photos.ids[i]), photos.load_image(i)) for i in range(len(photos))]
    except CrosslabError:  # photos unavailable: the gallery still gives pictures to pick
        pass
    test = np.flatnonzero(gallery.split == "test") if gallery.split is not None else []
    pick = test[:: max(1, len(test) // n_gallery)][:n_gallery] if len(test) else range(n_gallery)
    for i in pick:
        label = gallery.image_captions(int(i))[0][:28] if gallery.n_captions else str(gallery.ids[int(i)])
        out.append((label, gallery.load_image(int(i))))
    # Dropdown labels must be unique.
    seen: dict[str, int] = {}
    for j, (label, im) in enumerate(out):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            out[j] = (f"{label} ({seen[label]})", im)
    return out


__all__ += ["default_choices"]
