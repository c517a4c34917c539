"""The MODE E codec: headers, EOD/EOF descriptors, split-anywhere decoding, block plans, EOD counting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridlb.gridftp import modee as m


def test_header_layout_matches_gfd20() -> None:
    assert m.HEADER_LEN == 17
    assert m.encode_header(0, 262144, 524288) == b"\x00" + (262144).to_bytes(8, "big") + (524288).to_bytes(
        8, "big"
    )
    assert m.eod_block() == b"\x08" + bytes(16)
    # The Globus capture: EOF|EOD, count 0, offset = EOD count expected (2).
    assert m.eof_block(2) == b"\x48" + bytes(8) + (2).to_bytes(8, "big")
    assert m.eof_block(1, close=True)[0] == 0x4C


def decode_all(chunks: list[bytes]) -> tuple[dict[int, bytes], list[m.Event]]:
    dec = m.BlockDecoder()
    data: dict[int, bytes] = {}
    other = []
    for c in chunks:
        for ev in dec.feed(memoryview(c)):
            if ev.kind is m.EventKind.DATA:
                assert ev.data is not None
                data[ev.offset] = bytes(ev.data)
            else:
                other.append(ev)
    return data, other


def stream_of(blocks: list[tuple[int, bytes]], *, eof: int | None) -> bytes:
    out = b"".join(m.encode_header(0, len(b), off) + b for off, b in blocks)
    return out + (m.eof_block(eof) if eof is not None else m.eod_block())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=0, max_size=300), max_size=6),
    st.lists(st.integers(1, 50), min_size=1, max_size=30),
)
def test_decoder_is_independent_of_how_bytes_arrive(payloads: list[bytes], cuts: list[int]) -> None:
    blocks, off = [], 0
    for b in payloads:
        blocks.append((off, b))
        off += len(b)
    wire = stream_of(blocks, eof=3)
    chunks, pos, i = [], 0, 0
    while pos < len(wire):
        n = cuts[i % len(cuts)]
        chunks.append(wire[pos : pos + n])
        pos += n
        i += 1
    data, other = decode_all(chunks)
    joined = b"".join(data[k] for k in sorted(data))
    assert joined == b"".join(payloads)
    assert [e.kind for e in other] == [m.EventKind.EOF, m.EventKind.EOD]
    assert other[0].count == 3


def test_eod_flag_on_a_data_block_comes_after_its_payload() -> None:
    dec = m.BlockDecoder()
    evs = dec.feed(memoryview(m.encode_header(m.EOD, 3, 10) + b"abc"))
    assert [e.kind for e in evs] == [m.EventKind.DATA, m.EventKind.EOD]
    assert evs[0].offset == 10 and dec.eod_seen


@pytest.mark.parametrize(
    "wire",
    [
        m.eod_block() + m.encode_header(0, 1, 0) + b"x",  # data after EOD
        m.encode_header(m.EOF | m.EOD, 5, 1) + b"xxxxx",  # EOF with payload
        m.encode_header(m.RESTART, 0, 0),  # restart markers in the data stream are not used
    ],
)
def test_decoder_rejects_protocol_violations(wire: bytes) -> None:
    with pytest.raises(m.ModeEError):
        m.BlockDecoder().feed(memoryview(wire))


def test_block_plan() -> None:
    assert list(m.plan_blocks([(0, 10)], 4)) == [(0, 4), (4, 4), (8, 2)]
    assert list(m.plan_blocks([(0, 0)], 4)) == []
    assert list(m.plan_blocks([(2, 5), (10, 11)], 100)) == [(2, 3), (10, 1)]
    with pytest.raises(ValueError):
        list(m.plan_blocks([(0, 1)], 0))


def done(t: m.ReceiveTracker) -> bool:
    """The tracker's verdict read again: each EOD or EOF moves it."""
    return t.done


def test_receive_tracker_counts_eods_until_the_announced_total() -> None:
    t = m.ReceiveTracker()
    t.on_eod()
    assert not done(t)  # an EOD without the EOF is not the end: another connection may still come
    t.on_eof(3)
    t.on_eod()
    assert not done(t)
    t.on_eod()
    assert done(t)
    with pytest.raises(m.ModeEError):
        t.on_eof(3)
    with pytest.raises(m.ModeEError):
        m.ReceiveTracker().on_eof(0)
