"""`python -m vaelab`: the command line (also under torchrun: `torchrun ... -m vaelab train`)."""

import sys

from vaelab.app.cli import main

sys.exit(main())
