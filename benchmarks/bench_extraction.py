"""Image feature extraction: the full pipeline against the model alone, and the input-size trade-off.

    python -m benchmarks.bench_extraction [--quick] [--device cpu|cuda]

*Pipeline* = ``ImageEncoder.extract`` (decode PNG -> RGB -> resize/crop -> batch ->
normalise -> CNN -> pooled features + logits), cache off. *Model only* = the same
forward pass over tensors decoded and transformed beforehand. The overhead is
``pipeline time / model time - 1``; goal <= 20 %. Both are timed in the same process,
interleaved (model, pipeline, model, pipeline, ...); the headline overhead is the ratio of
the medians, and the goal is judged by ``benchmarks._harness.judge`` on the per-round
ratios (pipeline / model of the same round): met only when their upper quartile is
<= 1.2, over ``JUDGE_MIN_REPEATS`` rounds of the configuration ``extract`` picks by
default (full mode; quick mode judges nothing).

Full mode also extracts the whole clip-art set at several input sizes and fits a
linear probe (logistic regression on the top-level drawing category, train split
-> test split) to show what each size buys, and times a warm cache load
``JUDGE_MIN_REPEATS`` times (goal <= 2 s, judged the same way).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import torch

try:  # as part of the benchmarks package (make bench) or run as a module
    from . import _harness
except ImportError:  # pragma: no cover - run as a plain script: benchmarks/ is on sys.path
    import _harness  # type: ignore[no-redef]

from crosslab import image as I
from crosslab.device import describe, get_device


def _dataset(quick: bool):
    """The clip-art set, or synthetic scenes when the clip art is not installed."""
    import crosslab.data as D

    try:
        return D.load_clipart(), "clipart"
    except Exception:  # noqa: BLE001 - any failure: fall back to data that needs no files
        return D.make_scenes(300 if quick else 3000, seed=0), "scenes"


def pipeline_vs_model(enc: I.ImageEncoder, ds, batch_size: int, repeats: int, workers: int = 0) -> dict:
    """Images/s of ``extract`` (cache off) and of the forward pass alone on pre-decoded tensors."""
    n = len(ds)
    pre = torch.stack([enc.transform(ds.load_image(i)) for i in range(n)])  # uint8 (n, 3, S, S)

    @torch.inference_mode()
    def model_only():
        for s in range(0, n, batch_size):
            enc._forward(pre[s : s + batch_size])

    def pipeline():
        enc.extract(ds, batch_size=batch_size, num_workers=workers, cache=False, progress=False)

    # Interleave so both see the same machine load; medians over the repeats. CPU time
    # (process_time, all threads) is reported too: on a shared machine it is far less
    # disturbed by other processes than wall time.
    wall: dict[str, list[float]] = {"model": [], "pipeline": []}
    cpu: dict[str, list[float]] = {"model": [], "pipeline": []}
    model_only()  # warm-up (allocator, oneDNN primitive caches)
    for _ in range(repeats):
        for key, fn in (("model", model_only), ("pipeline", pipeline)):
            _sync(enc.device)
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            _sync(enc.device)
            wall[key].append(time.perf_counter() - w0)
            cpu[key].append(time.process_time() - c0)
    m, p = statistics.median(wall["model"]), statistics.median(wall["pipeline"])
    ratios = [pw / mw for pw, mw in zip(wall["pipeline"], wall["model"], strict=True)]
    spread = _harness.spread([r - 1 for r in ratios])
    mc, pc = statistics.median(cpu["model"]), statistics.median(cpu["pipeline"])
    return {
        "encoder": enc.name, "device": str(enc.device), "image_size": enc.image_size, "n_images": n,
        "batch_size": batch_size, "num_workers": workers, "repeats": repeats,
        "model_img_s": round(n / m, 1), "pipeline_img_s": round(n / p, 1),
        "overhead": round(p / m - 1, 3),
        "overhead_q1": round(spread["q1"], 3), "overhead_median": round(spread["median"], 3),
        "overhead_q3": round(spread["q3"], 3),
        "ratio_per_repeat": ratios,  # pipeline / model, round by round (what the goal is judged on)
        "model_cpu_ms_img": round(mc / n * 1e3, 2), "pipeline_cpu_ms_img": round(pc / n * 1e3, 2),
        "overhead_cpu": round(pc / mc - 1, 3) if workers == 0 else None,  # workers' CPU is not ours
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def size_tradeoff(ds, sizes: tuple[int, ...], device: torch.device, batch_size: int = 32) -> list[dict]:
    """Extraction speed and linear-probe category accuracy (train -> test split) per input size."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    if ds.meta and "category" in ds.meta[0]:
        # train: the first 1000 train images; test: the whole test split (562 for the clip art)
        idx = np.r_[np.flatnonzero(ds.split == "train")[:1000], np.flatnonzero(ds.split == "test")]
        ds = ds.select(idx, name=f"{ds.name}-probe")
        labels = np.array([m["category"] for m in ds.meta])
    else:
        labels = None
    rows = []
    for size in sizes:
        enc = I.ImageEncoder(image_size=size, device=device)
        c0, t0 = time.process_time(), time.perf_counter()
        X = enc.extract(ds, batch_size=batch_size, cache=False, progress=False)
        _sync(device)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        row: dict[str, Any] = {"image_size": size, "n_images": len(ds), "seconds": round(dt, 1),
                               "img_s": round(len(ds) / dt, 1), "cpu_ms_img": round(cpu / len(ds) * 1e3, 2)}
        if labels is not None:
            tr, te = ds.split == "train", ds.split == "test"
            sc = StandardScaler().fit(X[tr])
            clf = LogisticRegression(C=0.05, max_iter=2000).fit(sc.transform(X[tr]), labels[tr])
            pred = clf.predict(sc.transform(X[te]))
            row["probe_acc"] = round(float((pred == labels[te]).mean()), 3)
            row["probe_bal_acc"] = round(float(balanced_accuracy_score(labels[te], pred)), 3)
        rows.append(row)
    return rows


