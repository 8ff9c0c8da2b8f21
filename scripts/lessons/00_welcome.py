# %% [markdown]
# # Lesson 00 — Welcome: what is cross-modal retrieval?
#
# You type *"a red sports car"* and a photo library shows you pictures of red sports cars — although
# nobody ever tagged them with those words. Or you show a picture and get back sentences that
# describe it. Both are **cross-modal retrieval**: the query is in one *modality* (text or image) and
# the answers are in the other.
#
# Where you meet it:
#
# * **search engines and photo apps** — text→image search over images without (good) tags;
# * **e-commerce** — "find products that look like this photo", or match a description to a catalogue;
# * **accessibility** — ranking candidate descriptions (alt-texts) for an image;
# * **media archives, medicine, remote sensing** — find the scans, frames or satellite tiles a report talks about.
#
# The difficulty: a caption is a sequence of words and an image is a grid of pixels. There is no
# obvious way to say how *similar* a sentence and a picture are. The idea this course builds, step by
# step, is the classic answer:
#
# 1. turn the text into a vector $x \in \mathbb{R}^n$ (word vectors, pooled — lesson 01);
# 2. turn the image into a vector $y \in \mathbb{R}^m$ (a pretrained CNN — lesson 02);
# 3. learn two maps $f(x) = W_x x + b_x$ and $g(y) = W_y y + b_y$ into **one shared space**
#    $\mathbb{R}^d$ where matching pairs land close together (lesson 03);
# 4. score every text–image pair with a similarity (cosine, Euclidean, KL — lesson 04), rank, and
#    measure how often the right answer is near the top (Recall@K — lesson 05);
# 5. wrap it in a search app (lesson 06).
#
# This first lesson checks that your installation works and takes a tour of the data we will use.

# %% [markdown]
# ## 1. Check the installation
#
# `crosslab` is the small helper package that comes with the course. Every lesson imports it; the
# logic lives there (with tests), the notebooks show how to use it. `doctor()` lists the versions of
# the key packages, the device (a GPU if you have one, else the CPU) and whether each offline asset
# loads: the ImageNet weights of the image network, the GloVe word vectors and the embedded data set.
# The same report is printed by `python -m crosslab doctor` in a terminal.

# %%
import numpy as np

import crosslab as cl

# %%
# NBVAL_IGNORE_OUTPUT
# (versions, paths and the device differ from machine to machine)
report = cl.doctor.doctor()
print(report)

# %% [markdown]
# Every line should say `ok`. If one does not, its message says what to do (usually: re-run the
# set-up with `make lab`).

# %% [markdown]
# ## 2. The data: public-domain clip art with human-written text
#
# Real photo–caption data sets (Flickr30k, MS-COCO) cannot be downloaded on every machine, so the
# course ships its own: about 2,800 drawings from the Open Clip Art Library (public domain), each
# with the texts people wrote for it — a title, keywords and sometimes a description. We turn those
# into a few **captions per image**, exactly the shape of Flickr/COCO (there: five captions per photo).
# If you have Flickr8k/30k or COCO on disk, `crosslab.data` reads them too (see the README).

# %%
ds = cl.data.load_clipart()
print(ds)
print(f"{len(ds):,} images, {ds.n_captions:,} captions, "
      f"{ds.n_captions / len(ds):.2f} captions per image on average")

# %% [markdown]
# A `CaptionedImages` holds image references, the captions, and for every caption the index of its
# image (`caption_to_image`). Here is one image and everything we know about it:

# %%
i = 0
print("id:      ", ds.ids[i])
print("captions:", *ds.image_captions(i), sep="\n  - ")
print("title:   ", ds.meta[i]["title"])
print("keywords:", ", ".join(ds.meta[i]["keywords"][:12]), "...")
print("category:", ds.meta[i]["category"])
ds.load_image(i)

# %% [markdown]
# A grid of random images with their first two captions. The captions are written by the artists:
# short, sometimes playful, sometimes only a list of keywords — a realistic (noisy) picture of
# how text and images come together on the web.

# %%
rng = np.random.default_rng(0)
cl.plots.show_images(ds, rng.choice(len(ds), 12, replace=False), ncols=6)

# %% [markdown]
# ## 3. Splits and counts
#
# Every image belongs to one fixed split: **train** (fit the models), **val** (choose
# hyper-parameters, stop training) and **test** (score once, at the end). The split is stratified by
# category, so each split has the same kinds of picture. Never tune anything on the test split —
# otherwise the final numbers say how well you fitted the test set, not how well the method works.

# %%
for s in cl.data.SPLITS:
    part = ds.subset(s)
    print(f"{s:>5}: {len(part):5,} images  {part.n_captions:5,} captions")

# %%
cl.plots.plot_dataset_summary(ds)

# %% [markdown]
# Captions are short: most have a handful of words. That matters for the text side — a bag of a few
# word vectors has to carry the meaning (lesson 01).

# %% [markdown]
# ## Try it yourself
#
# * Change `i` above and look at other images and their captions. Which captions would *you* find
#   hard to match to the picture?
# * Show only one category: `idx = [j for j in range(len(ds)) if ds.meta[j]["category"] == "food"]`
#   and `cl.plots.show_images(ds, idx[:8])`.
# * Run `python -m crosslab doctor` in a terminal and compare with the report above.

# %% [markdown]
# ## Checks
# These cells make sure the lesson's key facts still hold when the course is tested automatically.

# %%
assert report.ok, report.problems
assert len(ds) >= 2500 and ds.n_captions >= len(ds)
assert set(np.unique(ds.split)) == {"train", "val", "test"}
assert (ds.split == "test").sum() >= 500
assert all(c.strip() for c in ds.captions)
