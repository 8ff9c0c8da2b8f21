"""``python -m crosslab evaluate | pipelines | search`` on small synthetic data (no clip-art fitting)."""

from __future__ import annotations

import json
from math import comb

import numpy as np
import pytest

from crosslab.__main__ import main
from crosslab.data import make_scenes
from crosslab.evaluation import ROW_KEYS
from crosslab.pipelines import DEFAULT_PIPELINE, list_pipelines


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test caches under its own temporary folder, never the user's cache."""
    monkeypatch.setenv("CROSSLAB_CACHE", str(tmp_path / "crosslab-cache"))


def _chance_rsum(ds, split="test", ks=(1, 5, 10)):
    """Expected rSum of random scores on ``split``: t2i K/N; i2t, for an image with m of the C
    captions, P(its best caption is in the top K) = 1 - comb(C - m, K) / comb(C, K)."""
    imgs = np.flatnonzero(ds.split == split)
    m = np.array([np.sum(ds.caption_to_image == i) for i in imgs])
    C, N = int(m.sum()), len(imgs)
    t2i = sum(100 * min(k, N) / N for k in ks)
    i2t = sum(100 * np.mean([1 - comb(C - mi, k) / comb(C, k) for mi in m]) for k in ks)
    return t2i + i2t


def test_cli_json_on_scenes(capsys):
    pytest.importorskip("efficientnet_lite_pytorch")
    rc = main(["evaluate", "--data", "scenes:60", "--pipeline", "random", "--pipeline", "cca+glove",
               "--json", "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["random", "cca+glove"]
    assert [r["kind"] for r in rows] == ["random", "cca"]
    assert all(list(r) == [*ROW_KEYS, "t2i_r10_ci", "i2t_r10_ci", "queries", "n_queries"] for r in rows)
    for r in rows:  # 95 % intervals hold the point estimate
        for d in ("t2i", "i2t"):
            low, high = r[f"{d}_r10_ci"]
            assert 0 <= low <= r[f"{d}_r10"] <= high <= 100
    assert all(r["queries"] == "captions" for r in rows)
    for r in rows:
        for d in ("t2i", "i2t"):
            assert 0 <= r[f"{d}_r1"] <= r[f"{d}_r5"] <= r[f"{d}_r10"] <= 100
            assert r[f"{d}_medr"] >= 1
        want = sum(r[f"{d}_r{k}"] for d in ("t2i", "i2t") for k in (1, 5, 10))
        assert r["rsum"] == pytest.approx(want, abs=0.05)
    chance = _chance_rsum(make_scenes(60, seed=0))  # ~240 of 600 on 12 test images
    random, cca = rows
    assert abs(random["rsum"] - chance) < 80, (random["rsum"], chance)
    assert cca["rsum"] > chance + 150, (cca["rsum"], chance)
    assert cca["t2i_r1"] > 3 * 100 / 12  # far above chance R@1 (1 in 12)
    # The second run is served from the cache: the same numbers.
    assert main(["evaluate", "--data", "scenes:60", "--pipeline", "random", "--pipeline", "cca+glove",
                 "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out) == rows


def test_cli_errors(capsys):
    assert main(["evaluate", "--data", "/no/such/place"]) == 1
    assert "no such file" in capsys.readouterr().err
    # Too few scenes for a train / val / test split: refused (when loading or fitting), no traceback.
    assert main(["evaluate", "--data", "scenes:3", "--pipeline", "random", "--json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("crosslab evaluate: error:") and "scenes" in err and "Traceback" not in err


def test_cli_unknown_pipeline_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--data", "scenes:60", "--pipeline", "nope", "--json"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--pipeline" in err and "invalid choice: 'nope'" in err and "cca+glove" in err


def test_cli_people_queries_need_the_clip_art(capsys):
    assert main(["evaluate", "--queries", "people", "--data", "scenes:40"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("crosslab evaluate: error:") and "--data clipart" in err
    assert "Traceback" not in err


def test_pipelines_command_lists_every_name(capsys):
    assert main(["pipelines", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_pipelines()
    assert [r["name"] for r in rows if r["default"]] == [DEFAULT_PIPELINE]
    assert all(r["kind"] and r["about"] and r["needs"] for r in rows)
    assert main(["pipelines"]) == 0
    text = capsys.readouterr().out
    for name in list_pipelines():
        assert name in text
    assert f"{DEFAULT_PIPELINE}" in text and "(default)" in text


@pytest.mark.parametrize("k", ["0", "-3"])
def test_search_command_rejects_k_below_one(k, capsys):
    # Checked before any data or model is loaded: an instant, clear error.
    assert main(["search", "a red apple", "--k", k]) == 1
    err = capsys.readouterr().err
    assert err.startswith("crosslab search: error:") and f"--k must be >= 1, got {k}" in err


def test_search_command_unknown_pipeline(capsys):
    with pytest.raises(SystemExit):
        main(["search", "a red apple", "--pipeline", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_search_command_explains_each_hit(capsys, monkeypatch):
    import crosslab.data

    scenes = crosslab.data.make_scenes(60, seed=0)
    monkeypatch.setattr(crosslab.data, "load_clipart", lambda: scenes)
    assert main(["search", "a red circle", "--pipeline", "cca+glove", "--k", "2", "--explain", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2
    for r in rows:
        e = r["explain"]
        assert e["method"] == "exact" and [w for w, _ in e["words"]] == ["a", "red", "circle"]
        assert sum(c for _, c in e["words"]) + e["rest"] == pytest.approx(r["score"], abs=1e-3)
    assert main(["search", "a red circle", "--pipeline", "cca+glove", "--k", "1", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "exact: a " in out and "red " in out and "circle " in out
