"""``python -m crosslab evaluate``: fit named pipelines and print test-split retrieval metrics.

Each pipeline (:mod:`crosslab.pipelines`) is fitted on the train split with every
choice made on val; the test split is scored once. Lessons 05 and 07 call the same
:func:`crosslab.evaluation.run`, so they show the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import CrosslabError
from . import load_dataset


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..pipelines import LESSON05, LESSON08, list_pipelines

    p.add_argument("--pipeline", action="append", choices=list_pipelines(), metavar="NAME",
                   help="evaluate this pipeline (repeatable; python -m crosslab pipelines lists them). "
                   f"Default: lesson 05's ({', '.join(LESSON05)}) with --queries captions, "
                   f"lesson 08's ({', '.join(LESSON08)}) with --queries people")
    p.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    p.add_argument("--data", default="clipart",
                   help="'clipart' (embedded), 'scenes[:N]' (synthetic), or a dataset path the "
                   "loaders read (Karpathy/COCO .json, .csv, image folder); needs train/val/test splits")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--queries", default="captions", choices=("captions", "people"),
                   help="captions (default): the test images' own captions, both directions; people: "
                   "the people-style query set (clip art only), text->image")


def run(args: argparse.Namespace) -> int:
    from ..evaluation import ROW_KEYS, results_table, run
    from ..pipelines import LESSON05, LESSON08

    people = args.queries == "people"
    if people and args.data != "clipart":
        raise CrosslabError(
            f"--queries people: the people-style query set is written for the embedded clip art; "
            f"use --data clipart (got {args.data!r})."
        )
    ds = load_dataset(args.data)
    names = args.pipeline or (LESSON08 if people else LESSON05)
    rows = run(names, ds, queries=(args.queries,), progress=not args.quiet and not args.json, device=args.device)
    if args.json:
        keys = (*ROW_KEYS, "t2i_r10_ci", "i2t_r10_ci", "queries", "n_queries")
        json.dump([{k: r[k] for k in keys} for r in rows], sys.stdout, indent=1)
        print()
        return 0
    import pandas as pd

    with pd.option_context("display.width", 140, "display.max_columns", 20):
        if not people:
            print(f"{ds.name}: test split, own captions, both directions")
            print(results_table(rows).to_string(float_format=lambda v: f"{v:.1f}"))
            return 0
        keys = ["name", "kind", "t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr", "choice"]
        print(f"{ds.name}: people-style queries, text->image over the {int((ds.split == 'test').sum())} "
              "test images (i2t: not applicable); val chose reg / T / w")
        for q in dict.fromkeys(r["queries"] for r in rows):
            group = [r for r in rows if r["queries"] == q]
            print(f"\n{q} ({group[0]['n_queries']} queries)")
            print(pd.DataFrame(group, columns=keys).set_index("name").to_string(float_format=lambda v: f"{v:.1f}"))
    return 0
