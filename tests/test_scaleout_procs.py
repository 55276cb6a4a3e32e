"""20 real peer processes on 127.0.0.1 grow from 3 under a quorum writer, 5 leave
gracefully, 2 are killed; every acknowledged event is on every live replica in one order
(bench/scaleout_bench.py --real runs the same and prints the figures)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "scaleout_bench.py"


@pytest.mark.slow
async def test_twenty_peers_scale_out_and_shrink_without_losing_an_ack(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("scaleout_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    document = await bench.real_run(str(tmp_path), log=lambda text: None)
    assert document["acked"] >= 300, document
    assert not document["problems"], document
    assert document["survivors"] == 13, document
    assert document["counts"].get("graceful_exit_codes", 0) == 0, document
    assert document["rss_mb_max"] <= 60, document
