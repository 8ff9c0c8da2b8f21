"""Run every lesson headless, in order, each in a fresh kernel, and time it.

    python scripts/run_course.py              # make course: HTML copies in build/course/
    python scripts/run_course.py --only 03    # one lesson
    python scripts/run_course.py --inplace    # make notebooks: write the outputs back (authors)
    python scripts/run_course.py --readme     # also refresh the "Timings" table in README.md
    python scripts/run_course.py --cold-warm  # make course: twice, from an empty then a warm cache

A lesson is ``notebooks/[0-9][0-9]_*.ipynb``. Each runs with ``notebooks/`` as its
working directory, as in JupyterLab. One line per lesson is printed (name,
seconds, ok/failed and the error's last line); ``build/course/timings.json``
keeps the numbers. Exit status 1 when any lesson fails (or none was found).

``--cold-warm`` times the course as a learner meets it: first with
``CROSSLAB_CACHE`` pointing at a new empty folder (image features, text vectors and
models are computed), then again with that cache warm; your own cache is not
touched. ``timings.json`` then holds ``{"cold": [...], "warm": [...]}`` and the
README table gets one column per run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSON = re.compile(r"^\d\d_.*\.ipynb$")
TIMINGS_JSON = ROOT / "docs" / "results" / "course_timings.json"
README_START = "<!-- course-timings:start -->"
README_END = "<!-- course-timings:end -->"


@dataclass
class Result:
    name: str
    seconds: float
    status: str  # "ok" | "failed"
    error: str = ""


def find_lessons(folder: Path, only: list[str] | None = None) -> list[Path]:
    """Lesson notebooks in ``folder`` sorted by name; ``only`` keeps names starting with any prefix."""
    lessons = sorted(p for p in folder.glob("*.ipynb") if LESSON.match(p.name))
    if only:
        lessons = [p for p in lessons if any(p.name.startswith(o) or p.stem == o for o in only)]
    return lessons


def _last_line(e: BaseException) -> str:
    """The line a reader needs: 'ValueError: boom' from a cell error, else the exception's last line."""
    ename, evalue = getattr(e, "ename", None), getattr(e, "evalue", None)
    if ename:
        return f"{ename}: {evalue}".strip().rstrip(":")
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(e).__name__


