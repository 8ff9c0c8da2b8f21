"""Image extraction in one process against Ray Data on the same machine (crosslab.distributed).

    python -m benchmarks.bench_ray [--quick]

The same files (512 clip-art PNGs), encoder (efficientnet_lite0 at its 160 px) and batch
size (32), cache off. *Single process* = ``ImageEncoder.extract`` as a learner calls it
(2 decoding workers from 256 images, torch's default threads). *Ray local* =
``crosslab.distributed.image_features_ray`` on a Ray started on this machine with all its
cores: one actor per core, each decoding its batches and running its own CNN on one thread.

Throughput is images/s once running. One process: from the arrival of a call's first batch
to its last, rows after the first batch (timed through extract()'s own loop, ``_batches`` ->
``_forward``, checked against ``extract``). Ray: from the first batch any actor starts to
the last one any actor finishes, every row (stamped in the actors by a subclass of crosslab's
stage; an actor that starts late counts against Ray). Start-up is stated apart, not counted:
``ray.init`` (once per session) and, per call, the time before the steady phase (Ray:
starting the actors and loading a CNN in each; one process: its decoding workers and first
batch); whole calls are reported too. Rounds are interleaved (single, Ray); the goal "Ray
local ≥ 0.8× single-process throughput" is judged by ``_harness.judge`` on the per-round
ratios (met when their lower quartile is ≥ 0.8) over ``JUDGE_MIN_REPEATS`` rounds. Features
must be identical (max absolute difference reported). On a busy machine the one process
suffers more than Ray (its two OpenMP threads wait for each other when a core is taken away;
each actor has one thread), so the rounds where it ran within 10 % of its best are listed
apart, with the load average. Quick mode extracts 16 files in one process and skips Ray:
its start-up alone takes 10-30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

try:  # as part of the benchmarks package (make bench) or run as a module
    from . import _harness
except ImportError:  # pragma: no cover - run as a plain script: benchmarks/ is on sys.path
    import _harness  # type: ignore[no-redef]

GOAL = 0.8  #: Ray local's net throughput over the single process's, per round


def _files(n: int, tmp: str) -> tuple[list[str], str]:
    """``n`` clip-art PNG paths, or synthetic scenes written as PNGs when the clip art is missing."""
    import crosslab.data as D

    try:
        ds = D.load_clipart()
        return [str(Path(ds.root) / p) for p in ds.images[:n]], f"{min(n, len(ds))} clip-art PNGs"
    except Exception:  # noqa: BLE001 - any failure: fall back to data that needs no files
        from PIL import Image

        ds = D.make_scenes(n, seed=0)
        paths = [f"{tmp}/scene{i:04d}.png" for i in range(n)]
        for i, p in enumerate(paths):
            Image.fromarray(ds.images[i]).save(p)
        return paths, f"{n} synthetic scenes (PNG)"


def _timed_stage() -> type:
    """crosslab's Ray stage, stamping each batch with its start and end (wall clock, shared by the
    processes of one machine). Made here so it travels to the actors by value."""
    from crosslab.distributed import _RayEncoder

    class TimedRayEncoder(_RayEncoder):
        def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            t0 = time.time()
            out = super().__call__(batch)
            n = len(batch["path"])
            return out | {"t0": np.full(n, t0), "t1": np.full(n, time.time())}

    return TimedRayEncoder


def _steady(arrivals: list[tuple[float, int]], skip: int) -> float:
    """Images/s once running: rows after the first ``skip`` batches over the time from the first
    batch's arrival to the last's (conservative: batches computed alongside the first are not counted)."""
    rows = sum(r for _, r in arrivals[skip:])
    return rows / (arrivals[-1][0] - arrivals[0][0]) if rows else float("nan")


def run(quick: bool = False, log: Any = print) -> dict[str, Any]:
    """Images/s of single-process and Ray-local extraction on the same files (full mode), judged."""
    import torch

    from crosslab import distributed as dist
    from crosslab.image import ImageEncoder, _auto_workers

    with tempfile.TemporaryDirectory(prefix="crosslab-bench-ray-") as tmp:
        paths, what = _files(16 if quick else 512, tmp)
        n, bs = len(paths), 4 if quick else 32
        enc = ImageEncoder(device="cpu")
        ref = enc.extract(paths, batch_size=bs, cache=False, progress=False)  # also the warm-up
        out: dict[str, Any] = {
            "files": what, "n_images": n, "encoder": enc.name, "image_size": enc.image_size, "batch_size": bs,
            "single_process": {"num_workers": _auto_workers(n), "torch_threads": torch.get_num_threads()},
        }

        @torch.inference_mode()
        def single() -> tuple[np.ndarray, list[tuple[float, int]]]:
            """extract()'s own loop (_batches -> _forward -> mean), with each batch's arrival time."""
            y, arrivals = np.empty_like(ref), []
            for idx, x in enc._batches(paths, bs, None, False, ""):
                y[idx.numpy()] = enc._forward(x)[0].mean((2, 3)).float().numpy()
                arrivals.append((time.perf_counter(), len(idx)))
            return y, arrivals

        def ray_local() -> tuple[np.ndarray, list[tuple[float, int]]]:
            """The call; "arrivals" here are the actors' batch start (first) and end (last) times."""
            parts, t0, t1 = [], [], []
            for b in dist._ray_stream(ray, paths, enc.arch, enc.image_size, "features", bs, n, None, 1, 0,
                                      stage=stage):
                parts.append(np.asarray(b["vector"], np.float32))
                t0, t1 = [*t0, *b["t0"]], [*t1, *b["t1"]]
            shift = time.perf_counter() - time.time()  # actors stamp wall-clock time
            return np.concatenate(parts), [(min(t0) + shift, 0), (max(t1) + shift, n)]

        if quick:
            t0 = time.perf_counter()
            y, arr = single()
            out["single_process"] |= {"call_s": round(time.perf_counter() - t0, 2), "img_s": round(_steady(arr, 1), 1)}
            out["max_abs_diff_single_vs_extract"] = float(np.abs(y - ref).max())
            out["ray"] = {"status": "not measured in quick mode: Ray's start-up alone takes 10-30 s on 2 cores"}
            out["judgement"] = _harness.judge([], GOAL, quick=True)
            return out
        try:
            import ray
        except ImportError:
            out["ray"] = {"status": 'not measured: ray is not installed (pip install "ray[data]")'}
            return out
        rounds = _harness.JUDGE_MIN_REPEATS
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        with dist._ray_session(None):
            init_s = time.perf_counter() - t0
            actors = int(ray.cluster_resources().get("CPU", 1))
            stage = _timed_stage()
            t0 = time.perf_counter()
            got, _ = ray_local()  # warm-up: the first actors ever started on this Ray
            first_s = time.perf_counter() - t0
            log(f"ray: init {init_s:.1f} s, first call {first_s:.1f} s ({actors} actors); {rounds} rounds")
            diff = float(np.abs(got - ref).max())
            s: dict[str, dict[str, list[float]]] = {k: {"img_s": [], "call_s": [], "startup_s": []}
                                                    for k in ("single", "ray")}
            for r in range(rounds):
                for key, fn, skip in (("single", single, 1), ("ray", ray_local, 0)):
                    t0 = time.perf_counter()
                    y, arr = fn()
                    s[key]["call_s"].append(arr[-1][0] - t0)
                    s[key]["startup_s"].append(arr[0][0] - t0)
                    s[key]["img_s"].append(_steady(arr, skip))
                    diff = max(diff, float(np.abs(y - ref).max()))
                log(f"ray round {r + 1}/{rounds}: single {s['single']['img_s'][-1]:.1f} img/s, ray "
                    f"{s['ray']['img_s'][-1]:.1f} img/s (+{s['ray']['startup_s'][-1]:.1f} s start-up)")
    med = statistics.median
    for key, d in (("single_process", s["single"]), ("ray", s["ray"])):
        out[key] = {**out.get(key, {}), "img_s": round(med(d["img_s"]), 1),
                    "first_batch_s": round(med(d["startup_s"]), 2), "call_s": round(med(d["call_s"]), 2),
                    "call_img_s": round(n / med(d["call_s"]), 1), "samples_img_s": d["img_s"],
                    "samples_call_s": d["call_s"]}
    out["ray"] |= {"status": "measured", "actors": actors, "cpus_per_actor": 1, "init_s": round(init_s, 1),
                   "first_call_s": round(first_s, 1)}
    ratios = [r / x for r, x in zip(s["ray"]["img_s"], s["single"]["img_s"], strict=True)]
    calls = [x / r for r, x in zip(s["ray"]["call_s"], s["single"]["call_s"], strict=True)]
    out["ratio"] = round(med(ratios), 3)
    out["ratio_per_repeat"] = ratios  # Ray / single images/s, round by round: what the goal is judged on
    out["ratio_spread"] = _harness.spread(ratios)
    out["call_ratio_spread"] = _harness.spread(calls)  # whole calls, start-up included
    out["judgement"] = _harness.judge(ratios, GOAL)
    out["goal_met"] = out["judgement"]["met"]
    out["max_abs_diff"] = diff
    # Contention: on a busy machine one process's two OpenMP threads wait for each other whenever a
    # core is taken away, Ray's one-thread actors do not; so the rounds where the one process ran
    # near its best speed are listed apart (a rule fixed before looking at the ratios).
    best = max(s["single"]["img_s"])
    quiet = [i for i, v in enumerate(s["single"]["img_s"]) if v >= 0.9 * best]
    out["quiet_rounds"] = {"rule": "rounds where the one process ran within 10 % of its best round",
                           "rounds": quiet, "ratios": [ratios[i] for i in quiet]}
    out["load_avg_1min"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    out["note"] = ("img_s = images/s once running (one process: first to last batch arrival, rows after the "
                   "first; Ray: first batch started to last finished in the actors, all rows); first_batch_s = "
                   "start-up per call (Ray: actors start and load the CNN; one process: workers and first batch); "
                   "call_s = the whole call; init_s = ray.init, once. Single process = extract()'s own loop.")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    print(json.dumps(run(args.quick), indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
