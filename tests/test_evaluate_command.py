"""crosslab.recipes and ``python -m crosslab evaluate`` on small synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crosslab import recipes
from crosslab.__main__ import main
from crosslab.evaluation import ROW_KEYS


def _features(seed=0):
    rng = np.random.default_rng(seed)
    n_img, caps = 150, 2
    z = rng.normal(size=(n_img, 6))
    Y = (z @ rng.normal(size=(6, 20)) + 0.5 * rng.normal(size=(n_img, 20))).astype(np.float32)
    c2i = np.repeat(np.arange(n_img), caps)
    X = (z[c2i] @ rng.normal(size=(6, 10)) + 0.5 * rng.normal(size=(len(c2i), 10))).astype(np.float32)

    def part(lo, hi):
        keep = (c2i >= lo) & (c2i < hi)
        return recipes.SplitFeatures(X[keep], Y[lo:hi], c2i[keep] - lo)

    return recipes.Features(part(0, 90), part(90, 110), part(110, 150), "synthetic", "synthetic")


def test_run_evaluation_rows(monkeypatch):
    monkeypatch.setitem(recipes.TRAIN_DEFAULTS, "epochs", 20)
    monkeypatch.setitem(recipes.TRAIN_DEFAULTS, "batch_size", 32)
    rows = recipes.run_evaluation(feats=_features(), d=8, progress=False)
    names = [r["name"] for r in rows]
    assert [r["kind"] for r in rows] == ["random", "cca", "cca"] + ["trained"] * 4
    assert len(set(names)) == len(names)
    for r in rows:
        assert set(ROW_KEYS) <= set(r)
        assert 0 <= r["t2i_r1"] <= r["t2i_r5"] <= r["t2i_r10"] <= 100
    for r in rows[1:]:  # every fitted model is far above chance on this easy data
        # chance: 10 of 40 images = 25 %
        assert r["t2i_r10"] + r["i2t_r10"] > 2 * 35, r["name"]


def test_cli_json_on_scenes(tmp_path, monkeypatch, capsys):
    pytest.importorskip("efficientnet_lite_pytorch")
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(recipes.TRAIN_DEFAULTS, "epochs", 2)
    rc = main(["evaluate", "--json", "--data", "scenes:40", "--text", "w2v-mean", "--loss", "infonce",
               "--d", "8", "--device", "cpu"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["kind"] for r in rows] == ["random", "cca", "cca", "trained"]
    assert all(list(r) == list(ROW_KEYS) for r in rows)


def test_cli_errors(capsys):
    assert main(["evaluate", "--data", "/no/such/place"]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["evaluate", "--data", "scenes:3"]) == 1


def test_cli_people_queries_need_the_clip_art(capsys):
    assert main(["evaluate", "--queries", "people", "--data", "scenes:40"]) == 1
    assert "--data clipart" in capsys.readouterr().err
