"""The people-style query set (data/people_queries) and its loader."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest

from crosslab.data import QuerySet, load_clipart, load_people_queries
from crosslab.data.people import DEFAULT_PATH, VAL_PATH
from crosslab.errors import CrosslabError, DataError


@pytest.fixture(scope="module")
def ds():
    return load_clipart()


@pytest.fixture(scope="module", params=["test", "val"])
def qs(ds, request):
    return load_people_queries(ds, split=request.param)


def _norm(s: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]|_", " ", s.lower()).split())


def test_loads_with_default_dataset():
    q = load_people_queries()
    assert isinstance(q, QuerySet) and q.name == "people" and q.split == "test" and len(q) >= 120
    v = load_people_queries(split="val")
    assert v.name == "people-val" and v.split == "val" and len(v) >= 120
    assert not set(q.ids) & set(v.ids)  # different drawings
    with pytest.raises(CrosslabError, match="split must be"):
        load_people_queries(split="train")


def test_counts_and_kinds(qs):
    assert len(qs) == len(qs.texts) == len(qs.kinds) == len(qs.ids) == len(qs.targets)
    assert qs.targets.dtype == np.int64
    assert set(qs.kinds.tolist()) == {"short", "description"}
    per_id = Counter(zip(qs.ids, qs.kinds.tolist(), strict=True))
    assert set(per_id.values()) == {1}, "each (id, kind) appears once"
    ids = set(qs.ids)
    assert len(ids) >= 60
    assert all(per_id[(i, "short")] == 1 and per_id[(i, "description")] == 1 for i in ids)
    assert all(t.strip() == t and t for t in qs.texts)


def test_word_counts_follow_the_rules(qs):
    for text, kind in zip(qs.texts, qs.kinds, strict=True):
        n = len(text.split())
        assert (2 <= n <= 5) if kind == "short" else (5 <= n <= 15), (kind, text)


def test_targets_are_images_of_their_split(ds, qs):
    # independent path: the split subset's own id list
    split_ids = getattr(ds, qs.split).ids
    assert len(split_ids) == int(np.sum(ds.split == qs.split))
    assert qs.targets.min() >= 0 and qs.targets.max() < len(split_ids)
    for item, t in zip(qs.ids, qs.targets, strict=True):
        i = ds.ids.index(item)
        assert ds.split[i] == qs.split
        assert split_ids[t] == item


def test_no_query_is_a_caption_or_title(ds, qs):
    index = {item: i for i, item in enumerate(ds.ids)}
    for item, text in zip(qs.ids, qs.texts, strict=True):
        i = index[item]
        refs = {_norm(c) for c in ds.image_captions(i)} | {_norm(ds.meta[i]["title"])}
        assert _norm(text) not in refs, (item, text)


@pytest.mark.parametrize("split,path", [("test", DEFAULT_PATH), ("val", VAL_PATH)])
def test_file_is_sorted_and_newline_terminated(split, path):
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and not raw.startswith(b"\xef\xbb\xbf")
    q = load_people_queries(split=split)
    keys = list(zip(q.ids, q.kinds.tolist(), strict=True))
    assert keys == sorted(keys)


def test_subset(qs):
    short, desc = qs.subset("short"), qs.subset("description")
    assert len(short) + len(desc) == len(qs)
    assert set(short.kinds.tolist()) == {"short"} and set(desc.kinds.tolist()) == {"description"}
    assert short.name == f"{qs.name}/short" and short.split == qs.split
    # the subset keeps each query with its own target
    pairs = set(zip(qs.texts, qs.ids, qs.targets.tolist(), strict=True))
    assert set(zip(short.texts, short.ids, short.targets.tolist(), strict=True)) <= pairs
    assert short.targets.dtype == np.int64
    with pytest.raises(CrosslabError, match="unknown query kind"):
        qs.subset("long")


# --- bad input ------------------------------------------------------------------------


def _ids(ds, split):
    return [item for item, s in zip(ds.ids, ds.split, strict=True) if s == split]


def _write(tmp_path, text, name="q.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_custom_file_round_trip(ds, tmp_path):
    a, b = _ids(ds, "test")[:2]
    p = _write(tmp_path, f'id,kind,query\n{a},short,red thing\n\n{b},description,"a, b and c"\n')
    q = load_people_queries(ds, p)
    assert q.texts == ["red thing", "a, b and c"] and q.ids == [a, b]
    test_ids = ds.test.ids
    assert [test_ids[t] for t in q.targets] == [a, b]


def test_missing_file(ds, tmp_path):
    with pytest.raises(DataError, match="nope.csv"):
        load_people_queries(ds, tmp_path / "nope.csv")


@pytest.mark.parametrize(
    "body, match, where",
    [
        ("", "header", ":1:"),
        ("item,kind,text\n", "header", ":1:"),
        ("id,kind,query\n{test},long,red thing\n", "unknown kind", ":2:"),
        ("id,kind,query\n{test},short,red thing\n{test},short,   \n", "empty query", ":3:"),
        ("id,kind,query\n{test},short\n", "3 fields", ":2:"),
        ("id,kind,query\noc-0000000000,short,red thing\n", "not in dataset", ":2:"),
        ("id,kind,query\n{train},short,red thing\n", "not in test", ":2:"),
        ("id,kind,query\n", "no queries", ""),
    ],
)
def test_bad_input_names_file_and_line(ds, tmp_path, body, match, where):
    body = body.format(test=_ids(ds, "test")[0], train=_ids(ds, "train")[0])
    p = _write(tmp_path, body, "bad_queries.csv")
    with pytest.raises(DataError, match=match) as e:
        load_people_queries(ds, p)
    assert f"bad_queries.csv{where}" in str(e.value)


def test_val_file_must_target_val_images(ds, tmp_path):
    p = _write(tmp_path, f"id,kind,query\n{_ids(ds, 'val')[0]},short,red thing\n{_ids(ds, 'test')[0]},short,x y\n")
    with pytest.raises(DataError, match="not in val") as e:
        load_people_queries(ds, p, split="val")
    assert "q.csv:3" in str(e.value)
    q = load_people_queries(ds, _write(tmp_path, f"id,kind,query\n{_ids(ds, 'val')[3]},short,red thing\n"),
                            split="val")
    assert ds.val.ids[q.targets[0]] == _ids(ds, "val")[3]


def test_not_utf8(ds, tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes("id,kind,query\nx,short,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.csv"):
        load_people_queries(ds, p)
