"""Beyond word vectors: the recipe behind lesson 07 and ``python -m crosslab evaluate --queries people``.

Models (text side x image side), all fitted on train, every choice made on val,
test scored once:

=====================================  =========  =============================================
name                                   kind       what
=====================================  =========  =============================================
``random``                             random     chance level
``cca+glove``                          cca        regularised CCA, GloVe-mean text, CNN features
``cca+minilm``                         cca        regularised CCA, MiniLM text, CNN features
``mlp+minilm``                         trained    MLP towers, InfoNCE (recipes.TRAIN_DEFAULTS)
``conse+glove``                        zero-shot  ConSE, GloVe-mean class names, ImageNet logits
``conse+minilm``                       zero-shot  ConSE, MiniLM class names, ImageNet logits
``fusion(cca+glove,conse+glove)``      fusion     z-score fusion of the two GloVe rows
``fusion(cca+minilm,conse+minilm)``    fusion     z-score fusion, w chosen on val
``fusion(mlp+minilm,conse+minilm)``    fusion     the same with the trained towers
=====================================  =========  =============================================

Choices on val (rSum on the val captions): the CCA ridge (like
``recipes._fit_rcca``), ConSE's T and softmax temperature
(:func:`crosslab.zeroshot.choose_conse`; ConSE is centred on the train split's mean
vectors, two unpaired averages), early stopping of the MLP.

The fusion weight w (:func:`crosslab.zeroshot.choose_w`) is the one choice made for
people's queries rather than for captions, so it is made on queries like them: the
val people-style set (``data/people_queries/queries_val.csv``, val images, written by
the rules of the test set), text->image R@1 + R@5 + R@10, the best w on the grid.
Chosen on the val captions instead (``fusion_val="captions"``: both directions,
one-standard-error rule), w comes out small, because val captions resemble the
training captions, where the trained side is strongest. The test people-style set is
only ever scored, never used to choose anything.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import CrosslabError

__all__ = ["BeyondModel", "BeyondSetup", "fit_beyond", "score_matrix", "run_beyond", "BEYOND_MODELS"]

BEYOND_MODELS = (
    "random", "cca+glove", "cca+minilm", "mlp+minilm", "conse+glove", "conse+minilm",
    "fusion(cca+glove,conse+glove)", "fusion(cca+minilm,conse+minilm)",
    "fusion(mlp+minilm,conse+minilm)",
)
#: Text encoders of the recipe (registry names of :mod:`crosslab.text_encoders`).
TEXT_ENCODERS = {"glove": "glove-mean", "minilm": "minilm"}


@dataclass
class BeyondModel:
    """A fitted model of the recipe and what it reads.

    ``text`` names the text encoder (key of ``BeyondSetup.encoders``) and ``image``
    the image input, ``"features"`` (pooled CNN features) or ``"logits"`` (ImageNet
    logits); a fusion has a pair of each, (for model a, for model b).
    ``choice`` holds what was chosen on val (``reg``, ``T``, ``w``) and its val scores.
    """

    name: str
    kind: str
    model: Any
    text: str | tuple[str, str]
    image: str | tuple[str, str]
    choice: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class BeyondSetup:
    """The fitted models plus what scores new queries: encoders and per-split inputs.

    ``text[enc]`` is ``(C, d)`` for all captions of ``ds``; ``image["features"]`` ``(N, 1280)``,
    ``image["logits"]`` ``(N, 1000)`` for all its images.
    """

    ds: Any
    models: list[BeyondModel]
    encoders: dict[str, Any]
    text: dict[str, np.ndarray]
    image: dict[str, np.ndarray]
    info: dict[str, float] = field(default_factory=dict)

    def model(self, name: str) -> BeyondModel:
        """The model called ``name``."""
        for m in self.models:
            if m.name == name:
                return m
        raise CrosslabError(f"no model {name!r}; choose one of {[m.name for m in self.models]}.")

    def query_scores(self, name: str, queries: str | Sequence[str], split: str = "test") -> np.ndarray:
        """``(n, N)`` text->image scores (higher = better) of ``queries`` against ``split``'s N images.

        One string is one query (:class:`~crosslab.errors.QueryError` if it has no usable
        word); a list is encoded in one batch. Fusions z-score each query over the N images.
        """
        bm = self.model(name)
        keys = {bm.text} if isinstance(bm.text, str) else set(bm.text)
        if isinstance(queries, str):
            text = {k: self.encoders[k].encode_query(queries)[None] for k in keys}
        else:
            text = {k: self.encoders[k].transform(list(queries)) for k in keys}
        imgs = _split(self.ds, split)[1]
        return score_matrix(bm, text, {k: v[imgs] for k, v in self.image.items()}, axis=1)


def _scores(model: Any, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    from .similarity import scores

    S = scores(model.embed_text(X), model.embed_image(Y), getattr(model, "metric", "cosine"))
    return np.asarray(S.cpu().numpy() if hasattr(S, "cpu") else S, dtype=np.float64)


def score_matrix(
    bm: BeyondModel, text: dict[str, np.ndarray], image: dict[str, np.ndarray], axis: int = 1
) -> np.ndarray:
    """``(C, N)`` scores (higher = better) of model ``bm`` for queries ``text[enc]`` and images ``image[kind]``.

    For a fusion ``axis`` says which way to z-score: 1 ranks images per query, 0 queries per image.
    """
    from .zeroshot import FusionModel

    if isinstance(bm.model, FusionModel):
        ta, tb = bm.text
        ia, ib = bm.image
        return bm.model.scores((text[ta], text[tb]), (image[ia], image[ib]), axis=axis)
    return _scores(bm.model, text[bm.text], image[bm.image])


def _metrics(bm: BeyondModel, text: dict, image: dict, c2i: np.ndarray) -> dict[str, float]:
    from .retrieval import evaluate
    from .zeroshot import FusionModel

    if isinstance(bm.model, FusionModel):
        return bm.model.evaluate((text[bm.text[0]], text[bm.text[1]]), (image[bm.image[0]], image[bm.image[1]]), c2i)
    return evaluate(score_matrix(bm, text, image), c2i)


def _split(ds: Any, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Caption rows, image rows and the local caption -> image map of one split."""
    from .recipes import split_rows

    return split_rows(ds, split)


