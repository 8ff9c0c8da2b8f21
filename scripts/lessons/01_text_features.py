# %% [markdown]
# # Lesson 01 — From words to vectors: text features
#
# A retrieval model cannot compare a sentence with a picture directly; first each side becomes a
# vector of numbers. This lesson builds the text side in three steps:
#
# 1. **tokenise** a caption into words;
# 2. give every word a **vector** — learned from our own captions (Word2Vec) or pretrained on a huge
#    corpus (GloVe);
# 3. **pool** the word vectors of a caption into one sentence vector.
#
# The key idea of word vectors (the *distributional hypothesis*): words that appear in similar
# contexts mean similar things, so a model that predicts a word's neighbours learns vectors in which
# *dog* sits near *cat* and *red* near *blue*.

# %%
import numpy as np

import crosslab as cl
from crosslab.text import SentenceEncoder, tokenize

ds = cl.data.load_clipart()
train_caps = ds.train.captions
print(f"{len(train_caps):,} training captions")

# %% [markdown]
# ## 1. Tokenising
#
# One tokenizer is used for training *and* for queries, so a query is cut exactly like the captions
# the model learned from. It lower-cases, normalises Unicode and splits on anything that is not a
# letter or a digit (underscores included — file names like `red_car` are common in clip art).

# %%
for text in ["A Red_Car, 2 dogs & a Café!", ds.captions[1]]:
    print(repr(text), "->", tokenize(text))

# %% [markdown]
# ## 2. Word2Vec trained on the captions
#
# Skip-gram Word2Vec (Mikolov et al., 2013) slides a window over each caption and trains a word's
# vector $v_w$ to predict the words around it. With negative sampling it maximises, for an observed
# pair (word $w$, context word $c$) and $k$ random "negative" words $n_i$,
#
# $$\log \sigma(v_w \cdot u_c) + \sum_{i=1}^{k} \log \sigma(-v_w \cdot u_{n_i}),$$
#
# where $\sigma$ is the logistic function. Words that share contexts end up with similar vectors.
# Our corpus is tiny (a few thousand captions), so training takes seconds — and the vectors only know
# the words of these captions. `seed` and a single worker thread make training reproducible.

# %%
w2v = cl.text.train_word2vec(train_caps, vector_size=100, epochs=20, seed=0)
print(f"Word2Vec: {len(w2v.key_to_index):,} words x {w2v.vector_size} dimensions")


# %%
def nearest(kv, word, n=6):
    """The n nearest words by cosine similarity, rounded for display."""
    return ", ".join(f"{w} ({s:.2f})" for w, s in kv.most_similar(word, topn=n))


for word in ["car", "dog", "tree", "red"]:
    print(f"{word:>5}: {nearest(w2v, word)}")

# %% [markdown]
# ## 3. GloVe: vectors pretrained on 6 billion words
#
# GloVe (Pennington et al., 2014) fits word vectors so that their dot product predicts how often two
# words co-occur in Wikipedia and news text: $v_i \cdot \tilde v_j + b_i + \tilde b_j \approx \log X_{ij}$.
# The 50-dimensional version (400,000 words) ships with the course. Its neighbours reflect general
# English rather than our clip art.

# %%
glove = cl.text.load_glove()
print(f"GloVe: {len(glove.key_to_index):,} words x {glove.vector_size} dimensions")
for word in ["car", "dog", "tree", "red"]:
    print(f"{word:>5}: {nearest(glove, word)}")

# %% [markdown]
# The famous analogy: the offset *woman − man* is roughly a "gender direction", so
# $v_\text{king} - v_\text{man} + v_\text{woman}$ lands near *queen*.

# %%
analogy = glove.most_similar(positive=["king", "woman"], negative=["man"], topn=3)
print([w for w, _ in analogy])

# %% [markdown]
# ### A 2-D map of word vectors
#
# Projecting vectors on their two main directions (PCA) shows the structure: related words form
# clusters. (Two dimensions lose most of the 50; closeness on the map is only a hint.)

# %%
groups = {
    "colours": ["red", "green", "blue", "yellow", "purple", "orange"],
    "animals": ["dog", "cat", "horse", "bird", "fish", "cow"],
    "vehicles": ["car", "bus", "truck", "train", "bicycle", "airplane"],
    "food": ["apple", "bread", "cheese", "cake", "pizza", "banana"],
}
cl.plots.plot_word_map(glove, groups, title="GloVe 50-d, first two principal components")

# %% [markdown]
# ## 4. Words the vectors do not know (OOV)
#
# A word missing from the vocabulary is *out of vocabulary* and simply skipped when pooling. GloVe
# knows general English but not clip-art jargon or artists' nicknames; Word2Vec knows exactly the
# training captions' words — and nothing a learner types that never appeared in them. We count both on
# the **test** captions (text the models never saw).

