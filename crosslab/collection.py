"""Your own collection: index a folder of pictures, then search it by words and by example.

    col = Collection("~/photos")           # the default pipeline; nothing is computed yet
    print(col.update())                     # embed what is new or changed (a progress bar), list what was skipped
    col.search("a dog on the beach", k=8)   # words -> pictures
    col.similar("~/photos/dog.jpg", k=8)    # a picture -> pictures that look alike
    col.describe("holiday.jpg", k=5)        # a picture -> phrases of a vocabulary, best first

A *source* is a folder of pictures (searched recursively: JPEG, PNG, WebP, ...; no captions
needed), a captioned file (a CSV of image path and caption, a Karpathy or COCO ``.json``; its
pictures are read from ``images`` or the file's folder), or a dataset the course ships
(``"clipart"``, ``"photos"``). The pictures' embeddings go into a
:class:`~crosslab.store.VectorStore` **in crosslab's cache** (``$CROSSLAB_CACHE/collections/``),
one per source and pipeline: the user's folder is only ever read, so a read-only folder works
and nothing is written beside the photos.

**What a re-run does.** :meth:`Collection.update` lists the files, keys each by the SHA-256 of
its bytes (re-hashing only files whose size or modification time changed since the last run:
``files.json`` beside the store remembers them) and extracts only keys the store lacks, so a
re-run after adding one photo extracts one photo. A renamed or moved file keeps its vector; a
deleted or edited file's old row stays in the store but is never returned (hits are only the
files present at the last update, under their current paths).

**What is skipped, never a crash.** Files that cannot be read as pictures -- a truncated JPEG,
a text file named ``.jpg``, a decompression bomb (more than
:data:`crosslab.data.base.MAX_IMAGE_PIXELS` pixels, refused before decoding), a symbolic link
leading out of the folder -- are listed with the reason in the :class:`UpdateReport` and tried
again next time. A source with no picture at all (an empty folder, a folder of documents, a CSV
whose files are all missing) is a :class:`~crosslab.errors.DataError` saying what was found.

**Words for a picture without captions.** Text -> picture search needs only the pipeline's two
towers, so a folder without a single caption is searchable. Picture -> text ranks a
*vocabulary*: the clip art's captions (default), ImageNet's 1,000 class names (``"imagenet"``),
or your own list of phrases (a list, or a text file with one phrase per line).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CrosslabError, DataError, ImageError, ModelError, QueryError, SchemaError

__all__ = ["Collection", "UpdateReport", "collections_root", "read_picture", "SHIPPED"]

#: Datasets the course ships, usable as a source by name.
SHIPPED = ("clipart", "photos")
MANIFEST = "files.json"
STORE = "store"
_PHRASES_MAX = 50_000


def collections_root() -> Path:
    """Where collections' stores live: ``$CROSSLAB_CACHE/collections``."""
    from .cache import cache_root

    return cache_root() / "collections"


@dataclasses.dataclass
class UpdateReport:
    """What one :meth:`Collection.update` found and did."""

    source: str
    found: int = 0  #: picture files (or captioned pictures) in the source
    extracted: int = 0  #: embedded and stored by this update
    already_stored: int = 0  #: stored by an earlier update (nothing to do)
    duplicates: int = 0  #: the same bytes as another file of this source (searchable once)
    unreadable: list[tuple[str, str]] = dataclasses.field(default_factory=list)  #: (file, why): not stored
    notes: list[str] = dataclasses.field(default_factory=list)  #: e.g. a CSV's missing files
    seconds: float = 0.0

    @property
    def searchable(self) -> int:
        """Pictures a search can return: found, minus unreadable, minus duplicates."""
        return self.found - len(self.unreadable) - self.duplicates

    def __str__(self) -> str:
        lines = [f"{self.source}: {self.found:,} pictures found; {self.extracted:,} extracted now, "
                 f"{self.already_stored:,} already stored, {self.duplicates:,} duplicates, "
                 f"{len(self.unreadable):,} unreadable ({self.seconds:.1f} s)"]
        lines += [f"  unreadable {path}: {why}" for path, why in self.unreadable[:10]]
        if len(self.unreadable) > 10:
            lines.append(f"  ... and {len(self.unreadable) - 10:,} more (report.unreadable lists them all)")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class _Entry:
    path: str  # absolute
    caption: str | None


