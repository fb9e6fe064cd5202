"""Bandwidth limits with tc: OpenNebula's INBOUND_* / OUTBOUND_* (KB/s, KB), as libvirt applies them to a tap.

Moving a link to another namespace destroys its qdiscs (KERNEL.md), so the limits libvirt put on the tap do not
survive the attach. netfw enforces the NIC's limits itself while the tap is behind its firewall, in the VM namespace
where it owns every link: traffic to the VM is shaped on the tap's egress there, traffic from the VM on the egress
of the veth end `-f` (the only way out of the firewall). Both are egress HTB shaping, which works the same whatever
the VN bridge (a Linux bridge, or Open vSwitch, whose userspace datapath reads a port before its ingress qdisc) and
needs no kernel module beyond htb. At detach the tap gets libvirt's own set-up back in the hypervisor namespace:
HTB on its egress (to the VM) and an ingress policer (from the VM).

The HTB class is libvirt's (virNetDevBandwidthSet): `rate AVGkbps [ceil PEAKkbps] [burst PEAK_KBkb]`, quantum
AVG*1024/8/1500 (tc's kbps are kilobytes per second, kb kilobytes). libvirt's sfq leaf (it only reorders) and fw
filter (it only matches marked packets, the rest takes `default 1`) are left out: the class alone shapes the same.
"""

from __future__ import annotations

from netfw.model.spec import Bandwidth

#: Root qdiscs a link has without any configuration (the kernel's and distributions' defaults).
DEFAULT_QDISCS = frozenset({"noqueue", "noop", "pfifo_fast", "fq_codel", "mq", "pfifo", "fq"})
#: What libvirt's set-up is made of: netfw rebuilds it from the NIC's limits.
LIBVIRT_QDISCS = frozenset({"htb", "sfq", "ingress"})


def htb_lines(dev: str, limits: tuple[int, int | None, int | None]) -> list[str]:
    """`tc -batch` lines that shape dev's egress to limits (average, peak, burst), replacing what is there."""
    avg, peak, burst = limits
    quantum = max(avg * 1024 // 8 // 1500, 1)
    rate = f"rate {avg}kbps" + (f" ceil {peak}kbps" if peak else "") + (f" burst {burst}kb" if burst else "")
    return [f"qdisc replace dev {dev} root handle 1: htb default 1",
            f"class replace dev {dev} parent 1: classid 1:1 htb {rate} quantum {quantum}"]


def police_lines(dev: str, limits: tuple[int, int | None, int | None]) -> list[str]:
    """libvirt's ingress policer for traffic a tap receives from its VM (avg, burst: the peak burst or avg)."""
    avg, _, burst = limits
    return [f"qdisc add dev {dev} ingress",
            f"filter add dev {dev} parent ffff: protocol all u32 match u32 0 0 police rate {avg}kbps "
            f"burst {burst or avg}kb mtu 64kb drop flowid :1"]


def firewall_lines(tap: str, fw_end: str, limits: Bandwidth | None, previous: Bandwidth | None) -> list[str]:
    """Lines for the VM namespace: shape to the VM on the tap, from the VM on the veth end; remove a limit that
    `previous` had and `limits` has not (an update)."""
    lines = []
    for way, dev in (("inbound", tap), ("outbound", fw_end)):
        now = limits.limits(way) if limits else None
        before = previous.limits(way) if previous else None
        if now is not None:
            lines += htb_lines(dev, now)
        elif before is not None:
            lines.append(f"qdisc del dev {dev} root")
    return lines


def tap_lines(tap: str, limits: Bandwidth) -> tuple[list[str], list[str]]:
    """libvirt's set-up on a tap in the hypervisor namespace: (HTB lines, ingress policer lines)."""
    inbound, outbound = limits.limits("inbound"), limits.limits("outbound")
    return (htb_lines(tap, inbound) if inbound else []), (police_lines(tap, outbound) if outbound else [])


def describe(qdisc: dict) -> str:
    where = "root" if qdisc.get("root") else f"parent {qdisc.get('parent', '?')}"
    return f"{qdisc.get('kind')} {qdisc.get('handle', '')} {where}".replace("  ", " ")


def unrebuilt(qdiscs: list[dict], limits: Bandwidth | None) -> list[str]:
    """The qdiscs of a tap that netfw will not rebuild after the move (described), from `tc -j qdisc show`:
    everything but the defaults when the NIC has no limits, else everything but libvirt's own kinds. Pure."""
    kept = DEFAULT_QDISCS | (LIBVIRT_QDISCS if limits is not None else frozenset())
    return [describe(q) for q in qdiscs if q.get("kind") not in kept]


#: stderr lines of a tc batch whose only failure is a policer this kernel cannot load (act_police).
NO_POLICE = ("Error: Failed to load TC action module.", "We have an error talking to the kernel")
