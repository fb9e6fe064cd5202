"""Real traffic probes between the guests of a lab (run inside the sandbox only).

A Receiver is a long-lived Python process in a guest namespace: TCP listeners (dual-stack, echoing what they get),
UDP receivers, raw sockets for ICMP, ICMPv6, ESP and AH, and an AF_PACKET socket for ARP. It prints one JSON line
per arrival; every probe carries a unique tag (`NFP-<hex>`) in its payload, so an arrival is matched exactly.

send() runs a batch of probes concurrently in the source guest (one process): a TCP probe counts as passed when the
connection opens and echoes its tag back (SYN in, SYN-ACK out), any other probe when its tag reaches the receiver
of the destination guest. A dropped probe costs one timeout for the whole batch, not one per probe.

Packets are built by hand (struct; whole Ethernet frames in frames.py); scapy is not needed. Every address used must be inside the lab.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

PY = sys.executable
TCP_TIMEOUT = 1.0  # a TCP probe expected to be dropped: the connect times out after this
SETTLE = 0.8  # a datagram expected to be dropped: nothing arrived this long after it was sent
PATIENCE = 3.0  # a probe expected to pass may take this long on a loaded machine (it costs nothing when it passes)

_counter = itertools.count(1)
_run = os.urandom(3).hex()


def new_tag() -> str:
    return f"NFP-{_run}{next(_counter):05x}"


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", *argv]


def _py(ns: str, script: str, *args: str) -> list[str]:
    return in_ns(ns, PY, "-u", "-c", script, *args)


# --- the scripts run inside guest namespaces --------------------------------------------------------------------

RECEIVER = r"""
import json, re, socket, struct, sys, threading
cfg = json.loads(sys.argv[1])
lock = threading.Lock()
TAG = re.compile(rb"NFP-[0-9a-f]+")

def emit(**ev):
    with lock:
        sys.stdout.write(json.dumps(ev) + "\n")
        sys.stdout.flush()

def tag_of(data):
    m = TAG.search(data)
    return m.group().decode() if m else None

def conn_loop(c, port, src):
    emit(ev="tcp-accept", port=port, src=src)
    while True:
        try:
            data = c.recv(4096)
        except OSError:
            break
        if not data:
            break
        emit(ev="tcp", port=port, src=src, tag=tag_of(data))
        try:
            c.sendall(data)
        except OSError:
            break
    c.close()

def accept_loop(s, port):
    while True:
        c, addr = s.accept()
        threading.Thread(target=conn_loop, args=(c, port, addr[0]), daemon=True).start()

def udp_loop(s, port):
    while True:
        data, addr = s.recvfrom(65535)
        emit(ev="udp", port=port, src=addr[0], tag=tag_of(data))

def raw_loop(s, fam, proto):
    while True:
        data, addr = s.recvfrom(65535)
        payload = data[(data[0] & 15) * 4:] if fam == 4 else data  # IPv4 raw sockets see the IP header
        tag = tag_of(payload)
        if tag:
            emit(ev="raw", fam=fam, proto=proto, src=addr[0], tag=tag,
                 type=payload[0] if proto in (1, 58) else None)

def mac(b):
    return ":".join("%02x" % x for x in b)

def arp_loop(s):
    while True:
        frame, addr = s.recvfrom(2048)
        if addr[2] == socket.PACKET_OUTGOING or len(frame) < 42:
            continue
        op, sha, spa, tha, tpa = struct.unpack("!6xH6s4s6s4s", frame[14:42])
        emit(ev="arp", op=op, esrc=mac(frame[6:12]), sha=mac(sha), spa=socket.inet_ntoa(spa),
             tha=mac(tha), tpa=socket.inet_ntoa(tpa))

def start(target, *args):
    threading.Thread(target=target, args=args, daemon=True).start()

for port in cfg["tcp"]:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(128)
    start(accept_loop, s, port)
for port in cfg["udp"]:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    start(udp_loop, s, port)
for fam, proto in ((4, 1), (6, 58), (4, 50), (6, 50), (4, 51), (4, 253), (6, 253)):
    s = socket.socket(socket.AF_INET if fam == 4 else socket.AF_INET6, socket.SOCK_RAW, proto)
    start(raw_loop, s, fam, proto)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind((cfg["ifname"], 0x0806))
