"""Datasets: the embedded clip art, synthetic scenes, and loaders for learners' own data."""

from .base import SPLITS, CaptionedImages, load_image, to_rgb

__all__ = ["SPLITS", "CaptionedImages", "load_image", "to_rgb"]
