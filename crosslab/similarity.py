"""Pairwise similarity and distance between N queries and M items, as matrix products.

Every metric except Jensen-Shannon is one GEMM plus cheap row / column terms
(the ``similarity`` layer of ``docs/architecture.md``), never an ``(N, M, d)`` broadcast;
:data:`GEMM_FORMS` holds each form once, for :func:`pairwise` and ``search.Index``:

==================  ====================================================  =========
metric              formula for rows ``a`` (queries) and ``b`` (items)     better is
==================  ====================================================  =========
``dot``             ``a . b``                                              higher
``cosine``          ``a . b / (|a| |b|)``; cosine 0 if |a| or |b| < 1e-12  higher
``euclidean``       ``sqrt(max(|a|^2 + |b|^2 - 2 a . b, 0))``               lower
``neg_euclidean``   ``-euclidean`` (a score for ranking)                   higher
``kl``              ``KL(p || q) = sum p log p - p . log q``               lower
``js``              ``JS(p, q) = KL(p || m)/2 + KL(q || m)/2, m=(p+q)/2``   lower
==================  ====================================================  =========

For ``kl`` and ``js`` rows are first turned into probability distributions with
a softmax at a temperature: ``p = softmax(a / temperature)`` for the query and
``q = softmax(b / temperature)`` for the item. KL is *directed*: it measures how
badly the item's distribution ``q`` explains the query's ``p`` (``KL(p_query || q_item)``).
JS is symmetric and bounded by ``log 2``. JS has no matrix-product form (the
log of the mixture ``m`` does not split into row and column terms), so it is
computed in tiles whose ``(n, m, d)`` block fits the memory budget.

Memory: the output ``(N, M)`` is unavoidable; *on top of it* the work is done
in chunks of query rows so that the extra memory (the GEMM block and its
temporaries, plus the prepared copy of ``B``) stays near ``memory_budget``
bytes (default 256 MiB) whatever ``N`` is. ``chunk_size`` forces the number of
query rows per chunk.

Inputs: NumPy arrays or torch tensors of shape ``(N, d)`` and ``(M, d)``.
NumPy in -> NumPy out (computed with torch on the CPU); torch in -> torch out on
the inputs' device (CPU, CUDA, MPS). ``float16`` / ``bfloat16`` inputs are
computed in float32 (half-precision sums lose too much) and the result is float32;
``float64`` stays float64. NaN or infinite values, mismatched widths, ``d == 0``
and non-2-D inputs raise :class:`~crosslab.errors.ShapeError`; empty inputs
(``N == 0`` or ``M == 0``) give an empty ``(N, M)`` result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ShapeError

METRICS = ("cosine", "dot", "euclidean", "neg_euclidean", "kl", "js")
#: For each metric, whether a larger value means "more similar".
HIGHER_IS_BETTER = {
    "cosine": True, "dot": True, "neg_euclidean": True,
    "euclidean": False, "kl": False, "js": False,
}
#: Extra memory (bytes) pairwise() aims to stay under, beyond its output.
DEFAULT_MEMORY_BUDGET = 256 * 2**20
_EPS = 1e-12

Array = np.ndarray | torch.Tensor


def as_tensor(x: Array, name: str = "input", *, check_finite: bool = True) -> torch.Tensor:
    """Validate a ``(N, d)`` float matrix and return it as a torch tensor (float32 unless float64)."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "fiub":
            raise ShapeError(f"{name} has dtype {x.dtype}; pass a numeric (float) array.")
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        raise ShapeError(f"{name} must be a NumPy array or a torch tensor, got {type(x).__name__}.")
    if t.ndim != 2:
        raise ShapeError(f"{name} must be 2-D (rows x features), got shape {tuple(t.shape)}.")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    if check_finite and t.numel() and not bool(torch.isfinite(t).all()):
        raise ShapeError(
            f"{name} contains NaN or infinite values; clean or re-compute the features "
            "(e.g. check for empty captions or failed images) before comparing them."
        )
    return t


