"""Loaders for learners' data, each on a fixture written here in the exact format, plus bad input."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crosslab.data import base as data_base
from crosslab.data import (
    load_coco,
    load_csv,
    load_image,
    load_image_folder,
    load_karpathy,
    load_photos,
)
from crosslab.errors import CrosslabError, DataError, ImageError, SchemaError


def _png(path: Path, colour=(200, 30, 30), size=(8, 6), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, format="PNG")  # lossless, whatever the extension
    return path


def _snapshot(root: Path) -> dict:
    """Every file under root with its size and mtime: loaders must not change anything."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# ----- Karpathy ------------------------------------------------------------------------
def _karpathy(tmp_path: Path, images: list[dict]) -> Path:
    p = tmp_path / "dataset_flickr8k.json"
    p.write_text(json.dumps({"images": images, "dataset": "flickr8k"}))
    return p


def _kimg(fn, split, sents, imgid, **extra):
    return {
        "filename": fn,
        "split": split,
        "imgid": imgid,
        "sentences": [{"raw": s, "tokens": s.split()} for s in sents],
        **extra,
    }


def test_karpathy_flickr(tmp_path):
    root = tmp_path / "Flicker8k_Dataset"
    for name, c in [
        ("a.jpg", (255, 0, 0)),
        ("b.jpg", (0, 255, 0)),
        ("c.jpg", (0, 0, 255)),
        ("d.jpg", (9, 9, 9)),
    ]:
        _png(root / name, c)
    js = _karpathy(
        tmp_path,
        [
            _kimg("a.jpg", "train", ["A dog runs .", "a brown dog"], 0),
            _kimg("b.jpg", "restval", ["grass"], 1),
            _kimg("c.jpg", "val", ["blue sky", "the sky"], 2),
            _kimg("d.jpg", "test", ["dark"], 3),
        ],
    )
    before = _snapshot(tmp_path)
    ds = load_karpathy(js, root)
    assert _snapshot(tmp_path) == before
    assert ds.name == "flickr8k" and len(ds) == 4 and ds.n_captions == 6
    assert list(ds.split) == ["train", "train", "val", "test"]  # restval -> train
    assert ds.image_captions(0) == ["A dog runs .", "a brown dog"]
    assert ds.ids == ["0", "1", "2", "3"]
    assert np.asarray(ds.load_image(2))[0, 0].tolist() == [0, 0, 255]


def test_karpathy_coco_filepath(tmp_path):
    _png(tmp_path / "val2014" / "COCO_val2014_1.jpg")
    js = tmp_path / "dataset_coco.json"
    js.write_text(
        json.dumps(
            {
                "images": [
                    _kimg("COCO_val2014_1.jpg", "test", ["a cat"], 0, filepath="val2014", cocoid=1)
                ]
            }
        )
    )
    ds = load_karpathy(js)
    assert ds.images == ["val2014/COCO_val2014_1.jpg"] and ds.ids == ["1"] and ds.name == "coco"


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"annotations": []}, "'images' list"),
        ([1, 2], "'images' list"),
        ({"images": [{"split": "train"}]}, "'filename' and 'sentences'"),
        (
            {"images": [{"filename": "a.jpg", "split": "holdout", "sentences": []}]},
            "split 'holdout'",
        ),
        ({"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"x": 1}]}]}, "'raw'"),
    ],
)
def test_karpathy_wrong_schema(tmp_path, payload, match):
    js = tmp_path / "k.json"
    js.write_text(json.dumps(payload))
    with pytest.raises(SchemaError, match=match) as e:
        load_karpathy(js)
    assert str(js) in str(e.value)


def test_invalid_json_and_missing_file(tmp_path):
    js = tmp_path / "k.json"
    js.write_text('{"images": [')
    with pytest.raises(SchemaError, match=r"k.json is not valid JSON \(line 1"):
        load_karpathy(js)
    with pytest.raises(DataError, match="not found"):
        load_karpathy(tmp_path / "nope.json")
    with pytest.raises(DataError, match="not found"):
        load_coco(tmp_path / "nope.json")
    with pytest.raises(DataError, match="not found"):
        load_csv(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="not found"):
        load_image_folder(tmp_path / "nope")


