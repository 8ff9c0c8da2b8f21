"""crosslab.collection and ``crosslab collection``: your own folder, indexed and searched.

Real clip-art PNGs are copied into a temporary folder; the pipeline is ``cca+glove`` (fitted
once, from the shared ``CROSSLAB_CACHE`` where other tests fit it too), and every store goes
to a temporary directory, never into the cache's ``collections/``. Searches are held to a
brute-force reference: the pipeline's own image and text embeddings, scored by numpy.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import crosslab.collection as col_mod
import crosslab.store
from crosslab.collection import Collection, read_picture
from crosslab.data.base import MAX_IMAGE_PIXELS, load_image
from crosslab.errors import CrosslabError, DataError, ImageError, QueryError

pytest.importorskip("lancedb")

PIPELINE = "cca+glove"  # the cheapest real pipeline: regularised CCA on GloVe means
CLIPART = Path(__file__).resolve().parents[1] / "data" / "clipart"
N = 12  # pictures in a test folder


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def clipart() -> list[tuple[Path, str]]:
    """Clip-art files with distinct bytes (by the manifest's SHA-256), in id order: (path, first caption)."""
    rows, seen = [], set()
    for line in (CLIPART / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if r["sha256"] not in seen:
            seen.add(r["sha256"])
            rows.append((r["id"], CLIPART / r["file"], r["captions"][0]))
    rows.sort()
    return [(p, c) for _, p, c in rows[:40]]


@pytest.fixture(scope="module")
def pipeline():
    """The pipeline, fitted (or loaded from the cache) once: every Collection here then loads it."""
    import crosslab as cl

    return cl.create_pipeline(PIPELINE, progress=False)


def _folder(root: Path, files: list[tuple[Path, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for p, _ in files:
        shutil.copy(p, root / p.name)
    return root


@pytest.fixture
def pics(tmp_path, clipart, pipeline) -> Path:
    """A fresh folder of N clip-art PNGs (the pipeline fixture makes sure it is fitted first)."""
    return _folder(tmp_path / "pics", clipart[:N])


def _snapshot(root: Path) -> list[tuple]:
    """Everything about a folder a write would change: names, kinds, modes, sizes, mtimes (links not followed)."""
    out = []
    for p in [root, *sorted(root.rglob("*"))]:
        st = p.lstat()
        out.append((str(p.relative_to(root)), stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size,
                    st.st_mtime_ns))
    return out


def _unit(X):
    X = np.asarray(X, np.float64)
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def _reference(pipeline, paths: list[str], query: str) -> dict[str, float]:
    """path -> cosine of ``query`` against each picture: the pipeline's two towers and numpy, no store."""
    V = np.asarray(pipeline.encode_image([load_image(p) for p in paths]))
    t = np.asarray(pipeline.encode_text([query]))[0]
    return dict(zip(paths, (_unit(V) @ _unit(t)).tolist(), strict=True))


def _bomb_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` black pixels, written without ever holding them."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row, z = b"\x00" + bytes((width + 7) // 8), zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, colour type 0 (grey)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _new(folder, tmp_path, **kw) -> Collection:
    return Collection(folder, PIPELINE, directory=tmp_path / "store", **kw)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, clipart, pipeline):
    """One folder indexed once, for the tests that only read it: (collection, folder, its files)."""
    root = tmp_path_factory.mktemp("indexed")
    folder = _folder(root / "pics", clipart[:N])
    col = Collection(folder, PIPELINE, directory=root / "store")
    report = col.update(progress=False)
    return col, folder, report


# ----------------------------------------------------------------------------- a folder indexes
@pytest.mark.slow
def test_a_folder_indexes_and_searches_like_brute_force(indexed, pipeline, clipart):
    col, folder, report = indexed
    files = sorted(str(p) for p in folder.iterdir())
    assert (report.found, report.extracted, report.already_stored, report.duplicates) == (N, N, 0, 0)
    assert report.unreadable == [] and report.searchable == N == len(col)
    assert not col.directory.resolve().is_relative_to(folder.resolve())

    for _, caption in clipart[:3]:  # words -> pictures: the towers' cosine, ranked by numpy
        hits = col.search(caption, k=5)
        ref = _reference(pipeline, files, caption)
        assert len(hits) == 5 and len({h.path for h in hits}) == 5
        assert all(h.path in ref and Path(h.path).is_file() and h.caption is None for h in hits)
        np.testing.assert_allclose([h.score for h in hits], sorted(ref.values(), reverse=True)[:5], atol=1e-4)
        np.testing.assert_allclose([h.score for h in hits], [ref[h.path] for h in hits], atol=1e-4)
    everything = col.search("a drawing of an animal", k=100)  # more than there are: each picture once
    assert sorted(h.path for h in everything) == files

    for path in files[:3]:  # a picture -> itself first, at cosine 1
        hits = col.similar(path, k=4)
        assert hits[0].path == path and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert len(hits) == 4 and all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    by_bytes = col.similar(Path(files[1]).read_bytes(), k=1)  # the same picture given as a file's bytes
    assert by_bytes[0].path == files[1]
    with pytest.raises(QueryError):
        col.search("a cat", k=0)
    with pytest.raises(QueryError):
        col.search("   ")


@pytest.mark.slow
def test_a_copy_counts_as_a_duplicate_and_is_returned_once(pics, tmp_path):
    files = sorted(pics.iterdir())
    shutil.copy(files[0], pics / "copy.png")
    col = _new(pics, tmp_path)
    r = col.update(progress=False)
    assert (r.found, r.extracted, r.duplicates, r.searchable, len(col)) == (N + 1, N, 1, N, N)
    hits = col.search("a picture", k=50)
    assert len(hits) == N and len({h.key for h in hits}) == N


# ----------------------------------------------------------------------------- re-runs
@pytest.mark.slow
def test_rerun_add_remove_rename_and_edit(pics, tmp_path, clipart):
    col = _new(pics, tmp_path)
    assert col.update(progress=False).extracted == N
    again = col.update(progress=False)
    assert (again.found, again.extracted, again.already_stored) == (N, 0, N)

    new, _ = clipart[N]  # one new file: one extraction
    shutil.copy(new, pics / new.name)
    r = col.update(progress=False)
    assert (r.found, r.extracted, r.already_stored) == (N + 1, 1, N)
    assert col.similar(pics / new.name, k=1)[0].path == str(pics / new.name)

    gone = sorted(pics.iterdir())[0]  # a removed file is never returned again
    gone.unlink()
    r = col.update(progress=False)
    assert (r.found, r.extracted, r.already_stored) == (N, 0, N)
    for q in ("a bird", "a drawing of a penguin", "an animal"):
        hits = col.search(q, k=len(col) + 5)
        assert len(hits) == N and str(gone) not in {h.path for h in hits}
    assert str(gone) not in {h.path for h in col.similar(pics / new.name, k=50)}

    old = sorted(pics.iterdir())[0]  # a renamed (moved) file keeps its vector, under its new path
    (pics / "sub").mkdir()
    moved = pics / "sub" / "renamed.png"
    old.rename(moved)
    r = col.update(progress=False)
    assert (r.found, r.extracted, r.already_stored) == (N, 0, N)
    paths = {h.path for h in col.search("an animal", k=50)}
    assert str(moved) in paths and str(old) not in paths
    assert col.similar(moved, k=1)[0].path == str(moved)

    edited = sorted(pics.glob("*.png"))[0]  # an edited file: its new bytes extracted, its old vector never returned
    before = col.similar(edited, k=1)[0]
    replacement, _ = clipart[N + 1]
    edited.write_bytes(replacement.read_bytes())
    r = col.update(progress=False)
    assert (r.found, r.extracted, r.already_stored) == (N, 1, N - 1)
    assert before.key not in {h.key for h in col.search("an animal", k=50)}
    assert col.similar(replacement, k=1)[0].path == str(edited)

    fresh = _new(pics, tmp_path)  # another process later: the store and the file list are on disk
    r = fresh.update(progress=False)
    assert (r.found, r.extracted, r.already_stored) == (N, 0, N) and len(fresh) == N


@pytest.mark.slow
def test_unchanged_files_are_not_hashed_again(pics, tmp_path, monkeypatch):
    calls: list[str] = []
    real = crosslab.store.content_key

    def counting(ref, *a, **kw):
        calls.append(str(ref))
        return real(ref, *a, **kw)

    monkeypatch.setattr(crosslab.store, "content_key", counting)
    col = _new(pics, tmp_path)
    col.update(progress=False)
    assert len(calls) == N
    calls.clear()
    assert col.update(progress=False).extracted == 0 and calls == []

    touched = sorted(pics.iterdir())[3]  # a new modification time, same bytes: hashed again, not extracted
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    r = col.update(progress=False)
    assert calls == [str(touched)] and r.extracted == 0
    calls.clear()

    changed = sorted(pics.iterdir())[5]  # new bytes: hashed and extracted
    with Image.open(changed) as im:
        im.convert("RGB").resize((31, 29)).save(changed)
    r = col.update(progress=False)
    assert calls == [str(changed)] and r.extracted == 1
    calls.clear()

    assert _new(pics, tmp_path).update(progress=False).extracted == 0 and calls == []  # a new process: none
    (col.directory / col_mod.MANIFEST).write_text("{not json")  # a damaged file list: everything hashed again
    assert _new(pics, tmp_path).update(progress=False).extracted == 0 and len(calls) == N


# ----------------------------------------------------------------------------- bad input
def test_an_empty_folder_is_a_clear_error(tmp_path):
    folder = tmp_path / "empty"
    (folder / "sub").mkdir(parents=True)
    before = _snapshot(folder)
    with pytest.raises(DataError, match="is empty"):
        _new(folder, tmp_path).update(progress=False)
    assert _snapshot(folder) == before


def test_a_folder_of_documents_says_it_has_no_pictures(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a picture")
    (folder / "report.pdf").write_bytes(b"%PDF-1.4 nothing")
    before = _snapshot(folder)
    with pytest.raises(DataError, match="no pictures"):
        _new(folder, tmp_path).update(progress=False)
    assert _snapshot(folder) == before


@pytest.mark.slow
def test_a_truncated_jpeg_is_skipped_and_the_others_stored(tmp_path, clipart, pipeline):
    folder = _folder(tmp_path / "pics", clipart[:4])
    with Image.open(clipart[4][0]) as im:
        im.convert("RGB").save(tmp_path / "whole.jpg", quality=90)
    data = (tmp_path / "whole.jpg").read_bytes()
    bad = folder / "truncated.jpg"
    bad.write_bytes(data[: len(data) // 2])
    before = _snapshot(folder)
    col = _new(folder, tmp_path)
    r = col.update(progress=False)
    assert (r.found, r.extracted) == (5, 4) and len(col) == 4 == r.searchable
    assert [p for p, _ in r.unreadable] == [str(bad)]
    assert "truncated" in r.unreadable[0][1] or "corrupt" in r.unreadable[0][1]
    assert str(bad) not in {h.path for h in col.search("a picture", k=50)}
    again = col.update(progress=False)  # tried again next time, still skipped
    assert again.extracted == 0 and [p for p, _ in again.unreadable] == [str(bad)]
    assert _snapshot(folder) == before


def test_the_bomb_writer_writes_a_valid_png(tmp_path):
    small = _bomb_png(tmp_path / "small.png", 83, 21)
    with Image.open(small) as im:
        assert im.size == (83, 21) and im.mode == "1"
        assert np.asarray(im).sum() == 0
    big = _bomb_png(tmp_path / "big.png", 20_000, 20_000)
    assert big.stat().st_size < 1_000_000
    old = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # read its header only
        with Image.open(big) as im:
            assert im.size == (20_000, 20_000)
    finally:
        Image.MAX_IMAGE_PIXELS = old


@pytest.fixture
def no_big_decode(monkeypatch):
    """Record every picture PIL decodes; the test asserts none was over crosslab's limit."""
    decoded: list[tuple[int, int]] = []
    real = ImageFile.ImageFile.load

    def load(self, *a, **kw):
        decoded.append(self.size)
        return real(self, *a, **kw)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return decoded


@pytest.mark.slow
@pytest.mark.parametrize("size", [(20_000, 20_000), (9_000, 8_000)])  # over PIL's own limit; over crosslab's only
def test_a_decompression_bomb_is_skipped_without_decoding_it(tmp_path, clipart, pipeline, no_big_decode, size):
    assert size[0] * size[1] > MAX_IMAGE_PIXELS
    folder = _folder(tmp_path / "pics", clipart[:3])
    bomb = _bomb_png(folder / "bomb.png", *size)
    before = _snapshot(folder)
    col = _new(folder, tmp_path)
    r = col.update(progress=False)
    assert (r.found, r.extracted, len(col)) == (4, 3, 3)
    assert [p for p, _ in r.unreadable] == [str(bomb)]
    assert "decompression bomb" in r.unreadable[0][1] and "limit" in r.unreadable[0][1]
    assert no_big_decode and all(w * h <= MAX_IMAGE_PIXELS for w, h in no_big_decode)
    with pytest.raises(ImageError, match="decompression bomb"):
        col.similar(bomb)
    assert _snapshot(folder) == before


@pytest.mark.slow
def test_a_link_out_of_the_folder_is_not_followed(tmp_path, clipart, pipeline):
    folder = _folder(tmp_path / "pics", clipart[:3])
    outside = _folder(tmp_path / "elsewhere", clipart[3:6])
    link = folder / "link.png"
    link.symlink_to(outside / clipart[3][0].name)
    (folder / "linked-folder").symlink_to(outside, target_is_directory=True)
    (folder / "inside.png").symlink_to(folder / clipart[0][0].name)  # a link inside: the same bytes
    before = _snapshot(folder)
    col = _new(folder, tmp_path)
    r = col.update(progress=False)
    assert r.extracted == 3 and len(col) == 3
    assert str(link) in dict(r.unreadable) and "not followed" in dict(r.unreadable)[str(link)]
    assert all(not p.startswith(str(outside)) for p, _ in r.unreadable)
    paths = {h.path for h in col.search("a picture", k=50)}
    assert paths <= {str(p) for p in folder.iterdir()} and str(link) not in paths
    assert all(not Path(p).resolve().is_relative_to(outside) for p in paths)
    assert _snapshot(folder) == before


@pytest.mark.slow
def test_a_folder_of_unreadable_pictures_is_a_clear_error(tmp_path, pipeline):
    folder = tmp_path / "pics"
    folder.mkdir()
    (folder / "photo.jpg").write_text("I am a text file, not a JPEG\n" * 20)
    before = _snapshot(folder)
    with pytest.raises(DataError, match=r"none of its 1 picture file\(s\) could be read") as e:
        _new(folder, tmp_path).update(progress=False)
    assert "photo.jpg" in str(e.value)
    assert _snapshot(folder) == before


@pytest.mark.slow
def test_a_csv_with_missing_files_stores_the_present_ones(tmp_path, clipart, pipeline):
    folder = _folder(tmp_path / "pics", clipart[:4])
    rows = [(p.name, f"caption {i}: {c}") for i, (p, c) in enumerate(clipart[:4])]
    missing = [("gone-1.png", "a lost picture"), ("gone-2.png", "another lost one")]
    csv = folder / "captions.csv"
    csv.write_text("image,caption\n" + "".join(f"{a},{b}\n" for a, b in [*rows[:2], *missing, *rows[2:]]))
    before = _snapshot(folder)
    col = Collection(csv, PIPELINE, directory=tmp_path / "store")
    r = col.update(progress=False)
    assert (r.found, r.extracted, len(col)) == (4, 4, 4)
    assert any("skipped 2" in n for n in r.notes), r.notes
    hits = col.search("a picture", k=10)
    assert {(Path(h.path).name, h.caption) for h in hits} == set(rows)
    assert _snapshot(folder) == before

    (folder / "all-missing.csv").write_text("image,caption\n" + "".join(f"{a},{b}\n" for a, b in missing))
    with pytest.raises(DataError):
        Collection(folder / "all-missing.csv", PIPELINE, directory=tmp_path / "store2").update(progress=False)


@pytest.mark.slow
def test_a_read_only_folder_indexes_with_the_store_outside_it(tmp_path, clipart, pipeline, monkeypatch):
    folder = _folder(tmp_path / "pics", clipart[:4])
    cache = tmp_path / "cache" / "collections"
    monkeypatch.setattr(col_mod, "collections_root", lambda: cache)  # the default store place, here in tmp
    try:
        for f in folder.iterdir():
            f.chmod(0o444)
        folder.chmod(0o555)
        before = _snapshot(folder)
        col = Collection(folder, PIPELINE)
        r = col.update(progress=False)
        assert r.extracted == 4 and len(col) == 4
        assert col.directory.is_relative_to(cache) and (col.directory / "store").is_dir()
        assert col.search("a picture", k=1)[0].path in {str(p) for p in folder.iterdir()}
        assert _snapshot(folder) == before
    finally:
        folder.chmod(0o755)
        for f in folder.iterdir():
            f.chmod(0o644)


def test_a_store_inside_the_folder_is_refused(tmp_path, clipart):
    folder = _folder(tmp_path / "pics", clipart[:2])
    (tmp_path / "alias").symlink_to(folder, target_is_directory=True)
    before = _snapshot(folder)
    for d in (folder / "store", folder, tmp_path / "alias" / "store"):
        with pytest.raises(DataError, match="inside the picture folder"):
            Collection(folder, PIPELINE, directory=d)
    assert _snapshot(folder) == before


def test_a_missing_source_or_a_fusion_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such folder or file"):
        Collection(tmp_path / "nowhere", PIPELINE, directory=tmp_path / "store")
    with pytest.raises(CrosslabError, match="fusion"):
        Collection(tmp_path, "fusion(cca+glove,conse+glove)", directory=tmp_path / "store")
    with pytest.raises(CrosslabError, match="unknown pipeline"):
        Collection(tmp_path, "no such pipeline", directory=tmp_path / "store")
    assert not (tmp_path / "store").exists()


# ----------------------------------------------------------------------------- read_picture
def test_read_picture_decodes_bytes_or_says_why_not(tmp_path, clipart):
    with pytest.raises(ImageError):
        read_picture(b"%PDF-1.4 certainly not a picture")
    with pytest.raises(ImageError):
        read_picture(object())
    png = clipart[0][0].read_bytes()
    im = read_picture(png)
    assert isinstance(im, Image.Image) and im.mode == "RGB"
    ref = load_image(clipart[0][0])
    assert im.size == ref.size and np.array_equal(np.asarray(im), np.asarray(ref))
    assert np.array_equal(np.asarray(read_picture(memoryview(png))), np.asarray(ref))
    assert np.array_equal(np.asarray(read_picture(str(clipart[0][0]))), np.asarray(ref))


def test_read_picture_refuses_a_bomb_over_crosslabs_limit(tmp_path, no_big_decode):
    data = _bomb_png(tmp_path / "bomb.png", 9_000, 8_000).read_bytes()  # under PIL's limit, over crosslab's
    with pytest.raises(ImageError, match="limit") as e:
        read_picture(data)
    assert "decompression bomb" in str(e.value)
    assert no_big_decode == []


def test_read_picture_refuses_a_huge_bomb_naming_the_limit(tmp_path, no_big_decode):
    data = _bomb_png(tmp_path / "bomb.png", 20_000, 20_000).read_bytes()
    with pytest.raises(ImageError) as e:
        read_picture(data)
    assert no_big_decode == []
    assert "limit" in str(e.value) and "decompression bomb" in str(e.value)


# ----------------------------------------------------------------------------- caption
PHRASES = ["a red apple", "a blue car", "a bird flying in the sky", "a green frog", "a penguin", "a black cat",
           "a house with a roof", "a smiling face"]


def _reopened(indexed) -> tuple[Collection, Path]:
    """The indexed folder as a new Collection (nothing extracted): its own vocabularies, whatever ran before."""
    col, folder, _ = indexed
    return Collection(folder, PIPELINE, directory=col.directory), folder


def _ranking(pipeline, phrases, image):
    """The pipeline's own scores of phrases for one picture, best first (the brute-force reference)."""
    S = pipeline.score(pipeline.encode_text(phrases), pipeline.encode_image([load_image(image)]), axis=0)[:, 0]
    order = np.argsort(-S, kind="stable")
    return [(phrases[i], float(S[i])) for i in order]


@pytest.mark.slow
def test_caption_ranks_a_vocabulary_like_brute_force(indexed, pipeline, tmp_path):
    col, folder = _reopened(indexed)
    pictures = sorted(folder.iterdir())
    for picture in pictures[:3]:
        ref = _ranking(pipeline, PHRASES, picture)
        for k in (1, 3, len(PHRASES), 50):
            got = col.describe(picture, k=k, vocabulary=PHRASES)
            assert len(got) == min(k, len(PHRASES))
            assert all(a[1] >= b[1] for a, b in zip(got, got[1:], strict=False))
            assert [t for t, _ in got] == [t for t, _ in ref[: len(got)]]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in ref[: len(got)]], atol=1e-4)

    vocab = tmp_path / "vocabulary.txt"  # one phrase per line; blanks and repeats dropped
    vocab.write_text("\n".join([PHRASES[0], "", "  ", PHRASES[1], PHRASES[0], f"  {PHRASES[2]}  ", ""]) + "\n")
    got = col.describe(pictures[0], k=10, vocabulary=str(vocab))
    ref = _ranking(pipeline, PHRASES[:3], pictures[0])
    assert [t for t, _ in got] == [t for t, _ in ref]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in ref], atol=1e-4)

    (tmp_path / "blank.txt").write_text("\n  \n\n")
    for empty in ([], ["", "   "], str(tmp_path / "blank.txt")):
        with pytest.raises(DataError, match="no phrases"):
            col.describe(pictures[0], vocabulary=empty)
    with pytest.raises(DataError):
        col.describe(pictures[0], vocabulary=str(tmp_path / "no-such-file.txt"))
    with pytest.raises(DataError):
        col.describe(pictures[0], vocabulary=["a cat", 3])
    with pytest.raises(CrosslabError):
        col.describe(pictures[0], k=0, vocabulary=PHRASES)


@pytest.mark.slow
def test_caption_with_two_different_lists_of_the_same_length(indexed, pipeline):
    col, folder = _reopened(indexed)
    picture = sorted(folder.iterdir())[0]
    first, second = PHRASES[:3], PHRASES[3:6]
    assert {t for t, _ in col.describe(picture, k=3, vocabulary=first)} == set(first)
    got = col.describe(picture, k=3, vocabulary=second)
    assert [t for t, _ in got] == [t for t, _ in _ranking(pipeline, second, picture)]


@pytest.mark.slow
def test_caption_with_a_vocabulary_file_given_as_a_path(indexed, pipeline, tmp_path):
    col, folder = _reopened(indexed)
    picture = sorted(folder.iterdir())[0]
    vocab = tmp_path / "vocabulary.txt"
    vocab.write_text("\n".join(PHRASES[:4]) + "\n")
    got = col.describe(picture, k=4, vocabulary=vocab)
    assert [t for t, _ in got] == [t for t, _ in _ranking(pipeline, PHRASES[:4], picture)]


@pytest.mark.slow
def test_caption_never_returns_a_phrase_of_unknown_words(indexed):
    col, folder = _reopened(indexed)
    picture = sorted(folder.iterdir())[0]
    got = col.describe(picture, k=5, vocabulary=["a red apple", "a blue car", "qwxzzy blorf"])
    assert "qwxzzy blorf" not in [t for t, _ in got]


# ----------------------------------------------------------------------------- the store in the cache
@pytest.mark.slow
def test_a_damaged_store_is_rebuilt_not_trusted(pics, tmp_path):
    col = _new(pics, tmp_path)
    col.update(progress=False)
    meta = col.directory / "store" / crosslab.store.META
    assert meta.name == "crosslab-store.json" and meta.is_file()
    meta.write_bytes(b"\x00garbage{{{")
    again = _new(pics, tmp_path)
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        r = again.update(progress=False)
    assert (r.found, r.extracted, r.already_stored) == (N, N, 0)
    hits = again.search("an animal", k=3)
    assert len(hits) == 3 and all(Path(h.path).parent == pics for h in hits)
    assert json.loads(meta.read_text())  # written anew
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert _new(pics, tmp_path).update(progress=False).extracted == 0  # and trusted from then on


@pytest.mark.slow
def test_a_damaged_stored_pipeline_is_rebuilt(pics, tmp_path):
    _new(pics, tmp_path).update(progress=False)
    (tmp_path / "store" / "store" / "pipeline.npz").write_bytes(b"garbage")
    col = _new(pics, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        col.update(progress=False)
    assert len(col.search("an animal", k=3)) == 3


@pytest.mark.slow
def test_a_store_of_another_pipeline_is_not_used_silently(pics, tmp_path):
    _new(pics, tmp_path).update(progress=False)
    col = Collection(pics, "random", directory=tmp_path / "store")
    with pytest.raises(DataError, match="holds a store of pipeline 'cca\\+glove', not 'random'"):
        col.update(progress=False)


# ----------------------------------------------------------------------------- the command line
@pytest.mark.slow
def test_the_command_indexes_then_searches(pics, tmp_path, monkeypatch, capsys):
    from crosslab.__main__ import main

    cache = tmp_path / "cache" / "collections"
    monkeypatch.setattr(col_mod, "collections_root", lambda: cache)
    like = sorted(pics.iterdir())[2]
    rc = main(["collection", str(pics), "--pipeline", PIPELINE, "--query", "apple", "--like", str(like),
               "--json", "--k", "3"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    doc = json.loads(out)
    assert (doc["found"], doc["extracted"], doc["pipeline"]) == (N, N, PIPELINE)
    assert Path(doc["store"]).is_relative_to(cache)
    words, example = doc["results"]
    assert words["kind"] == "words" and len(words["hits"]) == 3
    assert all(Path(h["path"]).parent == pics for h in words["hits"])
    assert [h["rank"] for h in words["hits"]] == [1, 2, 3]
    assert example["kind"] == "like" and example["hits"][0]["path"] == str(like)

    rc = main(["collection", str(pics), "--pipeline", PIPELINE, "--json", "--k", "50", "--query", "apple"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["extracted"] == 0 and doc["already_stored"] == N and len(doc["results"][0]["hits"]) == N

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["collection", str(empty), "--pipeline", PIPELINE, "--query", "apple"]) == 1
    out, err = capsys.readouterr()
    assert "error" in err and "is empty" in err
    assert main(["collection", str(tmp_path / "nowhere"), "--pipeline", PIPELINE]) == 1
    assert "no such folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- ranks and the sample folder
@pytest.mark.slow
def test_ranks_equal_a_brute_force_count(indexed, pipeline):
    col, folder = _reopened(indexed)
    pictures = sorted(folder.iterdir())
    queries = ["an apple", "a red car", "a house with a tree", "a dog"]
    targets = [pictures[0], pictures[3], pictures[5], pictures[0]]
    got = col.ranks(queries, targets)
    V = pipeline.encode_image([load_image(p) for p in pictures])
    S = pipeline.score(pipeline.encode_text(queries), V)
    want = [1 + int((S[q] > S[q, pictures.index(t)]).sum()) for q, t in enumerate(targets)]
    assert got.tolist() == want
    with pytest.raises(DataError, match="not a readable picture of this collection"):
        col.ranks(["an apple"], [folder.parent / "elsewhere.png"])
    with pytest.raises(QueryError, match="one target picture per query"):
        col.ranks(["an apple", "a dog"], [pictures[0]])


def test_sample_folder_is_made_once_and_holds_two_broken_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path))
    folder = crosslab.data.sample_folder(5)
    assert folder.is_relative_to(tmp_path)
    assert len(list((folder / "photos").glob("*.jpg"))) == 18
    assert len(list((folder / "drawings").iterdir())) == 5
    for f in (folder / "photos").iterdir():  # real, whole JPEGs
        assert load_image(f).size[0] > 0
    with pytest.raises(ImageError, match="truncated"):
        load_image(folder / "broken" / "half-a-photo.jpg")
    with pytest.raises(ImageError, match="not an image"):
        load_image(folder / "broken" / "notes.jpg")
    before = _snapshot(folder)
    assert crosslab.data.sample_folder(5) == folder and _snapshot(folder) == before  # nothing rewritten


def test_make_app_refuses_a_missing_folder_before_starting_anything(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = os.environ | {"DIR": str(tmp_path / "no such folder"), "VENV": str(Path(sys.prefix))}
    r = subprocess.run(["bash", str(root / "scripts" / "app.sh")], cwd=root, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert "no such folder or file" in r.stderr and "no such folder" in r.stderr


def test_a_real_folder_wins_over_a_shipped_name(tmp_path, monkeypatch, pipeline):
    (tmp_path / "photos").mkdir()
    monkeypatch.chdir(tmp_path)
    col = Collection("photos", PIPELINE, directory=tmp_path / "store")
    assert col.kind == "folder" and col.source == str((tmp_path / "photos").resolve())
    assert Collection("clipart", PIPELINE, directory=tmp_path / "s2").kind == "shipped"


def test_the_default_store_may_lie_in_a_hidden_folder_inside_the_one_indexed(tmp_path, monkeypatch, pipeline):
    home = tmp_path / "home"
    (home / "Pictures").mkdir(parents=True)
    monkeypatch.setattr(col_mod, "collections_root", lambda: home / ".cache" / "crosslab" / "collections")
    col = Collection(home, PIPELINE)  # e.g. indexing ~ with the cache in ~/.cache: crosslab's own folder
    assert col.directory.is_relative_to(home / ".cache")
    with pytest.raises(DataError, match="lies inside the picture folder"):
        Collection(home, PIPELINE, directory=home / "Pictures" / "store")  # chosen by you: refused
