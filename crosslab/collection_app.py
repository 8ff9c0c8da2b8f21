"""The search app over your own collection: the page ``make app`` serves (with Voila), or a notebook cell.

    app = CollectionApp([Collection("~/photos"), Collection("~/photos", "cca+glove")])
    app        # words -> pictures; or upload a picture -> phrases for it and pictures like it

The same controls as lesson 06's apps (a query box, top k, the model; results with their
scores), over :class:`~crosslab.collection.Collection` stores instead of the clip art: each
model is one collection of the same pictures. The first is brought up to date when the app is
made; another the first time it is chosen. Every control is an attribute, so a test sets
``app.query.value = "a red car"`` and reads ``app.hits``, ``app.phrases`` and
``app.message.value``; the page's elements carry CSS classes (``crosslab-col-query``,
``crosslab-col-results``, ``crosslab-col-message``, ...) for a browser test.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W

from .collection import Collection, read_picture
from .errors import CrosslabError
from .widgets import _message, png_bytes

__all__ = ["CollectionApp"]

VOCABULARIES = {"clip-art captions": "clipart", "ImageNet classes": "imagenet"}


class CollectionApp(W.VBox):
    """Search one or more :class:`Collection` s (one per model) by words or by an uploaded picture."""

    def __init__(self, collections: Collection | Sequence[Collection], *, k: int = 8, max_k: int = 30,
                 thumb: int = 150) -> None:
        cols = [collections] if isinstance(collections, Collection) else list(collections)
        if not cols or not all(isinstance(c, Collection) for c in cols):
            raise CrosslabError("CollectionApp needs one or more crosslab.collection.Collection objects.")
        self.collections = {c.pipeline_name: c for c in cols}
        self.thumb, self.hits, self.phrases = thumb, [], []
        self._thumbs: dict[str, str] = {}
        self.query = W.Text(placeholder="describe a picture, e.g. a red apple", description="words",
                            continuous_update=False, layout=W.Layout(width="460px"))
        self.k = W.IntSlider(value=k, min=1, max=max_k, description="top k", continuous_update=False)
        self.model = W.Dropdown(options=list(self.collections), description="model")
        self.model.layout.display = None if len(cols) > 1 else "none"
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="picture")
        self.vocabulary = W.Dropdown(options=list(VOCABULARIES.items()), description="phrases")
        self.message, self.results, self.words = W.HTML(), W.HTML(), W.HTML()
        for w, cls in ((self.query, "query"), (self.results, "results"), (self.message, "message"),
                       (self.upload, "upload"), (self.words, "phrases")):
            w.add_class(f"crosslab-col-{cls}")
        self.status = W.HTML()
        self.status.add_class("crosslab-col-status")
        super().__init__([self.status, W.HBox([self.query, self.k, self.model]),
                          W.HBox([self.upload, self.vocabulary]), self.message, self.words, self.results])
        self.query.observe(lambda _c: self.search_words(), names="value")
        self.k.observe(lambda _c: self._rerun(), names="value")
        self.model.observe(lambda _c: self._on_model(), names="value")
        self.vocabulary.observe(lambda _c: self._rerun(), names="value")
        self.upload.observe(self._on_upload, names="value")
        self._picture: Any = None
        self._on_model()

    # ----- state -----------------------------------------------------------------------
    @property
    def collection(self) -> Collection:
        return self.collections[self.model.value]

    def _on_model(self) -> None:
        c = self.collection
        if c.report is None:
            self.status.value = _message(f"indexing {c.source} with {c.pipeline_name} ...")
            try:
                c.update(progress=False)
            except CrosslabError as e:
                self.status.value = _message(str(e), "error")
                return
        r = c.report
        self.status.value = _message(f"{len(c):,} pictures from {c.source} ({c.pipeline_name})" +
                                     (f"; {len(r.unreadable):,} unreadable file(s) left out, e.g. "
                                      f"{Path(r.unreadable[0][0]).name}: {r.unreadable[0][1]}" if r.unreadable else ""))
        self._rerun()

    def _rerun(self) -> None:
        if self._picture is not None and not self.query.value.strip():
            self.search_picture(self._picture)
        elif self.query.value.strip():
            self.search_words()

    # ----- searching -------------------------------------------------------------------------
    def search_words(self) -> None:
        """Words -> pictures: the query box's text against the chosen model's collection."""
        q = self.query.value
        self.words.value = ""
        if not q.strip():
            self.hits, self.results.value = [], ""
            self.message.value = _message("type a few words describing a picture, e.g. 'a red apple'.")
            return
        self._picture = None
        try:
            self.hits = self.collection.search(q, self.k.value)
        except CrosslabError as e:
            self.hits, self.results.value = [], ""
            self.message.value = _message(str(e), "error")
            return
        self.message.value = _message(f"top {len(self.hits)} of {len(self.collection):,} pictures for {q!r} "
                                      f"({self.collection.pipeline_name}, {self.collection.store.metric})")
        self.results.value = self._grid(self.hits)

    def _on_upload(self, change: Any) -> None:
        files = change["new"]
        if files:
            f = files[0]
            content = f["content"] if isinstance(f, dict) else f.content
            self.set_picture(bytes(content), f["name"] if isinstance(f, dict) else getattr(f, "name", "upload"))

    def set_picture(self, picture: Any, name: str = "upload") -> None:
        """Use ``picture`` (file bytes, a path, PIL image) as the query; a bad file gives a message."""
        try:
            self._picture = read_picture(picture)
        except CrosslabError as e:
            self._picture, self.hits, self.phrases = None, [], []
            self.results.value = self.words.value = ""
            self.message.value = _message(f"{name}: {e}", "error")
            return
        self.query.value = ""  # a picture query replaces the words (search_words then only clears)
        self.search_picture(self._picture, name)

    def search_picture(self, picture: Any, name: str = "the picture") -> None:
        """Picture -> phrases of the vocabulary, and pictures of the collection like it."""
        c = self.collection
        try:
            self.phrases = c.describe(picture, 5, self.vocabulary.value)
            self.hits = c.similar(picture, self.k.value)
        except CrosslabError as e:
            self.message.value = _message(str(e), "error")
            return
        rows = "".join(f"<tr><td>{s:.3f}</td><td>{html.escape(t)}</td></tr>" for t, s in self.phrases)
        self.words.value = (f'<div style="display:flex;gap:16px;align-items:flex-start">'
                            f'<img src="{_data_uri(png_bytes(picture, self.thumb))}">'
                            f'<table><tr><th>{c.store.metric}</th><th>phrase</th></tr>{rows}</table></div>')
        self.message.value = _message(f"phrases for {name} and the {len(self.hits)} pictures most like it "
                                      f"({c.pipeline_name})")
        self.results.value = self._grid(self.hits)

    # ----- drawing ---------------------------------------------------------------------------
    def _grid(self, hits: list[Any]) -> str:
        cells = []
        for rank, h in enumerate(hits, 1):
            label = html.escape(h.caption or Path(h.path).name)
            cells.append(f'<figure style="margin:4px;width:{self.thumb}px;text-align:center">'
                         f'<img src="{self._thumb(h.path)}" style="max-width:{self.thumb}px;max-height:{self.thumb}px">'
                         f'<figcaption style="font-size:11px">{rank}. {h.score:.3f}<br>{label}</figcaption></figure>')
        return f'<div style="display:flex;flex-wrap:wrap">{"".join(cells)}</div>'

    def _thumb(self, path: str) -> str:
        if path not in self._thumbs:
            try:
                self._thumbs[path] = _data_uri(png_bytes(read_picture(path), self.thumb))
            except CrosslabError:  # the file went away or changed since the update
                self._thumbs[path] = ""
        return self._thumbs[path]


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
