"""The API reference covers the public API: every top-level name of vaelab is documented on a page of
docs/api/ (`::: vaelab.NAME`, which docs/_build/hooks.py resolves through `vaelab._LAZY`), and every page is in the
navigation of mkdocs.yml. The build itself (`mkdocs build --strict`) runs in CI after the tests (`.ci/run`)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import vaelab

ROOT = Path(__file__).resolve().parents[1]


def test_every_top_level_name_has_a_reference_entry():
    text = "\n".join(p.read_text() for p in sorted((ROOT / "docs" / "api").glob("*.md")))
    documented = set(re.findall(r"^::: vaelab\.(\w+)\s*$", text, re.MULTILINE))
    missing = sorted(set(vaelab._LAZY) - documented)
    assert not missing, f"top-level names without an API entry in docs/api/: {missing}"


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav) -> set[str]:
        out: set[str] = set()
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            out |= pages(value) if isinstance(value, list) else {value}
        return out

    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts}
    assert on_disk == pages(config["nav"])


def test_the_hook_resolves_lazy_names():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", ROOT / "docs" / "_build" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    out = hooks.on_page_markdown("::: vaelab.fit\n    options:\n      heading_level: 3\n\n::: vaelab.mcmc.kernel\n")
    assert out.startswith(f"::: {vaelab._LAZY['fit']}.fit\n    options:\n      heading: vaelab.fit\n")
    assert "      heading_level: 3" in out and "::: vaelab.mcmc.kernel" in out
