"""A folder of pictures to practise on, like a learner's own: no captions, sub-folders, broken files.

Lesson 11 indexes it with :class:`crosslab.collection.Collection`; it is made from the shipped
photos and clip art, once, in crosslab's cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["sample_folder"]


def sample_folder(n_drawings: int = 300, *, broken: bool = True) -> Path:
    """A folder of pictures to practise on, made once in the cache: the course's 18 real photos as
    JPEGs under ``photos/`` and the first ``n_drawings`` test-split drawings under ``drawings/`` (no
    captions: a folder like yours), plus, with ``broken``, two files that are not pictures
    (``broken/half-a-photo.jpg``, a truncated JPEG, and ``broken/notes.jpg``, text). Files are written
    atomically and only when missing, so a second call changes nothing."""
    import shutil

    from PIL import Image

    from .._io import atomic_write
    from ..cache import cache_root
    from .clipart import load_clipart
    from .photos import load_photos

    ds = load_clipart()
    test = np.flatnonzero(ds.split == "test")
    if not isinstance(n_drawings, int | np.integer) or not 0 <= n_drawings <= len(test):
        raise DataError(f"n_drawings must be 0 .. {len(test)} (the test split's drawings), got {n_drawings!r}.")
    root = cache_root() / "samples" / f"my-pictures-{n_drawings}{'-broken' * broken}"
    for sub in ("photos", "drawings") + (("broken",) if broken else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    photos = load_photos()
    for i, name in enumerate(photos.ids):
        f = root / "photos" / f"{name}.jpg"
        if not f.exists():
            with atomic_write(f, "wb") as fh:
                Image.fromarray(photos.images[i]).save(fh, format="JPEG", quality=90)
    for i in test[:n_drawings]:
        f = root / "drawings" / Path(ds.images[i]).name
        if not f.exists():
            with atomic_write(f, "wb") as fh, open(Path(ds.root) / ds.images[i], "rb") as src:
                shutil.copyfileobj(src, fh)
    if broken:
        whole = (root / "photos" / f"{photos.ids[0]}.jpg").read_bytes()
        for name, content in (("half-a-photo.jpg", whole[: len(whole) // 2]), ("notes.jpg", b"a shopping list\n")):
            if not (root / "broken" / name).exists():
                with atomic_write(root / "broken" / name, "wb") as fh:
                    fh.write(content)
    return root
