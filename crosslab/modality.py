"""The modality gap, and training against it: a gradient-reversal layer and a modality discriminator.

In a shared space trained with a contrastive loss, captions and pictures often occupy two separate
regions -- the *modality gap* (Liang et al., 2022): a caption is nearer to every other caption than to its
own picture. :func:`modality_gap` measures it two ways: the distance between the two modalities' mean unit
vectors, and how well a linear probe tells a text vector from a picture vector (0.5 = it cannot).

ACMR (Wang et al., 2017) closes the gap adversarially: a small classifier (:class:`ModalityDiscriminator`)
learns to tell the modalities apart from the joint-space vectors, and the towers learn to fool it. One
backward pass does both through a **gradient-reversal layer** (Ganin and Lempitsky, 2015):
:func:`grad_reverse` is the identity going forward and multiplies the gradient by ``-scale`` going back,
so the discriminator's parameters descend its loss while the towers below ascend it.
:class:`crosslab.joint.JointTrainer` uses both when ``adversary > 0``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

__all__ = ["grad_reverse", "ModalityDiscriminator", "modality_gap"]


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``x`` unchanged; in the backward pass the gradient is multiplied by ``-scale``."""
    return _GradReverse.apply(x, float(scale))


class ModalityDiscriminator(nn.Module):
    """A joint-space vector ``(B, d)`` -> the logit that it is a picture (not a caption)."""

    def __init__(self, d: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(-1)


def modality_gap(T: Any, V: Any, *, folds: int = 5, seed: int = 0) -> dict[str, float]:
    """How far apart caption vectors ``T`` ``(C, d)`` and picture vectors ``V`` ``(N, d)`` lie.

    Both are L2-normalised first. Returns ``mean_distance`` (between the two mean unit vectors; 0 when
    they coincide), ``probe_accuracy`` (a logistic-regression probe telling the modalities apart,
    ``folds``-fold cross-validated on as many captions as pictures, drawn with ``seed``; 0.5 = chance) and
    ``cos_text_text`` / ``cos_image_image`` / ``cos_text_image`` (mean cosines within and across).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    T = np.asarray(T, np.float64)
    V = np.asarray(V, np.float64)
    T = T / np.linalg.norm(T, axis=1, keepdims=True).clip(1e-12)
    V = V / np.linalg.norm(V, axis=1, keepdims=True).clip(1e-12)
    n = min(len(T), len(V))
    rng = np.random.default_rng(seed)
    Tn, Vn = T[rng.choice(len(T), n, replace=False)], V[rng.choice(len(V), n, replace=False)]
    X = np.concatenate([Tn, Vn])
    y = np.r_[np.zeros(n), np.ones(n)]
    acc = cross_val_score(LogisticRegression(max_iter=1000), X, y, cv=folds).mean()
    mt, mv = T.mean(0), V.mean(0)
    return {"mean_distance": float(np.linalg.norm(mt - mv)), "probe_accuracy": float(acc),
            "cos_text_text": float(mt @ mt), "cos_image_image": float(mv @ mv), "cos_text_image": float(mt @ mv)}
