"""``python -m crosslab pipelines``: the table of named pipelines, what each is and needs."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..pipelines import DEFAULT_PIPELINE, PIPELINES

    rows = [{"name": s.name, "kind": s.kind, "about": s.about, "needs": s.needs(),
             "default": s.name == DEFAULT_PIPELINE} for s in PIPELINES.values()]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    w = max(len(r["name"]) for r in rows)
    k = max(len(r["kind"]) for r in rows)
    for r in rows:
        mark = "  (default)" if r["default"] else ""
        print(f"{r['name']:<{w}}  {r['kind']:<{k}}  {r['about']}{mark}")
        print(f"{'':<{w}}  {'':<{k}}  needs: {r['needs']}")
    return 0
