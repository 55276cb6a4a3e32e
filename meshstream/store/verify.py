"""Offline scrub of a data directory: `meshstream verify --data DIR [--json]`.

`verify_directory` reads every segment file with `records.scan_segment` (never through a
store, so it needs no lock and changes nothing), checks each record's header digest and
decodes its body (event envelopes with the full `decode_event` validation), and names
every bad record by segment and offset. A torn tail (what a crash mid-write leaves; the
store truncates it on open) is reported but does not make the directory unclean.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TextIO

from meshstream.envelope import decode_event
from meshstream.errors import MeshError
from meshstream.store import records
from meshstream.store.segment import list_segments, segment_name

EXIT_CLEAN, EXIT_CORRUPT, EXIT_UNREADABLE = 0, 1, 2


@dataclass(slots=True)
class VerifyReport:
    directory: str
    segments: int = 0
    records: int = 0
    events: int = 0
    corrupt: list[dict] = field(default_factory=list)  # {segment, offset, reason}
    torn_tail: dict | None = None  # {segment, offset, bytes}

    @property
    def clean(self) -> bool:
        return not self.corrupt

    def to_json(self) -> dict:
        return {"directory": self.directory, "clean": self.clean, "segments": self.segments,
                "records": self.records, "events": self.events, "corrupt": self.corrupt,
                "torn_tail": self.torn_tail}


def verify_directory(path: str) -> VerifyReport:
    """Scrub every segment under `path`. Raises OSError if it cannot be read."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no data directory at {path}")
    report = VerifyReport(path)
    segments = list_segments(path)
    for segment in segments:
        with open(os.path.join(path, segment_name(segment)), "rb") as file:
            data = file.read()
        report.segments += 1
        _verify_segment(report, segment_name(segment), data, last=segment == segments[-1])
    return report


def _verify_segment(report: VerifyReport, name: str, data: bytes, last: bool) -> None:
    for found in records.scan_segment(data):
        if found.error == records.TORN and last:
            report.torn_tail = {"segment": name, "offset": found.offset, "bytes": found.length}
            continue
        report.records += 1
        reason = found.error or _body_problem(found)
        if reason:
            report.corrupt.append({"segment": name, "offset": found.offset, "reason": reason})
        elif found.kind == records.KIND_EVENT:
            report.events += 1


def _body_problem(found: records.Scanned) -> str:
    try:
        if found.kind == records.KIND_EVENT:
            decode_event(found.body)
        elif found.kind == records.KIND_DROP:
            records.decode_drop_body(found.body)
        else:
            records.decode_dot_body(found.body)
    except (MeshError, ValueError) as exc:
        return f"undecodable body: {exc}"
    return ""


def run_verify(data_dir: str, as_json: bool, out: TextIO) -> int:
    """Scrub `data_dir`, print the outcome, return 0 clean / 1 corrupt / 2 unreadable."""
    try:
        report = verify_directory(data_dir)
    except OSError as exc:
        message = f"cannot read data directory {data_dir}: {exc.strerror or exc}"
        if as_json:
            print(json.dumps({"directory": data_dir, "clean": False, "error": message}), file=out)
        else:
            print(f"verify: {message}", file=out)
        return EXIT_UNREADABLE
    if as_json:
        print(json.dumps(report.to_json(), sort_keys=True), file=out)
    else:
        _print_text(report, out)
    return EXIT_CLEAN if report.clean else EXIT_CORRUPT


def _print_text(report: VerifyReport, out: TextIO) -> None:
    for bad in report.corrupt:
        print(f"CORRUPT segment {bad['segment']} offset {bad['offset']}: {bad['reason']}", file=out)
    if report.torn_tail:
        tail = report.torn_tail
        print(f"torn tail in segment {tail['segment']} at offset {tail['offset']} ({tail['bytes']} bytes): "
              "truncated when the store opens", file=out)
    verdict = "clean" if report.clean else f"{len(report.corrupt)} corrupt record(s)"
    print(f"{report.directory}: {report.segments} segment(s), {report.records} record(s), "
          f"{report.events} event(s): {verdict}", file=out)
