"""netfw as OpenNebula's network driver, end to end in the sandbox: the scripts under scripts/opennebula/ are run
exactly as OpenNebula runs them (base64 VM document on stdin, the same arguments), against simulated VMs.

Addresses: 10.61.0.0/24 on vnbr0, 10.61.1.0/24 on vnbr1; every peer is a namespace this test creates.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from netfw import api
from netfw.model import names

from .. import oned
from .lab import netns_list, snapshot

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts" / "opennebula"
DATA = ROOT / "tests" / "data" / "one"
NETFW = ROOT / ".venv" / "bin" / "netfw"
VM = 7


class Host:
    """A simulated hypervisor: the sandbox itself, or a child sandbox entered with nsenter (its own netns and
    /run/netns), each with its own state directory."""

    def __init__(self, state_dir: Path, enter: list[str] | None = None, shape: str = "oned"):
        self.state_dir, self.enter, self.shape = state_dir, enter or [], shape
        state_dir.mkdir(mode=0o700, exist_ok=True)  # as the operator does: `netfw one` creates only the default
        self.listeners: list[tuple[str, subprocess.Popen]] = []

    def sh(self, *argv: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.enter, *argv], input=stdin, capture_output=True, text=True, check=check)

    def stdin(self, action: str, doc: str) -> str:
        """What oned writes to the action's standard input for this whole VM document, in the host's shape (a bad
        document, which oned would never build, as it is)."""
        xml = (DATA / doc).read_bytes()
        if doc.startswith("bad/"):
            return oned.one_line(xml).decode()
        return oned.stdin_for(action, xml, self.shape).decode()

    def env(self) -> dict[str, str]:
        env = {**os.environ, "NETFW_SUDO": "0", "NETFW_BIN": str(NETFW), "NETFW_CONF": "/nonexistent",
               "NETFW_STATE_DIR": str(self.state_dir)}
        env.pop("NETFW_VN_MADS", None)
        return env

    def driver(self, action: str, *args: str, doc: str) -> subprocess.CompletedProcess:
        """Run scripts/opennebula/<action> ARGS with what oned sends on stdin (way B: netfw is the driver)."""
        return subprocess.run([*self.enter, str(SCRIPTS / action), *args], input=self.stdin(action, doc),
                              capture_output=True, text=True, env=self.env())

    def ok(self, action: str, *args: str, doc: str) -> str:
        res = self.driver(action, *args, doc=doc)
        assert res.returncode == 0, f"{action} exited {res.returncode}: {res.stderr}"
        assert "ERROR" not in res.stderr
        return res.stderr

    # --- the lab on this host -------------------------------------------------------------------------------------

    def bridge(self, name: str) -> None:
        self.sh("ip", "link", "add", name, "type", "bridge")
        self.sh("ip", "link", "set", name, "up")

    def guest(self, guest: str, tap: str, bridge: str, *ips: str) -> str:
        """A guest namespace whose eth0 is the peer of `tap` (a VM tap, or a plain port for a peer) on bridge."""
        self.sh("ip", "netns", "add", guest)
        self.sh("ip", "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", guest)
        self.sh("ip", "link", "set", tap, "master", bridge, "up")
        for ip in ips:
            self.sh("ip", "-n", guest, "addr", "add", ip, "dev", "eth0")
        self.sh("ip", "-n", guest, "link", "set", "eth0", "up")
        self.sh("ip", "-n", guest, "link", "set", "lo", "up")
        return guest

    def vm_nic(self, nic: int, bridge: str, ip: str, mac: str) -> str:
        guest = self.guest(f"g{VM}-{nic}", f"one-{VM}-{nic}", bridge, ip)
        self.sh("ip", "-n", guest, "link", "set", "eth0", "address", mac)
        return guest

    def listen(self, guest: str, *ports: int) -> None:
        """TCP listeners on every port in guest (they die with the namespace's processes at reset)."""
        code = ("import socket,select\nss=[]\nfor p in %r:\n s=socket.socket();s.setsockopt(1,2,1);"
                "s.bind(('0.0.0.0',p));s.listen(64);ss.append(s)\nwhile True:\n for s in select.select(ss,[],[])[0]:"
                "\n  s.accept()[0].close()\n" % (list(ports),))
        proc = subprocess.Popen([*self.enter, "ip", "netns", "exec", guest, "python3", "-c", code])
        self.listeners.append((guest, proc))
        for _ in range(100):  # wait until every port listens
            out = self.sh("ip", "netns", "exec", guest, "ss", "-Hltn").stdout
            if all(f":{port} " in out for port in ports):
                return
            time.sleep(0.05)
        raise AssertionError(f"listeners on {ports} in {guest} did not start")

    def stop(self, guest: str | None = None) -> None:
        """Stop the listeners (of one guest)."""
        for g, proc in list(self.listeners):
            if guest in (None, g):
                proc.kill()
                proc.wait()
                self.listeners.remove((g, proc))

    def leave(self, guest: str, tap: str) -> None:
        """The VM stops or leaves: its guest namespace goes, and with it the tap (wherever netfw put it). In the
        hypervisor namespace the tap's name may be held by netfw's veth end: that one is not the tap."""
        self.stop(guest)
        self.sh("ip", "netns", "del", guest)
        for ns in (None, f"one-{VM}"):
            where = ["-n", ns] if ns else []
            for _ in range(50):  # the namespace (and its veth) goes once no process is left in it
                res = self.sh("ip", *where, "-j", "link", "show", tap, check=False)
                if res.returncode or json.loads(res.stdout)[0].get("ifalias", "").startswith("netfw "):
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"tap {tap} is still there after {guest} left")

    def ping(self, guest: str, address: str, source: str | None = None) -> bool:
        extra = ["-I", source] if source else []
        return self.sh("ip", "netns", "exec", guest, "ping", "-c", "1", "-W", "1", *extra, address,
                       check=False).returncode == 0

    def tcp(self, guest: str, address: str, port: int) -> bool:
        return self.sh("ip", "netns", "exec", guest, "nc", "-z", "-w", "1", address, str(port),
                       check=False).returncode == 0

    def netfw_left(self) -> list[str]:
        """Everything of VM 7 netfw could have left on this host: namespace, veth ends, state records."""
        left = [ns for ns in self.sh("ip", "netns", "list").stdout.split() if ns == f"one-{VM}"]
        links = json.loads(self.sh("ip", "-j", "link", "show").stdout)
        left += [link["ifname"] for link in links if link["ifname"] in {names.veth_host(VM, n) for n in range(4)}
                 or link.get("ifalias", "").startswith(f"netfw vm={VM} ")]
        left += [str(p) for p in self.state_dir.rglob(f"vm-{VM}/*.json")]
        return left


