"""On-disk feature cache: content-addressed, atomic, self-checking.

Extracting CNN features for a few thousand images takes a minute on a laptop
CPU; loading them back takes well under a second. Every cache entry is one
uncompressed ``.npz`` file whose name is a hash of *everything the numbers
depend on* (see :func:`make_key`): the dataset's content hash, the encoder and
a hash of its weights, the preprocessing settings and :data:`FEATURE_VERSION`.
Change any of them and the key changes, so a stale entry can never be served.

Each file also stores its own key and a SHA-256 of its arrays. On load both are
checked: a truncated, corrupt or misplaced file is reported with a warning,
deleted and recomputed -- never loaded silently. Writes go through
:func:`crosslab._io.atomic_write` (temporary file + rename), so two notebooks
writing the same entry at once each produce a complete file and the last
rename wins; a reader never sees half a file.

Location: ``$CROSSLAB_CACHE`` if set, else ``$XDG_CACHE_HOME/crosslab``, else
``~/.cache/crosslab``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_write
from .errors import CacheError

#: Bump when the way features are computed changes (invalidates every old entry).
# 2: EfficientNet-Lite0 runs with BatchNorm folded into its convolutions (features
#    differ from version 1 by ~1e-5, enough to change a trained model's early stopping).
FEATURE_VERSION = 2
_META = "__crosslab_meta__"


def cache_root() -> Path:
    """The folder under which crosslab caches features ($CROSSLAB_CACHE overrides)."""
    env = os.environ.get("CROSSLAB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "crosslab"


def _canonical(obj: Any) -> Any:
    """Turn key parts into JSON-stable values (tuples -> lists, paths -> str, numpy -> python)."""
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise CacheError(f"cache key part {obj!r} of type {type(obj).__name__} is not hashable as JSON.")


def make_key(parts: Mapping[str, Any]) -> str:
    """A 24-hex-digit content key from ``parts`` (plus :data:`FEATURE_VERSION`)."""
    payload = json.dumps(
        _canonical({**parts, "feature_version": FEATURE_VERSION}), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def hash_texts(texts: Iterable[str]) -> str:
    """SHA-256 (hex, 20 digits) of a sequence of strings, order-sensitive."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little") + b)
    return h.hexdigest()[:20]


def hash_arrays(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of named arrays (names, dtypes, shapes and bytes), independent of dict order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


@dataclass
class CacheInfo:
    """What happened on one cache lookup (printed by ``python -m crosslab features``)."""

    key: str
    path: Path | None
    hit: bool
    seconds: float
    note: str = ""

    def __str__(self) -> str:
        state = "hit" if self.hit else "miss"
        where = self.path if self.path is not None else "(not cached)"
        return f"cache {state} ({self.seconds:.2f} s): {where}" + (f" [{self.note}]" if self.note else "")


class FeatureCache:
    """A folder of ``.npz`` entries addressed by content keys.

    >>> cache = FeatureCache()                 # under cache_root()/features
    >>> arrays, info = cache.get_or_compute(parts, lambda: {"features": X})
    """

    def __init__(self, root: str | os.PathLike | None = None, namespace: str = "features") -> None:
        self.root = (Path(root) if root is not None else cache_root()) / namespace

    def path(self, key: str, label: str = "") -> Path:
        """Where the entry ``key`` lives; ``label`` (e.g. 'clipart-efficientnet_lite0') is for humans."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:80]
        return self.root / (f"{safe}-{key}.npz" if safe else f"{key}.npz")

    # ----- read ---------------------------------------------------------------
    def load(self, key: str, label: str = "") -> dict[str, np.ndarray] | None:
        """The arrays of entry ``key``, or None when absent. A damaged entry warns, is deleted, gives None."""
        path = self.path(key, label)
        if not path.exists():
            return None
        try:
            return self._read_verified(path, key)
        except CacheError as e:
            warnings.warn(f"{e} Recomputing it.", RuntimeWarning, stacklevel=2)
            try:
                path.unlink()
            except OSError:
                pass  # another process may have replaced or removed it already
            return None

    @staticmethod
    def _read_verified(path: Path, key: str) -> dict[str, np.ndarray]:
        try:
            # zipfile checks each member's CRC-32 while reading, and a truncated file has no
            # central directory: both surface here as exceptions, never as wrong numbers.
            with np.load(path, allow_pickle=False) as z:
                arrays = {name: z[name] for name in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
            raise CacheError(f"cache file {path} is unreadable ({type(e).__name__}: {e}).") from None
        if _META not in arrays:
            raise CacheError(f"cache file {path} has no crosslab metadata (not written by crosslab?).")
        try:
            meta = json.loads(bytes(arrays.pop(_META)).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise CacheError(f"cache file {path} has damaged metadata.") from None
        if meta.get("key") != key:
            raise CacheError(f"cache file {path} belongs to another key ({meta.get('key')!r}).")
        if meta.get("sha256") != hash_arrays(arrays):
            raise CacheError(f"cache file {path} failed its checksum (corrupt or partly written).")
        return arrays

    # ----- write --------------------------------------------------------------
    def save(
        self,
        key: str,
        arrays: Mapping[str, np.ndarray],
        *,
        label: str = "",
        parts: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``arrays`` as entry ``key`` atomically; returns its path."""
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        if _META in arrays:
            raise CacheError(f"array name {_META!r} is reserved.")
        for name, a in arrays.items():
            if a.dtype == object:
                raise CacheError(f"cache array {name!r} has dtype object; only numeric/str arrays are cached.")
        meta = {
            "key": key,
            "sha256": hash_arrays(arrays),
            "parts": _canonical(dict(parts or {})),
            "feature_version": FEATURE_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        path = self.path(key, label)
        try:
            with atomic_write(path, "wb") as f:
                np.savez(f, **arrays, **{_META: blob})
        except OSError as e:
            raise CacheError(
                f"could not write the cache file {path}: {e}. Free some disk space or point "
                "CROSSLAB_CACHE at a writable folder."
            ) from None
        return path

    # ----- both ---------------------------------------------------------------
    def get_or_compute(
        self,
        parts: Mapping[str, Any],
        compute: Callable[[], Mapping[str, np.ndarray]],
        *,
        label: str = "",
        enabled: bool = True,
    ) -> tuple[dict[str, np.ndarray], CacheInfo]:
        """Load the entry for ``parts`` or run ``compute()`` and store its arrays.

        A failure to *write* the cache only warns: the freshly computed arrays are returned anyway.
        """
        t0 = time.perf_counter()
        key = make_key(parts)
        if enabled:
            found = self.load(key, label)
            if found is not None:
                return found, CacheInfo(key, self.path(key, label), True, time.perf_counter() - t0)
        arrays = {k: np.asarray(v) for k, v in compute().items()}
        path: Path | None = None
        note = ""
        if enabled:
            try:
                path = self.save(key, arrays, label=label, parts=parts)
            except CacheError as e:
                warnings.warn(str(e), RuntimeWarning, stacklevel=2)
                note = "could not write cache"
        return arrays, CacheInfo(key, path, False, time.perf_counter() - t0, note)

    def entries(self) -> list[Path]:
        """All cache files, oldest first."""
        if not self.root.exists():
            return []
        return sorted(self.root.glob("*.npz"), key=lambda p: p.stat().st_mtime)

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.root)!r}, {len(self.entries())} entries)"
