"""The embedded clip-art set: counts, captions, the fixed split, and a byte-for-byte rebuild check."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from crosslab.data import dedupe, load_clipart
from crosslab.data.clipart import DEFAULT_ROOT
from crosslab.errors import DataError, SchemaError

REPO = Path(__file__).resolve().parents[1]
SRC = Path("/usr/share/openclipart/svg")


@pytest.fixture(scope="module")
def ds():
    return load_clipart()


def test_counts_and_captions(ds):
    assert len(ds) >= 2500
    assert ds.n_captions >= len(ds)
    assert all(c.strip() for c in ds.captions)
    per_image = np.bincount(ds.caption_to_image, minlength=len(ds))
    assert per_image.min() >= 1
    # the first caption of every image is its cleaned title, a substring of the second when present
    for i in range(0, len(ds), 97):
        caps = ds.image_captions(i)
        assert caps[0] == caps[0].strip() and "_" not in caps[0]
        if len(caps) > 1 and ", a drawing of " in caps[1]:
            assert caps[1].startswith(caps[0])


def test_meta_fields(ds):
    for m in ds.meta[:: len(ds) // 50]:
        assert set(m) >= {"title", "keywords", "description", "category", "category_path", "source"}
        assert m["source"].endswith(".svg") and m["source"].startswith(m["category"])
        assert isinstance(m["keywords"], list)


def test_images_exist_and_decode(ds):
    files = {p.name for p in (DEFAULT_ROOT / "images").iterdir()}
    assert {Path(f).name for f in ds.images} == files  # no stray or missing files
    for i in range(0, len(ds), 301):
        im = ds.load_image(i)
        assert im.mode == "RGB" and im.size == (144, 144)
        arr = np.asarray(im)
        assert (arr[0, 0] == 255).all() or (arr == 255).all(axis=2).any()  # drawn on white


def test_committed_images_match_manifest_checksums():
    rows = [json.loads(line) for line in (DEFAULT_ROOT / "manifest.jsonl").open()]
    for row in rows:
        data = (DEFAULT_ROOT / row["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"], row["file"]


def test_total_size_within_budget():
    total = sum(p.stat().st_size for p in DEFAULT_ROOT.rglob("*") if p.is_file())
    assert total <= 30_000_000


def test_fixed_split_proportions_and_stratification(ds):
    n = len(ds)
    counts = Counter(ds.split)
    assert counts["test"] >= 500
    assert abs(counts["test"] / n - 0.2) < 0.01
    assert abs(counts["val"] / n - 0.1) < 0.01
    assert counts["train"] + counts["val"] + counts["test"] == n
    # stratified: within every category of 10+ images, each split is within one image of its share
    cats = np.array([m["category"] for m in ds.meta])
    for c in set(cats):
        idx = cats == c
        k = int(idx.sum())
        if k < 10:
            continue
        for s, p in (("test", 0.2), ("val", 0.1)):
            assert abs(int((ds.split[idx] == s).sum()) - k * p) <= 1, (c, s)


def test_split_subsets(ds):
    assert len(ds.train) + len(ds.val) + len(ds.test) == len(ds)
    assert set(ds.test.ids).isdisjoint(ds.train.ids)


def test_no_drawing_on_both_sides_of_a_split(ds):
    """No two pictures in different splits are identical or near-identical (crosslab.data.dedupe)."""
    sha = [json.loads(line)["sha256"] for line in (DEFAULT_ROOT / "manifest.jsonl").open()]
    by_sha: dict[str, set] = {}
    for h, s in zip(sha, ds.split, strict=True):
        by_sha.setdefault(h, set()).add(s)
    assert all(len(v) == 1 for v in by_sha.values())
    thumbs = dedupe.thumbnails(ds.root / f for f in ds.images)
    pairs = dedupe.cross_split_pairs(thumbs, ds.split)
    assert pairs == [], [(ds.ids[i], ds.ids[j], d) for i, j, d in pairs]


def test_dedupe_record_agrees_with_the_manifest(ds):
    """build.json lists each removed drawing with the one kept; none removed is in the set."""
    build = json.loads((DEFAULT_ROOT / "build.json").read_text())
    sources = {m["source"] for m in ds.meta}
    removed = [d for d in build["duplicates"] if d["reason"] != "kept both"]
    assert removed and all(d["removed"] not in sources and d["kept"] in sources for d in removed)
    assert all(d["distance"] <= build["dedupe"]["threshold"] for d in removed)
    kept_both = [d for d in build["duplicates"] if d["reason"] == "kept both"]
    assert all(build["dedupe"]["threshold"] < d["distance"] <= build["dedupe"]["looked_at_up_to"]
               and {d["kept"], d["also_kept"]} <= sources for d in kept_both)
    n = Counter(d["reason"] for d in removed)
    assert build["dropped"]["same drawing as an earlier file: identical PNG"] == n["identical PNG"]
    assert (build["dropped"]["same drawing as an earlier file: near-identical render"]
            == n["near-identical render"])


def test_missing_or_bad_manifest(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        load_clipart(tmp_path)
    (tmp_path / "manifest.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(SchemaError, match="missing fields"):
        load_clipart(tmp_path)
    (tmp_path / "manifest.jsonl").write_text("{not json\n")
    with pytest.raises(SchemaError, match="not valid JSON"):
        load_clipart(tmp_path)


def _one_row_manifest(root: Path, file: str) -> Path:
    row = {"id": "x", "file": file, "split": "train", "captions": ["a cat"],
           "title": "cat", "keywords": [], "description": "", "category": "animals",
           "category_path": "animals", "source": "animals/cat.svg"}
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    return root / "manifest.jsonl"


@pytest.mark.parametrize("entry", ["../secret.png", "images/../../secret.png", "ABSOLUTE"])
def test_manifest_entries_must_stay_inside_root(tmp_path, entry):
    """A `file` entry leading out of the folder is refused, naming the entry and the manifest."""
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for reading")
    entry = str(secret) if entry == "ABSOLUTE" else entry
    manifest = _one_row_manifest(tmp_path / "set", entry)
    with pytest.raises(DataError, match="outside the clip-art folder") as e:
        load_clipart(tmp_path / "set")
    assert repr(entry) in str(e.value) and f"{manifest}:1" in str(e.value)


def test_manifest_entry_through_a_link_leading_out(tmp_path):
    (tmp_path / "secret.png").write_bytes(b"not for reading")
    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "images" / "x.png").symlink_to(tmp_path / "secret.png")
    manifest = _one_row_manifest(root, "images/x.png")
    with pytest.raises(DataError, match="resolves outside") as e:
        load_clipart(root)
    assert "'images/x.png'" in str(e.value) and str(manifest) in str(e.value)


def test_manifest_entry_inside_root_loads(tmp_path):
    _one_row_manifest(tmp_path / "set", "images/x.png")
    ds = load_clipart(tmp_path / "set")
    assert ds.images == ["images/x.png"] and ds.captions == ["a cat"]


def test_build_only_requires_out():
    """`--only N` without `--out` would overwrite the committed manifest: argparse refuses it."""
    manifest = DEFAULT_ROOT / "manifest.jsonl"
    before = manifest.stat().st_mtime_ns, manifest.read_bytes()
    script = str(REPO / "scripts" / "build_clipart.py")
    for extra in ([], ["--out", str(DEFAULT_ROOT)]):
        proc = subprocess.run([sys.executable, script, "--only", "3", *extra],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "error: --only" in proc.stderr and "--out" in proc.stderr, proc.stderr
    assert (manifest.stat().st_mtime_ns, manifest.read_bytes()) == before
    helptext = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                              timeout=60).stdout
    assert "Requires --out" in helptext


@pytest.mark.slow
def test_rebuild_matches_committed(tmp_path):
    """Re-run the build on the Debian package: same manifest, same bytes for a subset of images."""
    if not SRC.is_dir():
        pytest.skip(
            "Debian package openclipart-svg is not installed (apt-get install openclipart-svg)"
        )
    if shutil.which("rsvg-convert") is None:
        pytest.skip("rsvg-convert is not installed (apt-get install librsvg2-bin)")
    out = tmp_path / "clipart"
    # A full rebuild takes about a minute on 2 cores; 40 images spread over the set suffice here.
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "build_clipart.py"),
            "--out",
            str(out),
            "--only",
            "40",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    committed = [json.loads(line) for line in (DEFAULT_ROOT / "manifest.jsonl").open()]
    rebuilt = [json.loads(line) for line in (out / "manifest.jsonl").open()]
    assert len(rebuilt) == len(committed)
    rendered = sorted(p.name for p in (out / "images").iterdir())
    assert len(rendered) == 40
    for old, new in zip(committed, rebuilt, strict=True):
        if new["sha256"]:
            assert new == old
            data = (out / new["file"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == old["sha256"]
            assert data == (DEFAULT_ROOT / old["file"]).read_bytes()
        else:
            assert {**new, "sha256": old["sha256"]} == old
    built = json.loads((out / "build.json").read_text())
    ref = json.loads((DEFAULT_ROOT / "build.json").read_text())
    for key in ("n_items", "n_captions", "dropped", "counts", "size", "format", "rules_version",
                "duplicates", "dedupe"):
        assert built[key] == ref[key], key
