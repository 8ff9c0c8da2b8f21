"""Fine-tuning the CNN's top (crosslab.finetune): the cut, the augmentation, the trainer, the table entry."""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import crosslab as cl
from crosslab import pipelines
from crosslab.errors import ModelError
from crosslab.finetune import AugmentedView, FineTunedHead, FineTuneTrainer, augment
from crosslab.image import ImageEncoder
from crosslab.joint import JointTrainer
from crosslab.pipeline import load_pipeline


@pytest.fixture(scope="module")
def enc():
    return ImageEncoder("efficientnet_lite0", image_size=160, device="cpu")


@pytest.mark.parametrize("blocks", [0, 1, 2])
def test_trunk_then_tail_is_the_whole_network(enc, scenes, blocks):
    """The cached-activation path gives the full network's pooled features (float32: to 1e-5)."""
    pics = [scenes.load_image(i) for i in range(6)]
    full = enc.extract(pics, cache=False, progress=False)
    x = next(enc._batches(pics, 6, 0, False, ""))[1]
    with torch.no_grad():
        a = enc._trunk_forward(x, blocks).float().contiguous()
        pooled = enc.tail(blocks)(a).numpy()
    np.testing.assert_allclose(pooled, full, atol=1e-5, rtol=0)
    # the cached float16 activations: the same up to half-precision rounding
    A = enc.extract_trunk(pics, blocks=blocks, cache=False, progress=False)
    assert A.dtype == np.float16 and A.shape[0] == 6
    with torch.no_grad():
        approx = enc.tail(blocks)(torch.from_numpy(A.astype(np.float32))).numpy()
    assert np.abs(approx - full).max() < 1e-2 * np.abs(full).max()


def test_the_tail_is_a_trainable_copy(enc):
    tail = enc.tail(1)
    assert all(p.requires_grad for p in tail.parameters())
    before = [p.detach().clone() for p in enc.model.parameters()]
    with torch.no_grad():
        for p in tail.parameters():
            p.add_(1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, enc.model.parameters(), strict=True))


def test_bad_cuts_are_named(enc):
    with pytest.raises(ModelError, match="between 0 and 16"):
        enc.extract_trunk([np.zeros((32, 32, 3), np.uint8)], blocks=17, cache=False, progress=False)
    with pytest.raises(ModelError, match="do not hold a crosslab FineTunedHead"):
        FineTunedHead.from_arrays({"config": np.array("{}")})


def test_augment_is_seeded_keeps_size_and_never_shifts_hue():
    red = Image.new("RGB", (64, 48), (200, 30, 40))
    a = augment(red, np.random.default_rng(3))
    b = augment(red, np.random.default_rng(3))
    assert a.size == red.size and np.array_equal(np.asarray(a), np.asarray(b))
    hues = set()
    for seed in range(20):
        px = np.asarray(augment(red, np.random.default_rng(seed)), np.float64)[10, 10] / 255
        hues.add(round(colorsys.rgb_to_hsv(*px)[0], 2))
    assert hues <= {0.99, 1.0, 0.0, 0.01}, hues  # red stays red under every draw


def test_augmented_views_are_deterministic_datasets(scenes):
    v1, v1b, v2 = AugmentedView(scenes, 1, rows=[0, 5]), AugmentedView(scenes, 1, rows=[0, 5]), \
        AugmentedView(scenes, 2, rows=[0, 5])
    assert len(v1) == 2 and v1.ids == [scenes.ids[0], scenes.ids[5]]
    assert np.array_equal(np.asarray(v1.load_image(1)), np.asarray(v1b.load_image(1)))
    assert not np.array_equal(np.asarray(v1.load_image(1)), np.asarray(v2.load_image(1)))
    assert v1.fingerprint() == v1b.fingerprint() != v2.fingerprint() != scenes.fingerprint()


def _small_problem(enc, scenes):
    rng = np.random.default_rng(0)
    tr, va = np.flatnonzero(scenes.split == "train")[:24], np.flatnonzero(scenes.split == "val")[:8]
    A = enc.extract_trunk(scenes, blocks=1, progress=False)
    X = rng.normal(size=(len(scenes), 12)).astype(np.float32)
    with torch.no_grad():
        pooled = enc.tail(1)(torch.from_numpy(A[tr].astype(np.float32))).numpy()
    towers = JointTrainer(epochs=2, d=8, head="mlp", hidden=16, batch_size=8, progress=False, device="cpu").fit(
        X[tr], pooled, np.arange(len(tr))).model_
    return X[tr], A[tr], np.arange(len(tr)), (X[va], A[va], np.arange(len(va))), towers, pooled


KW = dict(encoder="efficientnet_lite0", image_size=160, blocks=1, progress=False, device="cpu")


