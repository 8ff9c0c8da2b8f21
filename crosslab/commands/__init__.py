"""The commands of ``python -m crosslab`` (one module each) and what they share."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_dataset(spec: str, images: str | None = None, n_scenes: int = 2000) -> Any:
    """The dataset named by ``--data``: ``clipart``, ``scenes`` or ``scenes:N`` (synthetic), a
    clip-art style folder (with ``manifest.jsonl``) or an image folder, a Karpathy / COCO
    ``.json`` or a ``.csv`` file (``images``: the folder their paths are relative to)."""
    from .. import data as D
    from ..errors import DataError, SchemaError

    if spec == "clipart":
        return D.load_clipart()
    if spec == "scenes" or spec.startswith("scenes:"):
        n = spec.partition(":")[2] or str(n_scenes)
        if not n.isdigit() or int(n) < 1:
            raise DataError(f"--data {spec}: use scenes:N with N >= 1 synthetic scenes.")
        return D.make_scenes(int(n), seed=0)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"--data {spec!r}: no such file or folder (or use 'clipart' / 'scenes').")
    if path.is_dir():
        return D.load_clipart(path) if (path / "manifest.jsonl").is_file() else D.load_image_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            return D.load_karpathy(path, images)
        except SchemaError as karpathy_error:
            try:
                return D.load_coco(path, images)
            except SchemaError:
                raise karpathy_error from None
    if suffix in (".csv", ".tsv", ".tab", ".txt"):
        return D.load_csv(path, images)
    raise DataError(f"--data {spec}: expected a folder, a .json (Karpathy/COCO) or a .csv file.")
