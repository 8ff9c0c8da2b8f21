"""The course's default recipe: which features, which baselines, which trained models.

``python -m crosslab evaluate`` and lesson 05 both call :func:`run_evaluation`,
so the table a learner sees in the notebook is the one the command prints.
Every choice here (text features, pooling, ``d``, hyper-parameters, the ridge of
the regularised CCA) was made on the validation split; the test split is only
ever scored once, at the end. ``docs/experiments.md`` records what was tried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import CrosslabError

#: Text features: word vectors x pooling. "glove" is GloVe 6B 50-d, "w2v" a 100-d
#: skip-gram Word2Vec trained on the *training* captions; "glove+w2v" concatenates both.
TEXT_FEATURES = (
    "glove-mean", "glove-tfidf", "glove-sif", "w2v-mean", "w2v-tfidf", "w2v-sif",
    "glove+w2v-mean", "glove+w2v-tfidf", "glove+w2v-sif",
)
DEFAULT_TEXT = "glove+w2v-tfidf"
DEFAULT_ENCODER = "efficientnet_lite0"
DEFAULT_D = 256
#: Hyper-parameters of the trained models, per loss (chosen on val; see docs/experiments.md).
TRAIN_DEFAULTS: dict[str, Any] = dict(
    head="mlp", hidden=512, dropout=0.5, lr=1e-3, weight_decay=1e-4, batch_size=256,
    epochs=60, patience=10, seed=0,
)
LOSS_DEFAULTS: dict[str, dict[str, Any]] = {
    "infonce": dict(temperature=0.07),
    "hinge": dict(margin=0.2),
    # From random init the hardest-negative loss collapses (val R@10 ~27 %, as VSE++
    # warns); it is run as a fine-tuning of the regularised-CCA start instead.
    "max_violation": dict(margin=0.2, head="linear", dropout=0.0, init="cca", lr=3e-4),
    "bce": dict(temperature=0.1, n_negatives=15),
}
#: sklearn CCA: components, PCA size per side, NIPALS iterations (kept small: it is slow).
CCA_DEFAULTS: dict[str, Any] = dict(d=16, pca=64, max_iter=100, tol=1e-4)
#: Ridge strengths tried for the regularised CCA (picked on val rSum).
RCCA_REGS = (0.01, 0.03, 0.1, 0.3, 1.0)


@dataclass
class SplitFeatures:
    """Features of one split: ``text`` ``(C, n)``, ``image`` ``(N, m)``, ``caption_to_image`` ``(C,)``."""

    text: np.ndarray
    image: np.ndarray
    caption_to_image: np.ndarray

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.text, self.image, self.caption_to_image


@dataclass
class Features:
    """Train / val / test features of one dataset under one text and one image encoder."""

    train: SplitFeatures
    val: SplitFeatures
    test: SplitFeatures
    text_name: str
    image_name: str
    info: dict[str, Any] = field(default_factory=dict)


def text_features(ds: Any, spec: str = DEFAULT_TEXT, *, seed: int = 0) -> np.ndarray:
    """``(C, n)`` features of all captions of ``ds``; everything is fitted on the train captions only."""
    from . import text as T

    if spec not in TEXT_FEATURES:
        raise CrosslabError(f"unknown text features {spec!r}; choose one of {', '.join(TEXT_FEATURES)}.")
    vectors, pooling = spec.rsplit("-", 1)
    train_caps = [ds.captions[j] for j in np.flatnonzero(ds.split[ds.caption_to_image] == "train")]
    if not train_caps:
        raise CrosslabError(f"{ds.name}: no training captions (split 'train' is empty).")
    parts = []
    for name in vectors.split("+"):
        kv = T.load_glove() if name == "glove" else T.train_word2vec(train_caps, vector_size=100, seed=seed)
        enc = T.SentenceEncoder(kv, pooling=pooling).fit(train_caps)
        parts.append(enc.transform(ds.captions))
    return np.hstack(parts).astype(np.float32)


def split_rows(ds: Any, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Caption rows ``(C_s,)``, image rows ``(N_s,)`` and the local caption -> image map of one split."""
    idx = np.flatnonzero(ds.split == split)
    if len(idx) == 0:
        raise CrosslabError(f"{ds.name}: the {split!r} split is empty; it needs at least one image.")
    remap = np.full(len(ds), -1, dtype=np.int64)
    remap[idx] = np.arange(len(idx))
    caps = np.flatnonzero(remap[ds.caption_to_image] >= 0)
    return caps, idx, remap[ds.caption_to_image[caps]]


def split_features(ds: Any, X: np.ndarray, Y: np.ndarray, split: str) -> SplitFeatures:
    """The rows of one split: ``X`` ``(C, n)`` caption and ``Y`` ``(N, m)`` image features of all of ``ds``."""
    caps, idx, c2i = split_rows(ds, split)
    return SplitFeatures(X[caps], Y[idx], c2i)


def features(
    ds: Any, *, text: str = DEFAULT_TEXT, encoder: str = DEFAULT_ENCODER, progress: bool = True
) -> Features:
    """Text and image features of a dataset (image features come from the feature cache when warm)."""
    from .image import ImageEncoder

    t0 = time.perf_counter()
    X = text_features(ds, text)
    t1 = time.perf_counter()
    Y = ImageEncoder(encoder).extract(ds, progress=progress)
    t2 = time.perf_counter()
    return Features(
        *(split_features(ds, X, Y, s) for s in ("train", "val", "test")), text_name=text, image_name=encoder,
        info={"text_s": t1 - t0, "image_s": t2 - t1},
    )


