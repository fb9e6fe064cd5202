"""The exact commands of attach and detach, with the command layer faked ("facts in, commands out")."""

from __future__ import annotations

import json

import pytest

from netfw import api, runner
from netfw import state
from netfw.model.spec import NicSpec
from netfw.rules.render import render
from netfw.steps import FamilyRuleset
from netfw.transaction import TransactionError

from .fake import FakeHost, link

SLAVE = {"info_kind": "veth", "info_slave_data": {"priority": 32, "cost": 2, "hairpin": True, "learning": True,
                                                   "isolated": False, "group_fwd_mask": "0x4000"}}
HOST = {None: {"vnbr0": link("vnbr0", "bridge"),
               "one-7-0": link("one-7-0", None, master="vnbr0", mtu=1450, address="fe:00:0a:00:00:07",
                               linkinfo=SLAVE)}}

ATTACH_FRESH = """\
ip -j -d -force -batch -
  link show dev one-7-0
  link show dev vnbr0
ip netns add one-7
nsenter --net=/run/netns/one-7 sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 net.bridge.bridge-nf-filter-vlan-tagged=1 \
net.bridge.bridge-nf-filter-pppoe-tagged=1
nsenter --net=/run/netns/one-7 ip -batch -
  link add one-br-7-0 address 8e:1e:f7:c8:e6:3f mtu 1450 type bridge nf_call_iptables 1 nf_call_ip6tables 1
  link set one-br-7-0 alias "netfw vm=7 nic=0 role=br" up
ip -batch -
  link add one-7-0-h mtu 1450 address fe:00:0a:00:00:07 type veth peer name one-7-0-f netns one-7 mtu 1450
  link set one-7-0-h alias "netfw vm=7 nic=0 role=h"
sysctl -q -w net.ipv6.conf.one-7-0-h.disable_ipv6=1
nsenter --net=/run/netns/one-7 ip -batch -
  link set one-7-0-f alias "netfw vm=7 nic=0 role=f" master one-br-7-0
  link set one-7-0-f type bridge_slave learning off
  link set one-7-0-f up"""

#: The cut-over: the tap into the namespace, the veth end (made down, with the tap's MAC) renamed to the tap's name
#: and put on the VN bridge with the tap's port settings, then the tap onto the firewall bridge, not learning, and its
#: MAC out of the firewall bridge's local entries (the VN bridge's MAC may be the tap's: issue 19, finding 9).
CUT_OVER = [
    (["ip", "-batch", "-"], "link set one-7-0 netns one-7\nlink set one-7-0-h down\nlink set one-7-0-h name one-7-0\n"
                            "link set one-7-0 master vnbr0\nlink set one-7-0 type bridge_slave priority 32 cost 2 "
                            "hairpin on learning on group_fwd_mask 0x4000 isolated off\nlink set one-7-0 up\n"),
    (["nsenter", "--net=/run/netns/one-7", "ip", "-batch", "-"], "link set one-7-0 master one-br-7-0 up\n"
                                          "link set one-7-0 type bridge_slave learning off\n"),
    (["nsenter", "--net=/run/netns/one-7", "bridge", "fdb", "del", "fe:00:0a:00:00:07", "dev", "one-7-0", "master"], None),
]


@pytest.fixture(autouse=True)
def host_ok(mocker):
    mocker.patch.object(api, "check_host")


def test_attach_on_a_fresh_host_runs_exactly_these_commands(mocker, tmp_path):
    fake = FakeHost(mocker, links=HOST)
    api.attach(NicSpec(7, 0, "vnbr0"), state_dir=tmp_path)
    cmds = fake.commands()
    assert "\n".join(cmds).startswith(ATTACH_FRESH.replace("\\\n", ""))
    restores = [argv for argv, _ in fake.calls if argv[-2:] == ["--noflush"] or "--noflush" in argv]
    # one per family (filter + raw), and ebtables for the ethertypes every tap lets through
    assert [a[2] for a in restores] == ["iptables-restore", "ip6tables-restore", "ebtables-restore"]
    eb = next(stdin for argv, stdin in fake.calls if argv[2:3] == ["ebtables-restore"])
    log = '--limit 10/sec --limit-burst 10 --nflog-prefix "netfw nic=0 dir={} why=ethertype" --nflog-group 1'
    assert eb == ("*filter\n:one-7-0-e RETURN\n-A one-7-0-e -p IPv4 -j RETURN\n-A one-7-0-e -p IPv6 -j RETURN\n"
                  f"-A one-7-0-e -p ARP -j RETURN\n-A one-7-0-e -i one-7-0 {log.format('out')} -j CONTINUE\n"
                  f"-A one-7-0-e -i one-7-0 -j DROP\n-A one-7-0-e {log.format('in')} -j CONTINUE\n"
                  "-A one-7-0-e -j DROP\n-A FORWARD -i one-7-0 -j one-7-0-e\n"
                  "-A FORWARD -o one-7-0 -j one-7-0-e\nCOMMIT\n")
    ip4 = next(stdin for argv, stdin in fake.calls if argv[2:3] == ["iptables-restore"])
    assert ip4.startswith("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:one-7-0-i - [0:0]\n")
    assert "*raw" not in ip4  # NIC 0 is in the default conntrack zone: no raw table at all
    assert fake.calls[-3:] == CUT_OVER  # no probe in between: planning saw the tap, this run made the veth
    assert (tmp_path / "vm-7" / "nic-0.json").exists()
    assert not (tmp_path / "vm-7" / "nic-0.intent.json").exists()  # the journal is gone after a complete run
    assert len(fake.calls) == 13  # the process count of one attach (benchmarked)
    assert fake.netlink == ["one-7-0"]  # the tap's qdiscs, asked of the kernel for it alone (netfw.kernel.rtnl)


