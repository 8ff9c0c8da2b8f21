"""Training both towers: the top of the CNN learns together with the projection heads.

The course's other heads read a frozen CNN. Here the last ``blocks`` MBConv blocks of
EfficientNet-Lite and its head convolution are trained too, end to end with the towers under
InfoNCE, the way CLIP trains both encoders -- on a laptop's scale:

* **cached activations**: everything below the cut stays frozen, so its output for every picture
  (:meth:`crosslab.image.ImageEncoder.extract_trunk`, ``(N, C, 5, 5)`` float16) is computed once
  and cached; an epoch runs only the small top (:class:`~crosslab.image_models.LiteTail`) and costs
  seconds instead of minutes on two cores;
* **augmented views**: pixel-level crops, flips and brightness/contrast jitter (no hue or saturation
  change, so colour words stay true) are drawn once per picture and view (:class:`AugmentedView`,
  seeded), pushed through the frozen trunk and cached like any features; each epoch shows each
  picture as its clean version or one of its views;
* **from a fitted start**: the towers first learn on the frozen CNN's pooled features (the table's
  ``mlp+minilm``); then the CNN's top and the towers train together at a small learning rate. The
  start is scored on val as "epoch 0" and kept unless an epoch beats it (early stopping on val rSum,
  as everywhere in the course).

:class:`FineTunedHead` is the fitted result (the trained top + the towers), an ordinary head of a
:class:`~crosslab.pipeline.Pipeline` whose ``image_input`` is ``"trunk"``: the table's
``finetune+minilm`` is fitted, cached, saved and loaded like every other pipeline.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, ImageEnhance

from .device import get_device
from .errors import ModelError, ShapeError
from .joint import JointModel
from .losses import LOSSES

__all__ = ["AugmentedView", "augment", "FineTuneConfig", "FineTunedHead", "FineTuneTrainer", "AUGMENT"]

#: The augmentation: random crops keeping 70-100 % of the area, horizontal flips, brightness and contrast
#: scaled by 0.8-1.2. No hue or saturation change: "a red apple" must stay red.
AUGMENT = dict(min_area=0.7, flip=0.5, brightness=0.2, contrast=0.2)


def augment(im: Image.Image, rng: np.random.Generator, *, min_area: float = 0.7, flip: float = 0.5,
            brightness: float = 0.2, contrast: float = 0.2) -> Image.Image:
    """One random view of ``im`` (same size): crop, flip, brightness, contrast; hue is never touched."""
    w, h = im.size
    area = rng.uniform(min_area, 1.0)
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw = min(w, max(1, round(w * math.sqrt(area * aspect))))
    ch = min(h, max(1, round(h * math.sqrt(area / aspect))))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = im.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BICUBIC)
    if rng.random() < flip:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(1 - brightness, 1 + brightness))
    return ImageEnhance.Contrast(out).enhance(rng.uniform(1 - contrast, 1 + contrast))


class AugmentedView:
    """View number ``view`` of some pictures of a dataset: each picture augmented by its own seeded draw.

    Looks like a dataset to :class:`~crosslab.image.ImageEncoder` (``load_image``, ``ids``, ``name``,
    ``fingerprint``), so its features are extracted and cached like any others. ``rows`` picks the
    pictures (default all); the same ``(dataset, rows, view, seed, settings)`` gives the same pixels.
    """

    def __init__(self, ds: Any, view: int, *, rows: Any = None, seed: int = 0, settings: dict | None = None) -> None:
        self.ds, self.view, self.seed = ds, int(view), int(seed)
        self.rows = np.arange(len(ds)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.settings = dict(AUGMENT if settings is None else settings)
        self.name = f"{str(ds.name).split('/')[0]}/view{self.view}"
        self.ids = [ds.ids[int(i)] for i in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def load_image(self, i: int) -> Image.Image:
        row = int(self.rows[i])
        rng = np.random.default_rng([self.seed, self.view, row])
        return augment(self.ds.load_image(row), rng, **self.settings)

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(self.ds.fingerprint().encode())
        h.update(json.dumps([self.view, self.seed, self.settings, self.rows.tolist()], sort_keys=True).encode())
        return h.hexdigest()


# ----------------------------------------------------------------------------- the fitted head
@dataclass
class FineTuneConfig:
    """What rebuilds a :class:`FineTunedHead`'s network (stored as JSON beside its weights)."""

    encoder: str
    image_size: int
    blocks: int


