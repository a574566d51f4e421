"""`python -m vaelab`: the command line (also under torchrun: `torchrun ... -m vaelab train`)."""

import sys

from vaelab.cli import main

sys.exit(main())
