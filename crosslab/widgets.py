"""Search apps for the course: type words and get pictures, pick a picture and get captions.

Two layers, so the logic can be tested without a browser:

* :class:`CrossModalSearch` -- the search engine. It holds a gallery (a
  :class:`~crosslab.data.CaptionedImages`) and one or more :class:`SearchModel`
  (a text encoder, an image encoder and a model with ``embed_text`` /
  ``embed_image``: a trained :class:`~crosslab.joint.JointModel` or a CCA
  baseline). The gallery's images and captions are embedded once; a query is
  embedded on the fly and ranked with :class:`~crosslab.retrieval.Index` under
  the chosen metric (cosine, Euclidean or KL divergence).
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
    "build_search", "png_bytes", "split_arrays", "fit_search_models",
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


class CrossModalSearch:
    """Search a gallery by text (-> images) or by image (-> captions) with one of several models.

    ``kl_temperature`` is the softmax temperature that turns joint-space vectors into
    distributions for the KL divergence (lesson 04 explains why KL needs one).
    """

    def __init__(
        self,
        gallery: CaptionedImages,
        models: SearchModel | Sequence[SearchModel],
        kl_temperature: float = 0.1,
    ) -> None:
        models = [models] if isinstance(models, SearchModel) else list(models)
        if not models:
            raise CrosslabError("CrossModalSearch needs at least one SearchModel.")
        for m in models:
            if len(m.image_features) != len(gallery) or len(m.caption_features) != gallery.n_captions:
                raise CrosslabError(
                    f"model {m.name!r}: {len(m.image_features)} image / {len(m.caption_features)} "
                    f"caption features for a gallery of {len(gallery)} images / "
                    f"{gallery.n_captions} captions; compute them on the same dataset."
                )
        self.gallery = gallery
        self.models: dict[str, SearchModel] = {m.name: m for m in models}
        self.kl_temperature = float(kl_temperature)
        self._indexes: dict[tuple[str, str, str], Index] = {}

    @property
    def model_names(self) -> list[str]:
        return list(self.models)

    def _model(self, name: str | None) -> SearchModel:
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

    def text_to_image(
        self, query: str, k: int = 8, metric: str = "cosine", model: str | None = None
    ) -> list[Hit]:
        """The ``k`` gallery images that best match ``query``, best first.

        Raises :class:`QueryError` for an empty query or one without any known word.
        """
        if not isinstance(query, str) or not query.strip():
            raise QueryError("type a few words describing an image, e.g. 'a red car'.")
        m = self._model(model)
        x = np.asarray(m.encode_text(query), dtype=np.float32)[None]
        q = _np(m.model.embed_text(x))
        vals, ids = self._index(m, "image", metric).search(q, k)
        return [
            Hit(int(i), float(v), self.gallery.image_captions(int(i))[0], int(i))
            for v, i in zip(vals[0], ids[0], strict=True)
        ]

    def image_to_text(
        self, image: Image.Image | np.ndarray, k: int = 5, metric: str = "cosine",
        model: str | None = None,
    ) -> list[Hit]:
        """The ``k`` gallery captions that best describe ``image`` (PIL or uint8 array), best first."""
        m = self._model(model)
        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise ImageError(f"expected a PIL image or a uint8 array, got {type(image).__name__}.")
        y = np.asarray(m.encode_images([to_rgb(image)]), dtype=np.float32)
        q = _np(m.model.embed_image(y))
        vals, ids = self._index(m, "text", metric).search(q, k)
        c2i = self.gallery.caption_to_image
        return [
            Hit(int(c), float(v), self.gallery.captions[int(c)], int(c2i[int(c)]))
            for v, c in zip(vals[0], ids[0], strict=True)
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


# ----------------------------------------------------------------------------- widgets
def png_bytes(im: Image.Image, size: int = 128) -> bytes:
    """PNG bytes of ``im`` shrunk to fit ``size`` x ``size`` (for ipywidgets.Image)."""
    im = to_rgb(im).copy()
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _format_value(metric: str, v: float) -> str:
    if metric == "cosine":
        return f"cosine {v:.3f}"
    if metric == "euclidean":
        return f"distance {v:.3f}"
    return f"KL {v:.4f}"


def _message(text: str, kind: str = "info") -> str:
    color = {"info": "#555", "error": "#b00020"}[kind]
    return f'<div style="color:{color};margin:4px 0">{html.escape(text)}</div>'


class _App(W.VBox):
    """Shared controls: top-k slider, metric dropdown, model dropdown (when several)."""

    def __init__(self, search: CrossModalSearch, k: int, max_k: int, thumb: int) -> None:
        self.search = search
        self.thumb = thumb
        self.hits: list[Hit] = []
        self.k = W.IntSlider(value=k, min=1, max=max_k, description="top k")
        self.metric = W.Dropdown(options=list(APP_METRICS.items()), value="cosine", description="metric")
        self.model = W.Dropdown(options=search.model_names, value=search.model_names[0],
                                description="model")
        self.model.layout.display = None if len(search.model_names) > 1 else "none"
        self.message = W.HTML()
        self._thumbs: dict[int, bytes] = {}
        super().__init__()
        for w in (self.k, self.metric, self.model):
            w.observe(self._on_change, names="value")

    def _on_change(self, _change: Any = None) -> None:
        self.update()

    def _thumb(self, i: int) -> bytes:
        if i not in self._thumbs:
            self._thumbs[i] = png_bytes(self.search.gallery.load_image(i), self.thumb)
        return self._thumbs[i]

    def update(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class TextToImageApp(_App):
    """Type a query, see the top-k gallery images with their scores and first captions.

    Controls: ``query`` (Text; updates on Enter or when focus leaves), ``k``, ``metric``,
    ``model``. Results: ``hits`` (list of :class:`Hit`), ``grid`` (GridBox of
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
        self.children = [W.HBox([self.query, self.model]), W.HBox([self.k, self.metric]),
                         self.message, self.grid]
        self.update()

    def update(self) -> None:
        """Run the search for the current control values and redraw."""
        q = self.query.value
        metric = self.metric.value
        try:
            self.hits = self.search.text_to_image(q, self.k.value, metric, self.model.value)
        except QueryError as e:
            self.hits = []
            self.grid.children = []
            empty = not q.strip()
            self.message.value = _message(str(e), "info" if empty else "error")
            return
        self.message.value = _message(
            f"top {len(self.hits)} of {len(self.search.gallery):,} images for {q.strip()!r} "
            f"({self.model.value}, {self.metric.label})"
        )
        cards = []
        for rank, h in enumerate(self.hits, 1):
            img = W.Image(value=self._thumb(h.image), format="png", width=self.thumb)
            cap = W.HTML(
                f'<div style="font-size:11px;line-height:1.2;width:{self.thumb + 30}px">'
                f"<b>{rank}.</b> {_format_value(metric, h.value)}<br>{html.escape(h.text[:80])}</div>"
            )
            cards.append(W.VBox([img, cap]))
        self.grid.children = cards


class ImageToTextApp(_App):
    """Pick a picture (thumbnail buttons or an upload), see the top-k captions with scores.

    ``choices`` are the pickable pictures: a list of ``(label, PIL image)``; by default the
    real photos of :func:`crosslab.data.load_photos` followed by a few gallery images.
    Controls: ``picker`` (Dropdown of labels; the thumbnail buttons set it), ``upload``
    (FileUpload), ``k``, ``metric``, ``model``. Results: ``hits``, ``table`` (HTML),
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
                         W.HBox([self.k, self.metric]), self.message,
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
        self.hits = self.search.image_to_text(im, self.k.value, metric, self.model.value)
        self.message.value = _message(
            f"top {len(self.hits)} of {self.search.gallery.n_captions:,} captions for {name!r} "
            f"({self.model.value}, {self.metric.label})")
        rows = "".join(
            f"<tr><td>{r}</td><td>{html.escape(_format_value(metric, h.value))}</td>"
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
