"""Seconds per lesson, read from what ``make course`` (scripts/run_course.py) recorded.

The course is timed by the script that runs it; this module only reads
``docs/results/course_timings.json`` — written by ``scripts/run_course.py --cold-warm
--readme`` only after a *full* run in which every lesson passed, so a partial run can never
supply the table — and normalises it to rows of
``{"lesson", "cold_s", "warm_s"}``. Nothing is re-run here: executing every lesson
belongs to ``make course``, not to a benchmark.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TIMINGS = Path(__file__).resolve().parent.parent / "docs" / "results" / "course_timings.json"


def run(path: str | Path | None = None) -> dict[str, Any]:
    """Return ``{"status", "source", "rows", "cache_labelled", ...}`` from the timings file.

    ``status`` is "measured" or "not measured" (no timings file yet, or nothing usable in it).
    Each row is ``{"lesson", "status"?, "seconds"?, "cold_s"?, "warm_s"?}``: ``cold_s`` /
    ``warm_s`` only where the file says which cache state a run had, ``seconds`` otherwise.
    """
    path = Path(path) if path is not None else TIMINGS
    if not path.exists():
        return {"status": "not measured", "source": str(path), "rows": [],
                "reason": f"{path} not found: run `scripts/run_course.py --cold-warm --readme` first"}
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        return {"status": "not measured", "source": str(path), "rows": [],
                "reason": f"could not read {path}: {e}"}
    rows = _normalise(raw)
    out: dict[str, Any] = {
        "status": "measured" if rows else "not measured", "source": str(path), "rows": rows,
        "cache_labelled": any("cold_s" in r or "warm_s" in r for r in rows),
    }
    if isinstance(raw, dict):
        out.update({k: raw[k] for k in ("total_seconds", "finished", "machine") if k in raw})
    if not rows:
        out["reason"] = "no per-lesson seconds found in the file"
    return out


def _normalise(raw: Any) -> list[dict[str, Any]]:
    """Per-lesson seconds from the file's ``lessons`` list (or ``{"cold": .., "warm": ..}`` runs).

    scripts/run_course.py writes ``{"lessons": [{"name", "seconds", "status", "error"}], ...}``;
    an entry with ``"cache": "cold" | "warm"`` (or a top-level ``cold`` / ``warm`` run) is
    filed under that cache state.
    """
    by_lesson: dict[str, dict[str, Any]] = {}

    def add(entries: Any, state: str | None) -> None:
        if isinstance(entries, dict):  # {lesson: seconds}
            entries = [{"name": k, "seconds": v} for k, v in entries.items()]
        for e in entries if isinstance(entries, list) else []:
            if not isinstance(e, dict):
                continue
            name = e.get("name", e.get("lesson", e.get("notebook")))
            secs = e.get("seconds")
            if name is None or not isinstance(secs, int | float) or isinstance(secs, bool):
                continue
            cache = str(e.get("cache", state or ""))
            key = "cold_s" if cache.startswith("cold") else "warm_s" if cache.startswith("warm") else "seconds"
            row = by_lesson.setdefault(str(name), {"lesson": str(name)})
            row[key] = float(secs)
            if "status" in e:
                row["status"] = e["status"]

    if isinstance(raw, dict) and ("cold" in raw or "warm" in raw):
        add(raw.get("cold"), "cold")
        add(raw.get("warm"), "warm")
    else:
        add(raw.get("lessons") if isinstance(raw, dict) else raw, None)
    return sorted(by_lesson.values(), key=lambda r: r["lesson"])
