"""crosslab.similarity: every metric against naive float64 loops, properties and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from crosslab import similarity as sim
from crosslab.errors import ShapeError


# ---- naive references: one pair at a time, float64 ------------------------------------
def _softmax(v, t):
    e = np.exp((v - v.max()) / t)
    return e / e.sum()


def naive(A, B, metric, t=1.0):
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    out = np.zeros((len(A), len(B)))
    for i, a in enumerate(A):
        for j, b in enumerate(B):
            if metric == "dot":
                v = float(np.sum(a * b))
            elif metric == "cosine":
                na, nb = math.sqrt(np.sum(a * a)), math.sqrt(np.sum(b * b))
                v = 0.0 if na < 1e-12 or nb < 1e-12 else float(np.sum(a * b)) / (na * nb)
            elif metric in ("euclidean", "neg_euclidean"):
                v = math.sqrt(float(np.sum((a - b) ** 2)))
                v = -v if metric == "neg_euclidean" else v
            else:
                p, q = _softmax(a, t), _softmax(b, t)
                if metric == "kl":
                    v = float(np.sum(p * np.log(p / q)))
                else:
                    m = (p + q) / 2
                    v = 0.5 * float(np.sum(p * np.log(p / m))) + 0.5 * float(np.sum(q * np.log(q / m)))
            out[i, j] = v
    return out


floats = st.floats(-4, 4, allow_nan=False, width=64)


@st.composite
def pairs(draw):
    d = draw(st.integers(1, 6))
    n, m = draw(st.integers(1, 6)), draw(st.integers(1, 7))
    A = draw(arrays(np.float64, (n, d), elements=floats))
    B = draw(arrays(np.float64, (m, d), elements=floats))
    return A, B


@pytest.mark.parametrize("metric", sim.METRICS)
@settings(max_examples=40, deadline=None)
@given(ab=pairs(), t=st.sampled_from([0.5, 1.0, 3.0]), chunk=st.sampled_from([None, 1, 2, 5]))
def test_matches_naive(metric, ab, t, chunk):
    A, B = ab
    got = sim.pairwise(A, B, metric, temperature=t, chunk_size=chunk)
    assert isinstance(got, np.ndarray) and got.shape == (len(A), len(B)) and got.dtype == np.float64
    np.testing.assert_allclose(got, naive(A, B, metric, t), atol=1e-6, rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(ab=pairs())
def test_properties(ab):
    A, B = ab
    keep_a = np.linalg.norm(A, axis=1) > 1e-3
    keep_b = np.linalg.norm(B, axis=1) > 1e-3
    if keep_a.any() and keep_b.any():
        Au = A[keep_a] / np.linalg.norm(A[keep_a], axis=1, keepdims=True)
        Bu = B[keep_b] / np.linalg.norm(B[keep_b], axis=1, keepdims=True)
        # cosine = dot on unit vectors; Euclidean ranks like cosine there (d^2 = 2 - 2 cos)
        np.testing.assert_allclose(sim.pairwise(Au, Bu, "cosine"), sim.pairwise(Au, Bu, "dot"), atol=1e-9)
        np.testing.assert_allclose(
            sim.pairwise(Au, Bu, "euclidean") ** 2, 2 - 2 * sim.pairwise(Au, Bu, "cosine"), atol=1e-9
        )
        cos, neg = sim.pairwise(Au, Bu, "cosine"), sim.pairwise(Au, Bu, "neg_euclidean")
        for i in range(len(Au)):
            # same order wherever the cosines are distinct enough to rank reliably
            o = np.argsort(-cos[i], kind="stable")
            if np.all(np.diff(cos[i][o]) < -1e-9):
                assert list(o) == list(np.argsort(-neg[i], kind="stable"))
    kl = sim.pairwise(A, B, "kl")
    assert (kl >= 0).all()
    np.testing.assert_allclose(np.diag(sim.pairwise(A, A, "kl")), 0, atol=1e-9)
    js_ab, js_ba = sim.pairwise(A, B, "js"), sim.pairwise(B, A, "js")
    np.testing.assert_allclose(js_ab, js_ba.T, atol=1e-12)
    assert (js_ab >= 0).all() and (js_ab <= math.log(2) + 1e-12).all()
    np.testing.assert_allclose(np.diag(sim.pairwise(A, A, "js")), 0, atol=1e-9)


def test_kl_direction_is_query_to_item():
    a = np.array([[3.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 0.0]])
    p, q = _softmax(a[0], 1), _softmax(b[0], 1)
    assert sim.pairwise(a, b, "kl")[0, 0] == pytest.approx(np.sum(p * np.log(p / q)))
    assert sim.pairwise(a, b, "kl")[0, 0] != pytest.approx(np.sum(q * np.log(q / p)))


def test_scores_are_higher_is_better():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(4, 5)), rng.normal(size=(6, 5))
    for m in sim.METRICS:
        s = sim.scores(A, B, m)
        p = sim.pairwise(A, B, m)
        np.testing.assert_allclose(s, p if sim.HIGHER_IS_BETTER[m] else -p)


def test_zero_vectors_have_cosine_zero_and_finite_distances():
    A = np.array([[0.0, 0.0], [1.0, 0.0]])
    B = np.array([[0.0, 0.0], [0.0, 2.0]])
    cos = sim.pairwise(A, B, "cosine")
    np.testing.assert_array_equal(cos, [[0, 0], [0, 0]])
    np.testing.assert_allclose(sim.pairwise(A, B, "euclidean"), [[0, 2], [1, math.sqrt(5)]])
    # A zero row is a uniform distribution for KL / JS: well defined.
    assert sim.pairwise(A, A, "kl")[0, 0] == pytest.approx(0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("side", ["A", "B"])
def test_non_finite_inputs_raise(bad, side):
    A, B = np.ones((2, 3)), np.ones((3, 3))
    (A if side == "A" else B)[1, 2] = bad
    with pytest.raises(ShapeError, match="NaN or infinite"):
        sim.pairwise(A, B, "cosine")


def test_shape_errors():
    with pytest.raises(ShapeError, match="3 features but items have 4"):
        sim.pairwise(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ShapeError, match="2-D"):
        sim.pairwise(np.ones(3), np.ones((2, 3)))
    with pytest.raises(ShapeError, match="0 features"):
        sim.pairwise(np.ones((2, 0)), np.ones((2, 0)))
    with pytest.raises(ShapeError, match="unknown metric"):
        sim.pairwise(np.ones((2, 3)), np.ones((2, 3)), "manhattan")
    with pytest.raises(ShapeError, match="temperature"):
        sim.pairwise(np.ones((2, 3)), np.ones((2, 3)), "kl", temperature=0)
    with pytest.raises(ShapeError, match="NumPy array or a torch tensor"):
        sim.pairwise([[1.0]], np.ones((1, 1)))


@pytest.mark.parametrize("metric", sim.METRICS)
def test_empty_inputs_give_empty_results(metric):
    assert sim.pairwise(np.ones((0, 3)), np.ones((4, 3)), metric).shape == (0, 4)
    assert sim.pairwise(np.ones((2, 3)), np.ones((0, 3)), metric).shape == (2, 0)


@pytest.mark.parametrize("metric", sim.METRICS)
def test_dtypes_and_torch_in_torch_out(metric):
    rng = np.random.default_rng(1)
    A, B = rng.normal(size=(5, 8)), rng.normal(size=(7, 8))
    ref = naive(A, B, metric)
    half = sim.pairwise(A.astype(np.float16), B.astype(np.float16), metric)
    assert half.dtype == np.float32  # half precision is computed (and returned) in float32
    np.testing.assert_allclose(half, naive(A.astype(np.float16), B.astype(np.float16), metric), atol=1e-4)
    t = sim.pairwise(torch.from_numpy(A).float(), torch.from_numpy(B).float(), metric)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), ref, atol=1e-4)
    t64 = sim.pairwise(torch.from_numpy(A), torch.from_numpy(B), metric)
    assert t64.dtype == torch.float64
    np.testing.assert_allclose(t64.numpy(), ref, atol=1e-10)
    # integer input works (as float32)
    assert sim.pairwise(np.ones((2, 3), int), np.ones((2, 3), int), metric).dtype == np.float32


@pytest.mark.parametrize("metric", sim.METRICS)
def test_small_memory_budget_same_result(metric):
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(37, 6)), rng.normal(size=(23, 6))
    np.testing.assert_allclose(
        sim.pairwise(A, B, metric, memory_budget=1), sim.pairwise(A, B, metric), atol=1e-12
    )


@pytest.mark.parametrize("chunk,budget", [(3, sim.DEFAULT_MEMORY_BUDGET), (50, 2000), (None, 1)])
def test_js_scores_each_pair_once_within_chunks(monkeypatch, chunk, budget):
    # JS tiles queries by min(chunk rows, budget tile): every (query, item) pair must be
    # scored exactly once, in blocks of at most `chunk` query rows. (A slice wider than
    # the step gave right values but redid rows, up to tile / chunk times the work.)
    blocks = []
    xlogy = torch.special.xlogy

    def spy(x, y):
        blocks.append(tuple(x.shape[:2]))
        return xlogy(x, y)

    monkeypatch.setattr(torch.special, "xlogy", spy)
    rng = np.random.default_rng(4)
    A, B = rng.normal(size=(37, 6)), rng.normal(size=(23, 6))
    got = sim.pairwise(A, B, "js", chunk_size=chunk, memory_budget=budget)
    np.testing.assert_allclose(got, naive(A, B, "js"), atol=1e-9)
    assert sum(n * m for n, m in blocks) == 37 * 23
    if chunk is not None:
        assert max(n for n, _ in blocks) <= chunk


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("metric", sim.METRICS)
def test_gpu_matches_cpu(metric):
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(300, 32, generator=g), torch.randn(500, 32, generator=g)
    cpu = sim.pairwise(A, B, metric)
    gpu = sim.pairwise(A.to("cuda"), B.to("cuda"), metric)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
