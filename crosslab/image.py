"""Image features: batched, cached extraction with a registered pretrained CNN.

An encoder is looked up by name and brings its own weights, preprocessing and
feature size (the idea of torchvision's weights enums), so preprocessing can
never drift from the weights::

    enc = ImageEncoder("efficientnet_lite0")      # ImageNet weights, offline
    Y = enc.extract(ds)                           # (N, 1280) float32, cached on disk
    Y, logits = enc.extract(ds, return_logits=True)   # + (N, 1000) ImageNet logits
    enc.predict(photo)                            # [('espresso', 0.98), ...]

Every network is split into a convolutional trunk giving a spatial grid
``(N, C, h, w)`` and its ImageNet head. The pooled feature is the grid's mean
over ``h, w`` (global average pooling, exactly what the classifier sees), and
the logits come from the same forward pass, so features and ImageNet
probabilities (needed by ConSE later) are cached together.

Images are decoded by :func:`crosslab.data.load_image` / ``CaptionedImages.load_image``
(EXIF, greyscale, palette, CMYK, transparency on white), so an image looks the
same to the encoders as to every loader.

This module holds :class:`ImageEncoder` (extraction, caching, ``predict``) and the
dataset/batching helpers it runs on. The networks themselves (backbones, weight
loading, batch-norm folding, the encoder registry and :class:`Preprocess`) live in
:mod:`crosslab.image_models`; their public names (:func:`list_encoders`,
:func:`get_encoder_spec`, :func:`imagenet_categories`, :func:`lite0_weights_path`,
:class:`EncoderSpec`, :class:`Preprocess`) are re-exported here on purpose, so
``crosslab.image`` stays the one place learners import image features from.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .cache import CacheInfo, FeatureCache
from .device import get_device
from .errors import CrosslabError, ImageError, ModelError

# The public API of the registry, re-exported (see the module docstring).
from .image_models import (
    EncoderSpec,
    Preprocess,
    _fold_batchnorm,
    get_encoder_spec,
    imagenet_categories,
    list_encoders,
    lite0_weights_path,
)

__all__ = [
    "EncoderSpec", "ImageEncoder", "Preprocess", "get_encoder_spec", "imagenet_categories",
    "list_encoders", "lite0_weights_path",
]


# ----------------------------------------------------------------------------- data plumbing
def _is_dataset(obj: Any) -> bool:
    return hasattr(obj, "fingerprint") and hasattr(obj, "load_image") and hasattr(obj, "ids")


class _Images(torch.utils.data.Dataset):
    """Index -> (index, uint8 tensor) or (index, error message). Errors travel as values so a
    bad image in a worker process surfaces as one clean ImageError, not a worker traceback."""

    def __init__(self, source: Any, transform: Preprocess) -> None:
        self.source = source
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def _decode(self, i: int) -> Image.Image:
        from .data import load_image, to_rgb

        if _is_dataset(self.source):
            return self.source.load_image(i)
        ref = self.source[i]
        if isinstance(ref, Image.Image):
            try:
                return to_rgb(ref)
            except (OSError, ValueError) as e:
                raise ImageError(f"image {i} (a PIL image) could not be converted to RGB: {e}") from None
        if isinstance(ref, np.ndarray | str | os.PathLike):
            return load_image(ref, name=None if not isinstance(ref, np.ndarray) else f"image {i}")
        raise ImageError(
            f"image {i} is a {type(ref).__name__}; expected a PIL image, a uint8 array or a file path."
        )

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | str]:
        try:
            return i, self.transform(self._decode(i))
        except CrosslabError as e:
            return i, str(e)


def _auto_workers(n: int) -> int:
    """Decoding processes for ``n`` images: none for small jobs (starting workers costs ~1 s),
    else two, which overlap PNG/JPEG decoding with the forward pass. Measured on a busy shared
    2-core machine (clip art, 512 images, 2 torch threads), pipeline overhead over the model
    alone: 34 % with 0 workers vs 5 % with 2 under OpenMP's default spin-waiting; 7.8 % vs
    8.6 % with OMP_WAIT_POLICY=PASSIVE (benchmarks/bench_extraction.py). Two workers are never
    much worse and help when the CPU is contended. Results are identical either way."""
    return 0 if n < 256 or (os.cpu_count() or 1) < 2 else 2


def _collate(items: list[tuple[int, torch.Tensor | str]]) -> tuple[torch.Tensor, torch.Tensor] | str:
    for _, x in items:
        if isinstance(x, str):
            return x
    return torch.tensor([i for i, _ in items]), torch.stack([x for _, x in items])


# ----------------------------------------------------------------------------- encoder
class ImageEncoder:
    """A pretrained CNN that turns images into feature vectors ``(N, dim)`` float32.

    Args:
        name: a registered encoder (:func:`list_encoders`), default ``"efficientnet_lite0"``.
        weights: ``None`` or ``"imagenet"`` (the pretrained weights), ``"random"`` (untrained,
            seeded; labelled "(random weights)" everywhere), or a path to a state_dict file.
        device: ``"cpu"``, ``"cuda"``, ``"mps"``... default :func:`crosslab.device.get_device`.
        image_size: input resolution (pixels, square); default the spec's.
    """

    def __init__(
        self,
        name: str = "efficientnet_lite0",
        weights: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        image_size: int | None = None,
    ) -> None:
        self.spec = get_encoder_spec(name)
        self.arch = self.spec.name
        if weights is None or (isinstance(weights, str) and weights.lower() in ("imagenet", "default")):
            src: str | Path = "imagenet"
            self.weights = "imagenet"
        elif isinstance(weights, str) and weights.lower() == "random":
            src = self.weights = "random"
        elif isinstance(weights, str | os.PathLike):
            src = Path(weights).expanduser()
            self.weights = f"file {src.name}"
        else:
            raise ModelError(
                f"weights must be None, 'imagenet', 'random' or a file path, got {type(weights).__name__}."
            )
        self.transform = self.spec.transform(image_size)
        self.image_size = self.transform.image_size
        self.device = get_device(device)
        with contextlib.redirect_stdout(io.StringIO()):  # the lite package prints on load
            model = self.spec.builder(src, self.image_size)
        # The weights hash (cache key) is taken from the weights as loaded, before folding.
        self._weights_hash = self._hash_state(model)
        self.model = _fold_batchnorm(model.eval()).to(self.device, memory_format=torch.channels_last)
        self.last_cache_info_: CacheInfo | None = None

    # ----- identity -------------------------------------------------------------
    @property
    def name(self) -> str:
        """Label for printouts and plots; untrained networks always say so."""
        return f"{self.arch} (random weights)" if self.weights == "random" else self.arch

    @property
    def dim(self) -> int:
        return self.spec.dim

    def __repr__(self) -> str:
        return (
            f"ImageEncoder({self.name!r}, weights={self.weights!r}, dim={self.dim}, "
            f"image_size={self.image_size}, device={str(self.device)!r})"
        )

    def weights_hash(self) -> str:
        """SHA-256 (20 hex digits) of the network's parameters and buffers as loaded (part of cache keys)."""
        return self._weights_hash

    @staticmethod
    def _hash_state(model: nn.Module) -> str:
        h = hashlib.sha256()
        for k, v in model.state_dict().items():
            t = v.detach().cpu().contiguous()
            h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:20]

    def cache_parts(self, ds: Any, what: str = "pooled") -> dict[str, Any]:
        """Everything the features of ``ds`` depend on (see :mod:`crosslab.cache`)."""
        return {
            "kind": f"image-{what}", "dataset": ds.fingerprint(), "n_images": len(ds),
            "encoder": self.arch, "weights": self.weights_hash(), "transform": self.transform.settings(),
            "decode": "crosslab.data.load_image/v1",
            # like the pipelines' key: results may differ in the last bits across torch versions and devices
            "torch": torch.__version__.split("+")[0], "device": self.device.type,
        } | ({"dtype": "float16"} if what != "pooled" else {})

    # ----- forward ---------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(B, 3, H, W)`` -> grid ``(B, C, h, w)`` and logits ``(B, 1000)`` on the device."""
        x = self.transform.normalize(x.to(self.device, non_blocking=True))
        # channels-last (NHWC) matches the model's memory format: oneDNN/cuDNN's fast path
        return self.model(x.contiguous(memory_format=torch.channels_last))

    def _batches(self, data: Any, batch_size: int, num_workers: int | None, progress: bool, desc: str):
        if isinstance(data, str | os.PathLike | Image.Image) or (
            isinstance(data, np.ndarray) and data.ndim in (2, 3) and data.dtype == np.uint8
        ):
            raise ImageError("extract() takes a dataset or a list of images; wrap one image in [...].")
        if not _is_dataset(data) and not isinstance(data, Sequence | np.ndarray):
            raise ImageError(f"extract() takes a CaptionedImages or a list of images, got {type(data).__name__}.")
        if num_workers is None:
            num_workers = _auto_workers(len(data))
        if batch_size < 1 or num_workers < 0:
            raise CrosslabError(f"batch_size must be >= 1 and num_workers >= 0 (got {batch_size}, {num_workers}).")
        from tqdm.auto import tqdm

        loader = torch.utils.data.DataLoader(
            _Images(data, self.transform), batch_size=batch_size, num_workers=num_workers,
            collate_fn=_collate, pin_memory=self.device.type == "cuda",
            # Workers take their base seed from this generator, not from torch's global
            # one, so extracting features never changes what a later seeded cell draws.
            generator=torch.Generator().manual_seed(0),
        )
        with tqdm(total=len(data), desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for batch in loader:
                if isinstance(batch, str):
                    raise ImageError(batch)
                idx, x = batch
                yield idx, x
                bar.update(len(idx))

    def _trunk_forward(self, x: torch.Tensor, blocks: int) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` -> the activations below the last ``blocks`` blocks, on the device."""
        x = self.transform.normalize(x.to(self.device, non_blocking=True))
        return self.model.trunk(x.contiguous(memory_format=torch.channels_last), blocks)

    @torch.inference_mode()
    def _compute(self, data: Any, batch_size: int, num_workers: int | None, progress: bool,
                 what: str) -> dict:
        n = len(data)
        out: dict[str, np.ndarray] = {}
        for idx, x in self._batches(data, batch_size, num_workers, progress, f"{self.name} {what}"):
            if what.startswith("trunk"):
                arrays = {"trunk": self._trunk_forward(x, int(what[5:])).half()}
            elif what == "grid" and hasattr(self.model, "forward_with_trunk"):
                # A grid pass also gives what the pooled pass would (the same forward), and the
                # activations below the head convolution that fine-tuning reads, for free.
                x = self.transform.normalize(x.to(self.device, non_blocking=True))
                g, logits, a = self.model.forward_with_trunk(x.contiguous(memory_format=torch.channels_last))
                arrays = {"features": g.mean((2, 3)), "logits": logits, "grid": g.half(), "trunk": a.half()}
            else:
                g, logits = self._forward(x)
                arrays = {"features": g.mean((2, 3)), "logits": logits} | ({"grid": g.half()} if what == "grid" else {})
            for k, v in arrays.items():
                v = v.cpu().numpy()
                if k not in out:
                    out[k] = np.empty((n, *v.shape[1:]), dtype=v.dtype)
                out[k][idx.numpy()] = v
        if not out:  # empty input
            out = {"features": np.zeros((0, self.dim), np.float32), "logits": np.zeros((0, 1000), np.float32)}
            if what == "grid":
                out["grid"] = np.zeros((0, self.dim, 1, 1), np.float16)
            if what.startswith("trunk"):
                out = {"trunk": np.zeros((0, 1, 1, 1), np.float16)}
        return out

    def _run(self, data, batch_size, num_workers, cache, progress, what) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        grid = what == "grid"
        if cache and _is_dataset(data):
            label = f"{str(data.name).split('/')[0]}-{self.arch}{'-random' if self.weights == 'random' else ''}"
            cache_ = FeatureCache()
            computed: dict[str, np.ndarray] = {}

            def compute() -> dict[str, np.ndarray]:
                computed.update(self._compute(data, batch_size, num_workers, progress, what))
                return {"grid": computed["grid"]} if grid else computed

            arrays, info = cache_.get_or_compute(self.cache_parts(data, what), compute, label=f"{label}-{what}")
            if grid and computed:  # the pooled (and trunk0) entries from the same pass, unless already there
                from .cache import make_key

                side = [("pooled", {k: computed[k] for k in ("features", "logits")})]
                if "trunk" in computed:
                    side.append(("trunk0", {"trunk": computed["trunk"]}))
                for kind, arrays_ in side:
                    parts = self.cache_parts(data, kind)
                    if cache_.load(make_key(parts), f"{label}-{kind}") is None:
                        with contextlib.suppress(Exception):
                            cache_.save(make_key(parts), arrays_, label=f"{label}-{kind}", parts=parts)
        else:
            arrays = self._compute(data, batch_size, num_workers, progress, what)
            info = CacheInfo("", None, False, time.perf_counter() - t0, "cache off")
        self.last_cache_info_ = info
        return arrays

    def extract(
        self,
        data: Any,
        *,
        batch_size: int = 32,
        num_workers: int | None = None,
        cache: bool = True,
        progress: bool = True,
        return_logits: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Pooled features ``(N, dim)`` float32 for a CaptionedImages or a list of images.

        Images: PIL images, ``(H, W[, 3|4])`` uint8 arrays or file paths. With
        ``return_logits`` also the ImageNet logits ``(N, 1000)`` from the same forward
        pass (softmax them for class probabilities). ``cache`` applies to datasets
        (lists of images are not content-addressed); ``last_cache_info_`` says
        whether it was a hit, where the file is and how long it took.
        ``num_workers`` > 0 decodes in worker processes; ``None`` picks 0 below 256 images, else 2.
        """
        arrays = self._run(data, batch_size, num_workers, cache, progress, "pooled")
        return (arrays["features"], arrays["logits"]) if return_logits else arrays["features"]

    __call__ = extract

    def extract_grid(
        self,
        data: Any,
        *,
        batch_size: int = 32,
        num_workers: int | None = None,
        cache: bool = True,
        progress: bool = True,
    ) -> np.ndarray:
        """Spatial feature maps ``(N, C, h, w)`` (the grid before pooling; e.g. 1280 x 5 x 5), float16.

        Half precision halves the cost (64 kB per picture for efficientnet_lite0 at 160 px: 178 MB
        for the clip art) and changes a grid's mean by about 1e-3 relative to :meth:`extract`'s
        features, which the same pass computes in full precision and caches too: a grid
        extraction makes the pooled one free, and for EfficientNet-Lite also the activations below its head
        convolution (:meth:`extract_trunk` with ``blocks=0``, what lesson 13 fine-tunes from).
        """
        return self._run(data, batch_size, num_workers, cache, progress, "grid")["grid"]

    def extract_trunk(
        self,
        data: Any,
        *,
        blocks: int = 1,
        batch_size: int = 32,
        num_workers: int | None = None,
        cache: bool = True,
        progress: bool = True,
    ) -> np.ndarray:
        """The activations below the last ``blocks`` MBConv blocks, ``(N, C, h, w)`` float16.

        What fine-tuning the top of the network needs (:mod:`crosslab.finetune`): everything below
        stays frozen, so it is computed once and cached, and :meth:`tail` turns these activations into
        the pooled features (``tail(blocks)(trunk) == extract(...)`` up to float16 rounding).
        EfficientNet-Lite encoders only.
        """
        blocks = int(blocks)
        self.model.tail(blocks)  # checks the encoder and the number before any work
        return self._run(data, batch_size, num_workers, cache, progress, f"trunk{blocks}")["trunk"]

    def tail(self, blocks: int = 1) -> nn.Module:
        """A trainable float32 copy of the network above :meth:`extract_trunk`'s cut, on the CPU."""
        tail = self.model.tail(int(blocks)).to("cpu", memory_format=torch.contiguous_format).float()
        return tail.requires_grad_(True)  # folded weights were made without gradients

    @torch.inference_mode()
    def predict(self, image: Any, topk: int = 5) -> list[tuple[str, float]]:
        """The ``topk`` ImageNet classes of one image (PIL, uint8 array or path) with probabilities."""
        idx_x = next(self._batches([image], 1, 0, False, ""))
        _, logits = self._forward(idx_x[1])
        p = logits.float().softmax(1)[0].cpu()
        top = p.topk(min(int(topk), p.numel()))
        cats = imagenet_categories()
        return [(cats[int(i)], float(v)) for v, i in zip(top.values, top.indices, strict=True)]
