#!/usr/bin/env python
"""Lesson 14's numbers: corruptions, attacks and defences, each defence chosen on val, test scored once.

    python scripts/robustness.py            # -> docs/results/robustness.json (about 25 min on 2 cores)

1. **Choices on val** (the test split is not read): the augmentation's strength (``max_severity`` of
   the altered training copies), the feature-space adversarial step (``feature_eps``) and the
   modality adversary's weight (``adversary``), each by a rule stated in ``RULES`` below. The table's
   settings (``crosslab.pipelines.AUGMENT``, ``FGSM``, ``ACMR``) must equal the choices; if they do
   not, the script stops before test and says what to change.
2. **Test, once**: text->image R@10 at severities 0..5 of every caption and picture corruption for
   ``PIPES``; PGD's success rate against epsilon on a fixed sample of test pictures; the targeted
   attack; the greedy one-word attack on captions; the modality gap; and each defence against
   ``mlp+minilm`` (clean cost and corrupted drop at the middle severity, paired 95 % bootstrap
   intervals that draw whole pictures).
3. **Goals** (``GOALS``, stated before test was scored): met or missed, as measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from experiments import _clean  # noqa: E402 - scripts/ is on the path when a script runs: one JSON cleaner

OUT = ROOT / "docs" / "results" / "robustness.json"
VAL_CACHE = ROOT / "build" / "robustness_val.json"
#: Pipelines scored under corruption (the region-reading ones first: their pass also caches pooled features).
PIPES = ("pooled+glove", "attention+glove", "cca+glove", "mlp infonce", "mlp+minilm", "augmented+minilm",
         "fgsm+minilm", "acmr+minilm")
BASE = "mlp+minilm"
DEFENCES = ("augmented+minilm", "fgsm+minilm", "acmr+minilm")
MIDDLE = 3  # the middle severity, where the goals are measured
AUGMENT_SWEEP = (1, 3, 5)  # max_severity
FGSM_SWEEP = (0.1, 0.25, 0.5, 1.0)  # feature_eps
ACMR_SWEEP = (0.1, 0.3, 1.0)  # adversary
EPS = (1, 2, 4, 8)  # PGD budgets, in 1/255
N_ATTACK, N_ATTACK_VAL, STEPS = 48, 32, 10
TARGET_QUERY = "a red car"
N_WORDS = 200  # captions the one-word attack tries
WORD_PIPES = ("cca+glove", "mlp infonce", "mlp+minilm")
RULES = {
    "augment": "lowest mean val relative drop at the middle severity over every caption and picture corruption, "
               "among settings whose clean val t2i R@10 is within 2 points of mlp+minilm's",
    "fgsm": "lowest val PGD success at 1/255 (32 val pictures; at 4/255 every setting is beaten every time), then "
            "the lowest median rank the attack at 4/255 leaves, among settings whose clean val t2i R@10 is within "
            "2 points of mlp+minilm's; ties to the smaller step",
    "acmr": "highest val rSum (the rule every trained pipeline's epochs are chosen by)",
}
#: Stated before test was scored (issue "robustness").
GOALS = {"pgd_success_at_4": 90.0, "drop_ratio": 0.5, "clean_cost": 2.0}


def _variant(ctx, name: str, **changes):
    """``name``'s pipeline fitted with some settings changed (not cached: a val candidate)."""
    from crosslab.pipeline import Pipeline
    from crosslab.pipelines import FITTERS, IMAGE_ENCODER, get_spec

    spec = get_spec(name)
    st = dict(spec.settings)
    if "augment" in st:
        st["augment"] = {**st["augment"], **changes}
    else:
        st.update(changes)
    spec = dataclasses.replace(spec, settings=st)
    head, choice = FITTERS[spec.head](ctx, spec)
    return Pipeline(name, spec.kind, ctx.text_encoder(spec.text), (IMAGE_ENCODER, ctx.image_size()), head,
                    image_input=spec.image_input, choice=choice, gallery=ctx.ds)


def _attack_rows(ds, split: str, n: int, seed: int = 0):
    """``n`` pictures of ``split`` (a seeded draw) and each one's first caption."""
    from crosslab.pipelines import split_rows

    caps, imgs, _ = split_rows(ds, split)
    rows = np.sort(np.random.default_rng(seed).choice(imgs, size=min(n, len(imgs)), replace=False))
    first: dict[int, int] = {}
    for c in caps:
        first.setdefault(int(ds.caption_to_image[int(c)]), int(c))
    return rows, [ds.captions[first[int(r)]] for r in rows]


