"""crosslab's error hierarchy.

Every error a learner can trigger with bad input is a :class:`CrosslabError`
whose message names the file or value at fault and says what to do. Code deep
inside crosslab catches library exceptions at the boundary and re-raises one of
these, so a learner never has to read a traceback from PIL or torch.
"""

from __future__ import annotations


class CrosslabError(Exception):
    """Base class of every error crosslab raises on purpose."""


class DataError(CrosslabError):
    """A dataset, image or caption file is missing, unreadable or malformed."""


class ImageError(DataError):
    """One image cannot be used (corrupt, truncated, not an image, too large)."""


class SchemaError(DataError):
    """A JSON/CSV annotation file does not have the expected structure."""


class ModelError(CrosslabError):
    """A model, checkpoint or weights file cannot be built or loaded."""


class CacheError(CrosslabError):
    """A cache entry is unusable (callers normally recompute instead of raising)."""


class QueryError(CrosslabError):
    """A query cannot be answered (empty, or no known words, or wrong shape)."""


class ShapeError(CrosslabError, ValueError):
    """Arrays have incompatible shapes, dtypes or values for the operation."""
