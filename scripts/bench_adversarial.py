#!/usr/bin/env python3
"""How long netfw takes to refuse hostile VM documents of up to 4 MiB (the largest it reads), as a table.

    scripts/bench_adversarial.py [--repeat N]

Each document aims at one cost: rule expansion (huge IP+SIZE ranges), many NICs, many aliases, deep nesting, many
elements or attributes, floods of list items, numbers of millions of digits. The time is netfw.opennebula.one.parse_vm's
(in-process, the best of N runs); one row runs a whole `netfw one pre < /dev/zero` process. Pure: nothing on the host
is touched. tests/test_adversarial.py checks that every document here is refused with its cap's message; it never
asserts a time (a timed test fails on a loaded machine).
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from netfw.opennebula import one, one_fields  # noqa: E402
from netfw.errors import InputError  # noqa: E402

SIZE = one.MAX_DOCUMENT - 1024  # what every document is padded up to (a little under the size bound)
HUGE_V6 = ("::1", str((1 << 128) - 1))  # IP and SIZE of a range whose cover is 128 CIDR blocks (the cap)


def _vm(body: str) -> str:
    return f"<VM><ID>7</ID><DEPLOY_ID>one-7</DEPLOY_ID><TEMPLATE>{body}</TEMPLATE></VM>"


def _pad(doc: str, size: int = SIZE) -> bytes:
    """doc with a <NOTE> of filler text inserted into TEMPLATE so that the whole is `size` bytes."""
    head, tail = doc.split("</TEMPLATE>")
    filler = max(0, size - len(doc) - len("<NOTE></NOTE>"))
    return f"{head}<NOTE>{'x' * filler}</NOTE></TEMPLATE>{tail}".encode()


def _fill(head: str, item: Callable[[int], str], tail: str = "", size: int = SIZE) -> bytes:
    """head, then item(0), item(1), ... as many as fit in `size` bytes, then tail."""
    parts, used, i = [head], len(head) + len(tail), 0
    while True:
        text = item(i)
        if used + len(text) > size:
            break
        parts.append(text)
        used += len(text)
        i += 1
    return ("".join(parts) + tail).encode()


def _repeat(head: str, unit: str, tail: str = "", size: int = SIZE) -> bytes:
    """head, then unit as many times as fits in `size` bytes, then tail."""
    return (head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail).encode()


def _nic(nic_id: int, groups: str = "100", extra: str = "") -> str:
    return (f"<NIC><NIC_ID>{nic_id}</NIC_ID><BRIDGE>br0</BRIDGE><SECURITY_GROUPS>{groups}</SECURITY_GROUPS>"
            f"<VN_MAD>fw</VN_MAD>{extra}</NIC>")


def _rule(sg: int = 100, ip: str | None = None, size: str | None = None, extra: str = "") -> str:
    peer = f"<IP>{ip}</IP><SIZE>{size}</SIZE>" if ip else ""
    return (f"<SECURITY_GROUP_RULE><SECURITY_GROUP_ID>{sg}</SECURITY_GROUP_ID><PROTOCOL>ALL</PROTOCOL>"
            f"<RULE_TYPE>INBOUND</RULE_TYPE>{peer}{extra}</SECURITY_GROUP_RULE>")


def rules_huge_ranges() -> bytes:
    """As many rules as fit, each an IPv6 range of 128 CIDR blocks (the review's ~20,000 rules, millions of
    ipset members)."""
    return _fill("<VM><ID>7</ID><TEMPLATE>" + _nic(0), lambda i: _rule(100, *HUGE_V6), "</TEMPLATE></VM>")


def rules_at_the_caps() -> bytes:
    """4096 rules (the document cap) in 4 groups on 4 NICs, each a 128-block range: every rule is parsed before
    the ipset-member cap refuses it (the most expensive refusal)."""
    nics = "".join(_nic(n, str(100 + n)) for n in range(4))
    rules = "".join(_rule(100 + i % 4, *HUGE_V6) for i in range(one_fields.MAX_DOCUMENT_RULES))
    return _pad(_vm(nics + rules))


def four_range_rules() -> bytes:
    """4096 NETWORK_ID rules with four ranges of 2^31 - 1 addresses each (IP, IP6, IP6_GLOBAL, IP6_ULA), all on one
    NIC: 16,384 rules (that NIC's cap) parsed and counted before the ipset-member cap refuses them (the slowest)."""
    four = (f"<NETWORK_ID>3</NETWORK_ID><IP>0.0.0.1</IP><IP6>::1</IP6><IP6_GLOBAL>2001:db8::1</IP6_GLOBAL>"
            f"<IP6_ULA>fd00::1</IP6_ULA><SIZE>{(1 << 31) - 1}</SIZE>")
    return _pad(_vm(_nic(0) + "".join(_rule(100, extra=four) for _ in range(one_fields.MAX_DOCUMENT_RULES))))


def many_nics() -> bytes:
    """1000 NICs (every NIC_ID there is), each listing a group of 17 rules, padded: over the rules-per-VM cap."""
    nics = "".join(_nic(n) for n in range(1000))
    return _pad(_vm(nics + "".join(_rule(100) for _ in range(17))))


def nic_ids_beyond_range() -> bytes:
    """NIC elements with NIC_ID 0, 1, 2, ... as many as fit (each with a long NAME, to stay under the element cap)."""
    return _fill("<VM><ID>7</ID><TEMPLATE>", lambda i: f"<NIC><NIC_ID>{i}</NIC_ID><NAME>{'n' * 200}</NAME></NIC>",
                 "</TEMPLATE></VM>")


def many_aliases() -> bytes:
    """One NIC and as many NIC_ALIASes of it as fit, each with an address: over the aliases-per-NIC cap."""
    return _fill("<VM><ID>7</ID><TEMPLATE>" + _nic(0),
                 lambda i: f"<NIC_ALIAS><PARENT_ID>0</PARENT_ID><IP>10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
                           f"</IP><NAME>{'n' * 60}</NAME></NIC_ALIAS>", "</TEMPLATE></VM>")


def nics_times_aliases() -> bytes:
    """1000 NICs with 20 aliases each (within every cap, accepted): the alias lookup is one pass, not NICs x
    aliases."""
    nics = "".join(_nic(n, extra=f"<IP>10.0.{n >> 8}.{n & 255}</IP>") for n in range(1000))
    aliases = "".join(f"<NIC_ALIAS><PARENT_ID>{n}</PARENT_ID><IP>10.{1 + a}.{n >> 8}.{n & 255}</IP></NIC_ALIAS>"
                      for n in range(1000) for a in range(20))
    return _pad(_vm(nics + aliases + _rule(100)))


def deep_nesting() -> bytes:
    depth = (SIZE - 40) // 7
    return b"<VM><ID>7</ID>" + b"<a>" * depth + b"</a>" * depth + b"</VM>"


def many_elements() -> bytes:
    return _repeat("<VM><ID>7</ID>", "<a/>", "</VM>")


def attributes_on_one_element() -> bytes:
    return _fill("<VM><ID>7</ID><TEMPLATE ", lambda i: f"a{i}='' ", "/></VM>")


def attributes_spread() -> bytes:
    return _repeat("<VM><ID>7</ID>", "<a " + " ".join(f"b{k}=''" for k in range(60)) + "/>", "</VM>")


def security_groups_flood() -> bytes:
    return _fill("<VM><ID>7</ID><TEMPLATE><NIC><NIC_ID>0</NIC_ID><BRIDGE>br0</BRIDGE><SECURITY_GROUPS>",
                 lambda i: f"{i},", "</SECURITY_GROUPS></NIC></TEMPLATE></VM>")


def alias_ids_flood() -> bytes:
    return _repeat("<VM><ID>7</ID><TEMPLATE><NIC_ALIAS><NIC_ID>1</NIC_ID><IP>10.0.0.1</IP></NIC_ALIAS><NIC><NIC_ID>0"
                   "</NIC_ID><BRIDGE>br0</BRIDGE><ALIAS_IDS>", "1,", "</ALIAS_IDS></NIC></TEMPLATE></VM>")


def range_flood() -> bytes:
    return _repeat("<VM><ID>7</ID><TEMPLATE>" + _nic(0) + "<SECURITY_GROUP_RULE><SECURITY_GROUP_ID>100"
                   "</SECURITY_GROUP_ID><PROTOCOL>TCP</PROTOCOL><RULE_TYPE>INBOUND</RULE_TYPE><RANGE>",
                   "1,", "</RANGE></SECURITY_GROUP_RULE></TEMPLATE></VM>")


def long_number() -> bytes:
    return _repeat("<VM><ID>7</ID><TEMPLATE>" + _nic(0) + "<SECURITY_GROUP_RULE><SECURITY_GROUP_ID>100"
                   "</SECURITY_GROUP_ID><PROTOCOL>ALL</PROTOCOL><RULE_TYPE>INBOUND</RULE_TYPE><IP>10.0.0.1</IP><SIZE>",
                   "9", "</SIZE></SECURITY_GROUP_RULE></TEMPLATE></VM>")


def rules_huge_ranges_base64() -> bytes:
    """The first document as OpenNebula sends it: base64 on one line (5.3 MiB)."""
    return base64.b64encode(rules_huge_ranges())


def base64_one_character_lines() -> bytes:
    """The largest input (8 MiB) as base64 wrapped after every character."""
    return b"P\n" * (one.MAX_INPUT // 2)


#: name -> (document generator, the cap or check that refuses it; None: accepted, within every cap)
DOCUMENTS: dict[str, tuple[Callable[[], bytes], str | None]] = {
    "rules with huge ranges": (rules_huge_ranges, "SECURITY_GROUP_RULE elements, more than 4096"),
    "same, base64": (rules_huge_ranges_base64, "SECURITY_GROUP_RULE elements, more than 4096"),
    "base64, one character a line": (base64_one_character_lines, "it is not well-formed XML"),
    "4096 rules at the caps": (rules_at_the_caps, "ipset members, more than 65536"),
    "4096 rules of four ranges": (four_range_rules, "ipset members, more than 65536"),
    "1000 NICs": (many_nics, "security-group rules together, more than 16384"),
    "NIC ids beyond 999": (nic_ids_beyond_range, "NIC id 1000 is out of range"),
    "many aliases": (many_aliases, "NIC 0 has more than 1024 NIC_ALIASes"),
    "1000 NICs x 20 aliases": (nics_times_aliases, None),
    "deep nesting": (deep_nesting, "it nests deeper than 32 elements"),
    "many elements": (many_elements, "it has more than 131072 elements"),
    "attributes on one element": (attributes_on_one_element, "an element has 64 attributes or more"),
    "attributes spread": (attributes_spread, "it has more than 1024 attributes"),
    "SECURITY_GROUPS flood": (security_groups_flood, "SECURITY_GROUPS lists more than 256 groups"),
    "ALIAS_IDS flood": (alias_ids_flood, "ALIAS_IDS lists more than 1024 aliases"),
    "RANGE flood": (range_flood, "ports is more than 15"),
    "number of 4M digits": (long_number, "SIZE: 9999999999"),
}


def refuse(doc: bytes) -> str | None:
    """The one-line refusal of doc, or None when it is accepted."""
    try:
        one.parse_vm(doc)
    except InputError as e:
        return str(e)
    return None


def _time(doc: bytes, repeat: int) -> tuple[float, str | None]:
    best, outcome = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        outcome = refuse(doc)
        best = min(best, time.perf_counter() - start)
    return best, outcome


def _dev_zero() -> tuple[float, str] | None:
    """A whole `netfw one pre < /dev/zero` process: the read stops at the bound."""
    netfw = ROOT / ".venv" / "bin" / "netfw"
    if not netfw.exists():
        return None
    start = time.perf_counter()
    with open("/dev/zero", "rb") as zero:
        res = subprocess.run([str(netfw), "one", "pre"], stdin=zero, capture_output=True, text=True, timeout=60)
    return time.perf_counter() - start, f"exit {res.returncode}: {res.stderr.strip().splitlines()[-1]}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="runs per document; the best is shown (default 3)")
    args = p.parse_args()
    print("| document | bytes | seconds | outcome |")
    print("|---|---:|---:|---|")
    for name, (make, _) in DOCUMENTS.items():
        doc = make()
        seconds, outcome = _time(doc, args.repeat)
        print(f"| {name} | {len(doc):,} | {seconds:.3f} | {outcome or 'accepted'} |"[:220])
    zero = _dev_zero()
    if zero:
        print(f"| `netfw one pre < /dev/zero` (whole process) | unbounded | {zero[0]:.3f} | {zero[1]} |")


if __name__ == "__main__":
    main()
