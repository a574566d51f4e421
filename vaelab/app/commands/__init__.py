"""The commands of `vaelab`, one module each: `add_parser(sub, add_common)` adds its subparser, `command(args)`
runs it and returns the exit status. Modules import torch and the library inside `command`, so that building the
parser (and `vaelab --help`) stays quick."""

from __future__ import annotations

import argparse
from collections.abc import Callable

#: What `add_parser` adds its subparser to, and the function that adds the common options to it.
Subparsers = argparse._SubParsersAction
AddCommon = Callable[[argparse.ArgumentParser], None]

#: The closing line of every command's --help.
EPILOG = "Docs and examples: README.md. Every option can also be set in the YAML config."
