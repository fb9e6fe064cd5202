"""netfw status, metrics and log without the kernel: the JSON shapes, the Prometheus text format (parse-checked line
by line), the log lines. Health and counters come from fakes here; tests/integration/test_observability.py proves
them with real traffic."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from netfw.observe import counters, health, logcmd, metrics
from netfw.kernel import probe
from netfw import state
from netfw.observe import status as view
from netfw.cli import app
from netfw.observe.counters import Count, NicCounters
from netfw.model.spec import NicSpec, Rule
from netfw.observe.nflog_wire import LoggedPacket
from netfw.rules.chains import log_prefix, parse_log_prefix

RULES = (Rule("TCP", "INBOUND", ports="22,80:90", ip="10.0.0.0", size=256, sg_id=100),
         Rule("ICMP", "INBOUND", icmp_type=8, sg_id=100), Rule("ALL", "OUTBOUND", ip="10.0.0.7", size=3))
SPEC = NicSpec(7, 0, "br0", rules=RULES, conntrack_max=3000)


def applied(spec=SPEC):
    return state.Applied(spec, 1500, 0, "auto")


def fake_counters() -> NicCounters:
    c = NicCounters()
    c.accepted["inbound"].add(120, 9800)
    c.accepted["outbound"].add(80, 6400)
    c.drop("inbound", "no_rule", 3, 180)
    c.drop("outbound", "anti_spoofing", 2, 120)
    c.rules[1] = Count(5, 300)
    return c


@pytest.fixture
def kernel(monkeypatch):
    """VM 7 NIC 0 attached, VM 7 NIC 1 stale, VM 9 a bare orphan namespace; counters of VM 7 NIC 0 faked."""
    healths = [health.Health(7, 0, "attached", [], applied()),
               health.Health(7, 1, "stale", ["no kernel object of VM 7 NIC 1 is left"],
                             applied(NicSpec(7, 1, "br0", conntrack_max=1000))),
               health.Health(9, None, "orphan", ["namespace one-9 holds nothing but lo"])]

    def survey(state_dir=None, vm=None, nic=None, counting=False, count=None):
        return [h for h in healths if (vm is None or h.vm == vm) and (nic is None or h.nic == nic)]

    monkeypatch.setattr(health, "survey", survey)
    monkeypatch.setattr(probe, "netns_exists", lambda ns: ns == "one-7")
    monkeypatch.setattr(counters, "read", lambda ns, backends: {"auto": {}})
    monkeypatch.setattr(counters, "nic_counters", lambda spec, saves: fake_counters() if spec.nic == 0 else
                        NicCounters())
    monkeypatch.setattr(counters, "conntrack_count", lambda ns: 42)
    monkeypatch.setattr(view, "vm_cap", lambda vm, state_dir=None: 4000)
    return healths


def test_vm_status_json_shape(kernel):
    data = view.vm_status(7).as_dict()
    assert data["vm"] == 7 and data["ok"] is False and data["conntrack"] == {"count": 42, "max": 4000}
    nic = data["nics"][0]
    assert set(nic) == {"vm", "nic", "health", "problems", "tap", "conntrack_max", "inbound", "outbound", "drops",
                        "rules"}
    assert (nic["vm"], nic["nic"], nic["health"], nic["tap"], nic["conntrack_max"]) == (7, 0, "attached", "one-7-0",
                                                                                         3000)
    assert nic["inbound"] == {"accepted": {"packets": 120, "bytes": 9800}, "dropped": {"packets": 3, "bytes": 180}}
    assert nic["outbound"]["dropped"] == {"packets": 2, "bytes": 120}
    assert nic["drops"] == {"no_rule": {"packets": 3, "bytes": 180}, "invalid": {"packets": 0, "bytes": 0},
                            "conntrack_cap": {"packets": 0, "bytes": 0},
                            "anti_spoofing": {"packets": 2, "bytes": 120}, "ethertype": {"packets": 0, "bytes": 0}}
    assert nic["rules"] == [
        {"rule": 1, "sg": 100, "text": "TCP inbound ports 22,80:90 from 10.0.0.0/24", "packets": 5, "bytes": 300},
        {"rule": 2, "sg": 100, "text": "ICMP inbound type 8 from anywhere", "packets": 0, "bytes": 0},
        {"rule": 3, "sg": None, "text": "ALL outbound to 10.0.0.7 and the next 2 addresses", "packets": 0,
         "bytes": 0}]
    assert json.loads(json.dumps(data)) == data


def test_status_cli_json_and_exit_codes(kernel, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["status", "--json", "--state-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert json.loads(res.output) == {"ok": False, "nics": [
        {"vm": 7, "nic": 0, "health": "attached", "problems": []},
        {"vm": 7, "nic": 1, "health": "stale", "problems": ["no kernel object of VM 7 NIC 1 is left"]},
        {"vm": 9, "nic": None, "health": "orphan", "problems": ["namespace one-9 holds nothing but lo"]}]}
    res = runner.invoke(app, ["status", "7", "0", "--json", "--state-dir", str(tmp_path)])
    assert res.exit_code == 0 and json.loads(res.output)["nics"][0]["rules"][0]["packets"] == 5
    res = runner.invoke(app, ["status", "7", "--state-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert "VM 7: conntrack 42 of 4000 entries" in res.output and "NIC 1: stale (tap one-7-1)" in res.output
    assert re.search(r"1\s+100\s+5\s+300 B\s+TCP inbound ports 22,80:90 from 10.0.0.0/24", res.output)


def test_host_status_human_form():
    lines = view.host_lines([health.Health(7, 0, "drift", ["a", "b"]), health.Health(9, None, "orphan", ["c"])])
    assert lines == ["VM  NIC  HEALTH  PROBLEMS", "7   0    drift   a", " " * 17 + "b",
                     "9   -    orphan  c"]


@pytest.mark.parametrize("rule, text", [
    (Rule("TCP", "INBOUND", ports="22"), "TCP inbound port 22 from anywhere"),
    (Rule("UDP", "OUTBOUND", ports="53", ip="10.0.0.1"), "UDP outbound port 53 to 10.0.0.1/32"),
    (Rule("ICMPV6", "INBOUND", icmp_type=128, ip="2001:db8::", size=16), "ICMPV6 inbound type 128 from 2001:db8::/124"),
    (Rule("ALL", "INBOUND", size=0), "ALL inbound (matches nothing: empty peer range)"),
])
def test_describe(rule, text):
    assert view.describe(rule) == text


# --- metrics ------------------------------------------------------------------------------------------------------

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
SAMPLE = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\{([a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*")*)\} (-?[0-9.e+]+)')


def check_exposition(text: str) -> dict[str, list[dict]]:
    """Parse text as the Prometheus text format (0.0.4), strictly: every family has HELP then TYPE before its samples
    and appears once; every sample line is well formed. {metric: [labels + value]}."""
    assert text.endswith("\n")
    families: dict[str, str] = {}
    samples: dict[str, list[dict]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert NAME.fullmatch(name) and name not in families, line
            families[name], current = "", name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name == current and kind in ("counter", "gauge"), line
            families[name] = kind
        else:
            m = SAMPLE.fullmatch(line)
            assert m, f"not a sample line: {line!r}"
            assert m[1] == current and families[current], line
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m[2]))
            samples.setdefault(m[1], []).append({**labels, "value": float(m[3])})
    for name, kind in families.items():
        if kind == "counter":
            assert name.endswith("_total"), name
    return samples


def test_metrics_text_format(kernel):
    text, errors = metrics.collect()
    assert errors == []
    samples = check_exposition(text)
    assert set(samples) >= {"netfw_packets_total", "netfw_bytes_total", "netfw_rule_packets_total",
                            "netfw_conntrack_entries", "netfw_conntrack_max", "netfw_nic_health"}
    assert {"vm": "7", "nic": "0", "direction": "inbound", "verdict": "accepted", "value": 120} in \
        samples["netfw_packets_total"]
    assert {"vm": "7", "nic": "0", "sg": "100", "rule": "1", "value": 5} in samples["netfw_rule_packets_total"]
    assert {"vm": "7", "nic": "0", "sg": "", "rule": "3", "value": 0} in samples["netfw_rule_packets_total"]
    assert {"vm": "7", "value": 42} in samples["netfw_conntrack_entries"]
    assert {"vm": "7", "value": 4000} in samples["netfw_conntrack_max"]
    # one state per NIC is 1, the others 0 (a state set)
    by_nic: dict = {}
    for s in samples["netfw_nic_health"]:
        by_nic.setdefault((s["vm"], s["nic"]), {})[s["health"]] = s["value"]
    assert by_nic[("7", "0")] == {"attached": 1, "drift": 0, "stale": 0, "orphan": 0, "error": 0}
    assert by_nic[("7", "1")]["stale"] == 1 and sum(by_nic[("7", "1")].values()) == 1
    assert by_nic[("9", "")]["orphan"] == 1
    assert not any(s["vm"] == "9" for s in samples["netfw_packets_total"])


def test_metrics_report_a_vm_that_cannot_be_read_as_error(kernel, monkeypatch):
    from netfw.runner import CommandError, Result

    def broken(ns, backends):
        raise CommandError(Result(("iptables-save",), 4, "", "broken"))

    monkeypatch.setattr(counters, "read", broken)
    text, errors = metrics.collect()
    samples = check_exposition(text)
    assert errors and all("could not read its counters" in e for e in errors)
    states = {(s["vm"], s["nic"], s["health"]) for s in samples["netfw_nic_health"] if s["value"] == 1}
    assert ("7", "0", "error") in states and "netfw_packets_total" not in samples


def test_label_values_are_escaped():
    line = metrics.sample("netfw_rule_info", {"text": 'a "b" \\ c\nd'}, 1)
    assert line == 'netfw_rule_info{text="a \\"b\\" \\\\ c\\nd"} 1'
    assert check_exposition(f"# HELP netfw_rule_info x\n# TYPE netfw_rule_info gauge\n{line}\n")


def test_write_atomically_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "netfw.prom"
    target.write_text("old\n")
    metrics.write_atomically(target, "new\n")
    assert target.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["netfw.prom"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(FileNotFoundError):
        metrics.write_atomically(tmp_path / "missing" / "netfw.prom", "x")


# --- log ----------------------------------------------------------------------------------------------------------


def packet(prefix: str, **fields) -> LoggedPacket:
    base = dict(time=1764626400.25, kernel_time=False, group=1, prefix=prefix, hook="FORWARD", family=2, indev=3,
                outdev=3, physindev=4, physoutdev=5, l3="ipv4", src="10.0.0.9", dst="10.0.0.1", protocol="tcp",
                sport=40000, dport=81, icmp_type=None, icmp_code=None, tcp_flags="SYN", length=60, captured=60,
                fragment=False, mark=None, hwaddr="02:00:00:00:00:09", seq=0)
    return LoggedPacket(**{**base, **fields})


@pytest.mark.parametrize("direction, reason", [("in", "no-rule"), ("out", "spoofing"), ("in", "cap"),
                                               ("out", "ethertype")])
def test_log_prefix_round_trip(direction, reason):
    prefix = log_prefix(3, direction, reason)
    assert len(prefix) <= 63 and parse_log_prefix(prefix) == (3, direction, reason)


@pytest.mark.parametrize("prefix", ["", "netfw nic=0 dir=in why=other", "netfw nic=1000 dir=in why=cap",
                                    "xnetfw nic=0 dir=in why=cap", "netfw nic=0 dir=in why=cap\n"])
def test_foreign_prefixes_are_not_netfw_s(prefix):
    assert parse_log_prefix(prefix) is None
    assert logcmd.record(7, packet(prefix)) is None


def test_log_record_and_line():
    entry = logcmd.record(7, packet(log_prefix(0, "in", "no-rule")))
    assert entry == {"time": "2025-12-01T22:00:00.250+00:00", "vm": 7, "nic": 0, "direction": "inbound",
                     "reason": "no_rule", "family": "ipv4", "protocol": "tcp", "src": "10.0.0.9", "dst": "10.0.0.1",
                     "sport": 40000, "dport": 81, "icmp_type": None, "icmp_code": None, "tcp_flags": "SYN",
                     "length": 60, "mac": "02:00:00:00:00:09", "lost_before": 0}
    assert logcmd.line(entry) == ("2025-12-01T22:00:00.250+00:00 nic 0 in  tcp 10.0.0.9:40000 -> 10.0.0.1:81 SYN: "
                                  "dropped, no rule matched")
    icmp6 = logcmd.record(7, packet(log_prefix(1, "out", "spoofing"), l3="ipv6", src="fd00::9", dst="fd00::1",
                                    protocol="ipv6-icmp", sport=None, dport=None, icmp_type=135, icmp_code=0,
                                    tcp_flags=None, lost_before=4))
    assert logcmd.line(icmp6).endswith("nic 1 out ipv6-icmp fd00::9 -> fd00::1 type 135/0: dropped, anti-spoofing")
    assert logcmd.line(icmp6).startswith("(4 not shown: the reader fell behind) ")
    udp6 = logcmd.record(7, packet(log_prefix(0, "in", "cap"), src="fd00::9", dst="fd00::1", protocol="udp",
                                   tcp_flags=None))
    assert "[fd00::9]:40000 -> [fd00::1]:81: dropped, conntrack cap" in logcmd.line(udp6)
    frame = logcmd.record(7, packet(log_prefix(0, "out", "ethertype"), l3=None, src=None, dst=None, protocol=None,
                                    sport=None, dport=None, tcp_flags=None))
    assert logcmd.line(frame).endswith("nic 0 out frame from 02:00:00:00:00:09: dropped, ethertype not allowed")


def test_log_of_a_nic_without_a_record_is_bad_input(tmp_path):
    res = CliRunner().invoke(app, ["log", "7", "0", "--state-dir", str(tmp_path)])
    assert res.exit_code == 2 and "VM 7 NIC 0 is not attached" in res.output
    res = CliRunner().invoke(app, ["log", "7", "--count", "0", "--state-dir", str(tmp_path)])
    assert res.exit_code == 2
