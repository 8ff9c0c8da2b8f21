"""Image features on Ray Data, and resumable indexing of a folder into a vector store.

    Y = image_features_ray(paths, "efficientnet_lite0", 160)    # == ImageEncoder.extract(paths)
    index_folder("photos/", store, engine="ray")                 # {'found': 5000, 'skipped': 4000, ...}

**Ray Data, briefly.** A *Dataset* is a list of rows cut into blocks; ``map_batches(fn)``
adds a stage that runs ``fn`` on batches of rows, streaming: batches flow to the next stage,
and to the caller, as soon as they are done. When ``fn`` is a class, Ray starts a pool of
*actors* (long-lived worker processes), each builds one instance -- here: loads the CNN
once -- and then calls it on batch after batch. Here each actor decodes its image files with
crosslab's own :func:`crosslab.data.load_image`, applies the encoder's preprocessing and runs
the network, so its features equal :meth:`crosslab.image.ImageEncoder.extract` on the same
files (float rounding aside: < 1e-5); results come back in input order.

**Local or cluster.** Without ``address`` (and without ``RAY_ADDRESS``) Ray starts on this
machine with its cores, no dashboard and quiet logs, and is shut down afterwards; with one,
crosslab connects to a running cluster and leaves it running (a Ray you started yourself
with ``ray.init`` is used as it is). crosslab schedules nothing itself: Ray does, and Ray's
cluster launcher builds the cluster (``ray up cluster.yaml``); then run your script with
``RAY_ADDRESS=ray://<head>:10001`` set, e.g. ``RAY_ADDRESS=... python index_photos.py``,
where the script calls ``index_folder(..., engine="ray")``. Every node needs crosslab
installed from a copy of the course (``pip install -e ".[scale]"`` in the launcher's setup commands) and must see
the image files at the same path (a shared or mounted file system).

**Resumable indexing.** :func:`index_folder` keys each file by the SHA-256 of its bytes,
skips the keys the store already holds, and appends each finished chunk with
``store.add``: an interrupted run loses at most one chunk, and a re-run computes only what
is missing. The store is duck-typed (``keys()``, ``add(...)``, ``pipeline``; see
:class:`crosslab.store.VectorStore`), and the folder is only read.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CrosslabError, DataError, ImageError, ModelError

__all__ = ["image_features_ray", "index_folder", "index_files"]

_NO_RAY = ('Ray is not installed; install it with  pip install "ray[data]"  '
           '(or, in the course folder, the extra:  pip install -e ".[scale]").')


# ----------------------------------------------------------------------------- the Ray stage
class _RayEncoder:
    """The map_batches stage: one instance per actor, so the CNN is loaded once per actor."""

    def __init__(self, encoder_name: str, image_size: int | None, output: str, threads: int) -> None:
        import torch

        from .image import ImageEncoder

        torch.set_num_threads(max(1, threads))
        self.encoder = ImageEncoder(encoder_name, image_size=image_size)
        self.output = output

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out, errors = _encode_files(self.encoder, list(batch["path"]), self.output)
        return {"path": batch["path"], "vector": out, "error": np.array(errors, dtype=object)}


def _encode_files(encoder: Any, paths: list[str], output: str) -> tuple[np.ndarray, list[str]]:
    """Features or logits ``(n, dim)`` of image files, and per file an error message ('' if fine).

    Exactly ImageEncoder.extract's path: load_image -> encoder.transform -> _forward; unreadable
    files get a row of zeros and their message instead of failing the whole batch."""
    import torch

    from .data import load_image

    xs, errors = [], []
    for p in paths:
        try:
            xs.append(encoder.transform(load_image(p)))
            errors.append("")
        except ImageError as e:
            errors.append(str(e))
    dim = 1000 if output == "logits" else encoder.dim
    out = np.zeros((len(paths), dim), np.float32)
    if xs:
        with torch.inference_mode():
            grid, logits = encoder._forward(torch.stack(xs))
            y = logits if output == "logits" else grid.mean((2, 3))
        out[[i for i, e in enumerate(errors) if not e]] = y.float().cpu().numpy()
    return out, errors


# ----------------------------------------------------------------------------- the Ray session
def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast (Ray itself retries for minutes) when nothing answers at ``host:port``."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError):
        raise CrosslabError(
            f"cannot reach a Ray cluster at {address!r}. Start one (ray up cluster.yaml, or ray start --head) "
            "and pass its address as host:port or ray://host:10001, or leave address unset (and RAY_ADDRESS "
            "empty) to run Ray on this machine."
        ) from None


@contextlib.contextmanager
def _ray_session(address: str | None) -> Iterator[Any]:
    """A running Ray: the one already initialised, a cluster at ``address`` / $RAY_ADDRESS, or a
    local one with this machine's cores; shut down on exit only if started here."""
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is the part crosslab needs
    except ImportError:
        raise CrosslabError(_NO_RAY) from None
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        _check_reachable(address)
    started = not ray.is_initialized()
    if started:
        local = {} if address else {"num_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                     else os.cpu_count(), "include_dashboard": False}
        # No usage report leaves the machine; Ray's C++ side logs only fatal errors (both overridable).
        quiet = {k: v for k, v in (("RAY_USAGE_STATS_ENABLED", "0"), ("RAY_BACKEND_LOG_LEVEL", "fatal"))
                 if k not in os.environ}
        os.environ.update(quiet)
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, **local)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise CrosslabError(f"Ray could not start or connect ({address or 'local'}): {e}") from None
        finally:
            for k in quiet:
                os.environ.pop(k, None)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = True  # rows come back in input order
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _ray_stream(ray: Any, paths: list[str], encoder_name: str, image_size: int | None, output: str,
                batch_size: int, chunk: int, concurrency: int | None, num_cpus: float, num_gpus: float,
                stage: type = _RayEncoder) -> Iterator[dict[str, np.ndarray]]:
    """Batches of ``chunk`` rows ``{path, vector, error}``, in input order, as the actors finish them
    (``stage``: the map_batches class; the benchmark passes a subclass that timestamps batches)."""
    if concurrency is None:  # as many actors as the cluster's CPUs hold, and no more than batches:
        # starting one (a process, torch, the CNN) costs seconds, more than a batch's work
        concurrency = max(1, min(int(ray.cluster_resources().get("CPU", 1) // max(num_cpus, 1e-9)),
                                 math.ceil(len(paths) / batch_size)))
    blocks = max(math.ceil(len(paths) / batch_size), min(concurrency, len(paths)))  # work for every actor
    concurrency = min(concurrency, blocks)
    ds = ray.data.from_items([{"path": str(p)} for p in paths], override_num_blocks=blocks)
    ds = ds.map_batches(
        stage, fn_constructor_kwargs={"encoder_name": encoder_name, "image_size": image_size,
                                            "output": output, "threads": int(max(num_cpus, 1))},
        batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_cpus=num_cpus, num_gpus=num_gpus)
    yield from ds.iter_batches(batch_size=chunk, batch_format="numpy")


def image_features_ray(paths: Sequence[str | os.PathLike], encoder_name: str = "efficientnet_lite0",
                       image_size: int | None = None, *, output: str = "features", address: str | None = None,
                       batch_size: int = 32, concurrency: int | None = None, num_cpus: float = 1,
                       num_gpus: float = 0) -> np.ndarray:
    """``(N, dim)`` float32 features (or ImageNet ``output="logits"``) of image files, on Ray Data.

    The same numbers as ``ImageEncoder(encoder_name, image_size=image_size).extract(paths)``,
    in the same order. ``concurrency`` actors (default: the cluster's CPUs / ``num_cpus``, and
    no more than there are batches), each with ``num_cpus`` CPUs (= torch threads) and
    ``num_gpus`` GPUs, take ``batch_size`` images at a time. ``address``: see the module
    docstring. An unreadable file raises :class:`ImageError` naming it.
    """
    if output not in ("features", "logits"):
        raise ModelError(f"output must be 'features' or 'logits', got {output!r}.")
    paths = [str(p) for p in paths]
    if not paths:
        from .image import get_encoder_spec

        return np.zeros((0, 1000 if output == "logits" else get_encoder_spec(encoder_name).dim), np.float32)
    with _ray_session(address) as ray:
        parts = list(_ray_stream(ray, paths, encoder_name, image_size, output, batch_size, len(paths),
                                 concurrency, num_cpus, num_gpus))
    bad = [e for part in parts for e in part["error"] if e]
    if bad:
        raise ImageError(f"{len(bad)} unreadable image(s); the first: {bad[0]}")
    return np.concatenate([np.asarray(part["vector"], np.float32) for part in parts])


# ----------------------------------------------------------------------------- indexing a folder
def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive; hidden names skipped), by the loaders' extensions."""
    from .data.loaders import IMG_EXTENSIONS

    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMG_EXTENSIONS and f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def _embed(pipeline: Any, Y: np.ndarray) -> np.ndarray:
    """Image features -> the pipeline head's joint space, ``(n, d)`` float32."""
    V = pipeline.head.embed_image(Y)
    if hasattr(V, "detach"):
        V = V.detach().cpu().numpy()
    return np.ascontiguousarray(V, dtype=np.float32)


