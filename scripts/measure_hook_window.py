#!/usr/bin/env python3
"""What reaches a guest unfiltered across its start, with and without netfw's libvirt qemu hook; what the hook
costs. Real taps, no libvirt (tests/integration/test_hook.py has the same set-up; the real-guest numbers come from
tests/integration/test_libvirt_netfw.py).

    scripts/measure_hook_window.py [--rounds N]      (re-runs itself inside scripts/sandbox)

Each round, on a Linux bridge and on Open vSwitch (the lab's private one, userspace datapath): OpenNebula's `pre`
for VM 7 (tests/data/one/e2e_two_nics.xml: 2 NICs; e2e_ovswitch.xml: 1), the taps made with /dev/net/tun and held
open as libvirtd holds them, on the VN bridge, up; 1.5 s for the tap's own IPv6 (DAD, router solicitation, MLD),
then a peer sends 10 unicast and 10 broadcast UDP datagrams to a port no rule allows. Then either the hook at
`start begin` (before QEMU would start) or `post` (as without the hook: after the guest runs, here with nobody
reading yet), and the frames waiting in the tap's queue are read: what QEMU would hand the guest from before the
move. Printed: the frames of before delivered, by path; the wall and CPU time (of netfw's processes) of the hook at
`start begin` and `stopped end` against `post` and `clean`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def timed(fn):
    """(result, wall seconds, CPU seconds of the children started meanwhile)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = fn()
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def round_(kind: str, with_hook: bool, tmp: Path, times: dict) -> int:
    from tests.integration import lab as labmod
    from tests.integration.test_hook import (BRIDGES, MACS, Host, domain_xml, of_before, quiet, taps,
                                             unfiltered_before_the_move, _ovs_tap)

    labmod.reset()
    lab, state = labmod.Lab(), tmp / f"state-{time.monotonic_ns()}"
    os.environ["NETFW_STATE_DIR"] = str(state)
    host = Host(state, tmp)
    host.taps = []
    if kind == "linux":
        lab.bridge("vnbr0"), lab.bridge("vnbr1")
        peer = lab.vm(20, 0, "10.61.0.2/24")
        quiet("vnbr0", "vnbr1", peer)
        labmod.sh("ip", "-n", peer, "neigh", "replace", "10.61.0.7", "lladdr", MACS[0], "dev", "eth0")
        doc, xml, nics, net = "e2e_two_nics.xml", domain_xml(), (0, 1), "10.61.0"
        assert host.one("pre", doc=doc).returncode == 0
        tap = taps(host, nics)
    else:
        lab.ovs_bridge("ovsbr0")
        peer = lab.vm(20, 0, "10.62.0.2/24", bridge="ovsbr0", tag=10)
        quiet(peer)
        labmod.sh("ip", "-n", peer, "neigh", "replace", "10.62.0.7", "lladdr", "02:00:0a:3e:00:07", "dev", "eth0")
        doc, nics, net = "e2e_ovswitch.xml", (0,), "10.62.0"
        xml = domain_xml(nics, macs={0: "02:00:0a:3e:00:07"}, bridges={0: "ovsbr0"})
        assert host.one("pre", doc=doc).returncode == 0
        tap = {0: _ovs_tap(host)}
    unfiltered_before_the_move(host, peer=peer, address=net, nics=nics)
    if with_hook:
        res, wall, cpu = timed(lambda: host.hook("start", "begin", xml))
        times.setdefault((kind, "hook start begin"), []).append((wall, cpu))
    else:
        res, wall, cpu = timed(lambda: host.one("post", "one-7", "host-a", doc=doc))
        times.setdefault((kind, "post"), []).append((wall, cpu))
    assert res.returncode == 0, res.stderr
    stale = sum(of_before(f) for t in tap.values() for f in t.frames())
    for t in tap.values():
        t.close()
    if with_hook:
        res, wall, cpu = timed(lambda: host.hook("stopped", "end", xml))
        times.setdefault((kind, "hook stopped end"), []).append((wall, cpu))
    else:
        res, wall, cpu = timed(lambda: host.one("clean", "host-a", doc=doc))
        times.setdefault((kind, "clean"), []).append((wall, cpu))
    assert res.returncode == 0, res.stderr
    labmod.reset()
    return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.environ.get("NETFW_IN_SANDBOX") != "1":
        return subprocess.call([str(HERE / "sandbox"), sys.executable, *sys.argv])
    from tests.integration.ovs import Ovs

    os.environ["PATH"] = f"{HERE.parent / '.venv' / 'bin'}:{os.environ['PATH']}:/usr/sbin:/sbin"
    ovs = Ovs().start()
    stale: dict = {}
    times: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="netfw-hook-window-") as tmp:
            for _ in range(args.rounds):
                for kind in ("linux", "ovs"):
                    for with_hook in (False, True):
                        stale.setdefault((kind, with_hook), []).append(round_(kind, with_hook, Path(tmp), times))
    finally:
        ovs.stop()
    print(f"| VN bridge | frames of before the move delivered to the guest, per round ({args.rounds}) | |")
    print("|---|---|---|")
    for kind in ("linux", "ovs"):
        print(f"| {kind} | without the hook (post): {stale[(kind, False)]} | with the hook: {stale[(kind, True)]} |")
    print()
    print("| VN bridge | call | wall (median) | CPU of netfw's processes (median) |")
    print("|---|---|---|---|")
    for (kind, call), samples in times.items():
        wall, cpu = statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)
        print(f"| {kind} | {call} | {wall * 1000:.0f} ms | {cpu * 1000:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