@pytest.fixture(params=oned.SHAPES)
def shape(request) -> str:
    """Every test here runs with what oned sends each action, and with `onevm show -x` documents (issue 18)."""
    return request.param


@pytest.fixture
def host(lab, state_dir, shape):
    h = Host(state_dir, shape=shape)
    for br in ("vnbr0", "vnbr1"):
        h.bridge(br)
    yield h
    h.stop()


@pytest.fixture
def destination(tmp_path, shape):
    """A second hypervisor: a child sandbox (user, net and mount namespaces, its own /run/netns) kept alive by a
    sleeping process; commands enter it with nsenter. Everything in it vanishes with that process."""
    proc = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--net", "--mount", "--fork", "--kill-child", "sh", "-c",
         "mount -t tmpfs -o mode=755 tmpfs /run/netns && ip link set lo up && echo $$ && exec sleep 600"],
        stdout=subprocess.PIPE, text=True)
    pid = proc.stdout.readline().strip()
    assert pid.isdigit(), "the destination sandbox did not start"
    h = Host(tmp_path / "destination-state", ["nsenter", "-t", pid, "-U", "-m", "-n", "--preserve-credentials"],
             shape)
    for br in ("vnbr0", "vnbr1"):
        h.bridge(br)
    yield h
    h.stop()
    proc.kill()
    proc.wait()


def start_vm(h: Host) -> dict[str, str]:
    """VM 7 (NIC 0 on vnbr0, NIC 1 on vnbr1) and peers: p0 (10.61.0.2) on vnbr0, p1/p2 (10.61.1.2/.3) on vnbr1."""
    g = {
        "vm0": h.vm_nic(0, "vnbr0", "10.61.0.7/24", "02:00:0a:3d:00:07"),
        "vm1": h.vm_nic(1, "vnbr1", "10.61.1.7/24", "02:00:0a:3d:01:07"),
        "p0": h.guest("p0", "peer0", "vnbr0", "10.61.0.2/24"),
        "p1": h.guest("p1", "peer1", "vnbr1", "10.61.1.2/24"),
        "p2": h.guest("p2", "peer2", "vnbr1", "10.61.1.3/24"),
    }
    h.listen(g["vm0"], 22, 8080)
    h.listen(g["vm1"], 80)
    h.listen(g["p1"], 22, 5432)
    return g