def _local_chunks(pipeline: Any, todo: list[str], chunk: int,
                  batch_size: int) -> Iterator[tuple[list[str], np.ndarray, list[str]]]:
    """``(paths, features or logits, errors)`` per chunk, extracted in this process."""
    if not todo:
        return
    encoder, output = pipeline.image_encoder, pipeline.image_input
    for s in range(0, len(todo), chunk):
        part = todo[s:s + chunk]
        try:  # the fast path: extract's loader overlaps decoding with the network
            f, lg = encoder.extract(part, batch_size=batch_size, cache=False, progress=False, return_logits=True)
            yield part, (lg if output == "logits" else f), [""] * len(part)
        except ImageError:  # an unreadable file in this chunk: go file by file to find it
            out, errors = zip(*(_encode_files(encoder, part[i:i + batch_size], output)
                                for i in range(0, len(part), batch_size)), strict=True)
            yield part, np.concatenate(out), [e for es in errors for e in es]


def _ray_chunks(ray: Any, pipeline: Any, todo: list[str], chunk: int, batch_size: int,
                concurrency: int | None) -> Iterator[tuple[list[str], np.ndarray, list[str]]]:
    """The same on Ray Data: one actor pool for the whole run, chunks streamed back in order."""
    name, size = pipeline.image
    for b in _ray_stream(ray, todo, name, size, pipeline.image_input, batch_size, chunk, concurrency, 1, 0):
        yield list(b["path"]), np.asarray(b["vector"], np.float32), list(b["error"])


