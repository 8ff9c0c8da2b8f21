"""One query, end to end: ``python -m crosslab search`` from a new process, and a query in a warm process.

    python -m benchmarks.bench_query [--quick]

*Command*: wall time of ``python -m crosslab search "a red apple" --k 3 --json`` in a
fresh process with the pipeline already in the cache (fitted once before timing),
interleaved with its peer ``python -c "import torch"`` (what any torch program pays
before its first line), so the report says how much of the command is importing torch.
Goal: ≤ 5 s. *In process*: ``pipeline.search(query, k=10)`` over the 2,813 drawings with
the pipeline and the gallery's embeddings warm. Goal: ≤ 50 ms. Medians over
interleaved repeats; the first sample of each is a warm-up and not counted.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

QUERIES = ("a red apple", "a black cat", "flag of france", "a blue car", "christmas tree",
           "a smiling sun", "a cup of coffee", "an old computer")


def _timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
    return time.perf_counter() - t0, out.stdout


def _spread(samples: list[float]) -> dict[str, Any]:
    q = statistics.quantiles(samples, n=4) if len(samples) > 1 else [samples[0]] * 3
    return {"median_s": statistics.median(samples), "q1_s": q[0], "q3_s": q[2], "repeats": len(samples),
            "samples_s": samples}


def run(quick: bool = False, pipeline: str | None = None) -> dict[str, Any]:
    import crosslab as cl
    from crosslab.pipelines import DEFAULT_PIPELINE

    name = pipeline or DEFAULT_PIPELINE
    ds = cl.data.load_clipart()
    t0 = time.perf_counter()
    p = cl.create_pipeline(name, ds, progress=False)  # fitted (or loaded) before anything is timed
    prepare_s = time.perf_counter() - t0
    p.search(QUERIES[0], k=10)  # embeds the gallery once
    in_process = []
    for i in range(20 if quick else 200):
        t0 = time.perf_counter()
        p.search(QUERIES[i % len(QUERIES)], k=10)
        in_process.append(time.perf_counter() - t0)
    out: dict[str, Any] = {"pipeline": name, "n_images": len(ds), "prepare_s": prepare_s,
                           "in_process": _spread(in_process)}
    repeats = 2 if quick else 7
    cmd = [sys.executable, "-m", "crosslab", "search", "a red apple", "--k", "3", "--pipeline", name, "--json"]
    peer = [sys.executable, "-c", "import torch"]
    command, torch_only, first = [], [], None
    for r in range(repeats + 1):  # interleaved; round 0 is a warm-up (file cache)
        s, stdout = _timed(cmd)
        t, _ = _timed(peer)
        if r:
            command.append(s)
            torch_only.append(t)
        first = json.loads(stdout)[0]
    out["command"] = _spread(command)
    out["import_torch"] = _spread(torch_only)
    out["import_torch_share"] = statistics.median(torch_only) / statistics.median(command)
    out["first_hit"] = {"caption": first["caption"], "image_id": first["image_id"]}
    out["apple_first"] = "apple" in " ".join(ds.image_captions(ds.ids.index(first["image_id"]))).lower()
    return out


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(run("--quick" in sys.argv), indent=1))