def _prepare(A: Array, B: Array) -> tuple[torch.Tensor, torch.Tensor, bool]:
    numpy_out = not isinstance(A, torch.Tensor) and not isinstance(B, torch.Tensor)
    a, b = as_tensor(A, "queries A"), as_tensor(B, "items B")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(
            f"queries have {a.shape[1]} features but items have {b.shape[1]}; both sides must "
            "live in the same space (embed them with the same model first)."
        )
    if a.shape[1] == 0:
        raise ShapeError("inputs have 0 features (d == 0); there is nothing to compare.")
    if isinstance(A, torch.Tensor) and isinstance(B, torch.Tensor) and A.device != B.device:
        raise ShapeError(f"queries are on {A.device} but items on {B.device}; move them together.")
    dev = A.device if isinstance(A, torch.Tensor) else (B.device if isinstance(B, torch.Tensor) else a.device)
    dtype = torch.promote_types(a.dtype, b.dtype)
    return a.to(dev, dtype), b.to(dev, dtype), numpy_out


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to length 1; rows shorter than 1e-12 become exact zeros (cosine 0 with anything)."""
    n = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    return torch.where(n >= _EPS, x / n.clamp(min=_EPS), torch.zeros((), dtype=x.dtype, device=x.device))


def check_metric(metric: str) -> str:
    """Return ``metric`` if known, else raise ShapeError listing the choices."""
    if metric not in METRICS:
        raise ShapeError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
    return metric


def _rows_per_chunk(m: int, d: int, itemsize: int, metric: str, budget: int) -> int:
    # Temporaries per query row: about 3 floats per item for the GEMM path (the block
    # is written straight into the output; normalised / softmaxed query rows are small).
    # JS tiles items as well, see _fill_js.
    per_row = 3 * max(m, 1) * itemsize
    return max(1, budget // per_row)


def pairwise(
    A: Array,
    B: Array,
    metric: str = "cosine",
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Array:
    """All pairwise values ``metric(A[i], B[j])`` as an ``(N, M)`` matrix.

    Args:
        A: ``(N, d)`` queries. B: ``(M, d)`` items (NumPy or torch, same device).
        metric: one of :data:`METRICS` (see the module docstring for formulas and directions).
        temperature: softmax temperature for ``kl`` / ``js`` (ignored otherwise), > 0.
        chunk_size: query rows per chunk (default: chosen from ``memory_budget``).
        memory_budget: bytes of temporaries allowed beyond the ``(N, M)`` output.

    Returns:
        ``(N, M)`` matrix of the same kind as the inputs (NumPy if both are NumPy).
    """
    check_metric(metric)
    if not (isinstance(temperature, int | float) and math.isfinite(temperature) and temperature > 0):
        raise ShapeError(f"temperature must be a positive number, got {temperature!r}.")
    if chunk_size is not None and chunk_size < 1:
        raise ShapeError(f"chunk_size must be >= 1, got {chunk_size}.")
    a, b, numpy_out = _prepare(A, B)
    n, m, d = a.shape[0], b.shape[0], a.shape[1]
    out = torch.empty((n, m), dtype=a.dtype, device=a.device)
    if n and m:
        rows = chunk_size or _rows_per_chunk(m, d, a.element_size(), metric, memory_budget)
        with torch.no_grad():
            _fill(out, a, b, metric, temperature, rows, memory_budget)
    return out.cpu().numpy() if numpy_out else out


def scores(A: Array, B: Array, metric: str = "cosine", **kwargs) -> Array:
    """Like :func:`pairwise` but always "higher = more similar" (distances are negated)."""
    s = pairwise(A, B, metric, **kwargs)
    return s if HIGHER_IS_BETTER[metric] else -s


# ----------------------------------------------------------------------------- GEMM forms
@dataclass(frozen=True)
class GemmForm:
    """One metric written as a matrix product: ``rank score = a' . b' + col(b)``, higher is better.

    The single definition of each metric's matrix-product form, shared by
    :func:`pairwise` and :class:`crosslab.search.Index`, so that the index ranks
    with the same arithmetic as the values ``pairwise`` reports (only the GEMM's
    tiling differs). Terms that depend only on the
    query (``|a|^2``, the entropy of ``p``) do not change a query's ranking: they
    are left out of the rank score and put back by ``to_metric``.

    * ``prepare_queries(a, temperature) -> a'``: once per batch of query rows.
    * ``prepare_items(b, temperature) -> (b', col)``: once per set of items; ``col``
      is an ``(M,)`` term added to every row of the GEMM, or ``None``.
    * ``to_metric(s, a, temperature)``: turns rank scores ``s`` (any columns) of the
      raw queries ``a`` into the metric's values, *in place* (``s`` is overwritten
      and returned). It is monotone in ``s``, so the best rank scores are the best values.
    """

    prepare_queries: Callable[[torch.Tensor, float], torch.Tensor]
    prepare_items: Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor | None]]
    to_metric: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def _as_is(x: torch.Tensor, temperature: float) -> torch.Tensor:
    return x


def _score_is_value(s: torch.Tensor, a: torch.Tensor, temperature: float) -> torch.Tensor:
    return s


def _sq_items(b: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    # -|a - b|^2 / 2 = a . b - |b|^2 / 2 - |a|^2 / 2; the last term is the query's own.
    return b, -(b * b).sum(1) / 2


def _euclidean(s: torch.Tensor, a: torch.Tensor, temperature: float) -> torch.Tensor:
    # |a|^2 - 2 s = |a - b|^2, clamped at 0 against rounding, then sqrt.
    return s.mul_(-2).add_((a * a).sum(1, keepdim=True)).clamp_(min=0).sqrt_()


def _kl(s: torch.Tensor, a: torch.Tensor, temperature: float) -> torch.Tensor:
    # KL(p || q) = sum p log p - p . log q, and s = p . log q.
    logp = torch.log_softmax(a / temperature, dim=1)
    return s.neg_().add_((logp.exp() * logp).sum(1, keepdim=True)).clamp_(min=0)


#: The matrix-product form of every metric but ``js`` (which has none).
GEMM_FORMS: dict[str, GemmForm] = {
    "dot": GemmForm(_as_is, lambda b, t: (b, None), _score_is_value),
    "cosine": GemmForm(lambda a, t: unit_rows(a), lambda b, t: (unit_rows(b), None), _score_is_value),
    "euclidean": GemmForm(_as_is, _sq_items, _euclidean),
    "neg_euclidean": GemmForm(_as_is, _sq_items, lambda s, a, t: _euclidean(s, a, t).neg_()),
    # p = softmax(a / t) against log q = log_softmax(b / t): s = p . log q = -KL - H(p).
    "kl": GemmForm(
        lambda a, t: torch.log_softmax(a / t, dim=1).exp(),  # as _kl computes p: the same rounding
        lambda b, t: (torch.log_softmax(b / t, dim=1), None),
        _kl,
    ),
}


def _fill(out, a, b, metric, temperature, rows, budget) -> None:
    if metric == "js":
        _fill_js(out, a, b, temperature, rows, budget)
        return
    form = GEMM_FORMS[metric]
    b_, col = form.prepare_items(b, temperature)  # once: (M, d) and a column term
    bt = b_.T
    for i in range(0, a.shape[0], rows):
        ai, o = a[i : i + rows], out[i : i + rows]
        torch.mm(form.prepare_queries(ai, temperature), bt, out=o)
        if col is not None:
            o.add_(col)
        form.to_metric(o, ai, temperature)  # in place, in the output


def _fill_js(out, a, b, temperature, rows, budget) -> None:
    # JS(p, q) = H(m) - (H(p) + H(q)) / 2 with m = (p + q) / 2: the mixture's entropy
    # needs every (i, j, k) triple, so tile both sides to keep (n, m, d) within budget.
    d, itemsize = a.shape[1], a.element_size()
    logq = torch.log_softmax(b / temperature, dim=1)
    q = logq.exp()
    hq = -(q * logq).sum(1)
    tile = max(1, int(math.sqrt(budget / (4 * d * itemsize))))
    step = min(rows, tile)  # query rows per block: the chunk, and within the budget
    for i in range(0, a.shape[0], step):
        logp = torch.log_softmax(a[i : i + step] / temperature, dim=1)
        p = logp.exp()
        hp = -(p * logp).sum(1)
        n_i = p.shape[0]
        for j in range(0, b.shape[0], tile):
            mix = (p[:, None, :] + q[None, j : j + tile, :]) / 2
            hm = -torch.special.xlogy(mix, mix).sum(2)
            js = hm - (hp[:, None] + hq[None, j : j + tile]) / 2
            out[i : i + n_i, j : j + tile] = js.clamp_(0, math.log(2))
