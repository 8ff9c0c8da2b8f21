"""crosslab.search: top-k with deterministic ties, Index (torch and FAISS)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crosslab import search as R
from crosslab import similarity as sim
from crosslab.errors import QueryError, ShapeError


def naive_topk(S, k):
    out_v, out_i = [], []
    for row in S:
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))[:k]
        out_i.append(order)
        out_v.append([row[j] for j in order])
    return np.array(out_v), np.array(out_i)


# ---- topk --------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 7, 20])
def test_topk_ties_go_to_lower_index(k):
    rng = np.random.default_rng(0)
    S = rng.integers(0, 4, size=(30, 12)).astype(np.float32)  # many ties
    v, i = R.topk(S, k)
    nv, ni = naive_topk(S, k)
    np.testing.assert_array_equal(i, ni)
    np.testing.assert_array_equal(v, nv)
    assert i.shape == (30, min(k, 12))  # k > M is clamped


def test_topk_smallest_and_torch():
    S = torch.tensor([[3.0, 1.0, 1.0, 2.0]])
    v, i = R.topk(S, 2, largest=False)
    assert isinstance(i, torch.Tensor)
    assert i.tolist() == [[1, 2]] and v.tolist() == [[1.0, 1.0]]


def test_topk_errors():
    S = np.zeros((2, 3))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ShapeError, match="positive integer"):
            R.topk(S, bad)
    with pytest.raises(ShapeError, match="NaN"):
        R.topk(np.array([[1.0, np.nan]]), 1)


# ---- Index -------------------------------------------------------------------------
@pytest.mark.parametrize("metric", sim.METRICS)
def test_index_matches_pairwise_topk(metric):
    rng = np.random.default_rng(1)
    items, queries = rng.normal(size=(103, 6)), rng.normal(size=(17, 6))
    ix = R.Index(metric, item_chunk=10, temperature=0.7).add(items[:50]).add(items[50:])
    assert len(ix) == 103 and ix.dim == 6
    v, i = ix.search(queries, 5, batch_size=4)
    full = sim.pairwise(queries, items, metric, temperature=0.7)
    rv, ri = R.topk(full, 5, largest=sim.HIGHER_IS_BETTER[metric])
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_allclose(v, rv, atol=1e-9)


def test_index_ties_across_chunks_go_to_lower_id():
    items = np.tile(np.eye(3), (10, 1))  # ids 0, 3, 6, ... are equal items
    v, i = R.Index("dot", item_chunk=4).add(items).search(np.array([[1.0, 0, 0]]), 4, batch_size=1)
    assert i.tolist() == [[0, 3, 6, 9]]


@pytest.mark.parametrize("tile,group", [(8, 4), (8, 3), (6, 2), (16, 16)])
@pytest.mark.parametrize("item_chunk", [5, 16, 21, 1000])
@pytest.mark.parametrize("metric", ["dot", "cosine", "euclidean", "kl"])
def test_index_tiles_groups_and_ties_match_full_topk(monkeypatch, tile, group, item_chunk, metric):
    # Small tiles and groups put many tiles per chunk, short last tiles (padding), and
    # groups that do or do not divide a tile into play.
    monkeypatch.setattr(R, "CPU_TILE", tile)
    monkeypatch.setattr(R, "GROUP", group)
    rng = np.random.default_rng(tile * 100 + item_chunk)
    if metric in ("dot", "euclidean"):  # integer features: exact scores, many exact ties
        items = rng.integers(-2, 3, size=(97, 4)).astype(np.float64)
        queries = rng.integers(-2, 3, size=(13, 4)).astype(np.float64)
    else:  # cosine and KL round differently in a full matrix and in the index: no ties
        items, queries = rng.normal(size=(97, 4)), rng.normal(size=(13, 4))
    full = sim.pairwise(queries, items, metric)
    ix = R.Index(metric, item_chunk=item_chunk).add(items)
    for k in (1, 3, 7, 50, 97):
        v, i = ix.search(queries, k, batch_size=5)
        rv, ri = R.topk(full, k, largest=sim.HIGHER_IS_BETTER[metric])
        np.testing.assert_array_equal(i, ri, err_msg=f"k={k}")
        np.testing.assert_allclose(v, rv, atol=1e-6)


@pytest.mark.parametrize("listed", [0, 1, 64])
def test_index_listing_cap_and_adversarial_order(monkeypatch, listed):
    # Ascending scores: every later group beats the k-th best so far, the worst case for
    # skipping. A cap of 0 candidates forces the per-group top-k path everywhere.
    monkeypatch.setattr(R, "CPU_TILE", 8)
    monkeypatch.setattr(R, "GROUP", 4)
    monkeypatch.setattr(R, "LIST_PER_QUERY", listed)
    items = np.repeat(np.arange(60, dtype=np.float64), 2)[:, None]  # pairs of equal items
    queries = np.array([[1.0], [-1.0], [0.5]])
    v, i = R.Index("dot", item_chunk=16).add(items).search(queries, 5, batch_size=2)
    rv, ri = R.topk(sim.pairwise(queries, items, "dot"), 5)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(v, rv)
    assert i[0].tolist() == [118, 119, 116, 117, 114] and i[1].tolist() == [0, 1, 2, 3, 4]


def test_index_memory_bytes_covers_block_and_scratch():
    ix = R.Index("dot", item_chunk=16384)
    # 1024 x 16384 float32 score block (64 MiB) + 4 x 1024 x CPU_TILE scratch (16 MiB)
    assert ix.memory_bytes(1024) == 1024 * (16384 + 4 * R.CPU_TILE) * 4
    assert R.Index("dot", item_chunk=1500).memory_bytes(10) == 10 * (2048 + 4 * 1024) * 4


def test_index_errors_and_clamping():
    ix = R.Index("cosine")
    with pytest.raises(QueryError, match="empty"):
        ix.search(np.ones((1, 3)), 1)
    ix.add(np.eye(3))
    with pytest.raises(ShapeError, match="4 features but the index items have 3"):
        ix.search(np.ones((1, 4)), 1)
    with pytest.raises(ShapeError, match="positive integer"):
        ix.search(np.ones((1, 3)), 0)
    with pytest.raises(ShapeError, match="index holds 3"):
        ix.add(np.ones((2, 5)))
    v, i = ix.search(np.ones((2, 3)), 10)
    assert i.shape == (2, 3)  # k > M clamped
    with pytest.raises(ShapeError, match="unknown metric"):
        R.Index("hamming")


def test_index_torch_in_torch_out():
    items = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    v, i = R.Index("euclidean").add(items).search(items[:3], 1)
    assert isinstance(v, torch.Tensor) and i[:, 0].tolist() == [0, 1, 2]
    assert torch.allclose(v[:, 0], torch.zeros(3), atol=1e-3)


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean", "neg_euclidean"])
def test_faiss_backend_same_sets(metric):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    items, queries = rng.normal(size=(500, 16)).astype(np.float32), rng.normal(size=(40, 16)).astype(np.float32)
    tv, ti = R.Index(metric, item_chunk=64).add(items).search(queries, 10)
    fv, fi = R.Index(metric, backend="faiss").add(items).search(queries, 10)
    for a, b in zip(ti, fi, strict=True):
        assert set(a) == set(b)
    np.testing.assert_allclose(np.sort(tv, 1), np.sort(fv, 1), atol=1e-3)
    with pytest.raises(ShapeError, match="FAISS backend"):
        R.Index("kl", backend="faiss")


# ---- evaluation --------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_topk_and_index_match_cpu():
    g = torch.Generator().manual_seed(0)
    S = torch.randint(0, 5, (64, 300), generator=g).float()
    cv, ci = R.topk(S, 10)
    gv, gi = R.topk(S.to("cuda"), 10)
    assert torch.equal(ci, gi.cpu()) and torch.equal(cv, gv.cpu())
    items, q = torch.randn(5000, 32, generator=g), torch.randn(50, 32, generator=g)
    cv, ci = R.Index("cosine", item_chunk=1000).add(items).search(q, 10)
    gv, gi = R.Index("cosine", item_chunk=1000).add(items.to("cuda")).search(q.to("cuda"), 10)
    assert gi.device.type == "cuda"
    assert (ci == gi.cpu()).float().mean() > 0.99  # float rounding may swap near-equal neighbours