def pgd_ranks(p, ds, split: str, n: int, eps: int, *, query: str | None = None) -> np.ndarray:
    """Per attacked picture, its rank after PGD at ``eps``/255 for its own caption (or for ``query``,
    pulled towards it)."""
    from crosslab import attacks

    rows, texts = _attack_rows(ds, split, n)
    if query is not None:
        texts = [query] * len(rows)
    adv = attacks.pgd(p, [ds.load_image(int(r)) for r in rows], texts, eps=eps / 255, steps=STEPS,
                      targeted=query is not None)
    return attacks.attacked_ranks(p, ds, rows, adv, texts, split=split)[1]


def pgd_success(p, ds, split: str, n: int, eps: int, *, query: str | None = None) -> np.ndarray:
    """Per attacked picture, whether PGD at ``eps``/255 reached its aim (own caption out of the top 10, or
    with ``query``, the picture first for it)."""
    r = pgd_ranks(p, ds, split, n, eps, query=query)
    return r == 1 if query is not None else r > 10


def _drops(p, ds, split: str, severities=(0, MIDDLE)) -> dict:
    """Per corruption: the curve at ``severities`` on ``split``."""
    from crosslab.robustness import IMAGE_KINDS, TEXT_KINDS, severity_curve

    return {(side, k): severity_curve(p, ds, side, k, split=split, severities=severities)
            for side, kinds in (("text", TEXT_KINDS), ("image", IMAGE_KINDS)) for k in kinds}


def _mean_drop(curves: dict, side: str | None = None) -> float:
    return float(np.mean([100 * (c["r10"][0] - c["r10"][-1]) / c["r10"][0] for (s, _), c in curves.items()
                          if side in (None, s)]))


def _val_key() -> str:
    """What the val sweep depends on: its settings and the code that trains and attacks (not the table's
    chosen values, which the sweep decides)."""
    import hashlib

    from crosslab.pipelines import AUGMENT, TRAIN

    h = hashlib.sha256(json.dumps([AUGMENT_SWEEP, FGSM_SWEEP, ACMR_SWEEP, N_ATTACK_VAL, STEPS, RULES, TRAIN,
                                   {k: v for k, v in AUGMENT.items() if k != "max_severity"}], default=str).encode())
    for f in ("joint.py", "losses.py", "robustness.py", "attacks.py", "modality.py", "image.py", "image_models.py"):
        h.update((ROOT / "crosslab" / f).read_bytes())
    return h.hexdigest()


def choose(ds, progress: bool) -> dict:
    """The val sweeps (reused from ``build/robustness_val.json`` when nothing they depend on changed), then
    the check that the table holds the choice."""
    from crosslab._io import atomic_write_text
    from crosslab.pipelines import ACMR, AUGMENT, FGSM

    key = _val_key()
    try:
        out = json.loads(VAL_CACHE.read_text())
        if out.get("key") != key:
            raise ValueError
        print(f"val sweep: reusing {VAL_CACHE.relative_to(ROOT)}")
    except (OSError, ValueError):
        out = _sweep(ds, progress)
        out["key"] = key
        VAL_CACHE.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(VAL_CACHE, json.dumps(_clean(out), indent=1))
    table = {"max_severity": AUGMENT["max_severity"], "feature_eps": FGSM["feature_eps"], "adversary": ACMR["adversary"]}
    out["table"] = table
    if out["chosen"] != table:
        raise SystemExit(f"val chose {out['chosen']} but crosslab.pipelines has {table}: set AUGMENT / FGSM / ACMR "
                         "to the choice and run again (test is scored only with the chosen settings; the sweep is "
                         f"kept in {VAL_CACHE.relative_to(ROOT)}).")
    return out


