"""kill -9 at any command of attach, update and detach (issue 10): the next netfw call for the VM (attach again,
update again, or detach) exits 0 and ends fully attached with exactly the asked-for rules, or fully detached with
the tap up on its VN bridge; nothing leaks (namespaces, links, rules, ipsets, tc, records, journals).

netfw runs as a real process whose programs are PATH wrappers (faults.py) that SIGKILL it before or after the
N-th command, as an OOM killer or a timeout would.
"""

from __future__ import annotations

import json

import pytest

from netfw import api
from netfw.model.serial import spec_from_dict
from netfw.model.rules import load_rules_json

from .faults import Faults
from .lab import ping, sh, snapshot

RULES_A = '[{"PROTOCOL": "TCP", "RULE_TYPE": "inbound", "RANGE": "22", "IP": "10.9.0.3", "SIZE": "300"},' \
          ' {"PROTOCOL": "ICMP", "RULE_TYPE": "inbound"}, {"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]'
RULES_B = '[{"PROTOCOL": "ICMP", "RULE_TYPE": "inbound", "IP": "10.9.0.2", "SIZE": "1"},' \
          ' {"PROTOCOL": "ALL", "RULE_TYPE": "outbound"}]'


@pytest.fixture
def kit(lab, tmp_path, state_dir):
    lab.bridge()
    g1, g2 = lab.vm(1, 0, "10.9.0.1/24", mac="02:00:0a:09:00:01"), lab.vm(2, 0, "10.9.0.2/24")
    api.attach(api.NicSpec(2, 0, "vnbr0"))  # another VM, attached: undisturbed throughout
    for name, text in (("a.json", RULES_A), ("b.json", RULES_B)):
        (tmp_path / name).write_text(text)
    faults = Faults(tmp_path / "faults")

    def attach_argv(rules: str = "a.json") -> list[str]:
        return ["attach", "1", "0", "--bridge", "vnbr0", "--rules", str(tmp_path / rules), "--mac",
                "02:00:0a:09:00:01", "--ip", "10.9.0.1", "--filter-mac-spoofing", "--filter-ip-spoofing",
                "--inbound-avg", "5000", "--outbound-avg", "5000"]

    ok = faults.run(attach_argv())  # one clean cycle: the tap then carries libvirt's limits, as it will after any
    assert ok.code == 0, ok.stderr
    assert faults.run(["detach", "1", "0"]).code == 0
    return {"faults": faults, "g1": g1, "g2": g2, "attach": attach_argv, "state": state_dir,
            "detached": snapshot(), "update": ["update", "1", "0", "--rules", str(tmp_path / "b.json")]}


def files(state_dir) -> list[str]:
    return sorted(str(p.relative_to(state_dir)) for p in state_dir.rglob("*.json"))


def assert_detached(kit, where: str) -> None:
    assert snapshot() == kit["detached"], f"{where}: not exactly detached"
    assert files(kit["state"]) == ["vm-2/nic-0.json"], f"{where}: records or journals left"
    tap = json.loads(sh("ip", "-j", "link", "show", "one-1-0").stdout)[0]
    assert tap["master"] == "vnbr0" and "UP" in tap["flags"], where


def assert_attached(kit, rules: str, where: str) -> None:
    res = kit["faults"].run(["verify", "1", "--json"])
    assert res.code == 0, f"{where}: {res.stdout}"
    record = json.loads((kit["state"] / "vm-1" / "nic-0.json").read_text())
    want = load_rules_json((kit["faults"].root.parent / rules).read_text())
    assert spec_from_dict(record["spec"]).rules == want, f"{where}: not the asked-for rules"
    assert files(kit["state"]) == ["vm-1/nic-0.json", "vm-2/nic-0.json"], f"{where}: {files(kit['state'])}"
    assert ping(kit["g2"], "10.9.0.1"), where  # ICMP from 10.9.0.2 is allowed by both rule sets


def calls(kit, argv) -> int:
    run = kit["faults"].run(argv)
    assert run.code == 0, run.stderr
    return len(run.calls)


def kill_points(total: int):
    """kill before the first command, and after each one: every point of the run."""
    yield 1, "kill-before"
    for n in range(1, total + 1):
        yield n, "kill-after"


def test_attach_killed_anywhere_then_attach_again_or_detach(kit):
    f = kit["faults"]
    total = calls(kit, kit["attach"]())
    assert calls(kit, ["detach", "1", "0"]) > 0
    for n, mode in kill_points(total):
        where = f"attach killed ({mode}) at command {n}"
        assert f.run(kit["attach"](), at=n, mode=mode).code == -9, where
        res = f.run(kit["attach"]())  # the next call: attach again
        assert res.code == 0, f"{where}, attach again: {res.stderr}"
        assert_attached(kit, "a.json", f"{where}, attach again")
        assert f.run(["detach", "1", "0"]).code == 0
        assert_detached(kit, f"{where}, attach again, detach")

        assert f.run(kit["attach"](), at=n, mode=mode).code == -9, where
        res = f.run(["detach", "1", "0"])  # the next call: detach
        assert res.code == 0, f"{where}, detach: {res.stderr}"
        assert_detached(kit, f"{where}, detach")


def test_update_killed_anywhere_then_update_again(kit):
    f = kit["faults"]
    assert f.run(kit["attach"]()).code == 0
    total = calls(kit, kit["update"])
    assert f.run(kit["attach"]()).code == 0  # back to rules A (attach updates an attached NIC)
    for n, mode in kill_points(total):
        where = f"update killed ({mode}) at command {n}"
        assert f.run(kit["update"], at=n, mode=mode).code == -9, where
        res = f.run(kit["update"])
        assert res.code == 0, f"{where}, update again: {res.stderr}"
        assert_attached(kit, "b.json", f"{where}, update again")
        assert f.run(kit["attach"]()).code == 0, where  # rules A again for the next round
    assert f.run(["detach", "1", "0"]).code == 0
    assert_detached(kit, "after the update rounds")


def test_detach_killed_anywhere_then_detach_again_or_attach(kit):
    f = kit["faults"]
    assert f.run(kit["attach"]()).code == 0
    total = calls(kit, ["detach", "1", "0"])
    for n, mode in kill_points(total):
        where = f"detach killed ({mode}) at command {n}"
        assert f.run(kit["attach"]()).code == 0, where
        assert f.run(["detach", "1", "0"], at=n, mode=mode).code == -9, where
        res = f.run(["detach", "1", "0"])  # the next call: detach again
        assert res.code == 0, f"{where}, detach again: {res.stderr}"
        assert_detached(kit, f"{where}, detach again")

        assert f.run(kit["attach"]()).code == 0, where
        assert f.run(["detach", "1", "0"], at=n, mode=mode).code == -9, where
        res = f.run(kit["attach"]())  # the next call: attach
        assert res.code == 0, f"{where}, attach: {res.stderr}"
        assert_attached(kit, "a.json", f"{where}, attach")
        assert f.run(["detach", "1", "0"]).code == 0
        assert_detached(kit, f"{where}, attach, detach")
