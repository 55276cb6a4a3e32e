"""The CLI's parsing, exit statuses and output formats (no peers needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from meshstream import cli
from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event
from meshstream.demo import free_port


def _run(*args, stdin=b""):
    return subprocess.run([sys.executable, "-m", "meshstream", *args], input=stdin, capture_output=True, timeout=60)


def test_usage_errors_exit_2_with_one_line():
    for argv in (["frob"], ["append", "--peer", "nonsense", "s", "x"], ["read", "--peer", "127.0.0.1:1", "s",
                                                                         "--from", "garbage"],
                 ["append", "--peer", "127.0.0.1:1", "$topology", "x"], ["run", "--name", "n1"]):
        result = _run(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert len(result.stderr.decode().strip().splitlines()) == 1, result.stderr


def test_unreachable_peer_exits_1_with_one_line():
    result = _run("status", "--peer", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "status failed" in lines[0]


def test_cursor_round_trip():
    vector = VersionVector({"n1": 5, "n2": 3})
    assert cli.parse_cursor(cli.cursor_text(vector)) == vector
    assert cli.parse_cursor("") == VersionVector()
    with pytest.raises(cli.UsageError):
        cli.parse_cursor("n1:x")
    with pytest.raises(cli.UsageError):
        cli.parse_cursor("n1:1,n1:2")


def test_event_document_text_and_binary():
    text = Event.sequence("s", b"k1", b"hello", {}, Dot("n1", 1), VersionVector())
    doc = cli.event_document(text, VersionVector({"n1": 1}))
    assert doc == {"stream": "s", "key": "k1", "hash": text.digest.hex(), "dot": "n1:1", "cursor": "n1:1",
                   "data": "hello"}
    binary = Event.sequence("s", b"\xff\x00", b"\xff\xfe", {"m": b"\x01"}, Dot("n2", 7), VersionVector())
    doc = cli.event_document(binary)
    assert doc["key_base64"] == "/wA=" and doc["data_base64"] == "//4=" and "data" not in doc
    json.dumps(doc)


def test_topology_dot_output():
    view = {"members": {"n1": {"status": "alive"}, "n2": {"status": "failed"}},
            "masters": {"3": {"peer": "n1", "epoch": 2}}}
    text = cli.topology_dot(view)
    assert text.startswith("digraph mesh {") and '"shard 3" -> "n1"' in text and "salmon" in text


def test_status_text_lists_members_and_streams():
    text = cli.status_text({"name": "n1", "address": "127.0.0.1:1",
                            "members": [{"peer": "n1", "address": "127.0.0.1:1", "status": "alive", "incarnation": 0}],
                            "streams": [{"stream": "orders", "shard": 6, "master": "n1", "replicas": ["n1"],
                                         "events": 3}], "replication_lag": {"n2": 0}})
    assert "orders" in text and "alive" in text and "replication_lag" in text
