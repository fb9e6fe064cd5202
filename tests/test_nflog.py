"""netfw.observe.nflog_wire and the Reader's bookkeeping on datagrams captured from the real kernel.

tests/data/nflog/captures.json holds raw NFLOG datagrams with the fields expected from the traffic that caused
them (scripts/nflog_capture.py, see tests/data/nflog/SOURCES.md); nothing here needs the kernel.
"""

from __future__ import annotations

import errno
import json
import socket
import struct
from pathlib import Path

import pytest

from netfw.observe import nflog_wire as wire
from netfw.observe.nflog import NflogError, Reader, config_message, open_reader

DATA = json.loads((Path(__file__).parent / "data" / "nflog" / "captures.json").read_text())
CAPTURES = {c["name"]: c for c in DATA["captures"]}
RECEIVED = 1.5e9  # a receive time no kernel timestamp of the captures can equal


def reader_for(capture: dict | None = None) -> Reader:
    """A Reader without a socket: fed by hand, names from the capture's namespace."""
    reader = Reader(None, 7, "/run/netns/fw", 0)
    names = {int(k): v for k, v in (capture or {}).get("ifnames", {}).items()}
    reader.resolve = names.get
    return reader


def datagrams(name: str) -> list[bytes]:
    return [bytes.fromhex(d) for d in CAPTURES[name]["datagrams"]]


def fed(name: str, only: list[int] | None = None) -> tuple[Reader, list]:
    reader = reader_for(CAPTURES[name])
    for n, datagram in enumerate(datagrams(name)):
        if only is None or n in only:
            reader.feed(datagram, RECEIVED)
    return reader, list(reader._pending)


def payload_of(name: str, n: int = 0) -> tuple[str, bytes]:
    (message,) = [m for m in wire.messages(datagrams(name)[n]) if m.type == wire.MSG_PACKET]
    family = wire.NFGENMSG.unpack_from(message.body)[0]
    return {2: "ipv4", 10: "ipv6"}[family], wire.attributes(message.body, 4)[wire.PAYLOAD]


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_captured_packets_carry_what_was_sent(name):
    capture = CAPTURES[name]
    reader, packets = fed(name)
    assert len(packets) == len(capture["expected"])
    names = {int(k): v for k, v in capture["ifnames"].items()}
    for packet, expected in zip(packets, capture["expected"]):
        assert {k: getattr(packet, k) for k in expected} == expected
        for field in ("indev", "outdev", "physindev", "physoutdev"):
            assert getattr(packet, f"{field}_name") == names.get(getattr(packet, field))
        assert (packet.time == RECEIVED) is not packet.kernel_time
        assert packet.lost_before == 0
    assert (reader.lost, reader.datagrams) == (0, len(capture["datagrams"]))


def test_kernel_timestamps_are_the_capture_time():
    _, (packet,) = fed("bridged_udp4")
    assert packet.kernel_time and 1.7e9 < packet.time < 2.0e9


def test_a_batch_is_four_packet_messages_and_done_in_one_datagram():
    (datagram,) = datagrams("batch_of_4")
    kinds = [m.type for m in wire.messages(datagram)]
    assert kinds == [wire.MSG_PACKET] * 4 + [wire.NLMSG_DONE]
    _, packets = fed("batch_of_4")
    assert [p.seq for p in packets] == [0, 1, 2, 3]


def test_a_gap_in_the_sequence_is_counted_as_lost():
    reader, packets = fed("ipv4_fragments", only=[0, 2])  # the datagram of packet 1 "lost"
    assert [p.seq for p in packets] == [0, 2]
    assert [p.lost_before for p in packets] == [0, 1]
    assert reader.lost == 1


def with_seq(datagram: bytes, seq: int) -> bytes:
    """The datagram with its NFULA_SEQ attribute set to seq."""
    marker = struct.pack("=HH", 8, wire.SEQ)
    assert datagram.count(marker) == 1
    at = datagram.index(marker) + 4
    return datagram[:at] + struct.pack("!I", seq) + datagram[at + 4:]


def test_sequence_numbers_wrap_without_a_loss():
    reader = reader_for()
    (datagram,) = datagrams("bridged_udp4")
    reader._next_seq = 0xFFFFFFFF
    reader.feed(with_seq(datagram, 0xFFFFFFFF), RECEIVED)
    reader.feed(with_seq(datagram, 0), RECEIVED)
    reader.feed(with_seq(datagram, 3), RECEIVED)
    assert [p.lost_before for p in reader._pending] == [0, 0, 2] and reader.lost == 2


def test_packets_of_another_group_are_not_queued():
    reader = Reader(None, 8, "/run/netns/fw", 0)
    reader.resolve = lambda index: None
    reader.feed(datagrams("bridged_udp4")[0], RECEIVED)
    assert not reader._pending


