"""``python -m crosslab index build|search|info DIR``: a vector store on disk (:mod:`crosslab.store`).

    python -m crosslab index build my-store                    # default pipeline, the clip art
    python -m crosslab index build my-store --pipeline cca+glove --folder ~/photos
    python -m crosslab index build my-store --folder ~/photos --engine ray   # extraction on Ray Data
    python -m crosslab index search my-store "a red apple" --k 5

``build`` fits (or loads from the cache) the named pipeline on ``--train`` (default: the
embedded clip art, the data every named pipeline is fitted on), embeds the ``--data``
collection's pictures, or every picture under ``--folder`` (:func:`crosslab.distributed.index_folder`,
in this process or on Ray Data), and writes them with the pipeline into DIR; the ANN index is built
when the store is big enough. Run on an existing store it resumes: only pictures not stored
yet are added. ``search`` reopens the store in a new process: no fitting, no gallery.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import load_dataset


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..pipelines import DEFAULT_PIPELINE, list_pipelines

    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="embed a collection's pictures into a store DIR (resumes)")
    b.add_argument("dir", metavar="DIR", help="the store's directory (new, empty, or a store to add to)")
    b.add_argument("--pipeline", default=None, choices=list_pipelines(), metavar="NAME",
                   help=f"a named pipeline, not a fusion (default {DEFAULT_PIPELINE}; python -m crosslab pipelines)")
    what = b.add_mutually_exclusive_group()
    what.add_argument("--data", default=None,
                      help="a dataset to store: clipart (default), scenes[:N], a class-per-sub-folder image folder, "
                      "a .json or .csv")
    what.add_argument("--folder", default=None,
                      help="any folder of pictures (searched recursively, only read; no captions needed)")
    b.add_argument("--engine", default="local", choices=("local", "ray"),
                   help="with --folder: extract in this process (default) or on Ray Data")
    b.add_argument("--address", default=None,
                   help="with --engine ray: a Ray cluster to connect to (default RAY_ADDRESS, else local)")
    b.add_argument("--images", default=None, help="image folder for a .json/.csv --data file")
    b.add_argument("--train", default="clipart", help="the captioned data the pipeline is fitted on (default clipart)")
    b.add_argument("--overwrite", action="store_true", help="replace the store in DIR (never other files)")
    b.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    s = sub.add_parser("search", help="the pictures of a store DIR that best match a query")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("query", help="what to look for, e.g. 'a red apple'")
    s.add_argument("--k", type=int, default=5, help="how many pictures (default 5)")
    s.add_argument("--exact", action="store_true", help="scan every vector instead of using the ANN index")
    s.add_argument("--json", action="store_true", help="print a JSON list of hits")
    i = sub.add_parser("info", help="what a store DIR holds and how it searches")
    i.add_argument("dir", metavar="DIR")


def run(args: argparse.Namespace) -> int:
    return {"build": _build, "search": _search, "info": _info}[args.action](args)


def _build(args: argparse.Namespace) -> int:
    from ..errors import CrosslabError
    from ..pipelines import DEFAULT_PIPELINE, create_pipeline, get_spec
    from ..store import META, VectorStore, check_target

    t_all = time.perf_counter()
    if (Path(args.dir).expanduser() / META).is_file() and not args.overwrite:
        store = VectorStore.open(args.dir)
        if args.pipeline not in (None, store.meta["pipeline"]):
            raise CrosslabError(f"{args.dir} holds vectors of {store.meta['pipeline']!r}, not {args.pipeline!r}: "
                                "pass --overwrite to rebuild it with another pipeline, or another DIR.")
        print(f"resuming : {store.describe()}")
    else:
        check_target(args.dir, overwrite=args.overwrite)  # before minutes of fitting, not after
        name = args.pipeline or DEFAULT_PIPELINE
        if get_spec(name).parts:
            raise CrosslabError(f"{name!r} is a fusion: it has no single vector per picture. Store one of its "
                                f"parts ({' or '.join(get_spec(name).parts)}).")
        t0 = time.perf_counter()
        train = load_dataset(args.train)
        p = create_pipeline(name, train, device=args.device, progress=not args.quiet)
        print(f"pipeline : {name} ({'loaded' if p.cache_info_.hit else 'fitted'} on {args.train} "
              f"in {time.perf_counter() - t0:.1f} s)")
        store = VectorStore.create(args.dir, p, overwrite=args.overwrite)
    store.auto_index = False
    t0 = time.perf_counter()
    if args.folder is not None:
        from ..distributed import index_folder

        print(f"folder   : {args.folder} (extraction: {args.engine})")
        stats = index_folder(args.folder, store, engine=args.engine, address=args.address, progress=not args.quiet)
        print(f"added    : {stats['extracted']:,} pictures in {time.perf_counter() - t0:.1f} s "
              f"({stats['skipped']:,} already stored, {stats['duplicates']:,} duplicates, "
              f"{stats['unreadable']:,} unreadable)")
        for path, why in stats["unreadable_files"][:10]:
            print(f"           skipped {path}: {why}")
    else:
        data = load_dataset(args.data or "clipart", args.images)
        print(f"data     : {data!r}")
        added = store.add_dataset(data, progress=not args.quiet)
        print(f"added    : {added:,} pictures in {time.perf_counter() - t0:.1f} s "
              f"({len(data) - added:,} already stored or duplicates)")
    t0 = time.perf_counter()
    built = store.update_index()
    print(f"index    : {'built' if built else 'unchanged'} in {time.perf_counter() - t0:.2f} s")
    print(f"store    : {store.describe()}")
    print(f"total    : {time.perf_counter() - t_all:.1f} s")
    return 0


def _search(args: argparse.Namespace) -> int:
    from ..errors import CrosslabError
    from ..store import VectorStore

    if args.k < 1:
        raise CrosslabError(f"--k must be >= 1, got {args.k}.")
    t0 = time.perf_counter()
    store = VectorStore.open(args.dir)
    hits = store.search_text(args.query, k=args.k, exact=args.exact)
    if args.json:
        json.dump([{"rank": r, "id": h.id, "score": round(h.score, 4), "key": h.key, "caption": h.caption,
                    "path": h.path} for r, h in enumerate(hits, 1)], sys.stdout, indent=1)
        print()
        return 0
    print(f"{args.query!r} in {store.directory} ({store.meta['pipeline']}), top {len(hits)} of {len(store):,} "
          f"pictures in {time.perf_counter() - t0:.2f} s:")
    for r, h in enumerate(hits, 1):
        print(f"{r:>3}. {h.score:7.3f}  {h.caption or ''}  ({h.path or h.key[:12]})")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ..store import VectorStore

    print(VectorStore.open(args.dir).describe())
    return 0