def test_karpathy_path_escape(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    _png(tmp_path / "secret.png")
    js = _karpathy(root, [_kimg("../secret.png", "train", ["x"], 0)])
    with pytest.raises(DataError, match="outside the dataset folder"):
        load_karpathy(js)
    js.write_text(json.dumps({"images": [_kimg(str(tmp_path / "secret.png"), "train", ["x"], 0)]}))
    with pytest.raises(DataError, match="outside the dataset folder"):
        load_karpathy(js)


def test_symlink_escape(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    _png(tmp_path / "outside.png")
    os.symlink(tmp_path / "outside.png", root / "link.png")
    (root / "c.csv").write_text("image,caption\nlink.png,hello\n")
    with pytest.raises(DataError, match="resolves outside"):
        load_csv(root / "c.csv")


def test_karpathy_duplicate_ids(tmp_path):
    _png(tmp_path / "a.jpg")
    _png(tmp_path / "b.jpg")
    js = _karpathy(tmp_path, [_kimg("a.jpg", "train", ["x"], 7), _kimg("b.jpg", "test", ["y"], 7)])
    with pytest.raises(SchemaError, match="duplicate image id '7'"):
        load_karpathy(js)


def test_karpathy_same_file_twice(tmp_path):
    _png(tmp_path / "a.jpg")
    js = _karpathy(tmp_path, [_kimg("a.jpg", "train", ["x"], 1), _kimg("a.jpg", "train", ["y"], 2)])
    with pytest.raises(SchemaError, match="'a.jpg' is listed twice"):
        load_karpathy(js)


def test_empty_captions_dropped_with_warning(tmp_path):
    _png(tmp_path / "a.jpg")
    _png(tmp_path / "b.jpg")
    js = _karpathy(
        tmp_path, [_kimg("a.jpg", "train", ["ok", "  "], 0), _kimg("b.jpg", "train", [""], 1)]
    )
    with pytest.warns(UserWarning, match="dropped 2 empty caption.* and 1 image"):
        ds = load_karpathy(js)
    assert ds.captions == ["ok"] and ds.ids == ["0"]


def test_missing_image_raise_or_skip(tmp_path):
    _png(tmp_path / "a.jpg")
    js = _karpathy(
        tmp_path, [_kimg("a.jpg", "train", ["ok"], 0), _kimg("gone.jpg", "train", ["x"], 1)]
    )
    with pytest.raises(ImageError, match="gone.jpg"):
        load_karpathy(js)
    with pytest.warns(UserWarning, match="skipped 1 image"):
        ds = load_karpathy(js, on_missing="skip")
    assert ds.ids == ["0"]


def test_unreadable_images_named(tmp_path):
    """Truncated, non-image and empty files: ImageError naming the file, at load or with verify=True."""
    good = _png(tmp_path / "good.png", size=(64, 64))
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[:200])
    (tmp_path / "notes.jpg").write_text("this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    bad = ["trunc.png", "trunc.jpg", "notes.jpg", "empty.png"]
    (tmp_path / "c.csv").write_text(
        "image,caption\n" + "".join(f"{f},cap {f}\n" for f in ["good.png", *bad])
    )
    ds = load_csv(tmp_path / "c.csv")  # lazy: loads, fails when decoded
    assert np.asarray(ds.load_image(0)).shape == (64, 64, 3)
    for i, f in enumerate(bad, 1):
        with pytest.raises(ImageError, match=f.replace(".", r"\.")):
            ds.load_image(i)
    with pytest.raises(ImageError, match="trunc.png"):
        load_csv(tmp_path / "c.csv", verify=True)
    with pytest.warns(UserWarning, match="skipped 4 image"):
        ok = load_csv(tmp_path / "c.csv", verify=True, on_missing="skip")
    assert ok.images == ["good.png"]


def test_decompression_bomb(tmp_path):
    big = tmp_path / "bomb.png"
    Image.new("1", (8200, 8200)).save(big)  # 67 M pixels, a few kB on disk
    assert big.stat().st_size < 200_000
    with pytest.raises(ImageError, match="bomb.png.*decompression bomb"):
        load_image(big)


# ----- image modes decode to the right RGB ------------------------------------------------
def test_modes_decode_to_rgb(tmp_path):
    L = _png(tmp_path / "grey.png", 100, mode="L")
    assert np.asarray(load_image(L))[0, 0].tolist() == [100, 100, 100]
    rgba = tmp_path / "rgba.png"
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 255
    a[:2, :, 3] = 255  # top half opaque red, bottom fully transparent
    Image.fromarray(a, "RGBA").save(rgba)
    got = np.asarray(load_image(rgba))
    assert got[0, 0].tolist() == [255, 0, 0] and got[3, 0].tolist() == [255, 255, 255]
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    assert np.asarray(load_image(tmp_path / "pal.png"))[0, 0].tolist() == [10, 20, 30]
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    r, g, b = np.asarray(load_image(tmp_path / "cmyk.jpg"))[1, 1].tolist()
    assert r > 240 and g < 15 and b < 15  # CMYK (0, 100 %, 100 %, 0) is red
    i16 = np.array([[0, 65535], [32768, 0]], np.uint16)
    Image.fromarray(i16).save(tmp_path / "16bit.png")
    assert Image.open(tmp_path / "16bit.png").mode.startswith("I")
    got = np.asarray(load_image(tmp_path / "16bit.png"))
    assert (
        got.dtype == np.uint8 and got[0, 1].tolist() == [255] * 3 and got[0, 0].tolist() == [0] * 3
    )
    assert got[1, 0, 0] in (127, 128)
    dark = np.full((2, 2), 1000, np.uint16)  # a dark 16-bit image stays dark (no stretching)
    Image.fromarray(dark).save(tmp_path / "dark16.png")
    assert np.asarray(load_image(tmp_path / "dark16.png")).max() == round(1000 * 255 / 65535)


def test_exif_rotation(tmp_path):
    """A 6x2 image stored with EXIF orientation 6 (rotate 90 degrees clockwise) decodes as 2x6."""
    a = np.zeros((2, 6, 3), np.uint8)
    a[:, 0] = (255, 0, 0)  # left column red
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", exif=exif, quality=100, subsampling=0)
    got = load_image(tmp_path / "rot.jpg")
    assert got.size == (2, 6)  # width 2, height 6
    arr = np.asarray(got).astype(int)
    assert (arr[0, :, 0] > 200).all() and (arr[0, :, 1:] < 60).all()  # left column -> top row
    assert (arr[2:] < 60).all()  # the rest stays black


# ----- COCO ---------------------------------------------------------------------------------
def _coco(tmp_path, images, annotations):
    p = tmp_path / "annotations" / "captions_val2017.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(
        json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations})
    )
    return p