@dataclass
class ModelSpec:
    """A named model the evaluation trains: ``make(features) -> fitted model``."""

    name: str
    kind: str  # "random" | "cca" | "trained"
    make: Callable[[Features], Any]


def _fit_rcca(f: Features, d: int) -> Any:
    from .baselines import RegularizedCCA
    from .retrieval import evaluate

    best = None
    base = RegularizedCCA(d=d, reg=RCCA_REGS[0]).fit(*f.train.as_tuple())
    for reg in RCCA_REGS:
        m = base.with_reg(reg)
        r = evaluate(m, f.val.caption_to_image, text=f.val.text, image=f.val.image)["rsum"]
        if best is None or r > best[0]:
            best = (r, m)
    return best[1]


#: Bump when a change to the training code changes what ``fit`` returns: cached models
#: (see :func:`_fit_trained`) made by older code are then ignored.
MODEL_VERSION = 1


def features_hash(f: Features) -> str:
    """Content hash of the train and val features of ``f`` (what a fitted model depends on)."""
    from .cache import hash_arrays

    if "hash" not in f.info:
        f.info["hash"] = hash_arrays({
            f"{split}/{what}": getattr(getattr(f, split), what)
            for split in ("train", "val") for what in ("text", "image", "caption_to_image")
        })[:24]
    return f.info["hash"]


def _fit_trained(
    loss: str, d: int, progress: bool, device: Any, cache: bool = True
) -> Callable[[Features], Any]:
    from .cache import FeatureCache
    from .device import get_device
    from .joint import JointModel, fit

    def make(f: Features) -> Any:
        import torch

        kw = TRAIN_DEFAULTS | LOSS_DEFAULTS[loss]

        def train() -> dict[str, np.ndarray]:
            model, history = fit(
                *f.train.as_tuple(), val=f.val.as_tuple(), d=d, loss=loss, progress=progress,
                device=device, **kw,
            )
            return model.to_arrays() | {"history": np.array(json.dumps(history, default=float))}

        # Training is deterministic for fixed features, settings and seed, so a model fitted
        # before is reused (content-addressed, like image features): same numbers, no waiting.
        parts = {
            "kind": "joint-model", "model_version": MODEL_VERSION, "loss": loss, "d": d, "config": kw,
            "data": features_hash(f), "torch": torch.__version__.split("+")[0],
            "device": get_device(device).type,
        }
        arrays, info = FeatureCache(namespace="models").get_or_compute(
            parts, train, label=f"model-{loss}", enabled=cache
        )
        model = JointModel.from_arrays(arrays, device=device)
        model.history_ = json.loads(str(arrays["history"]))
        model.cache_info_ = info
        return model

    return make


def default_models(
    *, d: int = DEFAULT_D, losses: Sequence[str] | None = None, progress: bool = True, device: Any = None,
    cache: bool = True,
) -> list[ModelSpec]:
    """Random, sklearn CCA, regularised CCA and one trained model per loss.

    Trained models are stored in the cache (``CROSSLAB_CACHE``/models) keyed by the
    features' content and the settings, and loaded from there on the next run;
    ``cache=False`` always retrains.
    """
    from .baselines import CCAModel, RandomModel
    from .joint import LOSSES

    specs = [
        ModelSpec("random", "random", lambda f: RandomModel(d=d).fit(*f.train.as_tuple())),
        ModelSpec("cca (sklearn)", "cca", lambda f: CCAModel(**CCA_DEFAULTS).fit(*f.train.as_tuple())),
        ModelSpec("regularised cca", "cca", lambda f: _fit_rcca(f, min(d, 128))),
    ]
    for loss in losses or LOSSES:
        kw = TRAIN_DEFAULTS | LOSS_DEFAULTS[loss]
        name = f"{kw.get('head', 'linear')}{'+cca init' if kw.get('init') == 'cca' else ''} {loss}"
        specs.append(ModelSpec(name, "trained", _fit_trained(loss, d, progress, device, cache)))
    return specs


def run_evaluation(
    ds: Any = None,
    *,
    text: str = DEFAULT_TEXT,
    encoder: str = DEFAULT_ENCODER,
    d: int = DEFAULT_D,
    losses: Sequence[str] | None = None,
    split: str = "test",
    progress: bool = True,
    device: Any = None,
    feats: Features | None = None,
    cache: bool = True,
) -> list[dict[str, Any]]:
    """Fit every default model on train (choices on val) and score ``split``; one row per model.

    Returns rows as :func:`crosslab.retrieval.metrics_row` makes them, plus ``seconds``
    (fitting and scoring; a trained model loaded from the cache takes well under a second)
    and ``cached`` (True when the fitted model came from the cache).
    """
    from .retrieval import evaluate, metrics_row

    if feats is None:
        if ds is None:
            from .data import load_clipart

            ds = load_clipart()
        feats = features(ds, text=text, encoder=encoder, progress=progress)
    target = {"test": feats.test, "val": feats.val, "train": feats.train}[split]
    rows = []
    for spec in default_models(d=d, losses=losses, progress=progress, device=device, cache=cache):
        t0 = time.perf_counter()
        model = spec.make(feats)
        m = evaluate(model, target.caption_to_image, text=target.text, image=target.image)
        row = metrics_row(spec.name, spec.kind, m)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        row["cached"] = bool(getattr(getattr(model, "cache_info_", None), "hit", False))
        rows.append(row)
    return rows