def test_attach_rejects_a_tap_on_another_bridge_before_touching_anything(mocker, tmp_path):
    links = {None: {"vnbr0": link("vnbr0", "bridge"), "vnbr1": link("vnbr1", "bridge"),
                    "one-7-0": link("one-7-0", "veth", master="vnbr1")}}
    fake = FakeHost(mocker, links=links)
    with pytest.raises(api.InputError, match="tap one-7-0 is on vnbr1, not on the VN bridge vnbr0"):
        api.attach(NicSpec(7, 0, "vnbr0"), state_dir=tmp_path)
    assert [argv[:4] for argv, _ in fake.calls] == [["ip", "-j", "-d", "-force"]]  # one probe, nothing else


@pytest.mark.parametrize("links, message", [
    ({None: {"one-7-0": link("one-7-0", "veth", master="vnbr0")}}, "VN bridge vnbr0 does not exist"),
    ({None: {"vnbr0": link("vnbr0", "veth")}}, "VN bridge vnbr0 is a veth, not a bridge"),
    ({None: {"vnbr0": link("vnbr0", "bridge")}}, "tap one-7-0 does not exist"),
    ({None: {"vnbr0": link("vnbr0", "bridge"), "one-7-0": link("one-7-0", "veth")}},
     "tap one-7-0 is on no bridge, not on the VN bridge vnbr0"),
])
def test_attach_input_errors(mocker, tmp_path, links, message):
    fake = FakeHost(mocker, links=links)
    with pytest.raises(api.InputError, match=message):
        api.attach(NicSpec(7, 0, "vnbr0"), state_dir=tmp_path)
    assert all(_reads(argv) for argv, _ in fake.calls)  # only read-only probes ran


def _reads(argv: list[str]) -> bool:
    """A read-only probe: ip -j, or ovs-vsctl list / br-exists."""
    return "-j" in argv or (argv[0] == "ovs-vsctl" and ("list" in argv or "br-exists" in argv))


def test_a_failing_restore_rolls_back_what_attach_made(mocker, tmp_path):
    fake = FakeHost(mocker, links=HOST, fail="ip6tables-restore")
    with pytest.raises(TransactionError, match="injected failure"):
        api.attach(NicSpec(7, 0, "vnbr0"), state_dir=tmp_path)
    after = [" ".join(argv) for argv, _ in fake.calls]
    failed = next(i for i, c in enumerate(after) if "ip6tables-restore" in c)
    undo = after[failed + 1:]
    # newest first: the failed restore's own family is looked at again (a restore that failed may still have loaded:
    # the fake kernel kept nothing, so nothing to take out), then the iptables rules, the veth, the bridge, the
    # namespace
    assert undo[:2] == ["nsenter --net=/run/netns/one-7 ip6tables-save", "nsenter --net=/run/netns/one-7 iptables-save"]
    assert [c for c in undo if "restore" in c or " del" in c] == [
        "ip link del one-7-0-h",
        "nsenter --net=/run/netns/one-7 ip link del one-br-7-0",
        "ip netns del one-7",
    ]
    assert not (tmp_path / "vm-7" / "nic-0.json").exists()


