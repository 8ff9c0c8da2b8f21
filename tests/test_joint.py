"""crosslab.joint: losses against naive per-pair loops, batching, training, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crosslab import joint
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
    assert float(joint.infonce_loss(S, tau)) == pytest.approx(total / (2 * B))


def test_hinge_and_max_violation_match_loops():
    S, m = _S(7, 1), 0.3
    B = len(S)
    hinge = maxv = 0.0
    for i in range(B):
        t = [max(0.0, m - S[i, i] + S[i, j]) for j in range(B) if j != i]
        v = [max(0.0, m - S[i, i] + S[j, i]) for j in range(B) if j != i]
        hinge += sum(t) + sum(v)
        maxv += max(t) + max(v)
    assert float(joint.hinge_loss(S, m)) == pytest.approx(float(hinge) / B)
    assert float(joint.max_violation_loss(S, m)) == pytest.approx(float(maxv) / B)


def test_bce_matches_loop_and_negatives_are_wrong_pairs():
    S, scale, bias = _S(5, 2), 4.0, -1.5
    neg = joint.sample_negatives(5, 3, torch.Generator().manual_seed(0))
    assert neg.shape == (5, 3) and not (neg == torch.arange(5)[:, None]).any()
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    total = 0.0
    for i in range(5):
        total += -math.log(sig(scale * S[i, i] + bias))
        for k in range(3):
            total += -math.log(1 - sig(scale * S[i, neg[i, k]] + bias))
    assert float(joint.bce_loss(S, neg, scale, bias)) == pytest.approx(total / (5 * 4))


def test_losses_prefer_correct_matching():
    good = torch.eye(4, dtype=torch.float64)
    bad = 1 - good
    for fn in (lambda S: joint.infonce_loss(S, 0.1), joint.hinge_loss, joint.max_violation_loss):
        assert float(fn(good)) < float(fn(bad))
    assert float(joint.hinge_loss(good, 0.2)) == 0.0


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


@pytest.mark.parametrize("loss", joint.LOSSES)
def test_fit_learns_and_keeps_best_epoch(data, loss):
    X, Y, c2i, val = data
    model, h = joint.fit(X, Y, c2i, val=val, d=16, loss=loss, epochs=6, batch_size=32,
                         progress=False, patience=3)
    assert len(h["loss"]) == len(h["val_rsum"]) >= 1
    assert h["loss"][-1] < h["loss"][0]
    from crosslab.retrieval import evaluate

    m = evaluate(model, val[2], text=val[0], image=val[1])
    assert m["rsum"] == pytest.approx(max(h["val_rsum"]))  # best epoch restored
    assert m["t2i_r1"] > 5 * 100 / 40 and m["i2t_r1"] > 5 * 100 / 40  # 5x chance


def test_fit_deterministic_and_mlp(data):
    X, Y, c2i, _ = data
    kw = dict(d=8, epochs=2, batch_size=32, progress=False, seed=3, head="mlp", hidden=16, dropout=0.1)
    m1, h1 = joint.fit(X, Y, c2i, **kw)
    m2, h2 = joint.fit(X, Y, c2i, **kw)
    assert h1["loss"] == h2["loss"]
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    m3, _ = joint.fit(X, Y, c2i, **(kw | {"seed": 4}))
    assert not torch.equal(m1.text.proj[1].weight, m3.text.proj[1].weight)


def test_embed_shapes_kinds_and_errors(data):
    X, Y, c2i, _ = data
    model, _ = joint.fit(X, Y, c2i, d=8, epochs=1, progress=False)
    e = model.embed_text(X[:5])
    assert isinstance(e, np.ndarray) and e.shape == (5, 8)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    t = model.embed_image(torch.from_numpy(Y[:3]))
    assert isinstance(t, torch.Tensor) and t.shape == (3, 8)
    assert model.embed_text(X[:0]).shape == (0, 8)
    with pytest.raises(ModelError, match="width 12, got 5"):
        model.embed_text(np.ones((2, 5)))
    with pytest.raises(ModelError, match="unknown loss"):
        joint.fit(X, Y, c2i, loss="triplet")
    with pytest.raises(ShapeError, match="caption->image"):
        joint.fit(X, Y, c2i[:-1])
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ShapeError, match="NaN"):
        joint.fit(bad, Y, c2i)


def test_save_load_roundtrip_and_errors(data, tmp_path):
    X, Y, c2i, _ = data
    model, _ = joint.fit(X, Y, c2i, d=8, epochs=1, progress=False, loss="bce")
    path = model.save(tmp_path / "m")
    back = joint.load(path, text_dim=12, image_dim=24, device="cpu")
    np.testing.assert_array_equal(back.embed_text(X[:4]), model.embed_text(X[:4]))
    assert back.cfg == model.cfg
    with pytest.raises(ModelError, match="text features of width 12, but yours have 50"):
        joint.load(path, text_dim=50)
    (path / "weights.pt").write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="weights.pt is corrupt"):
        joint.load(path)
    with pytest.raises(ModelError, match="not found"):
        joint.load(tmp_path / "missing")
    # weights of one model under the config of another size
    other, _ = joint.fit(X[:, :6], Y, c2i, d=8, epochs=1, progress=False)
    other.save(tmp_path / "o")
    (tmp_path / "o" / "config.json").write_text((tmp_path / "m" / "config.json").read_text())
    with pytest.raises(ModelError, match="does not match"):
        joint.load(tmp_path / "o")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_epoch_matches_cpu(data):
    X, Y, c2i, _ = data
    kw = dict(d=8, epochs=1, batch_size=32, progress=False, seed=0)
    mc, hc = joint.fit(X, Y, c2i, device="cpu", **kw)
    mg, hg = joint.fit(X, Y, c2i, device="cuda", **kw)
    assert next(mg.parameters()).device.type == "cuda"
    assert hg["loss"][0] == pytest.approx(hc["loss"][0], rel=1e-3)
    np.testing.assert_allclose(mg.embed_text(X[:10]), mc.embed_text(X[:10]), atol=1e-3)


def test_cca_init_starts_at_regularized_cca(data):
    from crosslab.baselines import RegularizedCCA
    from crosslab.retrieval import evaluate

    X, Y, c2i, val = data
    model, h = joint.fit(X, Y, c2i, d=8, epochs=0, init="cca", init_reg=0.2, progress=False, val=val)
    Xs = (X - X.mean(0)) / X.std(0, ddof=1)
    Ys = (Y - Y.mean(0)) / Y.std(0, ddof=1)
    ref = RegularizedCCA(d=8, reg=0.2).fit(Xs, Ys, c2i)
    e = ref.embed_text(Xs[:10])
    np.testing.assert_allclose(model.embed_text(X[:10]), e / np.linalg.norm(e, axis=1, keepdims=True), atol=1e-4)
    assert h["best_epoch"] == 0
    assert h["init_val_rsum"] == pytest.approx(evaluate(model, val[2], text=val[0], image=val[1])["rsum"])
    # training from there keeps the best of start and epochs
    model2, h2 = joint.fit(X, Y, c2i, d=8, epochs=3, init="cca", progress=False, val=val)
    assert max(h2["val_rsum"] + [h2["init_val_rsum"]]) == pytest.approx(
        evaluate(model2, val[2], text=val[0], image=val[1])["rsum"]
    )
    with pytest.raises(ModelError, match="head='linear'"):
        joint.fit(X, Y, c2i, d=8, epochs=1, init="cca", head="mlp", progress=False)
