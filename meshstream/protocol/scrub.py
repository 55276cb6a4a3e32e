"""Background scrub of the store, and reports of the corrupt records it or a read finds.

Scrub runs in slices of scrub_records_per_s * gossip_interval_s records on the gossip
cadence: a one-second slice blocked a real peer's loop for 0.3-0.8 s, longer than the local
preset's probe timeout, and set off suspicion storms; no extra deadlines either. A small
store is not rescanned many times a second (4.6 us of CPU per record): a full pass takes at
least config.scrub_pass_s_min, so an idle peer with 300 records scrubs 5 a second.

A corrupt record leaves the store's version vectors when found, so anti-entropy refetches
it from a replica; this module only paces the checking and journals each record once.
"""

from __future__ import annotations

from typing import Any

from meshstream.config import Config
from meshstream.protocol.effects import Effect, Journal

SCRUB_RECOUNT_SLICES = 20  # the held-records count behind the pacing is refreshed this often


class Scrubber:
    def __init__(self, name: str, config: Config, store: Any) -> None:
        self.name = name
        self.config = config
        self.store = store
        self._slices = 0
        self._held = 0  # events held, recounted every SCRUB_RECOUNT_SLICES slices
        self._reported: set[tuple[str, int, str]] = set()

    def slice(self) -> list[Effect]:
        """Scrub the next slice, then report every corrupt record not reported yet."""
        interval = self.config.gossip_interval_s
        if self._slices % SCRUB_RECOUNT_SLICES == 0:
            self._held = sum(self.store.event_count(s) for s in self.store.streams())
        self._slices += 1
        paced = -(-self._held * interval // self.config.scrub_pass_s_min)  # ceiling division
        self.store.scrub(max(1, min(int(self.config.scrub_records_per_s * interval), int(paced))))
        return self.report()

    def report(self) -> list[Effect]:
        """Journal corrupt records found since the last report (by scrub or by reads)."""
        effects: list[Effect] = []
        for error in self.store.corrupt_records():
            where = (getattr(error, "segment", ""), getattr(error, "offset", -1), str(error))
            if where not in self._reported:
                self._reported.add(where)
                effects.append(Journal("corrupt", f"{self.name}: {error}; refetching from a replica"))
        return effects
