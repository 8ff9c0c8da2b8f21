"""crosslab.device: one place that picks the device; bad settings are CrosslabErrors."""

from __future__ import annotations

import pytest
import torch

from crosslab.device import describe, get_device
from crosslab.errors import CrosslabError


def test_default_order(monkeypatch):
    monkeypatch.delenv("CROSSLAB_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert get_device().type == expected


def test_env_and_prefer(monkeypatch):
    monkeypatch.setenv("CROSSLAB_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    assert describe(torch.device("cpu")) == f"cpu ({torch.get_num_threads()} threads)"
    monkeypatch.setenv("CROSSLAB_DEVICE", "potato")
    with pytest.raises(CrosslabError, match="CROSSLAB_DEVICE='potato'"):
        get_device()
    assert get_device("cpu") == torch.device("cpu")  # prefer wins over the environment
    with pytest.raises(CrosslabError, match="prefer='gpu0'"):
        get_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_asked_without_gpu(monkeypatch):
    monkeypatch.setenv("CROSSLAB_DEVICE", "cuda")
    with pytest.raises(CrosslabError, match="no CUDA GPU"):
        get_device()
