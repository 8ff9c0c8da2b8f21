"""crosslab.baselines: chance level, CCA and regularised CCA against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crosslab import baselines as bl
from crosslab.errors import ModelError, ShapeError
from crosslab.evaluation import evaluate


def test_random_model_recall_is_chance():
    N, caps, K = 200, 1, 10
    c2i = np.repeat(np.arange(N), caps)
    X, Y = np.zeros((N * caps, 3)), np.zeros((N, 4))
    r10 = []
    for seed in range(20):
        m = bl.RandomModel(d=32, seed=seed).fit(X, Y, c2i)
        r10.append(evaluate(m, c2i, text=X, image=Y)["t2i_r10"])
    # 20 x 200 = 4000 Bernoulli(K/N = 5 %) draws: mean within about 4 standard errors
    se = 100 * np.sqrt(0.05 * 0.95 / 4000)
    assert abs(np.mean(r10) - 100 * K / N) < 4 * se
    m = bl.RandomModel(seed=1).fit(X, Y, c2i)
    np.testing.assert_array_equal(m.embed_text(X), m.embed_text(X))  # deterministic


def correlated(n=400, p=10, q=15, k=3, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k))
    X = z @ rng.normal(size=(k, p)) + noise * rng.normal(size=(n, p))
    Y = z @ rng.normal(size=(k, q)) + noise * rng.normal(size=(n, q))
    return X, Y


def naive_cca_correlations(X, Y):
    """Canonical correlations as singular values of Qx' Qy (orthonormal bases of centred data)."""
    qx, _ = np.linalg.qr(X - X.mean(0))
    qy, _ = np.linalg.qr(Y - Y.mean(0))
    return np.linalg.svd(qx.T @ qy, compute_uv=False)


def test_regularized_cca_without_ridge_is_exact_cca():
    X, Y = correlated()
    c2i = np.arange(len(X))
    m = bl.RegularizedCCA(d=5, reg=0.0).fit(X, Y, c2i)
    ref = naive_cca_correlations(X, Y)[:5]
    np.testing.assert_allclose(m.correlations_, ref, atol=1e-8)
    # the embeddings' per-dimension correlations are the canonical correlations
    a, b = m.embed_text(X).astype(np.float64), m.embed_image(Y).astype(np.float64)
    emp = [np.corrcoef(a[:, i], b[:, i])[0, 1] for i in range(5)]
    np.testing.assert_allclose(emp, ref, atol=1e-4)
    # unit variance, uncorrelated variates (whitened)
    np.testing.assert_allclose(np.cov(a.T, bias=True), np.eye(5), atol=1e-4)


def test_regularization_shrinks_and_power_weights():
    X, Y = correlated(n=60, p=30, q=40, noise=2.0)  # few samples: plain CCA overfits
    c2i = np.arange(len(X))
    s0 = bl.RegularizedCCA(d=3, reg=0.0).fit(X, Y, c2i).correlations_
    s5 = bl.RegularizedCCA(d=3, reg=0.5).fit(X, Y, c2i).correlations_
    assert (s5 < s0).all()
    m0 = bl.RegularizedCCA(d=3, reg=0.5).fit(X, Y, c2i)
    m2 = bl.RegularizedCCA(d=3, reg=0.5, power=2).fit(X, Y, c2i)
    # power p scales canonical direction i by s_i ** p (up to the SVD's sign choice)
    np.testing.assert_allclose(
        np.abs(m2.embed_image(Y)), np.abs(m0.embed_image(Y)) * m0.correlations_**2, rtol=1e-4, atol=1e-5
    )
    with pytest.raises(ShapeError, match="reg"):
        bl.RegularizedCCA(reg=-1).fit(X, Y, c2i)


def test_sklearn_cca_first_correlation():
    X, Y = correlated(seed=1)
    c2i = np.arange(len(X))
    m = bl.CCAModel(d=2).fit(X, Y, c2i)
    a, b = m.embed_text(X).astype(np.float64), m.embed_image(Y).astype(np.float64)
    first = np.corrcoef(a[:, 0], b[:, 0])[0, 1]
    assert first == pytest.approx(naive_cca_correlations(X, Y)[0], abs=1e-3)


@pytest.mark.parametrize("cls", [bl.CCAModel, bl.RegularizedCCA])
def test_cca_retrieves_above_chance_with_several_captions(cls):
    rng = np.random.default_rng(0)
    N, caps = 150, 3
    z = rng.normal(size=(N, 4))
    Y = z @ rng.normal(size=(4, 20)) + 0.3 * rng.normal(size=(N, 20))
    c2i = np.repeat(np.arange(N), caps)
    X = z[c2i] @ rng.normal(size=(4, 8)) + 0.3 * rng.normal(size=(len(c2i), 8))
    tr = c2i < 100
    m = cls(d=4).fit(X[tr], Y[:100], c2i[tr])
    r = evaluate(m, c2i[~tr] - 100, text=X[~tr], image=Y[100:])
    assert r["t2i_r1"] > 5 * 100 / 50 and r["i2t_r1"] > 5 * 100 / 50  # 5x chance


def test_interface_errors_and_torch():
    X, Y = correlated(n=50)
    c2i = np.arange(50)
    with pytest.raises(ModelError, match="not fitted"):
        bl.RegularizedCCA().embed_text(X)
    m = bl.RegularizedCCA(d=2).fit(X, Y, c2i)
    with pytest.raises(ModelError, match="width 10, got 3"):
        m.embed_text(np.ones((2, 3)))
    out = m.embed_image(torch.from_numpy(Y[:4]))
    assert isinstance(out, torch.Tensor) and out.shape == (4, 2)
    with pytest.raises(ShapeError, match="caption->image"):
        bl.CCAModel().fit(X, Y, c2i[:10])


def test_with_reg_equals_fresh_fit():
    X, Y = correlated(n=80, p=12, q=20)
    c2i = np.arange(80)
    base = bl.RegularizedCCA(d=4, reg=0.01).fit(X, Y, c2i)
    for reg in (0.0, 0.3, 2.0):
        a, b = base.with_reg(reg), bl.RegularizedCCA(d=4, reg=reg).fit(X, Y, c2i)
        np.testing.assert_allclose(a.embed_text(X), b.embed_text(X), atol=1e-6)
        np.testing.assert_allclose(a.correlations_, b.correlations_, atol=1e-12)
    assert base.reg == 0.01  # the original is untouched
