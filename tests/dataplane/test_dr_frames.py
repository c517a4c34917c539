"""SYN frames of the dr dataplane: parsing, malformed input, re-addressing with a full checksum."""

from __future__ import annotations

import struct
from ipaddress import ip_address

from hypothesis import given
from hypothesis import strategies as st

from gridlb.dataplane.dr_frames import (
    MIDFLOW_FILTER,
    SYN_FILTER,
    _sum16,
    filter_bytes,
    parse_syn,
    parse_tcp,
    readdress,
)

DMAC, SMAC = bytes.fromhex("020000000002"), bytes.fromhex("020000000050")


def syn4(flags: int = 0x02) -> bytes:
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0x4000, 64, 6, 0, bytes([10, 0, 0, 50]), bytes([10, 0, 0, 100])
    )
    tcp = struct.pack("!HHIIBBHHH", 40000, 2811, 1, 0, 0x50, flags, 65535, 0, 0)
    return DMAC + SMAC + b"\x08\x00" + ip + tcp + b"\0" * 6  # Ethernet padding


def syn6() -> bytes:
    ip = struct.pack(
        "!IHBB16s16s", 0x60000000, 20, 6, 64, ip_address("fd00::50").packed, ip_address("fd00::100").packed
    )
    tcp = struct.pack("!HHIIBBHHH", 40001, 2811, 1, 0, 0x50, 0x02, 65535, 0, 0)
    return DMAC + SMAC + b"\x86\xdd" + ip + tcp


def test_parse_ipv4_and_ipv6_syns() -> None:
    k4 = parse_syn(syn4())
    assert k4 is not None and (str(k4.client), k4.client_port, str(k4.vaddr), k4.vport) == (
        "10.0.0.50",
        40000,
        "10.0.0.100",
        2811,
    )
    k6 = parse_syn(syn6())
    assert k6 is not None and (str(k6.client), k6.client_port, str(k6.vaddr)) == (
        "fd00::50",
        40001,
        "fd00::100",
    )


def test_syn_ack_and_plain_ack_are_not_new_connections() -> None:
    assert parse_syn(syn4(0x12)) is None
    assert parse_syn(syn4(0x10)) is None


@given(st.binary(max_size=120))
def test_garbage_never_raises(data: bytes) -> None:
    parse_syn(data)
    parse_syn(syn4()[: len(data) % 60])


def test_readdress_trims_padding_rewrites_macs_and_computes_the_checksum() -> None:
    out = readdress(syn4(), b"\x02" * 6, b"\x03" * 6, fix_checksum=True)
    assert out[:12] == b"\x02" * 6 + b"\x03" * 6 and len(out) == 14 + 40
    ip = out[14:]
    pseudo = ip[12:20] + struct.pack("!BBH", 0, 6, 20)
    assert _sum16(pseudo + ip[20:]) == 0xFFFF
    out6 = readdress(syn6(), b"\x02" * 6, b"\x03" * 6, fix_checksum=True)
    ip6 = out6[14:]
    assert _sum16(ip6[8:40] + struct.pack("!IxxxB", 20, 6) + ip6[40:]) == 0xFFFF


def test_the_bpf_program_is_18_instructions_of_8_bytes_with_jumps_inside() -> None:
    assert len(filter_bytes()) == 8 * len(SYN_FILTER)
    for i, (code, jt, jf, _) in enumerate(SYN_FILTER):
        if code == 0x06:  # ret
            continue
        assert i + 1 + jt < len(SYN_FILTER) and i + 1 + jf < len(SYN_FILTER)


def run_bpf(program: tuple[tuple[int, int, int, int], ...], frame: bytes) -> int:
    """Run a classic BPF program (the opcodes the dr filters use) over `frame`; return what it accepts."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x28:
            a = struct.unpack_from("!H", frame, k)[0]
        elif code == 0x30:
            a = frame[k]
        elif code == 0x50:
            a = frame[x + k]
        elif code == 0xB1:
            x = 4 * (frame[k] & 0x0F)
        elif code == 0x54:
            a &= k
        elif code == 0x15:
            pc += jt if a == k else jf
        elif code == 0x45:
            pc += jt if a & k else jf
        elif code == 0x06:
            return k
        else:
            raise AssertionError(f"opcode {code:#x}")


def test_the_filters_pass_syns_to_one_socket_and_mid_flow_packets_to_the_other() -> None:
    ack6 = bytearray(syn6())
    ack6[54 + 13] = 0x10
    for frame, syn, midflow in (
        (syn4(), True, False),
        (syn4(0x12), False, False),
        (syn4(0x10), False, True),
        (syn4(0x18), False, True),
        (syn6(), True, False),
        (bytes(ack6), False, True),
    ):
        assert bool(run_bpf(SYN_FILTER, frame)) is syn
        assert bool(run_bpf(MIDFLOW_FILTER, frame)) is midflow
        got = parse_tcp(frame)
        assert got is not None and got[1] == frame[(34 if frame[12] == 8 else 54) + 13]
    assert len(filter_bytes(MIDFLOW_FILTER)) == 8 * len(MIDFLOW_FILTER)
