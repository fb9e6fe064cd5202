"""netfw.kernel.rtnl against tc itself (issue 22): one device's qdiscs asked of the kernel for that device alone are
what `tc -j qdisc show dev DEV` lists (kind, handle, root or parent) for the set-ups netfw meets on a tap: none
(the default), libvirt's (an htb root with a class and its leaf, an ingress qdisc), another root, clsact; a device
that does not exist reads as tc's own error, which netfw takes for "gone"."""

from __future__ import annotations

import json

import pytest

from netfw import runner
from netfw.kernel import probe, rtnl
from netfw.kernel.tc import DEFAULT_QDISCS

from .lab import sh


def by_tc(dev: str) -> list[tuple]:
    return sorted((q["kind"], q["handle"], q.get("root", False), q.get("parent"))
                  for q in json.loads(sh("tc", "-j", "qdisc", "show", "dev", dev).stdout))


def by_netlink(dev: str) -> list[tuple]:
    return sorted((q["kind"], q["handle"], q.get("root", False), q.get("parent")) for q in rtnl.qdiscs(dev))


def tc(*args: str) -> bool:
    return sh("tc", *args, check=False).returncode == 0


def test_a_device_s_qdiscs_are_what_tc_lists(lab):
    sh("ip", "link", "add", "q0", "type", "veth", "peer", "name", "q1")
    for dev in ("q0", "q1"):
        sh("ip", "link", "set", dev, "up")
    assert by_netlink("q0") == by_tc("q0") == [("noqueue", "0:", True, None)]  # the default
    assert tc("qdisc", "add", "dev", "q0", "root", "handle", "1:", "htb", "default", "1")  # libvirt's shape
    assert tc("class", "add", "dev", "q0", "parent", "1:", "classid", "1:1", "htb", "rate", "8mbit")
    assert tc("qdisc", "add", "dev", "q0", "parent", "1:1", "handle", "10:", "pfifo", "limit", "100")
    assert tc("qdisc", "add", "dev", "q0", "ingress")
    assert by_netlink("q0") == by_tc("q0") == sorted([("htb", "1:", True, None), ("pfifo", "10:", False, "1:1"),
                                                       ("ingress", "ffff:", False, "ffff:fff1")])
    assert tc("qdisc", "replace", "dev", "q1", "root", "handle", "5:", "pfifo_fast")  # another root
    assert by_netlink("q1") == by_tc("q1") == [("pfifo_fast", "5:", True, None)]
    if tc("qdisc", "add", "dev", "q1", "clsact"):
        assert by_netlink("q1") == by_tc("q1")
        assert ("clsact", "ffff:", False, "ffff:fff1") in by_netlink("q1")


def test_a_class_s_default_leaf_that_tc_hides_is_listed_of_a_default_kind(lab):
    sh("ip", "link", "add", "q0", "type", "veth", "peer", "name", "q1")
    sh("ip", "link", "set", "q0", "up")
    assert tc("qdisc", "add", "dev", "q0", "root", "handle", "1:", "htb", "default", "1")
    assert tc("class", "add", "dev", "q0", "parent", "1:", "classid", "1:1", "htb", "rate", "8mbit")
    extra = set(by_netlink("q0")) - set(by_tc("q0"))
    assert set(by_tc("q0")) <= set(by_netlink("q0")) and all(kind in DEFAULT_QDISCS for kind, *_ in extra)


def test_a_device_that_does_not_exist_reads_as_tc_s_error(lab):
    with pytest.raises(runner.CommandError) as e:
        rtnl.qdiscs("nothere0")
    assert probe.gone(e.value, ("nothere0",))  # "gone", exactly as tc's `Cannot find device "nothere0"`
    assert not probe.gone(e.value, ("other",))