# --- framing from the kernel: wrong framing is an error, never a guess --------------------------------------


def test_a_cut_datagram_is_a_wire_error():
    (datagram,) = datagrams("batch_of_4")
    for size in (1, 15, 17, 100, len(datagram) - 1):
        with pytest.raises(wire.WireError):
            list(wire.messages(datagram[:size]))


def test_an_attribute_longer_than_its_message_is_a_wire_error():
    (datagram,) = datagrams("bridged_udp4")
    (message,) = wire.messages(datagram)
    body = bytearray(message.body)
    struct.pack_into("=H", body, 4, 0xFFF0)  # the first attribute (NFULA_PACKET_HDR) claims 65520 bytes
    with pytest.raises(wire.WireError):
        wire.parse_packet(wire.Message(message.type, 0, 0, 0, bytes(body)), RECEIVED)
    struct.pack_into("=H", body, 4, 2)  # shorter than an attribute header
    with pytest.raises(wire.WireError):
        wire.parse_packet(wire.Message(message.type, 0, 0, 0, bytes(body)), RECEIVED)


def test_a_packet_message_without_its_header_or_with_bad_sizes_is_a_wire_error():
    (message,) = wire.messages(datagrams("bridged_udp4")[0])
    attrs = wire.attributes(message.body, 4)

    def build(values: dict) -> wire.Message:
        body = message.body[:4] + b"".join(
            struct.pack("=HH", 4 + len(v), k) + v + b"\0" * (wire.align(4 + len(v)) - 4 - len(v))
            for k, v in values.items())
        return wire.Message(wire.MSG_PACKET, 0, 0, 0, body)

    assert wire.parse_packet(build(attrs), RECEIVED).sport == 40001  # the rebuild itself is faithful
    for broken in ({k: v for k, v in attrs.items() if k != wire.PACKET_HDR},
                   {**attrs, wire.INDEV: b"\0\0\2"}, {**attrs, wire.TIMESTAMP: b"\0" * 8}):
        with pytest.raises(wire.WireError):
            wire.parse_packet(build(broken), RECEIVED)
    with pytest.raises(wire.WireError):
        wire.parse_packet(wire.Message(wire.MSG_CONFIG, 0, 0, 0, message.body), RECEIVED)


def test_error_code_of_an_acknowledgement_and_a_refusal():
    assert wire.error_code(wire.Message(wire.NLMSG_ERROR, 0, 1, 0, struct.pack("=i", 0) + bytes(16))) == 0
    assert wire.error_code(wire.Message(wire.NLMSG_ERROR, 0, 1, 0, struct.pack("=i", -1) + bytes(16))) == 1
    with pytest.raises(wire.WireError):
        wire.error_code(wire.Message(wire.NLMSG_ERROR, 0, 1, 0, b"\0\0"))


# --- the logged packet is hostile: fewer fields, never an exception -----------------------------------------

PAYLOADS = ["bridged_udp4", "bridged_tcp4_syn", "bridged_icmp4_echo", "bridged_udp6", "bridged_tcp6_syn",
            "bridged_icmp6_echo", "ipv6_hop_by_hop", "ipv6_fragments"]


@pytest.mark.parametrize("name", PAYLOADS)
def test_every_truncation_gives_a_subset_of_the_whole_packets_fields(name):
    l3, payload = payload_of(name)
    whole = wire.headers(l3, payload)
    for size in range(len(payload) + 1):
        part = wire.headers(l3, payload[:size])
        known = {k: v for k, v in part.items() if v is not None and k != "fragment"}
        assert known == {k: whole[k] for k in known}, size
    if name != "ipv6_hop_by_hop" and name != "ipv6_fragments":  # the fixed header names the transport protocol
        assert wire.headers(l3, payload[:20 if l3 == "ipv4" else 40])["protocol"] == whole["protocol"]


def test_ipv4_header_lengths_that_lie():
    _, payload = payload_of("bridged_udp4")
    for ihl in range(0, 5):  # shorter than the fixed header: no transport header is trusted
        out = wire.headers("ipv4", bytes([0x40 | ihl]) + payload[1:])
        assert out["src"] == "10.9.0.1" and out["protocol"] == "udp" and out["sport"] is None
    out = wire.headers("ipv4", bytes([0x4F]) + payload[1:])  # 60-byte header in a 38-byte packet
    assert out["protocol"] == "udp" and out["sport"] is None
    options = bytes([0x46]) + payload[1:20] + b"\x01\x01\x01\x00" + payload[20:]  # 4 bytes of options
    assert wire.headers("ipv4", options)["sport"] == 40001


