"""`python -m simulations SCENARIO.toml [--seed N] [--json] [--trace FILE]`."""

import sys

from simulations.runner import main

sys.exit(main(sys.argv[1:]))