def test_an_update_that_turns_spoofing_filters_off_deletes_the_jump_before_the_chain(mocker):
    """ebtables keeps `e` (ethertypes) and loses `a`: a chain a jump names cannot be deleted (EBUSY)."""
    spoofing = NicSpec(7, 0, "vnbr0", mac="02:00:0a:00:00:01", ips=("10.0.0.1",), filter_mac=True, filter_ip=True)
    old, new = render(spoofing).family("eb"), render(NicSpec(7, 0, "vnbr0")).family("eb")
    live = "\n".join(["*filter", ":INPUT ACCEPT", ":FORWARD ACCEPT", ":OUTPUT ACCEPT",
                      *(f":{chain} RETURN" for chain in old.chains), *(r for rs in old.chains.values() for r in rs),
                      *old.jumps, ""])
    fake = FakeHost(mocker, saves={("one-7", "eb", "filter"): live}, netns={"one-7"})
    assert FamilyRuleset("one-7", new, stale=tuple(old.chains)).apply()
    (stdin,) = [stdin for argv, stdin in fake.calls if "ebtables-restore" in argv]
    body = stdin.splitlines()[1:-1]
    # `a` goes first (its jump before it), then `d`, which `a` jumped to: no chain is deleted while named
    assert body[-5:] == ["-D FORWARD -i one-7-0 -j one-7-0-a", ":one-7-0-a RETURN", "-X one-7-0-a",
                         ":one-7-0-d RETURN", "-X one-7-0-d"]
    assert ":one-7-0-e RETURN" in body and "-A FORWARD -i one-7-0 -j one-7-0-e" not in body  # kept, not re-added


def test_an_update_that_turns_ip_spoofing_off_deletes_the_anti_spoofing_drop_chain_last(mocker):
    """`-d` is jumped to from `-s`, `-t` and `-l`: deleted before them, the restore would fail (EBUSY)."""
    spoofing = NicSpec(7, 0, "vnbr0", mac="02:00:0a:00:00:01", ips=("2001:db8::1",), filter_mac=True, filter_ip=True)
    old, new = render(spoofing).family("ip6"), render(NicSpec(7, 0, "vnbr0")).family("ip6")
    live = "\n".join(["*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
                      *(f":{chain} - [0:0]" for chain in old.chains), *(r for rs in old.chains.values() for r in rs),
                      *old.jumps, "COMMIT", ""])
    fake = FakeHost(mocker, saves={("one-7", "ip6", "filter"): live}, netns={"one-7"})
    assert FamilyRuleset("one-7", new, stale=tuple(old.chains)).apply()
    (stdin,) = [stdin for argv, stdin in fake.calls if "ip6tables-restore" in argv]
    deleted = [line.split()[1] for line in stdin.splitlines() if line.startswith("-X ")]
    assert deleted == ["one-7-0-s", "one-7-0-t", "one-7-0-l", "one-7-0-d"]


def test_a_tap_named_after_another_nics_veth_end_is_refused(mocker, tmp_path):
    """Since the veth end takes the tap's name, `--tap one-1-0` could name VM 1's veth end: refused, nothing run."""
    veth = link("one-1-0", "veth", master="vnbr0", ifalias="netfw vm=1 nic=0 role=h")
    fake = FakeHost(mocker, links={None: {"vnbr0": link("vnbr0", "bridge"), "one-1-0": veth}})
    with pytest.raises(api.InputError, match="one-1-0 is netfw's own link of VM 1 NIC 0"):
        api.attach(NicSpec(3, 0, "vnbr0", tap="one-1-0"), state_dir=tmp_path)
    assert all(_reads(argv) for argv, _ in fake.calls)


def test_gc_refuses_a_state_directory_that_does_not_exist(tmp_path):
    """A mistyped --state-dir would make every attached NIC an orphan that gc removes: exit 2 instead."""
    from netfw.observe import gc

    with pytest.raises(api.InputError, match="does not exist"):
        gc.collect(tmp_path / "typo")


#: An attached NIC as the kernel shows it: the veth end under the tap's name on the VN bridge, the tap inside.
VETH_END = {"info_kind": "veth", "info_slave_kind": "bridge", "info_slave_data": SLAVE["info_slave_data"]}
ATTACHED = {
    None: {"vnbr0": link("vnbr0", "bridge"),
           "one-7-0": link("one-7-0", None, master="vnbr0", mtu=1450, address="fe:00:0a:00:00:07",
                           ifalias="netfw vm=7 nic=0 role=h", linkinfo=VETH_END)},
    "one-7": {"one-7-0": link("one-7-0", "tun", master="one-br-7-0", mtu=1450),
              "one-br-7-0": link("one-br-7-0", "bridge", mtu=1450, ifalias="netfw vm=7 nic=0 role=br"),
              "one-7-0-f": link("one-7-0-f", "veth", master="one-br-7-0", mtu=1450,
                                ifalias="netfw vm=7 nic=0 role=f")},
}

