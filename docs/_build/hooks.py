"""mkdocs hook: `::: vaelab.NAME` on an API page documents the top-level name NAME wherever it is defined.

vaelab's top-level names are lazy (`vaelab._LAZY`: name -> defining module), which a static reader of the source
cannot follow; this hook rewrites each such directive to the defining module's object, headed `vaelab.NAME`, so
the reference follows `_LAZY` when a module moves. An `options:` block under the directive is kept.
"""

from __future__ import annotations

import re

import vaelab

_DIRECTIVE = re.compile(r"^::: vaelab\.(\w+)[ \t]*\n(?P<options>    options:[ \t]*\n)?", re.MULTILINE)


def on_page_markdown(markdown: str, **kwargs) -> str:
    def expand(match: re.Match) -> str:
        name = match.group(1)
        module = vaelab._LAZY.get(name)
        if module is None:  # a module of vaelab, documented where it is
            return match.group(0)
        return f"::: {module}.{name}\n    options:\n      heading: vaelab.{name}\n      toc_label: vaelab.{name}\n"

    return _DIRECTIVE.sub(expand, markdown)
