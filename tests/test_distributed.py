"""crosslab.distributed: Ray Data features equal single-process ones; indexing a folder resumes.

Ray starts once for the module (seconds on 2 cores); Ray tests are skipped where ray is not
installed. The store here is a small stand-in with VectorStore's two methods and its
pipeline; tests/test_store.py (if present) covers the real one.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from crosslab import distributed as dist
from crosslab.errors import CrosslabError, DataError
from crosslab.image import ImageEncoder
from crosslab.pipeline import Pipeline

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")  # Ray Data's own, about its settings
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason='needs pip install "ray[data]"')
SIZE = 64  # efficientnet_lite0 at 64 px: the real network, ~6x less work than 160 px


@pytest.fixture(autouse=True)
def _cpu(monkeypatch):
    monkeypatch.setenv("CROSSLAB_DEVICE", "cpu")


@pytest.fixture(scope="module")
def ray_session():
    with dist._ray_session(None) as ray:
        yield ray


def _draw(path, i: int) -> None:
    """A small picture unlike the others: a shape, colours and size by ``i``; modes vary (RGB, RGBA, L, P)."""
    rng = np.random.default_rng(i)
    w, h = 40 + 6 * i, 48 + 3 * (i % 4)
    im = Image.new("RGB", (w, h), tuple(int(c) for c in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(im)
    box = [int(v) for v in (rng.integers(0, w // 3), rng.integers(0, h // 3), w - 5, h - 5)]
    (d.ellipse if i % 2 else d.rectangle)(box, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    im.convert(("RGB", "RGBA", "L", "P")[i % 4]).save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """root/a: 6 pictures, root/b: 6 more, a broken .png, a note, a hidden file and a duplicate."""
    root = tmp_path_factory.mktemp("pictures")
    for i in range(12):
        sub = root / ("a" if i < 6 else "b")
        sub.mkdir(exist_ok=True)
        _draw(sub / f"pic{i:02d}.png", i)
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "b" / "notes.txt").write_text("not an image")
    (root / "b" / ".hidden.png").write_bytes((root / "a" / "pic00.png").read_bytes())
    (root / "b" / "zz_copy_of_pic07.png").write_bytes((root / "b" / "pic07.png").read_bytes())
    return root


def _pictures(root):
    return sorted(str(p) for p in root.rglob("pic*.png"))


class _Project:
    """A linear head: enough of the Head protocol for a Pipeline."""

    metric = "cosine"

    def __init__(self, W):
        self.W = W

    def embed_text(self, X):
        return X

    def embed_image(self, Y):
        return np.asarray(Y, np.float32) @ self.W

    def to_arrays(self):
        return {"W": self.W}


class _Store:
    """VectorStore's indexing interface in memory; ``fail_after`` adds interrupts the run."""

    def __init__(self, pipeline, fail_after=None):
        self.pipeline, self.fail_after = pipeline, fail_after
        self.rows: dict[str, tuple[str, np.ndarray]] = {}
        self.added: list[int] = []

    def keys(self):
        return set(self.rows)

    def add(self, vectors, *, keys, paths, captions=None):
        if self.fail_after is not None and len(self.added) >= self.fail_after:
            raise KeyboardInterrupt  # the learner pressed stop after fail_after chunks
        assert vectors.dtype == np.float32 and vectors.shape == (len(keys), 16) == (len(paths), 16)
        self.added.append(len(keys))
        self.rows |= {k: (p, v) for k, p, v in zip(keys, paths, vectors, strict=True)}

    def by_path(self):
        return {p: v for p, v in self.rows.values()}


@pytest.fixture(scope="module")
def pipeline():
    W = np.random.default_rng(0).standard_normal((1280, 16)).astype(np.float32) / np.sqrt(1280)
    return Pipeline("toy", "test", SimpleNamespace(name="no text"), ("efficientnet_lite0", SIZE), _Project(W))


def _snapshot(root):
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