def test_a_version_that_does_not_match_the_family_gives_nothing():
    _, v4 = payload_of("bridged_udp4")
    _, v6 = payload_of("bridged_udp6")
    for l3, payload in (("ipv6", v4), ("ipv4", v6), (None, v4), ("ipv4", b""), ("ipv6", b"")):
        assert wire.headers(l3, payload) == wire._EMPTY


def test_ipv6_extension_chains_that_lie_end_without_ports():
    _, payload = payload_of("ipv6_hop_by_hop")
    head = bytearray(payload)
    head[41] = 255  # the hop-by-hop header claims 2048 bytes: its next header is read, the ports are not
    out = wire.headers("ipv6", bytes(head))
    assert (out["src"], out["protocol"], out["sport"]) == ("fd00::1", "udp", None)
    assert wire.headers("ipv6", payload[:47])["protocol"] is None  # the hop-by-hop header itself is cut
    chain = bytearray(payload[:40])
    chain[6] = 0  # a thousand hop-by-hop headers, each pointing to the next: bounded by the bytes
    chain += bytes([0, 0, 1, 4, 0, 0, 0, 0]) * 1000
    assert wire.headers("ipv6", bytes(chain))["protocol"] is None


def test_fragments_keep_their_protocol_and_lose_their_ports():
    _, first = payload_of("ipv6_fragments", 0)
    _, later = payload_of("ipv6_fragments", 1)
    assert wire.headers("ipv6", first)["sport"] == 40007
    out = wire.headers("ipv6", later)
    assert (out["fragment"], out["protocol"], out["sport"]) == (True, "udp", None)


def test_unknown_protocols_are_shown_by_number():
    _, payload = payload_of("bridged_udp4")
    odd = payload[:9] + bytes([253]) + payload[10:]
    out = wire.headers("ipv4", odd)
    assert (out["protocol"], out["sport"], out["icmp_type"]) == ("253", None, None)


# --- the bytes netfw sends and the socket cases the kernel rarely produces ----------------------------------


def test_config_message_binds_with_copy_range_threshold_and_sequence_numbers():
    message = config_message(7, 128, 1, seq=9)
    expected = (
        struct.pack("=IHHII", 56, 0x0401, 0x0005, 9, 0)  # NFULNL_MSG_CONFIG, NLM_F_REQUEST|NLM_F_ACK
        + bytes([0, 0]) + struct.pack("!H", 7)  # AF_UNSPEC, NFNETLINK_V0, group 7
        + struct.pack("=HH", 5, 1) + b"\x01\0\0\0"  # NFULA_CFG_CMD: NFULNL_CFG_CMD_BIND
        + struct.pack("=HH", 10, 2) + struct.pack("!IBx", 128, 2) + b"\0\0"  # NFULA_CFG_MODE: copy packet, 128
        + struct.pack("=HH", 8, 5) + struct.pack("!I", 1)  # NFULA_CFG_QTHRESH 1
        + struct.pack("=HH", 6, 6) + struct.pack("!H", 1) + b"\0\0"  # NFULA_CFG_FLAGS: NFULNL_CFG_F_SEQ
    )
    assert message == expected


@pytest.mark.parametrize("kwargs", [dict(group=-1), dict(group=65536), dict(group="7"), dict(group=True),
                                    dict(group=7, copy_range=0), dict(group=7, queue_threshold=0)])
def test_bad_arguments_are_refused_before_anything_is_opened(kwargs):
    with pytest.raises(ValueError):
        open_reader("/nonexistent", **kwargs)


class FakeSocket:
    """Stands in for the netlink socket: recvmsg_into answers from a list (an OSError is raised)."""

    def __init__(self, *answers):
        self.answers = list(answers)

    def recvmsg_into(self, buffers):
        answer = self.answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        data, flags, port = answer
        buffers[0][:len(data)] = data
        return len(data), [], flags, (port, 0)


def test_overrun_is_counted_and_reading_goes_on():
    reader = reader_for(CAPTURES["bridged_udp4"])
    (datagram,) = datagrams("bridged_udp4")
    reader.sock = FakeSocket(OSError(errno.ENOBUFS, "No buffer space available"), (datagram, 0, 0))
    assert reader._receive() == [] and reader.overruns == 1
    reader._receive()
    assert [p.sport for p in reader._pending] == [40001]


def test_a_datagram_not_from_the_kernel_is_ignored_and_a_truncated_one_is_an_error():
    (datagram,) = datagrams("bridged_udp4")
    reader = reader_for(CAPTURES["bridged_udp4"])
    reader.sock = FakeSocket((datagram, 0, 4242), (datagram, socket.MSG_TRUNC, 0))
    reader._receive()
    assert not reader._pending and reader.foreign == 1
    with pytest.raises(NflogError, match="larger than"):
        reader._receive()
