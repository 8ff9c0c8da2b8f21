"""The vector store on disk (crosslab.store) and ``python -m crosslab index``, against numpy brute force.

A toy pipeline (Word2Vec text, an 8 x 8 thumbnail as the "CNN", regularised CCA) stands in
for the course's models, so nothing here needs the real encoders except the one CLI test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

import crosslab as cl
from crosslab.baselines import RegularizedCCA
from crosslab.errors import DataError, ModelError, QueryError, ShapeError
from crosslab.pipeline import FusionPipeline, Pipeline
from crosslab.store import META, MIN_INDEX_ROWS, VectorStore, content_key
from crosslab.text_encoders import WordVectorEncoder

pytest.importorskip("lancedb")


class Thumbs:
    """A stand-in for the CNN: each picture as an 8 x 8 colour thumbnail, flattened."""

    name, image_size = "thumbs-8x8", 8

    def extract(self, data, cache=False, progress=False, return_logits=False):
        ims = [data.load_image(i) for i in range(len(data))] if hasattr(data, "load_image") else list(data)
        f = np.stack([np.asarray(im.convert("RGB").resize((8, 8), Image.BILINEAR), np.float32).ravel() / 255
                      for im in ims])
        return (f, f) if return_logits else f


class DotCCA(RegularizedCCA):
    metric = "dot"


class EuclideanCCA(RegularizedCCA):
    metric = "euclidean"


@pytest.fixture(scope="module")
def ds():
    return cl.data.make_scenes(40, seed=3)


def _toy(ds, head_cls=RegularizedCCA, name="toy cca"):
    enc = WordVectorEncoder("w2v-mean", w2v_size=16).fit(ds.captions)
    head = head_cls(d=12, reg=0.1).fit(enc.transform(ds.captions), Thumbs().extract(ds), ds.caption_to_image)
    return Pipeline(name, "test", enc, Thumbs(), head, gallery=ds)


@pytest.fixture(scope="module")
def toy(ds):
    return _toy(ds)


def _unit(X):
    X = np.asarray(X, np.float64)
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def _brute(V, q, metric, k):
    """Top-k ids and scores by numpy, in float64: the reference every search is held to."""
    V, q = np.asarray(V, np.float64), np.asarray(q, np.float64)
    s = {"cosine": lambda: _unit(V) @ _unit(q), "dot": lambda: V @ q,
         "euclidean": lambda: -np.sqrt(((V - q) ** 2).sum(1))}[metric]()
    ids = np.argsort(-s, kind="stable")[:k]
    return ids, s[ids]


def _fill(store, V, start=0):
    n = len(V)
    return store.add(V, keys=[f"k{start + i}" for i in range(n)], paths=[f"img/{start + i}.png" for i in range(n)],
                     captions=[f"picture {start + i}" for i in range(n)])


def _clustered(n, d, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(30, d))
    return (centres[rng.integers(0, 30, n)] + 0.6 * rng.normal(size=(n, d))).astype(np.float32)


# ----------------------------------------------------------------------------- round trip and exactness
def test_round_trip_in_a_new_process_and_exact_search_equals_brute_force(toy, tmp_path):
    store = VectorStore.create(tmp_path / "s", toy)
    V = _clustered(300, 12, seed=0)
    assert _fill(store, V).tolist() == list(range(300))
    Q = _clustered(8, 12, seed=1)
    queries = ["a red circle", "a large blue square"]
    del store
    script = textwrap.dedent(f"""
        import json, numpy as np
        from crosslab.store import VectorStore
        s = VectorStore.open({str(tmp_path / "s")!r})
        np.save({str(tmp_path / "v.npy")!r}, s.vectors())
        Q = np.array({Q.tolist()!r}, np.float32)
        out = {{"n": len(s), "keys": sorted(s.keys()), "describe": s.describe(),
               "hits": [[[h.id, h.score, h.key, h.path, h.caption] for h in s.search(q, 7)] for q in Q],
               "text": [[[h.id, h.score] for h in s.search_text(t, 5)] for t in {queries!r}]}}
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env=os.environ | {"CROSSLAB_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    stored = np.load(tmp_path / "v.npy")
    np.testing.assert_array_equal(stored, V)  # the same rows, in id order
    assert out["n"] == 300 and out["keys"] == sorted(f"k{i}" for i in range(300))
    assert "exact scan" in out["describe"] and "300 images" in out["describe"]
    for q, hits in zip(Q, out["hits"], strict=True):
        ids, scores = _brute(stored, q, "cosine", 7)
        assert [h[0] for h in hits] == ids.tolist()
        np.testing.assert_allclose([h[1] for h in hits], scores, atol=1e-5)
        i = hits[0][0]
        assert hits[0][2:] == [f"k{i}", f"img/{i}.png", f"picture {i}"]
    for text, hits in zip(queries, out["text"], strict=True):  # the stored pipeline encodes the query
        ids, scores = _brute(stored, toy.encode_text(text)[0], "cosine", 5)
        assert [h[0] for h in hits] == ids.tolist()
        np.testing.assert_allclose([h[1] for h in hits], scores, atol=1e-5)


@pytest.mark.parametrize("head_cls,metric", [(DotCCA, "dot"), (EuclideanCCA, "euclidean")])
def test_other_metrics_score_like_the_pipeline(ds, tmp_path, head_cls, metric):
    p = _toy(ds, head_cls)
    store = VectorStore.create(tmp_path / metric, p)
    assert store.metric == metric and json.loads((tmp_path / metric / META).read_text())["metric"] == metric
    V = _clustered(200, 12, seed=2)
    _fill(store, V)
    for q in _clustered(5, 12, seed=3):
        ids, scores = _brute(V, q, metric, 6)
        hits = store.search(q, 6)
        assert [h.id for h in hits] == ids.tolist()
        np.testing.assert_allclose([h.score for h in hits], scores, rtol=1e-5, atol=1e-4)


def test_add_dataset_equals_the_pipelines_own_search_and_resumes(ds, toy, tmp_path):
    keys = [content_key(ref) for ref in ds.images]
    # Each picture once (make_scenes can draw the same scene twice): what the store keeps.
    uniq = ds.select(sorted({k: i for i, k in reversed(list(enumerate(keys)))}.values()))
    store = VectorStore.create(tmp_path / "s", toy)
    first = np.arange(0, len(ds), 2)
    added = store.add_dataset(ds.select(first), progress=False)
    assert added == len({keys[i] for i in first})
    assert added + store.add_dataset(ds, progress=False) == len(uniq) == len(store)  # resumed: only new ones
    assert store.add_dataset(ds, progress=False) == 0
    assert store.keys() == set(keys)
    for query in ("a red circle", "two green triangles"):
        want = toy.search(query, k=5, gallery=uniq)  # similarity.scores + topk on the gallery
        got = store.search_text(query, k=5)
        assert [h.key for h in got] == [content_key(uniq.images[h.image]) for h in want]
        assert [h.caption for h in got] == [h.caption for h in want]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-5)