DETACH = """\
ip -j -d -force -batch -
  link show dev one-7-0
  link show dev one-7-0-h
  link show dev vnbr0
nsenter --net=/run/netns/one-7 ip -j -d -force -batch -
  link show dev one-7-0"""


def test_detach_reads_the_hypervisor_side_once(mocker, tmp_path):
    """Planning reads the tap's name, the staging name and the VN bridge in one probe; the cut-over's teardown uses
    that read instead of its own (issue 12: two processes fewer per detach)."""
    FakeHost(mocker, links=HOST)
    api.attach(NicSpec(7, 0, "vnbr0"), state_dir=tmp_path)
    fake = FakeHost(mocker, links=ATTACHED, netns={"one-7"})
    api.detach(7, 0, state_dir=tmp_path)
    # then at once the cut-over's own commands (the fake kernel does not move links: what follows is the per-object
    # teardown the fake's unchanged namespace asks for, not what a real detach runs)
    assert "\n".join(fake.commands()).startswith(DETACH + "\nip -batch -\n  link set one-7-0 down\n")
    first_run = next(i for i, (argv, _) in enumerate(fake.calls) if "-j" not in argv)
    assert first_run == 2  # before: the tap, then its bridge, then the tap and staging name again, then inside


#: What an earlier netfw left in the raw table for NIC 0: its own conntrack zone 1 (now the default zone 0).
OLD_ZONE_RULE = "-A PREROUTING -i one-br-7-0 -j CT --zone 1"


@pytest.mark.parametrize("raw, flushed", [([OLD_ZONE_RULE], ["0", "1"]), ([], ["0"])])
def test_an_update_retires_nic_0s_zone_rule_and_flushes_its_old_zone_too(mocker, tmp_path, raw, flushed):
    """NIC 0 now uses the namespace's default zone: an update takes out the zone-1 rule an earlier netfw loaded (in
    the same restore as the new rules) and forgets the flows of both zones; without that rule, only zone 0."""
    FakeHost(mocker, links=HOST)
    api.attach(NicSpec(7, 0, "vnbr0"), state_dir=tmp_path)
    saves = {("one-7", fam, None): "\n".join(["*raw", ":PREROUTING ACCEPT [0:0]", *raw, "COMMIT", ""])
             for fam in ("ip", "ip6")}
    fake = FakeHost(mocker, links=ATTACHED, saves=saves, netns={"one-7"})
    api.update(NicSpec(7, 0, "vnbr0", conntrack_max=1000), state_dir=tmp_path)
    restores = {argv[2]: stdin for argv, stdin in fake.calls if "--noflush" in argv}
    for tool in ("iptables-restore", "ip6tables-restore"):
        assert ("*raw\n-D PREROUTING -i one-br-7-0 -j CT --zone 1\nCOMMIT\n" in restores[tool]) == bool(raw)
        assert "-A PREROUTING" not in restores[tool]
    assert [argv[-1] for argv, _ in fake.calls if argv[2:4] == ["conntrack", "-D"]] == flushed


def test_verify_names_a_left_over_zone_rule_of_nic_0(mocker):
    """The retired line is drift until an update takes it out."""
    rules = render(NicSpec(7, 0, "vnbr0"))
    filter_lines = ["*filter", ":INPUT DROP [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]",
                    *(f":{c} - [0:0]" for c in rules.family("ip").chains),
                    *(r for rs in rules.family("ip").chains.values() for r in rs), *rules.family("ip").jumps, "COMMIT"]
    live = "\n".join(["*raw", ":PREROUTING ACCEPT [0:0]", OLD_ZONE_RULE, "COMMIT", *filter_lines, ""])
    FakeHost(mocker, saves={("one-7", "ip", None): live}, netns={"one-7"})
    from netfw.rules.render import zones
    step = FamilyRuleset("one-7", [rules.family("ip"), zones(NicSpec(7, 0, "vnbr0"))[0]])
    assert step.check() == [f"one-7: iptables raw `{OLD_ZONE_RULE}` is left over from an earlier netfw (update "
                            "removes it)"]


