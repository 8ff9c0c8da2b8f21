"""The feature cache: content keys, bit-identical hits, corruption detection, atomic concurrent writes."""

from __future__ import annotations

import multiprocessing as mp
import warnings

import numpy as np
import pytest

from crosslab import cache as C


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "cache"))


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"features": rng.standard_normal((50, 8)).astype(np.float32),
            "logits": rng.standard_normal((50, 3)).astype(np.float32)}


def test_root_follows_env(tmp_path, monkeypatch):
    assert C.cache_root() == tmp_path / "cache"
    monkeypatch.delenv("CROSSLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert C.cache_root() == tmp_path / "xdg" / "crosslab"
    assert C.FeatureCache().root == tmp_path / "xdg" / "crosslab" / "features"


def test_key_is_order_independent_and_sensitive_to_every_part():
    base = {"dataset": "abc", "encoder": "e", "transform": {"size": 160, "mean": [0.5, 0.5]}}
    assert C.make_key(base) == C.make_key(dict(reversed(list(base.items()))))
    assert C.make_key(base) == C.make_key({**base, "transform": {"mean": (0.5, 0.5), "size": 160}})
    for change in ({"dataset": "abd"}, {"encoder": "f"}, {"transform": {"size": 161, "mean": [0.5, 0.5]}}):
        assert C.make_key({**base, **change}) != C.make_key(base)


def test_key_includes_feature_version(monkeypatch):
    k1 = C.make_key({"a": 1})
    monkeypatch.setattr(C, "FEATURE_VERSION", C.FEATURE_VERSION + 1)
    assert C.make_key({"a": 1}) != k1


def test_unhashable_key_part_is_a_cache_error():
    with pytest.raises(C.CacheError, match="not hashable"):
        C.make_key({"a": object()})


def test_miss_then_bit_identical_hit():
    cache = C.FeatureCache()
    calls = []

    def compute():
        calls.append(1)
        return _arrays()

    a1, info1 = cache.get_or_compute({"x": 1}, compute, label="demo")
    a2, info2 = cache.get_or_compute({"x": 1}, compute, label="demo")
    assert (info1.hit, info2.hit, len(calls)) == (False, True, 1)
    assert info1.path == info2.path and info2.path.exists() and info2.path.name.startswith("demo-")
    for k in a1:
        assert a1[k].dtype == a2[k].dtype and a1[k].tobytes() == a2[k].tobytes()
    assert "hit" in str(info2) and "miss" in str(info1)


def test_disabled_cache_always_computes():
    cache = C.FeatureCache()
    _, info = cache.get_or_compute({"x": 2}, _arrays, enabled=False)
    assert not info.hit and info.path is None and cache.entries() == []


def _corrupt_flip(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside the first array's data
    path.write_bytes(bytes(raw))


def _corrupt_truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt_garbage(path):
    path.write_bytes(b"not a zip file at all")


@pytest.mark.parametrize("damage", [_corrupt_flip, _corrupt_truncate, _corrupt_garbage])
def test_corrupt_file_is_detected_and_recomputed(damage):
    cache = C.FeatureCache()
    a1, info = cache.get_or_compute({"x": 3}, _arrays)
    damage(info.path)
    with pytest.warns(RuntimeWarning, match="Recomputing"):
        a2, info2 = cache.get_or_compute({"x": 3}, _arrays)
    assert not info2.hit
    np.testing.assert_array_equal(a1["features"], a2["features"])
    # the recomputed entry is whole again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, info3 = cache.get_or_compute({"x": 3}, _arrays)
    assert info3.hit


def test_file_under_another_key_is_refused():
    cache = C.FeatureCache()
    _, info_a = cache.get_or_compute({"x": "a"}, lambda: _arrays(1))
    _, info_b = cache.get_or_compute({"x": "b"}, lambda: _arrays(2))
    info_b.path.write_bytes(info_a.path.read_bytes())  # a misplaced copy
    with pytest.warns(RuntimeWarning, match="another key"):
        arrays, info = cache.get_or_compute({"x": "b"}, lambda: _arrays(2))
    assert not info.hit
    np.testing.assert_array_equal(arrays["features"], _arrays(2)["features"])


def test_failed_compute_leaves_no_file():
    cache = C.FeatureCache()

    def boom():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute({"x": 4}, boom)
    assert cache.entries() == []
    assert not any(cache.root.glob("*.tmp")) if cache.root.exists() else True


def test_hash_arrays_sees_dtype_shape_and_values():
    a = np.arange(6, dtype=np.float32)
    h = C.hash_arrays({"a": a})
    assert h == C.hash_arrays({"a": a.copy()})
    assert h != C.hash_arrays({"a": a.reshape(2, 3)})
    assert h != C.hash_arrays({"a": a.astype(np.float64)})
    b = a.copy()
    b[3] = np.nextafter(b[3], 10)
    assert h != C.hash_arrays({"a": b})
    assert C.hash_texts(["ab", "c"]) != C.hash_texts(["a", "bc"])


def _writer(args):
    root, seed = args
    import os

    os.environ["CROSSLAB_CACHE"] = root
    cache = C.FeatureCache()
    for _ in range(15):
        cache.save(C.make_key({"shared": True}), _arrays(0), label="race")
    return seed


def test_concurrent_writers_never_leave_a_broken_file(tmp_path, monkeypatch):
    root = str(tmp_path / "race")
    monkeypatch.setenv("CROSSLAB_CACHE", root)
    cache = C.FeatureCache()
    key = C.make_key({"shared": True})
    seen = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reader seeing half a file would warn "Recomputing"
        with mp.get_context("spawn").Pool(3) as pool:
            job = pool.map_async(_writer, [(root, s) for s in range(3)])
            while not job.ready():
                seen += cache.load(key, label="race") is not None
            job.get()
        got = cache.load(key, label="race")
    assert got is not None
    np.testing.assert_array_equal(got["features"], _arrays(0)["features"])
    assert len(cache.entries()) == 1 and not list(cache.root.glob(".*.tmp"))