class Collection:
    """A source of pictures embedded by one named pipeline into a store in the cache.

    Args:
        source: a folder, a ``.csv`` / ``.tsv`` / Karpathy or COCO ``.json`` file, or a shipped
            dataset's name (:data:`SHIPPED`).
        pipeline: a named pipeline with one vector per picture (not a fusion); default
            :data:`crosslab.pipelines.DEFAULT_PIPELINE`.
        images: the picture folder of a captioned file (default: the file's folder).
        train: the captioned data the pipeline is fitted on (default: the clip art, as every
            named pipeline).
        directory: where the store goes (default: under :func:`collections_root`); never
            inside the source folder.
    """

    def __init__(self, source: str | os.PathLike, pipeline: str | None = None, *,
                 images: str | os.PathLike | None = None, train: Any = None,
                 directory: str | os.PathLike | None = None) -> None:
        from .pipelines import DEFAULT_PIPELINE, get_spec

        self.pipeline_name = pipeline or DEFAULT_PIPELINE
        if get_spec(self.pipeline_name).parts:
            raise CrosslabError(f"{self.pipeline_name!r} is a fusion: it has no single vector per picture; "
                                f"use one of its parts ({' or '.join(get_spec(self.pipeline_name).parts)}).")
        path = Path(source).expanduser()
        if path.exists():  # a real folder or file wins over a shipped dataset's name
            path = path.resolve()  # one store per folder, however it is spelled or linked to
            self.source, self.kind = str(path), "folder" if path.is_dir() else "file"
        elif str(source) in SHIPPED:
            self.source, self.kind = str(source), "shipped"
        else:
            raise DataError(f"{path.absolute()}: no such folder or file. Point at a folder of pictures, a .csv / "
                            f".json caption file, or one of {', '.join(SHIPPED)}.")
        self.images = None if images is None else Path(images).expanduser().resolve()
        self._train = train
        tag = hashlib.sha256(f"{self.source}\0{self.images}\0{self.pipeline_name}".encode()).hexdigest()[:16]
        stem = Path(self.source).name or "root"
        self.directory = Path(directory).expanduser().absolute() if directory is not None \
            else collections_root() / f"{stem}-{tag}"
        pictures = Path(self.source) if self.kind == "folder" else \
            self.images or (Path(self.source).parent if self.kind == "file" else None)
        # (the default, crosslab's cache, may lie inside a folder you index, e.g. your home: that is
        # crosslab's own folder, which a listing skips, as every hidden one)
        if directory is not None and pictures is not None and self.directory.resolve().is_relative_to(pictures):
            raise DataError(f"{self.directory} lies inside the picture folder {pictures}; crosslab only reads "
                            "your folders: choose a store directory elsewhere (or leave the default, the cache).")
        self._store: Any = None
        self._current: dict[str, _Entry] = {}  # key -> the file holding those bytes now
        self._key_of: dict[str, str] = {}  # every readable file (duplicates too) -> its key
        self._vocab: dict[str, tuple[list[str], np.ndarray]] = {}
        self.report: UpdateReport | None = None

    def __repr__(self) -> str:
        n = f"{len(self._current):,} pictures" if self.report else "not updated yet"
        return f"Collection({self.source!r}, pipeline={self.pipeline_name!r}: {n}; store in {self.directory})"

    # ----- the store -------------------------------------------------------------------
    @property
    def store(self) -> Any:
        """The :class:`~crosslab.store.VectorStore` (made, with the pipeline fitted or loaded, on first use)."""
        if self._store is None:
            self._store = self._open_store()
        return self._store

    @property
    def pipeline(self) -> Any:
        return self.store.pipeline

    def _open_store(self) -> Any:
        from .store import META, VectorStore

        d = self.directory / STORE
        if (d / META).is_file():
            try:
                store = VectorStore.open(d)
                name = store.pipeline.name  # loads (and checks) the stored pipeline
            except (DataError, ModelError) as e:  # derived data: rebuild it, never trust it half-read
                warnings.warn(f"{e} -- rebuilding this collection's store from the pictures.", RuntimeWarning,
                              stacklevel=4)
            else:
                if name != self.pipeline_name:
                    raise DataError(f"{d} holds a store of pipeline {name!r}, not {self.pipeline_name!r}: use "
                                    "another directory for this pipeline (the default one is per pipeline).")
                return store
        from .pipelines import create_pipeline

        train = self._train
        if train is None:
            from .data import load_clipart

            train = load_clipart()
        p = create_pipeline(self.pipeline_name, train, progress=False)
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / MANIFEST).unlink(missing_ok=True)
        return VectorStore.create(d, p, overwrite=True)

    # ----- listing the source ------------------------------------------------------------
    def _entries(self, report: UpdateReport) -> list[_Entry]:
        """The source's pictures (absolute paths, captions or None); links out are reported."""
        if self.kind == "folder":
            return self._folder_entries(Path(self.source), report)
        ds = self._dataset(report)
        root = Path(ds.root) if ds.root is not None else None
        if root is None or any(isinstance(im, np.ndarray) for im in ds.images):
            raise DataError(f"{self.source}: its pictures are held in memory, not files; write them to a folder "
                            "and index the folder.")
        first: dict[int, str] = {}
        for c, i in zip(ds.captions, ds.caption_to_image, strict=True):
            first.setdefault(int(i), c)
        return [_Entry(str((root / ds.images[i]).absolute()), first.get(i)) for i in range(len(ds))]

    def _folder_entries(self, folder: Path, report: UpdateReport) -> list[_Entry]:
        from .distributed import _image_files

        try:
            files = _image_files(folder)
        except OSError as e:
            raise DataError(f"{folder}: cannot list the folder ({e.strerror}); check its permissions.") from None
        if not files:
            others = [f for f in folder.rglob("*") if f.is_file()]
            what = "is empty" if not others else \
                f"holds {len(others):,} file(s) but no pictures (e.g. {others[0].name})"
            raise DataError(f"{folder} {what}: crosslab looks (recursively) for .jpg, .jpeg, .png, .webp, .gif, "
                            ".bmp and .tif files; point it at a folder of pictures.")
        inside, out = folder.resolve(), []
        for f in files:
            if not f.resolve().is_relative_to(inside):  # a link out of the folder: never follow it
                report.unreadable.append((str(f), "a link leading outside the folder: not followed"))
            else:
                out.append(_Entry(str(f), None))
        return out

    def _dataset(self, report: UpdateReport) -> Any:
        from . import data as D

        if self.kind == "shipped":
            return D.load_clipart() if self.source == "clipart" else D.load_photos()
        path = Path(self.source)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            suffix = path.suffix.lower()
            if suffix == ".json":
                try:
                    ds = D.load_karpathy(path, self.images, on_missing="skip")
                except SchemaError as karpathy_error:
                    try:
                        ds = D.load_coco(path, self.images, on_missing="skip")
                    except SchemaError:
                        raise karpathy_error from None
            elif suffix in (".csv", ".tsv", ".tab", ".txt"):
                ds = D.load_csv(path, self.images, on_missing="skip")
            else:
                raise DataError(f"{path}: expected a folder of pictures, a .csv / .tsv caption file or a "
                                "Karpathy / COCO .json file.")
        report.notes += [str(w.message) for w in caught]
        return ds

    # ----- keys, with a memory of unchanged files -----------------------------------------
    def _keys(self, entries: list[_Entry], report: UpdateReport) -> dict[str, str]:
        """path -> content key; files unchanged since the last run (size, mtime) are not re-hashed."""
        from ._io import atomic_write_text
        from .store import content_key

        manifest_path = self.directory / MANIFEST
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
            old = old if isinstance(old, dict) else {}
        except (OSError, ValueError):  # none yet, or damaged: hash everything again
            old = {}
        keys, new = {}, {}
        for e in entries:
            try:
                st = os.stat(e.path)
                sig = [st.st_size, st.st_mtime_ns]
                rec = old.get(e.path)
                key = rec[2] if isinstance(rec, list) and len(rec) == 3 and rec[:2] == sig else content_key(e.path)
            except (OSError, DataError) as err:
                report.unreadable.append((e.path, _reason(e.path, str(getattr(err, "strerror", None) or err))))
                continue
            keys[e.path], new[e.path] = key, [*sig, key]
        if new != old:
            atomic_write_text(manifest_path, json.dumps(new) + "\n")
        return keys

    # ----- update ---------------------------------------------------------------------------
    def update(self, *, progress: bool = True, engine: str = "local", address: str | None = None) -> UpdateReport:
        """Embed the source's new or changed pictures into the store; return what was done."""
        import time

        from .distributed import index_files

        t0 = time.perf_counter()
        report = UpdateReport(self.source)
        entries = self._entries(report)
        report.found = len(entries) + len(report.unreadable)
        store = self.store
        keys = self._keys(entries, report)
        stored, current, todo = store.keys(), {}, []
        for e in entries:
            if e.path not in keys:
                continue
            k = keys[e.path]
            if k in current:
                report.duplicates += 1
                continue
            current[k] = e
            if k in stored:
                report.already_stored += 1
            else:
                todo.append(e)
        added, failed = index_files(store, [e.path for e in todo], [keys[e.path] for e in todo],
                                    [e.caption for e in todo], engine=engine, address=address,
                                    progress=progress, desc=f"indexing {Path(self.source).name}")
        report.extracted = added
        report.unreadable += [(path, _reason(path, why)) for path, why in failed]
        for path, _ in failed:
            current.pop(keys[path], None)
        if not current:
            reasons = "; ".join(f"{Path(p).name}: {why}" for p, why in report.unreadable[:3])
            raise DataError(f"{self.source}: none of its {report.found:,} picture file(s) could be read, so nothing "
                            f"was stored ({reasons}{'; ...' if len(report.unreadable) > 3 else ''}).")
        self._current = current
        self._key_of = {path: k for path, k in keys.items() if k in current}
        report.seconds = time.perf_counter() - t0
        self.report = report
        return report

    def __len__(self) -> int:
        """Pictures a search can return (those found at the last :meth:`update`)."""
        return len(self._current)

    # ----- search ----------------------------------------------------------------------------
    def _ready(self) -> None:
        if self.report is None:  # the first search brings the collection up to date (with a progress bar)
            self.update()

    def _hits(self, vector: np.ndarray, k: int) -> list[Any]:
        """The store's hits for ``vector``, only pictures present now, under their current paths."""
        if not isinstance(k, int | np.integer) or k < 1:
            raise QueryError(f"k must be a positive integer, got {k!r}.")
        self._ready()
        extra = len(self.store) - len(self._current)  # rows of deleted or edited files
        hits = self.store.search(vector, int(k) + extra)
        out = []
        for h in hits:
            e = self._current.get(h.key)
            if e is not None:
                out.append(dataclasses.replace(h, path=e.path, caption=e.caption if e.caption else h.caption))
        return out[:k]

    def search(self, query: str, k: int = 10) -> list[Any]:
        """The ``k`` pictures that best match the words ``query``, best first
        (:class:`~crosslab.store.StoreHit`: ``score``, ``path``, ``caption``, ``key``)."""
        if not isinstance(query, str) or not query.strip():
            raise QueryError("type a few words describing a picture, e.g. 'a red car'.")
        self._ready()
        return self._hits(np.asarray(self.pipeline.encode_text(query))[0], k)

    def ranks(self, queries: Sequence[str], targets: Sequence[str | os.PathLike]) -> np.ndarray:
        """For each query (words) the 1-based rank of its ``target`` (a picture file of the collection)
        among all the collection's pictures, by exact scores: how well search works on *your*
        pictures, once you have written a few queries with the picture each should find."""
        from .evaluation import ranks

        self._ready()
        if len(queries) != len(targets) or not len(queries):
            raise QueryError(f"give one target picture per query: {len(queries)} queries, {len(targets)} targets.")
        keys = list(self._current)
        index = {k: i for i, k in enumerate(keys)}
        key_of = {str(Path(path).resolve()): k for path, k in self._key_of.items()}
        wanted = [str(Path(t).expanduser().resolve()) for t in targets]
        missing = [t for t in wanted if t not in key_of]
        if missing:
            raise DataError(f"{missing[0]} is not a readable picture of this collection ({len(missing)} such "
                            "target(s)); targets are files found by the last update().")
        rows = self.store.rows()
        row_of = {k: i for i, k in enumerate(rows["key"])}
        V = np.stack([rows["vector"][row_of[k]] for k in keys])
        S = self.pipeline.score(np.asarray(self.pipeline.encode_text(list(queries))), V)
        return ranks(S, np.array([index[key_of[t]] for t in wanted]))[0]

    def embed_image(self, image: Any) -> np.ndarray:
        """The joint-space vector of one picture: a path, PIL image, uint8 array or a file's bytes."""
        self._ready()
        return np.asarray(self.pipeline.encode_image([read_picture(image)]), np.float32)[0]

    def similar(self, image: Any, k: int = 10) -> list[Any]:
        """The ``k`` pictures of the collection nearest ``image`` in the joint space (itself first, if in it)."""
        return self._hits(self.embed_image(image), k)

    def describe(self, image: Any, k: int = 5, vocabulary: Any = "clipart") -> list[tuple[str, float]]:
        """The ``k`` phrases of ``vocabulary`` that best describe ``image``: ``[(phrase, score)]``, best first.

        ``vocabulary``: ``"clipart"`` (the clip art's captions), ``"imagenet"`` (the 1,000 class
        names), a list of phrases, or a text file with one phrase per line."""
        from .search import topk

        if not isinstance(k, int | np.integer) or k < 1:
            raise QueryError(f"k must be a positive integer, got {k!r}.")
        phrases, T = self.vocabulary(vocabulary)
        v = self.embed_image(image)
        S = self.pipeline.score(T, v[None], axis=0)[:, 0]
        vals, ids = topk(S[None], min(int(k), len(phrases)))
        return [(phrases[int(i)], float(s)) for s, i in zip(vals[0], ids[0], strict=True)]

    def vocabulary(self, vocabulary: Any = "clipart") -> tuple[list[str], np.ndarray]:
        """``(phrases, their joint-space vectors)``, computed once and cached on disk. Phrases the text
        encoder knows no word of are left out (they have no meaning to rank)."""
        from .cache import FeatureCache, hash_arrays, hash_texts
        from .pipeline import _np

        named = vocabulary if isinstance(vocabulary, str) and vocabulary in ("clipart", "imagenet") else None
        if named in self._vocab:
            return self._vocab[named]
        phrases = _phrases(vocabulary)
        key = hash_texts(phrases)
        if key not in self._vocab:
            p = self.pipeline

            def compute() -> dict[str, np.ndarray]:
                if named == "clipart":  # the clip art's caption features are cached already (fitting used them)
                    from .data import load_clipart

                    ds = load_clipart()
                    first = {c: i for i, c in reversed(list(enumerate(c.strip() for c in ds.captions)))}
                    X = np.asarray(p.text_features(ds))[[first[t] for t in phrases]]
                else:
                    X = np.asarray(p.text.transform(phrases, cache=True))
                known = np.flatnonzero(np.abs(X).sum(1) > 0)  # a bag of unknown words is all zeros
                return {"known": known, "vectors": _np(p.head.embed_text(X[known])).astype(np.float32)}

            arrays, _ = FeatureCache(namespace="pipelines").get_or_compute(
                {"kind": "vocabulary", "version": 2, "pipeline": hash_arrays(p.to_arrays())[:24], "texts": key}, compute,
                label="vocabulary")
            known = arrays["known"].astype(int)
            if not len(known):
                raise DataError(f"the pipeline {self.pipeline_name!r} knows no word of any phrase of this vocabulary.")
            self._vocab[key] = ([phrases[i] for i in known], arrays["vectors"])
        if named is not None:
            self._vocab[named] = self._vocab[key]
        return self._vocab[key]


