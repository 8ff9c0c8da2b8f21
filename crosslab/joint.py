"""The joint space: two projections, a table of ranking losses, and a trainer.

Text features ``x`` (caption, width ``n``) and image features ``y`` (width ``m``)
are mapped into one ``d``-dimensional space, ``f(x) = W_x x + b_x`` and
``g(y) = W_y y + b_y`` (the seed article, section 3.2), optionally followed by L2
normalisation so that the dot product is the cosine. Inputs are standardised
with the training set's mean and standard deviation first (stored in the model),
which makes one learning rate work for GloVe, Word2Vec and CNN features alike.
An optional one-hidden-layer MLP per side (``head="mlp"``) answers "does
non-linearity help?"; linear is the default.

The losses live in :mod:`crosslab.losses`: small functions of a batch's score matrix
and a table, :data:`~crosslab.losses.LOSSES`, that the trainer looks each name up in.

Training is a scikit-learn style estimator: a frozen :class:`TrainSettings` holds
every setting; ``JointTrainer(settings, **overrides).fit(X, Y, caption_to_image)``
trains and leaves the model in ``.model_`` and the per-epoch record in ``.history_``.
Batches never hold two captions of the same image (they would be false negatives).
Models persist as plain arrays (:meth:`JointModel.to_arrays` / ``from_arrays``).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import numbers
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .device import get_device
from .errors import ModelError, ShapeError
from .losses import LOSSES

Array = np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------- model
@dataclass
class JointConfig:
    """Everything needed to rebuild a :class:`JointModel` (stored as JSON by :meth:`JointModel.to_arrays`)."""

    text_dim: int
    image_dim: int
    d: int = 256
    head: str = "linear"  # "linear" | "mlp"
    hidden: int = 1024
    dropout: float = 0.0
    normalize: bool = True
    temperature: float = 0.07
    learn_temperature: bool = True
    loss: str = "infonce"


class _Tower(nn.Module):
    """Standardise, then project: ``W (x - mu) / sigma + b`` (or a one-hidden-layer MLP)."""

    def __init__(self, n_in: int, cfg: JointConfig) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("scale", torch.ones(n_in))
        if cfg.head == "linear":
            self.proj = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(n_in, cfg.d))
        else:
            self.proj = nn.Sequential(
                nn.Dropout(cfg.dropout), nn.Linear(n_in, cfg.hidden), nn.GELU(),
                nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, cfg.d),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj((x - self.mean) / self.scale)


class JointModel(nn.Module):
    """Two towers mapping ``(C, n)`` text and ``(N, m)`` image features into ``(., d)``.

    ``metric`` is the score the model is trained and evaluated with: ``"cosine"``
    when outputs are L2-normalised (the default), else ``"dot"``.
    """

    def __init__(self, cfg: JointConfig) -> None:
        super().__init__()
        if cfg.head not in ("linear", "mlp"):
            raise ModelError(f"head must be 'linear' or 'mlp', got {cfg.head!r}.")
        if cfg.loss not in LOSSES:
            raise ModelError(f"loss must be one of {tuple(LOSSES)}, got {cfg.loss!r}.")
        self.cfg = cfg
        self.text = _Tower(cfg.text_dim, cfg)
        self.image = _Tower(cfg.image_dim, cfg)
        # log(1/tau) as in CLIP, so the temperature stays positive while learned.
        self.logit_scale = nn.Parameter(
            torch.tensor(math.log(1 / cfg.temperature)), requires_grad=cfg.learn_temperature
        )
        self.logit_bias = nn.Parameter(torch.tensor(0.0), requires_grad=cfg.loss == "bce")

    @property
    def metric(self) -> str:
        return "cosine" if self.cfg.normalize else "dot"

    @property
    def temperature(self) -> float:
        return float(1 / self.logit_scale.detach().exp())

    @property
    def text_is_affine(self) -> bool:
        """Linear towers are affine before normalisation (see :meth:`affine_text`); MLPs are not."""
        return self.cfg.head == "linear"

    def affine_text(self, X: Array) -> np.ndarray:
        """The text tower's output before L2 normalisation: affine for ``head="linear"``, and its
        ``metric`` scores equal the normalised ones (the cosine ignores length)."""
        if not self.text_is_affine:
            raise ModelError("an MLP text tower is not affine; explain its scores by leaving words out.")
        dev = next(self.parameters()).device
        with torch.no_grad():
            return self.eval().text(torch.as_tensor(np.asarray(X, np.float32)).to(dev)).cpu().numpy()

    def _out(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=1) if self.cfg.normalize else z

    def text_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._out(self.text(x))

    def image_forward(self, y: torch.Tensor) -> torch.Tensor:
        return self._out(self.image(y))

    def _embed(self, X: Array, tower: str, width: int, batch_size: int) -> Array:
        if not isinstance(X, np.ndarray | torch.Tensor) or X.ndim != 2:
            raise ModelError(f"{tower} features must be a 2-D array (rows x features).")
        if X.shape[1] != width:
            raise ModelError(
                f"this model expects {tower} features of width {width}, got {X.shape[1]}; "
                "use the same text / image encoders the model was trained with."
            )
        dev = next(self.parameters()).device
        x = torch.as_tensor(X).to(dev, torch.float32)
        fwd = self.text_forward if tower == "text" else self.image_forward
        was_training = self.training
        self.eval()
        with torch.no_grad():
            out = torch.cat([fwd(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) \
                else torch.zeros((0, self.cfg.d), device=dev)
        self.train(was_training)
        if isinstance(X, np.ndarray):
            return out.cpu().numpy()
        return out.to(X.device)

    def embed_text(self, X: Array, batch_size: int = 8192) -> Array:
        """``(C, n)`` caption features -> ``(C, d)`` joint-space vectors (NumPy in -> NumPy out)."""
        return self._embed(X, "text", self.cfg.text_dim, batch_size)

    def embed_image(self, Y: Array, batch_size: int = 8192) -> Array:
        """``(N, m)`` image features -> ``(N, d)`` joint-space vectors (NumPy in -> NumPy out)."""
        return self._embed(Y, "image", self.cfg.image_dim, batch_size)

    # ---- persistence (plain arrays, no pickle) ----------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The model as plain arrays (``config`` as a JSON string, ``w/<name>`` per weight): no pickle."""
        arrays = {"config": np.array(json.dumps(asdict(self.cfg)))}
        arrays |= {f"w/{k}": v.detach().cpu().numpy() for k, v in self.state_dict().items()}
        return arrays

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], *, device: str | torch.device | None = None
    ) -> JointModel:
        """Rebuild a model from :meth:`to_arrays` output (e.g. a feature-cache entry)."""
        try:
            cfg = JointConfig(**json.loads(str(arrays["config"])))
            model = cls(cfg)
            model.load_state_dict({k[2:]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                                   if k.startswith("w/")})
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ModelError(f"these arrays do not hold a crosslab JointModel ({first}).") from None
        return model.to(get_device(device))


