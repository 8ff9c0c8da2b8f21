"""Shared measuring tools: timing, peak memory in a fresh process, the goal judge, machine facts, peak GFLOP/s.

* Times are measured in the benchmark's own process, repeats interleaved across the things a
  ratio compares (A B A B ...), so a burst of background load hits both sides alike.
* Peak memory (:func:`peak_memory`) is measured in a fresh Python process per measurement,
  so nothing the benchmark allocated and freed earlier can be reused to hide an allocation.
* Every goal in RESULTS.md is judged by :func:`judge`, from per-repeat values: a speed goal
  needs at least ``JUDGE_MIN_REPEATS`` interleaved repeats and is met only when the quartile
  on its unfavourable side meets it (it held in >= 75% of repeats); memory bounds and
  exactness must hold for every value; quick mode judges nothing.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import math
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil
import torch

# Environment variables that change which BLAS kernel runs or how many threads it uses.
# They are recorded (never changed) because they can move every number in the report.
BLAS_ENV_VARS = (
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
    "MKL_NUM_THREADS", "MKL_DEBUG_CPU_TYPE", "NVPL_BLAS_DEBUG_CPU_TYPE", "GOTO_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "CROSSLAB_DEVICE",
)


def sync(device: torch.device | str | None) -> None:
    """Wait for queued GPU work so wall-clock timings cover it (no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timeit(
    fn: Callable[[], Any],
    repeats: int,
    *,
    device: torch.device | str | None = None,
    budget_s: float = float("inf"),
    warmup: bool = True,
) -> dict[str, Any]:
    """Run ``fn`` up to ``repeats`` times; return the median seconds and every sample.

    A warm-up call (not timed) runs first when ``warmup`` is set, so one-off costs (lazy
    imports, first-touch page faults, CUDA context, kernel autotuning) do not land in the
    median. Repeats stop early once ``budget_s`` seconds of timed runs are spent, with at
    least one timed run; the count actually run is reported with the median.
    """
    if warmup:
        fn()
        sync(device)
    samples: list[float] = []
    spent = 0.0
    for _ in range(max(1, repeats)):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        dt = time.perf_counter() - t0
        samples.append(dt)
        spent += dt
        if spent >= budget_s:
            break
    return {"median_s": statistics.median(samples), "repeats": len(samples), "samples_s": samples}


def time_interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, *, device: torch.device | str | None = None
) -> dict[str, list[float]]:
    """Seconds of each of ``fns`` over ``rounds`` interleaved rounds (A B C, A B C, ...), no warm-up.

    Sample ``i`` of every function comes from round ``i``, so per-round ratios pair runs that
    saw the same machine load (see :func:`judge`).
    """
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            out[k].append(time.perf_counter() - t0)
    return out


# --- peak memory: one measurement, one fresh process --------------------------------------

#: A peak (or a peak minus memory the call must hold) below zero by more than this is not
#: noise but a broken measurement; :func:`judge` then counts the goal as not met.
MEMORY_NOISE_BYTES = 2**20
#: What :func:`peak_memory` measures, as recorded with every figure (``mem_method``).
MEMORY_METHOD = (
    "fresh process per measurement: peak RSS (VmHWM, reset through /proc/self/clear_refs) "
    "during one call, minus the RSS at its start; the call runs after one warm-up call, "
    "gc.collect() and malloc_trim(0)"
)
MEMORY_METHOD_CUDA = (
    "fresh process per measurement: torch.cuda.max_memory_allocated during one call minus "
    "allocated at its start, after one warm-up call"
)
_CHILD_CODE = "import sys; from benchmarks._harness import _peak_memory_child; _peak_memory_child(sys.argv[1])"


