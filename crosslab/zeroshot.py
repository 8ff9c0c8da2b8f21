"""Zero-shot retrieval with ConSE, and score fusion of two models.

**ConSE** (Norouzi et al., "Zero-Shot Learning by Convex Combination of Semantic
Embeddings", ICLR 2014) needs no paired training data at all. An ImageNet
classifier gives each image a softmax ``p(y | x)`` over its K = 1000 classes; the
image's text-space vector is the probability-weighted mean of the text embeddings
``s(y)`` of its T most probable class names::

    f(x) = (1 / Z) * sum_{t=1..T} p(y_t | x) s(y_t),    Z = sum_{t=1..T} p(y_t | x)

so an image the CNN calls "tabby cat" (0.6) / "lynx" (0.2) lands between the text
vectors of those names, and a caption is matched to it by cosine in the text
encoder's own space. The image side costs nothing beyond feature extraction: the
logits come from the same forward pass as the pooled features
(``ImageEncoder.extract(ds, return_logits=True)``).

**Score fusion** combines two models that rank the same gallery: each model's
scores are z-scored per query over the gallery, then mixed,
``(1 - w) z(S_a) + w z(S_b)``. Z-scoring puts a cosine near 0.3 (ConSE) and one near
0.9 (CCA) on one scale; per query, because what matters is how far an item stands
out from the rest of the gallery *for that query*. Text->image z-scores each row
(a caption over the images), image->text each column (an image over the captions).

Caveat for choosing ``w`` on val: the val captions are written like the training
captions (titles and keywords), which is where the trained side is strongest, so a
val-chosen ``w`` under-weights the zero-shot side for queries people actually type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ModelError, ShapeError

__all__ = [
    "imagenet_class_names", "ConSE", "choose_conse", "zscore", "fused_scores", "choose_w",
    "T_GRID", "TEMPERATURE_GRID", "W_GRID",
]

#: Values of T tried on val by :func:`choose_conse`.
T_GRID = (1, 2, 3, 5, 10, 20, 50, 100)
#: Softmax temperatures tried on val by :func:`choose_conse` (1 = the classifier's own softmax).
TEMPERATURE_GRID = (1.0, 2.0, 3.0, 5.0, 10.0)
#: Fusion weights tried on val by :func:`choose_w` (0 = model a only, 1 = model b only).
W_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in the order of the image encoders' logits.

    torchvision's category list (shipped with it, no download): the standard
    ILSVRC-2012 order (0 'tench' ... 999 'toilet tissue'), which is also the order of
    EfficientNet-Lite0's head (its port keeps the TF ImageNet label order; checked on
    real photos: coffee -> 'espresso', chelsea -> cats).
    """
    from .image import imagenet_categories

    return list(imagenet_categories())


