"""Concurrent `netfw` processes (issue 10, item 7): 20 attaches, updates and detaches at once over 10 VMs x 2 NICs all
exit 0 on either iptables backend, and leave exactly the end state their order-independent design determines.

The design: every NIC follows a fixed sequence, one operation per round, and a round starts its 20 processes at once
(one per NIC), so in a round two processes of one VM contend for netfw's per-VM lock and the ten VMs run in parallel.
Round 0 attaches every NIC; rounds 1 to 3 run a rotation of (update, detach, attach), which is valid from the attached
state whatever the rotation. A rotation fixes the NIC's end state, whatever order the lock gives the two NICs of a VM:

    rotation 0: update, detach, attach   -> attached, PING_IN (the attach's rules)
    rotation 1: detach, attach, update   -> attached, NOTHING_IN (the update's rules)
    rotation 2: attach, update, detach   -> detached (its first attach finds everything in place: nothing to change)

The VMs take every pair of rotations (VM 9: both NICs detached, so the namespace goes with the second detach), so every
pair of operations meets on one VM in some round: two attaches creating one namespace, a detach deleting it while an
attach adds a NIC, two detaches, an update beside a detach...

Addresses: 10.70.0.V/24 (NIC 0, vnbr0) and 10.70.1.V/24 (NIC 1, vnbr1); every peer is a namespace of this lab.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netfw.model import names
from netfw import state
from netfw.model.rules import parse_rules

from .lab import links, netns_list, ping, sh

NETFW = Path(sys.executable).with_name("netfw")  # the venv's console script, whatever PATH holds

PING_IN = [{"PROTOCOL": "ICMP", "RULE_TYPE": "inbound"}, {"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]
NOTHING_IN = [{"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]

CYCLE = ("update", "detach", "attach")
#: VM -> (rotation of NIC 0, rotation of NIC 1): every ordered pair once, and VM 10 one more.
ROTATIONS = {1: (0, 0), 2: (0, 1), 3: (0, 2), 4: (1, 0), 5: (1, 1), 6: (1, 2), 7: (2, 0), 8: (2, 1), 9: (2, 2),
             10: (0, 1)}
NICS = [(vm, nic) for vm in ROTATIONS for nic in (0, 1)]
ROUNDS = 4
#: What each rotation leaves: the rules the NIC ends with, None when it ends detached.
END = {0: PING_IN, 1: NOTHING_IN, 2: None}


def operation(vm: int, nic: int, round_: int) -> str:
    return "attach" if round_ == 0 else CYCLE[(ROTATIONS[vm][nic] + round_ - 1) % len(CYCLE)]


def bridge(nic: int) -> str:
    return f"vnbr{nic}"


def address(vm: int, nic: int) -> str:
    return f"10.70.{nic}.{vm}"


def argv(backend: str, op: str, vm: int, nic: int, files: dict[str, str]) -> list[str]:
    """The command line of one operation; the backend is given to every one (update and detach ignore it: a NIC
    keeps the backend it was attached with)."""
    head = [str(NETFW), "--backend", backend, op, str(vm), str(nic)]
    if op == "attach":
        return head + ["--bridge", bridge(nic), "--rules", files["ping"]]
    if op == "update":
        return head + ["--rules", files["nothing"]]
    return head


def run_round(backend: str, round_: int, files: dict[str, str], out: Path) -> float:
    """Start the round's 20 processes at once (output to files: a full pipe would hold a process back), wait for
    all; assert each exited 0 without an ERROR line; return the wall time of the round."""
    procs = {}
    start = time.monotonic()
    for vm, nic in NICS:
        op = operation(vm, nic, round_)
        log = out / f"r{round_}-{vm}-{nic}-{op}"
        with open(f"{log}.out", "w") as stdout, open(f"{log}.err", "w") as stderr:
            procs[(vm, nic, op)] = (subprocess.Popen(argv(backend, op, vm, nic, files), stdout=stdout, stderr=stderr,
                                                     stdin=subprocess.DEVNULL), log)
    codes = {key: proc.wait(timeout=300) for key, (proc, _) in procs.items()}
    elapsed = time.monotonic() - start
    failed = {key: (code, Path(f"{procs[key][1]}.err").read_text()) for key, code in codes.items() if code != 0}
    assert failed == {}, f"round {round_}: {failed}"
    for key, (_, log) in procs.items():
        err = Path(f"{log}.err").read_text()
        assert "ERROR" not in err and "Traceback" not in err, (key, err)
        done = Path(f"{log}.out").read_text().splitlines()
        assert len(done) == 1 and f"VM {key[0]} NIC {key[1]}" in done[0], (key, done)
    return elapsed


def netfw(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(NETFW), *args], capture_output=True, text=True, timeout=120)


def journals(state_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(state_dir)) for p in state_dir.rglob("*.intent.json"))


def ours(link: dict, vm: int, nic: int) -> bool:
    return names.parse_alias(link.get("ifalias")) is not None and names.parse_alias(link["ifalias"])[:2] == (vm, nic)


def nic_objects(vm: int, nic: int, backend: str) -> list[str]:
    """Everything of VM vm NIC nic netfw could have left: links with its alias or its names (hypervisor and VM
    namespace), and chains or ipsets named after it in the VM namespace."""
    mine = {names.veth_host(vm, nic), names.veth_fw(vm, nic), names.bridge(vm, nic)}
    left = [f"link {l['ifname']}" for l in links(None) if ours(l, vm, nic) or l["ifname"] in mine]
    ns = names.netns(vm)
    if ns not in netns_list():
        return left
    left += [f"{ns} link {l['ifname']}" for l in links(ns) if ours(l, vm, nic) or l["ifname"] in mine]
    prefix = f"one-{vm}-{nic}-"
    for tool in (f"iptables-{backend}-save", f"ip6tables-{backend}-save", "ebtables-save"):
        text = sh("nsenter", f"--net=/run/netns/{ns}", tool).stdout
        left += [f"{ns} {tool}: {line}" for line in text.splitlines() if prefix in line]
    text = sh("nsenter", f"--net=/run/netns/{ns}", "ipset", "list", "-n").stdout
    left += [f"{ns} ipset {name}" for name in text.split() if name.startswith(prefix)]
    return left


def pinged(src: tuple[int, int], dst: tuple[int, int]) -> bool:
    """An echo from VM NIC src's guest to VM NIC dst's address (both on the same VN bridge) gets a reply."""
    return ping(f"g{src[0]}-{src[1]}", address(*dst), count=3)


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_20_concurrent_attaches_updates_detaches_end_determined(lab, state_dir, tmp_path, backend):
    for nic in (0, 1):
        lab.bridge(bridge(nic))
    for vm, nic in NICS:
        lab.vm(vm, nic, f"{address(vm, nic)}/24", bridge=bridge(nic))
    files = {}
    for name, rules in (("ping", PING_IN), ("nothing", NOTHING_IN)):
        files[name] = str(tmp_path / f"{name}.json")
        Path(files[name]).write_text(json.dumps(rules))
    out = tmp_path / "out"
    out.mkdir()

    times = []
    for round_ in range(ROUNDS):
        times.append(run_round(backend, round_, files, out))
        assert journals(state_dir) == [], f"round {round_}"  # every operation finished: no journal left
    print(f"\n{backend}: rounds of 20 concurrent netfw processes took "
          + ", ".join(f"{t:.1f}" for t in times) + f" s (total {sum(times):.1f} s)")

    end = {(vm, nic): END[ROTATIONS[vm][nic]] for vm, nic in NICS}
    attached = {key for key, rules in end.items() if rules is not None}
    assert len(attached) == 14 and 9 not in {vm for vm, _ in attached}  # the design (VM 9: both detached)

    # what was applied last, as the records hold it (and each NIC with the backend it was attached with)
    recorded = set()
    for vm, nic in NICS:
        applied = state.load(state_dir, vm, nic)
        if (vm, nic) in attached:
            assert applied is not None, (vm, nic)
            assert applied.spec.rules == parse_rules(end[(vm, nic)]) and applied.backend == backend, (vm, nic)
            recorded.add((vm, nic))
        else:
            assert applied is None, (vm, nic)
    assert recorded == attached

    # verify: every VM with an attached NIC is clean, and knows exactly those NICs
    for vm in sorted({vm for vm, _ in attached}):
        res = netfw("verify", str(vm), "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        report = json.loads(res.stdout)
        assert report["ok"] is True and set(report["nics"]) == {str(n) for v, n in attached if v == vm}, report

    # every detached NIC: its tap up on its VN bridge, nothing of netfw left (VM 9's namespace gone with it)
    hypervisor = {l["ifname"]: l for l in links(None)}
    for vm, nic in sorted(set(NICS) - attached):
        tap = hypervisor[names.tap(vm, nic)]
        assert "ifalias" not in tap and tap["master"] == bridge(nic) and "UP" in tap["flags"], tap
        assert nic_objects(vm, nic, backend) == [], (vm, nic)
    assert names.netns(9) not in netns_list()
    assert {ns for ns in netns_list() if ns.startswith("one-")} == {names.netns(vm) for vm, _ in attached}

    # status: exit 0, every NIC netfw knows is attached, and no other
    res = netfw("status", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    health = {(e["vm"], e["nic"]): e["health"] for e in json.loads(res.stdout)["nics"]}
    assert health == {key: "attached" for key in attached}

    # traffic, on vnbr0: VM 1 (PING_IN), VM 4 (NOTHING_IN), VM 7 (detached)
    assert end[(1, 0)] == PING_IN and end[(4, 0)] == NOTHING_IN and end[(7, 0)] is None
    assert pinged((4, 0), (1, 0))  # between two attached VMs (out of VM 4, into VM 1)
    assert not pinged((1, 0), (4, 0))  # the update's rules are in force on VM 4: no echo in
    assert pinged((7, 0), (1, 0)) and pinged((1, 0), (7, 0))  # a detached VM is back on its VN bridge, unfiltered
    # and on vnbr1: VM 4 NIC 1 (PING_IN), VM 2 NIC 1 (NOTHING_IN), VM 3 NIC 1 (detached)
    assert end[(4, 1)] == PING_IN and end[(2, 1)] == NOTHING_IN and end[(3, 1)] is None
    assert pinged((2, 1), (4, 1)) and not pinged((4, 1), (2, 1)) and pinged((3, 1), (4, 1))
