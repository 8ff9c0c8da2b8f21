"""``python -m crosslab search "a red apple"``: the best pictures of the embedded clip art for a query.

The pipeline is created by :func:`crosslab.create_pipeline` (fitted once, then loaded
from the cache), so the first search with a pipeline takes as long as fitting it and
later ones about as long as loading torch and the encoders. ``--explain`` adds each word's share
of every hit's score (:mod:`crosslab.explain`, without the occlusion maps).
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..pipelines import DEFAULT_PIPELINE, list_pipelines

    p.add_argument("query", help="what to look for, e.g. 'a red apple'")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, choices=list_pipelines(), metavar="NAME",
                   help=f"a named pipeline (default {DEFAULT_PIPELINE}; python -m crosslab pipelines lists them)")
    p.add_argument("--k", type=int, default=5, help="how many pictures (default 5)")
    p.add_argument("--json", action="store_true", help="print a JSON list of hits")
    p.add_argument("--explain", action="store_true", help="each word's share of every hit's score (lesson 12)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")


def run(args: argparse.Namespace) -> int:
    from ..data import load_clipart
    from ..errors import CrosslabError
    from ..pipelines import create_pipeline

    if args.k < 1:
        raise CrosslabError(f"--k must be >= 1, got {args.k}.")
    ds = load_clipart()
    p = create_pipeline(args.pipeline, ds, device=args.device, progress=not args.json)
    hits = p.search(args.query, k=args.k)
    why = {}
    if args.explain:
        from ..explain import explain

        why = {h.image: explain(p, args.query, h.image, occlusion=False) for h in hits}
    if args.json:
        rows = [{"rank": r, "id": h.id, "image_id": ds.ids[h.image], "score": round(h.score, 4),
                 "caption": h.caption, "path": h.path} for r, h in enumerate(hits, 1)]
        for row, h in zip(rows, hits, strict=True):
            if h.image in why:
                e = why[h.image]
                row["explain"] = {"method": e.method, "rest": round(e.rest, 4),
                                  "words": [[w, round(float(c), 4)] for w, c in zip(e.words, e.contributions, strict=True)]}
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print(f"{args.query!r} with {p.name}, top {len(hits)} of {len(ds):,} pictures:")
    for r, h in enumerate(hits, 1):
        print(f"{r:>3}. {h.score:7.3f}  {h.caption}  ({h.path})")
        if h.image in why:
            e = why[h.image]
            shares = ", ".join(f"{w} {c:+.3f}" for w, c in zip(e.words, e.contributions, strict=True))
            print(f"       {e.method}: {shares}" + (f"; rest {e.rest:+.3f}" if e.rest else ""))
    return 0
