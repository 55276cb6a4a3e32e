"""Codec and framing costs beside the figures of DESIGN section 8.

Run: .venv/bin/python bench/codec_bench.py [--quick]

Prints one line per measurement: what, our figure, the design figure it compares with.
Times are the best of several repeats (the least disturbed run), per operation.
"""

from __future__ import annotations

import sys
import timeit

import blake3
import cbor2

from meshstream.clocks import Dot, VersionVector
from meshstream.envelope import Event, decode_event
from meshstream.wire import run_template
from meshstream.wire.envelope_batch import decode_run
from meshstream.wire.framing import NEED_DATA, FrameDecoder, FrameEncoder
from meshstream.wire.mac import FrameMac, derive_cluster_key
from meshstream.wire.messages import Hello, StatusReply

REPEATS = 5


def best_us(statement, number: int) -> float:
    """Best per-call time of `statement` in microseconds."""
    return min(timeit.repeat(statement, number=number, repeat=REPEATS)) / number * 1e6


def sample_event() -> Event:
    """An event whose envelope is 376 bytes: 200-byte data, two metadata entries, 3 peers."""
    context = VersionVector({"n1": 1041, "n2": 977, "n3": 1210})
    for filler in range(0, 200):
        event = Event.sequence("orders.eu-west", b"order-2024-000123", b"d" * (200 + filler - 50),
                               {"content-type": "application/json", "tenant": 42}, Dot("n2", 978), context)
        if len(event.envelope) >= 376:
            return event
    raise AssertionError("could not size the sample event")


def line(what: str, ours_us: float, design: str) -> None:
    print(f"{what:<52} {ours_us:8.2f} us   {1e6 / ours_us:>12,.0f}/s   design: {design}")


def envelope_figures(number: int) -> None:
    event = sample_event()
    body_fields = cbor2.loads(cbor2.loads(event.envelope)[0])
    print(f"envelope: {len(event.envelope)} bytes")
    line("CBOR encode of the envelope body (cbor2.dumps)", best_us(lambda: cbor2.dumps(body_fields), number),
         "1.9 us")
    line("CBOR encode canonical=True (for comparison)",
         best_us(lambda: cbor2.dumps(body_fields, canonical=True), number), "7.5 us")
    body = cbor2.loads(event.envelope)[0]
    line("CBOR decode of the envelope body (cbor2.loads)", best_us(lambda: cbor2.loads(body), number), "2.3 us")
    args = (event.stream, event.key, event.data, event.metadata, event.dot, event.context)
    line("Event.sequence: validate, encode, BLAKE3, seal", best_us(lambda: Event.sequence(*args), number),
         "1.9 + 0.8 us parts")
    line("decode_event: BLAKE3 check, strict decode, validate", best_us(lambda: decode_event(event.envelope), number),
         "2.3 + 0.8 us parts")
    key = b"k" * 32
    data_200 = b"x" * 200
    line("BLAKE3 keyed, 200 bytes", best_us(lambda: blake3.blake3(data_200, key=key).digest(16), number), "1.2 us")


def frame_message() -> StatusReply:
    """A message whose frame is 300 bytes without a MAC."""
    for size in range(200, 400):
        msg = StatusReply(7, "s" * size)
        if len(FrameEncoder().encode(msg)) >= 300:
            return msg
    raise AssertionError("could not size the sample frame")


def keyed_pair() -> tuple[FrameEncoder, FrameDecoder]:
    """Sender's encoder and receiver's decoder of a MACed connection past its Hellos."""
    key = derive_cluster_key(b"benchmark cluster secret")
    sender, receiver = FrameMac(key, b"S" * 16), FrameMac(key, b"R" * 16)
    encoder, decoder = FrameEncoder(sender), FrameDecoder(1 << 30, receiver)
    decoder_at_sender = FrameDecoder(1 << 30, sender)
    decoder_at_sender.receive_data(FrameEncoder(receiver).encode(Hello("m", "r", "peer", "r:1", 1, 1, b"R" * 16)))
    decoder.receive_data(encoder.encode(Hello("m", "s", "peer", "s:1", 1, 1, b"S" * 16)))
    assert decoder_at_sender.next_message() is not NEED_DATA and decoder.next_message() is not NEED_DATA
    return encoder, decoder


def decode_all(decoder: FrameDecoder, data: bytes) -> int:
    decoder.receive_data(data)
    count = 0
    while decoder.next_message() is not NEED_DATA:
        count += 1
    return count


def frame_figures(number: int) -> None:
    msg = frame_message()
    plain = FrameEncoder()
    frame = plain.encode(msg)
    print(f"frame: {len(frame)} bytes (+16 with a MAC)")
    line("encode one frame", best_us(lambda: plain.encode(msg), number), "28k frames/s one send each")
    batch = [msg] * 100
    line("encode_many, per frame, batches of 100", best_us(lambda: plain.encode_many(batch), number // 50) / 100,
         "800k frames/s batched (1.25 us)")
    decoder = FrameDecoder(1 << 30)
    line("decode one frame (receive_data + next_message)", best_us(lambda: decode_all(decoder, frame), number), "-")
    batched = plain.encode_many(batch)
    line("decode, per frame, 100 frames in one receive", best_us(lambda: decode_all(decoder, batched), number // 50) / 100,
         "800k frames/s batched (1.25 us)")
    encoder, _ = keyed_pair()
    line("encode_many with MAC, per frame, batches of 100",
         best_us(lambda: encoder.encode_many(batch), number // 50) / 100, "+1.2 us keyed BLAKE3")
    encoder, keyed_decoder = keyed_pair()
    keyed_batch = encoder.encode_many([msg] * 100 * REPEATS * (number // 50))
    chunk = len(keyed_batch) // (REPEATS * (number // 50))
    chunks = iter(keyed_batch[i:i + chunk] for i in range(0, len(keyed_batch), chunk))
    line("decode with MAC, per frame, 100 frames per receive",
         best_us(lambda: decode_all(keyed_decoder, next(chunks)), number // 50) / 100, "+1.2 us keyed BLAKE3")


def run_figures(number: int) -> None:
    """A catch-up batch: 2,048 events of one writer (`Event.seal_run`) as `decode_run`
    reads it on arrival (the run template, its envelopes laid out alike read column by
    column), and with the template reading envelope by envelope; figures per event."""
    count = 2048
    items = [(b"%032x" % index, b"x" * 200, ()) for index in range(count)]
    events = Event.seal_run("catchup", "n1", 100_000, VersionVector({"n1": 100_000, "n2": 5}), items)
    envelopes = [event.envelope for event in events]
    repeats = max(number // 2000, 2)
    print(f"run: {count} envelopes of {len(envelopes[0])} bytes")
    line("decode_run of a run, per event", best_us(lambda: decode_run(envelopes), repeats) / count, "-")
    saved = run_template._uniform_columns
    run_template._uniform_columns = lambda *_: None
    try:
        line("  the same, envelope by envelope", best_us(lambda: decode_run(envelopes), repeats) / count, "-")
    finally:
        run_template._uniform_columns = saved


def main() -> None:
    number = 2_000 if "--quick" in sys.argv else 20_000
    envelope_figures(number)
    frame_figures(number)
    run_figures(number)


if __name__ == "__main__":
    main()
