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


def test_keep_outputs_only_for_markdown_edits(tmp_path, monkeypatch):
    import nbformat

    monkeypatch.setattr(bn, "NOTEBOOKS", tmp_path)
    src = tmp_path / "99_demo.pct"
    src.write_text("# %% [markdown]\n# Hello\n\n# %%\nprint(1)\n")
    out = bn.build(src)
    nb = nbformat.read(out, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="1\n")]
    nbformat.write(nb, out)
    src.write_text("# %% [markdown]\n# Hello, edited\n\n# %%\nprint(1)\n")
    nb = nbformat.read(bn.build(src, keep_outputs=True), as_version=4)
    assert nb.cells[0].source == "Hello, edited" and nb.cells[1].outputs[0]["text"] == "1\n"
    src.write_text("# %% [markdown]\n# Hello\n\n# %%\nprint(2)\n")
    import pytest
    with pytest.raises(SystemExit, match="code cells changed"):
        bn.build(src, keep_outputs=True)