def test_coco(tmp_path):
    img_root = tmp_path / "val2017"
    _png(img_root / "000000000139.jpg")
    _png(img_root / "000000000285.jpg")
    js = _coco(
        tmp_path,
        [
            {"id": 139, "file_name": "000000000139.jpg", "height": 6, "width": 8},
            {"id": 285, "file_name": "000000000285.jpg"},
        ],
        [
            {"image_id": 285, "id": 1, "caption": "a bear"},
            {"image_id": 139, "id": 2, "caption": "a room"},
            {"image_id": 285, "id": 3, "caption": "a brown bear "},
        ],
    )
    before = _snapshot(tmp_path)
    ds = load_coco(js, img_root, split="val")
    assert _snapshot(tmp_path) == before
    assert ds.ids == ["139", "285"] and list(ds.split) == ["val", "val"]
    assert ds.image_captions(1) == ["a bear", "a brown bear"]
    assert ds.meta[0]["coco_id"] == 139


@pytest.mark.parametrize(
    "images, annotations, match",
    [
        ([{"id": 1}], [], "'id' and 'file_name'"),
        ([{"id": 1, "file_name": "a.jpg"}], [{"image_id": 2, "caption": "x"}], "image_id 2"),
        ([{"id": 1, "file_name": "a.jpg"}], [{"caption": "x"}], "'image_id' and 'caption'"),
        (
            [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}],
            [],
            "duplicate image id 1",
        ),
        ([{"id": 1, "file_name": "../../etc/passwd"}], [], "outside the dataset folder"),
    ],
)
def test_coco_bad(tmp_path, images, annotations, match):
    _png(tmp_path / "a.jpg")
    js = _coco(tmp_path, images, annotations)
    with pytest.raises(CrosslabError, match=match):
        load_coco(js, tmp_path)