def index_folder(folder: str | os.PathLike, store: Any, *, engine: str = "local", address: str | None = None,
                 chunk: int = 256, batch_size: int = 32, concurrency: int | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Embed every image file under ``folder`` that ``store`` lacks, and append it chunk by chunk.

    Files are keyed by the SHA-256 of their bytes (as :func:`crosslab.store.content_key`), so
    moved pictures are not recomputed and a re-run after an interruption picks up after the last
    finished chunk. ``engine="local"`` extracts in this process (:class:`~crosslab.image.ImageEncoder`),
    ``"ray"`` on Ray Data (``address``: a cluster; see the module docstring). Vectors are the
    store's pipeline's image embeddings (features, or logits for ConSE, through the head).

    Returns counts: ``found`` (image files), ``skipped`` (already stored), ``duplicates``
    (same bytes as another file here), ``extracted`` (added now), ``unreadable`` and
    ``unreadable_files`` (``[(path, reason)]``; skipped, not stored, tried again next time). A
    symbolic link that leads out of ``folder`` is listed there too, and never followed.
    """
    from .store import content_key

    if engine not in ("local", "ray"):
        raise CrosslabError(f"engine must be 'local' or 'ray', got {engine!r}.")
    folder = Path(folder).expanduser().absolute()  # stored paths work from any directory
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}.")
    pipeline = store.pipeline
    if not hasattr(pipeline, "head") or not hasattr(pipeline, "image_input"):
        raise ModelError(f"the store's pipeline {getattr(pipeline, 'name', pipeline)!r} has no single head "
                         "(a fusion?); index with a single pipeline.")
    files = _image_files(folder)
    if not files:
        raise DataError(f"{folder}: no image files found (looked recursively for "
                        "*.jpg, *.png, *.webp, ...); nothing to index.")
    stats: dict[str, Any] = {"found": len(files), "skipped": 0, "duplicates": 0, "extracted": 0,
                             "unreadable": 0, "unreadable_files": []}
    stored, seen, todo, keys = set(store.keys()), set(), [], {}
    inside = folder.resolve()
    for f in files:
        if not f.resolve().is_relative_to(inside):  # a link out of the folder: never follow it
            stats["unreadable_files"].append((str(f), "a link leading outside the folder: not followed"))
            continue
        try:
            key = content_key(f)  # the store's own key: SHA-256 of the file's bytes
        except DataError as e:
            stats["unreadable_files"].append((str(f), str(e)))
            continue
        if key in stored:
            stats["skipped"] += 1
        elif key in seen:
            stats["duplicates"] += 1
        else:
            seen.add(key)
            keys[str(f)] = key
            todo.append(str(f))
    added, failed = index_files(store, todo, [keys[f] for f in todo], engine=engine, address=address, chunk=chunk,
                                batch_size=batch_size, concurrency=concurrency, progress=progress,
                                desc=f"indexing {folder.name}")
    stats["extracted"] += added
    stats["unreadable_files"] += failed
    stats["unreadable"] = len(stats["unreadable_files"])
    return stats


def index_files(store: Any, paths: Sequence[str], keys: Sequence[str], captions: Sequence[str | None] | None = None,
                *, engine: str = "local", address: str | None = None, chunk: int = 256, batch_size: int = 32,
                concurrency: int | None = None, progress: bool = True,
                desc: str = "indexing") -> tuple[int, list[tuple[str, str]]]:
    """Embed the image files ``paths`` (with their content ``keys``, new to ``store``) with the store's
    pipeline and append them chunk by chunk; returns ``(added, [(path, why unreadable)])``.

    The extraction behind :func:`index_folder` and :class:`crosslab.collection.Collection`: an
    unreadable file is listed, not stored, and never stops the others; an interruption loses at most
    one chunk. ``captions`` (one per path, or None) are stored beside the vectors."""
    from tqdm.auto import tqdm

    if engine not in ("local", "ray"):
        raise CrosslabError(f"engine must be 'local' or 'ray', got {engine!r}.")
    todo = [str(p) for p in paths]
    key_of = dict(zip(todo, (str(k) for k in keys), strict=True))
    caption_of = dict(zip(todo, captions, strict=True)) if captions is not None else {}
    pipeline = store.pipeline
    if not hasattr(pipeline, "head") or not hasattr(pipeline, "image_input"):
        raise ModelError(f"the store's pipeline {getattr(pipeline, 'name', pipeline)!r} has no single head "
                         "(a fusion?); index with a single pipeline.")
    added, failed = 0, []
    auto = bool(getattr(store, "auto_index", False))  # a VectorStore: update its ANN index once, at the end
    session = _ray_session(address) if engine == "ray" and todo else contextlib.nullcontext()
    try:
        if auto:
            store.auto_index = False
        with session as ray, tqdm(total=len(todo), desc=desc, unit="img", disable=not progress) as bar:
            chunks = _ray_chunks(ray, pipeline, todo, chunk, batch_size, concurrency) if engine == "ray" and todo \
                else _local_chunks(pipeline, todo, chunk, batch_size)
            for part, Y, errors in chunks:
                ok = [i for i, e in enumerate(errors) if not e]
                failed += [(p, e) for p, e in zip(part, errors, strict=True) if e]
                if ok:  # one append per chunk: an interruption loses at most this chunk
                    kw = {"captions": [caption_of[part[i]] for i in ok]} if caption_of else {}
                    store.add(_embed(pipeline, Y[ok]), keys=[key_of[part[i]] for i in ok],
                              paths=[part[i] for i in ok], **kw)
                    added += len(ok)
                bar.update(len(part))
    finally:
        if auto:
            store.auto_index = True
    if auto:
        store.update_index()
    return added, failed
