"""The hand-written decoders of a connection's set-up methods (protocol/setup_methods.py) against pamqp.

Property tests: for generated well-formed methods the fast decoder gives what pamqp gives; for
truncated, altered or random payloads it gives either pamqp's answer or None (pamqp then decides,
errors included).  And the methods real clients send take the fast path.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pamqp import commands as C
from pamqp import frame as pframe

from protocol import framing, setup_methods
from protocol.errors import AMQPError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=40).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
short = text.filter(lambda s: len(s.encode("utf-8")) <= 255)
# the value types the fast path decodes (str, bool, table, 32- and 64-bit ints) and some it leaves to pamqp
fast_values = st.one_of(text, st.booleans(), st.integers(-(2**63), 2**63 - 1))
other_values = st.one_of(st.sampled_from([0.5, -2.25, 1024.0]), st.lists(st.integers(0, 5), max_size=3), st.none())
tables = st.recursive(
    st.dictionaries(short, st.one_of(fast_values, other_values), max_size=5),
    lambda inner: st.dictionaries(short, st.one_of(fast_values, inner), max_size=4),
    max_leaves=12,
)

methods = st.one_of(
    st.builds(C.Connection.StartOk, client_properties=tables, mechanism=st.sampled_from(["PLAIN", "AMQPLAIN"]),
              response=text, locale=st.sampled_from(["en_US", ""])),
    st.builds(C.Connection.TuneOk, channel_max=st.integers(0, 65535), frame_max=st.integers(0, 2**32 - 1),
              heartbeat=st.integers(0, 65535)),
    st.builds(C.Connection.Open, virtual_host=short.filter(lambda s: len(s.encode()) <= 127)),
    st.builds(C.Basic.Qos, prefetch_size=st.integers(0, 2**32 - 1), prefetch_count=st.integers(0, 65535),
              global_=st.booleans()),
    st.builds(C.Basic.Consume, queue=st.sampled_from(["", "q", "orders.eu", "a" * 255]),
              consumer_tag=st.sampled_from(["", "ctag-1", "x" * 200]), no_local=st.booleans(),
              no_ack=st.booleans(), exclusive=st.booleans(), nowait=st.booleans(), arguments=tables),
)


def payload(method: object) -> bytes:
    return pframe.marshal(method, 1)[7:-1]


def by_pamqp(p: bytes) -> object:
    """What pamqp decodes the payload to (the reference), or the exception it raises."""
    idx = framing.method_index(p)
    m = C.INDEX_MAPPING[idx]()
    try:
        m.unmarshal(p[4:])
    except Exception as exc:  # noqa: BLE001 - any failure: the fast path must have refused
        return exc
    return m


def fields(m: object) -> dict:
    return {k: getattr(m, k) for k in type(m).__slots__}


def check(p: bytes) -> object | None:
    """The fast decoder's answer, checked against pamqp's: None, or the same method."""
    fast = setup_methods.DECODERS[framing.method_index(p)](p)
    if fast is not None:
        ref = by_pamqp(p)
        assert not isinstance(ref, Exception), f"pamqp refuses what the fast path took: {ref!r}"
        assert type(fast) is type(ref)
        assert fields(fast) == fields(ref)
    return fast


@SETTINGS
@given(methods)
def test_well_formed_methods_decode_as_pamqp_decodes_them(method: object) -> None:
    p = payload(method)
    check(p)
    decoded = framing.decode_method(p)
    assert type(decoded) is type(method)
    assert fields(decoded) == fields(by_pamqp(p))


@SETTINGS
@given(methods, st.data())
def test_altered_payloads_are_refused_or_decoded_as_pamqp_decodes_them(method: object, data: st.DataObject) -> None:
    p = bytearray(payload(method))
    how = data.draw(st.sampled_from(["cut", "flip", "grow", "random"]))
    if how == "cut":
        p = p[: data.draw(st.integers(4, len(p)))]
    elif how == "flip" and len(p) > 4:
        i = data.draw(st.integers(4, len(p) - 1))
        p[i] = data.draw(st.integers(0, 255))
    elif how == "grow":
        p += data.draw(st.binary(min_size=1, max_size=8))
    else:
        p = p[:4] + data.draw(st.binary(max_size=64))
    p = bytes(p)
    fast = check(p)
    if fast is None:  # pamqp's path: it decodes, or raises only the protocol's errors
        try:
            framing.decode_method(p)
        except AMQPError:
            pass


def test_what_real_clients_send_takes_the_fast_path() -> None:
    pika_properties = {
        "product": "Pika Python Client Library", "platform": "Python 3.11.2", "version": "1.3.2",
        "information": "See http://pika.rtfd.org",
        "capabilities": {"authentication_failure_close": True, "basic.nack": True, "connection.blocked": True,
                         "consumer_cancel_notify": True, "publisher_confirms": True},
    }
    sent = [
        C.Connection.StartOk(client_properties=pika_properties, mechanism="PLAIN", response="\0guest\0guest",
                             locale="en_US"),
        C.Connection.TuneOk(channel_max=2047, frame_max=131072, heartbeat=60),
        C.Connection.Open(virtual_host="/"),
        C.Basic.Qos(prefetch_count=10),
        C.Basic.Consume(queue="tasks", consumer_tag="ctag1.0", arguments={"x-priority": 2**40}),
        C.Basic.Consume(queue="tasks"),
    ]
    for m in sent:
        assert check(payload(m)) is not None, m


def test_tables_nested_deeper_than_the_fast_path_goes_are_left_to_pamqp() -> None:
    table: dict = {"leaf": True}
    for _ in range(setup_methods.MAX_DEPTH + 1):
        table = {"t": table}
    p = payload(C.Connection.StartOk(client_properties=table, mechanism="PLAIN", response="\0a\0b", locale="en_US"))
    assert check(p) is None
    assert framing.decode_method(p).client_properties == table
