"""Words that look at regions: a cross-attention head (the SCAN family) and its pooled twin.

Inputs are not one vector per caption and per picture but sequences:

* text ``(C, L, n)``: a caption's word vectors (``glove-words`` in :mod:`crosslab.text_encoders`;
  zero rows after the last word);
* image ``(N, R, m)``: the CNN's grid flattened to ``R = h * w`` region vectors (a pipeline with
  ``image_input="grid"``; 5 x 5 regions of 1280 numbers for EfficientNet-Lite0 at 160 px).

Both sides are standardised (train statistics), projected to ``d`` numbers and L2-normalised,
a word after seeing its neighbours (a width-3 convolution over the sentence, the small
cousin of SCAN's bidirectional GRU: "red" in "red circle" learns of the circle)::

    u_w = normalize(P x_w + conv(P x)_w)        r_r = normalize(Q y_r)        s_wr = u_w . r_r

With attention (``direction="t2i"``), word ``w`` spreads a softmax over the regions and
its relevance is the attention-weighted similarity::

    alpha_wr = softmax_r(lam * s_wr)            rel_w = sum_r alpha_wr s_wr = u_w . (sum_r alpha_wr r_r)

and the caption's score is the mean of its words' relevances. This is ``softmax(Q K^T / sqrt(d)) V``
with the words as queries and the regions as keys and values: ``1 / sqrt(d)`` keeps the dot
products of *unnormalised* d-dimensional vectors near unit variance, and for unit vectors
(dot products in [-1, 1]) a temperature ``lam`` plays that part instead (SCAN's lambda_1 = 9).
``direction="i2t"`` swaps the roles: every region attends over the words, the mean is over
regions. ``lam = 0`` spreads every word's attention evenly, and the score becomes
``(mean_w u_w) . (mean_r r_r)``: the pooled model, with the same towers and the same inputs
(``pooled=True`` computes exactly that). So attention is one number away from pooling.

Training: symmetric InfoNCE (:func:`crosslab.losses.infonce_loss`) with a learned
temperature, batches without two captions of one image, early stopping on val rSum
(:class:`AttentionTrainer`). The head persists as plain arrays, like every head.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .device import get_device
from .errors import ModelError, ShapeError

__all__ = ["AttentionConfig", "AttentionHead", "AttentionTrainer", "attention_scores"]

#: Bytes of word-region similarities one scoring chunk may hold (the (C, N, L, R) tensor).
CHUNK_BYTES = 64 << 20


@dataclass
class AttentionConfig:
    """Everything needed to rebuild an :class:`AttentionHead` (stored as JSON by ``to_arrays``)."""

    text_dim: int
    image_dim: int
    d: int = 256
    lam: float = 9.0  # the attention's inverse temperature on unit-vector similarities
    direction: str = "t2i"  # "t2i": words attend over regions; "i2t": regions attend over words
    pooled: bool = False  # no attention: (mean of words) . (mean of regions)
    context: bool = True  # words see their neighbours (width-3 convolution)
    temperature: float = 0.07  # InfoNCE's initial temperature (learned)


def attention_scores(u: torch.Tensor, wmask: torch.Tensor, r: torch.Tensor, *, lam: float,
                     direction: str = "t2i", pooled: bool = False) -> torch.Tensor:
    """``(C, N)`` scores of words ``u`` ``(C, L, d)`` (``wmask`` ``(C, L)`` True for real words)
    against regions ``r`` ``(N, R, d)``, as in the module docstring (no chunking)."""
    wm = wmask.to(u.dtype)
    n_words = wm.sum(1).clamp(min=1)
    if pooled:
        return ((u * wm[..., None]).sum(1) / n_words[:, None]) @ r.mean(1).T
    C, L, d = u.shape
    N, R, _ = r.shape
    s = (u.reshape(C * L, d) @ r.reshape(N * R, d).T).view(C, L, N, R)  # one matrix product
    if direction == "t2i":
        rel = (torch.softmax(lam * s, dim=3) * s).sum(3)  # (C, L, N): each word's relevance
        return (rel * wm[:, :, None]).sum(1) / n_words[:, None]
    # i2t: each region's softmax over the caption's real words (padding's similarities are 0, and a
    # large negative logit gives it no weight; a caption without words scores 0)
    logits = lam * s + ((wm - 1.0) * 1e4)[:, :, None, None]
    return (torch.softmax(logits, dim=1) * s).sum(1).mean(2)


class AttentionHead(nn.Module):
    """Word and region towers and the attention score (see the module docstring).

    ``embed_text`` gives ``(C, L, d)`` unit word vectors (zero rows for padding) and
    ``embed_image`` ``(N, R, d)`` unit region vectors; :meth:`score` compares them. Unlike the
    other heads, a caption and a picture are not one vector each, so the score is the head's own,
    not a :mod:`crosslab.similarity` metric (``metric`` is ``"attention"``).
    """

    metric = "attention"

    def __init__(self, cfg: AttentionConfig) -> None:
        super().__init__()
        if cfg.direction not in ("t2i", "i2t"):
            raise ModelError(f"direction must be 't2i' or 'i2t', got {cfg.direction!r}.")
        if not (math.isfinite(cfg.lam) and cfg.lam >= 0):
            raise ModelError(f"lam must be a number >= 0, got {cfg.lam!r}.")
        self.cfg = cfg
        for side, n in (("text", cfg.text_dim), ("image", cfg.image_dim)):
            self.register_buffer(f"{side}_mean", torch.zeros(n))
            self.register_buffer(f"{side}_scale", torch.ones(n))
        self.words = nn.Linear(cfg.text_dim, cfg.d)
        self.context = nn.Conv1d(cfg.d, cfg.d, 3, padding=1)
        nn.init.zeros_(self.context.weight)  # starts as a bag of words; training adds the neighbours
        nn.init.zeros_(self.context.bias)
        self.regions = nn.Linear(cfg.image_dim, cfg.d)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / cfg.temperature)))

    # ----- towers --------------------------------------------------------------
    def text_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(C, L, n)`` word vectors -> ``(C, L, d)`` unit vectors, zero where ``x`` is padding."""
        mask = x.abs().sum(2) > 0
        h = self.words((x - self.text_mean) / self.text_scale) * mask[..., None]
        if self.cfg.context:
            h = h + self.context(h.transpose(1, 2)).transpose(1, 2) * mask[..., None]
        return F.normalize(h, dim=2) * mask[..., None]

    def image_forward(self, y: torch.Tensor, *, standardized: bool = False) -> torch.Tensor:
        """``(N, R, m)`` region features -> ``(N, R, d)`` unit vectors (``standardized``: ``y`` is already
        ``(y - image_mean) / image_scale``, as the trainer keeps it: the same numbers, computed once)."""
        return F.normalize(self.regions(y if standardized else (y - self.image_mean) / self.image_scale), dim=2)

    def pair_scores(self, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Scores of embedded words ``u`` ``(C, L, d)`` against embedded regions ``r`` ``(N, R, d)``."""
        c = self.cfg
        return attention_scores(u, u.abs().sum(2) > 0, r, lam=c.lam, direction=c.direction, pooled=c.pooled)

    # ----- the head interface ---------------------------------------------------
    def _embed(self, X: Any, side: str, width: int) -> np.ndarray:
        if not isinstance(X, np.ndarray | torch.Tensor) or X.ndim != 3:
            what = "(captions, words, numbers): glove-words features" if side == "text" else \
                "(pictures, regions, numbers): a CNN grid"
            raise ModelError(f"the attention head takes {side} features shaped {what}; got "
                             f"{getattr(X, 'shape', type(X).__name__)}.")
        if X.shape[2] != width:
            raise ModelError(f"this attention head expects {side} vectors of width {width}, got {X.shape[2]}; "
                             "use the encoders it was trained with.")
        dev = self.words.weight.device
        fwd = self.text_forward if side == "text" else self.image_forward
        out = []
        with torch.no_grad():
            for i in range(0, len(X), 1024):
                out.append(fwd(torch.as_tensor(X[i:i + 1024]).to(dev, torch.float32)).cpu())
        if not out:
            return np.zeros((0, X.shape[1], self.cfg.d), np.float32)
        return torch.cat(out).numpy()

    def embed_text(self, X: Any) -> np.ndarray:
        return self._embed(X, "text", self.cfg.text_dim)

    def embed_image(self, Y: Any) -> np.ndarray:
        return self._embed(Y, "image", self.cfg.image_dim)

    def score(self, T: Any, V: Any) -> np.ndarray:
        """``(C, N)`` float64 scores of embedded texts ``T`` against embedded pictures ``V``, in chunks
        of at most :data:`CHUNK_BYTES` of word-region similarities."""
        T = torch.as_tensor(np.asarray(T, dtype=np.float32))
        V = torch.as_tensor(np.asarray(V, dtype=np.float32))
        if T.ndim != 3 or V.ndim != 3 or T.shape[2] != V.shape[2]:
            raise ShapeError(f"attention scores need (C, L, d) words and (N, R, d) regions, got "
                             f"{tuple(T.shape)} and {tuple(V.shape)}.")
        C, L, _ = T.shape
        N, R, _ = V.shape
        out = np.empty((C, N), np.float64)
        tc = max(1, min(C, 4096))
        nc = max(1, CHUNK_BYTES // (4 * tc * L * R))
        with torch.no_grad():
            for i in range(0, C, tc):
                for j in range(0, N, nc):
                    out[i:i + tc, j:j + nc] = self.pair_scores(T[i:i + tc], V[j:j + nc]).double().numpy()
        return out

    def word_attention(self, T: Any, V: Any) -> tuple[np.ndarray, np.ndarray]:
        """One text ``T`` ``(L, d)`` against one picture ``V`` ``(R, d)``: each real word's share of the
        score ``(m,)`` (they sum to it, exactly) and its attention map over the regions ``(m, R)``.

        ``t2i``: word ``w``'s share is ``rel_w / m`` and its map is its softmax over the regions.
        ``i2t``: the score is a mean over regions of ``sum_w beta_rw s_wr``, so word ``w``'s share
        is ``mean_r beta_rw s_wr`` and its map is how much each region attends to it. Pooled: the
        map is even (every region counts the same).
        """
        u = torch.as_tensor(np.asarray(T, np.float32))
        r = torch.as_tensor(np.asarray(V, np.float32))
        u = u[u.abs().sum(1) > 0]
        s = (u @ r.T).double()  # (m, R)
        m, R = s.shape
        if self.cfg.pooled:
            alpha = torch.full_like(s, 1.0 / R)
            return (alpha * s).sum(1).numpy() / m, alpha.numpy()
        if self.cfg.direction == "t2i":
            alpha = torch.softmax(self.cfg.lam * s, dim=1)
            return (alpha * s).sum(1).numpy() / m, alpha.numpy()
        beta = torch.softmax(self.cfg.lam * s, dim=0)
        return (beta * s).mean(1).numpy(), beta.numpy()

    def to_arrays(self) -> dict[str, np.ndarray]:
        import json

        state = {f"state/{k}": v.detach().cpu().numpy() for k, v in self.state_dict().items()}
        return {"config": np.array(json.dumps(asdict(self.cfg)))} | state

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], device: Any = None) -> AttentionHead:
        import json

        head = cls(AttentionConfig(**json.loads(str(arrays["config"]))))
        head.load_state_dict({k[6:]: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()
                              if k.startswith("state/")})
        return head.eval().to(get_device(device))


# ----------------------------------------------------------------------------- training
def _tensor(X: Any, what: str) -> torch.Tensor:
    if not isinstance(X, np.ndarray | torch.Tensor) or X.ndim != 3:
        raise ShapeError(f"{what} must be a 3-D array, got {getattr(X, 'shape', type(X).__name__)}.")
    t = torch.as_tensor(np.asarray(X, dtype=np.float32))
    if not bool(torch.isfinite(t).all()):
        raise ShapeError(f"{what} contains NaN or infinite values; re-compute the features.")
    return t


class AttentionTrainer:
    """Trains an :class:`AttentionHead`: ``AttentionTrainer(lam=9).fit(X, Y, c2i, val=...).model_``.

    ``settings``: the :class:`AttentionConfig` fields (``d``, ``lam``, ``direction``, ``pooled``,
    ``context``, ``temperature``) and the optimiser's ``lr``, ``weight_decay``, ``batch_size``,
    ``epochs``, ``patience`` (epochs without a better val rSum before stopping) and ``seed``.
    """

    OPTIM = dict(lr=1e-3, weight_decay=1e-4, batch_size=128, epochs=30, patience=5, seed=0)

    def __init__(self, *, device: Any = None, progress: bool = True, **settings: Any) -> None:
        model_keys = set(AttentionConfig.__dataclass_fields__) - {"text_dim", "image_dim"}
        unknown = set(settings) - model_keys - set(self.OPTIM)
        if unknown:
            raise ModelError(f"unknown attention setting(s) {sorted(unknown)}; valid: "
                             f"{sorted(model_keys | set(self.OPTIM))}.")
        self.model_settings = {k: v for k, v in settings.items() if k in model_keys}
        self.optim = {**self.OPTIM, **{k: v for k, v in settings.items() if k in self.OPTIM}}
        self.device, self.progress = device, progress

    def fit(self, text: Any, image: Any, caption_to_image: Any, *,
            val: tuple[Any, Any, Any] | None = None) -> AttentionTrainer:
        """Train on ``(C, L, n)`` word and ``(N, R, m)`` region features; ``val`` as ``(text, image, c2i)``.

        Sets ``model_`` (the best epoch's weights on val rSum, in eval mode) and ``history_``
        (per-epoch ``loss``, ``val_rsum``; ``best_epoch``).
        """
        from tqdm.auto import tqdm

        from .evaluation import evaluate
        from .joint import unique_image_batches
        from .losses import infonce_loss

        o = self.optim
        X, Y = _tensor(text, "text features"), _tensor(image, "image features")
        c2i = np.asarray(caption_to_image, dtype=np.int64)
        if len(c2i) != len(X) or (len(c2i) and (c2i.min() < 0 or c2i.max() >= len(Y))):
            raise ShapeError(f"{len(X)} captions and {len(Y)} pictures do not fit caption_to_image "
                             f"({len(c2i)} links, pointing to 0..{c2i.max() if len(c2i) else '-'}).")
        if len(np.unique(c2i)) < 2:
            raise ShapeError("training needs captions of at least 2 different pictures.")
        dev = get_device(self.device)
        torch.manual_seed(int(o["seed"]))
        rng = np.random.default_rng(int(o["seed"]))
        model = AttentionHead(AttentionConfig(X.shape[2], Y.shape[2], **self.model_settings))
        words = X.reshape(-1, X.shape[2])
        words = words[words.abs().sum(1) > 0]
        regions = Y.reshape(-1, Y.shape[2])
        for side, data in (("text", words), ("image", regions)):
            getattr(model, f"{side}_mean").copy_(data.mean(0))
            getattr(model, f"{side}_scale").copy_(data.std(0).clamp(min=1e-6))
        model.to(dev)
        decay = [p for p in model.parameters() if p.ndim > 1]
        other = [p for p in model.parameters() if p.ndim <= 1]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": o["weight_decay"]},
                                 {"params": other, "weight_decay": 0.0}], lr=o["lr"])
        # The regions standardised once, not in every step (a sixth of a pooled step's time otherwise).
        Xd, c2i_t = X.to(dev), torch.from_numpy(c2i).to(dev)
        Yd = ((Y.to(dev) - model.image_mean) / model.image_scale)
        del Y
        history: dict[str, Any] = {"loss": [], "val_rsum": [], "best_epoch": None}
        best, best_state, bad = -math.inf, None, 0
        bar = tqdm(range(int(o["epochs"])), desc="fit attention", disable=not self.progress, leave=False)
        for epoch in bar:
            model.train()
            total, count = 0.0, 0
            for b in unique_image_batches(c2i, int(o["batch_size"]), rng):
                bt = torch.from_numpy(b).to(dev)
                S = model.pair_scores(model.text_forward(Xd[bt]), model.image_forward(Yd[c2i_t[bt]], standardized=True))
                loss = infonce_loss(S, 1 / model.logit_scale.exp().clamp(max=100))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total, count = total + loss.item() * len(b), count + len(b)
            history["loss"].append(total / max(count, 1))
            if val is not None:
                model.eval()
                vT, vV = model.embed_text(_tensor(val[0], "val text")), model.embed_image(_tensor(val[1], "val image"))
                rsum = evaluate(model.score(vT, vV), np.asarray(val[2]))["rsum"]
                history["val_rsum"].append(rsum)
                bar.set_postfix(val_rsum=f"{rsum:.1f}")
                if rsum > best:
                    best, bad, history["best_epoch"] = rsum, 0, epoch + 1
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    bad += 1
                    if bad >= int(o["patience"]):
                        break
        if best_state is not None:
            model.load_state_dict(best_state)
        else:
            history["best_epoch"] = len(history["loss"])
        self.model_, self.history_ = model.eval(), history
        return self
