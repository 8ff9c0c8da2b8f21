"""scripts/run_course.py (make course / make notebooks) on tiny notebooks, and notebooks/sanitize.cfg."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from nbval.plugin import get_sanitize_patterns

ROOT = Path(__file__).resolve().parent.parent


def _load_script():
    spec = importlib.util.spec_from_file_location("run_course", ROOT / "scripts" / "run_course.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["run_course"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


rc = _load_script()


def _write(path: Path, *sources: str) -> Path:
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """Two lessons (one fails), a non-lesson notebook, run once by the script."""
    nbdir = tmp_path_factory.mktemp("notebooks")
    (nbdir / "data.txt").write_text("found me")
    _write(nbdir / "00_first.ipynb", "print(open('data.txt').read())", "6 * 7")
    _write(nbdir / "01_broken.ipynb", "x = 1", "raise ValueError('boom at ' + str(x))", "print('never')")
    _write(nbdir / "scratch.ipynb", "raise RuntimeError('not a lesson, must not run')")
    out = tmp_path_factory.mktemp("build")
    return nbdir, out


def test_finds_lessons_in_order(course):
    nbdir, _ = course
    assert [p.name for p in rc.find_lessons(nbdir)] == ["00_first.ipynb", "01_broken.ipynb"]
    assert [p.name for p in rc.find_lessons(nbdir, ["01"])] == ["01_broken.ipynb"]
    assert rc.find_lessons(nbdir, ["07"]) == []


def test_full_run_reports_each_lesson(course, capsys):
    nbdir, out = course
    broken_before = (nbdir / "01_broken.ipynb").read_bytes()
    code = rc.main(["--notebooks", str(nbdir), "--out", str(out), "--timeout", "60", "--inplace"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert re.fullmatch(r"00_first\s+\d+\.\d s  ok", lines[0])
    assert re.fullmatch(r"01_broken\s+\d+\.\d s  failed  ValueError: boom at 1", lines[1])
    assert lines[2].startswith("total") and "1 failed: 01_broken" in lines[2]

    timings = json.loads((out / "timings.json").read_text())
    rows = timings["lessons"]
    assert [(r["name"], r["status"], r["error"]) for r in rows] == [
        ("00_first", "ok", ""), ("01_broken", "failed", "ValueError: boom at 1")]
    assert timings["total_seconds"] == pytest.approx(sum(r["seconds"] for r in rows), abs=0.11)
    assert timings["machine"]["cpus"] >= 1

    # HTML copies hold the outputs (cwd was the notebooks folder), even of the failed lesson.
    html0 = (out / "00_first.html").read_text()
    assert "found me" in html0 and "42" in html0
    html1 = (out / "01_broken.html").read_text()
    assert "boom at 1" in html1
    assert html1.count("never") == 1  # the third cell's source, but no output: execution stopped
    assert sorted(p.name for p in out.iterdir()) == ["00_first.html", "01_broken.html", "timings.json"]

    # --inplace: the clean lesson got its outputs, without per-cell timestamps (re-running an
    # unchanged lesson must not change the file) ...
    nb = nbformat.read(nbdir / "00_first.ipynb", 4)
    assert nb.cells[0].outputs[0]["text"] == "found me\n"
    assert nb.cells[1].outputs[0]["data"]["text/plain"] == "42"
    assert all("execution" not in c.metadata for c in nb.cells)
    assert (nbdir / "00_first.ipynb").read_text().endswith("\n")
    # ... and a failing lesson is never written back over its source.
    assert (nbdir / "01_broken.ipynb").read_bytes() == broken_before


def test_only_selects_by_prefix(course, capsys, tmp_path):
    nbdir, _ = course
    assert rc.main(["--notebooks", str(nbdir), "--out", str(tmp_path), "--only", "07"]) == 1
    assert "no lessons matching ['07']" in capsys.readouterr().err


def test_no_lessons_is_a_failure(tmp_path, capsys):
    assert rc.main(["--notebooks", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "no lessons" in capsys.readouterr().err


def test_readme_timings_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Timings\n{rc.README_START}\n(not measured yet)\n{rc.README_END}\n\nend\n")
    record = {"lessons": [{"name": "00_a", "seconds": 12.3, "status": "ok"},
                          {"name": "01_b", "seconds": 40.0, "status": "ok"}],
              "total_seconds": 52.3, "finished": "2026-12-01T10:00:00+00:00",
              "machine": {"device": "cpu (2 threads)", "cpus": 2, "python": "3.11.7"}}
    table = rc.timings_table(record)
    assert "on 2026-12-01:" in table
    rc.update_readme(readme, table)
    text = readme.read_text()
    assert "(not measured yet)" not in text and text.endswith("\nend\n")
    assert "| `00_a` | 12 | ok |" in text and "| **all** | **52** | |" in text
    rc.update_readme(readme, table)  # idempotent: one block, replaced in place
    cold = [{"name": "00_a", "seconds": 30.4}, {"name": "01_b", "seconds": 9.6}]
    warm = [{"name": "00_a", "seconds": 5.0}, {"name": "01_b", "seconds": 4.0}]
    both = rc.timings_table({**record, "cold": cold, "warm": warm,
                             "total_seconds": {"cold": 40.0, "warm": 9.0}})
    assert "| `00_a` | 30 s | 5 s |" in both and "| **all** | **40 s** | **9 s** |" in both
    assert text == readme.read_text()
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        rc.update_readme(readme, table)


# ------------------------------------------------------------------ sanitize.cfg

PATTERNS = get_sanitize_patterns((ROOT / "notebooks" / "sanitize.cfg").read_text())


def sanitize(s: str) -> str:
    # Exactly what nbval does with the file (nbval/plugin.py, IPyNbCell.sanitize).
    for regex, replace in PATTERNS:
        s = re.sub(regex, replace, s)
    return s


def test_sanitize_file_parses():
    assert len(PATTERNS) == 7
    for regex, _ in PATTERNS:
        re.compile(regex)


@pytest.mark.parametrize("a, b", [
    ("/tmp/ipykernel_1234/2871623413.py:3: UserWarning: x",
     "/tmp/ipykernel_98765/118.py:3: UserWarning: x"),
    ("/var/folders/ab/T/ipykernel_77/99.py:1: FutureWarning: y",
     "/tmp/ipykernel_5/12345.py:1: FutureWarning: y"),
    ("<Figure size 640x480 with 1 Axes at 0x7f3a2c1d0e50>",
     "<Figure size 640x480 with 1 Axes at 0x7fab00112233>"),
    (" 40%|####      | 4/10 [00:01<00:02,  2.31it/s]",
     " 40%|####      | 4/10 [00:00<00:01,  9.80it/s]"),
    ("encode: 100%|\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588| 2.68k/2.68k [01:52<00:00, 23.9it/s]",
     "encode: 100%|\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588\u2588| 2.68k/2.68k [00:09<00:00, 290it/s]"),
    ("12it [00:03,  3.90it/s]", "12it [00:00, 100.00it/s]"),
    ("1.23 ms \u00b1 45.6 \u00b5s per loop (mean \u00b1 std. dev. of 7 runs, 1,000 loops each)",
     "980 \u00b5s \u00b1 4.1 \u00b5s per loop (mean \u00b1 std. dev. of 7 runs, 10,000 loops each)"),
    ("extracted in 12.3 s (24.1 images/s)", "extracted in 1.0 s (290 images/s)"),
    ("CPU times: user 1.2 s, sys: 40 ms, total: 1.24 s\nWall time: 850 \u00b5s",
     "CPU times: user 3 s, sys: 1.5 ms, total: 3.0 s\nWall time: 2 min"),
])
def test_sanitize_makes_runs_equal(a, b):
    assert a != b and sanitize(a) == sanitize(b)


@pytest.mark.parametrize("text", [
    "R@10 = 43.8 %", "400,000 words x 50 dims", "shape (2680, 1280)", "the 2 sets of images",
    "dog -> cat 0.92", "0x10 is sixteen", "a red square left of 3 circles", "2 things/second",
])
def test_sanitize_leaves_results_alone(text):
    assert sanitize(text) == text


def test_nbval_passes_a_rerun_only_thanks_to_sanitize(tmp_path):
    """End to end: execute a notebook, then nbval re-runs it; outputs differ only in masked parts."""
    import subprocess

    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    _write(
        nbdir / "00_noisy.ipynb",
        "import time, warnings\nwarnings.warn('careful')",  # names /tmp/ipykernel_<pid>/<n>.py
        "t = time.perf_counter(); time.sleep(0.01)\nprint(f'took {time.perf_counter() - t:.6f} s')",
        "class A: pass\nA()",  # <__main__.A object at 0x7f...>
        "import sys\nfrom tqdm import tqdm\nfor _ in tqdm(range(3), file=sys.stdout): time.sleep(0.01)",
        "print(6 * 7)",
    )
    assert rc.main(["--notebooks", str(nbdir), "--out", str(tmp_path / "out"), "--inplace"]) == 0
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
           str(nbdir / "00_noisy.ipynb")]
    plain = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    # The four noisy cells' raw outputs do differ between runs (the last cell's does not) ...
    assert plain.returncode == 1 and "4 failed, 1 passed" in plain.stdout, plain.stdout
    masked = subprocess.run([*cmd, "--nbval-sanitize-with", str(ROOT / "notebooks" / "sanitize.cfg")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    # ... and only in what sanitize.cfg masks.
    assert masked.returncode == 0 and "5 passed" in masked.stdout, masked.stdout


def test_cold_warm_uses_a_fresh_cache_then_the_same_one(tmp_path, capsys, monkeypatch):
    """--cold-warm: two passes, both in one new CROSSLAB_CACHE; the caller's cache is untouched."""
    nbdir = tmp_path / "nb"
    nbdir.mkdir()
    # The lesson records the cache folder it sees and whether it was empty on arrival.
    _write(nbdir / "00_cache.ipynb",
           "import os, pathlib\n"
           "root = pathlib.Path(os.environ['CROSSLAB_CACHE'])\n"
           "log = pathlib.Path(os.environ['LOG'])\n"
           "with log.open('a') as f: f.write(f'{root}|{(root / \"mark\").exists()}\\n')\n"
           "(root / 'mark').write_text('x')")
    readme = tmp_path / "README.md"
    readme.write_text(f"{rc.README_START}\n{rc.README_END}\n")
    monkeypatch.setenv("LOG", str(tmp_path / "log.txt"))
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "mine"))
    out = tmp_path / "out"
    assert rc.main(["--notebooks", str(nbdir), "--out", str(out), "--cold-warm",
                    "--readme", str(readme)]) == 0
    runs = [line.split("|") for line in (tmp_path / "log.txt").read_text().splitlines()]
    assert [seen for _, seen in runs] == ["False", "True"]  # empty, then warm
    assert runs[0][0] == runs[1][0] != str(tmp_path / "mine")
    assert not (tmp_path / "mine").exists() and not Path(runs[0][0]).exists()  # removed after
    assert os.environ["CROSSLAB_CACHE"] == str(tmp_path / "mine")
    lines = capsys.readouterr().out.splitlines()
    assert "(empty cache)" in lines[0] and "(warm cache)" in lines[1]
    timings = json.loads((out / "timings.json").read_text())
    assert [r["cache"] for r in timings["cold"] + timings["warm"]] == ["cold", "warm"]
    # the committed copy goes next to the README it renders (here: under tmp_path, not the repo)
    assert json.loads((tmp_path / "docs" / "results" / "course_timings.json").read_text()) == timings
    text = readme.read_text()
    assert "| lesson | empty cache | warm cache |" in text and "| `00_cache` |" in text
    # benchmarks/bench_course.py files them under their cache state.
    spec = importlib.util.spec_from_file_location("bench_course", ROOT / "benchmarks" / "bench_course.py")
    bc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bc)
    (row,) = bc.run(out / "timings.json")["rows"]
    assert set(row) >= {"cold_s", "warm_s"}
