"""Baselines that any trained model must beat, with the trained models' interface.

Every class here has ``fit(X, Y, caption_to_image)`` on ``(C, n)`` caption
features and ``(N, m)`` image features, and ``embed_text`` / ``embed_image``
returning joint-space vectors, so ``evaluation.evaluate(model, ...)`` treats a
baseline exactly like a :class:`~crosslab.joint.JointModel`.

* :class:`RandomModel` — random vectors: expected R@K = K/N (chance).
* :class:`CCAModel` — scikit-learn's (iterative, NIPALS) canonical correlation analysis,
  on PCA-reduced features.
* :class:`RegularizedCCA` — closed-form CCA with ridge (shrinkage) terms on the
  covariances, solved by whitening + SVD; optionally weights each canonical
  direction by its correlation to a power (Gong et al., 2014).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from .errors import ModelError, ShapeError

Array = np.ndarray | torch.Tensor


def _np64(X: Array, name: str) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.ndim != 2:
        raise ShapeError(f"{name} must be 2-D (rows x features), got shape {X.shape}.")
    X = X.astype(np.float64)
    if not np.isfinite(X).all():
        raise ShapeError(f"{name} contains NaN or infinite values; re-compute the features.")
    return X


def _pairs(X: Array, Y: Array, caption_to_image: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, Y = _np64(X, "text features"), _np64(Y, "image features")
    c2i = np.asarray(getattr(caption_to_image, "caption_to_image", caption_to_image), dtype=np.int64)
    if len(c2i) != len(X):
        raise ShapeError(f"{len(X)} caption feature rows but {len(c2i)} caption->image links.")
    if len(c2i) == 0 or c2i.min() < 0 or c2i.max() >= len(Y):
        raise ShapeError(f"caption_to_image must point into the {len(Y)} image feature rows.")
    return X, Y, c2i


class _Base:
    """Shared input checks and output conversion (NumPy in -> NumPy out, torch in -> torch out)."""

    metric = "cosine"
    #: ``embed_text`` is affine in the features (CCA's projections are): see :meth:`affine_text`.
    text_is_affine = True

    def affine_text(self, X: Array) -> Array:
        """The affine text map whose outputs, compared with ``metric``, give the scores (here ``embed_text``);
        :mod:`crosslab.explain` splits a score over the words with it."""
        return self.embed_text(X)
    text_dim_: int
    image_dim_: int

    def _check(self, X: Array, width_attr: str, what: str) -> np.ndarray:
        if not hasattr(self, width_attr):
            raise ModelError(f"{type(self).__name__} is not fitted; call .fit(X, Y, caption_to_image) first.")
        X64 = _np64(X, f"{what} features")
        want = getattr(self, width_attr)
        if X64.shape[1] != want:
            raise ModelError(
                f"{type(self).__name__} was fitted on {what} features of width {want}, got {X64.shape[1]}."
            )
        return X64

    @staticmethod
    def _out(Z: np.ndarray, like: Array) -> Array:
        Z = Z.astype(np.float32)
        return torch.from_numpy(Z).to(like.device) if isinstance(like, torch.Tensor) else Z

    #: Constructor arguments, saved with the fitted state.
    _params: tuple[str, ...] = ()

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Settings (``config``, JSON) and fitted arrays (``a/<name>``): no pickle, enough to embed."""
        import json

        if not hasattr(self, "text_dim_"):
            raise ModelError(f"{type(self).__name__} is not fitted; nothing to save.")
        config = {k: getattr(self, k) for k in self._params}
        config |= {"text_dim_": self.text_dim_, "image_dim_": self.image_dim_}
        arrays = {k: v for k, v in vars(self).items()
                  if k.endswith("_") and not k.startswith("_") and isinstance(v, np.ndarray)}
        return {"config": np.array(json.dumps(config))} | {f"a/{k}": v for k, v in arrays.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Any:
        """Rebuild a fitted model from :meth:`to_arrays` (it embeds; it cannot be refitted)."""
        import json

        config = json.loads(str(arrays["config"]))
        model = cls(**{k: config[k] for k in cls._params})
        model.text_dim_, model.image_dim_ = int(config["text_dim_"]), int(config["image_dim_"])
        for k, v in arrays.items():
            if k.startswith("a/"):
                setattr(model, k[2:], np.asarray(v))
        return model


class RandomModel(_Base):
    """Chance level: every caption and image gets an independent random ``d``-vector.

    Scores are then random, so text->image R@K is K/N in expectation (N images),
    and image->text with ``c`` captions per image about ``1 - (1 - K/C)^c`` ~ K/N.
    Deterministic for a fixed ``seed`` (the same rows get the same vectors).
    """

    _params = ("d", "seed")
    text_is_affine = False  # its vectors do not depend on the features at all

    def __init__(self, d: int = 64, seed: int = 0) -> None:
        self.d = d
        self.seed = seed

    def fit(self, X: Array, Y: Array, caption_to_image: Any) -> RandomModel:
        X, Y, _ = _pairs(X, Y, caption_to_image)
        self.text_dim_, self.image_dim_ = X.shape[1], Y.shape[1]
        return self

    def embed_text(self, X: Array) -> Array:
        """``(C, n)`` -> ``(C, d)`` random vectors."""
        X64 = self._check(X, "text_dim_", "text")
        return self._out(np.random.default_rng([self.seed, 0]).standard_normal((len(X64), self.d)), X)

    def embed_image(self, Y: Array) -> Array:
        """``(N, m)`` -> ``(N, d)`` random vectors."""
        Y64 = self._check(Y, "image_dim_", "image")
        return self._out(np.random.default_rng([self.seed, 1]).standard_normal((len(Y64), self.d)), Y)


def _top_components(Z: np.ndarray, k: int) -> np.ndarray:
    """``(p, k)`` leading eigenvectors of the covariance of centred ``Z`` (PCA directions)."""
    w, V = np.linalg.eigh(Z.T @ Z / len(Z))
    return V[:, ::-1][:, :k]


class CCAModel(_Base):
    """scikit-learn's CCA on (caption, its image) pairs.

    Each side is standardised, then reduced to its ``pca`` leading principal
    components (fitted on the training data; ``pca=None`` keeps all): sklearn's
    NIPALS computes a pseudo-inverse of each side for every component, which on
    1280-d CNN features takes minutes on a laptop. ``d`` is clamped to the smaller
    side. Embeddings are the canonical variates (``x_rotations_`` / ``y_rotations_``),
    compared with cosine.
    """

    _params = ("d", "pca", "max_iter", "tol")

    def __init__(self, d: int = 32, pca: int | None = 128, max_iter: int = 500, tol: float = 1e-6) -> None:
        self.d = d
        self.pca = pca
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: Array, Y: Array, caption_to_image: Any) -> CCAModel:
        import warnings

        from sklearn.cross_decomposition import CCA
        from sklearn.exceptions import ConvergenceWarning

        X, Y, c2i = _pairs(X, Y, caption_to_image)
        Yc = Y[c2i]
        self.text_dim_, self.image_dim_ = X.shape[1], Y.shape[1]
        self.x_mean_, self.x_std_ = X.mean(0), X.std(0) + 1e-8
        self.y_mean_, self.y_std_ = Yc.mean(0), Yc.std(0) + 1e-8
        Xs, Ys = (X - self.x_mean_) / self.x_std_, (Yc - self.y_mean_) / self.y_std_
        kx = X.shape[1] if self.pca is None else min(self.pca, X.shape[1])
        ky = Y.shape[1] if self.pca is None else min(self.pca, Y.shape[1])
        self.x_pca_, self.y_pca_ = _top_components(Xs, kx), _top_components(Ys, ky)
        d = min(self.d, kx, ky, len(X))
        # We standardise ourselves (scale=False) so embedding one side alone needs no
        # private sklearn attributes.
        cca = CCA(n_components=d, scale=False, max_iter=self.max_iter, tol=self.tol)
        # One BLAS thread: NIPALS does thousands of small products, and OpenBLAS's
        # threads spin-wait; on a busy 2-core machine that was 18x slower (measured).
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            cca.fit(Xs @ self.x_pca_, Ys @ self.y_pca_)
        self.x_rotations_, self.y_rotations_ = cca.x_rotations_, cca.y_rotations_
        return self

    def embed_text(self, X: Array) -> Array:
        """``(C, n)`` -> ``(C, d)`` canonical text variates."""
        X64 = self._check(X, "text_dim_", "text")
        return self._out(((X64 - self.x_mean_) / self.x_std_) @ self.x_pca_ @ self.x_rotations_, X)

    def embed_image(self, Y: Array) -> Array:
        """``(N, m)`` -> ``(N, d)`` canonical image variates."""
        Y64 = self._check(Y, "image_dim_", "image")
        return self._out(((Y64 - self.y_mean_) / self.y_std_) @ self.y_pca_ @ self.y_rotations_, Y)


