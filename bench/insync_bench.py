"""Anti-entropy between replicas already in sync costs the same at 1,000 and 1,000,000
events (issue 4): three nodes back to back (tests/node_harness.py) hold the same history;
the bench counts the bytes of SyncOffer and of SyncPull + SyncEvents over 3 s of rounds.

Usage: python bench/insync_bench.py [--large 1000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_anti_entropy import _history, _in_sync_round_bytes  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=1_000_000)
    args = parser.parse_args()
    started = time.process_time()
    small = _in_sync_round_bytes(_history(1_000, 10))
    large = _in_sync_round_bytes(_history(args.large, 10))
    print(f"1,000 events:      offers {small[0]:,} B, pulls+events {small[1]:,} B over 3 s")
    print(f"{args.large:,} events: offers {large[0]:,} B, pulls+events {large[1]:,} B over 3 s")
    equal = small[:2] == large[:2]
    print(f"ratio large/small offers {large[0] / small[0]:.3f}  target 1.000  {'met' if equal else 'MISSED'}"
          f"  ({time.process_time() - started:.0f} s CPU)")
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
