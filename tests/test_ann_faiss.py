"""crosslab.ann_faiss (FAISS's indexes behind ann.IVFIndex's interface), ann.clustered_vectors,
and the ann benchmark's quick run: against exact search and hand-checked properties."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from crosslab.ann import IVFIndex, clustered_vectors, recall_at_k
from crosslab.errors import CrosslabError, ShapeError
from crosslab.search import topk

HAS_FAISS = importlib.util.find_spec("faiss") is not None
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss-cpu is not installed (the 'faiss' extra)")


@pytest.fixture(autouse=True, scope="module")
def _one_faiss_thread():
    """FAISS on one OpenMP thread, as conftest does for torch: on tiny data a second thread only adds
    synchronisation, and on a busy 2-core machine it made k-means ~10x slower. No assertion is a timing."""
    if not HAS_FAISS:
        yield
        return
    import faiss

    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    X, Q, _ = clustered_vectors(3000, 32, queries=40, seed=1)
    return X, Q, topk(Q @ X.T, 10)  # unit rows: inner product == cosine


# --- clustered_vectors -----------------------------------------------------------------------


def test_clustered_vectors_are_deterministic_unit_and_unequal():
    a = clustered_vectors(4000, 24, queries=30, seed=3)
    b = clustered_vectors(4000, 24, queries=30, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a.vectors, clustered_vectors(4000, 24, seed=4).vectors)
    assert a.vectors.shape == (4000, 24) and a.queries.shape == (30, 24) and a.labels.shape == (4000,)
    assert a.vectors.dtype == a.queries.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a.vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a.queries, axis=1), 1, atol=1e-5)
    sizes = np.bincount(a.labels, minlength=64)  # ceil(sqrt(4000)) = 64 clusters
    assert len(sizes) == 64 and sizes[0] == sizes.max() and sizes[0] > 10 * max(np.median(sizes), 1)
    # Queries are new draws, not copies of stored vectors.
    assert (a.queries @ a.vectors.T).max() < 1 - 1e-4
    assert clustered_vectors(10, 4).queries.shape == (0, 4)
    with pytest.raises(ShapeError, match="n and d"):
        clustered_vectors(0, 4)
    with pytest.raises(ShapeError, match="n_clusters"):
        clustered_vectors(10, 4, n_clusters=0)


def test_clustered_vectors_are_easier_for_an_ivf_index_than_iid_gaussian():
    # The docstring's claim, checked with the hand-made IVF: same sizes, same nprobe.
    X, Q, _ = clustered_vectors(3000, 32, queries=40)
    rng = np.random.default_rng(0)
    G, H = rng.normal(size=(3000, 32)).astype(np.float32), rng.normal(size=(40, 32)).astype(np.float32)
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    H /= np.linalg.norm(H, axis=1, keepdims=True)
    rec = {}
    for name, (A, B) in {"clustered": (X, Q), "iid": (G, H)}.items():
        ids = IVFIndex(n_cells=32).fit(A).search(B, 10, nprobe=2)[1]
        rec[name] = recall_at_k(ids, topk(B @ A.T, 10)[1])
    assert rec["clustered"] > rec["iid"] + 0.2, rec


# --- FAISS indexes against exact search ------------------------------------------------------


@needs_faiss
def test_ivf_flat_probing_every_cell_and_flat_equal_exact_search(data):
    from crosslab.ann_faiss import make_index

    X, Q, (es, ei) = data
    for index, params in ((make_index("ivf-flat", n_cells=16).fit(X), {"nprobe": 16}),
                          (make_index("flat").fit(X), {})):
        s, i = index.search(Q, 10, **params)
        assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == i.shape == (40, 10)
        assert np.array_equal(i, ei) and np.allclose(s, es, atol=1e-5)
    # metric="dot" keeps the raw inner product; cosine (the default) normalises.
    raw = X * np.linspace(0.5, 2.0, len(X), dtype=np.float32)[:, None]
    s, i = make_index("flat", metric="dot").fit(raw).search(Q, 5)
    ds, di = topk(Q @ raw.T, 5)
    assert np.array_equal(i, di) and np.allclose(s, ds, atol=1e-5)
    assert np.array_equal(make_index("flat").fit(raw).search(Q, 5)[1], topk(Q @ X.T, 5)[1])


@needs_faiss
@pytest.mark.parametrize("kind, options, knob, values, gain", [
    # PQ's approximate scores cap its recall: probing more cells helps only a little.
    ("ivf-pq", {"n_cells": 16, "m": 8, "bits": 6}, "nprobe", [1, 2, 4, 16], 0.03),
    ("ivf-pq", {"n_cells": 16, "m": 8, "bits": 6, "refine": "flat"}, "nprobe", [1, 2, 4, 16], 0.1),
    ("hnsw", {"M": 8}, "efSearch", [1, 4, 16, 128], 0.1),
])
def test_recall_rises_with_the_search_knob(data, kind, options, knob, values, gain):
    from crosslab.ann_faiss import make_index

    X, Q, (_, ei) = data
    index = make_index(kind, **options).fit(X)
    extra = {"k_factor": 8} if options.get("refine") else {}
    recalls = [recall_at_k(index.search(Q, 10, **{knob: v}, **extra)[1], ei) for v in values]
    assert all(0.0 <= r <= 1.0 for r in recalls)
    assert recalls[-1] > recalls[0] + gain, recalls
    assert all(b >= a - 0.01 for a, b in zip(recalls, recalls[1:], strict=False)), recalls
    if options.get("refine") == "flat":  # re-ranked with the exact vectors: better than PQ alone
        plain = make_index("ivf-pq", n_cells=16, m=8, bits=6).fit(X)
        assert recalls[-1] > recall_at_k(plain.search(Q, 10, nprobe=16)[1], ei) + 0.1


@needs_faiss
def test_memory_is_measured_from_faiss_serialisation(data):
    import faiss

    from crosslab.ann_faiss import make_index

    X, _, _ = data
    flat = make_index("flat").fit(X)
    assert flat.memory_bytes() == len(faiss.serialize_index(flat.index_))
    f32 = flat.bytes_per_vector
    assert f32 == pytest.approx(4 * 32, rel=0.01)
    assert make_index("flat-f16").fit(X).bytes_per_vector / f32 == pytest.approx(1 / 2, rel=0.02)
    assert make_index("sq8").fit(X).bytes_per_vector / f32 == pytest.approx(1 / 4, rel=0.02)
    # IVF-PQ: m one-byte codes and an 8-byte id per vector, plus centroids and codebooks shared by all.
    pq = make_index("ivf-pq", n_cells=16, m=8, bits=8).fit(X)
    shared = (16 * 32 + 8 * 256 * 4) * 4 / len(X)
    assert 8 + 8 <= pq.bytes_per_vector <= 8 + 8 + shared + 2
    assert make_index("ivf-flat", n_cells=16).fit(X).bytes_per_vector >= f32 + 8


@needs_faiss
def test_deterministic_for_a_seed_and_refine_reuses_the_trained_index(data):
    import faiss

    from crosslab.ann_faiss import make_index

    X, Q, _ = data
    a, b = (make_index("ivf-pq", n_cells=16, m=8, bits=6, max_train=1000, seed=5).fit(X) for _ in range(2))
    assert np.array_equal(faiss.serialize_index(a.index_), faiss.serialize_index(b.index_))
    assert all(np.array_equal(x, y) for x, y in zip(a.search(Q, 10, nprobe=4), b.search(Q, 10, nprobe=4),
                                                    strict=True))
    fresh = make_index("ivf-pq", n_cells=16, m=8, bits=6, max_train=1000, seed=5, refine="sq8").fit(X)
    shared = a.with_refine("sq8", X)
    assert shared.index_.base_index.this == a.index_.this  # not retrained
    for p in ({"nprobe": 2, "k_factor": 4}, {"nprobe": 16}):
        assert np.array_equal(fresh.search(Q, 10, **p)[1], shared.search(Q, 10, **p)[1])


@needs_faiss
def test_few_candidates_pad_with_minus_one():
    from crosslab.ann_faiss import make_index

    X = np.eye(4, dtype=np.float32)
    s, i = make_index("ivf-flat", n_cells=4).fit(X).search(X[:1], k=3, nprobe=1)
    assert i[0, 0] == 0 and (i[0, 1:] == -1).all() and np.isinf(s[0, 1:]).all() and (s[0, 1:] < 0).all()


@needs_faiss
def test_clear_errors(data):
    from crosslab.ann_faiss import make_index

    X, Q, _ = data
    bad = [(lambda: make_index("lsh"), "unknown index kind"),
           (lambda: make_index("flat", metric="l1"), "metric"),
           (lambda: make_index("hnsw", nprobe=4), "no option nprobe"),
           (lambda: make_index("ivf-pq", refine="pq"), "refine"),
           (lambda: make_index("ivf-flat", n_cells=0), "n_cells"),
           (lambda: make_index("flat").search(Q), "fit"),
           (lambda: make_index("flat").memory_bytes(), "fit"),
           (lambda: make_index("ivf-pq", m=5).fit(X), "m must divide"),
           (lambda: make_index("ivf-pq", m=8, bits=12).fit(X[:100]), "bits"),
           (lambda: make_index("flat").fit(X[:, :0]), "non-empty"),
           (lambda: make_index("flat").fit(np.ones(5)), "non-empty")]
    for call, match in bad:
        with pytest.raises(ShapeError, match=match):
            call()
    hnsw = make_index("hnsw", M=8).fit(X[:200])
    with pytest.raises(ShapeError, match="takes efSearch, not nprobe"):
        hnsw.search(Q, 10, nprobe=4)
    with pytest.raises(ShapeError, match="dimensions"):
        hnsw.search(np.ones((1, 5)), 10)
    with pytest.raises(ShapeError, match="k must"):
        hnsw.search(Q, 0)
    with pytest.raises(ShapeError, match="positive integer"):
        hnsw.search(Q, 10, efSearch=0)
    with pytest.raises(ShapeError, match="with_refine"):
        hnsw.with_refine("sq8", X[:200])
    with pytest.raises(ShapeError, match="takes nprobe, not k_factor"):  # no re-ranking store, no k_factor
        make_index("ivf-pq", n_cells=4, m=8, bits=4).fit(X[:200]).search(Q, 10, k_factor=4)


def test_missing_faiss_says_how_to_install_it(monkeypatch):
    from crosslab.ann_faiss import make_index

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss now raises ImportError
    with pytest.raises(CrosslabError, match="pip install faiss-cpu"):
        make_index("ivf-flat").fit(np.eye(4, dtype=np.float32))


# --- the benchmark's quick run and its goal rule -----------------------------------------------


@needs_faiss
def test_ann_benchmark_quick_run_and_report():
    from benchmarks import bench_ann, report
    from crosslab.ann_faiss import default_cells

    res = bench_ann.run(quick=True, log=lambda _: None)
    (s,) = res["sizes"]
    assert {b["index"] for b in s["builds"]} == {label for label, *_ in bench_ann.SWEEPS}
    for p in s["points"]:
        assert 0.0 <= p["recall"] <= 1.0 and p["qps"] > 0 and p["bytes_per_vector"] > 0
        assert len(p["speedup_per_round"]) == bench_ann.QUICK_ROUNDS
    assert s["crosslab_index_agreement"] == 1.0
    ceiling = s["code_ceiling"]  # the codes alone, every cell scanned: coarse to fine
    assert [(c["m"], c["bits"]) for c in ceiling] == [(s["d"] // dims, bits) for dims, bits in bench_ann.CEILING_CODES]
    for c in ceiling:
        assert c["nprobe"] == default_cells(s["n"]) and 0.0 <= c["recall"] <= 1.0
        assert c["bytes_per_vector"] >= c["code_bytes"] + 8  # codes + an 8-byte id each, and the tables
    assert ceiling[-1]["recall"] > ceiling[0]["recall"]  # 4 bits per dimension vs 1: far fewer neighbours lost
    goals = bench_ann.goals(res, quick=True)
    assert len(goals) == 2 and all(g["met"] is None for g in goals)
    text = report._ann({"ann": res})
    assert "## Approximate search: FAISS indexes (lesson 09)" in text and "| ivf-pq | nprobe=1 |" in "\n".join(text)
    assert "What the codes alone allow" in "\n".join(text)


def test_operating_point_rule_and_goal_judgement():
    from benchmarks import bench_ann

    d = 256  # bound: 128 B/vector
    pts = [{"index": "ivf-flat", "params": {"nprobe": 8}, "recall": 0.99, "qps": 9000.0, "bytes_per_vector": 1032},
           {"index": "ivf-pq", "params": {"nprobe": 4}, "recall": 0.96, "qps": 5000.0, "bytes_per_vector": 72},
           {"index": "ivf-pq", "params": {"nprobe": 2}, "recall": 0.94, "qps": 8000.0, "bytes_per_vector": 72},
           {"index": "ivf-pq", "params": {"nprobe": 8}, "recall": 0.97, "qps": 3000.0, "bytes_per_vector": 72}]
    assert bench_ann.operating_point(pts, d) is pts[1]  # fastest at recall >= 0.95 within 128 B
    assert bench_ann.operating_point(pts[:1] + pts[2:3], d) is None
    brief = {"index": "ivf-pq", "params": {"nprobe": 2}, "recall": 0.7, "qps": 1.0, "speedup": 20.0,
             "bytes_per_vector": 72}
    ann = {"config": {"recall_target": 0.95, "speedup_target": 10.0},
           "sizes": [{"n": 1_000_000, "d": d, "k": 10, "memory_bound_bytes": 128.0, "best_within_memory": brief,
                      "operating_point": None, "fastest_at_recall_any_memory": None}]}
    codes = [{"factory": f, "bytes_per_vector": b, "recall": r}
             for f, b, r in (("IVF1024,PQ64x8", 73, 0.6), ("IVF1024,PQ128x7", 121, 0.8), ("IVF1024,PQ256x4", 137, 0.85))]
    ann["sizes"].insert(0, {"n": 100_000, "code_ceiling": codes})
    recall_goal, speed_goal = bench_ann.goals(ann, quick=False)
    assert recall_goal["met"] is False and recall_goal["judged"]
    assert "every cell scanned (N=100,000): at most 0.800 within the bound (IVF1024,PQ128x7" in recall_goal["measured"]
    assert speed_goal["met"] is False and "no point within the memory bound" in speed_goal["why"]
    ann["sizes"][-1].update(best_within_memory=dict(brief, recall=0.96),
                           operating_point=dict(brief, recall=0.96, speedup_per_round=[12.0] * 7))
    recall_goal, speed_goal = bench_ann.goals(ann, quick=False)
    assert recall_goal["met"] is True and speed_goal["met"] is True and speed_goal["repeats"] == 7
