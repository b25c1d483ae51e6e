"""Property-based tests (hypothesis) of everything in protocol/ that reads or writes bytes.

- The frame reader: any stream of valid frames, cut anywhere, gives the same frames;
  arbitrary bytes raise nothing but the protocol's errors.
- Every hand-written codec round-trips against pamqp: Basic.Publish and Basic.Ack
  parsing; Deliver, Get-Ok, Return, Ack/Nack and content frames; the replies in
  protocol/methods.py; short strings; field tables and property lists
  (protocol/fields.py), including the layout checks a content header goes through.
- Arbitrary bytes given to any parser raise only FrameError / AMQPError.
"""

from __future__ import annotations

import datetime
import decimal
import struct

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pamqp import body as pbody
from pamqp import commands as C
from pamqp import decode as pdecode
from pamqp import encode as pencode
from pamqp import frame as pframe
from pamqp.header import ContentHeader

from protocol import fields, framing, methods, names
from protocol.errors import AMQPError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# names pamqp's encoder accepts (its spec pattern), and any UTF-8 name up to 255 bytes
ascii_name = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:", max_size=60)
utf8_name = st.text(max_size=60).filter(lambda s: len(s.encode("utf-8", "surrogatepass")) <= 255).filter(
    lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)
)
channel = st.integers(1, 65535)
u64 = st.integers(0, 2**63 - 1)  # delivery tags (pamqp encodes them signed)


def payload(m) -> bytes:
    return pframe.marshal(m, 1)[7:-1]


def only_protocol_errors(fn, *args):
    try:
        return fn(*args)
    except AMQPError:
        return None


# -- the frame reader -------------------------------------------------------------------

frames_st = st.lists(
    st.tuples(st.sampled_from([1, 2, 3, 8]), st.integers(0, 65535), st.binary(max_size=300)), max_size=8
)


def raw_frame(t: int, ch: int, p: bytes) -> bytes:
    return struct.pack(">BHI", t, ch, len(p)) + p + b"\xce"


@SETTINGS
@given(frames_st, st.lists(st.integers(1, 400), max_size=30))
def test_frame_reader_any_cut_gives_the_same_frames(frames, cuts):
    data = b"".join(raw_frame(*f) for f in frames)
    reader = framing.FrameReader(131072)
    got = []
    off = 0
    for n in cuts + [len(data)]:
        got += reader.feed(data[off : off + n])
        off += n
        if off >= len(data):
            break
    assert got == [(t, c, p) for t, c, p in frames]
    assert reader.buffered == 0


@SETTINGS
@given(st.binary(max_size=600), st.integers(1, 64))
def test_frame_reader_arbitrary_bytes(data, step):
    reader = framing.FrameReader(4096)
    try:
        for i in range(0, len(data), step):
            for t, c, p in reader.feed(data[i : i + step]):
                assert 0 <= t <= 255 and 0 <= c <= 65535 and len(p) <= 4096
    except AMQPError:
        pass


# -- hand-written hot-path codecs against pamqp ----------------------------------------


@SETTINGS
@given(utf8_name, utf8_name, st.booleans(), st.booleans())
def test_parse_publish_matches_pamqp(ex, rk, mandatory, immediate):
    raw = (
        struct.pack(">HHH", 60, 40, 0)
        + names.shortstr(ex)
        + names.shortstr(rk)
        + bytes([(1 if mandatory else 0) | (2 if immediate else 0)])
    )
    e, k, bits = framing.parse_publish(raw)
    assert e == names.shortstr(ex) and k == names.shortstr(rk)
    assert bits == (1 if mandatory else 0) | (2 if immediate else 0)
    m = C.Basic.Publish()
    m.unmarshal(raw[4:])
    assert (m.exchange, m.routing_key, m.mandatory, m.immediate) == (ex, rk, mandatory, immediate)


@SETTINGS
@given(u64, st.booleans())
def test_parse_ack_matches_pamqp(tag, multiple):
    assert framing.parse_ack(payload(C.Basic.Ack(delivery_tag=tag, multiple=multiple))) == (tag, multiple)


@SETTINGS
@given(channel, ascii_name, u64, st.booleans(), ascii_name, ascii_name)
def test_deliver_frame_matches_pamqp(ch, ctag, tag, redelivered, ex, rk):
    mine = framing.deliver_frame(
        ch, names.shortstr(ctag), tag, redelivered, names.shortstr(ex), names.shortstr(rk)
    )
    ref = pframe.marshal(
        C.Basic.Deliver(consumer_tag=ctag, delivery_tag=tag, redelivered=redelivered, exchange=ex, routing_key=rk), ch
    )
    assert mine == ref


