#!/usr/bin/env python
"""Render every generated section of the docs from the JSON that a command in the repo writes.

    python scripts/render_docs.py           # rewrite the sections in place
    python scripts/render_docs.py --check   # exit 1 and name each section that differs

A generated section sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in a
Markdown file; the text between the markers is a function of one JSON source only:

==========================================  =============================================
source                                      written by
==========================================  =============================================
``data/clipart/build.json`` + manifest      ``python scripts/build_clipart.py``
``data/people_queries/*.csv``               (the query sets themselves)
``docs/results/experiments.json``           ``python scripts/experiments.py``
``docs/results/picture_side.json``          ``python scripts/picture_side.py`` (needs openclipart-svg)
``docs/results/robustness.json``            ``python scripts/robustness.py``
``docs/results/course_timings.json``        ``python scripts/run_course.py --cold-warm --readme``
==========================================  =============================================

``tests/test_generated_docs.py`` runs ``--check``, so a typed edit inside a section, or a JSON
refreshed without re-rendering, fails the tests.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIPART = ROOT / "data" / "clipart"
PEOPLE = ROOT / "data" / "people_queries"
EXPERIMENTS = ROOT / "docs" / "results" / "experiments.json"
TIMINGS = ROOT / "docs" / "results" / "course_timings.json"
PICTURE_SIDE = ROOT / "docs" / "results" / "picture_side.json"
ROBUSTNESS = ROOT / "docs" / "results" / "robustness.json"


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _manifest() -> list[dict]:
    with open(CLIPART / "manifest.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def n(x: int) -> str:
    return f"{x:,}"


def f1(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ----- data/README.md ----------------------------------------------------------------------
RULES = [  # (key in build.json "dropped", how the README names the rule), in the build's order
    ("symbolic link to another file of the package", "symbolic links to other files of the package"),
    ("duplicate drawing (same content, other folder)",
     "same drawing as an earlier file (SVG compared with its metadata and editor attributes "
     "stripped; first path in sorted order kept)"),
    ("icon theme", "icon themes (titles \"Part of the Flat Icon Collection\", \"Lemon SVG theme\", "
     "\"gold-theme\", \"blueberry - iconset\", \"plastik-icon-theme\"; keywords `lemon_theme_icon`, "
     "`mimetypes`)"),
    ("generated star shapes", "the generated \"gramastar\" star shapes"),
    ("card deck", "card decks (`cards/` folders, title \"card\")"),
    ("gradient swatches", "gradient swatches (\"SVG Gradient Collection\")"),
    ("pattern / gradient swatches", "pattern and gradient swatches (keywords `gradient`/`pattern`/"
     "`texture`, folders `patterns/`, `gradients/`, `backgrounds/`)"),
    ("empty title", "title empty"),
    ("title not English, or a collection name",
     "title not English, or a collection name, and the file name gives no English title either"),
    ("title shared by more than 3 drawings (first 3 kept)",
     "title shared by more than 3 drawings: the first 3 (in hash order) kept"),
    ("rsvg-convert cannot render it, or it renders blank",
     "`rsvg-convert` cannot parse the file or it renders blank (listed by name in the script)"),
    ("same drawing as an earlier file: identical PNG",
     "**same picture on both sides**: identical PNG to an earlier file (below)"),
    ("same drawing as an earlier file: near-identical render",
     "**same picture on both sides**: near-identical render of an earlier file (below)"),
]


def clipart_summary() -> str:
    build, items = _json(CLIPART / "build.json"), _manifest()
    split = Counter(it["split"] for it in items)
    ncap = [len(it["captions"]) for it in items]
    words = [len(c.split()) for it in items for c in it["captions"]]
    size = sum(p.stat().st_size for p in CLIPART.rglob("*") if p.is_file())
    pct = {s: round(100 * split[s] / len(items)) for s in ("train", "val", "test")}
    return table(["what", "value"], [
        ["images", f"{n(len(items))} RGB PNGs, {build['size']} x {build['size']} px, drawing fitted "
                   "and centred on white (`clipart/images/<id>.png`)"],
        ["captions", f"{n(sum(ncap))} ({min(ncap)}–{max(ncap)} per image, median "
                     f"{statistics.median(words):g} words)"],
        ["split", f"train {n(split['train'])} / val {n(split['val'])} / test {n(split['test'])} "
                  f"({pct['train']} / {pct['val']} / {pct['test']} %, stratified by category)"],
        ["only a title (no usable keywords)", n(sum(c == 1 for c in ncap)) + " images"],
        ["with a description caption", n(sum(len(c := it["captions"]) > 1 and ", a drawing of " not in c[-1]
                                             for it in items)) + " images"],
        ["title from the file name (rule below)", n(sum(it["title_from_file"] for it in items)) + " images"],
        ["size", f"{size / 1e6:.1f} MB in all"],
        ["manifest", "`clipart/manifest.jsonl`, one JSON object per image; `clipart/build.json`, "
                     "counts, the dedupe record and tool versions"],
        ["load", "`crosslab.data.load_clipart()`"],
    ])


def clipart_rules() -> str:
    build = _json(CLIPART / "build.json")
    dropped = dict(build["dropped"])
    rows = []
    for key, label in RULES:
        rows.append([label, n(dropped.pop(key))])
    if dropped:
        raise SystemExit(f"{CLIPART / 'build.json'}: rules without a README label: {sorted(dropped)}; "
                         "add them to RULES in scripts/render_docs.py")
    rows.append(["**kept**", f"**{n(build['n_items'])}**"])
    return table(["rule", "removed"], rows, "lr")


def clipart_dedupe() -> str:
    build = _json(CLIPART / "build.json")
    d = build["dedupe"]
    removed = [r for r in build["duplicates"] if r["reason"] != "kept both"]
    kept = [r for r in build["duplicates"] if r["reason"] == "kept both"]
    rows = [[r["kept_title"], r["removed_title"], f"{r['distance']:.4f}", r["reason"]] for r in removed]
    closest = kept[0] if kept else None
    text = (f"Threshold {d['threshold']} (`crosslab.data.dedupe.THRESHOLD`), pictures compared at "
            f"{d['render_size']} px. {len(removed)} drawings removed ("
            f"{sum(r['reason'] == 'identical PNG' for r in removed)} identical PNGs, "
            f"{sum(r['reason'] == 'near-identical render' for r in removed)} near-identical renders); "
            f"{len(kept)} more pairs up to distance {d['looked_at_up_to']} were looked at and kept as "
            "different drawings (all listed in `build.json`")
    if closest:
        text += (f"; the closest kept pair: \"{closest['kept_title']}\" / "
                 f"\"{closest['also_kept_title']}\", {closest['distance']:.4f}")
    text += ").\n\n"
    return text + table(["kept", "removed", "distance", "why"], rows, "llrl")


def clipart_categories() -> str:
    build = _json(CLIPART / "build.json")
    cats = sorted(build["counts"].items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    rows, tot = [], Counter()
    for c, v in cats:
        tot.update(v)
        rows.append([c] + [n(v.get(s, 0)) for s in ("train", "val", "test")] + [n(sum(v.values()))])
    rows.append(["**all**"] + [n(tot[s]) for s in ("train", "val", "test")] + [n(sum(tot.values()))])
    return table(["category", "train", "val", "test", "total"], rows, "lrrrr")


# ----- data/people_queries/README.md ---------------------------------------------------------
def _people(split: str) -> str:
    path = PEOPLE / ("queries.csv" if split == "test" else "queries_val.csv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    items = {it["id"]: it for it in _manifest()}
    ids = sorted({r["id"] for r in rows})
    n_split = sum(it["split"] == split for it in items.values())
    cats = Counter(items[i]["category"] for i in ids)
    top = cats.most_common(6)
    rest = len(ids) - sum(c for _, c in top)
    cat_text = ", ".join(f"{c} {k.replace('_', ' ')}" for k, c in top)
    if rest:
        cat_text += f", {rest} from {len(cats) - len(top)} other categories"
    kinds = Counter(r["kind"] for r in rows)
    wl = {k: [len(r["query"].split()) for r in rows if r["kind"] == k] for k in ("short", "description")}
    words = "; ".join(f"`{k}` {min(v)}–{max(v)} (median {statistics.median(v):g})" for k, v in wl.items())
    return table(["what", "value"], [
        ["target drawings", f"{len(ids)}, all in the {split} split (of {n(n_split)}); {cat_text}"],
        ["queries", f"{len(rows)}: {kinds['short']} `short` + {kinds['description']} `description`"],
        ["words per query", words],
    ])


# ----- docs/experiments.md -------------------------------------------------------------------
def _exp() -> dict:
    return _json(EXPERIMENTS)


def exp_data() -> str:
    d = _exp()["data"]
    im, cap = d["images"], d["captions"]
    return (f"Data: the embedded clip-art set ({n(d['n_images'])} images, {n(d['n_captions'])} captions; "
            f"{n(im['train'])} / {n(im['val'])} / {n(im['test'])} images and {n(cap['train'])} / "
            f"{n(cap['val'])} / {n(cap['test'])} captions in train / val / test). Of the "
            f"{n(cap['test'])} test captions, {n(d['test_captions_unseen'])} never occur word for word "
            f"among the train captions (\"unseen\"). People-style queries: {d['people_test_queries']} "
            f"for {d['people_test_drawings']} test drawings, {d['people_val_queries']} for "
            f"{d['people_val_drawings']} val drawings.")


def _grid(v: dict) -> str:
    best = max(v, key=v.get)
    return ", ".join(f"**{k}: {s:.1f}**" if k == best else f"{k}: {s:.1f}" for k, s in v.items())


def exp_choices() -> str:
    rows = []
    for name, c in _exp()["choices"].items():
        if "reg" in c:
            rows.append([name, f"ridge {c['reg']:g}", "val rSum by ridge: " + _grid(c["val_rsum"])])
        elif "best_epoch" in c:
            vs, best = c["val_rsum"], c["best_epoch"]
            at = vs[best] if "start" in c else vs[best - 1]  # a fine-tuned one scores its start as entry 0
            kept = (f"val rSum {at:.1f} at the kept epoch" if best else
                    f"no epoch beat the start ({c.get('start', 'its initialisation')}) on val: the start was kept")
            rows.append([name, f"epoch {best} of {c['epochs_run']}",
                         f"{kept}; the curve's range {min(vs):.1f}–{max(vs):.1f}"])
        elif "T" in c and "temperature" in c:
            best = max(c["val_rsum"].values())
            rows.append([name, f"T = {c['T']}, temperature {c['temperature']:g}",
                         f"best val rSum {best:.1f} over {len(c['val_rsum'])} settings"])
        elif "w" in c:
            scores = c.get("val_rsum") or {}
            detail = _grid({f"w {k}": v for k, v in scores.items()}) if isinstance(scores, dict) else ""
            rows.append([name, f"w = {c['w']:g}", f"on {c.get('chosen_on', '?')}: {detail}"])
        else:
            rows.append([name, "nothing to choose", ""])
    return table(["pipeline", "choice", "val scores along the grid"], rows)


def _ci(r: dict, key: str) -> str:
    ci = r.get(key)
    return f"{ci[0]:.1f}–{ci[1]:.1f}" if ci else "—"


def _caption_rows(rows: list[dict]) -> str:
    body = []
    for r in rows:
        body.append([r["name"], f"{f1(r['t2i_r1'])} / {f1(r['t2i_r5'])} / {f1(r['t2i_r10'])}",
                     _ci(r, "t2i_r10_ci"), f"{r['t2i_medr']:g}",
                     f"{f1(r['i2t_r1'])} / {f1(r['i2t_r5'])} / {f1(r['i2t_r10'])}", _ci(r, "i2t_r10_ci"),
                     f1(r["rsum"]), f"{f1(r.get('t2i_unseen_r10'))} ({_ci(r, 't2i_unseen_r10_ci')})"])
    n_q, n_new = rows[0]["n_queries"], rows[0].get("n_unseen")
    return (f"{n(n_q)} test captions (text→image) and their images (image→text); the last column is "
            f"text→image R@10 on the {n(n_new or 0)} unseen captions alone.\n\n"
            + table(["model", "t2i R@1 / R@5 / R@10", "t2i R@10 95% CI", "t2i MedR",
                     "i2t R@1 / R@5 / R@10", "i2t R@10 95% CI", "rSum", "t2i R@10 unseen (CI)"],
                    body, "lllrllrl"))


def exp_lesson05() -> str:
    return _caption_rows(_exp()["lesson05"])


def exp_lesson08_captions() -> str:
    return _caption_rows(_exp()["lesson08_captions"])


def exp_lesson08_people() -> str:
    rows = _exp()["lesson08_people"]
    by = {(r["name"], r["queries"]): r for r in rows}
    names = list(dict.fromkeys(r["name"] for r in rows))
    body = []
    for m in names:
        a = by[m, "people"]
        body.append([m, f"{f1(a['t2i_r1'])} / {f1(a['t2i_r5'])} / **{f1(a['t2i_r10'])}** "
                        f"({a['t2i_medr']:g})", _ci(a, "t2i_r10_ci"),
                     f1(by[m, "people:short"]["t2i_r10"]), f1(by[m, "people:description"]["t2i_r10"])])
    k = {q: by[names[0], q]["n_queries"] for q in ("people", "people:short", "people:description")}
    return table(["model", f"all {k['people']}: R@1 / R@5 / **R@10** (MedR)", "R@10 95% CI",
                  f"{k['people:short']} short", f"{k['people:description']} descriptions (no object name)"],
                 body, "llrrr")


def exp_comparisons() -> str:
    body = []
    for c in _exp()["comparisons"]:
        verdict = "**real**" if c["real"] else "noise: cannot tell"
        body.append([c["queries"], f"{c['a']} − {c['b']}", f"{c['diff']:+.1f}",
                     f"[{c['low']:+.1f}, {c['high']:+.1f}]", verdict])
    return table(["queries", "difference (text→image R@10)", "points", "95% CI (paired)", "verdict"],
                 body, "llrrl")


def exp_goal() -> str:
    c = _exp()["chosen"]
    g, d = c["goal"], c["gain"]
    scores = ", ".join(f"{k} {v:.1f}" for k, v in sorted(c["val_score"].items(), key=lambda kv: -kv[1]))
    verdict = "**met**" if c["met"] else "**missed**"
    return (f"Chosen on the val people-style queries (R@1+R@5+R@10): `{c['name']}` ({scores}). "
            f"Goal, stated before test was scored: at least +{g['min_gain_r10']:g} points of people-style "
            f"text→image R@10 over `{g['baseline']}`, its paired 95% interval excluding 0, and no lower "
            f"own-caption R@10. Test: {d['diff']:+.1f} points, 95% CI [{d['low']:+.1f}, {d['high']:+.1f}]; "
            f"own captions " + " vs ".join(f"{v:.1f}" for v in c["own_captions_r10"].values()) + f": {verdict}.")


def exp_lesson12() -> str:
    return _caption_rows(_exp()["lesson12"])


def exp_attention_sweep() -> str:
    rows = _exp()["attention_sweep"]
    best = max(r["val_rsum"] for r in rows)

    def name(v: dict) -> str:
        return "pooled (lam = 0)" if v.get("pooled") else f"{v['direction']}, lam = {v['lam']:g}"

    body = [[name(r["variant"]), f"**{r['val_rsum']:.1f}**" if r["val_rsum"] == best else f"{r['val_rsum']:.1f}",
             str(r["best_epoch"])] for r in rows]
    return table(["variant", "val rSum", "best epoch"], body, "lrr")


def exp_attention_goal() -> str:
    out = []
    for g in _exp()["attention_goals"]:
        d = g["test_gain"]
        out.append(f"* `{g['a']}` above `{g['b']}` on text→image R@10, on val and on test with a paired 95% "
                   f"interval (whole pictures drawn) above 0. Val: {g['val_gain']:+.1f} points; test: "
                   f"{d['diff']:+.1f} points, 95% CI [{d['low']:+.1f}, {d['high']:+.1f}]: "
                   f"{'**met**' if g['met'] else '**missed**'}.")
    return "Goals, stated before test was scored:\n\n" + "\n".join(out)


def exp_twins() -> str:
    t = _exp()["twins"]
    res = t["results"]
    first = next(iter(res.values()))
    body = [[m] + [f"{r[k]['share']:.1f} [{r[k]['low']:.1f}, {r[k]['high']:.1f}]" for k in ("binding", "relation")]
            for m, r in res.items()]
    return (f"`make_scenes({t['settings']['n']}, seed={t['settings']['seed']}, hard_pairs=True)`, each model "
            f"fitted on its train split; test: {first['binding']['pairs']} binding and {first['relation']['pairs']} "
            "relation pairs, 5 captions per picture. Share (%) of (picture, caption) where the own caption "
            "outscores its twin; 95% interval drawing whole pairs.\n\n"
            + table(["model", "binding (colours swapped)", "relation (places swapped)"], body, "lll"))


def picture_side() -> str:
    d = _json(PICTURE_SIDE)
    body = []
    for c in d["candidates"]:
        m = c["pipelines"]["mlp+minilm"]
        vs = m.get("vs_current")
        diff = (f"{vs['captions_t2i_r10']['diff']:+.1f} [{vs['captions_t2i_r10']['low']:+.1f}, "
                f"{vs['captions_t2i_r10']['high']:+.1f}] / {vs['people_r10']['diff']:+.1f} "
                f"[{vs['people_r10']['low']:+.1f}, {vs['people_r10']['high']:+.1f}]") if vs else "(the current set)"
        body.append([f"{c['render']} px", f"{c['encoder']} at {c['image_size']}",
                     " / ".join(f"{c['pipelines'][p]['val_rsum']:.1f}" for p in d["pipelines"]),
                     " / ".join(f"{c['pipelines'][p]['val_people_r10']:.1f}" for p in d["pipelines"]),
                     diff, f"{c['ms_per_picture']:.0f}", f"{c['png_mb']:.0f}"])
    names = " / ".join(d["pipelines"])
    return (f"Val only. Extraction time measured on {d['machine']['cpus']} CPU cores (median of 3 passes over 64 "
            "val pictures).\n\n"
            + table(["render", "encoder at input size", f"val rSum ({names})", f"val people R@10 ({names})",
                     "mlp+minilm minus the current: val t2i R@10 / people R@10 (95% CI)", "ms per picture",
                     "PNGs (MB)"], body, "llllrrr"))


def exp_finetune_sweep() -> str:
    rows = _exp()["finetune_sweep"]
    best = max(r["val_rsum"] for r in rows)
    body = [[str(r["variant"]["blocks"]), str(r["variant"]["views"]),
             "trained" if r["variant"]["towers_lr"] else "frozen", f"{r['frozen_val_rsum']:.1f}",
             f"**{r['val_rsum']:.1f}**" if r["val_rsum"] == best else f"{r['val_rsum']:.1f}",
             f"{r['best_epoch']} of {r['epochs_run']}"] for r in rows]
    return table(["MBConv blocks trained (+ the head convolution)", "augmented views", "towers",
                  "val rSum at the start", "val rSum kept", "best epoch"], body, "rrlrrr")


def exp_lesson13() -> str:
    rows = _exp()["lesson13"]
    return _caption_rows([r for r in rows if r["queries"] == "captions"]) + "\n\nPeople-style test queries:\n\n" + \
        table(["model", "R@1 / R@5 / **R@10** (MedR)", "R@10 95% CI"],
              [[r["name"], f"{f1(r['t2i_r1'])} / {f1(r['t2i_r5'])} / **{f1(r['t2i_r10'])}** ({r['t2i_medr']:g})",
                _ci(r, "t2i_r10_ci")] for r in rows if r["queries"] == "people"], "llr")


def exp_finetune_goals() -> str:
    e = _exp()
    out = []
    for g in e["finetune_goals"]:
        what = "own captions" if g["queries"] == "captions" else "people-style queries"
        rule = "val t2i R@10" if g["queries"] == "captions" else "val people R@1+R@5+R@10"
        ci = f", 95% CI {g['ci'][0]:.1f}–{g['ci'][1]:.1f}" if g.get("ci") else ""
        out.append(f"* {what}: test text→image R@10 ≥ {g['target_r10']:g} for the pipeline chosen on val ({rule}): "
                   f"`{g['chosen']}`, test {g['test_r10']:.1f}{ci}: {'**met**' if g['met'] else '**missed**'}.")
    for d in e["finetune_diffs"]:
        out.append(f"* `{d['a']}` − `{d['b']}`, {d['queries']}, text→image R@10: {d['diff']:+.1f} points, paired 95% "
                   f"CI [{d['low']:+.1f}, {d['high']:+.1f}]: {'**real**' if d['real'] else 'noise: cannot tell'}.")
    return "Goals, stated before test was scored, and the difference fine-tuning makes:\n\n" + "\n".join(out)


def _pm(d: dict) -> str:
    return f"{d['diff']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]" + (" **real**" if d["real"] else " noise")


def rob_choices() -> str:
    v = _json(ROBUSTNESS)["val"]
    ch = v["chosen"]
    aug = [[str(r["max_severity"]), f"{r['val_t2i_r10']:.1f}", f"{r['val_drop_text']:.1f}",
            f"{r['val_drop_image']:.1f}", f"**{r['val_drop']:.1f}**" if r["max_severity"] == ch["max_severity"]
            else f"{r['val_drop']:.1f}"] for r in v["augment"]]
    b = v["base_val_drop"]
    aug.insert(0, ["none (mlp+minilm)", f"{v['base_val_t2i_r10']:.1f}", f"{b['text']:.1f}", f"{b['image']:.1f}",
                   f"{b['all']:.1f}"])
    fg = [[f"{r['feature_eps']:g}" if "feature_eps" in r else "0 (mlp+minilm)", f"{r['val_t2i_r10']:.1f}",
           f"**{r['val_pgd_success_1']:.1f}**" if r.get("feature_eps") == ch["feature_eps"] else f"{r['val_pgd_success_1']:.1f}",
           f"{r['val_pgd_success_4']:.1f}", f"{r['val_pgd_median_rank_4']:g}"] for r in [v["fgsm_base"], *v["fgsm"]]]
    ac = [[f"{r['adversary']:g}", f"**{r['val_rsum']:.1f}**" if r["adversary"] == ch["adversary"]
           else f"{r['val_rsum']:.1f}"] for r in v["acmr"]]
    return (f"Val only; `mlp+minilm`'s clean val t2i R@10 is {v['base_val_t2i_r10']:.1f}.\n\n"
            f"*Augmentation* ({v['rules']['augment']}):\n\n"
            + table(["max severity of the training copies", "clean val t2i R@10",
                     f"val relative drop at severity {_json(ROBUSTNESS)['test']['middle']}, captions (%)",
                     "pictures (%)", "all (%)"], aug, "lrrrr")
            + f"\n\n*Feature-space adversarial training* ({v['rules']['fgsm']}):\n\n"
            + table(["feature_eps (training std)", "clean val t2i R@10", "val PGD success at 1/255 (%)",
                     "at 4/255 (%)", "median rank after 4/255"], fg, "lrrrr")
            + f"\n\n*Modality adversary* ({v['rules']['acmr']}):\n\n"
            + table(["adversary weight", "val rSum"], ac, "rr"))


def rob_curves() -> str:
    t = _json(ROBUSTNESS)["test"]
    kinds = list(dict.fromkeys((c["side"], c["kind"]) for c in t["curves"]))
    drop = {(c["pipeline"], c["side"], c["kind"]): c["mean_relative_drop"] for c in t["curves"]}
    body = [[f"`{p}`", f"{t['clean_t2i_r10'][p]:.1f}", *(f"{drop[p, s, k]:.0f}" for s, k in kinds)]
            for p in t["clean_t2i_r10"]]
    return ("Test split. Clean text→image R@10, then the mean relative drop of R@10 over severities 1–5 (%, "
            "ImageNet-C's summary; lower is more robust) for each caption (t, text) and picture (i, image) corruption:\n\n"
            + table(["pipeline", "clean R@10", *(f"{s[0]}: {k}" for s, k in kinds)], body, "l" + "r" * (len(kinds) + 1)))


def rob_defences() -> str:
    t = _json(ROBUSTNESS)["test"]
    body = [[f"`{d['pipeline']}`", _pm(d["clean"]),
             f"{d['text_drop']['defence']:.1f} vs {d['text_drop']['base']:.1f}: {_pm(d['text_drop']['difference'])}",
             f"{d['image_drop']['defence']:.1f} vs {d['image_drop']['base']:.1f}: {_pm(d['image_drop']['difference'])}"]
            for d in t["defences"]]
    pgd = {(r["pipeline"], r["eps"]): r for r in t["pgd"]}
    eps = sorted({r["eps"] for r in t["pgd"]})
    pipes = list(dict.fromkeys(r["pipeline"] for r in t["pgd"]))
    atk = [[f"`{p}`", *(f"{pgd[p, e]['success']:.0f}" if (p, e) in pgd else "—" for e in eps)] for p in pipes]
    words = [[f"`{w['pipeline']}`", f"{w['in_top10']} of {w['n']}", f"{w['success']:.0f}"] for w in t["words"]]
    gap = [[f"`{n}`", f"{g['mean_distance']:.2f}", f"{g['probe_accuracy']:.2f}"] for n, g in t["modality_gap"].items()]
    tg = "; ".join(f"{r['eps']}/255: {r['success']:.0f} %" for r in t["targeted"])
    return (f"Test split. Each defence minus `mlp+minilm`, in R@10 points, paired 95% bootstrap intervals drawing "
            f"whole pictures; a *drop* is the R@10 lost at severity {t['middle']}, averaged over the side's "
            "corruptions (defence vs undefended, then their difference):\n\n"
            + table(["defence", "clean t2i R@10 difference", f"caption drop at severity {t['middle']}",
                     f"picture drop at severity {t['middle']}"], body, "llll")
            + f"\n\nUntargeted PGD ({t['steps']} steps) on {t['n_attack']} test pictures: the share (%) whose own "
              "caption no longer finds them in the top 10, by budget epsilon (/255):\n\n"
            + table(["pipeline", *(f"{e}/255" for e in eps)], atk, "l" + "r" * len(eps))
            + f"\n\nTargeted PGD against `mlp+minilm` (the picture first for \"{t['targeted'][0]['query']}\"): {tg}."
            + "\n\nGreedy one-word substitution (GloVe neighbours) on test captions whose picture was in the top 10:\n\n"
            + table(["pipeline", "captions in the top 10", "pushed out by one word (%)"], words, "lrr")
            + "\n\nModality gap on test (distance between the modalities' mean unit vectors; a linear probe's "
              "cross-validated accuracy at telling them apart, 0.5 = chance):\n\n"
            + table(["pipeline", "mean distance", "probe accuracy"], gap, "lrr"))


def rob_goals() -> str:
    def value(v) -> str:
        if isinstance(v, dict):
            return (f"closest, `{v['pipeline']}`: its drop is {v['drop_ratio']:.2f} of the undefended one's, clean "
                    f"R@10 {v['clean_diff']:+.1f} points")
        return f"{v:.0f} %"

    out = [f"* {g['goal']}: {value(g['value'])} -> {'**met**' if g['met'] else '**missed**'}."
           for g in _json(ROBUSTNESS)["goals"]]
    return "Goals, stated before test was scored:\n\n" + "\n".join(out)


# ----- README.md -----------------------------------------------------------------------------
def course_timings() -> str:
    spec = importlib.util.spec_from_file_location("run_course", ROOT / "scripts" / "run_course.py")
    rc = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_course", rc)  # dataclasses look their module up there
    spec.loader.exec_module(rc)
    return rc.timings_table(_json(TIMINGS))


SECTIONS: list[tuple[str, str, Callable[[], str]]] = [
    ("data/README.md", "clipart-summary", clipart_summary),
    ("data/README.md", "clipart-rules", clipart_rules),
    ("data/README.md", "clipart-dedupe", clipart_dedupe),
    ("data/README.md", "clipart-categories", clipart_categories),
    ("data/people_queries/README.md", "people-test", lambda: _people("test")),
    ("data/people_queries/README.md", "people-val", lambda: _people("val")),
    ("docs/experiments.md", "data", exp_data),
    ("docs/experiments.md", "choices", exp_choices),
    ("docs/experiments.md", "lesson05", exp_lesson05),
    ("docs/experiments.md", "lesson08-captions", exp_lesson08_captions),
    ("docs/experiments.md", "lesson08-people", exp_lesson08_people),
    ("docs/experiments.md", "comparisons", exp_comparisons),
    ("docs/experiments.md", "goal", exp_goal),
    ("docs/experiments.md", "lesson12", exp_lesson12),
    ("docs/experiments.md", "attention-sweep", exp_attention_sweep),
    ("docs/experiments.md", "attention-goal", exp_attention_goal),
    ("docs/experiments.md", "twins", exp_twins),
    ("docs/experiments.md", "picture-side", picture_side),
    ("docs/experiments.md", "finetune-sweep", exp_finetune_sweep),
    ("docs/experiments.md", "lesson13", exp_lesson13),
    ("docs/experiments.md", "finetune-goals", exp_finetune_goals),
    ("docs/experiments.md", "robustness-choices", rob_choices),
    ("docs/experiments.md", "robustness-curves", rob_curves),
    ("docs/experiments.md", "robustness-defences", rob_defences),
    ("docs/experiments.md", "robustness-goals", rob_goals),
    ("README.md", "course-timings", course_timings),
]


def replace_section(text: str, name: str, body: str, where: str) -> str:
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1:
        raise SystemExit(f"{where}: needs exactly one {start} ... {end} pair")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def render(check: bool = False, root: Path = ROOT) -> list[str]:
    """Render every section; return ``file#section`` of those that changed (check: would change)."""
    sys.path.insert(0, str(ROOT))
    from crosslab._io import atomic_write_text

    changed, texts = [], {}
    for rel, name, fn in SECTIONS:
        path = root / rel
        old = texts.get(rel, path.read_text(encoding="utf-8"))
        new = replace_section(old, name, fn(), rel)
        if new != old:
            changed.append(f"{rel}#{name}")
        texts[rel] = new
    if not check:
        for rel, text in texts.items():
            if text != (root / rel).read_text(encoding="utf-8"):
                atomic_write_text(root / rel, text)
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a section is stale")
    args = ap.parse_args(argv)
    changed = render(check=args.check)
    for c in changed:
        print(("stale: " if args.check else "rendered: ") + c)
    if args.check and changed:
        print("run `python scripts/render_docs.py` (after the command that writes its JSON)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
