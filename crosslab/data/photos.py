"""A few real photos for out-of-domain queries, with short human captions.

:func:`load_photos` gathers the sample photos bundled with scikit-image and
scikit-learn (no download) into a :class:`CaptionedImages` of in-memory arrays.
It lives apart from :mod:`crosslab.data.loaders` because it reads no
learner's files: it is fixed, shipped data, like the clip art and the scenes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import CaptionedImages

__all__ = ["load_photos"]


#: (loader, name, human captions). Only photos bundled with the packages (no download).
_PHOTOS = [
    (
        "skimage",
        "astronaut",
        [
            "an astronaut in a white space suit in front of a flag",
            "portrait of a smiling woman astronaut",
        ],
    ),
    ("skimage", "chelsea", ["a ginger tabby cat looking to the side", "close-up of a cat's face"]),
    (
        "skimage",
        "coffee",
        ["a cup of coffee on a saucer with a spoon", "a white coffee cup on a red table"],
    ),
    (
        "skimage",
        "rocket",
        ["a rocket on the launch pad", "a space rocket ready for launch under a blue sky"],
    ),
    (
        "skimage",
        "stereo_motorcycle",
        ["a red motorcycle parked indoors", "a motorbike seen from the side"],
    ),
    (
        "skimage",
        "hubble_deep_field",
        ["galaxies in deep space seen by a telescope", "a night sky full of stars and galaxies"],
    ),
    (
        "skimage",
        "immunohistochemistry",
        [
            "a stained tissue sample under a microscope",
            "purple and brown cells in a microscope image",
        ],
    ),
    (
        "skimage",
        "retina",
        ["a photograph of the retina of a human eye", "blood vessels at the back of an eye"],
    ),
    (
        "skimage",
        "camera",
        ["a black and white photo of a man with a camera on a tripod", "a cameraman in a field"],
    ),
    ("skimage", "coins", ["old coins on a dark background", "a grey photo of many coins"]),
    ("skimage", "moon", ["the surface of the moon with craters", "a grey photo of lunar craters"]),
    ("skimage", "clock", ["a wall clock seen at an angle", "a black and white photo of a clock"]),
    ("skimage", "brick", ["a brick wall", "a grey wall of bricks"]),
    ("skimage", "grass", ["a close-up of grass", "blades of grass in black and white"]),
    ("skimage", "gravel", ["a close-up of gravel", "small stones on the ground"]),
    ("skimage", "page", ["a page of printed text", "a scanned page of a book"]),
    (
        "sklearn",
        "china.jpg",
        ["a Chinese temple with trees in front", "a pagoda roof under a blue sky"],
    ),
    ("sklearn", "flower.jpg", ["a pink flower with a yellow centre", "a close-up of a flower"]),
]


def load_photos() -> CaptionedImages:
    """Real photos bundled with scikit-image and scikit-learn, with short human captions.

    Images are in-memory uint8 arrays ``(H, W, 3)`` (greyscale photos converted to RGB);
    no split (``split == ""``): they are for out-of-domain queries, not training.
    """
    import skimage.data
    from sklearn.datasets import load_sample_images

    samples = load_sample_images()
    sk = {Path(f).name: img for f, img in zip(samples.filenames, samples.images, strict=True)}
    ids, images, captions, c2i, meta = [], [], [], [], []
    for lib, key, caps in _PHOTOS:
        if lib == "skimage":
            arr = getattr(skimage.data, key)()
            arr = (
                arr[0] if isinstance(arr, tuple) else arr
            )  # stereo_motorcycle: (left, right, disp)
        else:
            arr = sk[key]
        arr = np.asarray(arr)
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        i = len(ids)
        ids.append(Path(key).stem)
        images.append(np.ascontiguousarray(arr[:, :, :3].astype(np.uint8)))
        captions += caps
        c2i += [i] * len(caps)
        meta.append({"source": f"{'scikit-image' if lib == 'skimage' else 'scikit-learn'}: {key}"})
    return CaptionedImages(
        name="photos",
        ids=ids,
        images=images,
        captions=captions,
        caption_to_image=np.asarray(c2i, dtype=np.int64),
        split=np.full(len(ids), "", dtype=object),
        meta=meta,
    )
