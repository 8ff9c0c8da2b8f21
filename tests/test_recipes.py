"""crosslab.recipes: fitted models are cached by content and reused exactly."""

from __future__ import annotations

import numpy as np
import pytest

from crosslab import recipes
from crosslab.errors import ModelError
from crosslab.joint import JointModel


def _features(seed=0, n_img=120):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_img, 5))
    Y = (z @ rng.normal(size=(5, 16)) + 0.3 * rng.normal(size=(n_img, 16))).astype(np.float32)
    c2i = np.repeat(np.arange(n_img), 2)
    X = (z[c2i] @ rng.normal(size=(5, 8)) + 0.3 * rng.normal(size=(len(c2i), 8))).astype(np.float32)

    def part(lo, hi):
        keep = (c2i >= lo) & (c2i < hi)
        return recipes.SplitFeatures(X[keep], Y[lo:hi], c2i[keep] - lo)

    return recipes.Features(part(0, 80), part(80, 100), part(100, n_img), "synthetic", "synthetic")


@pytest.fixture
def small_training(monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(recipes.TRAIN_DEFAULTS, "epochs", 6)
    monkeypatch.setitem(recipes.TRAIN_DEFAULTS, "batch_size", 32)
    monkeypatch.setitem(recipes.TRAIN_DEFAULTS, "hidden", 32)
    return tmp_path / "cache" / "models"


def _trained(feats, **kw):
    spec = next(s for s in recipes.default_models(d=4, losses=["infonce"], progress=False, **kw)
                if s.kind == "trained")
    return spec.make(feats)


def test_trained_model_is_cached_and_reused_exactly(small_training):
    f = _features()
    first = _trained(f)
    assert not first.cache_info_.hit and len(list(small_training.glob("*.npz"))) == 1
    again = _trained(_features())  # same content, new objects: same key
    assert again.cache_info_.hit
    fresh = _trained(f, cache=False)  # retrained from scratch
    assert not fresh.cache_info_.hit
    for m in (again, fresh):
        np.testing.assert_array_equal(m.embed_text(f.test.text), first.embed_text(f.test.text))
        np.testing.assert_array_equal(m.embed_image(f.test.image), first.embed_image(f.test.image))
    assert again.history_["loss"] == pytest.approx(first.history_["loss"])


def test_model_cache_key_follows_content_and_settings(small_training, monkeypatch):
    _trained(_features(seed=0))
    assert not _trained(_features(seed=1)).cache_info_.hit  # other features
    monkeypatch.setitem(recipes.TRAIN_DEFAULTS, "lr", 3e-3)
    assert not _trained(_features(seed=0)).cache_info_.hit  # other settings
    assert len(list(small_training.glob("*.npz"))) == 3


def test_corrupt_cached_model_is_retrained(small_training):
    f = _features()
    first = _trained(f)
    (path,) = small_training.glob("*.npz")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.warns(RuntimeWarning, match="Recomputing"):
        again = _trained(f)
    assert not again.cache_info_.hit
    np.testing.assert_array_equal(again.embed_text(f.test.text), first.embed_text(f.test.text))


def test_joint_model_arrays_round_trip_and_errors():
    f = _features()
    from crosslab.joint import fit

    model, _ = fit(*f.train.as_tuple(), d=4, epochs=2, batch_size=32, progress=False)
    arrays = model.to_arrays()
    assert all(a.dtype != object for a in arrays.values())
    back = JointModel.from_arrays(arrays)
    np.testing.assert_array_equal(back.embed_text(f.test.text), model.embed_text(f.test.text))
    with pytest.raises(ModelError, match="JointModel"):
        JointModel.from_arrays({k: v for k, v in arrays.items() if k != "config"})
    broken = dict(arrays)
    broken.pop(next(k for k in arrays if k.startswith("w/")))
    with pytest.raises(ModelError, match="JointModel"):
        JointModel.from_arrays(broken)
