"""Datasets: the embedded clip art, synthetic scenes, bundled photos, and loaders for learners' own data."""

from .base import SPLITS, CaptionedImages, load_image, to_rgb
from .clipart import load_clipart
from .loaders import load_coco, load_csv, load_image_folder, load_karpathy
from .people import QuerySet, load_people_queries
from .photos import load_photos
from .sample import sample_folder
from .scenes import make_scenes

__all__ = [
    "SPLITS",
    "CaptionedImages",
    "QuerySet",
    "load_clipart",
    "load_coco",
    "load_csv",
    "load_image",
    "load_image_folder",
    "load_karpathy",
    "load_people_queries",
    "load_photos",
    "sample_folder",
    "make_scenes",
    "to_rgb",
]