def matrix(h: Host, g: dict[str, str]) -> dict[str, bool]:
    """Which flows pass: allowed ones must, forbidden ones must be dropped."""
    return {
        "p0 -> vm:22": h.tcp(g["p0"], "10.61.0.7", 22),
        "p0 -> vm:8080": h.tcp(g["p0"], "10.61.0.7", 8080),
        "p0 ping vm": h.ping(g["p0"], "10.61.0.7"),
        "vm ping p0": h.ping(g["vm0"], "10.61.0.2"),
        "p1 -> vm:80": h.tcp(g["p1"], "10.61.1.7", 80),
        "p2 -> vm:80": h.tcp(g["p2"], "10.61.1.7", 80),
        "p1 ping vm": h.ping(g["p1"], "10.61.1.7"),
        "vm -> p1:5432": h.tcp(g["vm1"], "10.61.1.2", 5432),
        "vm -> p1:22": h.tcp(g["vm1"], "10.61.1.2", 22),
    }


#: e2e_two_nics.xml: SG 100 (NIC 0) in TCP 22, in ICMP echo from 10.61.0.0/24, out all;
#: SG 101 (NIC 1) in TCP 80 from 10.61.1.2 only, out TCP 5432.
FIRST = {"p0 -> vm:22": True, "p0 -> vm:8080": False, "p0 ping vm": True, "vm ping p0": True,
         "p1 -> vm:80": True, "p2 -> vm:80": False, "p1 ping vm": False, "vm -> p1:5432": True, "vm -> p1:22": False}
#: e2e_sg_changed.xml: SG 100 in TCP 8080 instead of 22; SG 101 in TCP 80 from 10.61.1.2-3, in ICMP echo.
CHANGED = {**FIRST, "p0 -> vm:22": False, "p0 -> vm:8080": True, "p2 -> vm:80": True, "p1 ping vm": True}
#: No firewall at all.
OPEN = {k: True for k in FIRST}


def spoofed_ping_passes(h: Host, g: dict[str, str]) -> bool:
    """NIC 0 has anti-spoofing: a packet from an address that is not the NIC's is dropped."""
    h.sh("ip", "-n", g["vm0"], "addr", "replace", "10.61.0.99/24", "dev", "eth0")
    try:
        return h.ping(g["vm0"], "10.61.0.2", source="10.61.0.99")
    finally:
        h.sh("ip", "-n", g["vm0"], "addr", "del", "10.61.0.99/24", "dev", "eth0")


def test_post_update_sg_clean_as_opennebula_calls_them(host):
    g = start_vm(host)
    assert matrix(host, g) == OPEN
    before = snapshot()

    assert host.driver("pre", doc="e2e_two_nics.xml").returncode == 0
    assert snapshot() == before  # pre only checks

    log = host.ok("post", "one-7", "host-a", doc="e2e_two_nics.xml")
    assert "INFO: netfw post: VM 7 NIC 0, 1" in log
    assert api.verify(VM) == {0: [], 1: []}
    assert "one-7-3" not in json.dumps(snapshot())  # the ovswitch NIC is not handled
    assert matrix(host, g) == FIRST
    assert not spoofed_ping_passes(host, g)
    assert host.ping(g["vm0"], "10.61.0.2")

    host.ok("update_sg", "one-7", doc="e2e_sg_changed.xml")
    assert matrix(host, g) == CHANGED
    assert not spoofed_ping_passes(host, g)
    assert api.verify(VM) == {0: [], 1: []}

    host.ok("clean", "host-a", doc="e2e_sg_changed.xml")
    assert host.netfw_left() == []
    assert snapshot() == before
    assert matrix(host, g) == OPEN


