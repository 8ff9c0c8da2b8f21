"""Build the lesson notebooks from their plain-text sources in ``scripts/lessons/``.

    python scripts/build_notebooks.py            # every lesson -> notebooks/NN_name.ipynb (no outputs)
    python scripts/build_notebooks.py 03 05      # only these
    python scripts/run_course.py --inplace --only 03   # then execute it and keep the outputs
    python scripts/build_notebooks.py --strip-widget-state   # drop stored widget state (all lessons)
    python scripts/build_notebooks.py --keep-outputs 03      # keep the outputs of unchanged code cells

A source ``NN_name.pct`` is Python in the "percent" format (as jupytext writes it; not
``.py`` so that linters skip the IPython magics): a line
``# %%`` starts a code cell, ``# %% [markdown]`` a Markdown cell whose lines are
comments (``# `` is stripped). Sources diff and review like code; the committed
notebooks carry the executed outputs that nbval checks.

Test plumbing stays out of the learner's view: a code cell whose first line is
``# NBVAL_IGNORE_OUTPUT`` (optionally followed by a ``# (why)`` line, which the source
keeps for reviewers) gets the cell tag ``nbval-ignore-output`` instead, and both
lines are left out of the notebook.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "scripts" / "lessons"
NOTEBOOKS = ROOT / "notebooks"


def parse(text: str) -> list[tuple[str, str]]:
    """``[(kind, source)]`` cells of a percent-format script (kind: "code" or "markdown")."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            kind, lines = cells[-1]
            if kind == "markdown":
                line = line[2:] if line.startswith("# ") else line.lstrip("#")
            lines.append(line)
    out = []
    for kind, lines in cells:
        src = "\n".join(lines).strip("\n")
        if src.strip():
            out.append((kind, src))
    return out


IGNORE_MARKER = "# NBVAL_IGNORE_OUTPUT"
IGNORE_TAG = "nbval-ignore-output"


def split_marker(source: str) -> tuple[str, list[str]]:
    """``(source without the nbval marker lines, tags)`` of one code cell."""
    lines = source.split("\n")
    if not lines or lines[0].strip() != IGNORE_MARKER:
        return source, []
    rest = lines[1:]
    if rest and rest[0].startswith("# (") and rest[0].rstrip().endswith(")"):
        rest = rest[1:]
    return "\n".join(rest).strip("\n"), [IGNORE_TAG]


def build(src: Path, keep_outputs: bool = False) -> Path:
    """Write ``notebooks/<src stem>.ipynb`` (outputs empty) from one source file.

    ``keep_outputs``: a code cell whose source is unchanged keeps its outputs from the notebook
    already there, provided *every* code cell is unchanged (a markdown-only edit); otherwise the
    outputs would no longer match the code, so the build refuses and asks for a re-run.
    """
    from crosslab._io import atomic_write_text

    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, (kind, source) in enumerate(parse(src.read_text(encoding="utf-8"))):
        tags: list[str] = []
        if kind == "code":
            source, tags = split_marker(source)
            if "NBVAL" in source:
                raise SystemExit(f"{src.name}: cell {i}: an nbval marker must be the cell's first line")
        cell = (nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell)(source)
        if tags:
            cell.metadata["tags"] = tags
        cell.id = f"{src.stem[:2]}-{i:03d}"  # stable ids: rebuilding does not churn the diff
        nb.cells.append(cell)
    out = NOTEBOOKS / f"{src.stem}.ipynb"
    if keep_outputs and out.exists():
        old_nb = nbformat.read(out, as_version=4)
        old = [c for c in old_nb.cells if c.cell_type == "code"]
        # The executed notebook's metadata (language_info) stays; the widget state never does.
        nb.metadata = {k: v for k, v in old_nb.metadata.items() if k != "widgets"}
        new = [c for c in nb.cells if c.cell_type == "code"]
        if [c.source for c in old] != [c.source for c in new]:
            raise SystemExit(f"{src.name}: code cells changed, so the outputs cannot be kept; "
                             f"build without --keep-outputs and run the lesson")
        for o, n in zip(old, new, strict=True):
            n.outputs, n.execution_count = o.outputs, o.execution_count
    nbformat.validate(nb)
    atomic_write_text(out, nbformat.writes(nb) + "\n")
    return out


def strip_widget_state(path: Path) -> None:
    """Drop the widget state nbclient stores in an executed notebook's metadata.

    It holds every widget's data (thumbnails included) under random model ids, so it
    churns on every run; the lessons re-create their widgets when executed.
    """
    from crosslab._io import atomic_write_text

    nb = nbformat.read(path, as_version=4)
    if nb.metadata.pop("widgets", None) is not None:
        atomic_write_text(path, nbformat.writes(nb) + "\n")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--strip-widget-state"]:
        for name in argv[1:] or [p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")]:
            path = NOTEBOOKS / name if not Path(name).exists() else Path(name)
            strip_widget_state(path)
        return 0
    keep = "--keep-outputs" in argv
    argv = [a for a in argv if a != "--keep-outputs"]
    srcs = sorted(SOURCES.glob("[0-9][0-9]_*.pct"))
    if argv:
        srcs = [s for s in srcs if any(s.name.startswith(a) for a in argv)]
    if not srcs:
        print(f"no lesson sources matching {argv} in {SOURCES}", file=sys.stderr)
        return 1
    for s in srcs:
        print(build(s, keep_outputs=keep).relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