def test_without_fine_tuning_epochs_the_head_is_its_start(enc, scenes):
    """0 epochs: the CNN's top is the pretrained one and the towers are the start's, exactly."""
    X, A, c2i, val, towers, pooled = _small_problem(enc, scenes)
    t = FineTuneTrainer(**KW, finetune_epochs=0).fit(X, A, c2i, tail=enc.tail(1), towers=towers, val=val)
    assert t.history_["best_epoch"] == 0 and len(t.history_["val_rsum"]) == 1
    for p, q in zip(t.model_.tail.parameters(), enc.tail(1).parameters(), strict=True):
        assert torch.equal(p, q)
    np.testing.assert_allclose(t.model_.embed_image(A), towers.embed_image(pooled), atol=1e-6)
    np.testing.assert_array_equal(t.model_.embed_text(X), towers.embed_text(X))


def test_fine_tuning_keeps_its_best_val_epoch_and_round_trips(enc, scenes):
    X, A, c2i, val, towers, _ = _small_problem(enc, scenes)
    before = {k: v.clone() for k, v in towers.state_dict().items()}
    views = [enc.extract_trunk(AugmentedView(scenes, 1, rows=np.flatnonzero(scenes.split == "train")[:24]),
                               blocks=1, progress=False)]
    t = FineTuneTrainer(**KW, finetune_epochs=3, finetune_patience=3, tail_lr=1e-3, finetune_batch_size=8).fit(
        X, A, c2i, tail=enc.tail(1), towers=towers, val=val, views=views)
    h = t.history_
    assert len(h["val_rsum"]) == len(h["loss"]) + 1 == 4
    assert h["best_epoch"] == int(np.argmax(h["val_rsum"]))  # the first of the best
    kept = cl.evaluation.evaluate(t.model_, val[2], text=val[0], image=val[1])["rsum"]
    assert kept == pytest.approx(max(h["val_rsum"]))
    changed = any(not torch.equal(p, q) for p, q in zip(t.model_.tail.parameters(), enc.tail(1).parameters(),
                                                        strict=True))
    assert changed == (h["best_epoch"] > 0)
    assert all(torch.equal(v, towers.state_dict()[k]) for k, v in before.items())  # the start is not changed
    back = FineTunedHead.from_arrays(t.model_.to_arrays())
    np.testing.assert_array_equal(back.embed_image(A), t.model_.embed_image(A))
    np.testing.assert_array_equal(back.embed_text(X), t.model_.embed_text(X))


def _shrunk(monkeypatch):
    for name, changes in (("mlp+minilm", {"epochs": 2, "d": 16, "hidden": 32}),
                          ("finetune+minilm", {"views": 1, "finetune_epochs": 1})):
        spec = pipelines.PIPELINES[name]
        monkeypatch.setitem(pipelines.PIPELINES, name, dataclasses.replace(spec, settings={**spec.settings, **changes}))


def test_table_entry_fits_searches_and_round_trips_through_a_file(scenes, monkeypatch, tmp_path):
    _shrunk(monkeypatch)
    p = pipelines.create_pipeline("finetune+minilm", scenes, progress=False, device="cpu")
    assert isinstance(p.head, FineTunedHead) and p.image_input == "trunk" and p.kind == "fine-tuned"
    S = p.scores(["a red circle"], scenes)
    hits = p.search("a red circle", k=3)
    assert [h.image for h in hits] == list(np.argsort(-S[0], kind="stable")[:3])
    back = load_pipeline(p.save(tmp_path / "ft.npz"), gallery=scenes, device="cpu")
    np.testing.assert_array_equal(back.scores(["a red circle"], scenes), S)
    # one new picture (not from the dataset's cache) goes through the same trunk and top
    pic = scenes.load_image(3)
    np.testing.assert_allclose(back.encode_image(pic)[0], p.encode_image(scenes)[3], atol=1e-4)  # fp16 cache
    assert set(p.choice) >= {"best_epoch", "val_rsum"} and p.choice["start"] == "mlp+minilm"


def test_a_store_refuses_a_fine_tuned_pipeline_by_name(scenes, monkeypatch, tmp_path):
    from crosslab.store import VectorStore

    _shrunk(monkeypatch)
    p = pipelines.create_pipeline("finetune+minilm", scenes, progress=False, device="cpu")
    with pytest.raises(ModelError, match="finetune\\+minilm.*trunk"):
        VectorStore.create(tmp_path / "s", p)


def test_a_grid_pass_fills_the_trunk0_cache_with_the_same_numbers(scenes):
    enc = ImageEncoder("efficientnet_lite0", image_size=160, device="cpu")
    sub = scenes.select(range(10), name="scenes-trunk0-test")
    enc.extract_grid(sub, progress=False)
    A = enc.extract_trunk(sub, blocks=0, progress=False)
    assert enc.last_cache_info_.hit
    np.testing.assert_array_equal(A, enc.extract_trunk(sub, blocks=0, cache=False, progress=False))


def test_the_table_keeps_the_val_sweeps_best_variant():
    """crosslab.pipelines.FINETUNE is what make results' val sweep chose (docs/experiments.md, section 7)."""
    import json
    from pathlib import Path

    exp = json.loads((Path(cl.__file__).resolve().parents[1] / "docs" / "results" / "experiments.json").read_text())
    best = max(exp["finetune_sweep"], key=lambda r: r["val_rsum"])
    assert best["variant"] and all(pipelines.FINETUNE[k] == v for k, v in best["variant"].items())
