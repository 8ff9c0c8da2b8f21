"""Search apps for the course: type words and get pictures, pick a picture and get captions.

The apps are views over pipelines (:mod:`crosslab.pipeline`); they train nothing::

    pipes = [cl.create_pipeline(n, ds) for n in ("mlp+minilm", "cca+glove")]
    TextToImageApp(pipes)        # query box, top-k, metric and pipeline choice, image grid
    ImageToTextApp(pipes)        # thumbnails / upload -> ranked captions

Every control is an attribute (``app.query``, ``app.k``, ``app.metric``, ``app.model``,
``app.fusion_w``), so a test sets ``app.query.value = "red car"`` and reads ``app.hits``
(:class:`~crosslab.pipeline.Hit`) and ``app.message.value``. A fusion pipeline shows a
slider for its weight w. The text app's ``explain`` toggle shows why a result matched
(:func:`crosslab.explain.explain`: word bars and region maps), for the result ``explain_pick``. Widgets never ``print``: output goes into HTML / Image widgets
(a ``print`` inside ``with output:`` leaks into the cell's stdout under nbval).
"""

from __future__ import annotations

import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as W
import numpy as np
from PIL import Image

from .data.base import CaptionedImages, load_image, to_rgb
from .errors import CrosslabError, QueryError
from .pipeline import Hit, Retriever

__all__ = ["APP_METRICS", "TextToImageApp", "ImageToTextApp", "png_bytes", "default_choices", "Hit"]

#: The metrics the apps offer: label -> crosslab.similarity metric name.
APP_METRICS = {"cosine": "cosine", "euclidean": "euclidean", "KL divergence": "kl"}


# ----------------------------------------------------------------------------- widgets
def png_bytes(im: Image.Image, size: int = 128) -> bytes:
    """PNG bytes of ``im`` shrunk to fit ``size`` x ``size`` (for ipywidgets.Image)."""
    im = to_rgb(im).copy()
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _format_value(metric: str, v: float, fused: bool = False) -> str:
    """A hit's score in the metric's own terms (search scores are "higher = better": distances negated)."""
    if fused:  # a fusion's value is a z-score, higher = better, whatever the metric
        return f"fused z {v:.2f}"
    if metric == "cosine":
        return f"cosine {v:.3f}"
    if metric == "euclidean":
        return f"distance {-v:.3f}"
    return f"KL {-v:.4f}"


def _message(text: str, kind: str = "info") -> str:
    color = {"info": "#555", "error": "#b00020"}[kind]
    return f'<div style="color:{color};margin:4px 0">{html.escape(text)}</div>'