def _sweep(ds, progress: bool) -> dict:
    from crosslab.evaluation import evaluate_pipeline
    from crosslab.pipelines import _Context, create_pipeline

    ctx = _Context(ds, None, progress)
    base = create_pipeline(BASE, ds, progress=False)
    base_r10 = evaluate_pipeline(base, ds, "val")["t2i_r10"]
    out: dict = {"rules": RULES, "base_val_t2i_r10": base_r10, "augment": [], "fgsm": [], "acmr": []}
    curves = _drops(base, ds, "val")
    out["base_val_drop"] = {"text": _mean_drop(curves, "text"), "image": _mean_drop(curves, "image"),
                            "all": _mean_drop(curves)}
    for sev in AUGMENT_SWEEP:
        t = time.time()
        p = _variant(ctx, "augmented+minilm", max_severity=sev)
        curves = _drops(p, ds, "val")
        out["augment"].append({"max_severity": sev, "val_t2i_r10": evaluate_pipeline(p, ds, "val")["t2i_r10"],
                               "val_drop_text": _mean_drop(curves, "text"), "val_drop_image": _mean_drop(curves, "image"),
                               "val_drop": _mean_drop(curves)})
        print("augment", out["augment"][-1], f"{time.time() - t:.0f} s", flush=True)
    def attacked(p) -> dict:
        r1, r4 = pgd_ranks(p, ds, "val", N_ATTACK_VAL, 1), pgd_ranks(p, ds, "val", N_ATTACK_VAL, 4)
        return {"val_pgd_success_1": 100 * float((r1 > 10).mean()), "val_pgd_success_4": 100 * float((r4 > 10).mean()),
                "val_pgd_median_rank_4": float(np.median(r4))}

    for eps in FGSM_SWEEP:
        p = _variant(ctx, "fgsm+minilm", feature_eps=eps)
        out["fgsm"].append({"feature_eps": eps, "val_t2i_r10": evaluate_pipeline(p, ds, "val")["t2i_r10"], **attacked(p)})
        print("fgsm", out["fgsm"][-1], flush=True)
    out["fgsm_base"] = {"val_t2i_r10": base_r10, **attacked(base)}
    for w in ACMR_SWEEP:
        p = _variant(ctx, "acmr+minilm", adversary=w)
        out["acmr"].append({"adversary": w, "val_rsum": evaluate_pipeline(p, ds, "val")["rsum"]})
        print("acmr", out["acmr"][-1], flush=True)
    ok = lambda r: r["val_t2i_r10"] >= base_r10 - 2  # noqa: E731
    aug = min((r for r in out["augment"] if ok(r)), key=lambda r: r["val_drop"], default=None)
    fg = min((r for r in out["fgsm"] if ok(r)), default=None,
             key=lambda r: (r["val_pgd_success_1"], r["val_pgd_median_rank_4"], r["feature_eps"]))
    ac = max(out["acmr"], key=lambda r: r["val_rsum"])
    out["chosen"] = {"max_severity": aug and aug["max_severity"], "feature_eps": fg and fg["feature_eps"],
                     "adversary": ac["adversary"]}
    return out


def _paired(a: np.ndarray, b: np.ndarray, groups) -> dict:
    """Mean of a - b (points) with a 95 % bootstrap interval drawing whole pictures."""
    from crosslab.evaluation import _draw

    boot = 100 * _draw(np.asarray(a, float), np.asarray(b, float), 1000, 0, groups)
    lo, hi = float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))
    return {"diff": 100 * float(np.mean(np.asarray(a, float) - np.asarray(b, float))), "low": lo, "high": hi,
            "real": not lo <= 0 <= hi}


