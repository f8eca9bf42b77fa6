"""Shared test setup: few CPU threads and a fixed random state for every test."""

from __future__ import annotations

import os
import random

import pytest
import torch

# One thread per xdist worker, two when run in a single process.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state, whatever ran before it."""
    random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def switch_on():
    """Return a function that makes the zero-init output BN of attention blocks nonzero.

    STT and its baselines start as the identity (output BN weight zero). Tests that look at the
    attention path itself must switch that branch on first, or it contributes exactly nothing.
    Only BatchNorm modules named `norm` (the blocks' output BN) are touched, not a trunk's BNs.
    """

    def _apply(module: torch.nn.Module, value: float = 1.0) -> torch.nn.Module:
        with torch.no_grad():
            for name, sub in module.named_modules():
                if isinstance(sub, torch.nn.BatchNorm2d) and name.rsplit(".", 1)[-1] == "norm":
                    sub.weight.fill_(value)
        return module

    return _apply


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: minutes on a small CPU; run with --runslow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
