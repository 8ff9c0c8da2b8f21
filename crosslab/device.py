"""Pick the compute device once, in one place.

Everything else in crosslab calls :func:`get_device` (or follows the device of
its input tensors); no other module calls ``.cuda()``. Set the environment
variable ``CROSSLAB_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) to override.
"""

from __future__ import annotations

import os

import torch

from .errors import CrosslabError


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on: ``prefer``, else $CROSSLAB_DEVICE, else cuda > mps > cpu."""
    choice = prefer if prefer is not None else os.environ.get("CROSSLAB_DEVICE")
    if choice is not None:
        try:
            dev = torch.device(choice)
        except (RuntimeError, TypeError):
            source = "prefer" if prefer is not None else "CROSSLAB_DEVICE"
            raise CrosslabError(
                f"{source}={choice!r} is not a device torch knows; use 'cpu', 'cuda', 'cuda:1' or 'mps'."
            ) from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise CrosslabError(
                f"device {str(dev)!r} was asked for, but torch sees no CUDA GPU here. "
                "Use device='cpu' (or unset CROSSLAB_DEVICE)."
            )
        if dev.type == "mps" and not _mps_available():
            raise CrosslabError("device 'mps' was asked for, but it is not available here. Use 'cpu'.")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def describe(device: torch.device | None = None) -> str:
    """A human-readable name of the device, e.g. 'cuda (NVIDIA H100 80GB HBM3)' or 'cpu (2 threads)'."""
    dev = device or get_device()
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    if dev.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return dev.type
