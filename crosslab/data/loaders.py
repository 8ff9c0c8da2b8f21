"""Loaders for learners' own captioned images.

Formats: Karpathy split JSON (``dataset_flickr8k.json``, flickr30k, coco),
COCO captions JSON (``captions_train2017.json``), a CSV/TSV of
(image path, caption) rows, and an image-folder tree whose folder names become
the text (like torchvision's ``ImageFolder``). Each returns a
:class:`CaptionedImages` whose image paths are relative to the dataset root.

Policies (the same in every loader):

- an annotation file that is missing, is not valid JSON/CSV or lacks the
  expected keys raises :class:`SchemaError` / :class:`DataError` naming the file;
- an image path that escapes the dataset root (``../``, absolute paths, links
  pointing outside) raises :class:`DataError`;
- duplicate image ids, or one image file listed twice, raise :class:`SchemaError`;
- empty captions are dropped, and images left without any caption are dropped,
  with one warning giving the counts;
- a missing image file raises :class:`ImageError` (``on_missing="skip"`` drops
  those images with one warning giving the count);
- ``verify=True`` decodes every image up front (slow on big sets) so corrupt,
  truncated or non-image files and decompression bombs fail now, as
  :class:`ImageError`, rather than in the middle of feature extraction;
  with ``on_missing="skip"`` they are dropped with a warning instead.

Images are only ever read: nothing is written into the dataset folder.

The bundled real photos for out-of-domain queries (:func:`load_photos`) are in
:mod:`crosslab.data.photos`: they are shipped data, not a file format.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import DataError, ImageError, SchemaError
from .base import CaptionedImages, load_image

#: File extensions treated as images (as torchvision's ``IMG_EXTENSIONS``).
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
OnMissing = Literal["raise", "skip"]


# ----- shared checks --------------------------------------------------------------
def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}.")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise SchemaError(
            f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})."
        ) from None
    except UnicodeDecodeError:
        raise SchemaError(
            f"{path} is not UTF-8 text; is it really a JSON annotation file?"
        ) from None


def _safe_relpath(root: Path, rel: Any, source: str, folder: str = "dataset folder") -> str:
    """Check that ``rel`` names a file inside ``root`` (a user's folders are only read, and only
    there); return it as a POSIX relative path. ``folder`` says what ``root`` is, for messages."""
    if not isinstance(rel, str) or not rel.strip():
        raise SchemaError(f"{source}: image path must be a non-empty relative path, got {rel!r}.")
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise DataError(
            f"{source}: image path {rel!r} points outside the {folder} {root}; "
            "paths must be relative and stay inside it (no '..', no absolute paths)."
        )
    full = (root / p).resolve()
    if not full.is_relative_to(root.resolve()):  # a symbolic link leading out
        raise DataError(f"{source}: image path {rel!r} resolves outside the {folder} {root} "
                        "(through a symbolic link).")
    return p.as_posix()


def _assemble(
    name: str,
    root: Path,
    records: list[tuple[str, str, list[Any], str, dict]],
    source: str,
    on_missing: OnMissing,
    verify: bool,
) -> CaptionedImages:
    """records: (id, relative path, raw captions, split, meta) -> CaptionedImages, applying the policies."""
    if on_missing not in ("raise", "skip"):
        raise DataError(f"on_missing must be 'raise' or 'skip', got {on_missing!r}.")
    seen: dict[str, int] = {}
    paths: dict[str, int] = {}
    for k, (iid, rel, *_rest) in enumerate(records):
        if rel in paths:
            raise SchemaError(
                f"{source}: image file {rel!r} is listed twice (entries {paths[rel]} and {k}); "
                "give each image one entry with all its captions."
            )
        paths[rel] = k
        if iid in seen:
            raise SchemaError(
                f"{source}: duplicate image id {iid!r} (entries {seen[iid]} and {k}). Ids must be unique."
            )
        seen[iid] = k
    n_empty = n_uncaptioned = 0
    kept: list[tuple[str, str, list[str], str, dict]] = []
    for iid, rel, caps, split, meta in records:
        good = [c.strip() for c in caps if isinstance(c, str) and c.strip()]
        n_empty += len(caps) - len(good)
        if not good:
            n_uncaptioned += 1
            continue
        kept.append((iid, rel, good, split, meta))
    if n_empty or n_uncaptioned:
        warnings.warn(
            f"{source}: dropped {n_empty} empty caption(s) and {n_uncaptioned} image(s) left "
            "without a caption.",
            stacklevel=3,
        )
    bad: list[str] = []
    final = []
    for rec in kept:
        iid, rel = rec[0], rec[1]
        path = root / rel
        try:
            if not path.is_file():
                raise ImageError(f"{source}: image {iid!r} not found at {path}.")
            if verify:
                load_image(path, name=str(path))
        except ImageError as e:
            if on_missing == "raise":
                raise
            bad.append(str(e))
            continue
        final.append(rec)
    if bad:
        warnings.warn(
            f"{source}: skipped {len(bad)} image(s) that are missing or unreadable, e.g. {bad[0]}",
            stacklevel=3,
        )
    if not final:
        raise DataError(f"{source}: no usable images with captions.")
    captions, c2i = [], []
    for i, rec in enumerate(final):
        captions += rec[2]
        c2i += [i] * len(rec[2])
    return CaptionedImages(
        name=name,
        ids=[r[0] for r in final],
        images=[r[1] for r in final],
        captions=captions,
        caption_to_image=np.asarray(c2i, dtype=np.int64),
        split=np.asarray([r[3] for r in final], dtype=object),
        root=root,
        meta=[r[4] for r in final],
    )


# ----- Karpathy split JSON ------------------------------------------------------------
_KARPATHY_SPLIT = {"train": "train", "restval": "train", "val": "val", "test": "test"}


def load_karpathy(
    json_path: Path | str,
    image_root: Path | str | None = None,
    *,
    name: str | None = None,
    on_missing: OnMissing = "raise",
    verify: bool = False,
) -> CaptionedImages:
    """Load a Karpathy split file (``dataset_flickr8k.json``, ``dataset_flickr30k.json``, ``dataset_coco.json``).

    Expected: ``{"images": [{"filename", "split", "sentences": [{"raw"}], "filepath"?, "imgid"?}]}``.
    Images are looked up at ``image_root/filepath/filename`` (``filepath`` is
    COCO's ``train2014``/``val2014``; absent for Flickr). ``restval`` counts as
    train. ``image_root`` defaults to the JSON file's folder.
    """
    json_path = Path(json_path)
    root = Path(image_root) if image_root is not None else json_path.parent
    data = _read_json(json_path)
    src = str(json_path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise SchemaError(
            f"{src}: expected a JSON object with an 'images' list (Karpathy split format); "
            f"got {type(data).__name__}{' with keys ' + str(sorted(data)[:5]) if isinstance(data, dict) else ''}."
        )
    records = []
    for k, im in enumerate(data["images"]):
        where = f"{src}: images[{k}]"
        if not isinstance(im, dict) or "filename" not in im or "sentences" not in im:
            raise SchemaError(f"{where} needs 'filename' and 'sentences' keys.")
        split = _KARPATHY_SPLIT.get(im.get("split", ""))
        if split is None:
            raise SchemaError(
                f"{where}: split {im.get('split')!r} is not one of {sorted(_KARPATHY_SPLIT)}."
            )
        if not isinstance(im["sentences"], list):
            raise SchemaError(f"{where}: 'sentences' must be a list.")
        caps = []
        for s in im["sentences"]:
            if isinstance(s, dict) and isinstance(s.get("raw"), str):
                caps.append(s["raw"])
            elif isinstance(s, dict) and isinstance(s.get("tokens"), list):
                caps.append(" ".join(map(str, s["tokens"])))
            else:
                raise SchemaError(f"{where}: each sentence needs a 'raw' string.")
        rel = str(Path(im.get("filepath") or "") / str(im["filename"]))
        rel = _safe_relpath(root, rel, where)
        iid = str(im.get("imgid", rel)) if "cocoid" not in im else str(im["cocoid"])
        records.append((iid, rel, caps, split, {"filename": im["filename"]}))
    return _assemble(
        name or json_path.stem.removeprefix("dataset_"), root, records, src, on_missing, verify
    )


# ----- COCO captions JSON ---------------------------------------------------------------
def load_coco(
    json_path: Path | str,
    image_root: Path | str | None = None,
    *,
    split: str = "",
    name: str | None = None,
    on_missing: OnMissing = "raise",
    verify: bool = False,
) -> CaptionedImages:
    """Load a COCO captions file (``captions_train2017.json``) for one image folder.

    Expected: ``{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}``.
    All images get the same ``split`` (the file is one split: pass "train", "val"
    or "test"). ``image_root`` defaults to the JSON file's folder.
    """
    json_path = Path(json_path)
    root = Path(image_root) if image_root is not None else json_path.parent
    src = str(json_path)
    data = _read_json(json_path)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise SchemaError(
            f"{src}: expected a JSON object with 'images' and 'annotations' lists (COCO captions format)."
        )
    order: list[int] = []
    files: dict[int, str] = {}
    for k, im in enumerate(data["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise SchemaError(f"{src}: images[{k}] needs 'id' and 'file_name'.")
        if im["id"] in files:
            raise SchemaError(
                f"{src}: duplicate image id {im['id']!r} in 'images'. Ids must be unique."
            )
        files[im["id"]] = _safe_relpath(root, im["file_name"], f"{src}: images[{k}]")
        order.append(im["id"])
    caps: dict[int, list[Any]] = {i: [] for i in order}
    for k, a in enumerate(data["annotations"]):
        if not isinstance(a, dict) or "image_id" not in a or "caption" not in a:
            raise SchemaError(f"{src}: annotations[{k}] needs 'image_id' and 'caption'.")
        if a["image_id"] not in caps:
            raise SchemaError(
                f"{src}: annotations[{k}] refers to image_id {a['image_id']!r}, which is not in 'images'."
            )
        caps[a["image_id"]].append(a["caption"])
    records = [(str(i), files[i], caps[i], split, {"coco_id": i}) for i in order]
    return _assemble(name or json_path.stem, root, records, src, on_missing, verify)


# ----- CSV / TSV ----------------------------------------------------------------------------
_IMAGE_COLS = (
    "image", "image_path", "image_name", "image_file", "path", "file", "filename", "file_name",
    "filepath", "file_path", "img", "img_path", "photo", "picture",
)  # fmt: skip
_CAPTION_COLS = (
    "caption", "captions", "text", "sentence", "comment", "description", "title", "label", "alt_text",
)  # fmt: skip


def _names_an_image(root: Path, cell: str) -> bool:
    """True when a CSV cell is an image path: an image extension, or an existing file under ``root``."""
    cell = cell.strip()
    if cell.lower().endswith(IMG_EXTENSIONS):
        return True
    p = Path(cell)
    if not cell or p.is_absolute() or ".." in p.parts:
        return False  # not looked up here; read as data, _safe_relpath then says why it is refused
    return (root / p).is_file()


def load_csv(
    path: Path | str,
    image_root: Path | str | None = None,
    *,
    image_column: str | None = None,
    caption_column: str | None = None,
    delimiter: str | None = None,
    name: str | None = None,
    on_missing: OnMissing = "raise",
    verify: bool = False,
) -> CaptionedImages:
    """Load a CSV/TSV of (image path, caption) rows; rows with the same image give several captions.

    The delimiter is a tab for ``.tsv``/``.tab`` files, else guessed (comma,
    tab, semicolon, pipe). The first row is a header when ``image_column`` /
    ``caption_column`` is given; otherwise it is data when its first cell is an
    image path (an image extension, or an existing file under ``image_root``),
    and then the first two columns are image and caption; else a header when one
    of its cells names a column (``image``/``path``/``file``/``filename``...,
    ``caption``/``text``/``sentence``...). A first row that is neither raises
    :class:`SchemaError` saying how to mark the header: no row is ever dropped
    on a guess. An optional ``split`` column gives the split. ``image_root``
    defaults to the file's folder.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    src = str(path)
    if not path.is_file():
        raise DataError(f"caption file not found: {path}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SchemaError(f"{src} is not UTF-8 text; save it as UTF-8 CSV.") from None
    if delimiter is None:
        if path.suffix.lower() in (".tsv", ".tab"):
            delimiter = "\t"
        else:
            try:
                delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",\t;|").delimiter
            except csv.Error:
                delimiter = ","
    rows = [
        r for r in csv.reader(text.splitlines(), delimiter=delimiter) if any(c.strip() for c in r)
    ]
    if not rows:
        raise SchemaError(f"{src} has no rows.")
    first = [c.strip().lower() for c in rows[0]]
    known = _IMAGE_COLS + _CAPTION_COLS
    if image_column is not None or caption_column is not None:
        header = True  # the caller names the columns
    elif first[0] not in known and _names_an_image(root, rows[0][0]):
        header = False  # an image path first, e.g. 'img/0001,a caption that says title'
    elif any(c in known for c in first):
        header = True
    else:
        raise SchemaError(
            f"{src}: cannot tell whether the first row {rows[0]!r} is a header or data: none of "
            f"its cells is a known column name, and its first cell {rows[0][0]!r} is not an image "
            f"path (no image extension, no such file under {root}). If it is a header, name the "
            "columns, e.g. 'image,caption' (image column: one of "
            f"{', '.join(_IMAGE_COLS[:8])}, ...; caption column: one of "
            f"{', '.join(_CAPTION_COLS[:4])}, ...), or pass image_column= and caption_column=. "
            "If it is data, its first column must name an image file that exists."
        )
    if header:

        def col(wanted: str | None, candidates: tuple[str, ...], default: int, what: str) -> int:
            if wanted is not None:
                if wanted.lower() not in first:
                    raise SchemaError(
                        f"{src}: no column named {wanted!r}; the header has {rows[0]}."
                    )
                return first.index(wanted.lower())
            for c in candidates:
                if c in first:
                    return first.index(c)
            if len(first) > default:
                return default
            raise SchemaError(f"{src}: cannot find the {what} column in header {rows[0]}.")

        ic = col(image_column, _IMAGE_COLS, 0, "image")
        cc = col(caption_column, _CAPTION_COLS, 1, "caption")
        sc = first.index("split") if "split" in first else None
        body = rows[1:]
        start = 2
    else:
        ic, cc, sc, body, start = 0, 1, None, rows, 1
    if ic == cc:
        raise SchemaError(f"{src}: image and caption columns are the same column.")
    grouped: dict[str, list[str]] = {}
    splits: dict[str, str] = {}
    for lineno, r in enumerate(body, start):
        if len(r) <= max(ic, cc):
            raise SchemaError(
                f"{src}:{lineno}: expected at least {max(ic, cc) + 1} columns separated by "
                f"{delimiter!r}, got {len(r)}: {r!r}."
            )
        rel = _safe_relpath(root, r[ic].strip(), f"{src}:{lineno}")
        grouped.setdefault(rel, []).append(r[cc])
        if sc is not None and sc < len(r):
            s = r[sc].strip().lower()
            s = {"restval": "train", "valid": "val", "validation": "val", "dev": "val"}.get(s, s)
            if s not in ("train", "val", "test", ""):
                raise SchemaError(
                    f"{src}:{lineno}: unknown split {r[sc]!r}; use train, val or test."
                )
            if splits.setdefault(rel, s) != s:
                raise SchemaError(f"{src}:{lineno}: image {rel!r} is listed in two splits.")
    records = [(rel, rel, caps, splits.get(rel, ""), {}) for rel, caps in grouped.items()]
    return _assemble(name or path.stem, root, records, src, on_missing, verify)


# ----- image-folder tree --------------------------------------------------------------------
def _label_text(folder: str) -> str:
    """Folder name -> text: 'golden_retriever' -> 'golden retriever', 'n01440764-tench' -> 'tench'."""
    s = re.sub(r"^n\d{8}[-_ ]?", "", folder)  # ImageNet synset ids
    s = re.sub(r"[_\-.]+", " ", s)
    s = re.sub(r"([a-z])([A-Z])", r"\1 \2", s)
    return re.sub(r"\s+", " ", s).strip().lower() or folder


def load_image_folder(
    root: Path | str,
    *,
    template: str = "{}",
    name: str | None = None,
    verify: bool = False,
    on_missing: OnMissing = "raise",
) -> CaptionedImages:
    """Load ``root/<class>/<image>`` (torchvision ``ImageFolder`` layout); the class name is the caption.

    Captions are ``template.format(label)`` ("a photo of a {}" is a common
    choice). When ``root`` holds ``train``/``val``/``test`` folders, each is an
    ImageFolder and gives the split. Files without an image extension are
    skipped with one warning giving the count. ``meta[i]["label"]`` is the class.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}.")
    if "{}" not in template:
        raise DataError(f"template must contain '{{}}' where the label goes, got {template!r}.")
    split_dirs = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    parts = [(s, root / s) for s in split_dirs] or [("", root)]
    records = []
    skipped = 0
    for split, base in parts:
        classes = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
        for cdir in classes:
            label = _label_text(cdir.name)
            for f in sorted(cdir.rglob("*")):
                if f.is_dir() or f.name.startswith("."):
                    continue
                if f.suffix.lower() not in IMG_EXTENSIONS:
                    skipped += 1
                    continue
                rel = _safe_relpath(root, f.relative_to(root).as_posix(), str(root))
                records.append((rel, rel, [template.format(label)], split, {"label": label}))
    if skipped:
        warnings.warn(
            f"{root}: skipped {skipped} file(s) without an image extension.", stacklevel=2
        )
    if not records:
        raise DataError(
            f"{root}: no images found; expected class folders with images inside "
            "(root/<class>/<image>.jpg), optionally under train/val/test."
        )
    return _assemble(name or root.name, root, records, str(root), on_missing, verify)
