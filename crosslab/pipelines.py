"""The table of named pipelines: every model of the course, its settings, and how it is fitted.

    cl.list_pipelines()                            # names
    p = cl.create_pipeline("mlp+minilm", ds)       # fitted on train, every choice on val, cached

This is the one place where settings live (text features, ``d``, the trainer's
hyper-parameters per loss, ridge grids, ConSE's grids, the fusion rule); lessons,
apps, benchmarks and commands read it. A new model is a new :class:`Spec` in
:data:`PIPELINES` (and, for a new kind of head, one new fitter in :data:`FITTERS`).

Every choice is made on the validation split: the CCA ridge (val rSum), early
stopping of trained towers (val rSum), ConSE's T and softmax temperature (val rSum,
centred on the train split's mean vectors), the fusion weight w (on the val
people-style queries for the clip art -- people's queries are what fusion is for --
else on the val captions; see :func:`crosslab.zeroshot.choose_w`). The test split is
never read here. A fitted pipeline is cached by content (``CROSSLAB_CACHE``/pipelines:
name, settings, dataset fingerprint, encoder weights, torch version, device), so the
second ``create_pipeline`` of the same thing loads in a second and gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import CrosslabError, ModelError
from .pipeline import FusionPipeline, Pipeline, Retriever

__all__ = ["Spec", "PIPELINES", "FITTERS", "list_pipelines", "get_spec", "create_pipeline", "features",
           "choose_kl_temperature", "KL_TEMPERATURES",
           "Features", "SplitFeatures", "DEFAULT_PIPELINE", "APP_PIPELINES", "LESSON05", "LESSON07", "LESSON08", "LESSON12",
           "LESSON13", "FINETUNE",
           "ATTENTION_MINILM",
           "split_rows"]

#: Bump when a change to fitting changes what a name gives: cached pipelines are then refitted.
PIPELINE_VERSION = 1
IMAGE_ENCODER = "efficientnet_lite0"
D = 256
#: The trained towers' settings, per loss (chosen on val; docs/experiments.md).
TRAIN = dict(head="mlp", hidden=512, dropout=0.5, lr=1e-3, weight_decay=1e-4, batch_size=256,
             epochs=60, patience=10, seed=0, d=D)
LOSS_SETTINGS: dict[str, dict[str, Any]] = {
    "infonce": dict(loss="infonce", temperature=0.07),
    "hinge": dict(loss="hinge", margin=0.2),
    # From random init the hardest-negative loss collapses (val R@10 ~27 %, as VSE++ warns):
    # it fine-tunes the regularised-CCA start instead.
    "max_violation": dict(loss="max_violation", margin=0.2, head="linear", dropout=0.0, init="cca", lr=3e-4),
    "bce": dict(loss="bce", temperature=0.1, n_negatives=15),
}
#: Lesson 03's linear towers: the simplest trained model, small enough to train in seconds.
LINEAR = dict(head="linear", lr=1e-3, weight_decay=1e-4, batch_size=128, epochs=40, patience=8, seed=0, d=D)
RCCA = dict(d=128, regs=(0.01, 0.03, 0.1, 0.3, 1.0))
#: Lesson 12's word-region heads (crosslab.attention); "pooled" is the same head with lam = 0.
ATTENTION = dict(d=128, lam=9.0, direction="i2t", batch_size=64, lr=1e-3, weight_decay=1e-4, epochs=12,
                 patience=3, seed=0)
#: Lesson 13's fine-tuning (crosslab.finetune): from the fitted ``start``'s towers, the CNN's last ``blocks``
#: blocks (0: only its head convolution) train, on the clean pictures and ``views`` augmented views of each;
#: ``towers_lr=0`` keeps the towers as they are. Chosen on val (docs/experiments.md, section 7): augmented
#: views did not help there.
FINETUNE = dict(start="mlp+minilm", blocks=0, views=0, tail_lr=1e-4, towers_lr=0.0, finetune_epochs=8,
                finetune_patience=2, finetune_batch_size=128, weight_decay=1e-4, seed=0)
#: Lesson 14's defences, each mlp+minilm's towers trained another way, each setting chosen on val
#: (``scripts/robustness.py``, docs/experiments.md section 8): ``AUGMENT`` trains on ``views`` altered copies
#: of the captions and pictures (kinds drawn from ``text_kinds`` / ``image_kinds`` at severities 1 to
#: ``max_severity``; the other kinds stay unseen, to test on); ``FGSM`` moves the picture features a
#: ``feature_eps`` step up the loss's gradient while training; ``ACMR`` adds a modality discriminator that the
#: towers fool through gradient reversal, weighted ``adversary``.
AUGMENT = dict(views=2, text_kinds=("typo", "dropout", "shuffle"), image_kinds=("noise", "blur", "shift"),
               max_severity=1)
FGSM = dict(feature_eps=0.25)
ACMR = dict(adversary=1.0)


@dataclass(frozen=True)
class Spec:
    """One named pipeline: what it reads, which head, with which settings."""

    name: str
    kind: str  # random | cca | trained | zero-shot | fusion | attention
    about: str
    text: str = ""  # a crosslab.text_encoders name
    head: str = ""  # a key of FITTERS
    settings: Mapping[str, Any] = field(default_factory=dict)
    image_input: str = "features"  # "features" (pooled), "logits" (ConSE), "grid" (regions), "trunk" (fine-tuning)
    parts: tuple[str, ...] = ()  # a fusion's two pipelines

    def needs(self) -> str:
        """What fitting it needs, in words (for ``python -m crosslab pipelines``)."""
        if self.parts:
            return f"{self.parts[0]} and {self.parts[1]}; w chosen on val"
        if "start" in self.settings:
            k = self.settings["blocks"]
            cut = f"its last {k} block{'s' if k > 1 else ''} and head convolution" if k else "its head convolution"
            return f"{self.settings['start']} fitted; text {self.text}, image {IMAGE_ENCODER} activations below {cut}"
        return f"text {self.text}, image {IMAGE_ENCODER} {self.image_input}"


def _trained(name: str, loss: str, text: str, about: str, base: Mapping[str, Any] = TRAIN) -> Spec:
    return Spec(name, "trained", about, text, "joint", {**base, **LOSS_SETTINGS[loss]})


W2V = "glove+w2v-tfidf"
PIPELINES: dict[str, Spec] = {s.name: s for s in (
    Spec("random", "random", "chance level: random vectors", "glove-mean", "random", {"d": D}),
    # Lesson 03: linear towers on word vectors.
    Spec("linear infonce", "trained", "linear towers trained with InfoNCE (lesson 03)", W2V, "joint",
         LINEAR | {"loss": "infonce", "temperature": 0.07}),
    Spec("linear max_violation", "trained", "linear towers, max-violation hinge from a random start (lesson 03)",
         W2V, "joint", LINEAR | {"loss": "max_violation", "margin": 0.2}),
    # Lesson 05: word vectors (GloVe + Word2Vec on the train captions, TF-IDF pooled).
    Spec("cca (sklearn)", "cca", "scikit-learn's CCA on PCA-reduced features", W2V, "cca",
         dict(d=16, pca=64, max_iter=100, tol=1e-4)),
    Spec("regularised cca", "cca", "closed-form CCA with a ridge chosen on val", W2V, "rcca", RCCA),
    _trained("mlp infonce", "infonce", W2V, "MLP towers trained with InfoNCE"),
    _trained("mlp hinge", "hinge", W2V, "MLP towers trained with the hinge loss"),
    _trained("linear+cca init max_violation", "max_violation", W2V, "linear towers from the CCA start, max-violation"),
    _trained("mlp bce", "bce", W2V, "MLP towers trained with pairwise BCE"),
    # Lessons 07 and 08: beyond word vectors (a sentence encoder; zero-shot ConSE and fusion).
    Spec("cca+glove", "cca", "regularised CCA, GloVe-mean text", "glove-mean", "rcca", RCCA),
    Spec("cca+minilm", "cca", "regularised CCA, MiniLM sentence vectors", "minilm", "rcca", RCCA),
    _trained("mlp+minilm", "infonce", "minilm", "MLP towers (InfoNCE) on MiniLM sentence vectors"),
    Spec("conse+glove", "zero-shot", "ConSE: ImageNet classes as GloVe vectors, no paired training",
         "glove-mean", "conse", {}, "logits"),
    Spec("conse+minilm", "zero-shot", "ConSE: ImageNet classes as MiniLM vectors, no paired training",
         "minilm", "conse", {}, "logits"),
    # Lesson 12: words that look at regions, and the same towers pooled.
    Spec("pooled+glove", "trained", "word and region towers, pooled (the attention head with lam = 0)",
         "glove-words", "attention", ATTENTION | {"pooled": True}, "grid"),
    Spec("attention+glove", "attention", "the CNN's 5 x 5 regions attend over the words (SCAN-style)",
         "glove-words", "attention", ATTENTION, "grid"),
    Spec("pooled+minilm", "trained", "MiniLM's token vectors and the regions, pooled (lam = 0)",
         "minilm-tokens", "attention", ATTENTION | {"pooled": True}, "grid"),
    Spec("attention+minilm", "attention", "the CNN's 5 x 5 regions attend over MiniLM's token vectors",
         "minilm-tokens", "attention", ATTENTION, "grid"),
    # Lesson 13: the CNN's top trained with the towers.
    Spec("finetune+minilm", "fine-tuned", "mlp+minilm, then the top of the CNN trained through its towers",
         "minilm", "finetune", FINETUNE, "trunk"),
    # Lesson 14: defences.
    Spec("augmented+minilm", "trained", "mlp+minilm trained on altered captions and pictures as well (augmentation)",
         "minilm", "augmented", {**TRAIN, **LOSS_SETTINGS["infonce"], "augment": AUGMENT}),
    _trained("fgsm+minilm", "infonce", "minilm", "mlp+minilm trained on adversarially moved picture features",
             {**TRAIN, **FGSM}),
    _trained("acmr+minilm", "infonce", "minilm", "mlp+minilm with a modality discriminator it learns to fool (ACMR)",
             {**TRAIN, **ACMR}),
    *(Spec(f"fusion({a},{b})", "fusion", "z-score fusion of two pipelines", parts=(a, b))
      for a, b in (("cca+glove", "conse+glove"), ("cca+minilm", "conse+minilm"), ("mlp+minilm", "conse+minilm"),
                   ("finetune+minilm", "conse+minilm"))),
)}
#: The rows of lesson 05's table (``python -m crosslab evaluate``), lesson 07's (word vectors against a
#: sentence encoder) and lesson 08's (``--queries people``: lesson 07's and the zero-shot ones).
LESSON05 = ("random", "cca (sklearn)", "regularised cca", "mlp infonce", "mlp hinge",
            "linear+cca init max_violation", "mlp bce")
LESSON07 = ("random", "cca+glove", "cca+minilm", "mlp+minilm")
#: Lesson 12's comparison: the same inputs pooled and attended.
LESSON12 = ("pooled+glove", "attention+glove")
#: The same comparison on MiniLM's token vectors (docs/experiments.md; too slow to fit inside lesson 12).
ATTENTION_MINILM = ("pooled+minilm", "attention+minilm")
#: Lesson 13's rows: the frozen CNN and its top fine-tuned, alone and fused with ConSE.
LESSON14 = ("mlp+minilm", "augmented+minilm", "fgsm+minilm", "acmr+minilm")
LESSON13 = ("mlp+minilm", "finetune+minilm", "fusion(mlp+minilm,conse+minilm)", "fusion(finetune+minilm,conse+minilm)")
LESSON08 = (*LESSON07, "conse+glove", "conse+minilm",
            "fusion(cca+glove,conse+glove)", "fusion(cca+minilm,conse+minilm)", "fusion(mlp+minilm,conse+minilm)")
#: What the command line opens on (the best on val of lesson 06's choice).
DEFAULT_PIPELINE = "mlp+minilm"
#: The choice in lesson 06's search apps.
APP_PIPELINES = ("mlp+minilm", "cca+glove", "cca+minilm", "conse+minilm", "fusion(mlp+minilm,conse+minilm)")


def list_pipelines() -> list[str]:
    """The names of the table, in its order."""
    return list(PIPELINES)


def get_spec(name: str) -> Spec:
    if name not in PIPELINES:
        raise ModelError(f"unknown pipeline {name!r}; choose one of {list_pipelines()} "
                         "(python -m crosslab pipelines lists them).")
    return PIPELINES[name]


#: The KL metric's softmax temperatures tried on val (lesson 04).
KL_TEMPERATURES = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


def choose_kl_temperature(p: Retriever, ds: Any,
                          temperatures: Sequence[float] = KL_TEMPERATURES) -> tuple[float, dict[float, float]]:
    """The KL metric's softmax temperature for pipeline ``p``, chosen on ``ds``'s val split.

    Returns ``(T, {T: val rSum})``: the temperature with the best val rSum (the smallest on a tie).
    The best temperature depends on the space (a unit-norm trained space wants a small one, a CCA
    space with long vectors a large one), so it is chosen per pipeline, like every other setting.
    """
    from .evaluation import evaluate

    caps, imgs, c2i = split_rows(ds, "val")
    T, V = p.encode_text(ds, rows=caps), p.encode_image(ds, rows=imgs)
    val = {float(t): evaluate(p.score(T, V, metric="kl", temperature=float(t)), c2i)["rsum"] for t in temperatures}
    best = max(val, key=lambda t: (val[t], -t))
    return best, val


def split_rows(ds: Any, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Caption rows ``(C_s,)``, image rows ``(N_s,)`` and the local caption -> image map of one split."""
    idx = np.flatnonzero(ds.split == split)
    if len(idx) == 0:
        raise CrosslabError(f"{ds.name}: the {split!r} split is empty; it needs at least one image.")
    remap = np.full(len(ds), -1, dtype=np.int64)
    remap[idx] = np.arange(len(idx))
    caps = np.flatnonzero(remap[ds.caption_to_image] >= 0)
    return caps, idx, remap[ds.caption_to_image[caps]]