def test_hot_attach_and_detach_touch_only_that_nic(host, state_dir):
    g = start_vm(host)
    host.ok("post", "one-7", "host-a", doc="e2e_sg_changed.xml")
    g2 = host.vm_nic(2, "vnbr0", "10.61.0.17/24", "02:00:0a:3d:00:11")
    host.listen(g2, 22, 8080)
    records = {p.name: p.read_text() for p in state_dir.rglob("nic-*.json")}
    before = snapshot()
    nic2 = ("one-7-2", "one-br-7-2", "one-7-2-f")

    host.ok("pre", doc="e2e_hot_attach.xml")
    host.ok("post", "one-7", "host-a", doc="e2e_hot_attach.xml")
    assert api.verify(VM) == {0: [], 1: [], 2: []}
    assert {p.name: p.read_text() for p in state_dir.rglob("nic-*.json") if p.name != "nic-2.json"} == records
    assert [link for link in snapshot()["one-7"]["links"] if link["ifname"] not in nic2] == before["one-7"]["links"]
    assert host.tcp(g["p0"], "10.61.0.17", 8080) and not host.tcp(g["p0"], "10.61.0.17", 22)
    assert matrix(host, g) == CHANGED

    host.ok("clean", "host-a", doc="e2e_hot_attach.xml")  # hot detach: NIC 2 only
    assert api.verify(VM) == {0: [], 1: []}
    assert host.tcp(g["p0"], "10.61.0.17", 22)  # NIC 2 is back on vnbr0, unfiltered
    assert matrix(host, g) == CHANGED

    host.ok("clean", "host-a", doc="e2e_sg_changed.xml")
    assert host.netfw_left() == []


def test_update_nic_reapplies_addresses_and_mtu_of_that_network(host):
    g = start_vm(host)
    host.ok("post", "one-7", "host-a", doc="e2e_sg_changed.xml")
    before = snapshot()

    host.ok("update_nic", "one-7", "1", doc="e2e_update_nic.xml")  # NIC 1's network: nothing changed
    assert snapshot() == before

    host.ok("update_nic", "one-7", "0", doc="e2e_update_nic.xml")
    mtus = {link["ifname"]: link["mtu"] for link in snapshot()["one-7"]["links"]}
    assert mtus["one-br-7-0"] == mtus["one-7-0-f"] == 1400 and mtus["one-br-7-1"] == 1500
    assert api.verify(VM) == {0: [], 1: []}
    assert not host.ping(g["vm0"], "10.61.0.2")  # 10.61.0.7 is no longer NIC 0's address: spoofing
    host.sh("ip", "-n", g["vm0"], "addr", "del", "10.61.0.7/24", "dev", "eth0")  # (the secondary would go with it)
    host.sh("ip", "-n", g["vm0"], "addr", "add", "10.61.0.8/24", "dev", "eth0")
    assert host.ping(g["vm0"], "10.61.0.2")
    assert host.tcp(g["p0"], "10.61.0.8", 8080) and not host.tcp(g["p0"], "10.61.0.8", 22)

    again = snapshot()
    log = host.ok("update_nic", "one-7", "0", doc="e2e_update_nic.xml")  # again: nothing to change
    assert "INFO: netfw update_nic: VM 7 NIC 0: no change" in log
    assert snapshot() == again
    host.ok("clean", "host-a", doc="e2e_update_nic.xml")
    assert host.netfw_left() == []


def errors(res: subprocess.CompletedProcess) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith("ERROR:")]


def test_post_with_a_bad_nic_touches_nothing(host):
    start_vm(host)
    host.sh("ip", "link", "set", "one-7-1", "nomaster")  # NIC 1's tap is not on its VN bridge
    before = snapshot()
    res = host.driver("post", "one-7", "host-a", doc="e2e_two_nics.xml")
    assert res.returncode == 2
    assert errors(res) == ["ERROR: tap one-7-1 is on no bridge, not on the VN bridge vnbr1"]
    assert snapshot() == before and host.netfw_left() == []


def test_post_failing_on_one_nic_rolls_back_the_other(host, state_dir):
    start_vm(host)
    host.sh("ip", "link", "add", "one-7-1-h", "type", "bridge")  # in the way of NIC 1's veth: fails mid-transaction
    before = snapshot()
    res = host.driver("post", "one-7", "host-a", doc="e2e_two_nics.xml")
    assert res.returncode == 1
    assert len(errors(res)) == 1 and "one-7-1-h is in the way" in errors(res)[0] and "(rolled back)" in res.stderr
    assert "Traceback" not in res.stderr
    assert snapshot() == before  # NIC 0, done in the same call, is undone too
    assert list(state_dir.rglob("*.json")) == []