start(arp_loop, s)
emit(ev="ready")
sys.stdin.read()  # until the test closes our stdin
"""

SENDER = r"""
import json, socket, struct, sys, threading, time
probes = json.loads(sys.argv[1])
out = {}

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def fam(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET

def bound(s, p):
    if p.get("src"):
        s.bind((p["src"], 0))
    return s

def tcp(p, tag):
    s = bound(socket.socket(fam(p["dst"]), socket.SOCK_STREAM), p)
    s.settimeout(p["timeout"])
    try:
        s.connect((p["dst"], p["port"]))
        s.sendall(tag + b"\n")
        got = b""
        while tag not in got:
            chunk = s.recv(4096)
            if not chunk:
                return "closed"
            got += chunk
        return "open"
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return "error: %s" % e
    finally:
        s.close()

def datagrams(s, p, data):
    for _ in range(2):  # twice: a first one may wait for address resolution
        s.sendto(data, (p["dst"], p.get("port") or 0))
        time.sleep(0.05)
    return "sent"

def udp(p, tag):
    return datagrams(bound(socket.socket(fam(p["dst"]), socket.SOCK_DGRAM), p), p, tag)

def icmp(p, tag):
    s = bound(socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP), p)
    body = (b"\0" * 12 if p["type"] in (13, 14) else b"") + tag  # timestamp: three 32-bit times
    head = struct.pack("!BBHHH", p["type"], 0, 0, 0x4e46, 1)
    head = head[:2] + struct.pack("!H", csum(head + body)) + head[4:]
    return datagrams(s, p, head + body)

def icmp6(p, tag):  # the kernel computes the ICMPv6 checksum of raw ICMPv6 sockets
    s = bound(socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6), p)
    body = (b"\0" * 8 if p["type"] in (139, 140) else b"") + tag  # node information: a 64-bit nonce
    return datagrams(s, p, struct.pack("!BBHHH", p["type"], 0, 0, 0x4e46, 1) + body)

def ipproto(p, tag):  # ESP (50), AH (51, IPv4 only) or 253 (experimental): an SPI-like header, then the tag
    s = bound(socket.socket(fam(p["dst"]), socket.SOCK_RAW, p["proto"]), p)
    head = struct.pack("!BBHII", 59, 4, 0, 0x4e46, 1) if p["proto"] == 51 else struct.pack("!II", 0x4e46, 1)
    return datagrams(s, p, head + tag)

def frame(p, tag):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((p["ifname"], 0))
    for _ in range(2):
        s.send(bytes.fromhex(p["frame"]))
        time.sleep(0.05)
    return "sent"

KINDS = {"tcp": tcp, "udp": udp, "icmp": icmp, "icmp6": icmp6, "ip": ipproto, "frame": frame}

def one(p):
    try:
        out[p["tag"]] = KINDS[p["kind"]](p, p["tag"].encode())
    except Exception as e:
        out[p["tag"]] = "error: %r" % e

threads = [threading.Thread(target=one, args=(p,)) for p in probes]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(out))
"""

SESSION = r"""
import socket, sys
dst, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    s = socket.create_connection((dst, port), timeout=timeout)
except OSError as e:
    print("FAIL %s" % e, flush=True)
    sys.exit(1)
print("CONNECTED", flush=True)
for line in sys.stdin:
    msg = line.strip().encode()
    got = b""
    try:
        s.sendall(msg + b"\n")
        while msg not in got:
            chunk = s.recv(4096)
            if not chunk:
                raise EOFError("closed by the peer")
            got += chunk
        print("OK", flush=True)
    except socket.timeout:
        print("TIMEOUT", flush=True)
    except Exception as e:
        print("ERROR %r" % e, flush=True)
"""

FLOOD = r"""
import json, select, socket, sys
dst, ports, interval, cap = sys.argv[1], [int(p) for p in sys.argv[2].split(",")], float(sys.argv[3]), int(sys.argv[4])
fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
u = socket.socket(fam, socket.SOCK_DGRAM)
count = {p: {"syn": 0, "udp": 0, "connected": 0} for p in ports}
pending = {}  # fd -> (socket, port), oldest first: connection attempts not finished yet
poller = select.poll()

def reap():
    # every attempt that finished: counted when it opened (SO_ERROR 0), closed either way
    for fd, _ in poller.poll(0):
        s, port = pending.pop(fd)
        poller.unregister(fd)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            count[port]["connected"] += 1
        s.close()

def forget_oldest():
    fd = next(iter(pending))
    poller.unregister(fd)
    pending.pop(fd)[0].close()

