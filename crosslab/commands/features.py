"""``python -m crosslab features``: compute (or load) and cache a dataset's image and text features.

Run it before class to warm the cache; a second run loads everything from disk::

    python -m crosslab features                                  # clip art, Lite0, GloVe mean
    python -m crosslab features --data scenes --text w2v-sif
    python -m crosslab features --data ~/flickr8k/dataset_flickr8k.json --encoder resnet50 \\
        --weights ~/resnet50.pth
"""

from __future__ import annotations

import argparse
import time

from . import load_dataset


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..image import list_encoders
    from ..text_encoders import list_text_encoders

    parser.add_argument("--data", default="clipart",
                        help="clipart (default), scenes, an image folder, or a Karpathy/COCO .json or .csv file")
    parser.add_argument("--images", default=None, help="image folder for a .json/.csv --data file")
    parser.add_argument("--encoder", default="efficientnet_lite0", choices=list_encoders(),
                        help="image encoder (default: efficientnet_lite0)")
    parser.add_argument("--weights", default=None,
                        help="imagenet (default), random, or a state_dict file for --encoder")
    parser.add_argument("--image-size", type=int, default=None, help="input size in pixels")
    parser.add_argument("--text", default="glove-mean", choices=[*list_text_encoders(), "none"], metavar="NAME",
                        help="a text encoder (crosslab.text_encoders: glove-mean, w2v-sif, glove+w2v-tfidf, "
                        "minilm, ...; default glove-mean), fitted on the train captions; or none")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader decoding processes (default: 0 below 256 images, else 2)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: best available)")
    parser.add_argument("--no-cache", action="store_true", help="compute without reading/writing the cache")
    parser.add_argument("--scenes", type=int, default=2000, help="number of images for --data scenes")


def run(args: argparse.Namespace) -> int:
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
        from ..text_encoders import get_text_encoder

        has_train = bool((ds.split == "train").any())
        train = ds.train.texts if has_train else ds.texts
        fitted_on = f"{len(train):,} train captions" if has_train else \
            f"all {len(train):,} captions (the data has no train split)"
        t0 = time.perf_counter()
        encoder = get_text_encoder(args.text).fit(train)
        print(f"text     : {encoder.name} ({encoder.dim}-d; ready in {time.perf_counter() - t0:.1f} s, "
              f"fitted on {fitted_on})")
        t0 = time.perf_counter()
        X = encoder.transform(ds.texts, cache=not args.no_cache)
        info = encoder.last_cache_info_
        print(f"  features {X.shape} {X.dtype}; {int((~X.any(1)).sum())} captions without a known word")
        print(f"  {_state(info)} in {time.perf_counter() - t0:.2f} s" + (f": {info.path}" if info and info.path else ""))
    print(f"total    : {time.perf_counter() - t_all:.1f} s")
    return 0


def _state(info) -> str:
    if info is None or not info.key:
        return "computed (cache off)"
    return "cache hit, loaded" if info.hit else "cache miss, computed and saved"
