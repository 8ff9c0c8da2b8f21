"""The embedded clip-art set: about 2,800 public-domain drawings with human-written text.

Built from Debian's ``openclipart-svg`` by ``scripts/build_clipart.py`` (see
``data/README.md`` for the curation rules and counts); committed under
``data/clipart/`` as 144 x 144 RGB PNGs plus ``manifest.jsonl``, one JSON object
per image with its captions, split and raw metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DataError, SchemaError
from .base import SPLITS, CaptionedImages
from .loaders import _safe_relpath

#: Where the committed set lives: ``<repo>/data/clipart`` next to the package.
DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "data" / "clipart"
META_FIELDS = ("title", "keywords", "description", "category", "category_path", "source")
_REQUIRED = ("id", "file", "split", "captions", *META_FIELDS)


def clipart_dir() -> Path:
    """The embedded clip-art set of this checkout (``<repo>/data/clipart``; may be absent)."""
    return DEFAULT_ROOT


def load_clipart(root: Path | str | None = None) -> CaptionedImages:
    """Load the clip-art set: N images (paths under ``root``), their captions and the fixed split.

    ``meta[i]`` holds the raw fields of image ``i``: title, keywords, description,
    category (top-level folder), category_path and source (the SVG's path in the
    Debian package). Images are decoded lazily (``ds.load_image(i)``). The folder
    is only read: a manifest ``file`` entry that leaves ``root`` (``../``, an
    absolute path, a symbolic link leading out) raises :class:`DataError`.
    """
    root = Path(root) if root is not None else clipart_dir()
    manifest = root / "manifest.jsonl"
    if not manifest.is_file():
        raise DataError(
            f"clip-art manifest not found: {manifest}. The set ships with the crosslab "
            "repository under data/clipart; pass root= if you moved it, or rebuild it with "
            "scripts/build_clipart.py."
        )
    ids, images, split, meta, captions, c2i = [], [], [], [], [], []
    with open(manifest, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SchemaError(f"{manifest}:{lineno}: not valid JSON ({e.msg}).") from None
            missing = [k for k in _REQUIRED if k not in row]
            if missing or not isinstance(row.get("captions"), list):
                raise SchemaError(
                    f"{manifest}:{lineno}: missing fields {missing or ['captions (a list)']}; "
                    "rebuild the set with scripts/build_clipart.py."
                )
            if row["split"] not in SPLITS:
                raise SchemaError(f"{manifest}:{lineno}: unknown split {row['split']!r}.")
            i = len(ids)
            ids.append(row["id"])
            images.append(_safe_relpath(root, row["file"], f"{manifest}:{lineno}", "clip-art folder"))
            split.append(row["split"])
            meta.append({k: row[k] for k in META_FIELDS})
            captions += row["captions"]
            c2i += [i] * len(row["captions"])
    if not ids:
        raise DataError(f"{manifest} lists no images.")
    return CaptionedImages(
        name="clipart",
        ids=ids,
        images=images,
        captions=captions,
        caption_to_image=np.asarray(c2i, dtype=np.int64),
        split=np.asarray(split, dtype=object),
        root=root,
        meta=meta,
    )
