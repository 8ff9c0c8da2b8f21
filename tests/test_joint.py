"""crosslab.joint: losses against naive per-pair loops, the loss table, batching, training, persistence."""

from __future__ import annotations

import dataclasses
import io
import math

import numpy as np
import pytest
import torch

from crosslab import joint, losses
from crosslab.errors import ModelError, ShapeError


def _S(B=6, seed=0):
    return torch.randn(B, B, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---- losses vs naive loops ------------------------------------------------------------
def test_infonce_matches_loop():
    S, tau = _S(), 0.1
    B = len(S)
    total = 0.0
    for i in range(B):
        row = [math.exp(S[i, j] / tau) for j in range(B)]
        col = [math.exp(S[j, i] / tau) for j in range(B)]
        total += -math.log(row[i] / sum(row)) - math.log(col[i] / sum(col))
    assert float(losses.infonce_loss(S, tau)) == pytest.approx(total / (2 * B))


def test_hinge_and_max_violation_match_loops():
    S, m = _S(7, 1), 0.3
    B = len(S)
    hinge = maxv = 0.0
    for i in range(B):
        t = [max(0.0, m - S[i, i] + S[i, j]) for j in range(B) if j != i]
        v = [max(0.0, m - S[i, i] + S[j, i]) for j in range(B) if j != i]
        hinge += sum(t) + sum(v)
        maxv += max(t) + max(v)
    assert float(losses.hinge_loss(S, m)) == pytest.approx(float(hinge) / B)
    assert float(losses.max_violation_loss(S, m)) == pytest.approx(float(maxv) / B)


def test_bce_matches_loop_and_negatives_are_wrong_pairs():
    S, scale, bias = _S(5, 2), 4.0, -1.5
    neg = losses.sample_negatives(5, 3, torch.Generator().manual_seed(0))
    assert neg.shape == (5, 3) and not (neg == torch.arange(5)[:, None]).any()
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    total = 0.0
    for i in range(5):
        total += -math.log(sig(scale * S[i, i] + bias))
        for k in range(3):
            total += -math.log(1 - sig(scale * S[i, neg[i, k]] + bias))
    assert float(losses.bce_loss(S, neg, scale, bias)) == pytest.approx(total / (5 * 4))


def test_loss_table_names_and_steps():
    assert list(losses.LOSSES) == ["infonce", "hinge", "max_violation", "bce"]
    assert "hinge" in losses.LOSSES and "triplet" not in losses.LOSSES
    assert ", ".join(losses.LOSSES) == "infonce, hinge, max_violation, bce"
    S, s, gen = _S(6, 3).float(), joint.TrainSettings(margin=0.3), torch.Generator().manual_seed(0)
    model = joint.JointModel(joint.JointConfig(text_dim=4, image_dim=3, d=2))  # temperature 0.07
    neg = losses.sample_negatives(6, 5, torch.Generator().manual_seed(0))  # min(n_negatives, B - 1)
    with torch.no_grad():
        got = {name: float(step(S, model, s, gen)) for name, step in losses.LOSSES.items()}
        want = {"infonce": losses.infonce_loss(S, 0.07), "hinge": losses.hinge_loss(S, 0.3),
                "max_violation": losses.max_violation_loss(S, 0.3), "bce": losses.bce_loss(S, neg, 1 / 0.07, 0.0)}
    assert got == pytest.approx({k: float(v) for k, v in want.items()})


def test_losses_prefer_correct_matching():
    good = torch.eye(4, dtype=torch.float64)
    bad = 1 - good
    for fn in (lambda S: losses.infonce_loss(S, 0.1), losses.hinge_loss, losses.max_violation_loss):
        assert float(fn(good)) < float(fn(bad))
    assert float(losses.hinge_loss(good, 0.2)) == 0.0


# ---- batching ---------------------------------------------------------------------------
def test_batches_never_repeat_an_image():
    rng = np.random.default_rng(0)
    c2i = np.repeat(np.arange(40), rng.integers(1, 8, size=40))
    batches = joint.unique_image_batches(c2i, 16, np.random.default_rng(1))
    seen = np.concatenate(batches)
    assert len(set(seen)) == len(seen)  # each caption at most once per epoch
    assert len(seen) >= len(c2i) - 7  # only a few left over at the very end
    for b in batches:
        assert 2 <= len(b) <= 16
        assert len(set(c2i[b])) == len(b)


# ---- training ---------------------------------------------------------------------------
def synthetic(n_img=120, caps=3, seed=0, noise=0.5):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_img, 8))
    Y = z @ rng.normal(size=(8, 24)) + noise * rng.normal(size=(n_img, 24))
    c2i = np.repeat(np.arange(n_img), caps)
    X = z[c2i] @ rng.normal(size=(8, 12)) + noise * rng.normal(size=(len(c2i), 12))
    return X.astype(np.float32), Y.astype(np.float32), c2i


