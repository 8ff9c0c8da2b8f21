"""Data benchmarks: loading the embedded clip art, generating synthetic scenes, reading photos.

    python -m benchmarks.bench_data [--quick]

``run(quick)`` returns a dict of figures (medians over repeats, same process). The issue's
targets: the clip-art set loads in under 2 s; scenes generate at thousands per second.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

from crosslab.data import load_clipart, load_photos, make_scenes


def timeit(fn: Callable[[], object], repeats: int, warmup: bool = True) -> dict:
    """Median wall-clock seconds of ``fn`` over ``repeats`` runs (after one untimed run)."""
    if warmup:
        fn()
    samples = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(samples), "repeats": len(samples)}


def run(quick: bool = False) -> dict:
    """Time load_clipart, make_scenes (plain and hard pairs) and load_photos."""
    n_scenes = 200 if quick else 5000
    reps = 1 if quick else 5
    out: dict = {}
    t = timeit(load_clipart, reps, warmup=False)  # the first, cold call is the one learners see
    ds = load_clipart()
    out["clipart_load_s"] = t["median_s"]
    out["clipart_images"] = len(ds)
    out["clipart_captions"] = ds.n_captions
    t = timeit(lambda: load_clipart().load_image(0), reps)
    out["clipart_load_plus_first_image_s"] = t["median_s"]
    for hard in (False, True):
        t = timeit(lambda h=hard: make_scenes(n_scenes, seed=0, hard_pairs=h), reps)
        key = "scenes_hard_per_s" if hard else "scenes_per_s"
        out[key] = n_scenes / t["median_s"]
    out["scenes_n"] = n_scenes
    out["photos_load_s"] = timeit(load_photos, 1 if quick else 3)["median_s"]
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    print(json.dumps(run(ap.parse_args().quick), indent=2))
