"""`python -m meshstream ...` is the `meshstream` command (the demo starts peers this way)."""

import sys

from meshstream.cli import main

sys.exit(main())
