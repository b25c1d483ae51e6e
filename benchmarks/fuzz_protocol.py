"""Coverage-guided fuzzing of everything that parses a client's bytes (protocol/).

One input is a byte stream as a client would send it after the handshake.  It is cut
into frames by ``FrameReader`` (in pieces, as a socket would deliver it), and each frame
goes through the parsers the broker applies to it: method frames through
``decode_method`` (and the hand-written Basic.Publish / Basic.Ack parsers), content
headers through the property-layout check, the property splitter and the lazy
property readers, and any headers table through the field-table walker.  Only the
protocol's own errors (``AMQPError``) may come out; anything else is a crash.

With atheris installed (``pip install -e '.[fuzz]'``) the run is coverage-guided
(libFuzzer); its flags pass through:

    python benchmarks/fuzz_protocol.py -max_total_time=3600 fuzz-corpus/
    python benchmarks/fuzz_protocol.py -runs=200000

A corpus directory is seeded with valid frames on first use.  Without atheris the same
target runs on random mutations of those seeds (``--seconds N``, default 60).
Either way the number of executions is printed at the end.
"""

from __future__ import annotations

import os
import random
import struct
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

try:
    import atheris
except ImportError:  # the mutation loop below stands in
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["protocol"]):
        from protocol import fields, framing
        from protocol.errors import AMQPError
else:
    from protocol import fields, framing
    from protocol.errors import AMQPError

import warnings  # noqa: E402

warnings.simplefilter("ignore")  # pamqp warns about deprecated methods that fuzzing hits

executions = 0


def one_input(data: bytes) -> None:
    """The fuzz target: raises only if a parser raises something other than AMQPError."""
    global executions
    executions += 1
    reader = framing.FrameReader(131072)
    step = 1 + (data[0] if data else 0)
    try:
        for i in range(1, len(data), step):
            for ftype, _ch, payload in reader.feed(data[i : i + step]):
                _frame(ftype, payload)
    except AMQPError:
        pass


def _frame(ftype: int, payload: bytes) -> None:
    try:
        if ftype == framing.FRAME_METHOD:
            idx = framing.method_index(payload)
            if idx == framing.IDX_BASIC_PUBLISH:
                framing.parse_publish(payload)
            elif idx == framing.IDX_BASIC_ACK:
                framing.parse_ack(payload)
            else:
                framing.decode_method(payload)
        elif ftype == framing.FRAME_HEADER:
            framing.header_body_size(payload)
            fields.check_properties(payload)
            # what the broker does only with a header that passed the check
            _prefix, props = fields.split_properties(payload)
            if "headers" in props:
                fields.table_entries(props["headers"])
            framing.delivery_mode(payload)
            framing.priority(payload)
            framing.expiration(payload)
            framing.decode_properties(payload)
    except AMQPError:
        pass


def seeds() -> list[bytes]:
    """Valid frames of every kind, for the corpus."""
    import datetime

    from pamqp import commands as C
    from pamqp import frame as pframe
    from pamqp.header import ContentHeader

    props = C.Basic.Properties(
        content_type="application/json", headers={"s": "x", "i": 7, "a": [1, "two"], "t": {"k": True}},
        delivery_mode=2, priority=5, expiration="60000", message_id="m",
        timestamp=datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC), app_id="fuzz",
    )
    frames = [
        pframe.marshal(C.Basic.Publish(exchange="amq.topic", routing_key="a.b"), 1),
        pframe.marshal(ContentHeader(0, 5, props), 1),
        struct.pack(">BHI", 3, 1, 5) + b"hello\xce",
        pframe.marshal(C.Basic.Ack(delivery_tag=3, multiple=True), 1),
        pframe.marshal(C.Queue.Declare(queue="q", arguments={"x-max-length": 10, "x-queue-type": "classic"}), 1),
        pframe.marshal(C.Queue.Bind(queue="q", exchange="amq.headers", arguments={"x-match": "any", "k": 1}), 1),
        pframe.marshal(C.Basic.Consume(queue="q", arguments={"x-priority": 3}), 1),
        pframe.marshal(C.Exchange.Declare(exchange="x", exchange_type="topic"), 1),
        pframe.marshal(C.Channel.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0), 1),
        bytes((8, 0, 0, 0, 0, 0, 0, 0xCE)),
    ]
    return [b"\x07" + f for f in frames] + [b"\x40" + b"".join(frames)]


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(5)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[rng.randrange(len(b))] = rng.choice([0, 1, 0x7F, 0x80, 0xCE, 0xFF, rng.randrange(256)])
        elif op == 2:
            del b[rng.randrange(len(b) + 1):]
        elif op == 3:
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif len(b) >= 4:
            i = rng.randrange(len(b) - 3)
            b[i:i + 4] = struct.pack(">I", rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 16)]))
    return bytes(b)


def seed_corpus(argv: list[str]) -> None:
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    for d in dirs:
        if not os.path.isdir(d) or not os.listdir(d):
            os.makedirs(d, exist_ok=True)
            for i, s in enumerate(seeds()):
                with open(os.path.join(d, f"seed-{i:02d}"), "wb") as f:
                    f.write(s)


def main() -> None:
    if atheris is not None:
        seed_corpus(sys.argv)
        atheris.Setup(sys.argv, one_input)
        try:
            atheris.Fuzz()
        finally:
            print(f"executions: {executions}", file=sys.stderr)
        return
    seconds = 60.0
    if "--seconds" in sys.argv:
        seconds = float(sys.argv[sys.argv.index("--seconds") + 1])
    print("atheris is not installed: random mutations of the seeds instead", file=sys.stderr)
    rng = random.Random(int(time.time()))
    pool = seeds()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(200):
            one_input(mutate(rng, rng.choice(pool)))
    print(f"executions: {executions}, no crash")


if __name__ == "__main__":
    main()
