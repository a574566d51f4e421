"""Shared test fixtures: the real datasets (VAELAB_DATA, else ../shared/datasets beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"

if "VAELAB_DATA" not in os.environ and SHARED.is_dir():
    os.environ["VAELAB_DATA"] = str(SHARED)
os.environ.setdefault("VAELAB_DOWNLOAD", "0")  # tests never reach for the network


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _quiet_machine(monkeypatch):
    """The commands' output must not depend on the machine's load: no load-average warning (tests that check the
    warning patch the load themselves), and the torch thread count restored after each test."""
    monkeypatch.setattr("vaelab.threads.load_average", lambda: 0.0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