@dataclass
class SplitFeatures:
    """Features of one split: ``text`` ``(C, n)``, ``image`` ``(N, m)``, ``caption_to_image`` ``(C,)``."""

    text: np.ndarray
    image: np.ndarray
    caption_to_image: np.ndarray

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.text, self.image, self.caption_to_image


@dataclass
class Features:
    """Train / val / test features of a dataset under one text encoder and the image encoder."""

    train: SplitFeatures
    val: SplitFeatures
    test: SplitFeatures
    text_name: str
    image_name: str


def features(ds: Any, text: str = "glove+w2v-tfidf", *, image_input: str = "features",
             progress: bool = True, device: Any = None) -> Features:
    """The features the pipelines are fitted on, per split (text encoders fitted on train only; cached)."""
    ctx = _Context(ds, device, progress)
    ctx.rows["test"] = split_rows(ds, "test")
    spec = Spec("features", "", "", text, image_input=image_input)
    return Features(*(SplitFeatures(*ctx.split(spec, s)) for s in ("train", "val", "test")), text, IMAGE_ENCODER)


# ----------------------------------------------------------------------------- fitting
class _Context:
    """What the fitters share for one dataset: fitted text encoders and every feature, computed once."""

    def __init__(self, ds: Any, device: Any, progress: bool, cache: bool = True) -> None:
        self.ds, self.device, self.progress, self.cache = ds, device, progress, cache
        self.rows = {s: split_rows(ds, s) for s in ("train", "val")}
        self._text: dict[str, Any] = {}
        self._feats: dict[str, np.ndarray] = {}
        self.fitted: dict[str, Retriever] = {}

    def text_encoder(self, name: str) -> Any:
        from .text_encoders import get_text_encoder

        if name not in self._text:
            kw = {"device": self.device} if name.startswith("minilm") else {}
            train_caps = [self.ds.captions[j] for j in self.rows["train"][0]]
            self._text[name] = get_text_encoder(name, **kw).fit(train_caps)
        return self._text[name]

    def image_encoder(self) -> Any:
        from .pipeline import _image_encoder

        return _image_encoder(IMAGE_ENCODER, self.image_size(), None if self.device is None else str(self.device))

    @staticmethod
    def image_size() -> int:
        from .image_models import get_encoder_spec

        return get_encoder_spec(IMAGE_ENCODER).image_size

    def features(self, what: str) -> np.ndarray:
        """``text:<encoder>`` (all captions) or ``image:features`` / ``image:logits`` / ``image:grid`` /
        ``image:trunk<blocks>`` (all images; the grid as ``(N, regions, channels)``)."""
        if what not in self._feats:
            if what.startswith("text:"):
                enc = self.text_encoder(what[5:])
                self._feats[what] = enc.transform(self.ds.captions, cache=True, progress=self.progress)
            elif what.startswith("image:trunk"):
                self._feats[what] = self.image_encoder().extract_trunk(self.ds, blocks=int(what[11:]),
                                                                       progress=self.progress)
            elif what == "image:grid":
                G = self.image_encoder().extract_grid(self.ds, progress=self.progress)
                self._feats[what] = G.reshape(*G.shape[:2], -1).transpose(0, 2, 1)
            else:
                f, lg = self.image_encoder().extract(self.ds, return_logits=True, progress=self.progress)
                self._feats["image:features"], self._feats["image:logits"] = f, lg
        return self._feats[what]

    def split(self, spec: Spec, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(text (C_s, n), image (N_s, m), caption_to_image)`` of one split for ``spec``'s inputs."""
        caps, imgs, c2i = self.rows[split]
        image = spec.image_input + (str(spec.settings["blocks"]) if spec.image_input == "trunk" else "")
        return self.features(f"text:{spec.text}")[caps], self.features(f"image:{image}")[imgs], c2i


def _fit_random(ctx: _Context, spec: Spec) -> tuple[Any, dict]:
    from .baselines import RandomModel

    return RandomModel(**spec.settings).fit(*ctx.split(spec, "train")), {}


def _fit_cca(ctx: _Context, spec: Spec) -> tuple[Any, dict]:
    from .baselines import CCAModel

    return CCAModel(**spec.settings).fit(*ctx.split(spec, "train")), {}


def _fit_rcca(ctx: _Context, spec: Spec) -> tuple[Any, dict]:
    from .baselines import RegularizedCCA
    from .evaluation import evaluate

    regs = spec.settings["regs"]
    base = RegularizedCCA(d=spec.settings["d"], reg=regs[0]).fit(*ctx.split(spec, "train"))
    Xv, Yv, cv = ctx.split(spec, "val")
    fits = {r: base.with_reg(r) for r in regs}
    val = {r: evaluate(m, cv, text=Xv, image=Yv)["rsum"] for r, m in fits.items()}
    best = max(regs, key=lambda r: (val[r], -r))  # the smallest ridge wins ties
    return fits[best], {"reg": best, "val_rsum": val}


def _train(trainer_cls: Any, ctx: _Context, spec: Spec, settings: Mapping[str, Any] | None = None,
           **fit: Any) -> tuple[Any, dict]:
    """Fit a trainer (JointTrainer, AttentionTrainer) on train, stopping early on val."""
    trainer = trainer_cls(device=ctx.device, progress=ctx.progress, **(spec.settings if settings is None else settings))
    trainer.fit(*ctx.split(spec, "train"), val=ctx.split(spec, "val"), **fit)
    h = trainer.history_
    return trainer.model_, {"best_epoch": h["best_epoch"], "epochs_run": len(h["loss"]),
                            "val_rsum": h["val_rsum"], "loss": h["loss"]}


def _fit_joint(ctx: _Context, spec: Spec) -> tuple[Any, dict]:
    from .joint import JointTrainer

    return _train(JointTrainer, ctx, spec)


def _fit_augmented(ctx: _Context, spec: Spec) -> tuple[Any, dict]:
    """Joint towers trained on the clean features and ``views`` altered copies (crosslab.robustness)."""
    from .joint import JointTrainer
    from .robustness import AugmentedImages, augment_texts

    st = dict(spec.settings)
    aug = st.pop("augment")
    caps, imgs, _ = ctx.rows["train"]
    train_caps = [ctx.ds.captions[int(c)] for c in caps]
    enc, images = ctx.text_encoder(spec.text), ctx.image_encoder()
    views = range(1, aug["views"] + 1)
    tv = [enc.transform(augment_texts(train_caps, aug["text_kinds"], aug["max_severity"], view=v, seed=st["seed"]),
                        cache=True) for v in views]
    iv = [images.extract(AugmentedImages(ctx.ds, aug["image_kinds"], aug["max_severity"], view=v, rows=imgs,
                                         seed=st["seed"]), progress=ctx.progress) for v in views]
    model, info = _train(JointTrainer, ctx, spec, st, text_views=tv, image_views=iv)
    return model, info | {"augment": aug}


def _fit_attention(ctx: _Context, spec: Spec) -> tuple[Any, dict]:
    from .attention import AttentionTrainer

    return _train(AttentionTrainer, ctx, spec)


def _fit_finetune(ctx: _Context, spec: Spec) -> tuple[Any, dict]:
    from .finetune import AugmentedView, FineTuneTrainer
    from .joint import JointModel

    st = dict(spec.settings)
    start = create_pipeline(st.pop("start"), ctx.ds, device=ctx.device, cache=ctx.cache, progress=ctx.progress)
    if not isinstance(getattr(start, "head", None), JointModel) or start.image_input != "features" \
            or start.text.name != spec.text:
        raise ModelError(f"{spec.name}: fine-tuning starts from towers on pooled {spec.text} features "
                         f"(a 'joint' pipeline such as mlp+minilm), not {start.name!r}.")
    enc = ctx.image_encoder()
    train_imgs = ctx.rows["train"][1]
    views = [enc.extract_trunk(AugmentedView(ctx.ds, v, rows=train_imgs, seed=st["seed"]), blocks=st["blocks"],
                               progress=ctx.progress) for v in range(1, st.pop("views") + 1)]
    trainer = FineTuneTrainer(encoder=IMAGE_ENCODER, image_size=ctx.image_size(), device=ctx.device,
                              progress=ctx.progress, **st)
    Xt, At, ct = ctx.split(spec, "train")
    trainer.fit(Xt, At, ct, tail=enc.tail(st["blocks"]), towers=start.head, val=ctx.split(spec, "val"), views=views)
    h = trainer.history_
    return trainer.model_, {"best_epoch": h["best_epoch"], "epochs_run": len(h["loss"]), "val_rsum": h["val_rsum"],
                            "loss": h["loss"], "start": start.name}


def _fit_conse(ctx: _Context, spec: Spec) -> tuple[Any, dict]:
    from .zeroshot import ConSE, choose_conse

    base = ConSE.from_encoder(ctx.text_encoder(spec.text), T=1)
    Xt, Lt, _ = ctx.split(spec, "train")
    model, val = choose_conse(base, ctx.split(spec, "val"), train=(Xt, Lt))
    return model, {"T": model.T, "temperature": model.temperature, "centred": True,
                   "val_rsum": {f"T={T} temperature={t:g}": v for (T, t), v in val.items()}}


#: How each kind of head is fitted: ``(context, spec) -> (head, what val chose)``.
FITTERS: dict[str, Callable[[_Context, Spec], tuple[Any, dict]]] = {
    "random": _fit_random, "cca": _fit_cca, "rcca": _fit_rcca, "joint": _fit_joint, "conse": _fit_conse,
    "attention": _fit_attention, "finetune": _fit_finetune, "augmented": _fit_augmented,
}


def _fusion_queries(ds: Any) -> Any:
    """What a fusion's w is chosen on: the val people-style queries for the clip art, else None (captions)."""
    if getattr(ds, "name", None) != "clipart":
        return None
    from .data.people import load_people_queries

    return load_people_queries(ds, split="val")


def _fit_fusion(ctx: _Context, spec: Spec) -> FusionPipeline:
    from .zeroshot import choose_w

    # The parts as create_pipeline gives them (from the cache when they were fitted before, in their
    # saved form either way), so a fusion never refits what another lesson has fitted already.
    a, b = (create_pipeline(n, ctx.ds, device=ctx.device, cache=ctx.cache, progress=ctx.progress)
            for n in spec.parts)
    caps, imgs, c2i = ctx.rows["val"]
    queries = _fusion_queries(ctx.ds)
    if queries is None:  # the val captions: both directions, one-standard-error rule
        Sa = a.score(a.encode_text(ctx.ds, rows=caps), a.encode_image(ctx.ds, rows=imgs))
        Sb = b.score(b.encode_text(ctx.ds, rows=caps), b.encode_image(ctx.ds, rows=imgs))
        target, how, on = c2i, {"directions": "both", "rule": "1se"}, "val captions"
    else:  # a val query set: text -> image, the best w
        texts = list(queries.texts)
        Sa = a.score(a.encode_text(texts), a.encode_image(ctx.ds, rows=imgs))
        Sb = b.score(b.encode_text(texts), b.encode_image(ctx.ds, rows=imgs))
        target = np.asarray(queries.targets, dtype=np.int64)
        how, on = {"directions": "t2i", "rule": "best"}, f"{queries.name} ({len(target)} queries)"
    w, details = choose_w(Sa, Sb, target, **how)
    return FusionPipeline(spec.name, a, b, w, choice={"w": w, "chosen_on": on, **details})


def _fit(ctx: _Context, name: str) -> Retriever:
    if name not in ctx.fitted:
        spec = get_spec(name)
        if spec.parts:
            p: Retriever = _fit_fusion(ctx, spec)
        else:
            head, choice = FITTERS[spec.head](ctx, spec)
            p = Pipeline(name, spec.kind, ctx.text_encoder(spec.text), (IMAGE_ENCODER, ctx.image_size()), head,
                         image_input=spec.image_input, choice=choice, gallery=ctx.ds, device=ctx.device)
        ctx.fitted[name] = p
    return ctx.fitted[name]


def _cache_parts(name: str, ds: Any, device: Any) -> dict[str, Any]:
    import torch

    from .device import get_device

    spec = get_spec(name)
    parts = [get_spec(p) for p in spec.parts] or [spec]
    if "start" in spec.settings:  # a fine-tuned pipeline depends on the one it starts from
        parts.append(get_spec(spec.settings["start"]))
    from .image_models import lite0_weights_path, weights_file_hash

    out = {"kind": "pipeline", "version": PIPELINE_VERSION, "name": name,
           "specs": [asdict(s) for s in parts], "dataset": ds.fingerprint(),
           "image": [IMAGE_ENCODER, _Context.image_size()],
           "weights": weights_file_hash(str(lite0_weights_path())), "torch": torch.__version__.split("+")[0],
           "device": get_device(device).type}
    if spec.parts:
        q = _fusion_queries(ds)
        out["fusion_val"] = "captions" if q is None else sorted(zip(q.texts, map(int, q.targets), strict=True))
    if any(s.text.startswith("minilm") for s in parts):
        from .minilm import VERSION
        from .text_encoders import _minilm_hash

        out["minilm"] = [_minilm_hash(), VERSION]
    return out


def create_pipeline(name: str, ds: Any = None, *, device: Any = None, cache: bool = True,
                    progress: bool = True) -> Retriever:
    """The pipeline called ``name``, fitted on ``ds``'s train split with every choice on val.

    ``ds`` defaults to the embedded clip art. With ``cache`` (default) a pipeline fitted
    before on the same data with the same settings is loaded instead of refitted;
    ``cache=False`` always fits. ``pipeline.cache_info_`` says which happened.
    """
    from .cache import FeatureCache
    from .pipeline import from_arrays

    get_spec(name)
    if ds is None:
        from .data import load_clipart

        ds = load_clipart()

    def fit() -> dict[str, np.ndarray]:
        return _fit(_Context(ds, device, progress, cache), name).to_arrays()

    arrays, info = FeatureCache(namespace="pipelines").get_or_compute(
        _cache_parts(name, ds, device), fit, label=name.replace("(", "-").replace(")", "").replace(",", "-")
        .replace(" ", "-").replace("+", "-"), enabled=cache)
    # Always the saved form, fitted just now or long ago: the two are the same object by construction.
    p = from_arrays(arrays, gallery=ds, device=device, where=f"the pipeline {name!r}")
    p.gallery = ds
    p.cache_info_ = info
    return p