@pytest.fixture(scope="module")
def data():
    X, Y, c2i = synthetic(n_img=160, seed=0)
    tr = c2i < 120  # images 0..119 train, 120..159 validation
    return X[tr], Y[:120], c2i[tr], (X[~tr], Y[120:], c2i[~tr] - 120)


def _fit(X, Y, c2i, val=None, **kw):
    trainer = joint.JointTrainer(**({"progress": False} | kw)).fit(X, Y, c2i, val=val)
    return trainer.model_, trainer.history_


@pytest.mark.parametrize("loss", losses.LOSSES)
def test_every_loss_trains_one_epoch(data, loss):
    X, Y, c2i, _ = data
    trainer = joint.JointTrainer(loss=loss, d=4, epochs=1, batch_size=16, progress=False)
    assert trainer.fit(X[:60], Y, c2i[:60]) is trainer
    model, h = trainer.model_, trainer.history_
    assert isinstance(model, joint.JointModel) and not model.training and model.cfg.loss == loss
    assert len(h["loss"]) == 1 and math.isfinite(h["loss"][0]) and h["best_epoch"] == 1
    assert model.logit_bias.requires_grad == (loss == "bce")


@pytest.mark.parametrize("loss", losses.LOSSES)
def test_fit_learns_and_keeps_best_epoch(data, loss):
    X, Y, c2i, val = data
    model, h = _fit(X, Y, c2i, val=val, d=16, loss=loss, epochs=6, batch_size=32, patience=3)
    assert len(h["loss"]) == len(h["val_rsum"]) >= 1
    assert h["loss"][-1] < h["loss"][0]
    from crosslab.evaluation import evaluate

    m = evaluate(model, val[2], text=val[0], image=val[1])
    assert m["rsum"] == pytest.approx(max(h["val_rsum"]))  # best epoch restored
    assert m["t2i_r1"] > 5 * 100 / 40 and m["i2t_r1"] > 5 * 100 / 40  # 5x chance


def test_fit_deterministic_and_mlp(data):
    X, Y, c2i, _ = data
    kw = dict(d=8, epochs=2, batch_size=32, progress=False, seed=3, head="mlp", hidden=16, dropout=0.1)
    m1, h1 = _fit(X, Y, c2i, **kw)
    m2, h2 = _fit(X, Y, c2i, **kw)
    assert h1["loss"] == h2["loss"]
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    m3, _ = _fit(X, Y, c2i, **(kw | {"seed": 4}))
    assert not torch.equal(m1.text.proj[1].weight, m3.text.proj[1].weight)


@pytest.mark.parametrize("loss", losses.LOSSES)
def test_trainer_twice_gives_the_same_weights(data, loss):
    X, Y, c2i, val = data
    kw = dict(loss=loss, d=8, epochs=2, batch_size=32, progress=False, seed=1)
    a = joint.JointTrainer(**kw).fit(X, Y, c2i, val=val)
    trainer = joint.JointTrainer(joint.TrainSettings(**{k: v for k, v in kw.items() if k != "progress"}),
                                 progress=False)
    b = trainer.fit(X, Y, c2i, val=val)
    assert a.history_["loss"] == b.history_["loss"] and a.history_["val_rsum"] == b.history_["val_rsum"]
    for (k, x), y in zip(a.model_.state_dict().items(), b.model_.state_dict().values(), strict=True):
        assert torch.equal(x, y), k
    # fitting the same trainer again starts from scratch: same weights again
    w = b.model_.text.proj[1].weight.clone()
    assert torch.equal(trainer.fit(X, Y, c2i, val=val).model_.text.proj[1].weight, w)


