"""A reader of NFLOG groups in another network namespace: the packets `-j NFLOG --nflog-group G` rules log there.

Pure Python over a netfilter netlink socket (NETLINK_NETFILTER, subsystem NFNL_SUBSYS_ULOG), no library and no
process: `LOG` writes nothing from a VM namespace, and tcpdump's nflog reader exits at start in the unprivileged
sandbox. With no reader bound to a group the kernel drops its packets at the first lookup, at next to no cost.

Namespace: a netlink socket belongs to the namespace it was created in, for its whole life. So a short-lived thread
enters the namespace (setns(2) through ctypes: Python 3.11 has no os.setns), creates the socket and ends; the
caller's thread never changes namespace. setns on the calling thread would need a second setns to return, and if
that one failed the thread (and every process it starts later) would stay in the VM namespace: the thread makes
that state impossible instead of unlikely. Interface names are resolved through the same socket (SIOCGIFNAME acts
in the socket's namespace), when each packet is read, so names created after the reader opened are found too.

Losses: the kernel numbers each group's packets (NFULNL_CFG_F_SEQ); when the socket's buffer overflows, recv fails
with ENOBUFS and the next packets arrive after a gap. The reader counts both (`overruns`, `lost`) and marks the
first packet after a gap (`lost_before`), instead of failing.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fcntl
import os
import select
import socket
import struct
import threading
import time
from dataclasses import replace
from typing import Callable, Iterator, TypeVar

from . import nflog_wire as wire
from .nflog_wire import LoggedPacket

__all__ = ["LoggedPacket", "NflogError", "Reader", "open_reader"]

NETLINK_NETFILTER = 12
CLONE_NEWNET = 0x40000000
SIOCGIFNAME = 0x8910
_IFREQ = struct.Struct("16si20x")  # struct ifreq: name, ifindex (in the union), padding to 40 bytes
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
# enum nfulnl_attr_config, commands and modes
CFG_CMD, CFG_MODE, CFG_NLBUFSIZ, CFG_TIMEOUT, CFG_QTHRESH, CFG_FLAGS = range(1, 7)
CMD_BIND = 1
COPY_PACKET = 2
F_SEQ = 0x0001

#: Bytes of each packet copied: IPv4 with options or IPv6 with a few extension headers, then the transport header.
HEADERS_ONLY = 128
RECEIVE_BUFFER = 1 << 20  # SO_RCVBUF asked for (the kernel caps it at net.core.rmem_max, doubled)
_DATAGRAM = 256 * 1024  # larger than any NFLOG datagram: nlbufsiz <= 128 KiB, one packet <= 64 KiB + attributes
_ACK_WAIT = 5.0

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


class NflogError(Exception):
    """The reader could not be opened, or the kernel answered with an error."""


def in_netns(path: str, fn: Callable[[], T]) -> tuple[T, int]:
    """Run fn in a thread that entered the network namespace at path; its result and the namespace's inode.

    Safe to repeat. setns refuses anything but a network namespace, whatever path names (EINVAL)."""
    out: dict = {}

    def target() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                out["inode"] = os.fstat(fd).st_ino
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise NflogError(f"setns({path}, CLONE_NEWNET): {os.strerror(err)}")
            finally:
                os.close(fd)
            out["value"] = fn()
        except BaseException as e:  # handed to the caller's thread, raised there
            out["error"] = e

    thread = threading.Thread(target=target, name=f"netfw-nflog-setns {path}", daemon=True)
    thread.start()
    thread.join()
    if "error" in out:
        error = out["error"]
        raise error if isinstance(error, NflogError) else NflogError(f"{path}: {error}") from error
    return out["value"], out["inode"]


def _netlink_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def _attr(kind: int, data: bytes) -> bytes:
    length = wire.NLA.size + len(data)
    return wire.NLA.pack(length, kind) + data + b"\0" * (wire.align(length) - length)


def config_message(group: int, copy_range: int, queue_threshold: int, seq: int = 1) -> bytes:
    """One NFULNL_MSG_CONFIG that binds the group and sets its copy range, queue threshold and sequence numbers.

    One message: the kernel creates the instance and applies the rest in the same call (atomic)."""
    body = wire.NFGENMSG.pack(socket.AF_UNSPEC, 0, group) + b"".join((
        _attr(CFG_CMD, bytes([CMD_BIND])),
        _attr(CFG_MODE, struct.pack("!IBx", copy_range, COPY_PACKET)),
        _attr(CFG_QTHRESH, struct.pack("!I", queue_threshold)),
        _attr(CFG_FLAGS, struct.pack("!H", F_SEQ)),
    ))
    return wire.NLMSG.pack(wire.NLMSG.size + len(body), wire.MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def open_reader(netns_path: str, group: int, *, copy_range: int = HEADERS_ONLY, queue_threshold: int = 1) -> Reader:
    """Bind a reader to NFLOG group `group` in the network namespace at netns_path (a context manager).

    Not repeatable while open: a namespace has one reader per group, a second one gets NflogError. copy_range:
    bytes of each packet copied (the rule's --nflog-size may copy less). queue_threshold: packets the kernel
    batches into one datagram (a rule's --nflog-threshold may lower it); 1 sends each packet at once."""
    for name, value, low, high in (("group", group, 0, 0xFFFF), ("copy_range", copy_range, 1, 0xFFFF),
                                   ("queue_threshold", queue_threshold, 1, 0xFFFF)):
        if type(value) is not int or not low <= value <= high:
            raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")
    sock, inode = in_netns(netns_path, _netlink_socket)
    try:
        reader = Reader(sock, group, netns_path, inode)
        reader._request(config_message(group, copy_range, queue_threshold))
    except BaseException:
        sock.close()
        raise
    return reader


class Reader:
    """An open NFLOG reader: iterate `packets()`; `lost` and `overruns` count what the kernel could not deliver."""

    def __init__(self, sock: socket.socket, group: int, netns_path: str, netns_inode: int):
        self.sock, self.group, self.netns_path, self.netns_inode = sock, group, netns_path, netns_inode
        self.lost = 0  # packets known lost: gaps in the group's sequence numbers
        self.overruns = 0  # times the receive buffer overflowed (ENOBUFS)
        self.datagrams = 0  # datagrams that carried packets (a batch carries several)
        self.foreign = 0  # datagrams ignored because a process, not the kernel, sent them
        self.resolve: Callable[[int | None], str | None] = self.ifname  # ifindex -> name (replaceable in tests)
        self._next_seq = 0  # the kernel numbers a new group's packets from 0
        self._pending: collections.deque[LoggedPacket] = collections.deque()
        self._buffer = bytearray(_DATAGRAM)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Unbind (closing the socket destroys the group's instance). Safe to repeat."""
        self.sock.close()

    def namespace_present(self) -> bool:
        """Whether netns_path still names the namespace being read (a socket keeps a deleted namespace alive)."""
        try:
            return os.stat(self.netns_path).st_ino == self.netns_inode
        except FileNotFoundError:
            return False

    def packets(self, timeout: float | None = None) -> Iterator[LoggedPacket]:
        """Logged packets as they arrive; ends after `timeout` seconds without one (None: never). Safe to repeat."""
        while True:
            while self._pending:
                yield self._pending.popleft()
            if not select.select([self.sock], [], [], timeout)[0]:
                return
            self._receive()

    def ifname(self, index: int | None) -> str | None:
        """The name of interface `index` in the reader's namespace now (None if there is none)."""
        if not index:
            return None
        try:
            answer = fcntl.ioctl(self.sock.fileno(), SIOCGIFNAME, _IFREQ.pack(b"", index))
        except OSError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        return answer[:16].split(b"\0", 1)[0].decode()

    def _request(self, message: bytes) -> None:
        """Send a config message and wait for its acknowledgement; packets arriving meanwhile are kept."""
        (seq,) = struct.unpack_from("=I", message, 8)
        self.sock.send(message)
        deadline = time.monotonic() + _ACK_WAIT
        while (remaining := deadline - time.monotonic()) > 0:
            if select.select([self.sock], [], [], remaining)[0]:
                for reply in self._receive():
                    if reply.type == wire.NLMSG_ERROR and reply.seq == seq:
                        code = wire.error_code(reply)
                        if code:
                            raise NflogError(self._refusal(code))
                        return
        raise NflogError(f"NFLOG group {self.group} in {self.netns_path}: no answer to the bind within {_ACK_WAIT}s")

    def _refusal(self, code: int) -> str:
        why = os.strerror(code)
        if code in (errno.EPERM, errno.EBUSY):  # EPERM: the group's instance belongs to another socket
            why += " (another reader is bound to this group)"
        return f"cannot bind NFLOG group {self.group} in {self.netns_path}: {why}"

    def _receive(self) -> list[wire.Message]:
        """Read one datagram: its packets go to the queue; other messages (acknowledgements) are returned."""
        try:
            size, _, flags, (port, _groups) = self.sock.recvmsg_into([self._buffer])
        except OSError as e:
            if e.errno == errno.ENOBUFS:  # the kernel dropped datagrams for us; the sequence gap says how many
                self.overruns += 1
                return []
            raise
        if flags & socket.MSG_TRUNC:
            raise NflogError(f"an NFLOG datagram was larger than {len(self._buffer)} bytes")
        if port != 0:  # only the kernel speaks for NFLOG; a process in the namespace could write to our port
            self.foreign += 1
            return []
        return self.feed(memoryview(self._buffer)[:size], time.time())

    def feed(self, datagram: bytes, received: float) -> list[wire.Message]:
        """Take one datagram from the kernel: its packets are queued for packets(), other messages returned."""
        others, carried = [], False
        for message in wire.messages(datagram):
            if message.type == wire.MSG_PACKET:
                self._queue(wire.parse_packet(message, received))
                carried = True
            elif message.type not in (wire.NLMSG_DONE, wire.NLMSG_NOOP):
                others.append(message)
        self.datagrams += carried
        return others

    def _queue(self, packet: LoggedPacket) -> None:
        if packet.group != self.group:
            return
        changes: dict = {}
        if packet.seq is not None:
            gap = (packet.seq - self._next_seq) & 0xFFFFFFFF
            self._next_seq = (packet.seq + 1) & 0xFFFFFFFF
            if gap:
                self.lost += gap
                changes["lost_before"] = gap
        for field in ("indev", "outdev", "physindev", "physoutdev"):
            changes[f"{field}_name"] = self.resolve(getattr(packet, field))
        self._pending.append(replace(packet, **changes))