def cache_roundtrip(ds, device: torch.device, repeats: int = _harness.JUDGE_MIN_REPEATS) -> dict:
    """Cold extraction of the whole set into an empty cache, then ``repeats`` warm loads (fresh encoders)."""
    old = os.environ.get("CROSSLAB_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CROSSLAB_CACHE"] = tmp
        try:
            enc = I.ImageEncoder(device=device)
            t0 = time.perf_counter()
            enc.extract(ds, progress=False)
            cold = time.perf_counter() - t0
            warm = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                enc2 = I.ImageEncoder(device=device)  # a new notebook session: build + hash + load
                enc2.extract(ds, progress=False)
                warm.append(time.perf_counter() - t0)
                assert enc2.last_cache_info_ is not None and enc2.last_cache_info_.hit
            size_mb = enc2.last_cache_info_.path.stat().st_size / 2**20
        finally:
            if old is None:
                os.environ.pop("CROSSLAB_CACHE", None)
            else:
                os.environ["CROSSLAB_CACHE"] = old
    judged = _harness.judge(warm, 2.0, better="lower")
    return {"n_images": len(ds), "cold_s": round(cold, 1), "warm_load_s": round(statistics.median(warm), 2),
            "warm_load_q3_s": round(judged["q3"], 2), "warm_load_repeats": len(warm), "warm_load_samples_s": warm,
            "cache_file_mb": round(size_mb, 1), "warm_goal_met": judged["met"]}


def run(quick: bool, device: str | torch.device | None = None) -> dict[str, Any]:
    """Measure extraction throughput (and, in full mode, the size trade-off and cache timings)."""
    dev = get_device(device) if device is not None else torch.device("cpu")
    ds, name = _dataset(quick)
    n = 64 if quick else 512
    sub = ds.select(np.arange(min(n, len(ds))), name=f"{name}-bench")
    enc = I.ImageEncoder(device=dev)
    out: dict[str, Any] = {
        "dataset": f"{name} ({len(ds)} images, native {ds.load_image(0).size[0]} px)",
        "device": describe(dev),
        "torch_threads": torch.get_num_threads(),
        "machine": _harness.machine_info([dev]),
        "note": "pipeline = decode + transform + model (extract, cache off); model = forward on "
                "pre-decoded uint8 tensors; overhead = pipeline/model - 1 (goal <= 0.2, judged on the "
                "upper quartile of the per-round ratios of the default configuration)",
    }
    # Headline: the configuration extract() picks by default for a job this size; it gets
    # the repeats a judged goal needs, the other configuration fewer.
    auto = I._auto_workers(len(sub))
    configs = [0] if quick else [0, 2]
    head_workers = auto if auto in configs else configs[0]
    rows = [pipeline_vs_model(enc, sub, 32, 1 if quick else (_harness.JUDGE_MIN_REPEATS if w == head_workers else 3),
                              workers=w) for w in configs]
    out["pipeline_vs_model"] = rows
    head = next(r for r in rows if r["num_workers"] == head_workers)
    out["default_num_workers"] = head["num_workers"]
    out["overhead"] = head["overhead"]
    out["overhead_cpu"] = rows[0]["overhead_cpu"]
    out["overhead_judgement"] = _harness.judge(head["ratio_per_repeat"], 1.2, better="lower", quick=quick)
    out["overhead_goal_met"] = out["overhead_judgement"]["met"]
    if not quick:
        out["size_tradeoff"] = size_tradeoff(ds, (128, 160, 224), dev)
        out["cache"] = cache_roundtrip(ds, dev)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    res = run(args.quick, args.device)
    res.pop("machine", None)
    print(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
