"""crosslab: the helper package of a course on cross-modal (text <-> image) retrieval.

Submodules are imported lazily so ``import crosslab`` stays fast:

    import crosslab as cl
    ds = cl.data.load_clipart()
    p = cl.create_pipeline("mlp+minilm", ds)     # one of cl.list_pipelines()
    p.search("a red apple", k=5)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "data", "device", "errors", "text", "image", "cache", "joint", "losses", "similarity",
    "search", "evaluation", "baselines", "plots", "widgets", "doctor",
    "text_encoders", "zeroshot", "pipeline", "pipelines", "ann", "store", "distributed",
    "collection", "collection_app", "attention", "explain", "finetune", "robustness", "attacks", "modality",
    "plots_robustness",
}
#: The pipeline API at the top level: name -> module that defines it.
_FUNCTIONS = {"list_pipelines": "pipelines", "create_pipeline": "pipelines", "load_pipeline": "pipeline",
              "Collection": "collection"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f".{_FUNCTIONS[name]}", __name__), name)
    raise AttributeError(f"module 'crosslab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES, *_FUNCTIONS])
