"""Shared test fixtures: the real datasets (VAELAB_DATA, else ../shared/datasets beside the repo, unless
VAELAB_TEST_SHARED=0: a fresh clone's view). A test that needs a dataset the machine may lack is marked
`@pytest.mark.needs_dataset("mnist")` and skips, saying why, where no copy is found."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"

if "VAELAB_DATA" not in os.environ and SHARED.is_dir() and os.environ.get("VAELAB_TEST_SHARED") != "0":
    os.environ["VAELAB_DATA"] = str(SHARED)
os.environ.setdefault("VAELAB_DOWNLOAD", "0")  # tests never reach for the network


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_dataset(*names): skip unless a copy of each dataset is found")


@functools.cache
def dataset_file(name: str, file: str | None = None) -> Path | None:
    """Where the files of dataset `name` were found (its `file`, or the first), without reading them; None if
    nowhere (`vaelab.data.sources` looks in $VAELAB_DATA, the user cache, system directories, the package)."""
    from vaelab.data import DATASETS
    from vaelab.data.sources import locate

    found = locate(DATASETS[name]).found
    if found is None:
        return None
    return found.files.get(file) if file else next(iter(found.files.values()))


def pytest_collection_modifyitems(config, items):
    for item in items:
        for mark in item.iter_markers("needs_dataset"):
            for name in (n for n in mark.args if dataset_file(n) is None):
                why = f"set VAELAB_DATA to a directory with the real copies, or run vaelab datasets --download {name}"
                item.add_marker(pytest.mark.skip(reason=f"dataset {name!r} not found here: {why}"))


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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-epoch run on the bundled MNIST (helpers.TINY), written with checksums; one per test module."""
    from helpers import TINY

    from vaelab.app.cli import main

    path = tmp_path_factory.mktemp("template") / "run"
    assert main(["train", *TINY, "--run-dir", str(path)]) == 0
    return path


@pytest.fixture
def good(trained, tmp_path):
    """A fresh copy of the `trained` run, for a test that may damage it."""
    import shutil

    return Path(shutil.copytree(trained, tmp_path / "good"))
