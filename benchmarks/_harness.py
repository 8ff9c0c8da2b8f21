"""Shared measuring tools: timing with medians, peak memory, machine facts, peak GFLOP/s.

Every figure in RESULTS.md is a median over repeated runs measured in the same process,
so ratios compare like with like (same machine, same load, same thread settings).
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
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


class PeakMemory:
    """Peak memory of a block of code above its starting point, in bytes.

    On CPU, torch allocations are invisible to ``tracemalloc``, so a background thread
    samples the process RSS (psutil) every ``interval`` seconds; the peak is the largest
    sample minus the RSS at entry. Memory the allocator had kept from earlier work and
    reuses does not raise RSS, so this is a lower bound on what the block allocated; a
    block shorter than the interval is caught by a final sample at exit.
    On CUDA, torch's own allocator statistics give the exact peak of tensor memory.
    """

    def __init__(self, device: torch.device | str | None = None, interval: float = 0.002):
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.interval = interval
        self.peak_bytes = 0
        self.method = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated minus allocated at start"
            return self
        self.method = f"process RSS sampled every {self.interval * 1e3:.0f} ms (psutil), minus RSS at start"
        self._proc = psutil.Process()
        self._base = self._proc.memory_info().rss
        self._max = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
            return
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, self._proc.memory_info().rss)
        self.peak_bytes = self._max - self._base


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