@SETTINGS
@given(channel, u64, st.booleans(), ascii_name, ascii_name, st.integers(0, 2**32 - 1))
def test_get_ok_frame_matches_pamqp(ch, tag, redelivered, ex, rk, count):
    mine = framing.get_ok_frame(ch, tag, redelivered, names.shortstr(ex), names.shortstr(rk), count)
    ref = pframe.marshal(
        C.Basic.GetOk(delivery_tag=tag, redelivered=redelivered, exchange=ex, routing_key=rk, message_count=count), ch
    )
    assert mine == ref


@SETTINGS
@given(channel, st.integers(0, 65535), st.text(max_size=80), ascii_name, ascii_name)
def test_return_frame_round_trips_through_pamqp(ch, code, text, ex, rk):
    assume(len(text.encode("utf-8", "surrogatepass")) <= 255 and not any(0xD800 <= ord(c) <= 0xDFFF for c in text))
    raw = framing.return_frame(ch, code, text, names.shortstr(ex), names.shortstr(rk))
    _n, got_ch, m = pframe.unmarshal(raw)
    assert got_ch == ch and isinstance(m, C.Basic.Return)
    assert (m.reply_code, m.reply_text, m.exchange, m.routing_key) == (code, text, ex, rk)


@SETTINGS
@given(channel, u64, st.booleans(), st.booleans(), st.booleans())
def test_confirm_frames_match_pamqp(ch, tag, multiple, nack, requeue):
    mine = framing.confirm_frame(ch, tag, multiple, nack, requeue)
    m = (
        C.Basic.Nack(delivery_tag=tag, multiple=multiple, requeue=requeue)
        if nack
        else C.Basic.Ack(delivery_tag=tag, multiple=multiple)
    )
    assert mine == pframe.marshal(m, ch)


@SETTINGS
@given(channel, st.binary(max_size=3000), st.integers(1, 1200), st.sampled_from([2, None]), st.booleans())
def test_content_frames_match_pamqp(ch, body, max_body, mode, with_type):
    props = C.Basic.Properties(delivery_mode=mode, content_type="text/plain" if with_type else None)
    header = pframe.marshal(ContentHeader(0, len(body), props), ch)[7:-1]
    mine = b"".join(bytes(p) for p in framing.content_frames(ch, header, body, max_body))
    ref = pframe.marshal(ContentHeader(0, len(body), props), ch)
    for off in range(0, len(body), max_body):
        ref += pframe.marshal(pbody.ContentBody(body[off : off + max_body]), ch)
    assert mine == ref


# -- the replies that carry names (protocol/methods.py) ----------------------------------

reply_text = st.text(max_size=300).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))


def decoded(raw: bytes):
    n, ch, m = pframe.unmarshal(raw)
    assert n == len(raw)
    return ch, m


@SETTINGS
@given(channel, utf8_name, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_queue_declare_ok_round_trips(ch, q, count, consumers):
    got_ch, m = decoded(methods.queue_declare_ok(ch, q, count, consumers))
    assert got_ch == ch and (m.queue, m.message_count, m.consumer_count) == (q, count, consumers)


@SETTINGS
@given(channel, utf8_name)
def test_consumer_tag_replies_round_trip(ch, tag):
    for raw, cls in (
        (methods.basic_consume_ok(ch, tag), C.Basic.ConsumeOk),
        (methods.basic_cancel_ok(ch, tag), C.Basic.CancelOk),
        (methods.basic_cancel(ch, tag), C.Basic.Cancel),
    ):
        got_ch, m = decoded(raw)
        assert got_ch == ch and isinstance(m, cls) and m.consumer_tag == tag


@SETTINGS
@given(channel, st.integers(0, 65535), reply_text, st.integers(0, 65535), st.integers(0, 65535))
def test_close_replies_round_trip(ch, code, text, cid, mid):
    got_ch, m = decoded(methods.channel_close(ch, code, text, cid, mid))
    assert got_ch == ch and (m.reply_code, m.class_id, m.method_id) == (code, cid, mid)
    assert m.reply_text == names.clip(text) and len(m.reply_text.encode()) <= 255
    _c0, m0 = decoded(methods.connection_close(code, text, cid, mid))
    assert (m0.reply_code, m0.reply_text) == (code, names.clip(text))


@SETTINGS
@given(st.text(max_size=300))
def test_shortstr_and_clip(text):
    assume(not any(0xD800 <= ord(c) <= 0xDFFF for c in text))
    raw = text.encode()
    if len(raw) <= 255:
        assert names.shortstr(text) == bytes([len(raw)]) + raw
        assert names.name_problem(text) is None
    else:
        with pytest.raises(ValueError):
            names.shortstr(text)
        assert names.name_problem(text) is not None
    clipped = names.clip(text)
    assert len(clipped.encode()) <= 255 and text.startswith(clipped)


# -- field tables and property lists (protocol/fields.py) --------------------------------

key = st.text(max_size=20).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
scalar = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.text(max_size=30).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
    st.floats(allow_nan=False),
    st.none(),
    st.decimals(min_value=-(10**6), max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
    st.datetimes(min_value=datetime.datetime(1971, 1, 1), max_value=datetime.datetime(2100, 1, 1)).map(
        lambda d: d.replace(microsecond=0, tzinfo=datetime.UTC)
    ),
)
values = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(key, inner, max_size=4),
                      max_leaves=12)