def test_attach_says_in_its_journal_that_it_takes_the_tap_right_before_it_does(mocker, tmp_path):
    """The journal records the moment netfw takes the tap: only a tap netfw took is ever put back (issue 19)."""
    fake = FakeHost(mocker, links=HOST)
    journal = tmp_path / "vm-7" / "nic-0.intent.json"
    taken = []

    def spy(argv, stdin, timeout):
        if argv[0] != "tc" and "-j" not in argv:  # every command that changes something
            taken.append((" ".join(argv), json.loads(journal.read_text())["taken"]))
        return fake._execute(argv, stdin, timeout)

    runner._execute.side_effect = spy
    api.attach(NicSpec(7, 0, "vnbr0"), state_dir=tmp_path)
    cut = [t for _, t in taken].index(True)  # the cut-over, then its commands in the namespace
    assert cut == 9 and [t for _, t in taken] == [False] * cut + [True] * (len(taken) - cut)
    assert [argv.split()[:3] for argv, _ in taken[cut:]] == [["ip", "-batch", "-"],
                                                             ["nsenter", "--net=/run/netns/one-7", "ip"],
                                                             ["nsenter", "--net=/run/netns/one-7", "bridge"]]
    assert not journal.exists()


def _recorded(tmp_path, bridge: str = "vnbr0") -> None:
    """VM 7 NIC 0's record (attached on bridge, with the port the tap had there)."""
    applied = state.Applied(NicSpec(7, 0, bridge), 1450, port=api.Port("linux", bridge, None))
    state.write(state.nic_path(tmp_path, 7, 0), state.document(applied))


#: After a reboot: no namespace, no veth; VM 7 runs again with a new tap, on another VN bridge.
REBOOTED = {None: {"vnbr0": link("vnbr0", "bridge"), "vnbr1": link("vnbr1", "bridge"),
                   "one-7-0": link("one-7-0", "tun", master="vnbr1")}}


@pytest.mark.parametrize("master, up", [("vnbr1", True), ("vnbr0", False), (None, True)])
def test_detach_of_a_stale_record_never_touches_the_tap(mocker, tmp_path, master, up):
    """The record says vnbr0; the tap in the hypervisor namespace is on vnbr1, or down on vnbr0 (quarantined), or
    on no bridge: detach forgets the record and runs nothing that changes a link (it put the tap on vnbr0, up)."""
    _recorded(tmp_path)
    links = {None: {**REBOOTED[None], "one-7-0": link("one-7-0", "tun", master=master, up=up)}}
    fake = FakeHost(mocker, links=links)
    api.detach(7, 0, state_dir=tmp_path)
    assert [c for c in fake.commands() if not c.startswith(" ") and "-j" not in c.split()] == []
    assert not (tmp_path / "vm-7" / "nic-0.json").exists()


def _journal(tmp_path, op: str, taken: bool) -> None:
    applied = state.Applied(NicSpec(7, 0, "vnbr0"), 1450, port=api.Port("linux", "vnbr0", None))
    with state.opened(tmp_path) as records:
        records.write(7, 0, state.document(applied, op, taken), intent=True)


#: A detach killed after the tap left the namespace, before it joined its VN bridge: the tap on no bridge, down,
#: the veth end under its staging name, the namespace with the NIC's bridge and veth end.
LOOSE = {None: {"vnbr0": link("vnbr0", "bridge"), "one-7-0": link("one-7-0", "tun", up=False),
                "one-7-0-h": link("one-7-0-h", "veth", ifalias="netfw vm=7 nic=0 role=h", up=False)},
         "one-7": {k: v for k, v in ATTACHED["one-7"].items() if k != "one-7-0"}}


@pytest.mark.parametrize("taken", [True, False])
def test_detach_puts_back_only_a_tap_that_a_killed_run_took(mocker, tmp_path, taken):
    """The same loose tap: put back on its bridge when the killed run's journal says netfw took it; else left."""
    _recorded(tmp_path)
    _journal(tmp_path, "detach", taken)
    fake = FakeHost(mocker, links=LOOSE, netns={"one-7"})
    api.detach(7, 0, state_dir=tmp_path)
    joins = [stdin for argv, stdin in fake.calls if stdin and "link set one-7-0 master" in stdin]
    assert joins == (["link set one-7-0 master vnbr0\nlink set one-7-0 up\n"] if taken else [])
    assert not (tmp_path / "vm-7" / "nic-0.intent.json").exists()


def test_detach_leaves_a_loose_tap_whose_veth_end_is_gone(mocker, tmp_path):
    """A journal that says netfw took the tap, but no veth end (a reboot since): the tap is a new one, left alone."""
    _recorded(tmp_path)
    _journal(tmp_path, "detach", True)
    links = {None: {k: v for k, v in LOOSE[None].items() if k != "one-7-0-h"}}
    fake = FakeHost(mocker, links=links)
    api.detach(7, 0, state_dir=tmp_path)
    assert [c for c in fake.commands() if not c.startswith(" ") and "-j" not in c.split()] == []