def test(ds, progress: bool) -> dict:
    from crosslab import attacks
    from crosslab.modality import modality_gap
    from crosslab.pipelines import create_pipeline, split_rows
    from crosslab.robustness import (
        IMAGE_KINDS,
        SEVERITIES,
        TEXT_KINDS,
        glove_neighbours,
        mean_relative_drop,
        severity_curve,
    )

    caps, imgs, c2i = split_rows(ds, "test")
    groups = c2i
    pipes = {n: create_pipeline(n, ds, progress=False) for n in PIPES}
    curves, hits = [], {}
    for name, p in pipes.items():
        t = time.time()
        for side, kinds in (("text", TEXT_KINDS), ("image", IMAGE_KINDS)):
            for k in kinds:
                c = severity_curve(p, ds, side, k, severities=SEVERITIES, progress=progress)
                curves.append({"pipeline": name, "side": side, "kind": k, "r10": c["r10"],
                               "mean_relative_drop": mean_relative_drop(c)})
                hits[name, side, k] = [(r <= 10).astype(float) for r in c["ranks"]]
        print(name, f"{time.time() - t:.0f} s", flush=True)
    defences = []
    for d in DEFENCES:
        row = {"pipeline": d, "clean": _paired(hits[d, "text", "typo"][0], hits[BASE, "text", "typo"][0], groups)}
        for side, kinds in (("text", TEXT_KINDS), ("image", IMAGE_KINDS)):
            # per caption: the R@10 hit lost at the middle severity, averaged over the side's corruptions
            drop = {n: np.mean([hits[n, side, k][0] - hits[n, side, k][MIDDLE] for k in kinds], 0) for n in (d, BASE)}
            row[f"{side}_drop"] = {"defence": 100 * float(drop[d].mean()), "base": 100 * float(drop[BASE].mean()),
                                   "difference": _paired(drop[d], drop[BASE], groups)}
        defences.append(row)
    base = pipes[BASE]
    pgd = []
    for name, budgets in ((BASE, EPS), ("fgsm+minilm", EPS), ("augmented+minilm", (1, 4)), ("acmr+minilm", (1, 4))):
        for eps in budgets:
            r = pgd_ranks(pipes[name], ds, "test", N_ATTACK, eps)
            pgd.append({"pipeline": name, "eps": eps, "success": 100 * float((r > 10).mean()), "n": len(r),
                        "median_rank": float(np.median(r))})
            print(pgd[-1], flush=True)
    targeted = [{"pipeline": BASE, "eps": eps, "query": TARGET_QUERY,
                 "success": 100 * float(pgd_success(base, ds, "test", N_ATTACK, eps, query=TARGET_QUERY).mean())}
                for eps in (4, 8)]
    near = glove_neighbours()
    word_rows = np.sort(np.random.default_rng(0).choice(caps, size=N_WORDS, replace=False))
    words = []
    for name in WORD_PIPES:
        res = attacks.substitute_word(pipes[name], ds, word_rows, near)
        top = [r for r in res if r["rank"] <= 10]
        words.append({"pipeline": name, "n": len(res), "in_top10": len(top),
                      "success": 100 * float(np.mean([r["success"] for r in top])),
                      "examples": [{k: r[k] for k in ("text", "attacked", "rank", "attacked_rank")}
                                   for r in top if r["success"]][:3]})
    gap = {}
    for name in (BASE, "acmr+minilm"):
        p = pipes[name]
        gap[name] = modality_gap(p.encode_text(ds, rows=caps), p.encode_image(ds, rows=imgs))
    clean_r10 = {n: 100 * float(hits[n, "text", "typo"][0].mean()) for n in PIPES}
    return {"curves": curves, "clean_t2i_r10": clean_r10, "defences": defences, "pgd": pgd, "targeted": targeted,
            "words": words, "modality_gap": gap, "n_attack": N_ATTACK, "steps": STEPS, "middle": MIDDLE}


def goals(res: dict) -> list[dict]:
    pgd = {(r["pipeline"], r["eps"]): r["success"] for r in res["pgd"]}
    out = [{"goal": f"untargeted PGD succeeds on >= {GOALS['pgd_success_at_4']:.0f} % of test pictures at 4/255 "
                    f"against {BASE}", "value": pgd[BASE, 4], "met": pgd[BASE, 4] >= GOALS["pgd_success_at_4"]},
           {"goal": "adversarial training (fgsm+minilm) lowers that", "value": pgd["fgsm+minilm", 4],
            "met": pgd["fgsm+minilm", 4] < pgd[BASE, 4]}]
    best = None
    for d in res["defences"]:
        td = d["text_drop"]
        ratio = td["defence"] / td["base"] if td["base"] > 0 else float("inf")
        met = ratio <= GOALS["drop_ratio"] and d["clean"]["diff"] >= -GOALS["clean_cost"]
        if best is None or ratio < best[1]:
            best = (d["pipeline"], ratio, d["clean"]["diff"], met)
    out.append({"goal": f"a defence halves the corrupted-caption R@10 drop at severity {MIDDLE} losing <= "
                        f"{GOALS['clean_cost']:.0f} points clean", "value": {"pipeline": best[0], "drop_ratio": best[1],
                                                                              "clean_diff": best[2]},
                "met": any(d["text_drop"]["defence"] <= GOALS["drop_ratio"] * d["text_drop"]["base"]
                           and d["clean"]["diff"] >= -GOALS["clean_cost"] for d in res["defences"])})
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from crosslab.data import load_clipart

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ds = load_clipart()
    t0 = time.time()
    val = choose(ds, not args.quiet)
    res = test(ds, not args.quiet)
    out = {"val": val, "test": res, "goals": goals(res), "goals_stated": GOALS}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(_clean(out), indent=1) + "\n")
    tmp.replace(OUT)
    print(f"wrote {OUT.relative_to(ROOT)} in {time.time() - t0:.0f} s")
    for g in out["goals"]:
        print(("MET   " if g["met"] else "MISSED"), g["goal"], g["value"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
