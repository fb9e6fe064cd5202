"""Hostile input through the real CLI on real kernel objects (issue 8, finding 1): a line break smuggled into a value
must never reach a restore file. Each attempt exits 2, and the sandbox (namespaces, links, rules of every table,
ipsets) is exactly as before, state directory included."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .lab import snapshot

ROOT = Path(__file__).resolve().parents[2]
NETFW = ROOT / ".venv" / "bin" / "netfw"
INJECTION = "2001:db8::5%1\n-I FORWARD 1 -j ACCEPT\n#"  # what the review's document carries, &#10; decoded

#: VM 7, NIC 0 on vnbr0 with the IP spoofing filter on: its addresses become `-s ADDRESS -j RETURN` lines.
DOCUMENT = """<VM><ID>7</ID><DEPLOY_ID>one-7</DEPLOY_ID><TEMPLATE>
  <NIC><NIC_ID>0</NIC_ID><BRIDGE>vnbr0</BRIDGE><TARGET>one-7-0</TARGET><VN_MAD>fw</VN_MAD>
    <MAC>02:00:0a:09:00:07</MAC><IP>10.9.0.7</IP>{nic}
    <FILTER_IP_SPOOFING>YES</FILTER_IP_SPOOFING><SECURITY_GROUPS>100</SECURITY_GROUPS></NIC>
  {alias}
  <SECURITY_GROUP_RULE><SECURITY_GROUP_ID>100</SECURITY_GROUP_ID><PROTOCOL>TCP</PROTOCOL>
    <RULE_TYPE>INBOUND</RULE_TYPE><RANGE>22</RANGE></SECURITY_GROUP_RULE>
</TEMPLATE></VM>"""
ESCAPED = INJECTION.replace("\n", "&#10;")
FIELDS = {
    "IP6": dict(nic=f"<IP6>{ESCAPED}</IP6>"),
    "IP6_GLOBAL": dict(nic=f"<IP6_GLOBAL>{ESCAPED}</IP6_GLOBAL>"),
    "VROUTER_IP6": dict(nic=f"<VROUTER_IP6>{ESCAPED}</VROUTER_IP6>"),
    "alias IP6": dict(alias=f"<NIC_ALIAS><NIC_ID>1</NIC_ID><PARENT_ID>0</PARENT_ID><IP6>{ESCAPED}</IP6></NIC_ALIAS>"),
}


def netfw(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(NETFW), *args], input=stdin, capture_output=True, text=True, env=os.environ)


def document(nic: str = "", alias: str = "") -> str:
    return DOCUMENT.format(nic=nic, alias=alias)


def _refused(res: subprocess.CompletedProcess, state_dir: Path, before: dict, *records: Path) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR: ") and "has a zone; give the plain address" in lines[0]
    assert snapshot() == before
    assert sorted(state_dir.rglob("*.json")) == sorted(records)


@pytest.mark.parametrize("field", list(FIELDS))
def test_zone_id_injection_through_vm_xml_exits_2_and_touches_nothing(lab, state_dir, tmp_path, field):
    lab.bridge()
    lab.vm(7, 0, "10.9.0.7/24")
    before = snapshot()
    doc = tmp_path / "vm.xml"
    doc.write_text(document(**FIELDS[field]))
    _refused(netfw("attach", "7", "0", "--vm-xml", str(doc)), state_dir, before)
    _refused(netfw("attach", "7", "0", "--vm-xml", "-", stdin=document(**FIELDS[field])), state_dir, before)


def test_zone_id_injection_through_ip_flag_exits_2_and_touches_nothing(lab, state_dir):
    lab.bridge()
    lab.vm(7, 0, "10.9.0.7/24")
    before = snapshot()
    for ip in ("2001:db8::5%1\n-I FORWARD 1 -j ACCEPT", INJECTION):
        res = netfw("attach", "7", "0", "--bridge", "vnbr0", "--filter-ip-spoofing", "--ip", "10.9.0.7", "--ip", ip)
        _refused(res, state_dir, before)


def test_injection_into_an_attached_nic_changes_nothing(lab, state_dir, tmp_path):
    """The review's attack survived updates: an attached NIC must keep its rules when an update carries it."""
    lab.bridge()
    lab.vm(7, 0, "10.9.0.7/24")
    doc = tmp_path / "vm.xml"
    doc.write_text(document())
    assert netfw("attach", "7", "0", "--vm-xml", str(doc)).returncode == 0
    before = snapshot()
    assert "-A FORWARD -j ACCEPT" not in before["one-7"]["ip6"]
    records = sorted(state_dir.rglob("*.json"))
    record = records[0].read_text()

    doc.write_text(document(**FIELDS["IP6"]))
    _refused(netfw("update", "7", "0", "--vm-xml", str(doc)), state_dir, before, *records)
    _refused(netfw("update", "7", "0", "--ip", INJECTION), state_dir, before, *records)
    assert records[0].read_text() == record
    assert netfw("verify", "7").returncode == 0