def _unit_rows(E: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(E, axis=1, keepdims=True)
    return np.divide(E, n, out=np.zeros_like(E), where=n > 0)


def _as2d(X: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ShapeError(f"{name} must be 2-D, got shape {X.shape}.")
    if not np.isfinite(X).all():
        raise ShapeError(f"{name} contains NaN or infinite values.")
    return X


class ConSE:
    """Convex combination of class-name embeddings: ImageNet logits -> text space. No training.

    Args:
        class_embeddings: ``(K, d)`` text embedding of each class name (row k = logit k);
            rows are unit-normalised (an all-zero row, a name with no known word, stays zero).
        T: how many of the most probable classes to combine.
        metric: the metric used to compare ``embed_text`` and ``embed_image`` outputs.

    ``embed_image(logits (N, K)) -> (N, d)``: softmax, top T classes (ties: lower class
    index first), their unit embeddings weighted by probability / (sum of the T
    probabilities). ``embed_text(X (C, d)) -> X``: captions stay in the text encoder's space.
    """

    def __init__(
        self, class_embeddings: Any, T: int = 10, metric: str = "cosine", temperature: float = 1.0
    ) -> None:
        E = _as2d(class_embeddings, "class_embeddings")
        if len(E) < 1:
            raise ShapeError("class_embeddings needs at least one class.")
        if isinstance(T, bool) or not isinstance(T, int | np.integer) or not 1 <= T <= len(E):
            raise ModelError(f"T must be an integer in 1..{len(E)} (the number of classes), got {T!r}.")
        if not (isinstance(temperature, int | float) and np.isfinite(temperature) and temperature > 0):
            raise ModelError(f"temperature must be a number > 0, got {temperature!r}.")
        self.class_embeddings = _unit_rows(E)
        self.T = int(T)
        self.metric = metric
        self.temperature = float(temperature)
        # Set by center(): subtracted from each side's vectors (None: no centring).
        self.text_mean_: np.ndarray | None = None
        self.image_mean_: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.class_embeddings.shape[1])

    def __repr__(self) -> str:
        extra = f", temperature={self.temperature:g}" if self.temperature != 1.0 else ""
        extra += ", centred" if self.text_mean_ is not None else ""
        return f"ConSE(K={len(self.class_embeddings)}, d={self.dim}, T={self.T}{extra})"

    @classmethod
    def from_encoder(
        cls,
        text_encoder: Any,
        T: int = 10,
        class_names: Sequence[str | Sequence[str]] | None = None,
        metric: str = "cosine",
    ) -> ConSE:
        """Embed the class names with ``text_encoder`` (fitted, if it needs fitting).

        ``class_names``: one entry per logit; a string, or a list of synonyms whose
        unit embeddings are averaged (default :func:`imagenet_class_names`, one name each).
        """
        names = list(class_names) if class_names is not None else imagenet_class_names()
        flat, owner = [], []
        for k, entry in enumerate(names):
            syns = [entry] if isinstance(entry, str) else list(entry)
            if not syns:
                raise ModelError(f"class {k} has an empty synonym list.")
            flat += syns
            owner += [k] * len(syns)
        from .text_encoders import TextEncoder

        # The registry's encoders cache the class-name vectors (1000 names: ~10 s with MiniLM).
        kw = {"cache": True} if isinstance(text_encoder, TextEncoder) else {}
        V = _unit_rows(np.asarray(text_encoder.transform(flat, **kw), dtype=np.float64))
        E = np.zeros((len(names), V.shape[1]))
        np.add.at(E, np.asarray(owner), V)
        model = cls(E, T=T, metric=metric)
        model.class_names_ = names
        return model

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Settings (``config``, JSON) and arrays: class embeddings, class names, and the means when centred."""
        import json

        config = {"T": self.T, "metric": self.metric, "temperature": self.temperature}
        out = {"config": np.array(json.dumps(config)), "a/class_embeddings": self.class_embeddings}
        if hasattr(self, "class_names_"):
            out["class_names"] = np.array(json.dumps(list(self.class_names_)))
        if self.text_mean_ is not None:
            out |= {"a/text_mean_": self.text_mean_, "a/image_mean_": self.image_mean_}
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ConSE:
        """Rebuild a ConSE from :meth:`to_arrays`."""
        import json

        E = np.asarray(arrays["a/class_embeddings"], dtype=np.float64)
        model = cls(E, **json.loads(str(arrays["config"])))
        model.class_embeddings = E  # already unit rows: keep them bit for bit
        if "class_names" in arrays:
            model.class_names_ = json.loads(str(arrays["class_names"]))
        if "a/text_mean_" in arrays:
            model.text_mean_ = np.asarray(arrays["a/text_mean_"])
            model.image_mean_ = np.asarray(arrays["a/image_mean_"])
        return model

    def with_T(self, T: int, temperature: float | None = None) -> ConSE:
        """The same class embeddings with another ``T`` (and temperature); not centred."""
        other = ConSE.__new__(ConSE)
        other.__dict__ |= self.__dict__
        ConSE.__init__(other, self.class_embeddings, T=T, metric=self.metric,
                       temperature=self.temperature if temperature is None else temperature)
        if hasattr(self, "class_names_"):
            other.class_names_ = self.class_names_
        return other

    def center(self, text: Any, logits: Any) -> ConSE:
        """Subtract each side's mean vector, from *unpaired* samples: ``text`` ``(C, d)``
        caption vectors and ``logits`` ``(N, K)`` of some images (e.g. the train split's).

        Every ConSE image vector is a mixture of the same 1000 class vectors, so they all
        share a large common component (and the captions theirs); cosine then mostly
        measures that component. Removing the means makes cosine compare what is specific
        to each item. Still no training: two averages, no caption-image pairs. Returns self.
        """
        self.text_mean_ = None
        self.image_mean_ = None
        X = _as2d(text, "text")
        self.embed_text(X)  # width check
        self.text_mean_ = X.mean(0)
        self.image_mean_ = self.embed_image(logits).astype(np.float64).mean(0)
        return self

    def top_classes(self, logits: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(N, T)`` class indices (most probable first) and their softmax probabilities."""
        L = _as2d(logits, "logits")
        if L.shape[1] != len(self.class_embeddings):
            raise ShapeError(
                f"logits have {L.shape[1]} classes but ConSE has {len(self.class_embeddings)} class embeddings."
            )
        L = L / self.temperature  # > 1 flattens the softmax: more weight to runner-up classes
        P = np.exp(L - L.max(1, keepdims=True))
        P /= P.sum(1, keepdims=True)
        # A stable sort of -P: among equal probabilities the lower class index comes first.
        idx = np.argsort(-P, axis=1, kind="stable")[:, : self.T]
        return idx, np.take_along_axis(P, idx, 1)

    def embed_image(self, logits: Any) -> np.ndarray:
        """``(N, K)`` ImageNet logits -> ``(N, d)`` float32 convex combinations of class embeddings."""
        idx, p = self.top_classes(logits)
        w = p / p.sum(1, keepdims=True)  # renormalised over the top T (Norouzi et al.'s Z)
        Z = np.einsum("nt,ntd->nd", w, self.class_embeddings[idx])
        if self.image_mean_ is not None:
            Z = Z - self.image_mean_
        return Z.astype(np.float32)

    def embed_text(self, X: Any) -> Any:
        """``(C, d)`` text-encoder vectors, unchanged (they already live in ConSE's space),
        minus the text mean when the model is centred (NumPy or torch in, same type out)."""
        if getattr(X, "shape", (0, self.dim))[-1] != self.dim:
            raise ShapeError(f"text vectors have {X.shape[-1]} features but the class embeddings have {self.dim}.")
        if self.text_mean_ is None:
            return X
        if hasattr(X, "detach"):  # torch tensor
            import torch

            return X - torch.as_tensor(self.text_mean_, dtype=X.dtype, device=X.device)
        return (np.asarray(X, dtype=np.float64) - self.text_mean_).astype(np.float32)


def choose_conse(
    model: ConSE,
    val: tuple[Any, Any, Any],
    train: tuple[Any, Any] | None = None,
    Ts: Sequence[int] = T_GRID,
    temperatures: Sequence[float] = TEMPERATURE_GRID,
) -> tuple[ConSE, dict[tuple[int, float], float]]:
    """Pick T and the softmax temperature by val rSum; centre on ``train`` first if given.

    ``val`` = (caption vectors ``(C, d)``, logits ``(N, K)``, caption_to_image ``(C,)``);
    ``train`` = (caption vectors, logits) of other, unpaired items for :meth:`ConSE.center`.
    Returns ``(best model, {(T, temperature): val rSum})``; the first best in grid order wins ties.
    """
    from .evaluation import evaluate

    text, logits, c2i = val
    scores: dict[tuple[int, float], float] = {}
    best, best_key = None, None
    for T in Ts:
        if T > len(model.class_embeddings):
            continue
        for tau in temperatures:
            m = model.with_T(T, tau)
            if train is not None:
                m.center(*train)
            key = (int(T), float(tau))
            scores[key] = evaluate(m, c2i, text=text, image=logits)["rsum"]
            if best is None or scores[key] > scores[best_key]:
                best, best_key = m, key
    if best is None:
        raise ModelError(f"no T in {list(Ts)} fits {len(model.class_embeddings)} classes.")
    return best, scores


# ----------------------------------------------------------------------------- fusion
def zscore(S: Any, axis: int) -> np.ndarray:
    """``(S - mean) / std`` along ``axis`` (1: per row, 0: per column); constant lines become 0."""
    S = _as2d(S, "scores")
    mu = S.mean(axis=axis, keepdims=True)
    sd = S.std(axis=axis, keepdims=True)
    return np.divide(S - mu, sd, out=np.zeros_like(S), where=sd > 0)


def fused_scores(Sa: Any, Sb: Any, w: float, axis: int) -> np.ndarray:
    """``(1 - w) z(Sa) + w z(Sb)`` with z over ``axis`` of the ``(C, N)`` score matrices.

    ``axis=1`` (each caption's row over the images) for text->image ranking,
    ``axis=0`` (each image's column over the captions) for image->text.
    """
    Sa, Sb = _as2d(Sa, "Sa"), _as2d(Sb, "Sb")
    if Sa.shape != Sb.shape:
        raise ShapeError(f"the two score matrices differ in shape: {Sa.shape} vs {Sb.shape}.")
    if not (np.isfinite(w) and 0 <= w <= 1):
        raise ShapeError(f"the fusion weight w must be in [0, 1], got {w!r}.")
    if axis not in (0, 1):
        raise ShapeError(f"axis must be 1 (text->image) or 0 (image->text), got {axis!r}.")
    return (1 - w) * zscore(Sa, axis) + w * zscore(Sb, axis)


def choose_w(
    Sa: Any,
    Sb: Any,
    caption_to_image: Any,
    grid: Sequence[float] = W_GRID,
    *,
    rule: str = "1se",
    n_boot: int = 200,
    seed: int = 0,
    directions: str = "both",
) -> tuple[float, dict[str, Any]]:
    """Pick the fusion weight on val: ``(w, details)``.

    ``Sa``, ``Sb``: ``(C, N)`` val scores of the two models (queries x images);
    ``caption_to_image``: each query's target image. ``directions="both"`` scores
    rSum (text->image and image->text R@1/5/10), right for captions of every image;
    ``"t2i"`` scores text->image R@1 + R@5 + R@10 only, right for a query set such as
    the val people-style queries (``crosslab.data.load_people_queries(split="val")``),
    which covers only some images.

    ``rule="best"``: the ``w`` with the highest val rSum (smallest w wins ties).
    ``rule="1se"`` (default): the one-standard-error rule (Breiman et al. 1984; Hastie et
    al., *ESL* 7.10) -- the *largest* ``w`` whose val rSum is within one bootstrap
    standard error of the best ``w``'s (paired: val images resampled with replacement,
    ``n_boot`` times, seeded). When val cannot tell two weights apart, it leans to the
    zero-shot side (model b).

    Why lean that way: val captions resemble the training captions (titles and
    keywords), which is where the trained side (model a) is strongest, so val
    systematically under-weights the zero-shot side for queries people actually type;
    within val's noise the zero-shot-heavier choice is the safer one. The rule was
    fixed before any w > 0 was scored on the people-style queries (docs/experiments.md).

    ``details``: ``val_rsum`` ({w: rSum}, or the t2i sum), ``best_w`` (the argmax),
    ``se`` ({w: bootstrap standard error of rSum(w) - rSum(best_w)}), ``rule``, ``directions``.
    """
    from .evaluation import ranks

    if rule not in ("best", "1se"):
        raise ShapeError(f"rule must be 'best' or '1se', got {rule!r}.")
    if directions not in ("both", "t2i"):
        raise ShapeError(f"directions must be 'both' or 't2i', got {directions!r}.")
    c2i = np.asarray(getattr(caption_to_image, "caption_to_image", caption_to_image), dtype=np.int64)
    grid = [float(w) for w in grid]
    ks = (1, 5, 10)
    t2i, i2t = {}, {}
    for w in grid:
        t2i[w] = ranks(fused_scores(Sa, Sb, w, axis=1), c2i)[0]
        if directions == "both":
            i2t[w] = ranks(fused_scores(Sa, Sb, w, axis=0), c2i)[1]
    imgs = np.unique(c2i)  # ranks() reports i2t for these images, in this order

    def rsum(count_img: np.ndarray, w: float) -> np.ndarray:
        # count_img (B, N): how often each image is drawn; its captions come along with it.
        wc = count_img[:, c2i]
        wi = count_img[:, imgs]
        t = sum((wc * (t2i[w] <= k)).sum(1) / wc.sum(1) for k in ks)
        if directions == "t2i":
            return 100.0 * t
        i = sum((wi * (i2t[w] <= k)).sum(1) / wi.sum(1) for k in ks)
        return 100.0 * (t + i)

    N = max(int(c2i.max()) + 1, np.shape(Sa)[1])
    ones = np.zeros((1, N))
    ones[0, imgs] = 1.0
    val = {w: float(rsum(ones, w)[0]) for w in grid}
    best = max(grid, key=lambda w: (val[w], -w))
    rng = np.random.default_rng(seed)
    draws = rng.choice(imgs, size=(n_boot, len(imgs)), replace=True)
    counts = np.zeros((n_boot, N))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    ref = rsum(counts, best)
    se = {w: float(np.std(rsum(counts, w) - ref, ddof=1)) if n_boot > 1 else 0.0 for w in grid}
    chosen = best
    if rule == "1se":
        chosen = max(w for w in grid if val[w] >= val[best] - se[w])
    return chosen, {"val_rsum": val, "best_w": best, "se": se, "rule": rule, "directions": directions}