@needs_ray
@pytest.mark.slow
def test_ray_features_equal_single_process_extract(ray_session, folder):
    paths = _pictures(folder)
    ref = ImageEncoder("efficientnet_lite0", image_size=SIZE).extract(paths, cache=False, progress=False)
    got = dist.image_features_ray(paths, "efficientnet_lite0", SIZE, batch_size=5)  # uneven batches, 2 actors
    assert got.shape == ref.shape == (12, 1280) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)  # same rows, same order
    assert dist.image_features_ray([], "efficientnet_lite0", SIZE).shape == (0, 1280)


class _RecordingRay:
    """Ray's API as _ray_stream uses it, recording the plan instead of running it."""

    def __init__(self, cpus):
        self.cpus, self.plan = cpus, {}
        self.data = SimpleNamespace(from_items=self._from_items,
                                    ActorPoolStrategy=lambda size: SimpleNamespace(size=size))

    def cluster_resources(self):
        return {"CPU": float(self.cpus)}

    def _from_items(self, items, override_num_blocks):
        self.plan["blocks"] = override_num_blocks
        return SimpleNamespace(map_batches=self._map_batches)

    def _map_batches(self, stage, compute, **kw):
        self.plan["actors"] = compute.size
        return SimpleNamespace(iter_batches=lambda **kw: iter(()))


@pytest.mark.parametrize(("n", "cpus", "concurrency", "actors", "blocks"), [
    (24, 2, None, 1, 1),     # one batch: one actor (starting a second costs more than a batch)
    (40, 2, None, 2, 2),     # two batches: both cores
    (1000, 2, None, 2, 32),  # many batches: one actor per CPU
    (1000, 8, None, 8, 32),
    (24, 2, 2, 2, 2),        # asked for two: each gets work
    (3, 8, 8, 3, 3),         # never more actors than files
])
def test_ray_default_actors_are_the_cpus_but_no_more_than_the_batches(n, cpus, concurrency, actors, blocks):
    ray = _RecordingRay(cpus)
    assert list(dist._ray_stream(ray, [f"{i}.png" for i in range(n)], "efficientnet_lite0", SIZE,
                                 "features", 32, 256, concurrency, 1, 0)) == []
    assert ray.plan == {"actors": actors, "blocks": blocks}


