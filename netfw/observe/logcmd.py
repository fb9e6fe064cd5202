"""`netfw log`: a live stream of a VM's dropped packets, one line each (time, NIC, direction, protocol, addresses,
ports, why), from the NFLOG rules render.py puts before every DROP.

Each NIC logs to its own NFLOG group in the VM namespace (chains.log_group), rate-limited in the kernel; this
reader binds the groups of the NICs asked for (netfw.observe.nflog: no process, works in the unprivileged sandbox, where
the LOG target is silent and tcpdump cannot start). A group takes one reader at a time: a second `netfw log` of the
same NIC is refused. The stream ends after --count packets, on Ctrl-C, or when the VM namespace goes away (an open
reader keeps a deleted namespace alive, so it is checked every second).
"""

from __future__ import annotations

import select
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from netfw.model import names
from . import nflog
from netfw.kernel import probe
from netfw import state
from netfw.errors import InputError
from .nflog import LoggedPacket
from netfw.rules.chains import parse_log_prefix

#: Log prefix reasons (render) as status and metrics name them.
REASONS = {"no-rule": "no_rule", "spoofing": "anti_spoofing", "cap": "conntrack_cap", "ethertype": "ethertype"}
_WORDS = {"no_rule": "no rule matched", "anti_spoofing": "anti-spoofing", "conntrack_cap": "conntrack cap",
          "ethertype": "ethertype not allowed"}
_CHECK_EVERY = 1.0  # seconds between checks that the namespace still exists


def record(vm: int, packet: LoggedPacket) -> dict | None:
    """A logged packet as a JSON-ready dict, or None when netfw's rules did not log it (unknown prefix). Pure."""
    parsed = parse_log_prefix(packet.prefix)
    if parsed is None:
        return None
    nic, direction, why = parsed
    return {
        "time": datetime.fromtimestamp(packet.time, timezone.utc).isoformat(timespec="milliseconds"),
        "vm": vm, "nic": nic, "direction": "inbound" if direction == "in" else "outbound",
        "reason": REASONS[why], "family": packet.l3, "protocol": packet.protocol,
        "src": packet.src, "dst": packet.dst, "sport": packet.sport, "dport": packet.dport,
        "icmp_type": packet.icmp_type, "icmp_code": packet.icmp_code, "tcp_flags": packet.tcp_flags,
        "length": packet.length, "mac": packet.hwaddr, "lost_before": packet.lost_before,
    }


def _end(address: str | None, port: int | None) -> str:
    if address is None:
        return "?"
    if port is None:
        return address
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def line(entry: dict) -> str:
    """The human form of record(): `2026-12-01T10:00:00.000+00:00 nic 0 in  tcp 10.0.0.1:4000 -> 10.0.0.2:80 SYN:
    dropped, no rule matched`. Pure."""
    what = entry["protocol"] or entry["family"] or "frame"
    if entry["src"] or entry["dst"]:
        where = f"{_end(entry['src'], entry['sport'])} -> {_end(entry['dst'], entry['dport'])}"
    else:
        where = f"from {entry['mac']}" if entry["mac"] else "(no IP header)"
    extra = ""
    if entry["icmp_type"] is not None:
        extra = f" type {entry['icmp_type']}/{entry['icmp_code']}"
    elif entry["tcp_flags"]:
        extra = f" {entry['tcp_flags']}"
    lost = f"({entry['lost_before']} not shown: the reader fell behind) " if entry["lost_before"] else ""
    direction = "in " if entry["direction"] == "inbound" else "out"
    return f"{lost}{entry['time']} nic {entry['nic']} {direction} {what} {where}{extra}: dropped, " + \
        _WORDS[entry["reason"]]


def _nics(vm: int, nic: int | None, state_dir: str | Path | None) -> list[int]:
    names.check_ids(vm, nic or 0)
    with state.opened(state_dir, create=False) as records:
        recorded = records.nics(vm)
    if nic is not None:
        if nic not in recorded:
            raise InputError(f"VM {vm} NIC {nic} is not attached (no state record)")
        return [nic]
    if not recorded:
        raise InputError(f"VM {vm} is not attached (no state record of any NIC)")
    return recorded


def stream(vm: int, nic: int | None = None, *, count: int | None = None, state_dir: str | Path | None = None,
           emit: Callable[[dict], None], ready: Callable[[], None] = lambda: None) -> int:
    """Emit each dropped packet of the VM (NIC) as record() until `count` packets, Ctrl-C or the namespace goes;
    the number emitted. `ready` is called once the groups are bound (what is dropped from then on is shown).

    InputError when the VM (NIC) is not attached; NflogError when a group cannot be bound (another reader)."""
    if count is not None and count < 1:
        raise InputError(f"--count {count} is not a positive number")
    nics = _nics(vm, nic, state_dir)
    ns = names.netns(vm)
    if not probe.netns_exists(ns):
        raise InputError(f"VM {vm} has no namespace {ns}: its NICs are not attached (netfw status {vm})")
    shown = 0
    with ExitStack() as stack:
        readers = [stack.enter_context(nflog.open_reader(probe.netns_path(ns), n + 1)) for n in nics]
        ready()
        sockets = {r.sock: r for r in readers}
        checked = time.monotonic()
        try:
            while count is None or shown < count:
                readable = select.select(list(sockets), [], [], _CHECK_EVERY)[0]
                for sock in readable:
                    for packet in sockets[sock].packets(timeout=0):
                        entry = record(vm, packet)
                        if entry is not None and (count is None or shown < count):
                            emit(entry)
                            shown += 1
                if time.monotonic() - checked >= _CHECK_EVERY:
                    if not readers[0].namespace_present():
                        break
                    checked = time.monotonic()
        except KeyboardInterrupt:
            pass
    return shown
