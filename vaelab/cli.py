"""The `vaelab` console script's entry point (`python -m vaelab.cli` too); the commands are in `vaelab.app`."""

import sys

from vaelab.app.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