def _tail_for(cfg: FineTuneConfig) -> nn.Module:
    """An untrained copy of the encoder's top with the right shapes (the weights are loaded after)."""
    import contextlib
    import io

    from .image_models import _fold_batchnorm, get_encoder_spec

    with contextlib.redirect_stdout(io.StringIO()):
        net = get_encoder_spec(cfg.encoder).builder("random", cfg.image_size)
    return _fold_batchnorm(net.eval()).tail(cfg.blocks).float()


class FineTunedHead(nn.Module):
    """The CNN's trained top (``tail``) followed by the image tower, and the text tower.

    ``embed_image`` takes the frozen trunk's activations ``(N, C, h, w)``; ``embed_text`` the text
    encoder's features ``(C, n)``; both give unit vectors compared by the cosine.
    """

    metric = "cosine"

    def __init__(self, cfg: FineTuneConfig, tail: nn.Module, towers: JointModel) -> None:
        super().__init__()
        self.cfg, self.tail, self.towers = cfg, tail, towers

    @property
    def blocks(self) -> int:
        return self.cfg.blocks

    def image_forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.towers.image_forward(self.tail(a))

    def embed_text(self, X: Any, batch_size: int = 8192) -> Any:
        """``(C, n)`` text features -> ``(C, d)`` unit vectors (NumPy in, NumPy out)."""
        return self.towers.embed_text(X, batch_size)

    def embed_image(self, A: Any, batch_size: int = 256) -> Any:
        """``(N, C, h, w)`` trunk activations -> ``(N, d)`` unit vectors (NumPy in, NumPy out)."""
        if not isinstance(A, np.ndarray | torch.Tensor) or A.ndim != 4:
            raise ModelError("a fine-tuned head takes the CNN's trunk activations (N, C, h, w); "
                             "a pipeline gets them with ImageEncoder.extract_trunk(blocks=...).")
        dev = next(self.parameters()).device
        was = self.training
        self.eval()
        with torch.no_grad():
            out = [self.image_forward(torch.as_tensor(A[i:i + batch_size]).to(dev, torch.float32))
                   for i in range(0, len(A), batch_size)]
        self.train(was)
        V = torch.cat(out) if out else torch.zeros((0, self.towers.cfg.d), device=dev)
        return V.cpu().numpy() if isinstance(A, np.ndarray) else V.to(A.device)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"config": np.array(json.dumps(asdict(self.cfg)))}
        arrays |= {f"tail/{k}": v.detach().cpu().numpy() for k, v in self.tail.state_dict().items()}
        arrays |= {f"towers/{k}": v for k, v in self.towers.to_arrays().items()}
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], *, device: Any = None) -> FineTunedHead:
        try:
            cfg = FineTuneConfig(**json.loads(str(arrays["config"])))
            tail = _tail_for(cfg)
            tail.load_state_dict({k[5:]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
                                  if k.startswith("tail/")})
            towers = JointModel.from_arrays({k[7:]: v for k, v in arrays.items() if k.startswith("towers/")})
        except (KeyError, ValueError, TypeError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ModelError(f"these arrays do not hold a crosslab FineTunedHead ({first}).") from None
        return cls(cfg, tail, towers).to(get_device(device)).eval()


# ----------------------------------------------------------------------------- training
class FineTuneTrainer:
    """Fine-tunes a fitted :class:`~crosslab.joint.JointModel` (trained on the frozen CNN's pooled features)
    together with the CNN's top: ``FineTuneTrainer(...).fit(...).model_`` is a :class:`FineTunedHead`.

    Settings: ``tail_lr`` (the CNN's top) and ``towers_lr`` (the towers; 0 freezes them, dropout
    included), ``finetune_epochs``, ``finetune_patience``, ``finetune_batch_size`` (pictures per batch),
    ``seed``; ``restore_best=False`` runs every epoch and keeps the last (to look at overfitting); ``encoder``,
    ``image_size`` and ``blocks`` describe the cut (the tail passed to :meth:`fit` must match them).
    The loss is the towers' own (their ``cfg.loss`` and learned temperature).
    """

    def __init__(self, *, encoder: str, image_size: int, blocks: int = 1, tail_lr: float = 1e-4,
                 towers_lr: float = 1e-4, finetune_epochs: int = 8, finetune_patience: int = 2,
                 finetune_batch_size: int = 128, weight_decay: float = 1e-4, seed: int = 0, restore_best: bool = True,
                 device: Any = None, progress: bool = True) -> None:
        self.cfg = FineTuneConfig(str(encoder), int(image_size), int(blocks))
        self.tail_lr, self.towers_lr, self.weight_decay = float(tail_lr), float(towers_lr), float(weight_decay)
        self.epochs, self.patience, self.batch_size = int(finetune_epochs), int(finetune_patience), \
            int(finetune_batch_size)
        self.seed, self.device, self.progress = int(seed), device, progress
        self.restore_best = bool(restore_best)

    def fit(self, X: Any, A: np.ndarray, caption_to_image: Any, *, tail: nn.Module, towers: JointModel,
            val: tuple[Any, np.ndarray, Any], views: Sequence[np.ndarray] = ()) -> FineTuneTrainer:
        """Train on ``(C, n)`` text features and ``(N, C', h, w)`` trunk activations; ``views``: the same
        pictures' augmented activations, each ``(N, C', h, w)``; ``tail``: the pretrained top; ``towers``:
        the fitted towers to start from (copied, not changed).

        Every epoch shows each training picture once, with one of its captions and either its clean
        activations or one of its views (drawn at random). Sets ``model_`` and ``history_``: ``val_rsum``
        per epoch with the start as entry 0, ``loss``, and ``best_epoch`` (0: no epoch beat the start;
        the kept one unless ``restore_best=False``).
        """
        from tqdm.auto import tqdm

        from .evaluation import evaluate
        from .joint import TrainSettings

        X = np.asarray(X, np.float32)
        c2i = np.asarray(caption_to_image, dtype=np.int64)
        if A.ndim != 4 or len(c2i) != len(X) or (len(c2i) and c2i.max() >= len(A)):
            raise ShapeError("fine-tuning needs (C, n) text features, (N, C, h, w) activations and a (C,) "
                             "caption -> image map into them.")
        if any(v.shape != A.shape for v in views):
            raise ShapeError("every augmented view must have the clean activations' shape.")
        vX, vA, vc2i = np.asarray(val[0], np.float32), val[1], np.asarray(val[2], dtype=np.int64)
        dev = get_device(self.device)
        model = FineTunedHead(self.cfg, copy.deepcopy(tail).float().cpu().requires_grad_(True),
                              copy.deepcopy(towers).cpu()).to(dev)
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.AdamW([
            {"params": list(model.tail.parameters()), "lr": self.tail_lr},
            {"params": [p for p in model.towers.parameters() if p.requires_grad], "lr": self.towers_lr},
        ], weight_decay=self.weight_decay)
        cfg = model.towers.cfg
        settings = TrainSettings(loss=cfg.loss, temperature=cfg.temperature)
        step = LOSSES[cfg.loss]
        sources = [A, *views]
        caps_of = [np.flatnonzero(c2i == i) for i in range(len(A))]
        pictures = np.array([i for i, c in enumerate(caps_of) if len(c)])
        Xd = torch.from_numpy(X).to(dev)
        start = evaluate(model, vc2i, text=vX, image=vA)["rsum"]
        history: dict[str, Any] = {"val_rsum": [start], "loss": [], "best_epoch": 0}
        best, best_state, bad = start, copy.deepcopy(model.state_dict()), 0
        for epoch in tqdm(range(self.epochs), desc="fine-tune", disable=not self.progress, leave=False):
            model.train()
            if self.towers_lr == 0:  # frozen towers are a fixed function: no dropout noise either
                model.towers.eval()
            total = 0.0
            order = rng.permutation(pictures)
            for b0 in range(0, len(order) - 1, self.batch_size):
                imgs = order[b0:b0 + self.batch_size]
                caps = np.array([rng.choice(caps_of[i]) for i in imgs])
                which = rng.integers(0, len(sources), len(imgs))
                a = np.stack([sources[w][i] for w, i in zip(which, imgs, strict=True)]).astype(np.float32)
                v = model.image_forward(torch.from_numpy(a).to(dev))
                t = model.towers.text_forward(Xd[torch.from_numpy(caps).to(dev)])
                L = step(t @ v.T, model.towers, settings, gen)
                opt.zero_grad(set_to_none=True)
                L.backward()
                opt.step()
                total += L.item() * len(imgs)
            history["loss"].append(total / len(pictures))
            r = evaluate(model, vc2i, text=vX, image=vA)["rsum"]
            history["val_rsum"].append(r)
            if r > best:
                best, bad, history["best_epoch"] = r, 0, epoch + 1
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
                if bad >= self.patience and self.restore_best:
                    break
        if self.restore_best:
            model.load_state_dict(best_state)
        self.model_, self.history_ = model.eval(), history
        return self
