"""scripts/bench_observe.py: the "without" side of the cost measurement is the layout before issue 11 (no NFLOG rule,
no comment, no cap chain in the path, anti-spoofing DROPs direct)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from bench_observe import plain  # noqa: E402

from netfw.model.spec import NicSpec  # noqa: E402
from netfw.rules.render import render  # noqa: E402
from netfw.model.rules import parse_rules  # noqa: E402

SPEC = NicSpec(7, 0, "br0", mac="02:00:0a:00:00:01", ips=("10.0.0.1",), filter_mac=True, filter_ip=True,
               rules=parse_rules([{"PROTOCOL": "TCP", "RULE_TYPE": "inbound", "RANGE": "22"}]))


def test_plain_has_nothing_of_issue_11_in_the_path():
    for family in render(SPEC).families:
        chains = plain(SPEC, family).chains
        lines = [line for name, rules in chains.items() if not name.endswith(("-c", "-d")) for line in rules]
        assert not any("NFLOG" in line or "CONTINUE" in line or "comment" in line for line in lines)
        assert not any(line.endswith(("-j one-7-0-c", "-j one-7-0-d")) for line in lines)
    ip = plain(SPEC, render(SPEC).family("ip")).chains
    assert "-A one-7-0-i -p tcp -m multiport --dports 22 -j ACCEPT" in ip["one-7-0-i"]
    assert ip["one-7-0-s"][-1] == "-A one-7-0-s -j DROP"
    assert ip["one-7-0-i"][-1] == "-A one-7-0-i -j DROP"
