"""``python -m crosslab evaluate``: train the default models and print test-split retrieval metrics.

Models are fitted on the train split; every choice (early stopping, the CCA ridge)
is made on val; the test split is scored once. The recipe lives in
:mod:`crosslab.recipes` so lesson 05 shows the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import CrosslabError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..joint import LOSSES
    from ..recipes import DEFAULT_D, DEFAULT_ENCODER, DEFAULT_TEXT, TEXT_FEATURES

    p.add_argument("--json", action="store_true", help="print a JSON list of rows instead of a table")
    p.add_argument("--text", default=DEFAULT_TEXT, choices=TEXT_FEATURES,
                   help=f"text features: word vectors and pooling (default {DEFAULT_TEXT})")
    p.add_argument("--encoder", default=DEFAULT_ENCODER,
                   help=f"image encoder name (default {DEFAULT_ENCODER}; see crosslab.image.list_encoders())")
    p.add_argument("--d", type=int, default=DEFAULT_D, help=f"joint-space dimension (default {DEFAULT_D})")
    p.add_argument("--loss", action="append", choices=LOSSES,
                   help="train only this loss (repeatable; default: one model per loss)")
    p.add_argument("--data", default="clipart",
                   help="'clipart' (embedded), 'scenes[:N]' (synthetic), or a dataset path the "
                   "loaders read (Karpathy/COCO .json, .csv, image folder); needs train/val/test splits")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--queries", default="captions", choices=("captions", "people"),
                   help="captions (default): the test images' own captions, the models above; people: "
                   "the people-style query set (clip art only), text->image, for the models of "
                   "crosslab.beyond (cca+glove, cca+minilm, mlp+minilm, conse+..., fusion(...))")


def _load(data: str):
    """'clipart', 'scenes[:N]' (synthetic), a clip-art style folder (manifest.jsonl),
    a Karpathy / COCO JSON, a CSV, or an ImageFolder with train/val/test folders."""
    from .. import data as D

    if data == "clipart":
        return D.load_clipart()
    if data == "scenes" or data.startswith("scenes:"):
        n = data.partition(":")[2] or "1000"
        if not n.isdigit() or int(n) < 20:
            raise CrosslabError(f"--data {data}: use scenes:N with N >= 20 synthetic scenes.")
        return D.make_scenes(int(n), seed=0)
    path = Path(data)
    if not path.exists():
        raise CrosslabError(f"--data {data}: no such file or folder. Use 'clipart' or a dataset path.")
    if path.is_dir():
        return D.load_clipart(path) if (path / "manifest.jsonl").is_file() else D.load_image_folder(path)
    if path.suffix.lower() in (".csv", ".tsv"):
        return D.load_csv(path)
    if path.suffix.lower() == ".json":
        head = path.read_text(encoding="utf-8", errors="replace")[:100_000]
        return D.load_coco(path) if '"annotations"' in head else D.load_karpathy(path)
    raise CrosslabError(
        f"--data {data}: unknown kind of dataset; give a folder, a .json (Karpathy / COCO) or a .csv file."
    )


def run(args: argparse.Namespace) -> int:
    from ..recipes import run_evaluation
    from ..retrieval import ROW_KEYS, results_table

    if args.d < 1:
        raise CrosslabError(f"--d must be >= 1, got {args.d}.")
    if args.queries == "people":
        return _run_people(args)
    ds = _load(args.data)
    rows = run_evaluation(
        ds, text=args.text, encoder=args.encoder, d=args.d, losses=args.loss,
        progress=not args.quiet and not args.json, device=args.device,
    )
    if args.json:
        json.dump([{k: r[k] for k in ROW_KEYS} for r in rows], sys.stdout, indent=1)
        print()
    else:
        import pandas as pd

        with pd.option_context("display.width", 140, "display.max_columns", 20):
            print(f"{ds.name}: test split, {args.text} text features, {args.encoder} images, d={args.d}")
            print(results_table(rows).to_string(float_format=lambda v: f"{v:.1f}"))
    return 0


def _run_people(args: argparse.Namespace) -> int:
    """``--queries people``: the recipe of :mod:`crosslab.beyond`, text->image on the people-style set."""
    from ..beyond import run_beyond
    from ..retrieval import ROW_KEYS

    if args.data != "clipart":
        raise CrosslabError(
            f"--queries people: the people-style query set is written for the embedded clip art; "
            f"use --data clipart (got {args.data!r})."
        )
    ds = _load(args.data)
    rows = run_beyond(ds, queries=("people",), progress=not args.quiet and not args.json, device=args.device)
    if args.json:
        json.dump([{k: r[k] for k in (*ROW_KEYS, "queries")} for r in rows], sys.stdout, indent=1)
        print()
        return 0
    import pandas as pd

    keys = ["name", "kind", "t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr", "choice"]
    print(f"{ds.name}: people-style queries, text->image over the {int((ds.split == 'test').sum())} "
          "test images (i2t: not applicable); val chose reg / T / w")
    with pd.option_context("display.width", 140, "display.max_columns", 20):
        for q in dict.fromkeys(r["queries"] for r in rows):
            table = pd.DataFrame([r for r in rows if r["queries"] == q], columns=keys).set_index("name")
            print(f"\n{q} ({_count(q, rows)})")
            print(table.to_string(float_format=lambda v: f"{v:.1f}"))
    return 0


def _count(q: str, rows: list) -> str:
    n = next((r.get("n_queries") for r in rows if r["queries"] == q), None)
    return f"{n} queries" if n is not None else "queries"