print("STARTED", flush=True)
n = 0
while not select.select([sys.stdin], [], [], interval)[0]:
    n += 1
    for port in ports:
        s = socket.socket(fam, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((dst, port))
        pending[s.fileno()] = (s, port)
        poller.register(s, select.POLLOUT)
        count[port]["syn"] += 1
        u.sendto(b"NFP-flood%08x" % n, (dst, port))
        count[port]["udp"] += 1
    reap()
    while len(pending) > cap:
        forget_oldest()
reap()
total = {k: sum(c[k] for c in count.values()) for k in ("syn", "udp", "connected")}
print(json.dumps({**total, "ports": count}), flush=True)
"""


# --- the receiver -------------------------------------------------------------------------------------------------


class Receiver:
    """Everything that arrives in one guest namespace, as a list of event dicts."""

    def __init__(self, guest: str, tcp: list[int], udp: list[int], ifname: str = "eth0"):
        self.guest = guest
        cfg = json.dumps({"tcp": sorted(set(tcp)), "udp": sorted(set(udp)), "ifname": ifname})
        self.proc = subprocess.Popen(_py(guest, RECEIVER, cfg), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.wait(lambda e: e["ev"] == "ready", 10):
            self.close()
            raise RuntimeError(f"receiver in {guest} did not start: {self.proc.stderr.read()}")

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.events.append(json.loads(line))
                self._cond.notify_all()

    def wait(self, pred, timeout: float) -> list[dict]:
        """The events matching pred, waiting up to timeout for a first one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if pred(e)]
                left = deadline - time.monotonic()
                if found or left <= 0:
                    return found
                self._cond.wait(left)

    def wait_tags(self, tags: set[str], timeout: float) -> None:
        """Return when every tag has arrived, or after timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                left = deadline - time.monotonic()
                if tags <= {e.get("tag") for e in self.events} or left <= 0:
                    return
                self._cond.wait(left)

    def with_tag(self, tag: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e.get("tag") == tag]

    def select(self, **match) -> list[dict]:
        with self._cond:
            return [e for e in self.events if all(e.get(k) == v for k, v in match.items())]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(3)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(3)


# --- probes -------------------------------------------------------------------------------------------------------


@dataclass
class Probe:
    """One packet (or connection) to send; expect: should it get through?"""

    kind: str  # tcp, udp, icmp, icmp6, ip (proto 50/51), frame
    dst: str
    expect: bool
    why: str = ""
    port: int | None = None
    type: int | None = None  # ICMP / ICMPv6 type
    proto: int | None = None  # kind ip: 50 ESP, 51 AH
    src: str | None = None  # bind to this source address
    frame: bytes | None = None  # kind frame: the whole Ethernet frame (its payload carries the tag)
    ifname: str = "eth0"
    tag: str = field(default_factory=new_tag)

    def describe(self) -> str:
        proto = {50: "esp", 51: "ah"}.get(self.proto, f"ip proto {self.proto}")
        what = {"tcp": f"tcp/{self.port}", "udp": f"udp/{self.port}", "icmp": f"icmp type {self.type}",
                "icmp6": f"icmpv6 type {self.type}", "ip": proto, "frame": "frame"}[self.kind]
        if self.kind == "frame":
            return f"hand-made frame ({self.why})"
        return f"{what} {self.src or '(default source)'} -> {self.dst} ({self.why})"

    def wire(self) -> dict:
        d = {"kind": self.kind, "dst": self.dst, "tag": self.tag, "timeout": PATIENCE if self.expect else TCP_TIMEOUT}
        for key in ("port", "type", "proto", "src", "ifname"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.frame is not None:
            d["frame"] = self.frame.hex()
        return d


def tcp(dst, port, expect, why="", src=None):
    return Probe("tcp", dst, expect, why, port=port, src=src)


def udp(dst, port, expect, why="", src=None):
    return Probe("udp", dst, expect, why, port=port, src=src)


def icmp(dst, type_, expect, why="", src=None):
    return Probe("icmp6" if ":" in dst else "icmp", dst, expect, why, type=type_, src=src)


def esp(dst, expect, why="", src=None):
    return Probe("ip", dst, expect, why, proto=50, src=src)


def ah(dst, expect, why="", src=None):
    """IPv4 AH. (In IPv6 AH is an extension header that netfilter skips: use other_protocol there.)"""
    return Probe("ip", dst, expect, why, proto=51, src=src)


def other_protocol(dst, expect, why="", src=None):
    """IP protocol 253 (RFC 3692 experimentation): neither TCP, UDP, ICMP nor ESP."""
    return Probe("ip", dst, expect, why, proto=253, src=src)


def frame(build, expect, why="", ifname="eth0"):
    """A raw Ethernet frame: build(tag) -> bytes; it passes when the tag reaches the destination receiver."""
    p = Probe("frame", "-", expect, why, ifname=ifname)
    p.frame = build(p.tag.encode())
    return p


def send(guest: str, probes: list[Probe], receiver: Receiver, settle: float = SETTLE) -> dict[str, bool]:
    """Send probes from guest at once; {tag: got through}. TCP by the client's view, the rest by the receiver."""
    start = time.monotonic()
    res = subprocess.run(_py(guest, SENDER, json.dumps([p.wire() for p in probes])), capture_output=True,
                         text=True, timeout=30)
    if res.returncode:
        raise RuntimeError(f"sender in {guest} failed: {res.stderr}")
    client = json.loads(res.stdout)
    errors = {t: r for t, r in client.items() if r.startswith("error")}
    if errors:
        raise RuntimeError(f"sender in {guest}: {errors}")
    time.sleep(max(0.0, start + settle - time.monotonic()))
    awaited = {p.tag for p in probes if p.kind != "tcp" and p.expect
               and (p.frame is None or p.tag.encode() in p.frame)}  # a frame may carry no tag (ARP)
    receiver.wait_tags(awaited, max(0.0, start + PATIENCE - time.monotonic()))
    out = {}
    for p in probes:
        if p.kind == "tcp":
            # "refused" would mean the SYN got through to a closed port: the lab listens on every probed port.
            assert client[p.tag] in ("open", "timeout"), f"{p.describe()}: {client[p.tag]}"
            out[p.tag] = client[p.tag] == "open"
        else:
            out[p.tag] = bool(receiver.with_tag(p.tag))
    return out