class RegularizedCCA(_Base):
    """CCA with shrinkage on the covariances, in closed form.

    With centred caption features ``X`` and the features ``Y`` of each caption's image,
    ``Cxx = X'X/C + r (tr(X'X/C)/n) I`` (likewise ``Cyy``; the ridge is relative to the
    mean variance, so ``r`` does not depend on the features' scale), ``Cxy = X'Y/C``. Whitening
    turns CCA into an SVD: ``T = Cxx^-1/2 Cxy Cyy^-1/2 = U diag(s) V'``; the projections
    are ``A = Cxx^-1/2 U_d`` and ``B = Cyy^-1/2 V_d``, each column weighted by ``s^power``
    (``power=0``: plain CCA variates; Gong et al. use 4). ``reg`` = r >= 0 (0: plain CCA).
    """

    _params = ("d", "reg", "power")

    def __init__(self, d: int = 128, reg: float = 0.1, power: float = 0.0) -> None:
        self.d = d
        self.reg = reg
        self.power = power

    def fit(self, X: Array, Y: Array, caption_to_image: Any) -> RegularizedCCA:
        X, Y, c2i = _pairs(X, Y, caption_to_image)
        Yc = Y[c2i]
        self.text_dim_, self.image_dim_ = X.shape[1], Y.shape[1]
        self.x_mean_, self.y_mean_ = X.mean(0), Yc.mean(0)
        Xc, Yc = X - self.x_mean_, Yc - self.y_mean_
        n = len(X)
        self._moments = (Xc.T @ Xc / n, Yc.T @ Yc / n, Xc.T @ Yc / n)
        # C + a I has C's eigenvectors and eigenvalues w + a, so one eigendecomposition per
        # side serves every ridge (with_reg): the ridge search costs matrix products only.
        # One BLAS thread, as for CCAModel: on a busy 2-core machine OpenBLAS's spin-waiting
        # threads made eigh(1280) 2x and the SVD below 6x slower than one thread (measured).
        with threadpool_limits(1):
            self._eigs = (np.linalg.eigh(self._moments[0]), np.linalg.eigh(self._moments[1]))
        return self._solve()

    def with_reg(self, reg: float) -> RegularizedCCA:
        """A copy fitted with another ridge, reusing this fit's covariances (cheap model selection)."""
        if not hasattr(self, "_moments"):
            raise ModelError("RegularizedCCA is not fitted; call .fit(X, Y, caption_to_image) first.")
        other = copy.copy(self)
        other.reg = reg
        return other._solve()

    def _solve(self) -> RegularizedCCA:
        if not (np.isfinite(self.reg) and self.reg >= 0):
            raise ShapeError(f"reg must be a number >= 0, got {self.reg}.")
        Cxx, Cyy, Cxy = self._moments

        def shrunk_inv_sqrt(C: np.ndarray, eig: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            # (C + r (tr C / n) I)^-1/2 from C's eigendecomposition w, V.
            w, V = eig
            w = w + self.reg * (np.trace(C) / len(C))
            return (V / np.sqrt(np.clip(w, 1e-12, None))) @ V.T

        with threadpool_limits(1):
            Wx, Wy = (shrunk_inv_sqrt(C, e) for C, e in zip((Cxx, Cyy), self._eigs, strict=True))
            U, s, Vt = np.linalg.svd(Wx @ Cxy @ Wy, full_matrices=False)
        d = min(self.d, len(s))
        weight = s[:d] ** self.power
        self.correlations_ = s[:d]
        self.A_ = (Wx @ U[:, :d]) * weight
        self.B_ = (Wy @ Vt[:d].T) * weight
        return self

    def embed_text(self, X: Array) -> Array:
        """``(C, n)`` -> ``(C, d)``."""
        X64 = self._check(X, "text_dim_", "text")
        return self._out((X64 - self.x_mean_) @ self.A_, X)

    def embed_image(self, Y: Array) -> Array:
        """``(N, m)`` -> ``(N, d)``."""
        Y64 = self._check(Y, "image_dim_", "image")
        return self._out((Y64 - self.y_mean_) @ self.B_, Y)
