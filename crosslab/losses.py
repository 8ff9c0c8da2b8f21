"""Ranking losses as small functions of a batch's score matrix, and the table of them.

Every loss takes the ``(B, B)`` score matrix ``S`` with ``S[i, j] = score(text_i, image_j)``:
the diagonal holds the matching pairs and every off-diagonal entry is a negative (VSE++ /
OpenCLIP style), so any metric that gives "higher = better" scores plugs in, and a loss
knows nothing of encoders. :data:`LOSSES` maps each name to a training step
``(S, model, settings, generator) -> loss`` that calls the pure function with the model's
(learned) temperature or the settings' margin; :class:`crosslab.joint.JointTrainer` looks
the loss up there, so a new loss is one function and one entry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .joint import JointModel, TrainSettings

__all__ = ["infonce_loss", "hinge_loss", "max_violation_loss", "bce_loss", "sample_negatives", "LOSSES", "LossFn"]


# ----------------------------------------------------------------------------- losses
def infonce_loss(S: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): cross-entropy of ``S / tau`` against the diagonal, both ways.

    ``L = -1/(2B) sum_i [ log softmax_j(S_ij / tau)[i] + log softmax_j(S_ji / tau)[i] ]``
    for a ``(B, B)`` score matrix ``S`` (rows texts, columns images).
    """
    logits = S / temperature
    target = torch.arange(S.shape[0], device=S.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _off_diagonal(S: torch.Tensor) -> torch.Tensor:
    return ~torch.eye(S.shape[0], dtype=torch.bool, device=S.device)


def hinge_loss(S: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Hinge triplet loss summed over all negatives of the batch (DeViSE / VSE0).

    ``L = 1/B sum_i sum_{j != i} ( [m - S_ii + S_ij]_+ + [m - S_ii + S_ji]_+ )``:
    text ``i`` against every wrong image ``j`` and image ``i`` against every wrong
    caption ``j``. (VSE++ sums over the batch; we average over it so the learning
    rate does not depend on the batch size.)
    """
    pos = S.diagonal()[:, None]
    mask = _off_diagonal(S)
    t2i = (margin - pos + S).clamp(min=0) * mask  # row i: text i vs image j
    i2t = (margin - pos + S.T).clamp(min=0) * mask  # row i: image i vs text j
    return (t2i.sum() + i2t.sum()) / S.shape[0]


def max_violation_loss(S: torch.Tensor, margin: float = 0.2) -> torch.Tensor:
    """Max-violation hinge (VSE++): only the hardest negative of each positive counts.

    ``L = 1/B sum_i ( max_{j != i} [m - S_ii + S_ij]_+ + max_{j != i} [m - S_ii + S_ji]_+ )``.
    """
    pos = S.diagonal()[:, None]
    mask = _off_diagonal(S)
    t2i = ((margin - pos + S).clamp(min=0) * mask).max(1).values
    i2t = ((margin - pos + S.T).clamp(min=0) * mask).max(1).values
    return (t2i.sum() + i2t.sum()) / S.shape[0]


def bce_loss(
    S: torch.Tensor, negatives: torch.Tensor, scale: float | torch.Tensor, bias: float | torch.Tensor
) -> torch.Tensor:
    """Pairwise binary cross-entropy on (text, image, match) pairs with sampled negatives.

    The seed article's section 5 idea, done so it runs: each text ``i`` is paired with its
    image (label 1) and with ``K`` sampled wrong images ``n_i1 .. n_iK`` (label 0); the
    pair's logit is ``z_ij = scale * S_ij + bias`` (a calibrated score, not a Linear layer
    on a cosine). With ``sigma`` the logistic function,

    ``L = -1/(B (K+1)) sum_i [ log sigma(z_ii) + sum_k log(1 - sigma(z_{i, n_ik})) ]``.

    Args:
        S: ``(B, B)`` scores. negatives: ``(B, K)`` column indices, none equal to the row.
    """
    B = S.shape[0]
    rows = torch.arange(B, device=S.device)
    pos = scale * S[rows, rows] + bias
    neg = scale * S.gather(1, negatives) + bias
    total = F.softplus(-pos).sum() + F.softplus(neg).sum()  # -log sigma(z), -log(1-sigma(z))
    return total / (B * (1 + negatives.shape[1]))


def sample_negatives(B: int, K: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``(B, K)`` random column indices with ``neg[i, k] != i`` (uniform over the other B-1)."""
    off = torch.randint(1, B, (B, K), generator=generator)
    return ((torch.arange(B)[:, None] + off) % B).to(device)


# ----------------------------------------------------------------------------- the loss table
#: One training step's loss: ``(S, model, settings, generator) -> scalar tensor``.
LossFn = Callable[[torch.Tensor, "JointModel", "TrainSettings", torch.Generator], torch.Tensor]


def _logit_scale(model: JointModel) -> torch.Tensor:  # 1 / tau, capped at 100 as in CLIP
    return model.logit_scale.clamp(max=math.log(100)).exp()


def _infonce(S: torch.Tensor, model: JointModel, settings: TrainSettings, generator: torch.Generator) -> torch.Tensor:
    return infonce_loss(S, 1 / _logit_scale(model))


def _hinge(S: torch.Tensor, model: JointModel, settings: TrainSettings, generator: torch.Generator) -> torch.Tensor:
    return hinge_loss(S, settings.margin)


def _max_violation(
    S: torch.Tensor, model: JointModel, settings: TrainSettings, generator: torch.Generator
) -> torch.Tensor:
    return max_violation_loss(S, settings.margin)


def _bce(S: torch.Tensor, model: JointModel, settings: TrainSettings, generator: torch.Generator) -> torch.Tensor:
    scale, B = _logit_scale(model), S.shape[0]
    neg = sample_negatives(B, min(settings.n_negatives, B - 1), generator, S.device)
    return bce_loss(S, neg, scale, model.logit_bias)


#: Loss name -> training step. Iterating gives the names in this order.
LOSSES: dict[str, LossFn] = {"infonce": _infonce, "hinge": _hinge, "max_violation": _max_violation, "bce": _bce}
