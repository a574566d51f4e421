"""griffe extension: the doctest examples of vaelab's docstrings (`>>>` runs, as `python -m pytest --doctest-modules`
reads them) render as code blocks in the API reference instead of as Markdown text."""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """`text` with each doctest block (from a `>>>` line to the next blank line) inside a ```pycon fence."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        starts = line.lstrip().startswith(">>>")
        if starts and not inside:
            out.append(line[: len(line) - len(line.lstrip())] + "```pycon")
            inside = True
        elif inside and not line.strip():
            out.append(_indent(out) + "```")
            inside = False
        out.append(line)
    if inside:
        out.append(_indent(out) + "```")
    return "\n".join(out)


def _indent(lines: list[str]) -> str:
    opening = next(line for line in reversed(lines) if line.lstrip().startswith("```pycon"))
    return opening[: len(opening) - len(opening.lstrip())]


class FenceDoctests(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