def test_keys_and_append_updates_search(toy, tmp_path):
    store = VectorStore.create(tmp_path / "s", toy)
    assert store.keys() == set() and len(store) == 0 and store.search(np.ones(12), 3) == []
    V = _clustered(MIN_INDEX_ROWS + 100, 12, seed=4)
    _fill(store, V)
    assert store.keys() == {f"k{i}" for i in range(len(V))}
    assert store.index_stats() == (len(V), 0)  # big enough: the ANN index was built
    q = _clustered(1, 12, seed=5)[0]
    ids = _fill(store, (3 * q)[None], start=len(V))  # a row pointing exactly at the query
    assert ids.tolist() == [len(V)] and store.index_stats() == (len(V), 1)  # scanned exactly until reindexed
    top = store.search(q, 3)[0]
    assert (top.id, top.key) == (len(V), f"k{len(V)}") and top.score == pytest.approx(1.0, abs=1e-5)
    _fill(store, _clustered(400, 12, seed=6), start=len(V) + 1)  # 25 % new rows: the index is rebuilt
    assert store.index_stats() == (len(V) + 401, 0)
    assert store.search(q, 3)[0].id == len(V)
    reopened = VectorStore.open(tmp_path / "s")
    assert reopened.keys() == store.keys() and reopened.search(q, 1)[0].id == len(V)


