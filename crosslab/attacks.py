"""Adversarial examples: small pixel changes, found by gradient steps, that move a picture in the joint space.

    from crosslab import attacks
    adv = attacks.pgd(p, pictures, texts, eps=4 / 255)            # push each picture away from its text
    adv = attacks.pgd(p, pictures, ["a red car"] * n, eps=4 / 255, targeted=True)   # pull towards a query
    attacks.success(p, ds, rows, adv, texts, targeted=False)      # did the own caption leave the top 10?
    attacks.substitute_word(p, ds, caption_rows, neighbours)      # the text side: one word swapped

Projected gradient descent (PGD; Madry et al., 2018) on the pixels the image encoder sees: the picture
as ``(3, S, S)`` values in [0, 1] at the encoder's input size ``S``, a perturbation ``delta`` with every
value in ``[-eps, eps]`` (the L-infinity ball; ``eps = 4/255`` is four steps of an 8-bit pixel), ``steps``
signed-gradient steps of size ``alpha``, each followed by the projection back into the ball and into the
valid range [0, 1]. *Untargeted*: lower the cosine between the picture and its own text; *targeted*:
raise the cosine with a chosen query. The gradient flows through the whole CNN and the pipeline's image
tower, so the attack needs a pipeline whose head is a torch module reading pooled features (the trained
towers, e.g. ``mlp+minilm``); other heads are refused by name.

On the text side, :func:`substitute_word` is a greedy one-word attack: every way of replacing one word
of a caption by one of its nearest GloVe neighbours is tried, and the one that pushes the caption's
picture furthest down the ranking is kept (the attack a bag-of-words model is most exposed to; note
that a neighbour need not keep the meaning: GloVe puts "red" next to "blue").

The adversarial pictures stay floating point at the encoder's resolution (rounding them to 8-bit PNGs
would undo part of a 1/255-sized change); :func:`to_pil` turns them into pictures to look at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import ModelError

__all__ = ["pgd", "Adversarial", "attacked_ranks", "success", "feature_shift", "to_pil", "substitute_word"]


@dataclass
class Adversarial:
    """PGD's result: ``pixels`` and ``clean`` ``(n, 3, S, S)`` in [0, 1], the cosines before and after."""

    pixels: np.ndarray
    clean: np.ndarray
    eps: float
    targeted: bool
    score_clean: np.ndarray
    score_adv: np.ndarray

    @property
    def delta(self) -> np.ndarray:
        return self.pixels - self.clean


def _check(p: Any) -> None:
    head = getattr(p, "head", None)
    if getattr(p, "image_input", None) != "features" or not isinstance(head, torch.nn.Module) \
            or not hasattr(head, "image_forward"):
        raise ModelError(f"PGD needs a pipeline with a torch head on pooled features (e.g. 'mlp+minilm'); "
                         f"{getattr(p, 'name', p)!r} has {type(head).__name__} on {getattr(p, 'image_input', '?')}.")


