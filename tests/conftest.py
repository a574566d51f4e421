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
