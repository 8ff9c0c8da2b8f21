"""Every generated section of the docs equals what its JSON renders to (scripts/render_docs.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("render_docs", ROOT / "scripts" / "render_docs.py")
rd = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rd)


def test_every_generated_section_is_up_to_date():
    stale = rd.render(check=True)
    assert stale == [], f"stale sections {stale}: run `python scripts/render_docs.py`"


def test_each_section_has_its_markers_once():
    for rel, name, _ in rd.SECTIONS:
        text = (ROOT / rel).read_text(encoding="utf-8")
        assert text.count(f"<!-- {name}:start -->") == 1 and text.count(f"<!-- {name}:end -->") == 1, (rel, name)


def test_a_typed_edit_inside_a_section_is_caught(tmp_path):
    """The check can fail: change one number inside a rendered table and it reports that section."""
    for rel, *_ in rd.SECTIONS:
        dst = tmp_path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, dst)
    readme = tmp_path / "data" / "README.md"
    text = readme.read_text(encoding="utf-8")
    start = text.index("<!-- clipart-categories:start -->")
    row = text.index("| **all** |", start)
    readme.write_text(text[:row] + "| **all** | 1 | 2 | 3 | 6 |" + text[text.index("\n", row):],
                      encoding="utf-8")
    assert rd.render(check=True, root=tmp_path) == ["data/README.md#clipart-categories"]
    assert rd.render(root=tmp_path) == ["data/README.md#clipart-categories"]  # and re-rendering fixes it
    assert rd.render(check=True, root=tmp_path) == []


def test_tables_say_what_the_json_says():
    """Spot checks against the JSON, independent of the renderer's formatting code paths."""
    exp = json.loads((ROOT / "docs" / "results" / "experiments.json").read_text())
    doc = (ROOT / "docs" / "experiments.md").read_text(encoding="utf-8")
    for r in exp["lesson05"] + exp["lesson08_captions"]:
        assert f"| {r['name']} | {r['t2i_r1']:.1f} / {r['t2i_r5']:.1f} / {r['t2i_r10']:.1f} |" in doc
    for c in exp["comparisons"]:
        assert f"| {c['a']} − {c['b']} | {c['diff']:+.1f} |" in doc
        assert ("**real**" if c["real"] else "noise") in doc
    build = json.loads((ROOT / "data" / "clipart" / "build.json").read_text())
    assert f"**{build['n_items']:,}**" in (ROOT / "data" / "README.md").read_text(encoding="utf-8")


def test_missing_markers_are_a_clear_error():
    with pytest.raises(SystemExit, match="needs exactly one"):
        rd.replace_section("no markers here", "x", "body", "some.md")
