"""`python -m meshstream ...` is the `meshstream` command (the demo starts peers this way)."""

import gc
import sys

# Start-up allocates ~100k long-lived objects (classes, generated codecs): with CPython's
# default threshold of 700 they were scanned by ~150 young and several full collections
# while importing, 10-20 ms of the ~220 ms a peer takes to import (`run_peer` sets the
# same thresholds for the running peer).
gc.set_threshold(100_000, 50, 100)

from meshstream.cli import main  # noqa: E402

sys.exit(main())
