"""docs/extending.md runs as written: each worked example's file, its registry line, and the code that uses it.

The file's code is executed as a module; its registry line (`"name": Class,`) is added to the table it names, in
the module it names, for the test only (the table is restored afterwards); then the example that uses the name
runs. The test fails if a table or the file holding it moved without the page following.
"""

from __future__ import annotations

import importlib
import re
import types
from pathlib import Path

import pytest
import torch
from helpers import one_thread  # noqa: F401 (a module-wide fixture)

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)
_LINE = re.compile(r'^\s*"(?P<name>\w+)": (?P<builder>\w+),\s*$')


def _examples() -> list[tuple[str, str, str]]:
    """(file code, registry block, use code) per worked example, in the page's order."""
    blocks = _BLOCK.findall(PAGE.read_text())
    files = [b for b in blocks if b.startswith("# vaelab/")]
    lines = [b for b in blocks if b.startswith("# registry:")]
    uses = [b for b in blocks if b.startswith("# use")]
    assert len(files) == len(lines) == len(uses) == 3, "each worked example is a file, a registry line and a use"
    return list(zip(files, lines, uses, strict=True))


@pytest.mark.parametrize("index", range(3), ids=["prior", "objective", "posterior"])
def test_worked_example_runs(index, monkeypatch, tmp_path):
    code, registry, use = _examples()[index]
    path = code.splitlines()[0].removeprefix("# ").strip()
    assert (ROOT / path).parent.is_dir(), f"the example's file belongs in {path}, whose package does not exist"
    module = types.ModuleType(Path(path).stem)
    exec(compile(code, path, "exec"), module.__dict__)

    header, line = registry.strip().splitlines()
    where, table_name = header.removeprefix("# registry:").split()
    assert re.search(rf"^{table_name}\b.*= Registry\(", (ROOT / where).read_text(), re.MULTILINE), (
        f"{table_name} is no longer defined in {where}: docs/extending.md needs updating"
    )
    table = getattr(importlib.import_module(where.removesuffix(".py").replace("/", ".")), table_name)
    entry = _LINE.match(line)
    assert entry, f"a registry line is '\"name\": Class,', got {line!r}"
    assert entry["name"] not in table, f"{entry['name']} is already a registered name"
    monkeypatch.setitem(table._builders, entry["name"], getattr(module, entry["builder"]))

    monkeypatch.chdir(tmp_path)  # vaelab.fit's run directories stay in the test's folder
    torch.manual_seed(0)
    exec(compile(use, f"{PAGE.name} (use of {entry['name']})", "exec"), {"__name__": "example"})


def test_the_registered_names_are_gone_afterwards():
    from vaelab.config import build, registry

    assert "laplace" not in registry.PRIORS and "student_t" not in registry.POSTERIORS
    assert "renyi" not in build.OBJECTIVES
