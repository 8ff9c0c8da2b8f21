"""Shared test set-up."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Run the tests' torch work on one thread.

    The tests use tiny tensors, where a second OpenMP thread only adds synchronisation;
    on a shared 2-core machine (CI, or a notebook kernel next door) contending threads
    made small training loops 10x slower (run_evaluation on toy data: 46 s vs 4 s).
    Results do not depend on it: every assertion compares with a reference, not a timing.
    """
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """60 synthetic scenes (``make_scenes(60, seed=0)``) with a feature cache of the test module's own."""
    import crosslab as cl

    mp = pytest.MonkeyPatch()
    mp.setenv("CROSSLAB_CACHE", str(tmp_path_factory.mktemp("crosslab-cache")))
    yield cl.data.make_scenes(60, seed=0)
    mp.undo()