def test_ann_index_recall_against_brute_force(toy, tmp_path):
    store = VectorStore.create(tmp_path / "s", toy)
    store.auto_index = False
    V = _clustered(3000, 12, seed=7)
    _fill(store, V)
    assert store.index_stats() is None and "no ANN index yet" in store.describe()
    assert store.build_index(min_rows=10_000) is False  # too small for that threshold
    assert store.build_index() is True
    assert store.index_stats() == (3000, 0) and "IVF_HNSW_SQ" in store.describe()
    found = 0
    Q = _clustered(40, 12, seed=8)
    for q in Q:
        ids, _ = _brute(V, q, "cosine", 10)
        hits = store.search(q, 10)
        found += len(set(ids.tolist()) & {h.id for h in hits})
        assert [h.id for h in store.search(q, 10, exact=True)] == ids.tolist()
        for h in hits:  # candidates are re-ranked with the exact vectors: exact scores
            assert h.score == pytest.approx(float(_unit(V[h.id]) @ _unit(q)), abs=1e-5)
    assert found / (10 * len(Q)) >= 0.9


def test_small_store_says_it_scans_exactly(toy, tmp_path):
    store = VectorStore.create(tmp_path / "s", toy)
    _fill(store, _clustered(50, 12, seed=9))
    assert store.index_stats() is None
    assert f"no ANN index below {MIN_INDEX_ROWS:,} rows" in store.describe()


