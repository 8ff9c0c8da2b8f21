"""The one dataset structure every other part of crosslab consumes.

A :class:`CaptionedImages` holds N images (paths under a root folder, or
in-memory arrays) and C >= N captions, each caption pointing at its image
(``caption_to_image``), plus a split label per image. Loaders for the embedded
clip art, the synthetic scenes and learners' own data (Karpathy JSON, COCO
JSON, CSV, image folders) all return this type.

Image decoding rules (shared by every loader and by the image encoders, see
:func:`load_image`): EXIF orientation applied; greyscale, palette, CMYK and
16-bit images converted to 8-bit RGB; transparency composited on white;
decompression bombs refused.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import DataError, ImageError

SPLITS = ("train", "val", "test")
#: Images with more pixels than this are refused (PIL's own bomb limit is 2x this).
MAX_IMAGE_PIXELS = 64_000_000

ImageRef = str | Path | np.ndarray


def load_image(ref: ImageRef | bytes, *, root: Path | None = None, name: str | None = None) -> Image.Image:
    """Decode one image to 8-bit RGB following crosslab's rules; raise :class:`ImageError` on failure.

    ``ref`` is a path (relative to ``root`` when given), an ``(H, W, 3)`` /
    ``(H, W)`` uint8 array, or an image file's bytes (e.g. an upload). ``name`` is used in
    error messages.
    """
    if isinstance(ref, np.ndarray):
        return _array_to_rgb(ref, name or "<array>")
    if isinstance(ref, bytes | bytearray | memoryview):
        return _decode(io.BytesIO(bytes(ref)), name or "the uploaded file")
    path = Path(ref)
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    label = name or str(path)
    if not path.exists():
        raise ImageError(f"image file not found: {label}. Check the dataset folder and file name.")
    if path.is_dir():
        raise ImageError(f"{label} is a folder, not an image file.")
    return _decode(path, label)


def _decode(source: Path | io.BytesIO, label: str) -> Image.Image:
    """Open, check the size before decoding (decompression bombs), decode and convert to RGB."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise ImageError(
                        f"{label}: {w}x{h} pixels is more than crosslab's limit of "
                        f"{MAX_IMAGE_PIXELS:,} (possible decompression bomb). Resize it first."
                    )
                im.load()
                return to_rgb(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{label}: refused as a possible decompression bomb, more than crosslab's limit of "
                         f"{MAX_IMAGE_PIXELS:,} pixels ({e}).") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label} is not an image file PIL can read (wrong format or corrupt).") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{label} could not be decoded: {e}. The file may be truncated or corrupt.") from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert any PIL mode to 8-bit RGB (transparency on white)."""
    im = ImageOps.exif_transpose(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        im = Image.fromarray(_wide_to_uint8(np.asarray(im), im.mode), mode="L")
    if im.mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
    if im.mode in ("LA", "PA"):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im, mask=im.getchannel("A"))
        return bg
    if im.mode != "RGB":
        im = im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return im


def _wide_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """16-bit / 32-bit / float greyscale -> uint8 without changing how bright the picture is.

    16-bit data (and 32-bit ints within 0..65535) are scaled by 255/65535, floats
    within 0..1 by 255; only values outside those ranges are min-max stretched.
    """
    a = arr.astype(np.float64)
    lo, hi = float(a.min()), float(a.max())
    if mode.startswith("I;16") or (mode == "I" and lo >= 0 and hi <= 65535):
        return np.round(a * (255.0 / 65535.0)).astype(np.uint8)
    if mode == "F" and lo >= 0 and hi <= 1:
        return np.round(a * 255.0).astype(np.uint8)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.round((a - lo) * scale).astype(np.uint8)


def _array_to_rgb(arr: np.ndarray, label: str) -> Image.Image:
    if arr.dtype != np.uint8:
        raise ImageError(f"{label}: image arrays must be uint8, got {arr.dtype}.")
    if arr.ndim == 2:
        return Image.fromarray(arr, mode="L").convert("RGB")
    if arr.ndim == 3 and arr.shape[2] == 3:
        return Image.fromarray(arr, mode="RGB")
    if arr.ndim == 3 and arr.shape[2] == 4:
        return to_rgb(Image.fromarray(arr, mode="RGBA"))
    raise ImageError(f"{label}: image arrays must be (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}.")


@dataclass(frozen=True, eq=False)
class CaptionedImages:
    """N images with C captions; the common currency of crosslab.

    Attributes:
        name: short dataset name ("clipart", "scenes", "flickr8k", ...).
        ids: (N,) unique string id per image.
        images: (N,) image references: paths relative to ``root`` (or absolute), or uint8 arrays.
        captions: (C,) caption strings, none empty.
        caption_to_image: (C,) int64, index into the images of each caption.
        split: (N,) one of "train" / "val" / "test" (or "" when the data has no split).
        root: folder that relative image paths are resolved against.
        meta: optional per-image metadata, a list of N dicts (title, keywords, category, ...).
    """

    name: str
    ids: list[str]
    images: list[ImageRef]
    captions: list[str]
    caption_to_image: np.ndarray
    split: np.ndarray
    root: Path | None = None
    meta: list[dict[str, Any]] | None = None
    _fingerprint: list = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        c2i = np.asarray(self.caption_to_image, dtype=np.int64)
        object.__setattr__(self, "caption_to_image", c2i)
        object.__setattr__(self, "split", np.asarray(self.split, dtype=object))
        if len(self.images) != n:
            raise DataError(f"{self.name}: {len(self.images)} images but {n} ids.")
        if len(self.split) != n:
            raise DataError(f"{self.name}: {len(self.split)} split labels but {n} images.")
        if len(c2i) != len(self.captions):
            raise DataError(f"{self.name}: {len(self.captions)} captions but {len(c2i)} caption->image links.")
        if len(set(self.ids)) != n:
            dup = sorted({i for i in self.ids if self.ids.count(i) > 1})[:5]
            raise DataError(f"{self.name}: duplicate image ids {dup}. Ids must be unique.")
        if len(c2i) and (c2i.min() < 0 or c2i.max() >= n):
            raise DataError(f"{self.name}: a caption points at an image index outside 0..{n - 1}.")
        for j, cap in enumerate(self.captions):
            if not isinstance(cap, str) or not cap.strip():
                raise DataError(
                    f"{self.name}: caption {j} (image {self.ids[c2i[j]]!r}) is empty. "
                    "Remove it or give it text."
                )
        bad = set(map(str, self.split)) - {*SPLITS, ""}
        if bad:
            raise DataError(f"{self.name}: unknown split labels {sorted(bad)}; use {SPLITS}.")
        if self.meta is not None and len(self.meta) != n:
            raise DataError(f"{self.name}: {len(self.meta)} metadata rows but {n} images.")

    # ----- sizes and access -------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_captions(self) -> int:
        return len(self.captions)

    @property
    def texts(self) -> list[str]:
        """All captions (alias used by the text encoders)."""
        return self.captions

    def image_captions(self, i: int) -> list[str]:
        """The captions of image ``i``."""
        return [self.captions[j] for j in np.flatnonzero(self.caption_to_image == i)]

    def load_image(self, i: int) -> Image.Image:
        """Decode image ``i`` to RGB (see :func:`load_image`)."""
        return load_image(self.images[i], root=self.root, name=f"{self.name}:{self.ids[i]}")

    def __iter__(self) -> Iterator[tuple[Image.Image, list[str]]]:
        for i in range(len(self)):
            yield self.load_image(i), self.image_captions(i)

    # ----- subsets ----------------------------------------------------------
    def select(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> CaptionedImages:
        """A new dataset with the images at ``indices`` (in that order) and their captions."""
        idx = np.asarray(indices, dtype=np.int64)
        remap = np.full(len(self), -1, dtype=np.int64)
        remap[idx] = np.arange(len(idx))
        keep = np.flatnonzero(remap[self.caption_to_image] >= 0)
        keep = keep[np.argsort(remap[self.caption_to_image[keep]], kind="stable")]
        return CaptionedImages(
            name=name or self.name,
            ids=[self.ids[i] for i in idx],
            images=[self.images[i] for i in idx],
            captions=[self.captions[j] for j in keep],
            caption_to_image=remap[self.caption_to_image[keep]],
            split=self.split[idx],
            root=self.root,
            meta=None if self.meta is None else [self.meta[i] for i in idx],
        )

    def subset(self, split: str) -> CaptionedImages:
        """The images of one split ("train", "val" or "test")."""
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; use one of {SPLITS}.")
        return self.select(np.flatnonzero(self.split == split), name=f"{self.name}/{split}")

    @property
    def train(self) -> CaptionedImages:
        return self.subset("train")

    @property
    def val(self) -> CaptionedImages:
        return self.subset("val")

    @property
    def test(self) -> CaptionedImages:
        return self.subset("test")

    # ----- identity ---------------------------------------------------------
    def fingerprint(self) -> str:
        """A content hash of the images (bytes of files / arrays) and their order; used as cache key."""
        if self._fingerprint:
            return self._fingerprint[0]
        h = hashlib.sha256()
        h.update(self.name.split("/")[0].encode())
        for i, ref in enumerate(self.images):
            h.update(self.ids[i].encode() + b"\0")
            if isinstance(ref, np.ndarray):
                h.update(str(ref.shape).encode())
                h.update(np.ascontiguousarray(ref).tobytes())
            else:
                p = Path(ref)
                if self.root is not None and not p.is_absolute():
                    p = Path(self.root) / p
                try:
                    h.update(hashlib.sha256(p.read_bytes()).digest())
                except OSError:
                    h.update(b"<missing>" + str(p).encode())
        fp = h.hexdigest()[:20]
        self._fingerprint.append(fp)
        return fp

    def __repr__(self) -> str:
        counts = {s: int((self.split == s).sum()) for s in SPLITS if (self.split == s).any()}
        return (
            f"CaptionedImages({self.name!r}: {len(self)} images, {self.n_captions} captions"
            + (f", split {counts}" if counts else "")
            + ")"
        )
