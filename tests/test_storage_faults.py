"""A damaged segment and a failing disk, driven on the storage layer directly.

- A corrupt length field (or any damaged record) in the middle of a segment no
  longer cuts the rest of it: recovery resynchronises on the next record with a
  valid CRC.
- An fsync that fails is never retried as if it succeeded: the publishes it
  covered, and those written since, are nacked; the segment is rolled and never
  synced again; later publishes go to a new segment and are confirmed.
"""

from __future__ import annotations

import asyncio
import errno

from hypothesis import given, settings
from hypothesis import strategies as st

from storage.crashfs import CrashFS
from storage.records import encode_message, scan_segment
from storage.store import LogStore

DATA = "/data"


def record(i: int, size: int = 60) -> bytes:
    body = f"m{i:04d}".encode() + bytes((i * 7 + j) % 251 for j in range(size))
    return b"".join(encode_message(True, b"\x00", b"\x01k", b"hdr", body))


def segment(n: int, size: int = 60) -> tuple[bytes, list[int]]:
    offs, parts, off = [], [], 0
    for i in range(n):
        r = record(i, size)
        offs.append(off)
        parts.append(r)
        off += len(r)
    return b"".join(parts), offs


def live_offsets(data: bytes) -> tuple[list[int], list[str], int]:
    end, live, bad, _nbytes = scan_segment(data, 1, set())
    return [r & 0xFFFFFFFF for r in live], bad, end


def test_corrupt_length_field_resyncs_on_the_next_record():
    data, offs = segment(6)
    damaged = bytearray(data)
    damaged[offs[2] : offs[2] + 4] = (0x7FFFFFF0).to_bytes(4, "big")  # past the end of the file
    got, bad, end = live_offsets(bytes(damaged))
    assert got == [offs[i] for i in (0, 1, 3, 4, 5)]
    assert end == len(data), "the rest of the segment is kept, not cut"
    assert len(bad) == 1 and f"byte {offs[2]}" in bad[0]


def test_length_pointing_into_the_next_record_resyncs():
    data, offs = segment(6)
    damaged = bytearray(data)
    damaged[offs[1] : offs[1] + 4] = (offs[3] - offs[1] - 8 + 20).to_bytes(4, "big")  # ends inside record 3
    got, bad, end = live_offsets(bytes(damaged))
    assert got == [offs[i] for i in (0, 2, 3, 4, 5)]
    assert end == len(data) and len(bad) == 1


def test_two_damaged_records_in_a_row_and_a_torn_tail():
    data, offs = segment(6)
    damaged = bytearray(data)
    damaged[offs[1]] ^= 0xFF
    damaged[offs[2] + 30] ^= 0x01
    damaged = damaged[: offs[5] + 20]  # the last record is torn
    got, bad, end = live_offsets(bytes(damaged))
    assert got == [offs[i] for i in (0, 3, 4)]
    assert end == offs[5], "a tail with no valid record after it is still cut"


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_damage_never_yields_a_corrupt_record(d):
    data, offs = segment(8, 40)
    ends = offs[1:] + [len(data)]
    damaged = bytearray(data)
    hits = d.draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=6))
    for h in hits:
        damaged[h] ^= d.draw(st.integers(1, 255))
    got, _bad, _end = live_offsets(bytes(damaged))
    intact = [o for o, e in zip(offs, ends) if not any(o <= h < e for h in hits)]
    # every record recovered is one of the originals, whole; every untouched record is recovered
    assert set(got) <= set(offs)
    for o in got:
        i = offs.index(o)
        assert bytes(damaged[o : ends[i]]) == data[o : ends[i]]
    assert set(intact) <= set(got)


# -- a failing fsync ----------------------------------------------------------------


class Waiter:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def synced(self, e: int) -> bool:
        if e >= self.epoch and not self.done.done():
            self.done.set_result(True)
        return not self.done.done()

    def sync_failed(self, e: int, exc: Exception) -> bool:
        if e >= self.epoch and not self.done.done():
            self.done.set_result(False)
        return not self.done.done()


async def publish(store: LogStore, qlog, body: bytes) -> tuple[int, bool]:
    ref = qlog.append(True, b"\x00", b"\x01q", b"", body)
    w = Waiter(store.want_sync())
    store.sync_waiters.add(w)
    return ref, await w.done


async def test_failed_fsync_nacks_rolls_the_segment_and_never_syncs_it_again():
    fs = CrashFS()
    fs.makedirs(DATA)
    for d in ("/", DATA):
        fs.fsync_dir(d)
    store = LogStore(DATA, fs)
    store.open()
    store.attach(asyncio.get_running_loop())
    qlog = store.queue_log("/", "q")
    synced_paths: list[str] = []
    failing = {"on": False}

    def fail(_n: int, what: str, path: str) -> OSError | None:
        if what == "fsync":
            synced_paths.append(path)
            if failing["on"] and path.endswith(".seg"):
                failing["on"] = False
                return OSError(errno.EIO, "Input/output error", path)
        return None

    fs.fail = fail
    try:
        ref1, ok1 = await publish(store, qlog, b"one")
        assert ok1
        first = qlog.wseg.path
        failing["on"] = True
        ref2, ok2 = await publish(store, qlog, b"two")
        assert not ok2, "a publish whose fsync failed is nacked"
        assert store.write_errors == 1
        synced_paths.clear()
        ref3, ok3 = await publish(store, qlog, b"three")
        assert ok3
        assert ref3 >> 32 == (ref2 >> 32) + 1, "the next record goes to a new segment"
        assert first not in synced_paths, "the segment whose fsync failed is never synced again"
        # what a power loss now leaves: the confirmed records of the new segment, and
        # the first one; the nacked one may or may not be there
        image = fs.crash()
    finally:
        fs.fail = None
        store.close()
    s2 = LogStore(DATA, image)
    s2.open()
    try:
        q2 = s2.queue_log("/", "q")
        refs, _u, _p = q2.recover()
        bodies = [q2.read(r)[4] for r in refs]
    finally:
        s2.close()
    assert bodies[0] == b"one" and bodies[-1] == b"three"
    assert ref1 in refs and ref3 in refs