def test_settings_defaults_replace_and_errors():
    s = joint.TrainSettings()
    assert s.as_dict() == dict(
        d=256, loss="infonce", margin=0.2, temperature=0.07, learn_temperature=True, head="linear",
        hidden=1024, dropout=0.0, normalize=True, n_negatives=15, lr=1e-3, weight_decay=1e-4,
        batch_size=128, epochs=30, patience=5, seed=0, init="random", init_reg=0.3, adversary=0.0, adversary_hidden=128,
            feature_eps=0.0,
    )
    t = s.replace(loss="hinge", d=np.int64(8))
    assert (t.loss, t.d, type(t.d), s.loss) == ("hinge", 8, int, "infonce")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.loss = "bce"
    assert joint.TrainSettings(patience=None).patience is None
    with pytest.raises(ModelError, match="unknown loss 'nope'; choose one of infonce, hinge, max_violation, bce"):
        joint.TrainSettings(loss="nope")
    with pytest.raises(ModelError, match="head must be 'linear' or 'mlp', got 'cnn'"):
        joint.TrainSettings(head="cnn")
    with pytest.raises(ModelError, match="init must be 'random' or 'cca', got 'pca'"):
        joint.TrainSettings(init="pca")
    with pytest.raises(ModelError, match="head='linear'"):
        joint.TrainSettings(init="cca", head="mlp")
    with pytest.raises(ShapeError, match=r"batch_size must be >= 2 \(a batch needs negatives\), got 1"):
        joint.TrainSettings(batch_size=1)
    for bad, match in [(dict(d=0), "d must be >= 1"), (dict(epochs=2.5), "epochs must be a whole number"),
                       (dict(lr=-1.0), "lr must be > 0"), (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
                       (dict(temperature=float("nan")), "temperature must be > 0"),
                       (dict(patience=0), "patience must be >= 1 or None"),
                       (dict(normalize="no"), "normalize must be True or False"),
                       (dict(margin=True), "margin must be a real number")]:
        with pytest.raises(ShapeError, match=match):
            joint.TrainSettings(**bad)


def test_trainer_stores_settings_and_rejects_unknown_keys():
    base = joint.TrainSettings(d=8, epochs=3)
    trainer = joint.JointTrainer(base, loss="bce", device="cpu", progress=False)
    assert trainer.settings == base.replace(loss="bce") and base.loss == "infonce"
    assert trainer.device == "cpu" and trainer.progress is False
    assert not hasattr(trainer, "model_") and not hasattr(trainer, "history_")  # nothing done yet
    assert repr(trainer) == "JointTrainer(d=8, loss='bce', epochs=3)"
    assert joint.JointTrainer().settings == joint.TrainSettings()
    with pytest.raises(ModelError, match=r"unknown training setting\(s\) 'nope'; valid: d, loss, margin"):
        joint.JointTrainer(nope=1)
    with pytest.raises(ModelError, match="unknown loss 'nope'"):
        joint.JointTrainer(loss="nope")
    with pytest.raises(ModelError, match="settings must be a TrainSettings"):
        joint.JointTrainer({"d": 8})


def test_embed_shapes_kinds_and_errors(data):
    X, Y, c2i, _ = data
    model, _ = _fit(X, Y, c2i, d=8, epochs=1)
    e = model.embed_text(X[:5])
    assert isinstance(e, np.ndarray) and e.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    t = model.embed_image(torch.from_numpy(Y[:3]))
    assert isinstance(t, torch.Tensor) and t.shape == (3, 8)
    assert model.embed_text(X[:0]).shape == (0, 8)
    with pytest.raises(ModelError, match="width 12, got 5"):
        model.embed_text(np.ones((2, 5)))
    with pytest.raises(ModelError, match="unknown loss"):
        _fit(X, Y, c2i, loss="triplet")
    with pytest.raises(ShapeError, match="caption->image"):
        _fit(X, Y, c2i[:-1])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ShapeError, match="NaN"):
        _fit(bad, Y, c2i)
    with pytest.raises(ShapeError, match="val features must have the same widths"):
        _fit(X, Y, c2i, val=(X[:, :5], Y, c2i))
    with pytest.raises(ShapeError, match="at least 2 different images"):
        _fit(X[:2], Y, np.zeros(2, dtype=np.int64))


def test_to_arrays_from_arrays_roundtrip_and_errors(data):
    X, Y, c2i, _ = data
    model, _ = _fit(X, Y, c2i, d=8, epochs=1, loss="bce")
    arrays = model.to_arrays()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    back = joint.JointModel.from_arrays(arrays, device="cpu")
    np.testing.assert_array_equal(back.embed_text(X[:4]), model.embed_text(X[:4]))
    np.testing.assert_array_equal(back.embed_image(Y[:4]), model.embed_image(Y[:4]))
    assert back.cfg == model.cfg
    for (k, a), b in zip(model.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a.cpu(), b), k
    # through a file, without pickle
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        again = joint.JointModel.from_arrays(dict(z), device="cpu")
    np.testing.assert_array_equal(again.embed_text(X[:4]), model.embed_text(X[:4]))
    with pytest.raises(ModelError, match="do not hold a crosslab JointModel"):
        joint.JointModel.from_arrays({k: v for k, v in arrays.items() if k != "config"})
    # weights of one model under the config of another size
    other, _ = _fit(X[:, :6], Y, c2i, d=8, epochs=1)
    with pytest.raises(ModelError, match="do not hold a crosslab JointModel"):
        joint.JointModel.from_arrays(other.to_arrays() | {"config": arrays["config"]})
    for gone in ("save", "load"):
        assert not hasattr(joint.JointModel, gone)
    assert not hasattr(joint, "fit") and not hasattr(joint, "load")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_epoch_matches_cpu(data):
    X, Y, c2i, _ = data
    kw = dict(d=8, epochs=1, batch_size=32, seed=0)
    mc, hc = _fit(X, Y, c2i, device="cpu", **kw)
    mg, hg = _fit(X, Y, c2i, device="cuda", **kw)
    assert next(mg.parameters()).device.type == "cuda"
    assert hg["loss"][0] == pytest.approx(hc["loss"][0], rel=1e-3)
    np.testing.assert_allclose(mg.embed_text(X[:10]), mc.embed_text(X[:10]), atol=1e-3)