def mismatches(guest: str, probes: list[Probe], receiver: Receiver) -> list[str]:
    """Send the probes; describe each one whose outcome differs from what it expects (empty: all as expected)."""
    got = send(guest, probes, receiver)
    return [f"{p.describe()}: expected {'pass' if p.expect else 'drop'}, got {'pass' if got[p.tag] else 'drop'}"
            for p in probes if got[p.tag] != p.expect]


def mismatches_all(groups: list[tuple[str, list[Probe], Receiver]]) -> list[str]:
    """mismatches() of several (source guest, probes, destination receiver) groups, run at the same time."""
    with ThreadPoolExecutor(len(groups)) as pool:
        return [line for lines in pool.map(lambda g: mismatches(*g), groups) for line in lines]


# --- long-lived traffic -------------------------------------------------------------------------------------------


class Session:
    """One TCP connection from a guest, kept open; say() sends a line and tells whether its echo came back."""

    def __init__(self, guest: str, dst: str, port: int, timeout: float = 2.0):
        self.what = f"tcp {guest} -> {dst}:{port}"
        self.proc = subprocess.Popen(_py(guest, SESSION, dst, str(port), str(timeout)), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "CONNECTED":
            self.close()
            raise RuntimeError(f"{self.what}: {line or self.proc.stderr.read()}")

    def say(self) -> bool:
        """Send a line; True when it was echoed back within the timeout."""
        self.proc.stdin.write(new_tag() + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().strip()
        if line not in ("OK", "TIMEOUT"):
            raise RuntimeError(f"{self.what}: {line}")
        return line == "OK"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(3)


def say_all(sessions: dict) -> dict:
    """{key: session.say()} for every session at the same time."""
    with ThreadPoolExecutor(len(sessions)) as pool:
        return dict(zip(sessions, pool.map(lambda s: s.say(), sessions.values())))


class Flood:
    """From a guest, every `interval` seconds and to each of `ports` of dst: a new TCP connection attempt and a UDP
    datagram. Attempts that finish are counted (when they opened) and closed at once; at most `cap` unfinished ones
    are kept (their SYNs are retransmitted meanwhile), the oldest closed first."""

    def __init__(self, guest: str, dst: str, ports: int | Iterable[int], interval: float = 0.005, cap: int = 400):
        ports = [ports] if isinstance(ports, int) else list(ports)
        self.proc = subprocess.Popen(_py(guest, FLOOD, dst, ",".join(map(str, ports)), str(interval), str(cap)),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        if line != "STARTED":
            raise RuntimeError(f"flood from {guest}: {line or self.proc.stderr.read()}")

    def stop(self) -> dict:
        """{'syn': attempts, 'udp': datagrams, 'connected': connections that opened, 'ports': {port: the same}}."""
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        self.proc.wait(10)
        if not out:
            raise RuntimeError(f"flood: {self.proc.stderr.read()}")
        data = json.loads(out)
        data["ports"] = {int(port): c for port, c in data["ports"].items()}
        return data
