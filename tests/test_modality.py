"""The modality gap and adversarial training against it (crosslab.modality, JointTrainer(adversary=...))."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crosslab.joint import JointTrainer
from crosslab.modality import ModalityDiscriminator, grad_reverse, modality_gap


def test_gradient_reversal_is_the_identity_forward_and_flips_the_gradient():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64)
    y = grad_reverse(x, 2.5)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -2.5 * w)
    # against autograd's numerical gradient of the identity, reversed: d/dx sum(w * x) = w, so -w here
    x.grad = None
    (grad_reverse(x) * w).sum().backward()
    num = torch.autograd.functional.jacobian(lambda a: (a * w).sum(), x.detach())
    assert torch.allclose(x.grad, -num)


def test_the_gap_of_two_cones_and_of_one():
    rng = np.random.default_rng(0)
    e1, e2 = np.eye(8)[0], np.eye(8)[1]
    T = e1 + 0.1 * rng.normal(size=(200, 8))
    V = e2 + 0.1 * rng.normal(size=(150, 8))
    g = modality_gap(T, V)
    Tn = T / np.linalg.norm(T, axis=1, keepdims=True)
    Vn = V / np.linalg.norm(V, axis=1, keepdims=True)
    assert g["mean_distance"] == pytest.approx(np.linalg.norm(Tn.mean(0) - Vn.mean(0)))
    assert g["probe_accuracy"] > 0.98 and g["cos_text_image"] < 0.1 < g["cos_text_text"]
    same = modality_gap(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)))
    assert same["mean_distance"] < 0.2 and 0.35 < same["probe_accuracy"] < 0.65


def _pairs(seed: int = 0):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(120, 6))
    X = Z @ rng.normal(size=(6, 10)) + 3.0 + 0.1 * rng.normal(size=(120, 10))  # text features
    Y = Z @ rng.normal(size=(6, 12)) - 2.0 + 0.1 * rng.normal(size=(120, 12))  # image features
    return X.astype(np.float32), Y.astype(np.float32), np.arange(120)


def test_adversarial_training_is_seeded_and_zero_changes_nothing():
    X, Y, c2i = _pairs()
    kw = dict(d=8, epochs=4, batch_size=32, head="mlp", hidden=16, progress=False, device="cpu")
    a = JointTrainer(adversary=0.5, **kw).fit(X, Y, c2i)
    b = JointTrainer(adversary=0.5, **kw).fit(X, Y, c2i)
    assert np.array_equal(a.model_.embed_image(Y), b.model_.embed_image(Y))
    assert all(np.isfinite(a.history_["loss"]))
    plain = JointTrainer(**kw).fit(X, Y, c2i)
    zero = JointTrainer(adversary=0.0, **kw).fit(X, Y, c2i)
    assert np.array_equal(plain.model_.embed_image(Y), zero.model_.embed_image(Y))
    assert not np.array_equal(plain.model_.embed_image(Y), a.model_.embed_image(Y))
    assert ModalityDiscriminator(8)(torch.zeros(3, 8)).shape == (3,)
    with pytest.raises(Exception, match="adversary must be >= 0"):
        JointTrainer(adversary=-1.0, **kw)
