"""crosslab.ann: the hand-made IVF index against exact search and hand-checked properties."""

from __future__ import annotations

import numpy as np
import pytest

from crosslab.ann import IVFIndex, kmeans, recall_at_k
from crosslab.errors import ShapeError
from crosslab.search import topk


def clustered(n=2000, d=16, centres=20, seed=0):
    """Vectors around a few random centres (like real embeddings: clumped, not uniform)."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(centres, d))
    X = C[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, d))
    return X.astype(np.float32), (C[rng.integers(0, centres, 50)] + 0.3 * rng.normal(size=(50, d))).astype(np.float32)


def exact(X, Q, k):
    Xu = X / np.linalg.norm(X, axis=1, keepdims=True)
    Qu = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    return topk(Qu @ Xu.T, k)


def test_probing_every_cell_equals_exact_search():
    X, Q = clustered()
    index = IVFIndex(n_cells=32).fit(X)
    s, i = index.search(Q, k=10, nprobe=32)
    es, ei = exact(X, Q, 10)
    assert np.array_equal(i, ei) and np.allclose(s, es, atol=1e-5)
    assert index.scanned(Q, nprobe=32) == 1.0


def test_recall_and_cost_grow_with_nprobe():
    X, Q = clustered()
    index = IVFIndex(n_cells=32).fit(X)
    _, ei = exact(X, Q, 10)
    recalls = [recall_at_k(index.search(Q, 10, nprobe=p)[1], ei) for p in (1, 2, 4, 8, 32)]
    costs = [index.scanned(Q, p) for p in (1, 2, 4, 8, 32)]
    assert recalls == sorted(recalls) and recalls[-1] == 1.0 and recalls[0] < 1.0
    assert costs == sorted(costs) and costs[0] < 0.25


def test_kmeans_by_hand_and_every_list_holds_its_vectors():
    X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    C, a = kmeans(X / np.linalg.norm(X, axis=1, keepdims=True), 2, seed=0)
    assert a[0] == a[1] and a[2] == a[3] and a[0] != a[2]
    X, _ = clustered(300)
    index = IVFIndex(n_cells=16).fit(X)
    ids = np.sort(np.concatenate(index.lists_))
    assert np.array_equal(ids, np.arange(300)) and min(len(lst) for lst in index.lists_) >= 1


def test_few_candidates_pad_with_minus_one():
    X = np.eye(4, dtype=np.float32)
    index = IVFIndex(n_cells=4).fit(X)
    s, i = index.search(X[:1], k=3, nprobe=1)
    assert i[0, 0] == 0 and (i[0, 1:] == -1).all() and np.isinf(s[0, 1:]).all()


def test_recall_by_hand_and_clear_errors():
    assert recall_at_k(np.array([[1, 2, 3]]), np.array([[3, 4, 1]])) == pytest.approx(2 / 3)
    with pytest.raises(ShapeError, match="fit"):
        IVFIndex().search(np.ones((1, 3)))
    with pytest.raises(ShapeError, match="n_cells"):
        kmeans(np.ones((3, 2)), 5)
    index = IVFIndex(n_cells=2).fit(np.eye(3, dtype=np.float32))
    with pytest.raises(ShapeError, match="dimensions"):
        index.search(np.ones((1, 4)))
    with pytest.raises(ShapeError, match="metric"):
        IVFIndex(metric="euclidean")


def test_pq_scores_are_inner_products_with_the_decoded_vectors():
    from crosslab.ann import ProductQuantizer

    X, Q = clustered(800, d=16)
    pq = ProductQuantizer(m=4, bits=4).fit(X)
    codes = pq.encode(X)
    assert codes.shape == (800, 4) and codes.dtype == np.uint8 and codes.max() < 16
    assert np.allclose(pq.scores(Q, codes), Q @ pq.decode(codes).T, atol=1e-4)
    assert pq.bytes_per_vector == 2.0  # 4 codes of 4 bits, against 64 bytes of float32


def test_pq_error_falls_as_codebooks_grow():
    from crosslab.ann import ProductQuantizer

    X, _ = clustered(1500, d=16)
    err = lambda pq: float(np.mean(np.sum((X - pq.decode(pq.encode(X))) ** 2, 1)))  # noqa: E731
    by_bits = [err(ProductQuantizer(m=4, bits=b).fit(X)) for b in (1, 3, 5, 7)]
    by_m = [err(ProductQuantizer(m=m, bits=4).fit(X)) for m in (1, 2, 4, 8)]
    assert by_bits == sorted(by_bits, reverse=True) and by_bits[-1] < 0.5 * by_bits[0]
    assert by_m == sorted(by_m, reverse=True)


def test_pq_clear_errors():
    from crosslab.ann import ProductQuantizer

    with pytest.raises(ShapeError, match="divide"):
        ProductQuantizer(m=3).fit(np.ones((10, 8)))
    with pytest.raises(ShapeError, match="fit"):
        ProductQuantizer().encode(np.ones((1, 8)))
    with pytest.raises(ShapeError, match="bits"):
        ProductQuantizer(bits=0)
    pq = ProductQuantizer(m=2, bits=2).fit(np.random.default_rng(0).normal(size=(50, 4)))
    with pytest.raises(ShapeError, match="dimensions"):
        pq.scores(np.ones((1, 6)), pq.encode(np.ones((3, 4))))


def test_training_on_a_sample_still_files_every_vector_under_its_nearest_centroid():
    X, _ = clustered(3000, 16, seed=4)
    for metric in ("cosine", "dot"):
        index = IVFIndex(n_cells=12, train_size=500, metric=metric, seed=1).fit(X)
        V, C = index.vectors_, index.centroids_
        nearest = (V @ C.T).argmax(1) if metric == "cosine" else (2 * V @ C.T - (C ** 2).sum(1)).argmax(1)
        filed = np.empty(len(V), dtype=int)
        for c, ids in enumerate(index.lists_):
            filed[ids] = c
        assert sorted(np.concatenate(index.lists_).tolist()) == list(range(len(V)))
        np.testing.assert_array_equal(filed, nearest)
        _, exact = topk(V[:20] @ V.T, 5)
        assert recall_at_k(index.search(V[:20], 5, nprobe=12)[1], exact) == 1.0
    with pytest.raises(ShapeError, match="train_size"):
        IVFIndex(train_size=0)
