"""The environment: lock file, environment.yml and pyproject agree, and torch + torchvision work on CPU."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pytest
import torch
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


def read_lock() -> dict[str, str]:
    """requirements.lock as {canonical name: version}; every non-comment line must be an exact pin."""
    pins: dict[str, str] = {}
    for n, line in enumerate((ROOT / "requirements.lock").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = PIN.match(line)
        assert m, f"requirements.lock:{n}: {line!r} is not an exact 'name==version' pin"
        name = canonicalize_name(m[1])
        assert name not in pins, f"requirements.lock:{n}: {m[1]} is pinned twice"
        pins[name] = m[2]
    return pins


LOCK = read_lock()


def test_lock_is_sane():
    assert len(LOCK) > 50
    for name, version in LOCK.items():
        Version(version)  # a valid PEP 440 version, not a URL or a path
        assert "+" not in version, f"{name}=={version}: local builds (e.g. +cpu) cannot be reproduced"
    assert "crosslab" not in LOCK  # the package itself is installed from the checkout


def test_environment_yml_agrees_with_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    pip_sections = [d["pip"] for d in deps if isinstance(d, dict) and "pip" in d]
    assert "python=3.11" in conda and "pip" in conda
    assert len(pip_sections) == 1
    yml: dict[str, str] = {}
    for line in pip_sections[0]:
        m = PIN.match(line)
        assert m, f"environment.yml: {line!r} is not an exact pin"
        yml[canonicalize_name(m[1])] = m[2]
    assert len(yml) == len(pip_sections[0]), "a package is listed twice in environment.yml"
    only_lock, only_yml = sorted(LOCK.keys() - yml.keys()), sorted(yml.keys() - LOCK.keys())
    assert not only_lock and not only_yml, (
        f"only in requirements.lock: {only_lock}; only in environment.yml: {only_yml}. "
        "Run `make lock-env`.")
    differ = {n: (LOCK[n], yml[n]) for n in LOCK if LOCK[n] != yml[n]}
    assert not differ, f"pins differ (lock, yml): {differ}. Run `make lock-env`."


def _pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return [Requirement(r) for r in reqs]


def test_pyproject_ranges_admit_locked_versions():
    reqs = _pyproject_requirements()
    assert {"torch", "torchvision", "gensim", "jupyterlab", "pytest", "nbval"} <= {
        canonicalize_name(r.name) for r in reqs}
    for r in reqs:
        name = canonicalize_name(r.name)
        assert name in LOCK, f"pyproject.toml asks for {r}, but requirements.lock does not pin {r.name}"
        assert r.specifier.contains(LOCK[name], prereleases=True), (
            f"requirements.lock pins {r.name}=={LOCK[name]}, outside pyproject's range {r}")


def test_pyproject_python_range_admits_311():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    from packaging.specifiers import SpecifierSet

    assert SpecifierSet(project["requires-python"]).contains("3.11.7")


def test_installed_versions_match_lock():
    # The environment running these tests was built from the lock file (make setup / CI).
    wrong = {}
    for name, version in LOCK.items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != version:
            wrong[name] = (version, have)
    assert not wrong, f"(locked, installed) differ: {wrong}. Run `make setup`."


def test_crosslab_under_test_is_this_checkout():
    # An editable install in a venv cached outside the clone may point at another clone;
    # then every test would silently exercise that clone's code instead of this one's.
    import crosslab

    where = Path(crosslab.__file__).resolve().parent.parent
    assert where == ROOT, f"crosslab is imported from {where}, not from this checkout {ROOT}. Run `make setup`."


def test_torch_and_torchvision_pair():
    import torchvision

    assert LOCK["torch"] == torch.__version__.split("+")[0]
    assert LOCK["torchvision"] == torchvision.__version__.split("+")[0]


def test_resnet18_forward_on_cpu():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 1000) and y.device.type == "cpu"
    assert torch.isfinite(y).all()
    # Same input, same output: inference is deterministic on CPU.
    with torch.no_grad():
        assert torch.equal(model(x), y)


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def _naive_nms(boxes: list[list[float]], scores: list[float], thr: float) -> list[int]:
    order = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep: list[int] = []
    for i in order:
        if all(_iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def test_torchvision_nms_matches_naive_reference():
    # The compiled torchvision operators are what a mismatched torch build breaks.
    from torchvision.ops import nms

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(40, 2, generator=g) * 50
    wh = torch.rand(40, 2, generator=g) * 30 + 5
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(40, generator=g)
    for thr in (0.1, 0.3, 0.5, 0.8):
        got = nms(boxes, scores, thr).tolist()
        assert got == _naive_nms(boxes.tolist(), scores.tolist(), thr)
    assert 0 < len(nms(boxes, scores, 0.3)) < 40


def test_torchvision_transforms_run():
    from PIL import Image
    from torchvision import transforms as T

    im = Image.new("RGB", (80, 60), (255, 0, 0))
    t = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])
    x = t(im)
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x[0], torch.ones(32, 32)) and x[1:].abs().max() == 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_nms_and_forward():
    from torchvision.models import resnet18
    from torchvision.ops import nms

    dev = torch.device("cuda")
    model = resnet18(weights=None).eval().to(dev)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64, device=dev)).shape == (2, 1000)
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], device=dev)
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7], device=dev), 0.5).tolist() == [0, 2]