# ----------------------------------------------------------------------------- batching
def unique_image_batches(
    caption_to_image: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffle all captions into batches in which every image appears at most once.

    Captions are visited in random order; one whose image is already in the current
    batch is deferred to the front of the next batch. Batches of fewer than 2
    captions (only possible at the very end) are dropped: they hold no negatives.
    """
    queue = deque(int(c) for c in rng.permutation(len(caption_to_image)))
    batches: list[np.ndarray] = []
    while queue:
        batch, seen, deferred = [], set(), []
        while queue and len(batch) < batch_size:
            c = queue.popleft()
            img = int(caption_to_image[c])
            if img in seen:
                deferred.append(c)
            else:
                batch.append(c)
                seen.add(img)
        queue.extendleft(reversed(deferred))
        if len(batch) >= 2:
            batches.append(np.asarray(batch, dtype=np.int64))
    return batches


# ----------------------------------------------------------------------------- training
def _init_from_cca(model: JointModel, X: torch.Tensor, Y: torch.Tensor, c2i: np.ndarray, reg: float) -> None:
    """Set both linear towers to the regularised-CCA projections of the standardised features."""
    from .baselines import RegularizedCCA

    Xs = ((X - model.text.mean) / model.text.scale).numpy()
    Ys = ((Y - model.image.mean) / model.image.scale).numpy()
    cca = RegularizedCCA(d=model.cfg.d, reg=reg).fit(Xs, Ys, c2i)
    k = cca.A_.shape[1]
    with torch.no_grad():
        for lin, P, mu in ((model.text.proj[1], cca.A_, cca.x_mean_), (model.image.proj[1], cca.B_, cca.y_mean_)):
            lin.weight.mul_(0.1)
            lin.bias.mul_(0.1)
            lin.weight[:k] = torch.from_numpy(P.T.astype(np.float32))
            lin.bias[:k] = torch.from_numpy((-mu @ P).astype(np.float32))


def _as_float_tensor(X: Array, name: str) -> torch.Tensor:
    if not isinstance(X, np.ndarray | torch.Tensor) or X.ndim != 2:
        raise ShapeError(f"{name} must be a 2-D array (rows x features).")
    t = torch.as_tensor(X).detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ShapeError(f"{name} contains NaN or infinite values; re-compute the features.")
    return t


def _check_pairs(X: torch.Tensor, Y: torch.Tensor, c2i: Any, what: str) -> np.ndarray:
    c2i = np.asarray(getattr(c2i, "caption_to_image", c2i), dtype=np.int64)
    if len(c2i) != len(X):
        raise ShapeError(f"{what}: {len(X)} caption feature rows but {len(c2i)} caption->image links.")
    if len(c2i) and (c2i.min() < 0 or c2i.max() >= len(Y)):
        raise ShapeError(f"{what}: caption_to_image points outside the {len(Y)} image feature rows.")
    return c2i


# ----------------------------------------------------------------------------- the trainer
# numeric setting -> (whole number?, test, rule in words)
_LIMITS: dict[str, tuple[bool, Callable[[Any], bool], str]] = {
    "d": (True, lambda v: v >= 1, ">= 1"), "hidden": (True, lambda v: v >= 1, ">= 1"),
    "n_negatives": (True, lambda v: v >= 1, ">= 1"), "epochs": (True, lambda v: v >= 0, ">= 0"),
    "batch_size": (True, lambda v: v >= 2, ">= 2 (a batch needs negatives)"),
    "patience": (True, lambda v: v >= 1, ">= 1 or None"), "seed": (True, lambda v: v >= 0, ">= 0"),
    "margin": (False, lambda v: v >= 0, ">= 0"), "temperature": (False, lambda v: v > 0, "> 0"),
    "dropout": (False, lambda v: 0 <= v < 1, "in [0, 1)"), "lr": (False, lambda v: v > 0, "> 0"),
    "weight_decay": (False, lambda v: v >= 0, ">= 0"), "init_reg": (False, lambda v: v >= 0, ">= 0"),
    "adversary": (False, lambda v: v >= 0, ">= 0"), "adversary_hidden": (True, lambda v: v >= 1, ">= 1"),
    "feature_eps": (False, lambda v: v >= 0, ">= 0"),
}


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of :class:`JointTrainer`, checked when built; immutable (see :meth:`replace`)."""

    d: int = 256  # joint-space width
    loss: str = "infonce"  # a name in LOSSES
    margin: float = 0.2  # hinge / max_violation margin
    temperature: float = 0.07  # initial InfoNCE / BCE temperature ...
    learn_temperature: bool = True  # ... learned when True
    head: str = "linear"  # "linear" | "mlp" (one hidden layer of `hidden` units per side)
    hidden: int = 1024
    dropout: float = 0.0
    normalize: bool = True  # L2-normalise the outputs: cosine scores
    n_negatives: int = 15  # sampled negatives per caption (bce)
    lr: float = 1e-3  # AdamW
    weight_decay: float = 1e-4  # on weight matrices only
    batch_size: int = 128
    epochs: int = 30
    patience: int | None = 5  # with val data: stop after this many epochs without a better val rSum
    seed: int = 0  # fixes the initial weights, the batches and the sampled negatives
    # "random" (PyTorch's default) or "cca": start the linear projections at the regularised-CCA
    # solution (ridge `init_reg`, see baselines.RegularizedCCA) of the standardised training
    # features; output dimensions beyond its min(n, m) start random, scaled by 0.1.
    init: str = "random"
    init_reg: float = 0.3
    # > 0: ACMR-style modality-adversarial training (crosslab.modality): a discriminator of `adversary_hidden`
    # units tells caption vectors from picture vectors, the towers fool it through gradient reversal, and
    # its loss joins the ranking loss with this weight.
    adversary: float = 0.0
    adversary_hidden: int = 128
    # > 0: adversarial training on the image features (Goodfellow et al.'s FGSM, Madry et al.'s recipe in
    # one step): every batch's picture features take a step of this size, in units of each feature's
    # training standard deviation, up the sign of the loss's gradient, and the towers learn on the moved ones.
    feature_eps: float = 0.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ModelError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}.")
        if self.head not in ("linear", "mlp"):
            raise ModelError(f"head must be 'linear' or 'mlp', got {self.head!r}.")
        if self.init not in ("random", "cca"):
            raise ModelError(f"init must be 'random' or 'cca', got {self.init!r}.")
        if self.init == "cca" and self.head != "linear":
            raise ModelError("init='cca' needs head='linear' (an MLP has no CCA counterpart).")
        for name in ("learn_temperature", "normalize"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ShapeError(f"{name} must be True or False, got {getattr(self, name)!r}.")
            object.__setattr__(self, name, bool(getattr(self, name)))
        for name, (whole, ok, rule) in _LIMITS.items():
            v = getattr(self, name)
            if name == "patience" and v is None:
                continue
            if not isinstance(v, numbers.Integral if whole else numbers.Real) or isinstance(v, bool):
                raise ShapeError(f"{name} must be a {'whole' if whole else 'real'} number, got {v!r}.")
            if not (math.isfinite(v) and ok(v)):
                raise ShapeError(f"{name} must be {rule}, got {v!r}.")
            if whole:
                object.__setattr__(self, name, int(v))

    def replace(self, **changes: Any) -> TrainSettings:
        """A copy with ``changes`` applied (and checked); an unknown name raises ModelError."""
        valid = [f.name for f in dataclasses.fields(self)]
        if unknown := sorted(set(changes) - set(valid)):
            raise ModelError(
                f"unknown training setting(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}."
            )
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """The settings as a plain ``{name: value}`` dict."""
        return dataclasses.asdict(self)


def _new_model(s: TrainSettings, X: torch.Tensor, Y: torch.Tensor, c2i: np.ndarray) -> JointModel:
    cfg = JointConfig(
        text_dim=X.shape[1], image_dim=Y.shape[1], d=s.d, head=s.head, hidden=s.hidden, dropout=s.dropout,
        normalize=s.normalize, temperature=s.temperature, learn_temperature=s.learn_temperature, loss=s.loss,
    )
    model = JointModel(cfg)
    # Standardise with the training statistics (images: over images, not captions).
    for tower, data in ((model.text, X), (model.image, Y)):
        tower.mean.copy_(data.mean(0))
        tower.scale.copy_(data.std(0).clamp(min=1e-6))
    if s.loss == "bce":
        model.logit_bias.data.fill_(-math.log(s.n_negatives))
    if s.init == "cca":
        _init_from_cca(model, X, Y, c2i, s.init_reg)
    return model


def _modality_loss(disc: nn.Module, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss at telling ``v`` (1) from ``t`` (0), behind a gradient-reversal layer: the
    discriminator descends it, the towers ascend it."""
    from .modality import grad_reverse

    z = grad_reverse(torch.cat([t, v]))
    y = torch.cat([torch.zeros(len(t), device=z.device), torch.ones(len(v), device=z.device)])
    return F.binary_cross_entropy_with_logits(disc(z), y)


def _views(X: torch.Tensor, views: Any, what: str) -> torch.Tensor:
    """``(1 + len(views), *X.shape)``: the clean features, then each view (checked to match)."""
    if views is None or len(views) == 0:
        return X[None]
    out = [X]
    for k, v in enumerate(views):
        t = _as_float_tensor(v, f"{what}[{k}]")
        if t.shape != X.shape:
            raise ShapeError(f"{what}[{k}] is shaped {tuple(t.shape)}; it must match the features, {tuple(X.shape)}.")
        out.append(t)
    return torch.stack(out)


def _draw(Xs: torch.Tensor, rows: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Rows of the clean features, or with views, each row from a view drawn uniformly (clean included)."""
    if len(Xs) == 1:
        return Xs[0, rows]
    k = torch.randint(len(Xs), (len(rows),), generator=gen).to(rows.device)
    return Xs[k, rows]


def _fgsm(model: JointModel, step: Callable, s: TrainSettings, gen: torch.Generator, x: torch.Tensor,
          y: torch.Tensor) -> torch.Tensor:
    """The batch's picture features moved ``feature_eps`` training standard deviations up the sign of the
    loss's gradient (the worst change in that L-infinity box to first order)."""
    y0 = y.detach().requires_grad_(True)
    was = model.training
    model.eval()  # the attack sees the tower as it scores (no dropout); the gradient is the attack's only
    (g,) = torch.autograd.grad(step(model.text_forward(x) @ model.image_forward(y0).T, model, s, gen), y0)
    model.train(was)
    return (y + s.feature_eps * model.image.scale * g.sign()).detach()


class JointTrainer:
    """Trains a :class:`JointModel`, scikit-learn style: ``JointTrainer(...).fit(...).model_``.

    The constructor only stores ``settings`` (default :class:`TrainSettings`) with
    ``overrides`` applied, e.g. ``JointTrainer(loss="hinge", epochs=10)``. ``device``: where
    to train (see :func:`crosslab.device.get_device`); ``progress``: show a progress bar.
    """

    def __init__(
        self, settings: TrainSettings | None = None, *, device: str | torch.device | None = None,
        progress: bool = True, **overrides: Any,
    ) -> None:
        if settings is not None and not isinstance(settings, TrainSettings):
            raise ModelError(f"settings must be a TrainSettings (or None), got {type(settings).__name__}; "
                             "pass single settings as keywords, e.g. JointTrainer(loss='hinge').")
        self.settings = (settings or TrainSettings()).replace(**overrides)
        self.device = device
        self.progress = progress

    def __repr__(self) -> str:
        default = TrainSettings().as_dict()
        changed = ", ".join(f"{k}={v!r}" for k, v in self.settings.as_dict().items() if default[k] != v)
        return f"JointTrainer({changed})"

    def fit(self, text_feats: Array, image_feats: Array, caption_to_image: Any, *,
            val: tuple[Array, Array, Any] | None = None, text_views: Any = None,
            image_views: Any = None) -> JointTrainer:
        """Train on ``(C, n)`` caption and ``(N, m)`` image features; returns ``self``.

        ``caption_to_image``: ``(C,)`` image index of each caption (or a CaptionedImages).
        ``val``: optional ``(text_feats, image_feats, caption_to_image)`` of the validation
        split; then R@K is measured after every epoch, training stops when val rSum has not
        improved for ``patience`` epochs, and the best epoch's weights are kept (with
        ``init="cca"`` the start is scored as epoch 0 and kept if no epoch beats it).

        Sets ``model_`` (the :class:`JointModel`, in eval mode) and ``history_``: per-epoch
        lists ``loss``, ``temperature`` and, with ``val``, ``val_rsum``, ``val_t2i_r10``,
        ``val_i2t_r10`` (all val metrics in ``val_metrics``), plus ``best_epoch`` (1-based;
        the epoch whose weights were kept; 0 for the CCA start).

        ``text_views`` / ``image_views``: augmentation -- a list of arrays shaped like the
        caption (image) features, the same captions (pictures) altered (crosslab.robustness);
        every batch draws, per caption (picture), the clean features or one of the views.
        """
        from tqdm.auto import tqdm

        from .evaluation import evaluate

        s = self.settings
        X = _as_float_tensor(text_feats, "text features")
        Y = _as_float_tensor(image_feats, "image features")
        c2i = _check_pairs(X, Y, caption_to_image, "training data")
        if len(np.unique(c2i)) < 2:
            raise ShapeError("training needs captions of at least 2 different images.")
        if val is not None:
            vX = _as_float_tensor(val[0], "val text features")
            vY = _as_float_tensor(val[1], "val image features")
            vc2i = _check_pairs(vX, vY, val[2], "val data")
            if vX.shape[1] != X.shape[1] or vY.shape[1] != Y.shape[1]:
                raise ShapeError("val features must have the same widths as the training features.")
        Xs = _views(X, text_views, "text_views")
        Ys = _views(Y, image_views, "image_views")

        dev = get_device(self.device)
        torch.manual_seed(s.seed)
        rng = np.random.default_rng(s.seed)
        gen = torch.Generator().manual_seed(s.seed)
        model = _new_model(s, X, Y, c2i).to(dev)
        step = LOSSES[s.loss]
        decay = [p for n, p in model.named_parameters() if p.ndim > 1]
        other = [p for n, p in model.named_parameters() if p.ndim <= 1 and p.requires_grad]
        groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": other, "weight_decay": 0.0}]
        disc = None
        if s.adversary > 0:  # made after the towers, so adversary=0 draws exactly what it always drew
            from .modality import ModalityDiscriminator

            disc = ModalityDiscriminator(s.d, s.adversary_hidden).to(dev)
            groups.append({"params": list(disc.parameters()), "weight_decay": 0.0})
        opt = torch.optim.AdamW(groups, lr=s.lr)
        Xd, Yd = Xs.to(dev), Ys.to(dev)  # (views + 1, C, n) and (views + 1, N, m): view 0 is the clean one
        vgen = torch.Generator().manual_seed(s.seed + 1)  # the views' draws: none without views
        c2i_t = torch.from_numpy(c2i).to(dev)
        history: dict[str, Any] = {"loss": [], "temperature": [], "val_metrics": [], "val_rsum": [],
                                   "val_t2i_r10": [], "val_i2t_r10": [], "best_epoch": None}
        best_rsum, best_state, bad = -math.inf, None, 0
        if val is not None and s.init == "cca":
            # Score the starting point too: training must beat it to replace it.
            m = evaluate(model, vc2i, text=vX, image=vY)
            history["val_metrics"].append(m)
            history["init_val_rsum"] = m["rsum"]
            best_rsum, history["best_epoch"] = m["rsum"], 0
            best_state = copy.deepcopy(model.state_dict())
        bar = tqdm(range(s.epochs), desc=f"fit {s.loss}", disable=not self.progress, leave=False)
        for epoch in bar:
            model.train()
            total, count = 0.0, 0
            for b in unique_image_batches(c2i, s.batch_size, rng):
                bt = torch.from_numpy(b).to(dev)
                xb, yb = _draw(Xd, bt, vgen), _draw(Yd, c2i_t[bt], vgen)
                if s.feature_eps > 0:
                    yb = _fgsm(model, step, s, gen, xb, yb)
                t = model.text_forward(xb)
                v = model.image_forward(yb)
                L = step(t @ v.T, model, s, gen)
                if disc is not None:
                    L = L + s.adversary * _modality_loss(disc, t, v)
                opt.zero_grad(set_to_none=True)
                L.backward()
                opt.step()
                total += L.item() * len(b)
                count += len(b)
            history["loss"].append(total / max(count, 1))
            history["temperature"].append(model.temperature)
            post = {"loss": f"{history['loss'][-1]:.4f}"}
            if val is not None:
                m = evaluate(model, vc2i, text=vX, image=vY)
                history["val_metrics"].append(m)
                for key in ("rsum", "t2i_r10", "i2t_r10"):
                    history[f"val_{key}"].append(m[key])
                post["val_rsum"] = f"{m['rsum']:.1f}"
                if m["rsum"] > best_rsum:
                    best_rsum, bad, history["best_epoch"] = m["rsum"], 0, epoch + 1
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
            bar.set_postfix(post)
            if val is not None and s.patience is not None and bad >= s.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            history["best_epoch"] = len(history["loss"])
        model.eval()
        self.model_, self.history_ = model, history
        return self
