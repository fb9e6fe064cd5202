"""The Open vSwitch lab (userspace datapath inside the sandbox), and the OVS facts netfw's design rests on
(tests/integration/OVS_FACTS.md): real daemons, real links, real traffic between guest namespaces."""

from __future__ import annotations

import json
import subprocess
import time

from netfw.kernel.ovs import render  # OVSDB JSON values in ovs-vsctl's `column=value` syntax

from . import lab as lab_mod
from . import ovs as ovs_mod
from .lab import ping, sh
from .ovs import add_flow, del_flows, ofctl, settle, vsctl

BR = "ovsbr0"


def iperf(server: str, client: str, address: str, seconds: int = 1) -> dict:
    """A TCP iperf3 run from guest `client` to guest `server` at `address`; iperf3's JSON result."""
    srv = subprocess.Popen(["ip", "netns", "exec", server, "iperf3", "-s", "-1"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        for _ in range(20):  # until the server listens
            res = sh("ip", "netns", "exec", client, "iperf3", "-c", address, "-t", str(seconds), "-J", check=False)
            out = json.loads(res.stdout)
            if "unable to connect" not in out.get("error", ""):
                return out
            time.sleep(0.1)
        return out
    finally:
        srv.kill()
        srv.wait(5)


def flow_packets(bridge: str, match: str) -> int:
    """n_packets of the flows of bridge that `match` selects (ovs-ofctl dump-flows BRIDGE MATCH)."""
    out = ofctl("dump-flows", bridge, match).stdout
    return sum(int(part.split("=")[1]) for line in out.splitlines() for part in line.replace(",", " ").split()
               if part.startswith("n_packets="))


def after_failed_pings(guest: str) -> str:
    """Forget the guest's neighbour entries: pings a test expected to fail leave an ARP entry FAILED, and the
    guest would then wait about a second before it asks again."""
    sh("ip", "-n", guest, "neigh", "flush", "all")
    return guest


def ofport(iface: str) -> int:
    return int(vsctl("get", "Interface", iface, "ofport").stdout)


# --- the lab ------------------------------------------------------------------------------------------------------


def test_ping_and_tcp_between_two_guests_on_ovs(ovs, lab):
    lab.ovs_bridge(BR)
    g1, g2 = lab.vm(1, 0, "10.9.0.1/24", bridge=BR), lab.vm(2, 0, "10.9.0.2/24", bridge=BR)
    assert ping(g1, "10.9.0.2") and ping(g2, "10.9.0.1")
    result = iperf(g2, g1, "10.9.0.2")
    assert "error" not in result, result["error"]
    assert result["end"]["sum_received"]["bytes"] > 1_000_000


def test_vlan_tags_isolate_guests(ovs, lab):
    lab.ovs_bridge(BR)
    g1 = lab.vm(1, 0, "10.9.0.1/24", bridge=BR, tag=10)
    lab.vm(2, 0, "10.9.0.2/24", bridge=BR, tag=20)
    lab.vm(3, 0, "10.9.0.3/24", bridge=BR, tag=10)
    assert ping(g1, "10.9.0.3")  # positive control: the same tag
    assert not ping(g1, "10.9.0.2")
    vsctl("set", "Port", "one-2-0", "tag=10")
    settle()
    assert ping(after_failed_pings(g1), "10.9.0.2")


def test_a_drop_flow_on_in_port_drops_that_guests_traffic(ovs, lab):
    lab.ovs_bridge(BR)
    g1 = lab.vm(1, 0, "10.9.0.1/24", bridge=BR, ofport=11)
    lab.vm(2, 0, "10.9.0.2/24", bridge=BR)
    g3 = lab.vm(3, 0, "10.9.0.3/24", bridge=BR)
    assert ofport("one-1-0") == 11
    assert ping(g1, "10.9.0.2")
    add_flow(BR, "priority=100,in_port=11,actions=drop")
    assert not ping(g1, "10.9.0.2")
    assert ping(g3, "10.9.0.2")  # positive control: another port of the bridge
    assert flow_packets(BR, "in_port=11") > 0
    del_flows(BR, "in_port=11")
    assert ping(after_failed_pings(g1), "10.9.0.2")


def test_reset_removes_ovs_bridges_and_qos_and_leaves_ovs_usable(ovs, lab):
    lab.ovs_bridge(BR)
    lab.vm(1, 0, "10.9.0.1/24", bridge=BR)
    vsctl("--", "set", "Port", "one-1-0", "qos=@q", "--", "--id=@q", "create", "QoS", "type=linux-htb",
          "queues:0=@q0", "--", "--id=@q0", "create", "Queue", "other_config:max-rate=1000000")
    lab_mod.reset()
    assert vsctl("list-br").stdout == ""
    assert ovs_mod.snapshot() == {"<qos>": [], "<queue>": []}
    assert [link["ifname"] for link in json.loads(sh("ip", "-j", "link").stdout)] == ["lo"]
    again = lab_mod.Lab()
    again.ovs_bridge(BR)
    g1, _ = again.vm(1, 0, "10.9.0.1/24", bridge=BR), again.vm(2, 0, "10.9.0.2/24", bridge=BR)
    assert ping(g1, "10.9.0.2")


def test_ovs_snapshot_ignores_counters_and_sees_configuration(ovs, lab):
    lab.ovs_bridge(BR)
    g1, _ = lab.vm(1, 0, "10.9.0.1/24", bridge=BR), lab.vm(2, 0, "10.9.0.2/24", bridge=BR)
    before = ovs_mod.snapshot()
    assert ping(g1, "10.9.0.2", count=3)
    assert lab_mod.snapshot()["<ovs>"] == before  # statistics, link state, flow counters are not in it
    changes = [("Port", "tag=5", "tag=[]"),
               ("Port", "external_ids:k=v", "external_ids={}"),
               ("Interface", "mtu_request=1400", "mtu_request=[]"),
               ("Interface", "ingress_policing_rate=1000", "ingress_policing_rate=0")]
    for table, change, undo in changes:
        vsctl("set", table, "one-1-0", change)
        assert ovs_mod.snapshot() != before, change
        vsctl("set", table, "one-1-0", undo)
        assert ovs_mod.snapshot() == before, undo
    ofctl("add-flow", BR, "priority=5,in_port=1,actions=NORMAL")
    assert ovs_mod.snapshot() != before
    ofctl("del-flows", BR, "in_port=1")
    assert ovs_mod.snapshot() == before
    vsctl("del-port", "one-1-0")
    vsctl("add-port", BR, "one-1-0")  # without a request OVS does not reuse a number it just freed
    assert ovs_mod.snapshot()[BR]["ofports"]["one-1-0"] != before[BR]["ofports"]["one-1-0"]


# --- the facts netfw's OVS design rests on ------------------------------------------------------------------------


def replace_tap_by_veth(vm: int, nic: int = 0) -> str:
    """What netfw's cut-over does to the links (not to OVS): the tap one-<vm>-<nic> moves into namespace one-<vm>
    onto a firewall bridge, and a veth end renamed to the tap's name takes its place in this namespace."""
    ns, tap, bridge = f"one-{vm}", f"one-{vm}-{nic}", f"one-br-{vm}-{nic}"
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "add", bridge, "type", "bridge")
    sh("ip", "-n", ns, "link", "set", bridge, "up")
    sh("ip", "link", "add", f"{tap}-h", "type", "veth", "peer", "name", f"{tap}-f", "netns", ns)
    sh("ip", "-n", ns, "link", "set", f"{tap}-f", "master", bridge, "up")
    sh("ip", "link", "set", tap, "netns", ns)
    sh("ip", "-n", ns, "link", "set", tap, "master", bridge, "up")
    sh("ip", "link", "set", f"{tap}-h", "name", tap)
    sh("ip", "link", "set", tap, "up")
    return tap


def test_a_same_named_link_passes_traffic_only_after_del_port_and_add_port_in_two_calls(ovs, lab):
    lab.ovs_bridge(BR)
    g1, _ = lab.vm(1, 0, "10.9.0.1/24", bridge=BR), lab.vm(2, 0, "10.9.0.2/24", bridge=BR)
    assert ping(g1, "10.9.0.2")
    number = ofport("one-1-0")
    replace_tap_by_veth(1)
    assert not ping(g1, "10.9.0.2")  # OVS still reads the netdev it opened: the tap, gone from here
    vsctl("del-port", "one-1-0", "--", "add-port", BR, "one-1-0")
    assert not ping(g1, "10.9.0.2")  # one transaction: nothing changed for ovs-vswitchd
    vsctl("del-port", "one-1-0")
    vsctl("add-port", BR, "one-1-0", "--", "set", "Interface", "one-1-0", f"ofport={number}")
    assert ping(after_failed_pings(g1), "10.9.0.2")
    assert ofport("one-1-0") == number


# Values a record may hold that ovs-vsctl's own syntax would split or misread unless quoted: ':', '=', ',',
# spaces, quotes, backslashes, braces, a line break, non-ASCII, words that look like numbers or booleans, and the
# line and paragraph separators and NEL that ovs-vsctl prints unescaped (issue 19).
AWKWARD = {"plain": "v", "k:ey": "va:l", "k=e y": "v=a l,ue", 'q"uote': "it's \"x\"", "a,b": "c,d", "empty": "",
           "back\\slash": "x\\y", "br{a}[c]": "{x}", "nl": "a\nb", "uni-é": "ü€", "-dash": "-1", "123": "456",
           "true": "false", "uuid": "6f4c5a2e-0000-4000-8000-000000000000", "sep\u2028": "a\u2029b\u0085c"}


PORT_COLUMNS = ["tag", "trunks", "vlan_mode", "cvlans", "other_config", "external_ids", "qos"]
IFACE_COLUMNS = ["mtu_request", "ingress_policing_rate", "ingress_policing_burst", "ingress_policing_kpkts_rate",
                 "ingress_policing_kpkts_burst", "other_config", "external_ids", "ofport_request", "ofport"]


def test_port_and_interface_records_ofport_flows_and_qos_survive_the_replacement(ovs, lab):
    lab.ovs_bridge(BR)
    g1 = lab.vm(1, 0, "10.9.0.1/24", bridge=BR)
    lab.vm(2, 0, "10.9.0.2/24", bridge=BR, tag=10)
    g3 = lab.vm(3, 0, "10.9.0.3/24", bridge=BR, tag=10)
    awkward = "{" + ", ".join(f"{json.dumps(k)}={json.dumps(v)}" for k, v in AWKWARD.items()) + "}"
    vsctl("set", "Port", "one-1-0", "tag=10", "trunks=[10, 20]", "vlan_mode=native-untagged", "cvlans=[100]",
          "other_config:qinq-ethtype=802.1q", f"external_ids={awkward}",
          "--", "set", "Interface", "one-1-0", "mtu_request=1450", "ingress_policing_rate=100000",
          "ingress_policing_burst=10000", 'external_ids:attached-mac="02:00:0a:09:00:01"', f"other_config={awkward}",
          "--", "set", "Port", "one-1-0", "qos=@q", "--", "--id=@q", "create", "QoS", "type=linux-htb",
          "other_config:max-rate=900000000", "queues:0=@q0", "--", "--id=@q0", "create", "Queue",
          "other_config:max-rate=900000000")
    number = ofport("one-1-0")
    ofctl("add-flow", BR, f"priority=100,in_port={number},udp,tp_dst=9,actions=drop")
    assert ping(g1, "10.9.0.2")
    before = ovs_mod.snapshot()

    # One read of both records, then del-port and add-port in two calls, every column written back.
    lines = vsctl("--format=json", f"--columns={','.join(PORT_COLUMNS)}", "list", "Port", "one-1-0", "--",
                  f"--columns={','.join(IFACE_COLUMNS)}", "list", "Interface", "one-1-0").stdout.split("\n")[:2]
    port, iface = ({col: val for col, val in zip(out["headings"], out["data"][0])} for out in map(json.loads, lines))
    assert dict(port["external_ids"][1]) == AWKWARD
    replace_tap_by_veth(1)
    vsctl("del-port", "one-1-0")
    iface_cols = {col: val for col, val in iface.items() if col != "ofport"}
    vsctl("add-port", BR, "one-1-0",
          "--", "set", "Port", "one-1-0", *(f"{col}={render(val)}" for col, val in port.items()),
          "--", "set", "Interface", "one-1-0", *(f"{col}={render(val)}" for col, val in iface_cols.items()),
          f"ofport={iface['ofport']}")  # a hint, not a request: the Interface record ends up as it was

    assert ovs_mod.snapshot() == before  # records, ofports, flows and the QoS/Queue rows
    assert ping(g1, "10.9.0.2")
    add_flow(BR, f"priority=200,in_port={number},icmp,actions=drop")
    assert not ping(g1, "10.9.0.2")  # flows keyed by the old in_port apply to the new link
    assert ping(g3, "10.9.0.2")  # positive control