def _pooled(p: Any, x01: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> the CNN's pooled features, differentiably."""
    enc = p.image_encoder
    t = enc.transform
    mean = torch.tensor(t.mean, device=x01.device).view(1, 3, 1, 1)
    std = torch.tensor(t.std, device=x01.device).view(1, 3, 1, 1)
    grid, _ = enc.model(((x01 - mean) / std).contiguous(memory_format=torch.channels_last))
    return grid.mean((2, 3))


def _embed(p: Any, x01: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> the pipeline's unit image vectors, differentiably."""
    return p.head.image_forward(_pooled(p, x01))


def feature_shift(p: Any, adv: Adversarial) -> np.ndarray:
    """``(n, m)``: how far the attack moved each picture's pooled CNN features, in units of each feature's
    training standard deviation (the units of ``JointTrainer(feature_eps=...)``)."""
    _check(p)
    dev = next(p.head.parameters()).device
    with torch.no_grad():
        d = _pooled(p, torch.as_tensor(adv.pixels, device=dev)) - _pooled(p, torch.as_tensor(adv.clean, device=dev))
        return (d / p.head.image.scale).cpu().numpy()


def pgd(p: Any, pictures: Sequence[Any], texts: Sequence[str], *, eps: float = 4 / 255, steps: int = 10,
        alpha: float | None = None, targeted: bool = False, seed: int = 0, batch_size: int = 16) -> Adversarial:
    """PGD against ``p``: picture ``i`` moves away from ``texts[i]`` (or towards it, ``targeted``).

    ``pictures``: PIL images, uint8 arrays or paths (decoded like every picture). ``alpha`` defaults to
    ``2.5 * eps / steps`` (Madry et al.'s rule); the start is a seeded uniform draw inside the ball.
    """
    from .data import load_image, to_rgb

    _check(p)
    if not eps >= 0 or steps < 0 or len(pictures) != len(texts):
        raise ModelError(f"pgd needs eps >= 0, steps >= 0 and one text per picture (got eps={eps}, steps={steps}, "
                         f"{len(pictures)} pictures, {len(texts)} texts).")
    alpha = 2.5 * eps / max(steps, 1) if alpha is None else float(alpha)
    enc = p.image_encoder
    dev = next(p.head.parameters()).device
    ims = [to_rgb(x) if hasattr(x, "convert") else load_image(x) for x in pictures]
    X = torch.stack([enc.transform(im) for im in ims]).float().div(255).to(dev)
    T = torch.as_tensor(np.asarray(p.encode_text(list(texts)), np.float32), device=dev)
    gen = torch.Generator().manual_seed(seed)
    was = p.head.training
    p.head.eval()
    out, before, after = [], [], []
    for i in range(0, len(X), batch_size):
        x, t = X[i:i + batch_size], T[i:i + batch_size]
        delta = ((torch.rand(x.shape, generator=gen) * 2 - 1) * eps).to(dev)
        delta = (x + delta).clamp(0, 1) - x
        for _ in range(steps):
            delta.requires_grad_(True)
            s = (_embed(p, x + delta) * t).sum(1)
            (grad,) = torch.autograd.grad(s.sum() if targeted else -s.sum(), delta)
            with torch.no_grad():  # a step up the objective, then back into the ball and the pixel range
                delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
                delta = (x + delta).clamp(0, 1) - x
        with torch.no_grad():
            before.append((_embed(p, x) * t).sum(1))
            after.append((_embed(p, x + delta) * t).sum(1))
            out.append(x + delta)
    p.head.train(was)
    cat = lambda xs: torch.cat(xs).detach().cpu().numpy()  # noqa: E731
    return Adversarial(cat(out), X.cpu().numpy(), float(eps), bool(targeted), cat(before), cat(after))


def attacked_ranks(p: Any, ds: Any, rows: Sequence[int], adv: Adversarial, texts: Sequence[str], *,
                   split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Per attacked picture (dataset rows ``rows``, in ``split``): its rank for ``texts[i]`` among the
    split's pictures, ``(before, after)`` the attack (1 = first; the other pictures stay clean). Ties
    (identical pictures) go to the attacked picture: a float-rounding difference moves no rank."""
    from .pipelines import split_rows

    _, imgs, _ = split_rows(ds, split)
    where = {int(r): j for j, r in enumerate(imgs)}
    V = np.asarray(p.encode_image(ds, rows=imgs), np.float64)
    T = np.asarray(p.encode_text(list(texts)), np.float64)
    dev = next(p.head.parameters()).device
    was = p.head.training
    p.head.eval()  # no dropout: the tower as it scores
    with torch.no_grad():
        Va = _embed(p, torch.as_tensor(adv.pixels, device=dev)).cpu().numpy().astype(np.float64)
        Vc = _embed(p, torch.as_tensor(adv.clean, device=dev)).cpu().numpy().astype(np.float64)
    p.head.train(was)
    out = np.zeros((2, len(rows)), dtype=np.int64)
    for i, r in enumerate(rows):
        for k, own in enumerate((Vc[i], Va[i])):
            s = T[i] @ V.T
            s[where[int(r)]] = T[i] @ own
            out[k, i] = 1 + int((s > s[where[int(r)]] + 1e-6).sum())
    return out[0], out[1]


def success(p: Any, ds: Any, rows: Sequence[int], adv: Adversarial, texts: Sequence[str], *, k: int = 10,
            split: str = "test") -> np.ndarray:
    """Per attacked picture (see :func:`attacked_ranks`), whether the attack reached its aim against the
    split's whole gallery: untargeted, ``texts[i]`` no longer finds the picture in its top ``k``;
    targeted, the picture now comes first for ``texts[i]``."""
    after = attacked_ranks(p, ds, rows, adv, texts, split=split)[1]
    return after == 1 if adv.targeted else after > k


def to_pil(pixels: np.ndarray) -> list[Any]:
    """``(n, 3, S, S)`` values in [0, 1] -> PIL images (rounded to 8 bits: for looking, not for attacking)."""
    from PIL import Image

    return [Image.fromarray(np.clip(np.rint(x.transpose(1, 2, 0) * 255), 0, 255).astype(np.uint8)) for x in pixels]


def substitute_word(p: Any, ds: Any, caption_rows: Sequence[int], neighbours: Any, *, k: int = 10,
                    split: str = "test") -> list[dict[str, Any]]:
    """The greedy one-word attack on captions ``caption_rows`` (dataset rows, in ``split``).

    ``neighbours``: word -> candidate replacements (e.g. :func:`crosslab.robustness.glove_neighbours`).
    Per caption: ``text``, ``attacked`` (the worst single replacement, or the caption itself if no word
    has a neighbour), ``rank`` and ``attacked_rank`` of its picture among the split's pictures
    (1 = first; the attack keeps the clean caption unless a replacement lowers the picture strictly),
    ``tried`` (how many replacements) and ``success`` (the picture was in the top ``k`` and no longer is).
    """
    import re

    from .evaluation import ranks
    from .pipelines import split_rows
    from .robustness import _text_vectors

    _, imgs, _ = split_rows(ds, split)
    where = {int(r): j for j, r in enumerate(imgs)}
    V = p.encode_image(ds, rows=imgs)
    out = []
    for c in caption_rows:
        text, target = ds.captions[int(c)], where[int(ds.caption_to_image[int(c)])]
        words = text.split()
        cands = [text]
        for j, w in enumerate(words):
            m = re.fullmatch(r"([^A-Za-z]*)([A-Za-z]+)([^A-Za-z]*)", w)
            if m:
                for n in neighbours(m.group(2).lower()):
                    cands.append(" ".join([*words[:j], m.group(1) + n + m.group(3), *words[j + 1:]]))
        r = ranks(np.asarray(p.score(_text_vectors(p, cands), V)), np.full(len(cands), target))[0]
        worst = int(np.argmax(r))  # ties keep the first: the clean caption unless one is strictly worse
        out.append({"row": int(c), "text": text, "attacked": cands[worst], "rank": int(r[0]),
                    "attacked_rank": int(r[worst]), "tried": len(cands) - 1,
                    "success": bool(r[0] <= k < r[worst])})
    return out