@pytest.mark.slow
def test_a_writer_killed_mid_append_leaves_the_committed_rows_intact(toy, tmp_path):
    """SIGKILL a process appending batches: the store reopens with whole batches, each intact."""
    VectorStore.create(tmp_path / "s", toy)
    script = textwrap.dedent(f"""
        import numpy as np
        from crosslab.store import VectorStore
        s = VectorStore.open({str(tmp_path / "s")!r})
        s.auto_index = False
        for b in range(10_000):
            V = np.random.default_rng(b).normal(size=(5_000, 12)).astype(np.float32)
            s.add(V, keys=[f"{{b}}-{{i}}" for i in range(len(V))], paths=[None] * len(V))
            print(b, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env=os.environ | {"CROSSLAB_CACHE": str(tmp_path / "cache")})
    try:
        assert proc.stdout.readline().strip() == "0" and proc.stdout.readline().strip() == "1"
    finally:
        proc.kill()  # most likely in the middle of writing a later batch
        proc.wait()
    store = VectorStore.open(tmp_path / "s")
    n = len(store)
    assert n >= 10_000 and n % 5_000 == 0
    V = store.vectors()
    for b in range(n // 5_000):
        np.testing.assert_array_equal(V[b * 5_000:(b + 1) * 5_000],
                                      np.random.default_rng(b).normal(size=(5_000, 12)).astype(np.float32))
    store.add(np.ones((1, 12)), keys=["after"], paths=[None])  # and it takes new rows
    assert len(store) == n + 1 and store.search(np.ones(12), 1, exact=True)[0].key == "after"


# ----------------------------------------------------------------------------- bad input
def test_add_checks_its_input(toy, tmp_path):
    store = VectorStore.create(tmp_path / "s", toy)
    V = _clustered(3, 12, seed=0)
    with pytest.raises(ShapeError, match=r"an \(n, 12\) array"):
        store.add(V[:, :5], keys=["a", "b", "c"], paths=[None] * 3)
    with pytest.raises(ShapeError, match="array of numbers"):
        store.add("not numbers", keys=["a"], paths=[None])
    with pytest.raises(ShapeError, match="3 vectors but 2 keys"):
        store.add(V, keys=["a", "b"], paths=[None] * 3)
    bad = V.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ShapeError, match=r"rows \[1\] hold NaN"):
        store.add(bad, keys=["a", "b", "c"], paths=[None] * 3)
    with pytest.raises(ShapeError, match="zero vectors"):
        store.add(np.zeros((1, 12)), keys=["z"], paths=[None])
    with pytest.raises(ShapeError, match="repeated or already stored"):
        store.add(V, keys=["a", "a", "c"], paths=[None] * 3)
    store.add(V, keys=["a", "b", "c"], paths=[None] * 3)
    with pytest.raises(ShapeError, match=r"\['b'\] are repeated or already stored"):
        store.add(V[:1], keys=["b"], paths=[None])
    assert len(store) == 3
    with pytest.raises(QueryError, match="12 finite numbers"):
        store.search(np.ones(5), 3)
    with pytest.raises(QueryError, match="k must be"):
        store.search(np.ones(12), 0)
    with pytest.raises(QueryError, match="a few words"):
        store.search_text("  ")


def test_a_fusion_cannot_be_stored(ds, toy, tmp_path):
    with pytest.raises(ModelError, match="fusion or not a Pipeline.*single vector"):
        VectorStore.create(tmp_path / "s", FusionPipeline("fused", toy, toy, 0.5))
    assert not (tmp_path / "s").exists()


def test_a_non_empty_foreign_directory_is_never_overwritten(toy, tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(DataError, match=r"not a crosslab store's \(thesis.txt\).*never deletes"):
            VectorStore.create(d, toy, overwrite=overwrite)
    assert sorted(os.listdir(d)) == ["thesis.txt"] and (d / "thesis.txt").read_text() == "precious"
    with pytest.raises(DataError, match="is a file"):
        VectorStore.create(d / "thesis.txt", toy)
    # An existing store: refused without overwrite, replaced (only its own files) with it.
    s = VectorStore.create(tmp_path / "s", toy)
    _fill(s, _clustered(5, 12, seed=0))
    with pytest.raises(DataError, match="already holds a crosslab vector store"):
        VectorStore.create(tmp_path / "s", toy)
    assert len(VectorStore.open(tmp_path / "s")) == 5
    assert len(VectorStore.create(tmp_path / "s", toy, overwrite=True)) == 0


@pytest.fixture
def built(toy, tmp_path):
    s = VectorStore.create(tmp_path / "s", toy)
    _fill(s, _clustered(5, 12, seed=0))
    return tmp_path / "s"


def _refused(path, *fragments):
    with pytest.raises(DataError) as e:
        VectorStore.open(path)
    msg = str(e.value)
    assert str(path) in msg and "python -m crosslab index build" in msg, msg
    for f in fragments:
        assert f in msg, msg
    assert "Traceback" not in msg


def test_missing_foreign_damaged_outdated_and_mismatched_stores_are_refused(built, tmp_path):
    _refused(tmp_path / "nowhere", "no such vector store")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("x")
    _refused(tmp_path / "foreign", "not a crosslab vector store", META)
    meta = json.loads((built / META).read_text())
    for text, fragment in [(b"\x00\xff garbage", "damaged"), (b'{"dim": 12', "damaged"),
                           (json.dumps({"format": "someone-else"}).encode(), "not written by crosslab"),
                           (json.dumps(meta | {"version": 99}).encode(), "format version 99"),
                           (json.dumps(meta | {"dim": "twelve"}).encode(), "damaged"),
                           (json.dumps(meta | {"dim": 13}).encode(), "holds 12-d vectors but")]:
        (built / META).write_bytes(text)
        _refused(built, fragment, "--overwrite")
    (built / META).write_text(json.dumps(meta))
    assert len(VectorStore.open(built)) == 5  # restored: opens again
    os.rename(built / "pipeline.npz", built / "p.npz")
    _refused(built, "damaged")
    os.rename(built / "p.npz", built / "pipeline.npz")
    os.rename(built / "images.lance", built / "moved")
    _refused(built, "missing or damaged")


# ----------------------------------------------------------------------------- the command line
@pytest.mark.slow
def test_cli_index_build_and_search_end_to_end(tmp_path, monkeypatch, capsys):
    """``index build`` (cca+glove fitted on 60 scenes) then ``index search`` in a new process."""
    pytest.importorskip("efficientnet_lite_pytorch")
    from crosslab.__main__ import main

    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "store"
    args = ["index", "build", str(d), "--pipeline", "cca+glove", "--train", "scenes:60", "--data", "scenes:60",
            "--quiet", "--device", "cpu"]
    assert main(args) == 0
    assert "added    : 60 pictures" in capsys.readouterr().out
    assert main(args) == 0  # a second build resumes: nothing new
    assert "added    : 0 pictures" in capsys.readouterr().out
    assert main([*args[:3], "--pipeline", "cca+minilm"]) == 1
    assert "holds vectors of 'cca+glove'" in capsys.readouterr().err
    assert main(["index", "build", str(d), "--pipeline", "fusion(cca+glove,conse+glove)", "--overwrite"]) == 1
    assert "is a fusion" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "crosslab", "index", "search", str(d), "a red circle", "--k", "3",
                           "--json"], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    hits = json.loads(done.stdout)
    ds = cl.data.make_scenes(60, seed=0)
    want = cl.create_pipeline("cca+glove", ds, device="cpu", progress=False).search("a red circle", k=3)
    assert [h["id"] for h in hits] == [h.image for h in want] and [h["rank"] for h in hits] == [1, 2, 3]
    assert [h["caption"] for h in hits] == [h.caption for h in want]
    np.testing.assert_allclose([h["score"] for h in hits], [h.score for h in want], atol=1e-4)
    bad = subprocess.run([sys.executable, "-m", "crosslab", "index", "search", str(tmp_path), "x"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith(f"crosslab index: error: {tmp_path} is not a crosslab vector store")
    # --folder: any folder of pictures (here 3 drawn ones and a broken file) is added to the same store,
    # with the vectors the pipeline gives them in this process; a re-run adds nothing.
    folder = tmp_path / "pictures"
    folder.mkdir()
    for j, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (40, 30), colour).save(folder / f"p{j}.png")
    (folder / "broken.jpg").write_bytes(b"not a picture")
    folder_args = ["index", "build", str(d), "--folder", str(folder), "--quiet", "--device", "cpu"]
    assert main(folder_args) == 0
    out = capsys.readouterr().out
    assert "added    : 3 pictures" in out and "1 unreadable" in out and "broken.jpg" in out
    rows = VectorStore.open(d).rows()
    assert len(rows["id"]) == 63 and [os.path.basename(p) for p in rows["path"][60:]] == ["p0.png", "p1.png", "p2.png"]
    pipe = VectorStore.open(d).pipeline
    want_v = pipe.encode_image([Image.open(folder / f"p{j}.png") for j in range(3)])
    np.testing.assert_allclose(np.stack(rows["vector"][60:]), want_v, atol=1e-4)
    assert main(folder_args) == 0 and "added    : 0 pictures" in capsys.readouterr().out
    assert list(sorted(p.name for p in folder.iterdir())) == ["broken.jpg", "p0.png", "p1.png", "p2.png"]



def test_rows_are_the_added_columns_in_id_order(toy, tmp_path):
    store = VectorStore.create(tmp_path / "s", toy)
    V = np.arange(36, dtype=np.float32).reshape(3, 12)
    store.add(V[:2], keys=["a", "b"], paths=["x.png", None], captions=["one", None])
    store.add(V[2:], keys=["c"], paths=["z.png"])
    rows = VectorStore.open(tmp_path / "s").rows()
    assert rows["id"] == [0, 1, 2] and rows["key"] == ["a", "b", "c"]
    assert rows["path"] == ["x.png", None, "z.png"] and rows["caption"] == ["one", None, None]
    np.testing.assert_array_equal(np.stack(rows["vector"]), V)
