"""A real tap held open as libvirt holds it before QEMU starts (open /dev/net/tun, TUNSETIFF): the test reads from
its descriptor what QEMU would hand the guest, and writes to it what the guest would send."""

from __future__ import annotations

import fcntl
import os
import struct
import time

from .lab import sh

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000


class Tap:
    """A tap on a VN bridge, up, with libvirt's MAC (the guest's with first byte fe), its fd held by the test."""

    def __init__(self, name: str, bridge: str | None, guest_mac: str):
        self.name, self.guest_mac = name, guest_mac
        self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        fcntl.ioctl(self.fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        sh("ip", "link", "set", name, "address", "fe" + guest_mac[2:])
        sh("ip", "link", "set", name, *(["master", bridge] if bridge else []), "up")  # None: Open vSwitch's port

    def frames(self) -> list[bytes]:
        """Every frame waiting for the guest now (what QEMU would deliver), without waiting."""
        out = []
        while True:
            try:
                out.append(os.read(self.fd, 65536))
            except BlockingIOError:
                return out

    def collect(self, seconds: float) -> list[bytes]:
        """The frames that reach the guest within seconds."""
        found, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            found += self.frames()
            time.sleep(0.05)
        return found + self.frames()

    def send(self, frame: bytes) -> None:
        os.write(self.fd, frame)

    def close(self) -> None:
        """QEMU exits: the tap dies with the last descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def udp_port(frame: bytes) -> int | None:
    """The UDP destination port of an IPv4 frame (no options), None for anything else."""
    if frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    ihl = (frame[14] & 0x0F) * 4
    return int.from_bytes(frame[14 + ihl + 2:14 + ihl + 4], "big")


def is_arp_reply(frame: bytes, sender_ip: bytes) -> bool:
    return frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x02" and frame[28:32] == sender_ip
