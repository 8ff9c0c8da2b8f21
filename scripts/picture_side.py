#!/usr/bin/env python
"""Choose the picture side on val: render size x image encoder, scored by val rSum and val people-style queries.

    python scripts/picture_side.py            # -> docs/results/picture_side.json (about 20 min on 2 cores)

Needs the Debian package ``openclipart-svg`` and ``rsvg-convert`` (the same as
``scripts/build_clipart.py``): each candidate render size is rebuilt from the SVGs into a
temporary folder with that script (same manifest, same split, same dedupe at 144 px), so only
the pixels change. For each candidate the three pipelines whose heads read pooled features or
logits are fitted on train with every choice on val, exactly as the table fits them
(``cca+minilm``, ``mlp+minilm``, ``conse+minilm``), and scored on the **val** split only:

* val rSum of the captions (both directions, R@1/5/10);
* val people-style queries, text -> image R@10 (the queries people wrote looking at the pictures);
* each candidate minus the current one, paired over the same val captions (whole pictures drawn) and
  the same people-style queries: text -> image R@10 with a 95 % bootstrap interval (val noise);
* extraction cost (milliseconds per picture, median of 3 timed passes over 64 val pictures on this
  machine, after one warm-up) and the size of the rendered PNGs.

The test split is never read. The result is written without timings' noise in the choice: the
course adopts the candidate with the best mean of the two val scores' ranks only if its cost keeps
the lessons inside their time budget (see docs/experiments.md, "The picture side").
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "docs" / "results" / "picture_side.json"
#: (render size, encoder, input size): the current set first.
CANDIDATES = [(144, "efficientnet_lite0", 160), (144, "efficientnet_lite0", 224),
              (224, "efficientnet_lite0", 224), (256, "efficientnet_lite2", 260)]
PIPES = ("cca+minilm", "mlp+minilm", "conse+minilm")
RANKS: dict[str, list] = {}  # pipeline -> per candidate: (val caption t2i ranks, val people ranks, c2i)


def _render(size: int, tmp: Path) -> Path:
    if size == 144:
        from crosslab.data.clipart import clipart_dir

        return clipart_dir()
    out = tmp / f"render{size}"
    if not (out / "manifest.jsonl").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "build_clipart.py"), "--out", str(out),
                        "--size", str(size)], check=True)
    return out


def _ms_per_picture(enc, ds, rows) -> float:
    imgs = [ds.load_image(int(i)) for i in rows]
    enc.extract(imgs, cache=False, progress=False)  # warm-up
    times = []
    for _ in range(3):
        t = time.perf_counter()
        enc.extract(imgs, cache=False, progress=False)
        times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times) / len(imgs)


def score_candidate(render: int, encoder: str, size: int, tmp: Path) -> dict:
    from crosslab import pipelines as P
    from crosslab.data import load_clipart
    from crosslab.data.people import load_people_queries
    from crosslab.evaluation import evaluate, ranks
    from crosslab.image import ImageEncoder
    from crosslab.pipeline import Pipeline

    root = _render(render, tmp)
    ds = load_clipart(root)
    enc = ImageEncoder(encoder, image_size=size)

    class Ctx(P._Context):
        def image_encoder(self):
            return enc

    ctx = Ctx(ds, None, True)
    caps, imgs, c2i = ctx.rows["val"]
    people = load_people_queries(ds, split="val")
    out: dict = {"render": render, "encoder": encoder, "image_size": size, "pipelines": {}}
    for name in PIPES:
        spec = P.get_spec(name)
        head, choice = P.FITTERS[spec.head](ctx, spec)
        p = Pipeline(name, spec.kind, ctx.text_encoder(spec.text), (encoder, size), head,
                     image_input=spec.image_input, gallery=ds)
        V = p.encode_image(ds, rows=imgs)
        S = p.score(p.encode_text(ds, rows=caps), V)
        rsum = evaluate(S, c2i)["rsum"]
        r = ranks(p.score(p.encode_text(list(people.texts)), V), np.asarray(people.targets))[0]
        out["pipelines"][name] = {"val_rsum": round(float(rsum), 2),
                                  "val_people_r10": round(100.0 * float((r <= 10).mean()), 2)}
        RANKS.setdefault(name, []).append((ranks(S, c2i)[0], r, c2i))
        print(f"render {render} {encoder}@{size} {name}: {out['pipelines'][name]}", flush=True)
    out["ms_per_picture"] = round(_ms_per_picture(enc, ds, imgs[:64]), 1)
    out["png_mb"] = round(sum(f.stat().st_size for f in (root / "images").glob("*.png")) / 1e6, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--tmp", type=Path, default=None, help="where the renders go (default: a temporary folder)")
    args = ap.parse_args(argv)
    import torch

    from crosslab._io import atomic_write_text

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as t:
        tmp = args.tmp or Path(t)
        rows = [score_candidate(*c, tmp) for c in CANDIDATES]
    from crosslab.evaluation import paired_bootstrap

    for name in PIPES:  # each candidate against the current one, paired over the same val queries
        (r0, p0, groups), *others = RANKS[name]
        for row, (r, p, _) in zip(rows[1:], others, strict=True):
            row["pipelines"][name]["vs_current"] = {
                "captions_t2i_r10": paired_bootstrap(r, r0, 10, groups=groups),
                "people_r10": paired_bootstrap(p, p0, 10)}
    result = {"candidates": rows, "pipelines": list(PIPES),
              "machine": {"cpus": __import__("os").cpu_count(), "torch": torch.__version__}}
    atomic_write_text(args.out, json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