tables = st.dictionaries(key, values, max_size=6)


def same(a, b) -> bool:
    """Equal as AMQP carries them (a datetime as whole seconds, a Decimal by value)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, datetime.datetime):
        return isinstance(b, datetime.datetime) and int(a.timestamp()) == int(b.timestamp())
    if isinstance(a, decimal.Decimal):
        return decimal.Decimal(b) == a
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


@SETTINGS
@given(tables)
def test_encode_table_round_trips_through_pamqp(table):
    raw = fields.encode_table(table)
    n, back = pdecode.field_table(raw)
    assert n == len(raw)
    assert same(table, back), (table, back)
    fields.check_table(raw, 4, len(raw))  # what we write, we accept


@SETTINGS
@given(tables)
def test_table_entries_round_trip_on_pamqp_tables(table):
    try:
        raw = pencode.field_table(table)
    except (TypeError, ValueError, OverflowError, struct.error):
        assume(False)
        return
    fields.check_table(raw, 4, len(raw))
    entries = fields.table_entries(raw)
    assert sorted(k for k, _v in entries) == sorted(table)
    assert fields.encode_table_entries(entries) == raw


@SETTINGS
@given(
    st.builds(
        C.Basic.Properties,
        content_type=st.none() | ascii_name,
        headers=st.none() | tables,
        delivery_mode=st.none() | st.sampled_from([1, 2]),
        priority=st.none() | st.integers(0, 9),
        correlation_id=st.none() | ascii_name,
        expiration=st.none() | st.integers(0, 10**9).map(str),
        timestamp=st.none() | st.datetimes(min_value=datetime.datetime(1971, 1, 1)).map(
            lambda d: d.replace(microsecond=0, tzinfo=datetime.UTC)
        ),
        app_id=st.none() | ascii_name,
    ),
    st.integers(0, 2**40),
)
def test_property_lists_split_join_check_against_pamqp(props, size):
    try:
        header = pframe.marshal(ContentHeader(0, size, props), 1)[7:-1]
    except (TypeError, ValueError, OverflowError, struct.error):
        assume(False)
        return
    fields.check_properties(header)
    prefix, raw = fields.split_properties(header)
    assert fields.join_properties(prefix, raw) == header
    assert framing.header_body_size(header) == (60, size)
    assert framing.delivery_mode(header) == (props.delivery_mode or 0)
    assert framing.priority(header) == (props.priority or 0)
    assert framing.expiration(header) == props.expiration
    back = framing.decode_properties(header)
    assert back.delivery_mode == props.delivery_mode and (back.app_id or None) == (props.app_id or None)


@SETTINGS
@given(st.binary(min_size=14, max_size=200))
def test_header_parsers_raise_only_protocol_errors(header):
    try:
        fields.check_properties(header)
        checked = True
    except AMQPError:
        checked = False
    only_protocol_errors(fields.split_properties, header)
    only_protocol_errors(framing.delivery_mode, header)
    only_protocol_errors(framing.decode_properties, header)
    only_protocol_errors(framing.header_body_size, header)
    if checked:
        # a header that passes the check can be split, and its headers table walked
        _prefix, props = fields.split_properties(header)
        if "headers" in props:
            fields.table_entries(props["headers"])


@SETTINGS
@given(st.binary(max_size=200))
def test_table_check_raises_only_protocol_errors(raw):
    only_protocol_errors(fields.check_table, raw, 0, len(raw))
    # a table that passes the check is one pamqp can walk too (types and lengths)
    body = struct.pack(">I", len(raw)) + raw
    try:
        fields.check_table(body, 4, len(body))
    except AMQPError:
        return
    entries = fields.table_entries(body)
    assert fields.encode_table_entries(entries) == body


@SETTINGS
@given(st.binary(max_size=120))
def test_method_parsers_raise_only_protocol_errors(raw):
    only_protocol_errors(framing.decode_method, raw)
    only_protocol_errors(framing.parse_publish, raw)
    only_protocol_errors(framing.parse_ack, raw)
    only_protocol_errors(framing.method_index, raw)


@SETTINGS
@given(st.sampled_from(sorted(C.INDEX_MAPPING)), st.binary(max_size=80))
def test_known_methods_with_arbitrary_arguments(idx, args):
    only_protocol_errors(framing.decode_method, struct.pack(">I", idx) + args)