def run_lesson(path: Path, out_dir: Path, *, timeout: int, kernel: str, inplace: bool) -> Result:
    """Execute one notebook in a fresh kernel; write its HTML copy (even when it fails)."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    from crosslab._io import atomic_write_text

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel,
        # The kernel's working directory: lessons open files relative to notebooks/.
        resources={"metadata": {"path": str(path.parent)}},
        # Per-cell timestamps would make every committed notebook differ on each run.
        record_timing=False,
    )
    start = time.perf_counter()
    error = ""
    try:
        client.execute()
    except Exception as e:  # CellExecutionError, CellTimeoutError, DeadKernelError, ...
        error = _last_line(e)
    seconds = time.perf_counter() - start
    html, _ = HTMLExporter().from_notebook_node(nb)
    atomic_write_text(out_dir / f"{path.stem}.html", html)
    if inplace and not error:
        # Only a clean run replaces the author's notebook; a failed one is left as it was.
        text = nbformat.writes(nb)
        atomic_write_text(path, text if text.endswith("\n") else text + "\n")
    return Result(path.stem, round(seconds, 1), "failed" if error else "ok", error)


def machine() -> dict[str, str | int]:
    """What the timings were measured on."""
    try:
        from crosslab.device import describe

        device = describe()
    except Exception as e:  # a broken torch should not hide the timings of the lessons that ran
        device = f"unknown ({type(e).__name__})"
    return {
        "cpus": os.cpu_count() or 0,
        "device": device,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "load": f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?",
    }


def timings_table(record: dict) -> str:
    """Markdown table of the lesson timings in a ``timings.json`` record (for the README).

    A cold/warm record (``--cold-warm``) gets one column per cache state. The text depends on the
    record only, so ``scripts/render_docs.py`` renders the README from the committed copy of it,
    ``docs/results/course_timings.json``.
    """
    info, when = record["machine"], record["finished"][:10]
    if "cold" in record:
        rows = ["| lesson | empty cache | warm cache |", "|---|---:|---:|"]
        for c, w in zip(record["cold"], record["warm"], strict=True):
            rows.append(f"| `{c['name']}` | {c['seconds']:.0f} s | {w['seconds']:.0f} s |")
        tot = record["total_seconds"]
        rows.append(f"| **all** | **{tot['cold']:.0f} s** | **{tot['warm']:.0f} s** |")
        return (f"Measured by `make course` (`scripts/run_course.py --cold-warm`: every lesson in "
                f"order, each in a fresh kernel) on {when}: {info['device']}, {info['cpus']} CPU "
                f"cores, Python {info['python']}, load average {info.get('load', '?')} when it "
                "started. \"Empty cache\": `CROSSLAB_CACHE` pointing at a new empty folder; "
                "\"warm\": the same run again.\n\n" + "\n".join(rows))
    rows = ["| lesson | seconds | status |", "|---|---:|---|"]
    rows += [f"| `{r['name']}` | {r['seconds']:.0f} | {r['status']} |" for r in record["lessons"]]
    rows.append(f"| **all** | **{record['total_seconds']:.0f}** | |")
    return (f"Measured by `make course` on {when}: {info['device']}, {info['cpus']} CPU cores, "
            f"Python {info['python']}, empty feature caches unless noted.\n\n" + "\n".join(rows))


def update_readme(readme: Path, table: str) -> None:
    """Replace the text between the timing markers in ``readme`` (atomically)."""
    from crosslab._io import atomic_write_text

    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{readme}: markers {README_START} ... {README_END} not found; "
                         "add them where the timings table belongs.")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write_text(readme, f"{head}{README_START}\n{table}\n{README_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", metavar="PREFIX",
                    help="run only lessons whose name starts with PREFIX (e.g. 03); repeatable")
    ap.add_argument("--inplace", action="store_true",
                    help="write each executed notebook back over its source (only when it ran clean)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    ap.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    ap.add_argument("--notebooks", type=Path, default=ROOT / "notebooks", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "course", help="where HTML copies go")
    ap.add_argument("--cold-warm", action="store_true",
                    help="run the course twice: from a new empty feature cache, then warm")
    ap.add_argument("--readme", type=Path, nargs="?", const=ROOT / "README.md", default=None,
                    help="refresh the timings table in README.md (only after a full, green run)")
    args = ap.parse_args(argv)

    lessons = find_lessons(args.notebooks, args.only)
    if not lessons:
        what = f" matching {args.only}" if args.only else ""
        print(f"course: no lessons{what} in {args.notebooks} (expected NN_name.ipynb)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    width = max(len(p.stem) for p in lessons)
    info = machine()

    def run_all(label: str, inplace: bool) -> list[Result]:
        results = []
        for path in lessons:
            r = run_lesson(path, args.out, timeout=args.timeout, kernel=args.kernel, inplace=inplace)
            results.append(r)
            line = f"{r.name:<{width}}  {r.seconds:7.1f} s  {r.status}{label}"
            print(line + (f"  {r.error}" if r.error else ""), flush=True)
        return results

    record: dict = {}
    if args.cold_warm:
        saved = os.environ.get("CROSSLAB_CACHE")
        with tempfile.TemporaryDirectory(prefix="crosslab-course-cache-") as tmp:
            os.environ["CROSSLAB_CACHE"] = tmp  # the kernels inherit it
            try:
                cold = run_all("  (empty cache)", False)
                warm = run_all("  (warm cache)", args.inplace)
            finally:
                if saved is None:
                    os.environ.pop("CROSSLAB_CACHE", None)
                else:
                    os.environ["CROSSLAB_CACHE"] = saved
        results = cold + warm
        record = {"cold": [asdict(r) | {"cache": "cold"} for r in cold],
                  "warm": [asdict(r) | {"cache": "warm"} for r in warm],
                  "total_seconds": {"cold": round(sum(r.seconds for r in cold), 1),
                                    "warm": round(sum(r.seconds for r in warm), 1)}}
    else:
        results = run_all("", args.inplace)
        record = {"lessons": [asdict(r) for r in results],
                  "total_seconds": round(sum(r.seconds for r in results), 1)}
    total = round(sum(r.seconds for r in results), 1)
    failed = [r.name for r in results if r.status != "ok"]
    from crosslab._io import atomic_write_text

    record |= {"machine": info, "finished": datetime.now(UTC).isoformat(timespec="seconds")}
    atomic_write_text(args.out / "timings.json", json.dumps(record, indent=2) + "\n")
    print(f"{'total':<{width}}  {total:7.1f} s  "
          + (f"{len(failed)} failed: {', '.join(failed)}" if failed else f"{len(results)} ok")
          + f"  (HTML in {args.out})")
    if args.readme is not None:
        if failed or args.only:
            print("course: README timings not updated (needs a full run with every lesson ok)",
                  file=sys.stderr)
        else:
            # next to the README it renders: the repo's docs/results/ for the repo's README
            timings_json = args.readme.resolve().parent / TIMINGS_JSON.relative_to(ROOT)
            timings_json.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(timings_json, json.dumps(record, indent=2) + "\n")
            update_readme(args.readme, timings_table(record))
            print(f"course: timings written to {timings_json} and {args.readme}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
