"""The prepared GPU scripts (benchmarks/gpu/): a device is lent rarely and briefly, so a script that fails on a
typo wastes it. Each script must parse (`bash -n`), name only configs that exist, and call only `vaelab` commands
and options that the command line has."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from vaelab.app.cli import _parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks" / "gpu").glob("*.sh")) + [ROOT / "benchmarks" / "gpu.sh"]


def _commands() -> dict[str, set[str]]:
    """Every `vaelab` subcommand with its option strings."""
    sub = next(a for a in _parser()._actions if a.dest == "command")  # as tests/app/test_cli.py finds it
    return {name: {s for a in p._actions for s in a.option_strings} for name, p in sub.choices.items()}


def _calls(text: str) -> list[list[str]]:
    """The argument lists of the `vaelab ...` calls in a shell script (continued lines joined, comments dropped)."""
    lines = re.sub(r"\\\n", " ", text).splitlines()
    calls = []
    for line in lines:
        if line.lstrip().startswith("#"):
            continue
        for m in re.finditer(r"(?:^|[\s;|&(])vaelab\s+([^;|&)]*)", line):
            calls.append(shlex.split(m.group(1).replace("$", ""), comments=True))
    return calls


def test_the_scripts_are_found():
    assert len(SCRIPTS) >= 8 and all(p.is_file() for p in SCRIPTS)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_names_what_exists(script: Path):
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for config in re.findall(r"configs/[\w/.-]+\.yaml", text):
        assert (ROOT / config).is_file(), f"{script.name} names {config}, which does not exist"
    commands = _commands()
    for call in _calls(text):
        assert call and call[0] in commands, f"{script.name}: 'vaelab {' '.join(call)}' is not a vaelab command"
        for token in call[1:]:
            if token.startswith("--"):
                option = token.split("=", 1)[0]
                assert option in commands[call[0]], f"{script.name}: vaelab {call[0]} has no option {option}"