# %%
test_caps = ds.test.captions
for name, kv in [("GloVe", glove), ("Word2Vec", w2v)]:
    rep = SentenceEncoder(kv).oov_report(test_caps, top=5)
    print(f"{name:>8}: {rep.rate:.1%} of test tokens unknown, "
          f"{rep.n_texts_all_unknown} captions with no known word; "
          f"most common: {', '.join(w for w, _ in rep.most_common)}")

# %% [markdown]
# A caption whose words are *all* unknown becomes a zero vector, flagged so the caller can see it
# (never NaN). A *query* with no known word is an error with a message that says so:

# %%
enc = SentenceEncoder(glove, "mean")
X, unknown = enc.transform(["a red car", "blorptastic snorfle"], return_mask=True)
print("all-unknown flags:", unknown, "| norm of the unknown row:", float(np.linalg.norm(X[1])))
try:
    enc.encode_query("blorptastic snorfle")
except cl.errors.QueryError as e:
    print("QueryError:", e)

# %% [markdown]
# ## 5. From word vectors to a sentence vector
#
# A caption with known words $w_1, \dots, w_m$ becomes one vector. Three classic ways:
#
# * **mean**: $\displaystyle s = \frac{1}{m}\sum_{i=1}^{m} v_{w_i}$ — every word counts the same,
#   so "a", "of", "the" dilute the content words.
# * **TF-IDF weighted mean**: $\displaystyle s = \frac{\sum_i \mathrm{idf}(w_i)\, v_{w_i}}{\sum_i \mathrm{idf}(w_i)}$
#   with $\mathrm{idf}(w) = \ln\frac{1+n}{1+\mathrm{df}(w)} + 1$ over the $n$ training captions —
#   rare words weigh more.
# * **SIF** (Arora et al., 2017): weights $\frac{a}{a + p(w)}$ with $p(w)$ the word's frequency, then
#   the projection on the first principal component $u$ of all training sentences is removed,
#   $s \leftarrow s - (s \cdot u)\,u$ — that direction is shared by all sentences (common words,
#   style) and carries little meaning.
#
# TF-IDF and SIF statistics are **fitted on the training captions only**, then applied to any text.
#
# How to tell which pooling is better without any images? A simple test: most images have two or more
# captions. For each test caption, find the most similar *other* test caption; how often does it
# describe the same image? Better sentence vectors put captions of one image close together.

# %%
test = ds.test
multi = np.bincount(test.caption_to_image)[test.caption_to_image] >= 2


def same_image_rate(X):
    """Share of captions (of images with 2+ captions) whose nearest other caption has the same image."""
    S = cl.similarity.pairwise(X, X, "cosine")
    np.fill_diagonal(S, -np.inf)
    nn = S.argmax(1)
    return float(np.mean(test.caption_to_image[nn][multi] == test.caption_to_image[multi]))


rates = {}
for vec_name, kv in [("GloVe", glove), ("Word2Vec", w2v)]:
    for pooling in ["mean", "tfidf", "sif"]:
        e = SentenceEncoder(kv, pooling).fit(train_caps)
        rates[vec_name, pooling] = same_image_rate(e.transform(test.captions))
        print(f"{vec_name:>8} {pooling:>5}: nearest caption is of the same image "
              f"{rates[vec_name, pooling]:.1%} of the time")
print(f"(chance: about {1 / len(test):.2%})")

# %% [markdown]
# Weighting helps a lot: TF-IDF and SIF both beat the plain mean, because captions of the same image
# share their *rare* words (the title), not their common ones. Word2Vec trained on so little text shows
# the problem SIF was designed for: all its vectors share one strong common direction (see how
# similar even unrelated neighbours are above, 0.9 and more), so plain means of different captions
# look alike; removing that direction (SIF) recovers much of the signal. This is why the course's default text
# features use TF-IDF pooling — and concatenate GloVe (broad vocabulary) with Word2Vec (the
# domain's words). Lesson 05 measures the effect on retrieval itself.

# %% [markdown]
# ## Try it yourself
#
# * Look up neighbours of words from your own domain in both models: `nearest(glove, "guitar")`.
# * Train Word2Vec with CBOW (`sg=0`) or a smaller `vector_size`; does the same-image rate change?
# * Try SIF's `sif_a` parameter (`SentenceEncoder(glove, "sif", sif_a=1e-2)`).
# * Add a fifth group to the word map (e.g. musical instruments).

# %% [markdown]
# ## Checks

# %%
assert tokenize("A Red_Car, 2 dogs") == ["a", "red", "car", "2", "dogs"]
assert "queen" in [w for w, _ in analogy]
assert "cat" in [w for w, _ in glove.most_similar("dog", topn=5)]
assert unknown.tolist() == [False, True] and not np.any(X[1])
best_weighted = max(rates["GloVe", "tfidf"], rates["GloVe", "sif"])
assert best_weighted > rates["GloVe", "mean"], rates
assert min(rates.values()) > 5 / len(test)  # every variant well above chance
