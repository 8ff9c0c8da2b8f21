"""Pairwise metrics at 10k x 10k, d=256: crosslab's matrix-product forms vs the naive broadcast.

The naive formulation builds the ``(n, M, d)`` difference/product tensor and reduces it over
``d``. Unchunked, 10k x 10k x 256 float32 is 100 GiB, so the naive code is chunked over
query rows (a block of ``NAIVE_BLOCK_BYTES``) just to run at all. Where a full run would
take longer than the case's time budget, it is timed on the first rows only and scaled by
``N / rows`` -- both formulations cost the same per query row, so the scaling is exact up to
noise; the report says so on every row where it happened. Max absolute difference is taken
over the rows both sides computed.

Peak memory: see :class:`benchmarks._harness.PeakMemory` (RSS sampling on CPU, torch's
allocator statistics on CUDA). The ``(N, M)`` output itself is listed separately.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from ._harness import PeakMemory, sync, timeit

FULL = {"n": 10_000, "m": 10_000, "d": 256, "temperature": 1.0}
QUICK = {"n": 64, "m": 48, "d": 16, "temperature": 1.0}
METRICS = ("cosine", "euclidean", "kl", "js")
NAIVE_BLOCK_BYTES = 256 * 2**20  # the (rows, M, d) broadcast block of the naive code
CASE_BUDGET_S = 60.0  # a full-size run projected above this is timed on a row subset
PROBE_ROWS = 100


def naive(metric: str, a: torch.Tensor, b: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The textbook broadcast of one metric: ``(n, d)`` x ``(M, d)`` -> ``(n, M)`` via ``(n, M, d)``."""
    if metric == "cosine":
        dots = (a[:, None, :] * b[None, :, :]).sum(-1)
        return dots / (a.norm(dim=1)[:, None] * b.norm(dim=1)[None, :]).clamp_min(1e-12)
    if metric == "euclidean":
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1).sqrt()
    p = torch.softmax(a / temperature, dim=1)[:, None, :]
    q = torch.softmax(b / temperature, dim=1)[None, :, :]
    if metric == "kl":
        return (p * (p.log() - q.log())).sum(-1)
    if metric == "js":
        m = (p + q) / 2
        return 0.5 * (p * (p.log() - m.log())).sum(-1) + 0.5 * (q * (q.log() - m.log())).sum(-1)
    raise ValueError(metric)


def naive_chunked(metric: str, a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """:func:`naive` over blocks of query rows so each ``(rows, M, d)`` block fits NAIVE_BLOCK_BYTES."""
    rows = max(1, NAIVE_BLOCK_BYTES // (b.shape[0] * b.shape[1] * b.element_size()))
    return torch.cat([naive(metric, a[i : i + rows], b, temperature) for i in range(0, a.shape[0], rows)])


def _crosslab_fn(metric: str, temperature: float) -> Callable:
    from crosslab.similarity import pairwise

    kw = {"temperature": temperature} if metric in ("kl", "js") else {}
    return lambda a, b: pairwise(a, b, metric, **kw)


def _measure(fn: Callable, a, b, n_full: int, device, repeats: int, quick: bool) -> dict[str, Any]:
    """Time ``fn(a[:rows], b)``: all rows if the projected time fits the budget, else a subset."""
    rows = a.shape[0]
    if not quick:
        t0 = time.perf_counter()
        fn(a[:PROBE_ROWS], b)
        sync(device)
        projected = (time.perf_counter() - t0) * n_full / PROBE_ROWS
        if projected > CASE_BUDGET_S:
            rows = max(PROBE_ROWS, int(n_full * CASE_BUDGET_S / 3 / projected))
    part = a[:rows]
    with PeakMemory(device) as mem:  # also the warm-up of the full-size timing below
        sync(device)
        t0 = time.perf_counter()
        out = fn(part, b)
        sync(device)
        first_s = time.perf_counter() - t0
    if rows == n_full:
        t = timeit(lambda: fn(part, b), repeats, device=device, budget_s=CASE_BUDGET_S / 2,
                   warmup=False)
    else:  # a subset run is already long (~CASE_BUDGET_S / 3): its one run is the figure
        t = {"median_s": first_s, "repeats": 1}
    scale = n_full / rows
    return {
        "rows_timed": rows, "scaled_by": scale, "median_s": t["median_s"] * scale,
        "median_s_measured": t["median_s"], "repeats": t["repeats"],
        "peak_mem_mb": mem.peak_bytes / 2**20, "mem_method": mem.method, "out": out,
    }


def run(
    quick: bool = False,
    devices: list[torch.device] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time crosslab's pairwise() and the naive broadcast per metric and device.

    Returns ``{"config", "rows": [...], "notes": [...]}``; each row has metric, device, n, m, d,
    crosslab / naive (median_s, repeats, rows_timed, scaled_by, peak_mem_mb), speedup,
    ratio_to_cosine (crosslab time / crosslab cosine time) and max_abs_diff.
    """
    cfg = QUICK if quick else FULL
    devices = devices or [torch.device("cpu")]
    n, m, d, tau = cfg["n"], cfg["m"], cfg["d"], cfg["temperature"]
    g = torch.Generator().manual_seed(1)
    a_cpu, b_cpu = torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)
    rows: list[dict[str, Any]] = []
    notes = [
        f"naive = the (rows, M, d) broadcast, chunked over query rows in blocks of "
        f"{NAIVE_BLOCK_BYTES >> 20} MiB (unchunked it would need {n * m * d * 4 / 2**30:.1f} GiB).",
        f"inputs: standard normal rows; kl/js use softmax(x / {tau}).",
        f"output (N, M) float32 = {n * m * 4 / 2**20:.0f} MiB, included in peak memory.",
    ]
    for device in devices:
        a, b = a_cpu.to(device), b_cpu.to(device)
        cosine_s = None
        for metric in METRICS:
            row: dict[str, Any] = {"metric": metric, "device": str(device), "n": n, "m": m, "d": d}
            try:
                cl_fn = _crosslab_fn(metric, tau)
            except ImportError as e:
                row["note"] = f"crosslab.similarity not available: {e}"
                rows.append(row)
                continue
            cl = _measure(cl_fn, a, b, n, device, 1 if quick else 3, quick)
            nv = _measure(lambda x, y, mt=metric: naive_chunked(mt, x, y, tau), a, b, n, device, 1, quick)
            k = min(cl["rows_timed"], nv["rows_timed"])
            row["max_abs_diff"] = float((cl["out"][:k].double() - nv["out"][:k].double()).abs().max())
            for side in (cl, nv):
                side.pop("out")
            row["crosslab"], row["naive"] = cl, nv
            row["speedup_vs_naive"] = nv["median_s"] / cl["median_s"]
            if metric == "cosine":
                cosine_s = cl["median_s"]
            row["ratio_to_cosine"] = cl["median_s"] / cosine_s if cosine_s else None
            log(f"  pairwise {metric:9s} on {device}: crosslab {cl['median_s']:.2f}s, "
                f"naive {nv['median_s']:.1f}s (rows timed {nv['rows_timed']}), "
                f"max|diff| {row['max_abs_diff']:.2e}")
            rows.append(row)
    return {"config": cfg, "rows": rows, "notes": notes}