@pytest.mark.slow
def test_an_interrupted_local_run_resumes_with_the_missing_files_only(folder, pipeline):
    before = _snapshot(folder)
    store = _Store(pipeline, fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        dist.index_folder(folder, store, chunk=4, progress=False)
    assert store.added == [4]  # one chunk landed before the interrupt
    store.fail_after = None
    stats = dist.index_folder(folder, store, chunk=4, progress=False)
    assert stats["found"] == 14  # 12 pictures, the broken one, the copy (the hidden file and the note do not count)
    assert stats["skipped"] == 4 and stats["duplicates"] == 1  # the copy of pic07, found in the same run
    assert stats["extracted"] == 12 - 4 == sum(store.added[1:])
    assert stats["unreadable"] == 1 and stats["unreadable_files"][0][0].endswith("broken.png")
    # The stored vectors are the pipeline's image embeddings of each file.
    paths = _pictures(folder)
    ref = pipeline.encode_image(paths)
    got = store.by_path()
    assert sorted(got) == paths
    np.testing.assert_allclose(np.stack([got[p] for p in paths]), ref, rtol=1e-5, atol=1e-5)
    # Nothing left to do: a third run extracts nothing and the folder was never written to.
    again = dist.index_folder(folder, store, progress=False)
    assert again["extracted"] == 0 and again["skipped"] == 13 and again["unreadable"] == 1  # 12 + the copy
    assert _snapshot(folder) == before


@needs_ray
@pytest.mark.slow
def test_ray_index_resumes_skips_unreadable_and_matches_local(ray_session, folder, pipeline):
    local = _Store(pipeline)
    dist.index_folder(folder, local, progress=False)
    store = _Store(pipeline)
    first = dist.index_folder(folder / "a", store, progress=False)  # a first run on part of the folder
    assert first["extracted"] == 6
    stats = dist.index_folder(folder, store, engine="ray", chunk=4, batch_size=3, progress=False)
    assert stats["skipped"] == 6 and stats["extracted"] == 6 and stats["duplicates"] == 1
    assert stats["unreadable"] == 1 and "broken.png" in stats["unreadable_files"][0][0]
    assert store.added == [6, 3, 3]  # chunks of 4 files (the first holds the broken one)
    want, got = local.by_path(), store.by_path()
    assert sorted(got) == sorted(want) == _pictures(folder)
    np.testing.assert_allclose(np.stack([got[p] for p in want]), np.stack(list(want.values())), rtol=1e-5, atol=1e-5)


def test_an_empty_or_missing_folder_is_a_clear_error(tmp_path, pipeline):
    (tmp_path / "readme.txt").write_text("no pictures here")
    with pytest.raises(DataError, match="no image files"):
        dist.index_folder(tmp_path, _Store(pipeline), progress=False)
    with pytest.raises(DataError, match="not found"):
        dist.index_folder(tmp_path / "nope", _Store(pipeline), progress=False)
    with pytest.raises(CrosslabError, match="engine"):
        dist.index_folder(tmp_path, _Store(pipeline), engine="spark", progress=False)


def test_without_ray_the_error_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(CrosslabError, match=r'pip install "ray\[data\]".*pip install -e "\.\[scale\]"'):
        dist.image_features_ray([tmp_path / "x.png"], "efficientnet_lite0", SIZE)


@needs_ray
def test_an_unreachable_cluster_fails_fast(monkeypatch, folder, pipeline):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(CrosslabError, match="cannot reach a Ray cluster"):
        dist.image_features_ray(_pictures(folder)[:1], "efficientnet_lite0", SIZE, address=f"127.0.0.1:{port}")
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")
    with pytest.raises(CrosslabError, match="cannot reach a Ray cluster"):
        dist.index_folder(folder, _Store(pipeline), engine="ray", progress=False)
    assert time.perf_counter() - t0 < 15


@pytest.mark.slow
def test_index_folder_fills_a_real_vector_store_and_resumes(tmp_path, folder):
    pytest.importorskip("lancedb")
    from crosslab.baselines import RegularizedCCA
    from crosslab.store import VectorStore, content_key
    from crosslab.text_encoders import WordVectorEncoder

    caps = [f"a {c} {s}" for c in ("red", "green", "blue", "grey") for s in ("circle", "square", "blob")]
    enc = WordVectorEncoder("w2v-mean", w2v_size=16).fit(caps)
    Y = np.random.default_rng(1).standard_normal((len(caps), 1280)).astype(np.float32)
    head = RegularizedCCA(d=8, reg=0.1).fit(enc.transform(caps), Y, np.arange(len(caps)))
    VectorStore.create(tmp_path / "store", Pipeline("toy cca", "test", enc, ("efficientnet_lite0", SIZE), head))
    first = dist.index_folder(folder / "a", VectorStore.open(tmp_path / "store"), progress=False)
    store = VectorStore.open(tmp_path / "store")  # as a new process would: the pipeline comes from disk
    stats = dist.index_folder(folder, store, chunk=4, progress=False)
    assert first["extracted"] == 6 and (stats["skipped"], stats["extracted"], stats["unreadable"]) == (6, 6, 1)
    paths = _pictures(folder)  # ids follow the order of adding: a/ first, then the rest, sorted
    assert len(store) == 12 and store.keys() == {content_key(p) for p in paths}
    np.testing.assert_allclose(store.vectors(), store.pipeline.encode_image(paths), rtol=1e-5, atol=1e-5)
    hit = store.search(store.vectors()[7], k=1)[0]
    assert hit.id == 7 and hit.path == paths[7]


def test_a_link_out_of_the_folder_is_listed_and_never_followed(tmp_path, folder, pipeline):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.png").write_bytes((folder / "a" / "pic00.png").read_bytes())
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "own.png").write_bytes((folder / "a" / "pic01.png").read_bytes())
    (mine / "link.png").symlink_to(outside / "secret.png")
    (mine / "inner.png").symlink_to(mine / "own.png")  # a link that stays inside: a duplicate
    store = _Store(pipeline)
    stats = dist.index_folder(mine, store, progress=False)
    assert stats["extracted"] == 1 and stats["duplicates"] == 1
    assert stats["unreadable_files"] == [(str(mine / "link.png"), "a link leading outside the folder: not followed")]
    assert [p for p, _ in store.rows.values()] == [str(mine / "inner.png")]  # sorted first; own.png: its duplicate