class _App(W.VBox):
    """Shared controls: top-k slider, metric dropdown, pipeline dropdown (when several).

    ``pipelines``: one pipeline or several (distinct names); the first is shown first.
    ``gallery``: what is searched (default: the first pipeline's). A fusion pipeline
    also shows ``fusion_w``, a slider for its weight w (0: first part only, 1: second
    only), reset to the pipeline's own w whenever it is chosen. ``kl_temperature`` is
    the softmax temperature of the KL metric (lesson 04); by default (None) it is chosen
    per pipeline on the gallery's val split (``crosslab.pipelines.choose_kl_temperature``),
    or 1.0 when the gallery has no val split.
    """

    def __init__(self, pipelines: Retriever | Sequence[Retriever], gallery: CaptionedImages | None,
                 k: int, max_k: int, thumb: int, kl_temperature: float | None) -> None:
        pipes = [pipelines] if isinstance(pipelines, Retriever) else list(pipelines)
        if not pipes or not all(isinstance(p, Retriever) for p in pipes):
            raise CrosslabError("the apps need one or more pipelines (crosslab.create_pipeline(name, ds)).")
        names = [p.name for p in pipes]
        if len(set(names)) != len(names):
            raise CrosslabError(f"pipeline names must be unique, got {names}.")
        self.pipelines: dict[str, Retriever] = {p.name: p for p in pipes}
        self.gallery = gallery if gallery is not None else pipes[0]._gallery(None)
        self.kl_temperature = None if kl_temperature is None else float(kl_temperature)
        self._kl_chosen: dict[str, float] = {}
        self.thumb = thumb
        self.hits: list[Hit] = []
        self.k = W.IntSlider(value=k, min=1, max=max_k, description="top k")
        self.metric = W.Dropdown(options=list(APP_METRICS.items()), value="cosine", description="metric")
        self.model = W.Dropdown(options=names, value=names[0], description="model")
        self.model.layout.display = None if len(names) > 1 else "none"
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
        m = self.pipelines[self.model.value]
        fused = m.w is not None
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
        return self.pipelines[self.model.value].w is not None

    @property
    def pipeline(self) -> Retriever:
        """The chosen pipeline, with the slider's w for a fusion."""
        p = self.pipelines[self.model.value]
        return p.with_w(float(self.fusion_w.value)) if self._fused else p

    def _kw(self) -> dict[str, Any]:
        return {"gallery": self.gallery, "metric": self.metric.value, "temperature": self.kl_t()}

    def kl_t(self) -> float:
        """The KL temperature for the chosen pipeline: the one given, else chosen on val (cached)."""
        if self.kl_temperature is not None:
            return self.kl_temperature
        name = self.model.value
        if name not in self._kl_chosen:
            from .pipelines import choose_kl_temperature

            try:
                self._kl_chosen[name] = choose_kl_temperature(self.pipelines[name], self.gallery)[0]
            except CrosslabError:  # no val split in this gallery: the neutral temperature
                self._kl_chosen[name] = 1.0
        return self._kl_chosen[name]

    def _model_label(self) -> str:
        if self._fused:
            return f"{self.model.value}, w={self.fusion_w.value:.2f}, {self.metric.label}"
        return f"{self.model.value}, {self.metric.label}"

    def _thumb(self, i: int) -> bytes:
        if i not in self._thumbs:
            self._thumbs[i] = png_bytes(self.gallery.load_image(i), self.thumb)
        return self._thumbs[i]

    def update(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _ExplainPanel(W.VBox):
    """The text app's "explain" toggle: word bars and region maps of the query for one result.

    Off by default, and then nothing is computed (occlusion costs ~26 image passes). On, it
    explains result ``pick`` (rank 1 first) with the chosen pipeline's own score, whatever the
    app's metric, and keeps the last explanation until the query, model, w or picture changes.
    """

    def __init__(self, app: TextToImageApp) -> None:
        self.app = app
        self.toggle = W.ToggleButton(value=False, description="explain", icon="search",
                                     tooltip="why did this result match? word bars and region maps")
        self.pick = W.Dropdown(options=[], description="result", layout=W.Layout(width="160px"))
        self.summary, self.image = W.HTML(), W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.toggle.add_class("crosslab-explain")
        self.pick.add_class("crosslab-explain-pick")
        self.explanation: Any = None  # the shown crosslab.explain.Explanation, or None
        self._last: tuple[Any, Any, bytes] | None = None  # (key, explanation, png)
        self._quiet = False
        super().__init__([W.HBox([self.toggle, self.pick]), self.summary, self.image])
        self.toggle.observe(self._on_change, names="value")
        self.pick.observe(self._on_change, names="value")

    def _on_change(self, _change: Any = None) -> None:
        if not self._quiet:
            self.refresh()

    def _set_ranks(self, n: int) -> None:
        """Offer ranks 1..n, keeping the pick when it is still there (else rank 1), in one update."""
        options = [(str(r), r - 1) for r in range(1, n + 1)]
        if list(self.pick.options) == options:
            return
        keep = self.pick.value if self.pick.value is not None and self.pick.value < n else 0
        self._quiet = True
        try:
            self.pick.options = options
            self.pick.value = keep if n else None
        finally:
            self._quiet = False

    def refresh(self) -> None:
        """Show (computing if needed) the explanation of the app's query for the picked result."""
        from . import explain as ex
        from . import plots

        app, on = self.app, self.toggle.value
        self._set_ranks(len(app.hits))
        for w in (self.pick, self.summary, self.image):
            w.layout.display = None if on else "none"
        self.explanation = None
        if not on or not app.hits:
            self.summary.value, self.image.value = "", b""
            return
        p, hit, query = app.pipeline, app.hits[self.pick.value], app.query.value.strip()
        key = (app.model.value, p.w, query, hit.image)
        if self._last is None or self._last[0] != key:
            # The gallery's index when the pipeline has that gallery, else the picture itself.
            pic = hit.image if p.gallery is app.gallery else app.gallery.load_image(hit.image)
            try:
                e = ex.explain(p, query, pic)
            except CrosslabError as err:
                self._last, self.image.value = None, b""
                self.summary.value = _message(f"cannot explain result {self.pick.value + 1}: {err}", "error")
                return
            buf = io.BytesIO()
            plots.show_explanation(e).savefig(buf, format="png", dpi=90)
            self._last = (key, e, buf.getvalue())
        _, self.explanation, self.image.value = self._last
        self.summary.value = _message(self._summary(self.explanation, hit))

    def _summary(self, e: Any, hit: Hit) -> str:
        top = np.argsort(-e.contributions, kind="stable")[:5]
        words = ", ".join(f"{e.words[i]} {e.contributions[i]:+.3f}" for i in top)
        more = " ..." if len(e.words) > len(top) else ""
        note = "" if self.app.metric.value == "cosine" else f"; the model's own score, not {self.app.metric.label}"
        return (f"{e.method}: {words}{more} (rest {e.rest:+.3f}; score {e.score:.3f} for result "
                f"{self.pick.value + 1}, image {hit.image}{note})")


class TextToImageApp(_App):
    """Type a query, see the top-k gallery images with their scores and first captions.

    Controls: ``query`` (Text; updates on Enter or when focus leaves), ``k``, ``metric``,
    ``model``, ``fusion_w`` (fusion models only), ``explain`` (ToggleButton, off) and
    ``explain_pick`` (Dropdown: which result to explain, value 0 = rank 1). Results: ``hits``
    (list of :class:`Hit`), ``grid`` (GridBox of Image + HTML cards), ``message`` (HTML: what was
    searched, or what went wrong), ``explanation`` (the shown Explanation or None),
    ``explain_summary`` (HTML) and ``explain_image`` (Image: PNG of the word bars and maps).
    """

    def __init__(
        self, pipelines: Retriever | Sequence[Retriever], gallery: CaptionedImages | None = None,
        query: str = "", k: int = 8, max_k: int = 24, thumb: int = 128, columns: int = 4,
        kl_temperature: float | None = None,
    ) -> None:
        super().__init__(pipelines, gallery, k, max_k, thumb, kl_temperature)
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
        self.explain_panel = _ExplainPanel(self)
        self.explain, self.explain_pick = self.explain_panel.toggle, self.explain_panel.pick
        self.explain_summary, self.explain_image = self.explain_panel.summary, self.explain_panel.image
        self.children = [W.HBox([self.query, self.model]), W.HBox([self.k, self.metric, self.fusion_w]),
                         self.message, self.grid, self.explain_panel]
        self.update()

    @property
    def explanation(self) -> Any:
        """The :class:`~crosslab.explain.Explanation` shown (None when ``explain`` is off or nothing matched)."""
        return self.explain_panel.explanation

    def update(self) -> None:
        """Run the search for the current control values, redraw, and explain when asked."""
        self._search()
        self.explain_panel.refresh()

    def _search(self) -> None:
        q = self.query.value
        metric = self.metric.value
        try:
            self.hits = self.pipeline.search(q, self.k.value, **self._kw())
        except QueryError as e:
            self.hits = []
            self.grid.children = []
            empty = not q.strip()
            self.message.value = _message(str(e), "info" if empty else "error")
            return
        self.message.value = _message(
            f"top {len(self.hits)} of {len(self.gallery):,} images for {q.strip()!r} "
            f"({self._model_label()})"
        )
        fused = self._fused
        cards = []
        for rank, h in enumerate(self.hits, 1):
            img = W.Image(value=self._thumb(h.image), format="png", width=self.thumb)
            cap = W.HTML(
                f'<div style="font-size:11px;line-height:1.2;width:{self.thumb + 30}px">'
                f"<b>{rank}.</b> {_format_value(metric, h.score, fused)}<br>{html.escape(h.caption[:80])}</div>"
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
        self, pipelines: Retriever | Sequence[Retriever], gallery: CaptionedImages | None = None,
        choices: Sequence[tuple[str, Image.Image]] | None = None, k: int = 5, max_k: int = 20,
        thumb: int = 96, kl_temperature: float | None = None,
    ) -> None:
        super().__init__(pipelines, gallery, k, max_k, thumb, kl_temperature)
        if choices is None:
            choices = default_choices(self.gallery)
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
        try:  # crosslab's decoding rules: EXIF orientation, RGB, decompression bombs refused
            self.uploaded = load_image(content, name=name)
            self.uploaded_name = name
        except CrosslabError as e:
            self.uploaded = None
            self.hits = []
            self.table.value = ""
            self.message.value = _message(f"could not read {name!r} as an image ({e}); upload a PNG or JPEG.",
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
        self.hits = self.pipeline.describe(im, self.k.value, **self._kw())
        self.message.value = _message(
            f"top {len(self.hits)} of {self.gallery.n_captions:,} captions for {name!r} "
            f"({self._model_label()})")
        fused = self._fused
        rows = "".join(
            f"<tr><td>{r}</td><td>{html.escape(_format_value(metric, h.score, fused))}</td>"
            f"<td>{html.escape(h.caption)}</td></tr>"
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
    pick = test[:: max(1, len(test) // n_gallery)][:n_gallery] if len(test) else range(min(n_gallery, len(gallery)))
    for i in pick:
        label = (gallery.image_captions(int(i)) or [str(gallery.ids[int(i)])])[0][:28]
        out.append((label, gallery.load_image(int(i))))
    # Dropdown labels must be unique.
    seen: dict[str, int] = {}
    for j, (label, im) in enumerate(out):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            out[j] = (f"{label} ({seen[label]})", im)
    return out