def test_live_migration_ends_filtered_on_the_destination_and_clean_on_the_source(host, destination):
    src = start_vm(host)
    host.ok("post", "one-7", "host-a", doc="e2e_two_nics.xml")
    assert matrix(host, src) == FIRST

    destination.ok("pre", doc="e2e_two_nics.xml")  # 1. pre on the destination: checks only
    assert destination.sh("ip", "netns", "list").stdout.split() == []

    for nic in (0, 1):  # 2. the VM leaves the source: its taps go with it
        host.leave(f"g7-{nic}", f"one-7-{nic}")
    host.ok("clean", "host-a", doc="e2e_two_nics.xml")  # clean on the source
    assert host.netfw_left() == []
    assert not [ns for ns in netns_list() if ns.startswith("one-")]

    dst = start_vm(destination)  # 3. the VM runs on the destination, its taps on the VN bridges there
    destination.ok("post", "one-7", "host-b", doc="e2e_two_nics.xml")
    assert matrix(destination, dst) == FIRST
    assert not spoofed_ping_passes(destination, dst)
    assert destination.netfw_left() != [] and host.netfw_left() == []


@pytest.mark.parametrize("bad", ["billion_laughs.xml", "tap_slash.xml", "no_bridge.xml", "target_foreign.xml",
                                 "vm_id_not_number.xml", "ip6_zone_injection.xml", "security_groups_empty.xml"])
def test_bad_documents_touch_nothing(host, bad):
    host.vm_nic(0, "vnbr0", "10.61.0.7/24", "02:00:0a:3d:00:07")
    before = snapshot()
    for action, args in (("pre", ()), ("post", ("one-7", "host-a")), ("update_sg", ("one-7",)), ("clean", ("h",))):
        res = host.driver(action, *args, doc=f"bad/{bad}")
        assert res.returncode == 2 and len(errors(res)) == 1 and "VM document" in errors(res)[0], res.stderr
    assert snapshot() == before and host.netfw_left() == []


def test_alias_hot_attach_and_detach_keep_the_parent_nic_filtered(host):
    """Issue 8, finding 4: the clean of an alias hot-detach (ATTACH=YES on NIC_ALIAS 5 of NIC 0) removed NIC 0's
    whole firewall while the VM kept running, and every later update_sg exited 2. Now post re-applies NIC 0 with
    the alias's address, clean re-applies it without, and NIC 0 stays filtered throughout."""
    g = start_vm(host)
    host.ok("post", "one-7", "host-a", doc="e2e_two_nics.xml")
    host.sh("ip", "-n", g["vm0"], "addr", "add", "10.61.0.9/24", "dev", "eth0")
    assert not host.ping(g["vm0"], "10.61.0.2", source="10.61.0.9")  # not NIC 0's address yet: spoofing

    host.ok("post", "one-7", "host-a", doc="e2e_alias_attach.xml")  # the alias is hot-attached
    assert host.ping(g["vm0"], "10.61.0.2", source="10.61.0.9")
    assert matrix(host, g) == FIRST and api.verify(VM) == {0: [], 1: []}

    host.ok("clean", "host-a", doc="e2e_alias_attach.xml")  # ... and hot-detached
    assert api.verify(VM) == {0: [], 1: []}  # NIC 0 is still behind its firewall
    assert not host.ping(g["vm0"], "10.61.0.2", source="10.61.0.9")  # without the alias's address
    assert matrix(host, g) == FIRST

    host.ok("update_sg", "one-7", doc="e2e_sg_changed.xml")  # exited 2 once NIC 0 had been detached
    assert matrix(host, g) == CHANGED
    host.ok("clean", "host-a", doc="e2e_sg_changed.xml")
    assert host.netfw_left() == []