def fit_beyond(
    ds: Any = None,
    *,
    models: Sequence[str] = BEYOND_MODELS,
    d: int = 256,
    progress: bool = True,
    device: Any = None,
    cache: bool = True,
    fusion_val: Any = "auto",
) -> BeyondSetup:
    """Fit the recipe's models on ``ds``'s train split (choices on val); see the module docstring.

    Text features: ``glove-mean`` and ``minilm``; image features and logits of
    EfficientNet-Lite0 from one pass; all cached. The MLP is trained by
    ``recipes._fit_trained`` and kept in its model cache (``cache=False`` retrains it).

    ``fusion_val`` says what the fusion weights are chosen on: a val-split query set
    (a :class:`~crosslab.data.people.QuerySet` with ``split == "val"``; text->image,
    best w), ``"captions"`` (the val captions; rSum, one-standard-error rule) or
    ``"auto"``: the committed val people-style set for the clip art, the val captions
    for any other dataset. Returns a :class:`BeyondSetup`.
    """
    from .baselines import RandomModel, RegularizedCCA
    from .image import ImageEncoder
    from .recipes import DEFAULT_ENCODER, RCCA_REGS, Features, SplitFeatures, _fit_trained
    from .retrieval import evaluate
    from .text_encoders import get_text_encoder
    from .zeroshot import ConSE, FusionModel, choose_conse, choose_w

    unknown = [m for m in models if m not in BEYOND_MODELS]
    if unknown:
        raise CrosslabError(f"unknown beyond models {unknown}; choose from {list(BEYOND_MODELS)}.")
    if ds is None:
        from .data import load_clipart

        ds = load_clipart()
    tr, va, te = (_split(ds, s) for s in ("train", "val", "test"))
    train_caps = [ds.captions[j] for j in tr[0]]
    if isinstance(fusion_val, str) and fusion_val == "auto":
        fusion_val = "captions"
        if getattr(ds, "name", None) == "clipart" and any(m.startswith("fusion(") for m in models):
            from .data.people import load_people_queries

            fusion_val = load_people_queries(ds, split="val")
    if isinstance(fusion_val, str):
        if fusion_val != "captions":
            raise CrosslabError(f"fusion_val must be 'auto', 'captions' or a val QuerySet, got {fusion_val!r}.")
    elif getattr(fusion_val, "split", None) != "val":
        raise CrosslabError(
            "fusion_val must be a query set on the val split (load_people_queries(split='val')); "
            "choosing on test queries would leak the test set into the model."
        )
    info: dict[str, float] = {}

    t0 = time.perf_counter()
    feats, logits = ImageEncoder(DEFAULT_ENCODER, device=device).extract(ds, return_logits=True, progress=progress)
    info["image_s"] = time.perf_counter() - t0
    image = {"features": feats, "logits": logits}
    encoders, text = {}, {}
    for key, enc_name in TEXT_ENCODERS.items():
        if not any(key in m for m in models):
            continue
        t0 = time.perf_counter()
        kw = {"device": device} if enc_name == "minilm" else {}
        encoders[key] = get_text_encoder(enc_name, **kw).fit(train_caps)
        text[key] = encoders[key].transform(ds.captions, cache=True, progress=progress)
        info[f"text_{key}_s"] = time.perf_counter() - t0

    def rows(split: tuple, key: str, img: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        caps, imgs, c2i = split
        return text[key][caps], image[img][imgs], c2i

    fitted: dict[str, BeyondModel] = {}

    def add(name: str, kind: str, make: Any, txt: Any, img: Any) -> None:
        t0 = time.perf_counter()
        model, choice = make()
        fitted[name] = BeyondModel(name, kind, model, txt, img, choice, round(time.perf_counter() - t0, 2))

    def rcca(key: str) -> tuple[Any, dict]:
        Xt, Yt, ct = rows(tr, key, "features")
        Xv, Yv, cv = rows(va, key, "features")
        base = RegularizedCCA(d=min(d, 128), reg=RCCA_REGS[0]).fit(Xt, Yt, ct)
        fits = {r: base.with_reg(r) for r in RCCA_REGS}
        val = {r: evaluate(m, cv, text=Xv, image=Yv)["rsum"] for r, m in fits.items()}
        best = max(RCCA_REGS, key=lambda r: (val[r], -r))  # smallest ridge wins ties
        return fits[best], {"reg": best, "val_rsum": val}

    def mlp(key: str) -> tuple[Any, dict]:
        # The default recipe's trainer, including its content-addressed model cache: the
        # same features and settings give the same model, loaded instead of retrained.
        f = Features(*(SplitFeatures(*rows(sp, key, "features")) for sp in (tr, va, te)), key, DEFAULT_ENCODER)
        model = _fit_trained("infonce", d, progress, device, cache)(f)
        hit = bool(getattr(getattr(model, "cache_info_", None), "hit", False))
        return model, {"best_epoch": model.history_.get("best_epoch"), "cached": hit}

    def conse(key: str) -> tuple[Any, dict]:
        # T and the softmax temperature chosen on val; both sides centred on the train
        # split's mean vectors (unpaired averages, no training: see ConSE.center).
        base = ConSE.from_encoder(encoders[key], T=1)
        Xt, Lt, _ = rows(tr, key, "logits")
        model, val = choose_conse(base, rows(va, key, "logits"), train=(Xt, Lt))
        return model, {"T": model.T, "temperature": model.temperature, "centred": True,
                       "val_rsum": {f"T={T} temperature={t:g}": v for (T, t), v in val.items()}}

    for name in models:
        if name == "random":
            add(name, "random", lambda: (RandomModel(d=d).fit(*rows(tr, "minilm" if "minilm" in text else "glove",
                                                                      "features")), {}),
                "minilm" if "minilm" in text else "glove", "features")
        elif name.startswith("cca+"):
            key = name[4:]
            add(name, "cca", lambda key=key: rcca(key), key, "features")
        elif name.startswith("mlp+"):
            key = name[4:]
            add(name, "trained", lambda key=key: mlp(key), key, "features")
        elif name.startswith("conse+"):
            key = name[6:]
            add(name, "zero-shot", lambda key=key: conse(key), key, "logits")

    for name in models:
        if not name.startswith("fusion("):
            continue
        an, bn = name[len("fusion("):-1].split(",")
        for part in (an, bn):
            if part not in fitted:
                raise CrosslabError(f"{name} needs the model {part!r}; include it in models=.")
        a, b = fitted[an], fitted[bn]

        def make(a: BeyondModel = a, b: BeyondModel = b, name: str = name) -> tuple[Any, dict]:
            vi = {k: v[va[1]] for k, v in image.items()}
            if isinstance(fusion_val, str):  # the val captions
                vt = {k: v[va[0]] for k, v in text.items()}
                target, how = va[2], {"directions": "both", "rule": "1se"}
            else:  # a val query set: text->image only, the best w
                vt = {k: enc.transform(list(fusion_val.texts), cache=True, progress=False)
                      for k, enc in encoders.items()}
                target, how = np.asarray(fusion_val.targets, dtype=np.int64), {"directions": "t2i", "rule": "best"}
            Sa, Sb = score_matrix(a, vt, vi), score_matrix(b, vt, vi)
            w, details = choose_w(Sa, Sb, target, **how)
            on = "val captions" if isinstance(fusion_val, str) else f"{getattr(fusion_val, 'name', 'val queries')} ({len(target)} queries)"
            return FusionModel(a.model, b.model, w, name=name), {"w": w, "chosen_on": on, **details}

        add(name, "fusion", make, (a.text, b.text), (a.image, b.image))
    return BeyondSetup(ds, [fitted[n] for n in models], encoders, text, image, info)


def _t2i_row(name: str, kind: str, t2i: np.ndarray, queries: str) -> dict[str, Any]:
    from .retrieval import ROW_KEYS, rank_metrics

    m = rank_metrics(t2i, (1, 5, 10), "t2i_")
    row: dict[str, Any] = {k: None for k in ROW_KEYS}
    row |= {"name": name, "kind": kind, "queries": queries, "n_queries": len(t2i)}
    for k in ("t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr"):
        row[k] = round(float(m[k]), 2)
    return row


def run_beyond(
    ds: Any = None,
    *,
    queries: Sequence[str] = ("captions", "people"),
    progress: bool = True,
    device: Any = None,
    people: Any = None,
    setup: BeyondSetup | None = None,
    cache: bool = True,
) -> list[dict[str, Any]]:
    """Fit the recipe (:func:`fit_beyond`) and score the test split once; rows for every model.

    Rows are :func:`crosslab.retrieval.metrics_row` dicts (keys ``ROW_KEYS``; ``kind`` one of
    random / cca / trained / zero-shot / fusion) plus ``queries``, ``n_queries``, ``choice``
    (what val chose) and ``seconds`` (fit time):

    * ``queries="captions"``: the test images' own captions, both directions.
    * ``queries="people"``: the people-style query set (``crosslab.data.people``, or
      ``people=`` a QuerySet with ``texts``, ``kinds``, ``targets``, ``subset(kind)``), three
      groups of rows: ``people`` (all), ``people:short`` and ``people:description``.
      Text->image only, each query ranking the test split's images (targets index
      ``np.flatnonzero(ds.split == "test")``); the i2t keys and ``rsum`` are None, as a
      query set covers only some images and has no "caption of an image" direction.
    """
    from .retrieval import metrics_row, ranks

    bad = [q for q in queries if q not in ("captions", "people")]
    if bad or not queries:
        raise CrosslabError(f"queries must be 'captions' and/or 'people', got {list(queries)}.")
    if "people" in queries and people is None:
        try:
            from .data.people import load_people_queries
        except ImportError:
            raise CrosslabError(
                "the people-style query set (crosslab.data.people) is not available in this checkout."
            ) from None
        if ds is None and setup is None:
            from .data import load_clipart

            ds = load_clipart()
        people = load_people_queries(ds if setup is None else setup.ds)
    if setup is None:
        setup = fit_beyond(ds, progress=progress, device=device, cache=cache)
    ds = setup.ds
    caps, imgs, c2i = _split(ds, "test")
    test_image = {k: v[imgs] for k, v in setup.image.items()}
    out: list[dict[str, Any]] = []

    def finish(row: dict, bm: BeyondModel, q: str) -> dict:
        row["queries"] = q
        row["choice"] = ", ".join(f"{k}={v}" for k, v in bm.choice.items() if k in ("reg", "T", "temperature", "w"))
        row["seconds"] = bm.seconds
        return row

    if "captions" in queries:
        test_text = {k: v[caps] for k, v in setup.text.items()}
        for bm in setup.models:
            row = metrics_row(bm.name, bm.kind, _metrics(bm, test_text, test_image, c2i))
            out.append(finish(row | {"n_queries": len(caps)}, bm, "captions"))
    if "people" in queries:
        targets = np.asarray(people.targets, dtype=np.int64)
        if len(targets) == 0 or targets.min() < 0 or targets.max() >= len(imgs):
            raise CrosslabError(f"people query targets must index the {len(imgs)} test images of {ds.name}.")
        qtext = {k: enc.transform(list(people.texts), cache=True, progress=False)
                 for k, enc in setup.encoders.items()}
        per_model = {}
        for bm in setup.models:
            S = score_matrix(bm, qtext, test_image, axis=1)
            per_model[bm.name] = ranks(S, targets)[0]
        kinds = np.asarray(people.kinds)
        for label, sel in [("people", np.ones(len(targets), bool))] + [
            (f"people:{k}", kinds == k) for k in ("short", "description") if np.any(kinds == k)
        ]:
            for bm in setup.models:
                out.append(finish(_t2i_row(bm.name, bm.kind, per_model[bm.name][sel], label), bm, label))
    return out
