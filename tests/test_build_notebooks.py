"""scripts/build_notebooks.py: percent sources -> notebooks, nbval markers -> cell tags."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_notebooks", ROOT / "scripts" / "build_notebooks.py")
bn = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bn)


def test_marker_becomes_a_tag():
    src = "# NBVAL_IGNORE_OUTPUT\n# (progress bars)\nx = 1\nprint(x)"
    assert bn.split_marker(src) == ("x = 1\nprint(x)", ["nbval-ignore-output"])
    assert bn.split_marker("# NBVAL_IGNORE_OUTPUT\nx = 1") == ("x = 1", ["nbval-ignore-output"])
    # a comment that is not a "(why)" line stays; cells without the marker are untouched
    assert bn.split_marker("# NBVAL_IGNORE_OUTPUT\n# load\nx") == ("# load\nx", ["nbval-ignore-output"])
    assert bn.split_marker("x = 1  # NBVAL_IGNORE_OUTPUT") == ("x = 1  # NBVAL_IGNORE_OUTPUT", [])


def test_committed_notebooks_show_no_test_plumbing():
    """Learners see the lesson, not nbval's markers; the cells that need it carry the tag."""
    tagged = 0
    for nb_path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            assert "NBVAL" not in "".join(cell["source"]), nb_path.name
            tagged += "nbval-ignore-output" in cell.get("metadata", {}).get("tags", [])
    sources = "".join(p.read_text() for p in (ROOT / "scripts" / "lessons").glob("*.pct"))
    assert tagged == sources.count("# NBVAL_IGNORE_OUTPUT") > 0


def test_notebooks_match_their_sources():
    """Every committed notebook's cells are its source's cells (executing keeps sources as built)."""
    for src in sorted((ROOT / "scripts" / "lessons").glob("[0-9][0-9]_*.pct")):
        nb = json.loads((ROOT / "notebooks" / f"{src.stem}.ipynb").read_text(encoding="utf-8"))
        want = [(k, bn.split_marker(s)[0] if k == "code" else s) for k, s in bn.parse(src.read_text())]
        got = [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]
        assert got == want, src.name