def test_cca_init_starts_at_regularized_cca(data):
    from crosslab.baselines import RegularizedCCA
    from crosslab.evaluation import evaluate

    X, Y, c2i, val = data
    model, h = _fit(X, Y, c2i, d=8, epochs=0, init="cca", init_reg=0.2, val=val)
    Xs = (X - X.mean(0)) / X.std(0, ddof=1)
    Ys = (Y - Y.mean(0)) / Y.std(0, ddof=1)
    ref = RegularizedCCA(d=8, reg=0.2).fit(Xs, Ys, c2i)
    e = ref.embed_text(Xs[:10])
    np.testing.assert_allclose(model.embed_text(X[:10]), e / np.linalg.norm(e, axis=1, keepdims=True), atol=1e-4)
    assert h["best_epoch"] == 0
    assert h["init_val_rsum"] == pytest.approx(evaluate(model, val[2], text=val[0], image=val[1])["rsum"])
    # training from there keeps the best of start and epochs
    model2, h2 = _fit(X, Y, c2i, d=8, epochs=3, init="cca", val=val)
    assert max(h2["val_rsum"] + [h2["init_val_rsum"]]) == pytest.approx(
        evaluate(model2, val[2], text=val[0], image=val[1])["rsum"]
    )
    with pytest.raises(ModelError, match="head='linear'"):
        _fit(X, Y, c2i, d=8, epochs=1, init="cca", head="mlp")


# ---- augmentation views and feature-space adversarial training -------------------------
def test_views_equal_to_the_features_change_nothing_and_other_views_do(data):
    X, Y, c2i, _ = data
    kw = dict(d=8, epochs=2, batch_size=32, progress=False, seed=2)
    plain = joint.JointTrainer(**kw).fit(X, Y, c2i)
    same = joint.JointTrainer(**kw).fit(X, Y, c2i, text_views=[X.copy()], image_views=[Y.copy(), Y.copy()])
    assert plain.history_["loss"] == same.history_["loss"]  # the views' draws leave the batches alone
    for (k, a), b in zip(plain.model_.state_dict().items(), same.model_.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    other = joint.JointTrainer(**kw).fit(X, Y, c2i, text_views=[X[::-1].copy()])
    assert other.history_["loss"] != plain.history_["loss"]
    with pytest.raises(ShapeError, match=r"text_views\[0\] is shaped"):
        joint.JointTrainer(**kw).fit(X, Y, c2i, text_views=[X[:, :5]])


def test_the_fgsm_step_is_a_box_step_that_raises_the_loss(data):
    X, Y, c2i, _ = data
    s = joint.TrainSettings(d=8, feature_eps=0.3)
    model = joint._new_model(s, torch.as_tensor(X), torch.as_tensor(Y), c2i)
    b = torch.arange(12)
    x, y = torch.as_tensor(X[b.numpy()]), torch.as_tensor(Y[c2i[b.numpy()]])
    gen = torch.Generator().manual_seed(0)
    step = losses.LOSSES["infonce"]
    moved = joint._fgsm(model, step, s, gen, x, y)
    ratio = (moved - y).abs() / model.image.scale
    assert torch.allclose(ratio[ratio > 0], torch.tensor(0.3), atol=1e-5) and (ratio > 0).float().mean() > 0.9
    loss = lambda yy: float(step(model.text_forward(x) @ model.image_forward(yy).T, model, s, gen).detach())  # noqa: E731
    assert loss(moved) > loss(y)
    rand = y + 0.3 * model.image.scale * torch.sign(torch.randn(y.shape, generator=torch.Generator().manual_seed(1)))
    assert loss(moved) > loss(rand)  # the gradient's sign, not any step of that size
    with pytest.raises(ShapeError, match="feature_eps"):
        joint.TrainSettings(feature_eps=-1)
