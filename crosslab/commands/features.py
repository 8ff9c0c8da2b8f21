"""``python -m crosslab features``: compute (or load) and cache a dataset's image and text features.

Run it before class to warm the cache; a second run loads everything from disk::

    python -m crosslab features                                  # clip art, Lite0, GloVe mean
    python -m crosslab features --data scenes --text word2vec --pooling sif
    python -m crosslab features --data ~/flickr8k/dataset_flickr8k.json --encoder resnet50 \\
        --weights ~/resnet50.pth
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..image import list_encoders
    from ..text import POOLINGS

    parser.add_argument("--data", default="clipart",
                        help="clipart (default), scenes, an image folder, or a Karpathy/COCO .json or .csv file")
    parser.add_argument("--images", default=None, help="image folder for a .json/.csv --data file")
    parser.add_argument("--encoder", default="efficientnet_lite0", choices=list_encoders(),
                        help="image encoder (default: efficientnet_lite0)")
    parser.add_argument("--weights", default=None,
                        help="imagenet (default), random, or a state_dict file for --encoder")
    parser.add_argument("--image-size", type=int, default=None, help="input size in pixels")
    parser.add_argument("--text", default="glove", choices=("glove", "word2vec", "none"),
                        help="word vectors: pretrained GloVe, Word2Vec trained on the train captions, or none")
    parser.add_argument("--pooling", default="mean", choices=POOLINGS, help="sentence pooling")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader decoding processes (default: 0 below 256 images, else 2)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    parser.add_argument("--no-cache", action="store_true", help="compute without reading/writing the cache")
    parser.add_argument("--scenes", type=int, default=2000, help="number of images for --data scenes")


def load_dataset(spec: str, images: str | None = None, n_scenes: int = 2000):
    """The dataset named by ``--data``: 'clipart', 'scenes', a folder, or a .json/.csv annotation file."""
    from .. import data as D
    from ..errors import SchemaError

    if spec == "clipart":
        return D.load_clipart()
    if spec == "scenes":
        return D.make_scenes(n_scenes, seed=0)
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError(f"--data {spec!r}: no such file or folder (or use 'clipart' / 'scenes').")
    if path.is_dir():
        return D.load_image_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            return D.load_karpathy(path, images)
        except SchemaError as karpathy_error:
            try:
                return D.load_coco(path, images)
            except SchemaError:
                raise karpathy_error from None
    if suffix in (".csv", ".tsv", ".tab", ".txt"):
        return D.load_csv(path, images)
    raise DataError(f"--data {spec}: expected a folder, a .json (Karpathy/COCO) or a .csv file.")


def run(args: argparse.Namespace) -> int:
    from .. import text as T
    from ..cache import FeatureCache
    from ..device import describe
    from ..image import ImageEncoder

    t_all = time.perf_counter()
    ds = load_dataset(args.data, args.images, args.scenes)
    print(f"data     : {ds!r}")
    print(f"cache    : {FeatureCache().root}")

    # ----- images
    enc = ImageEncoder(args.encoder, weights=args.weights, device=args.device, image_size=args.image_size)
    print(f"images   : {enc.name} ({enc.weights} weights), {enc.image_size} px on {describe(enc.device)}")
    t0 = time.perf_counter()
    feats, logits = enc.extract(ds, batch_size=args.batch_size, num_workers=args.workers,
                                cache=not args.no_cache, return_logits=True)
    info = enc.last_cache_info_
    print(f"  features {feats.shape} {feats.dtype}, ImageNet logits {logits.shape}")
    print(f"  {_state(info)} in {time.perf_counter() - t0:.2f} s" + (f": {info.path}" if info.path else ""))

    # ----- text
    if args.text != "none":
        train = ds.train.texts if (ds.split == "train").any() else ds.texts
        t0 = time.perf_counter()
        if args.text == "glove":
            kv = T.load_glove()
        else:
            kv = T.train_word2vec(train)
        t_vec = time.perf_counter() - t0
        encoder = T.SentenceEncoder(kv, pooling=args.pooling).fit(train)
        print(f"text     : {encoder.name} ({encoder.dim}-d; vectors ready in {t_vec:.1f} s, "
              f"pooling fitted on {len(train):,} train captions)")
        t0 = time.perf_counter()
        X, unknown = encoder.transform(ds.texts, return_mask=True, cache=not args.no_cache)
        info = getattr(encoder, "last_cache_info_", None) if not args.no_cache else None
        print(f"  features {X.shape} {X.dtype}; {int(unknown.sum())} captions without a known word")
        print(f"  {encoder.oov_report(ds.texts, top=8)}")
        print(f"  {_state(info)} in {time.perf_counter() - t0:.2f} s" + (f": {info.path}" if info and info.path else ""))
    print(f"total    : {time.perf_counter() - t_all:.1f} s")
    return 0


def _state(info) -> str:
    if info is None or not info.key:
        return "computed (cache off)"
    return "cache hit, loaded" if info.hit else "cache miss, computed and saved"