def test_zone_id_injection_through_the_driver_touches_nothing(host, tmp_path):
    """Issue 8, finding 1, as OpenNebula would deliver it: base64 on standard input of post and update_sg."""
    text = (DATA / "e2e_two_nics.xml").read_text().replace(
        "<IP><![CDATA[10.61.0.7]]></IP>", "<IP><![CDATA[10.61.0.7]]></IP><IP6>2001:db8::5%1&#10;-I FORWARD 1 -j "
        "ACCEPT&#10;#</IP6>")
    doc = tmp_path / "injected.xml"
    doc.write_text(text)
    start_vm(host)
    before = snapshot()
    res = host.driver("post", "one-7", "host-a", doc=str(doc))
    assert res.returncode == 2 and errors(res) == [
        "ERROR: VM document: NIC 0: IP6 '2001:db8::5%1\\n-I FORWARD 1 -j ACCEPT\\n#' has a zone; give the plain "
        "address"]
    assert snapshot() == before and host.netfw_left() == []

    host.ok("post", "one-7", "host-a", doc="e2e_two_nics.xml")
    attached = snapshot()
    assert host.driver("update_sg", "one-7", doc=str(doc)).returncode == 2
    assert snapshot() == attached


# --- issue 18: way A, netfw as hooks of the driver, and what OpenNebula logs ------------------------------------------


#: A stand-in for a driver's own clean, kept as clean.legacy (OpenNebula's Ruby drivers do not run here).
NOTHING = "#!/bin/sh\ncat > /dev/null\n"


def install_hooks(tmp_path: Path, driver: str = "bridge", legacy_clean: str = NOTHING) -> Path:
    """The wrappers installed as docs/opennebula.md way A says: <driver>/{pre,post}.d/netfw, and <driver>/clean
    the chain (netfw's clean.netfw, then the driver's clean.legacy, here the stand-in legacy_clean)."""
    import shutil

    folder = tmp_path / "vnm" / driver
    for action in ("pre", "post"):
        (folder / f"{action}.d").mkdir(parents=True)
        shutil.copy(SCRIPTS / action, folder / f"{action}.d" / "netfw")
    shutil.copy(SCRIPTS / "chain", folder / "clean")
    shutil.copy(SCRIPTS / "clean", folder / "clean.netfw")
    (folder / "clean.legacy").write_text(legacy_clean)
    (folder / "clean.legacy").chmod(0o755)
    return folder


def run_clean(host: Host, folder: Path, doc: str) -> tuple[int, str]:
    """The driver's clean, as oned runs it: the chain installed in its place. Returns (exit code, stderr)."""
    res = subprocess.run([str(folder / "clean"), "host-a"], input=host.stdin("clean", doc), capture_output=True,
                         text=True, env=host.env())
    return res.returncode, res.stderr


def test_as_hooks_of_the_bridge_driver_the_summary_reaches_the_vm_log(host, tmp_path):
    """Issue 18: OpenNebula logs a hook's stdout and drops its stderr; netfw's INFO lines on stderr were lost, the
    'nothing to do' one too. Run as the driver runs its hooks, with what oned sends: the summary is in the VM's log,
    the VM is filtered, and a failure puts netfw's ERROR line in the log and fails the action. clean is the chain
    (netfw's part first): its lines are the action's own, on stderr."""
    g = start_vm(host)
    folder = install_hooks(tmp_path)

    def action(name: str, *args: str, doc: str) -> tuple[int, list[str], str]:
        code, err = oned.run_hooks(folder, name, list(args), host.stdin(name, doc), host.env())
        return (code, *oned.vm_log(code, err))

    code, log, _ = action("pre", doc="e2e_two_nics.xml")
    assert code == 0 and any(line.startswith("INFO pre: netfw pre: VM 7: host ready") for line in log), log
    code, log, _ = action("post", "one-7", "host-a", doc="e2e_two_nics.xml")
    assert code == 0, log
    assert any(line.startswith("INFO post: netfw post: VM 7 NIC 0, 1: ") and
               line.endswith("change(s); not handled: 1 NIC with VN_MAD dummy (3)") for line in log), log
    assert matrix(host, g) == FIRST and not spoofed_ping_passes(host, g)

    code, log, error = action("post", "one-7", "host-a", doc="bad/no_bridge.xml")
    assert code == 1 and "ERROR VM document: NIC 0: BRIDGE is missing" in log, log
    assert "Error running" in error and "post.d/netfw" in error  # the Ruby error oned shows as the VM's error
    assert matrix(host, g) == FIRST

    code, err = run_clean(host, folder, "e2e_two_nics.xml")  # the clean chain: netfw's part is the action's own
    log = oned.vm_log(code, err)[0]
    assert code == 0 and any(line.startswith("INFO netfw clean: VM 7 NIC 0, 1: ") for line in log), log
    assert host.netfw_left() == [] and matrix(host, g) == OPEN