def peak_memory(
    setup: Callable[..., Callable[[], Any]],
    *args: Any,
    device: torch.device | str | None = None,
    warmup: bool = True,
    timeout_s: float = 1800.0,
    **kwargs: Any,
) -> dict[str, Any]:
    """Peak memory of one call of ``setup(*args, **kwargs)()``, measured in a new Python process.

    ``setup`` must be a module-level function (the new process imports it by name) that
    builds the inputs and returns the zero-argument call to measure; its arguments must
    pickle (numbers, strings, tuples). The new process (``subprocess``, never forked from
    this one) runs setup, then one warm-up call unless ``warmup`` is false (one-off costs:
    lazy imports, code pages, BLAS buffers, thread stacks), then ``gc.collect()`` and glibc's
    ``malloc_trim(0)``, which hands every freed page back to the kernel, so the measured
    call has to fault in each page it uses: reusing memory freed earlier no longer hides it.

    On CPU the figure is ``VmHWM`` after the call minus ``VmHWM`` just after the high-water
    mark was reset to the current RSS (writing ``5`` to ``/proc/self/clear_refs``), i.e. the
    peak resident memory during the call above the resident memory at its start. The kernel
    records the high-water mark before it unmaps anything, so ``VmHWM`` does not fall between
    the two readings and the figure is >= 0 up to the RSS counters' approximation (a few
    hundred KiB). Nothing is clamped: a figure is reported as measured, and :func:`judge`
    treats one below ``-MEMORY_NOISE_BYTES`` (given as its ``floor``) as a broken
    measurement that fails its goal, not as a small peak. ``ru_maxrss`` is not used:
    a process started by vfork + exec inherits its parent's high-water mark in it, so a
    child of a 2 GiB benchmark process reports >= 2 GiB before doing anything. Where the
    reset is impossible (not Linux), ``peak_bytes`` is None and ``method`` says why.
    On CUDA, ``peak_bytes`` is torch's allocator peak above the allocation at call start
    (device memory; host figures are kept as ``host_peak_bytes``).

    Returns ``{"peak_bytes", "method", "rss_at_start_bytes", "warmup_retained_bytes",
    "host_peak_bytes", "seconds"}``: ``warmup_retained_bytes`` is what the warm-up left
    resident (caches, buffers: held, so not part of the call's peak). Raises RuntimeError
    if the process fails.
    """
    if setup.__module__ == "__main__" or "<locals>" in setup.__qualname__:
        raise ValueError(f"peak_memory needs a module-level function it can import by name, got {setup!r}")
    payload = {
        "module": setup.__module__, "qualname": setup.__qualname__, "args": args, "kwargs": kwargs,
        "device": str(device) if device is not None else "cpu", "warmup": warmup,
        "threads": torch.get_num_threads(), "sys_path": [os.path.abspath(p) if p else os.getcwd() for p in sys.path],
    }
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)  # where the benchmarks package lives
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory(prefix="crosslab-peakmem-") as tmp:
        out = Path(tmp) / "result.json"
        proc = subprocess.run([sys.executable, "-c", _CHILD_CODE, str(out)], input=pickle.dumps(payload),
                              env=env, capture_output=True, timeout=timeout_s)
        if proc.returncode != 0 or not out.exists():
            tail = proc.stderr.decode(errors="replace")[-3000:]
            raise RuntimeError(f"peak_memory({setup.__module__}.{setup.__qualname__}) failed "
                               f"(exit {proc.returncode}):\n{tail}")
        return json.loads(out.read_text())


def _proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes, from /proc/self/status ({} if unreadable)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, val = line.split(":", 1)
                    out[key] = int(val.split()[0]) * 1024  # kB
    except OSError:
        pass
    return out


def _release_freed_memory() -> bool:
    """Collect garbage and hand freed heap pages back to the kernel (glibc); False without malloc_trim."""
    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


def _reset_high_water_mark() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False if impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _peak_memory_child(out_path: str) -> None:
    """The new process's side of :func:`peak_memory`: read the spec on stdin, write JSON to ``out_path``."""
    spec = pickle.loads(sys.stdin.buffer.read())
    sys.path += [p for p in spec["sys_path"] if p not in sys.path]
    torch.set_num_threads(spec["threads"])
    setup: Any = importlib.import_module(spec["module"])
    for part in spec["qualname"].split("."):
        setup = getattr(setup, part)
    device = torch.device(spec["device"])
    t0 = time.perf_counter()
    fn = setup(*spec["args"], **spec["kwargs"])
    trimmed = _release_freed_memory()
    rss_setup = _proc_status().get("VmRSS")
    if spec["warmup"]:
        fn()
        sync(device)
    trimmed = _release_freed_memory() and trimmed
    cuda = device.type == "cuda"
    if cuda:
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        cuda_base = torch.cuda.memory_allocated(device)
    reset = _reset_high_water_mark()
    start = _proc_status()
    result = fn()
    sync(device)
    end = _proc_status()
    cuda_peak = torch.cuda.max_memory_allocated(device) - cuda_base if cuda else None
    del result
    host_peak = end["VmHWM"] - start["VmHWM"] if reset and "VmHWM" in start and "VmHWM" in end else None
    method = MEMORY_METHOD_CUDA if cuda else MEMORY_METHOD
    if not trimmed:
        method += " (malloc_trim unavailable: memory freed before the call may be reused unseen)"
    if not reset and not cuda:
        method = "not measured: /proc/self/clear_refs unavailable (needs Linux), so the peak cannot be isolated"
    res = {
        "peak_bytes": cuda_peak if cuda else host_peak, "host_peak_bytes": host_peak, "method": method,
        "rss_at_start_bytes": start.get("VmRSS"),
        "warmup_retained_bytes": (start["VmRSS"] - rss_setup) if rss_setup and "VmRSS" in start else None,
        "seconds": time.perf_counter() - t0,
    }
    Path(out_path).write_text(json.dumps(res))