def _reason(path: str, why: str) -> str:
    """``why`` without the file's path it often starts with (the report names the file already)."""
    for prefix in (f"{path}: ", f"{path} "):
        if why.startswith(prefix):
            return why[len(prefix):]
    return why


def _phrases(vocabulary: Any) -> list[str]:
    """The distinct, non-empty phrases of a vocabulary, in first-seen order."""
    if isinstance(vocabulary, str) and vocabulary == "clipart":
        from .data import load_clipart

        raw = load_clipart().captions
    elif isinstance(vocabulary, str) and vocabulary == "imagenet":
        from .image import imagenet_categories

        raw = imagenet_categories()
    elif isinstance(vocabulary, str | os.PathLike):
        path = Path(vocabulary).expanduser()
        if not path.is_file():
            raise DataError(f"vocabulary {str(vocabulary)!r}: use 'clipart', 'imagenet', a list of phrases or a "
                            "text file with one phrase per line.")
        try:
            raw = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read it as UTF-8 text ({type(e).__name__}).") from None
    else:
        raw = list(vocabulary)
        if not all(isinstance(s, str) for s in raw):
            raise DataError("a vocabulary is a list of phrases (strings).")
    phrases = list(dict.fromkeys(s.strip() for s in raw if s.strip()))
    if not phrases:
        raise DataError(f"vocabulary {vocabulary if isinstance(vocabulary, str) else '(list)'!r} has no phrases.")
    if len(phrases) > _PHRASES_MAX:
        raise DataError(f"the vocabulary has {len(phrases):,} phrases; keep it under {_PHRASES_MAX:,}.")
    return phrases


def read_picture(image: Any) -> Any:
    """A picture given as a path, PIL image, uint8 array or a file's bytes, decoded by crosslab's rules
    (:func:`crosslab.data.load_image`: EXIF orientation, RGB, decompression bombs refused) -- an
    :class:`ImageError` if it is not one."""
    from PIL import Image

    from .data.base import load_image, to_rgb

    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, str | os.PathLike):
        return load_image(Path(image).expanduser())
    if isinstance(image, bytes | bytearray | memoryview | np.ndarray):
        return load_image(image)
    raise ImageError(f"a picture is a path, PIL image, uint8 array or file bytes, not {type(image).__name__}.")
