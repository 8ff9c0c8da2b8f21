"""crosslab: the helper package of a course on cross-modal (text <-> image) retrieval.

Submodules are imported lazily so ``import crosslab`` stays fast:

    import crosslab as cl
    ds = cl.data.load_clipart()
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "data", "device", "errors", "text", "image", "cache", "joint", "similarity",
    "retrieval", "baselines", "plots", "widgets", "doctor", "recipes",
    "text_encoders", "zeroshot", "beyond",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'crosslab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