def test_coco_missing_key(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(SchemaError, match="'images' and 'annotations'"):
        load_coco(p)


# ----- CSV / TSV ------------------------------------------------------------------------------
def test_csv_header_and_grouping(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png")
    p = tmp_path / "caps.csv"
    p.write_text(
        'image,caption,split\nimg/a.png,"a red, square thing",train\nimg/b.png,two,test\nimg/a.png,again,train\n'
    )
    ds = load_csv(p)
    assert ds.images == ["img/a.png", "img/b.png"]
    assert ds.image_captions(0) == ["a red, square thing", "again"]
    assert list(ds.split) == ["train", "test"]


def test_tsv_without_header(tmp_path):
    _png(tmp_path / "a.jpg")
    _png(tmp_path / "b.jpg")
    p = tmp_path / "caps.tsv"
    p.write_text("a.jpg\tfirst caption\nb.jpg\tsecond caption\n")
    ds = load_csv(p)
    assert ds.captions == ["first caption", "second caption"] and list(ds.split) == ["", ""]


def test_csv_without_header_keeps_first_row_of_extensionless_paths(tmp_path):
    """Header-less rows whose paths have no image extension: the first row is data, not dropped."""
    _png(tmp_path / "img" / "0001")
    _png(tmp_path / "img" / "0002")
    p = tmp_path / "caps.csv"
    p.write_text("img/0001,a red square\nimg/0002,another red square\n")
    ds = load_csv(p)
    assert ds.images == ["img/0001", "img/0002"]
    assert ds.captions == ["a red square", "another red square"]
    # a caption that happens to be a column name does not make the first row a header
    p.write_text("img/0001,title\nimg/0002,another red square\n")
    assert load_csv(p).captions == ["title", "another red square"]
    p.write_text("img/0001.png,text\n")
    _png(tmp_path / "img" / "0001.png")
    assert load_csv(p).captions == ["text"]


def test_csv_first_row_neither_header_nor_data_is_refused(tmp_path):
    """A first row with unknown column names and no image in it: a clear error, not a guess."""
    _png(tmp_path / "a.png")
    p = tmp_path / "caps.csv"
    p.write_text("pic,words\na.png,a red square\n")
    with pytest.raises(SchemaError, match=r"header or data.*'pic'.*image,caption.*image_column=") as e:
        load_csv(p)
    assert str(p) in str(e.value)
    ds = load_csv(p, image_column="pic", caption_column="words")  # the header, marked by the caller
    assert ds.images == ["a.png"] and ds.captions == ["a red square"]
    # header-less, first path extension-less and missing: refused too (it could be a header)
    p.write_text("gone,a caption\na.png,a red square\n")
    with pytest.raises(SchemaError, match="header or data"):
        load_csv(p)


def test_csv_common_header_names(tmp_path):
    _png(tmp_path / "a.png")
    _png(tmp_path / "image")  # a file named like the column: the header is still a header
    p = tmp_path / "caps.csv"
    p.write_text("filepath,label\na.png,cat\n")
    ds = load_csv(p)
    assert ds.images == ["a.png"] and ds.captions == ["cat"]
    p.write_text("image,caption\na.png,cat\n")
    assert load_csv(p).images == ["a.png"]


def test_csv_named_columns_and_sniffed_delimiter(tmp_path):
    _png(tmp_path / "x.png")
    p = tmp_path / "caps.txt"
    p.write_text("id;text;file\n1;hello there;x.png\n")
    ds = load_csv(p, image_column="file")
    assert ds.captions == ["hello there"] and ds.images == ["x.png"]
    with pytest.raises(SchemaError, match="no column named 'nope'"):
        load_csv(p, image_column="nope")


def test_csv_bad(tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("image,caption\na.png\n")
    with pytest.raises(SchemaError, match=r"c.csv:2: expected at least 2 columns"):
        load_csv(p)
    p.write_text("")
    with pytest.raises(SchemaError, match="no rows"):
        load_csv(p)
    p.write_text("image,caption\n../up.png,x\n")
    with pytest.raises(DataError, match="outside the dataset folder"):
        load_csv(p)
    p.write_bytes(b"image,caption\n\xff\xfe\x00bad,x\n")
    with pytest.raises(SchemaError, match="not UTF-8"):
        load_csv(p)


# ----- image folder ---------------------------------------------------------------------------
def test_image_folder(tmp_path):
    root = tmp_path / "pets"
    _png(root / "golden_retriever" / "1.jpg")
    _png(root / "golden_retriever" / "2.png")
    _png(root / "n02123045-tabby" / "a.png")
    (root / "tabbyCat").mkdir()
    (root / "golden_retriever" / "readme.txt").write_text("not an image")
    before = _snapshot(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1 file"):
        ds = load_image_folder(root, template="a photo of a {}")
    assert _snapshot(tmp_path) == before
    assert ds.captions == ["a photo of a golden retriever"] * 2 + ["a photo of a tabby"]
    assert [m["label"] for m in ds.meta] == ["golden retriever", "golden retriever", "tabby"]
    assert ds.images[0] == "golden_retriever/1.jpg"


def test_image_folder_splits_and_errors(tmp_path):
    _png(tmp_path / "d" / "train" / "cat" / "1.png")
    _png(tmp_path / "d" / "test" / "dog" / "2.png")
    ds = load_image_folder(tmp_path / "d")
    assert list(ds.split) == ["train", "test"] and ds.captions == ["cat", "dog"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_image_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="template"):
        load_image_folder(tmp_path / "d", template="no slot")


# ----- photos ------------------------------------------------------------------------------------
def test_photos():
    ds = load_photos()
    assert len(ds) >= 10 and {"chelsea", "coffee", "astronaut", "china", "flower"} <= set(ds.ids)
    for i in range(len(ds)):
        img = ds.images[i]
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert ds.image_captions(i) and all(len(c.split()) >= 3 for c in ds.image_captions(i))
    assert ds.load_image(ds.ids.index("coffee")).size == (600, 400)


def test_bomb_limit_is_the_documented_one():
    assert data_base.MAX_IMAGE_PIXELS == 64_000_000
