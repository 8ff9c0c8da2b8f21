"""Text features: tokenizer, Word2Vec, GloVe, sentence pooling against hand-computed values, OOV."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from gensim.models import KeyedVectors

from crosslab import text as T
from crosslab.errors import CrosslabError, ModelError, QueryError

UNKNOWN = "zxqvw"  # not in GloVe's 400k words (unlike 'xyzzy', which is)


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "cache"))


def _kv(words: dict[str, list[float]]) -> KeyedVectors:
    kv = KeyedVectors(len(next(iter(words.values()))))
    kv.add_vectors(list(words), np.array(list(words.values()), dtype=np.float32))
    return kv


TOY = _kv({"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0]})


# ----------------------------------------------------------------------------- tokenizer
@pytest.mark.parametrize("text, tokens", [
    ("A red car.", ["a", "red", "car"]),
    ("red_car, BLUE-sky!", ["red", "car", "blue", "sky"]),
    ("2 dogs and 10 cats", ["2", "dogs", "and", "10", "cats"]),
    ("Café au LAIT, ÉCOLE", ["café", "au", "lait", "école"]),
    ("ｆｕｌｌｗｉｄｔｈ", ["fullwidth"]),  # NFKC folds compatibility forms
    ("Straße", ["strasse"]),  # casefold, not just lower
    ("   ...!!  ", []),
    ("", []),
])
def test_tokenize(text, tokens):
    assert T.tokenize(text) == tokens


def test_tokenize_rejects_non_strings():
    with pytest.raises(QueryError):
        T.tokenize(None)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- GloVe
@pytest.fixture(scope="module")
def glove():
    return T.load_glove()


def test_glove_loads_once_and_has_analogies(glove):
    assert T.load_glove() is glove  # memoised
    assert glove.vector_size == 50 and len(glove) == 400_000
    assert T.vectors_name(glove) == "glove-6B-50d"
    top3 = [w for w, _ in glove.most_similar(positive=["king", "woman"], negative=["man"], topn=3)]
    assert "queen" in top3
    assert "cat" in [w for w, _ in glove.most_similar("dog", topn=3)]


def test_glove_sentence_encoder_and_queries(glove):
    enc = T.SentenceEncoder(glove, "mean")
    assert enc.dim == 50 and "glove-6B-50d" in enc.name
    X = enc.transform(["a dog on the grass", f"{UNKNOWN} {UNKNOWN}!"])
    assert X.shape == (2, 50) and X.dtype == np.float32
    assert enc.last_unknown_.tolist() == [False, True]
    np.testing.assert_array_equal(X[1], 0)
    q = enc.encode_query("Dog on GRASS")
    np.testing.assert_allclose(q, glove[["dog", "on", "grass"]].mean(0), rtol=1e-6)
    with pytest.raises(QueryError, match=f"none of the words '{UNKNOWN}' are known to this model"):
        enc.encode_query(UNKNOWN)
    with pytest.raises(QueryError, match="no words"):
        enc.encode_query("  ?! ")


# ----------------------------------------------------------------------------- Word2Vec
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle", "star", "heart", "cross"]
SIZES = ["small", "large", "tiny", "big"]


def _captions(n=600, seed=0):
    # Synthetic scene captions: colours fill the same slots, so a good embedding groups them.
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c1, c2 = rng.choice(COLOURS, 2, replace=False)
        s1, s2 = rng.choice(SHAPES, 2, replace=False)
        z = rng.choice(SIZES)
        where = rng.choice(["left of", "above", "next to", "below"])
        out.append(f"a {z} {c1} {s1} {where} a {c2} {s2}")
    return out


@pytest.fixture(scope="module")
def w2v():
    return T.train_word2vec(_captions(), vector_size=50, seed=0)  # window 5, 20 epochs


def test_word2vec_puts_colours_next_to_colours(w2v):
    assert T.vectors_name(w2v) == "word2vec-sg-50d"
    for c in COLOURS:
        nearest = [w for w, _ in w2v.most_similar(c, topn=3)]
        assert nearest[0] in COLOURS and sum(w in COLOURS for w in nearest) >= 2, (c, nearest)
    assert sum(w2v.most_similar(s, topn=1)[0][0] in SHAPES for s in SHAPES) >= 5


def test_word2vec_is_deterministic_in_process():
    texts = _captions(150)
    a = T.train_word2vec(texts, vector_size=16, epochs=3, seed=7)
    b = T.train_word2vec(texts, vector_size=16, epochs=3, seed=7)
    c = T.train_word2vec(texts, vector_size=16, epochs=3, seed=8)
    assert a.index_to_key == b.index_to_key
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert not np.array_equal(a.vectors, c.vectors)
    cbow = T.train_word2vec(texts, vector_size=16, epochs=3, sg=0)
    assert T.vectors_name(cbow) == "word2vec-cbow-16d"


def test_word2vec_is_deterministic_across_processes(tmp_path):
    # Different PYTHONHASHSEEDs: gensim's default string hash would differ between them.
    code = (
        "import sys; sys.path.insert(0, {root!r}); from tests.test_text import _captions; "
        "from crosslab import text as T; "
        "T.save_vectors(T.train_word2vec(_captions(150), vector_size=16, epochs=3), sys.argv[1])"
    ).format(root=str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"v{seed}.npz"
        subprocess.run([sys.executable, "-c", code, str(out)], check=True,
                       env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}, timeout=120)
        outs.append(T.load_vectors(out))
    assert outs[0].index_to_key == outs[1].index_to_key
    np.testing.assert_array_equal(outs[0].vectors, outs[1].vectors)


def test_word2vec_input_errors():
    with pytest.raises(CrosslabError, match="no words"):
        T.train_word2vec(["...", "!!"])
    with pytest.raises(CrosslabError, match="min_count"):
        T.train_word2vec(["one two"], min_count=5)
    with pytest.raises(QueryError, match="list of strings"):
        T.train_word2vec("a single string")


def test_save_load_roundtrip(tmp_path, w2v):
    p = T.save_vectors(w2v, tmp_path / "w2v")
    assert p.suffix == ".npz"
    back = T.load_vectors(p)
    assert back.index_to_key == w2v.index_to_key and T.vectors_name(back) == T.vectors_name(w2v)
    np.testing.assert_array_equal(back.vectors, w2v.vectors)


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_format_roundtrip(tmp_path, binary):
    path = tmp_path / ("v.bin" if binary else "v.txt")
    TOY.save_word2vec_format(str(path), binary=binary)
    kv = T.load_word2vec_format(path)  # flavour guessed from the suffix
    assert kv.index_to_key == ["a", "b", "c"]
    np.testing.assert_array_equal(kv["c"], [1, 1])


def test_word2vec_format_errors(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        T.load_word2vec_format(tmp_path / "missing.txt")
    bad = tmp_path / "bad.txt"
    bad.write_text("this is not\na word2vec file\n")
    with pytest.raises(ModelError, match="bad.txt"):
        T.load_word2vec_format(bad)
    bad_npz = tmp_path / "bad.npz"
    bad_npz.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="bad.npz"):
        T.load_vectors(bad_npz)


# ----------------------------------------------------------------------------- pooling by hand
TRAIN = ["a b", "a c", "a a"]


def test_mean_pooling_by_hand():
    enc = T.SentenceEncoder(TOY, "mean")  # mean needs no fit
    X = enc.transform(["a b c", "b b a", "c"])
    np.testing.assert_allclose(X, [[2 / 3, 2 / 3], [1 / 3, 2 / 3], [1, 1]], rtol=1e-6)


def test_tfidf_pooling_by_hand():
    enc = T.SentenceEncoder(TOY, "tfidf").fit(TRAIN)
    # n = 3 texts; df(a) = 3, df(b) = df(c) = 1; idf = ln((1+n)/(1+df)) + 1
    idf_a, idf_b = math.log(4 / 4) + 1, math.log(4 / 2) + 1
    assert enc.idf_ == pytest.approx({"a": idf_a, "b": idf_b, "c": idf_b})
    X = enc.transform(["a b", "b b"])
    expect0 = (idf_a * np.array([1, 0]) + idf_b * np.array([0, 1])) / (idf_a + idf_b)
    np.testing.assert_allclose(X[0], expect0, rtol=1e-6)
    np.testing.assert_allclose(X[1], [0, 1], rtol=1e-6)


def test_sif_pooling_by_hand_with_pc_removal():
    # Training sentences all point along a = [1, 0], so the first PC is u = [1, 0].
    a = 0.1
    enc = T.SentenceEncoder(TOY, "sif", sif_a=a).fit(["a", "a a"])
    np.testing.assert_allclose(np.abs(enc.pc_), [1, 0], atol=1e-7)
    assert enc.word_prob_ == {"a": 1.0}
    X = enc.transform(["c", "a c", "b"])
    # "c": unseen in training, p = 0, weight 1 -> [1, 1]; minus its projection on u -> [0, 1]
    # "a c": (a/(a+1) [1, 0] + 1 [1, 1]) / 2 -> second coordinate 1/2 after removing u
    # "b": [0, 1] is orthogonal to u and stays
    np.testing.assert_allclose(X, [[0, 1], [0, 0.5], [0, 1]], atol=1e-7)


def test_sif_matches_an_independent_reference():
    from sklearn.decomposition import TruncatedSVD

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(30)]
    kv = _kv({w: rng.standard_normal(6).tolist() for w in words})
    train = [" ".join(rng.choice(words, rng.integers(1, 8))) for _ in range(40)]
    test = [" ".join(rng.choice(words, rng.integers(1, 8))) for _ in range(10)]
    a = 1e-2
    enc = T.SentenceEncoder(kv, "sif", sif_a=a).fit(train)

    counts = {}
    for t in train:
        for w in t.split():
            counts[w] = counts.get(w, 0) + 1
    total = sum(counts.values())

    def naive(t):
        ws = t.split()
        return sum(a / (a + counts.get(w, 0) / total) * kv[w].astype(np.float64) for w in ws) / len(ws)

    svd = TruncatedSVD(n_components=1, n_iter=20, random_state=0).fit(np.array([naive(t) for t in train]))
    u = svd.components_[0]
    ref = np.array([naive(t) - naive(t) @ u * u for t in test])
    np.testing.assert_allclose(enc.transform(test), ref, atol=1e-5)


def test_fit_uses_training_texts_only():
    enc = T.SentenceEncoder(TOY, "tfidf").fit(TRAIN)
    idf = dict(enc.idf_)
    X1 = enc.transform(["b c", "c c c"])
    enc.transform(["b b b b", "a"] * 50)  # transforming other texts changes nothing
    assert enc.idf_ == idf
    np.testing.assert_array_equal(enc.transform(["b c", "c c c"]), X1)
    assert not np.allclose(T.SentenceEncoder(TOY, "tfidf").fit(TRAIN + ["b"] * 20).transform(["a b"]),
                           enc.transform(["a b"]))


@pytest.mark.parametrize("pooling", ["tfidf", "sif"])
def test_unfitted_pooling_says_what_to_do(pooling):
    with pytest.raises(ModelError, match=r"fit\(train_texts\)"):
        T.SentenceEncoder(TOY, pooling).transform(["a"])


@pytest.mark.parametrize("pooling", T.POOLINGS)
def test_all_unknown_gives_zero_and_flag_never_nan(pooling):
    enc = T.SentenceEncoder(TOY, pooling).fit(TRAIN)
    X, mask = enc.transform(["a", "zzz yyy", "", "b zzz"], return_mask=True)
    assert mask.tolist() == [False, True, True, False]
    assert np.isfinite(X).all()
    np.testing.assert_array_equal(X[mask], 0)
    assert np.abs(X[~mask]).sum(1).min() > 0
    assert enc.fit_transform(TRAIN).shape == (3, 2)


def test_oov_report():
    enc = T.SentenceEncoder(TOY)
    rep = enc.oov_report(["a x x", "y", "b c", "x"])
    assert (rep.n_texts, rep.n_tokens, rep.n_unknown, rep.n_texts_all_unknown) == (4, 7, 4, 2)
    assert rep.rate == pytest.approx(4 / 7)
    assert rep.most_common[0] == ("x", 3)
    assert "57.1%" in str(rep)


def test_sentence_encoder_accepts_a_dataset_and_validates():
    from crosslab.data import CaptionedImages

    ds = CaptionedImages("toy", ["i0", "i1"], [np.zeros((4, 4, 3), np.uint8)] * 2,
                         ["a b", "c", "a"], [0, 0, 1], ["train", "test"])
    enc = T.SentenceEncoder(TOY)
    assert enc(ds).shape == (3, 2)
    with pytest.raises(ModelError, match="pooling"):
        T.SentenceEncoder(TOY, "max")
    with pytest.raises(ModelError, match="KeyedVectors"):
        T.SentenceEncoder({"a": [1, 2]})  # type: ignore[arg-type]
    with pytest.raises(QueryError, match="one string"):
        enc.transform("a b")


def test_text_features_cache_hit_is_bit_identical():
    enc = T.SentenceEncoder(TOY, "sif").fit(TRAIN)
    texts = ["a b", "zzz", "c a"]
    X1, m1 = enc.transform(texts, cache=True, return_mask=True)
    assert not enc.last_cache_info_.hit
    X2, m2 = enc.transform(texts, cache=True, return_mask=True)
    assert enc.last_cache_info_.hit
    assert X1.tobytes() == X2.tobytes() and m1.tolist() == m2.tolist() == [False, True, False]
    # a different fit is a different entry
    enc2 = T.SentenceEncoder(TOY, "sif").fit(TRAIN + ["b"])
    enc2.transform(texts, cache=True)
    assert not enc2.last_cache_info_.hit
