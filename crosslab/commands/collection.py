"""``crosslab collection SOURCE``: index your own pictures, then search them (:mod:`crosslab.collection`).

    crosslab collection ~/photos                                  # index (only new or changed files)
    crosslab collection ~/photos --query "a dog on the beach"     # ... then search by words
    crosslab collection ~/photos --like ~/photos/dog.jpg          # ... by an example picture
    crosslab collection ~/photos --describe ~/photos/cat.jpg --vocabulary imagenet   # words for a picture
    crosslab collection captions.csv --images ~/photos --pipeline cca+glove

(``python -m crosslab collection ...`` is the same.) Every run first brings the collection's store
up to date -- a second run extracts only what is new -- and lists the files it could not read. The
store lives in crosslab's cache, never in your folder.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..collection import SHIPPED
    from ..pipelines import DEFAULT_PIPELINE, list_pipelines

    p.add_argument("source", metavar="SOURCE",
                   help=f"a folder of pictures, a .csv / Karpathy / COCO .json caption file, or {' / '.join(SHIPPED)}")
    p.add_argument("--pipeline", default=DEFAULT_PIPELINE, choices=list_pipelines(), metavar="NAME",
                   help=f"a named pipeline, not a fusion (default {DEFAULT_PIPELINE}; crosslab pipelines lists them)")
    p.add_argument("--images", default=None, help="the picture folder of a caption file (default: the file's folder)")
    p.add_argument("--query", action="append", default=[], metavar="TEXT",
                   help="search the pictures by these words (repeatable)")
    p.add_argument("--like", action="append", default=[], metavar="IMAGE",
                   help="search the pictures that look like this picture file (repeatable)")
    p.add_argument("--describe", action="append", default=[], metavar="IMAGE",
                   help="rank the vocabulary's phrases for this picture file (repeatable)")
    p.add_argument("--vocabulary", default="clipart",
                   help="phrases for --describe: clipart (default), imagenet, or a text file with one phrase per line")
    p.add_argument("--k", type=int, default=10, help="results per search (default 10)")
    p.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="extract in this process (default) or on Ray Data")
    p.add_argument("--json", action="store_true", help="print the report and results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..collection import Collection
    from ..errors import CrosslabError

    if args.k < 1:
        raise CrosslabError(f"--k must be >= 1, got {args.k}.")
    col = Collection(args.source, args.pipeline, images=args.images)
    report = col.update(progress=not (args.quiet or args.json), engine=args.engine)
    out: dict = {"source": report.source, "pipeline": col.pipeline_name, "store": str(col.directory),
                 "found": report.found, "extracted": report.extracted, "already_stored": report.already_stored,
                 "duplicates": report.duplicates, "unreadable": [list(s) for s in report.unreadable],
                 "notes": report.notes, "seconds": round(report.seconds, 2), "results": []}
    if not args.json:
        print(report)
        print(f"store: {col.directory} ({len(col):,} searchable pictures, pipeline {col.pipeline_name})")

    def hits(kind: str, what: str, found: list) -> None:
        rows = [{"rank": r, "score": round(h.score, 4), "path": h.path, "caption": h.caption}
                for r, h in enumerate(found, 1)]
        out["results"].append({"kind": kind, "query": what, "hits": rows})
        if not args.json:
            print(f"\n{kind} {what!r}:")
            for row in rows:
                print(f"{row['rank']:>3}. {row['score']:7.3f}  {row['path']}" +
                      (f"  ({row['caption']})" if row["caption"] else ""))

    for q in args.query:
        hits("words", q, col.search(q, args.k))
    for im in args.like:
        hits("like", im, col.similar(im, args.k))
    for im in args.describe:
        phrases = col.describe(im, args.k, args.vocabulary)
        out["results"].append({"kind": "describe", "query": im, "vocabulary": args.vocabulary,
                               "phrases": [{"rank": r, "score": round(s, 4), "phrase": t}
                                           for r, (t, s) in enumerate(phrases, 1)]})
        if not args.json:
            print(f"\nphrases ({args.vocabulary}) for {im!r}:")
            for r, (t, s) in enumerate(phrases, 1):
                print(f"{r:>3}. {s:7.3f}  {t}")
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        print()
    return 0
