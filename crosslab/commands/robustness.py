"""``python -m crosslab robustness``: test-split R@10 of named pipelines under corrupted captions and pictures.

For each pipeline and each corruption (:mod:`crosslab.robustness`) the text->image R@10 at severities
0 (clean) to 5, and the mean relative drop (ImageNet-C's summary). Caption corruptions keep the pictures
clean; picture corruptions keep the captions clean (each corrupted picture set is extracted once and
cached).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import load_dataset


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..pipelines import list_pipelines
    from ..robustness import IMAGE_KINDS, TEXT_KINDS

    p.add_argument("--pipeline", action="append", choices=list_pipelines(), metavar="NAME",
                   help="a pipeline to score (repeatable; default: cca+glove and mlp+minilm)")
    p.add_argument("--text", action="append", choices=TEXT_KINDS, metavar="KIND",
                   help=f"a caption corruption (repeatable; {', '.join(TEXT_KINDS)}; default: all)")
    p.add_argument("--image", action="append", choices=IMAGE_KINDS, metavar="KIND",
                   help=f"a picture corruption (repeatable; {', '.join(IMAGE_KINDS)}; default: none, they take "
                   "a CNN pass over the test pictures per severity)")
    p.add_argument("--data", default="clipart",
                   help="'clipart' (embedded), 'scenes[:N]' (synthetic), or a dataset path the loaders read")
    p.add_argument("--seed", type=int, default=0, help="the corruptions' seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")


def run(args: argparse.Namespace) -> int:
    from ..pipelines import create_pipeline
    from ..robustness import TEXT_KINDS, mean_relative_drop, severity_curve

    ds = load_dataset(args.data)
    names = args.pipeline or ["cca+glove", "mlp+minilm"]
    jobs = [("text", k) for k in (args.text or TEXT_KINDS)] + [("image", k) for k in (args.image or [])]
    rows = []
    for name in names:
        p = create_pipeline(name, ds, progress=not args.json)
        for side, kind in jobs:
            c = severity_curve(p, ds, side, kind, seed=args.seed, progress=not args.json)
            rows.append({"pipeline": name, "side": side, "kind": kind, "r10": [round(v, 2) for v in c["r10"]],
                         "mean_relative_drop": round(mean_relative_drop(c), 2)})
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print(f"{ds.name}: test split, text->image R@10 at severities 0 (clean) to 5; mCE-style mean relative drop")
    for r in rows:
        curve = "  ".join(f"{v:5.1f}" for v in r["r10"])
        print(f"{r['pipeline']:>16}  {r['side']:>5} {r['kind']:<9}  {curve}   drop {r['mean_relative_drop']:5.1f} %")
    return 0