def calibration_setup(mib: int, reuse: str = "none") -> Callable[[], Any]:
    """A call that allocates and writes ``mib`` MiB: :func:`peak_memory` must report >= that.

    ``reuse`` prepares memory the call could reuse without raising RSS, as the benchmarks'
    own earlier work would: ``"none"``; ``"array"``: a NumPy array of the same size written
    and freed; ``"heap"``: ``mib`` blocks of 1 MiB from malloc, each followed by a small
    block that stays allocated, then the large ones freed -- holes in the heap that glibc
    keeps resident and hands straight back to the call's own 1 MiB mallocs. The call uses
    NumPy (one array) for ``"none"``/``"array"`` and 1 MiB mallocs for ``"heap"``.
    """
    import numpy as np

    block = 2**20
    if reuse == "array":
        np.ones(mib * block // 8)  # allocated, written, freed at once
    if reuse in ("none", "array"):
        return lambda: np.ones(mib * block // 8)
    if reuse != "heap":
        raise ValueError(reuse)
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    libc.free(libc.malloc(2 * block))  # raise glibc's mmap threshold: 1 MiB blocks now come from the heap
    pins, big = [], []
    for _ in range(mib):
        big.append(libc.malloc(block))
        libc.memset(big[-1], 1, block)
        pins.append(libc.malloc(64))
    for p in big:
        libc.free(p)

    def call() -> None:
        out = []
        for _ in range(mib):
            out.append(libc.malloc(block))
            libc.memset(out[-1], 2, block)
        for p in out:  # freed again: the holes are back for the next call (the warm-up's for the measured one)
            libc.free(p)

    call.pins = pins  # type: ignore[attr-defined]  # keeps the small blocks (and so the holes) alive
    return call


# --- judging goals -------------------------------------------------------------------------

#: Per-repeat values a speed goal needs before it is judged at all.
JUDGE_MIN_REPEATS = 7


def spread(samples: Sequence[float]) -> dict[str, Any]:
    """Lower quartile, median and upper quartile of ``samples`` (and how many there were).

    Quartiles by :func:`statistics.quantiles`' "exclusive" method from 3 values on (it never
    leaves the data's range there), "inclusive" for 2, the value itself for 1; None if empty.
    """
    xs = sorted(float(x) for x in samples)
    if not xs:
        return {"q1": None, "median": None, "q3": None, "repeats": 0}
    if len(xs) == 1:
        q = [xs[0]] * 3
    else:
        q = statistics.quantiles(xs, n=4, method="exclusive" if len(xs) >= 3 else "inclusive")
    return {"q1": q[0], "median": statistics.median(xs), "q3": q[2], "repeats": len(xs)}


def judge(
    samples: Sequence[float | None],
    target: float,
    *,
    better: str = "higher",
    need: str = "quartile",
    min_repeats: int = JUDGE_MIN_REPEATS,
    quick: bool = False,
    floor: float | None = None,
) -> dict[str, Any]:
    """Whether a goal holds, from per-repeat values; the one place a benchmark goal is judged.

    ``samples`` are per-repeat values of the quantity the goal is about (for a ratio against
    a peer: one ratio per interleaved round), ``target`` the goal's bound and ``better``
    whether values must be >= it ("higher") or <= it ("lower").

    * ``need="quartile"`` (speed goals): met when the quartile on the unfavourable side --
      the lower quartile for "higher", the upper one for "lower" -- meets the target. With
      the exclusive quartile method this means the goal held in at least 75% of the repeats
      (``share_meeting`` says exactly how many); a median that meets it is not enough.
    * ``need="all"`` (memory bounds, exactness): every value must meet it (the worst decides).

    Not judged (``met`` None, ``judged`` False, ``why`` says why) in quick mode, with fewer
    than ``min_repeats`` values, or with none. ``floor`` is the lowest value a working
    measurement can give (e.g. ``-MEMORY_NOISE_BYTES`` for memory above what a call must
    hold): a value below it is a broken measurement, and the goal counts as not met rather
    than as easily met; values between the floor and 0 are noise and judged as measured.
    Returns the spread (q1, median, q3, repeats), ``share_meeting``, ``judged_on``,
    ``decisive`` (the value compared), ``judged``, ``met`` and ``why``.
    """
    if better not in ("higher", "lower") or need not in ("quartile", "all"):
        raise ValueError(f"better={better!r}, need={need!r}")
    xs = [float(x) for x in samples if x is not None and math.isfinite(x)]
    ok = (lambda v: v >= target) if better == "higher" else (lambda v: v <= target)
    out: dict[str, Any] = {"target": target, "better": better, "need": need, **spread(xs),
                           "share_meeting": sum(map(ok, xs)) / len(xs) if xs else None}
    if need == "quartile":
        out["judged_on"] = "lower quartile" if better == "higher" else "upper quartile"
        out["decisive"] = out["q1"] if better == "higher" else out["q3"]
    else:
        out["judged_on"] = "worst value"
        out["decisive"] = (min(xs) if better == "higher" else max(xs)) if xs else None
    sign = "≥" if better == "higher" else "≤"
    if quick:
        return {**out, "judged": False, "met": None, "why": "not judged: quick mode (tiny sizes, few repeats)"}
    if not xs:
        return {**out, "judged": False, "met": None, "why": "not judged: no values measured by the current method in these results "
                       "(re-run the section)"}
    if len(xs) < min_repeats:
        return {**out, "judged": False, "met": None,
                "why": f"not judged: {len(xs)} repeat(s), fewer than the {min_repeats} needed"}
    if floor is not None and min(xs) < floor:
        return {**out, "judged": True, "met": False,
                "why": f"not met: a value of {min(xs):.3g} is below {floor:.3g}, so the measurement is broken"}
    met = ok(out["decisive"])
    held = sum(map(ok, xs))
    return {**out, "judged": True, "met": met,
            "why": f"{'met' if met else 'not met'}: {out['judged_on']} {out['decisive']:.3g} {sign} {target:.3g}? "
                   f"{'yes' if met else 'no'} ({held}/{len(xs)} values meet it)"}

def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (falls back to platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def blas_info() -> list[dict[str, Any]]:
    """Which BLAS/OpenMP libraries numpy, scipy, torch and faiss loaded, and their threads."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "prefix", "version", "num_threads", "architecture",
            "threading_layer", "filepath")
    return [{k: info[k] for k in keep if k in info} for info in threadpool_info()]


def machine_info(devices: list[torch.device]) -> dict[str, Any]:
    """Facts that decide the numbers: CPU, cores, threads, library versions, BLAS, devices."""
    import numpy as np

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "blas_env": {k: os.environ[k] for k in BLAS_ENV_VARS if k in os.environ},
        "blas": None,  # filled after the peers are imported (faiss loads its own OpenBLAS)
        "devices": [],
    }
    for mod in ("faiss", "sklearn", "scipy"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    for dev in devices:
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else info["cpu_model"]
        info["devices"].append({"device": str(dev), "name": name})
    return info


def peak_gflops(device: torch.device, n: int, repeats: int = 3) -> dict[str, Any]:
    """The machine's practical float32 GEMM limit: GFLOP/s of an ``(n, n) @ (n, n)`` torch.mm."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    t = timeit(lambda: torch.mm(a, b), repeats, device=device)
    return {"device": str(device), "n": n, "gflops": 2 * n**3 / t["median_s"] / 1e9, **t}


class CpuShare:
    """How much of the machine's CPU time other processes used while we measured.

    Benchmarks on a shared machine are only honest if they say so: this compares the
    system-wide busy CPU time with this process's own over the same wall-clock span.
    """

    def __enter__(self) -> CpuShare:
        self._t0 = time.perf_counter()
        self._sys0 = _busy(psutil.cpu_times())
        self._own0 = _own_cpu()
        self.load_start = os.getloadavg()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self._t0
        cores = psutil.cpu_count() or 1
        other = (_busy(psutil.cpu_times()) - self._sys0) - (_own_cpu() - self._own0)
        self.wall_s = wall
        self.other_cpu_fraction = max(0.0, other) / (wall * cores) if wall > 0 else 0.0
        self.load_end = os.getloadavg()


def _busy(t: Any) -> float:
    return sum(v for k, v in t._asdict().items() if k not in ("idle", "iowait", "guest", "guest_nice"))


def _own_cpu() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def section_main(description: str, run: Callable[[bool], dict[str, Any]],
                 goals: Callable[[dict[str, Any], bool], list[dict[str, Any]]], device: str = "cpu",
                 argv: list[str] | None = None) -> int:
    """A section's ``python -m benchmarks.bench_x [--quick]``: run it, add the machine and its goals, print JSON."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    res = run(args.quick)
    res["machine"] = machine_info([torch.device(device)])
    res["goals"] = goals(res, args.quick)
    print(json.dumps(res, indent=1, default=str))
    return 0
