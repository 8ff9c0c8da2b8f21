"""``python -m crosslab search "a red apple"``: the best pictures of the embedded clip art for a query.

The pipeline is created by :func:`crosslab.create_pipeline` (fitted once, then loaded
from the cache), so the first search with a pipeline takes as long as fitting it and
later ones about as long as loading torch and the encoders.
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
    if args.json:
        json.dump([{"rank": r, "id": h.id, "image_id": ds.ids[h.image], "score": round(h.score, 4),
                    "caption": h.caption, "path": h.path} for r, h in enumerate(hits, 1)], sys.stdout, indent=1)
        print()
        return 0
    print(f"{args.query!r} with {p.name}, top {len(hits)} of {len(ds):,} pictures:")
    for r, h in enumerate(hits, 1):
        print(f"{r:>3}. {h.score:7.3f}  {h.caption}  ({h.path})")
    return 0
