"""The fields of an OpenNebula VM document's elements, each read and checked where it enters (one InputError line
naming the NIC and field): numbers, flags, a NIC's addresses (its aliases' included), MAC, security groups, tap,
MTU and bandwidth; the NIC_ALIAS owners; the security-group rules, counted against the caps before any is parsed.
Pure. one.py reads a whole document with these."""

from __future__ import annotations

import heapq
import re
from xml.etree.ElementTree import Element

from netfw.model import names, values
from netfw.model.document import error as _error
from netfw.model.spec import MAX_ADDRESSES, Bandwidth, InputError, Rule
from netfw.model.rules import parse_rule

#: OpenNebula's bandwidth attributes of a NIC (KB/s, KB) -> model.Bandwidth fields.
BANDWIDTH_KEYS = {"INBOUND_AVG_BW": "inbound_avg", "INBOUND_PEAK_BW": "inbound_peak", "INBOUND_PEAK_KB": "inbound_burst",
                  "OUTBOUND_AVG_BW": "outbound_avg", "OUTBOUND_PEAK_BW": "outbound_peak",
                  "OUTBOUND_PEAK_KB": "outbound_burst"}

#: SECURITY_GROUP_RULE elements in one document (each may expand into up to 4 rules: model.MAX_RULES per NIC).
MAX_DOCUMENT_RULES = 4096
#: Rule elements summed over the NICs of one document (a rule counts once per NIC that has it).
MAX_VM_RULES = 16384
#: Security groups one NIC lists, and NIC_ALIASes of one NIC (listed in its ALIAS_IDS, or naming it as PARENT_ID).
MAX_NIC_GROUPS = 256
MAX_NIC_ALIASES = MAX_ADDRESSES

IPV4_KEYS = ("IP", "VROUTER_IP")
IPV6_KEYS = (
    "IP6", "IP6_GLOBAL", "IP6_ULA", "IP6_LINK",
    "VROUTER_IP6", "VROUTER_IP6_GLOBAL", "VROUTER_IP6_ULA", "VROUTER_IP6_LINK",
)  # fmt: skip
#: The fields of a NIC (or NIC_ALIAS) that hold its own addresses, for the IP spoofing filter.
ADDRESS_KEYS = IPV4_KEYS + IPV6_KEYS

NUMBER_RE = re.compile(r"[0-9]{1,20}")  # bounded: int() of thousands of digits raises ValueError


def child_text(elem: Element | None, tag: str) -> str | None:
    """The stripped text of the first `tag` child (CDATA included), or None when absent or empty."""
    child = None if elem is None else elem.find(tag)
    text = (child.text or "").strip() if child is not None else ""
    return text or None



def decimal(text: str | None, what: str) -> int:
    """A non-negative decimal integer, else InputError naming `what`."""
    if text is None:
        raise _error(f"{what} is missing")
    if not NUMBER_RE.fullmatch(text):
        raise _error(f"{what} is not a number: {text!r}")
    return int(text)



def is_yes(elem: Element, tag: str) -> bool:
    """True when the field, upper-cased, is YES."""
    return (child_text(elem, tag) or "").upper() == "YES"



def addresses_of(owners: list[tuple[str, Element]], nic_id: int) -> tuple[str, ...]:
    """The canonical addresses of the owners (a NIC, then its aliases), without duplicates, within MAX_ADDRESSES."""
    found = [(owner, key, text) for owner, elem in owners for key in ADDRESS_KEYS
             if (text := child_text(elem, key)) is not None]
    if len(found) > MAX_ADDRESSES:  # counted before any is parsed
        raise _error(f"NIC {nic_id}: {len(found)} addresses with its aliases', more than {MAX_ADDRESSES} "
                     "(netfw's cap per NIC)")
    canonical: dict[str, None] = {}
    for owner, key, text in found:
        try:
            canonical[values.canonical_address(text)] = None
        except ValueError as e:
            raise _error(f"{owner}: {key} {e}") from None
    return tuple(canonical)



def mac_of(nic: Element, nic_id: int, filter_mac: bool) -> str | None:
    """The NIC's MAC in lower case; required when the MAC spoofing filter is on."""
    mac = child_text(nic, "MAC")
    if mac is None:
        if filter_mac:
            raise _error(f"NIC {nic_id}: FILTER_MAC_SPOOFING is on but MAC is missing")
        return None
    try:
        return values.mac(mac)
    except ValueError as e:
        raise _error(f"NIC {nic_id}: MAC {e}") from None



def sg_ids_of(nic: Element, nic_id: int) -> tuple[int, ...] | None:
    """The NIC's SECURITY_GROUPS as ids in their order; None without the element (group 0, allow all)."""
    elem = nic.find("SECURITY_GROUPS")
    if elem is None:
        return None
    text = elem.text or ""
    if text.count(",") >= MAX_NIC_GROUPS:  # counted before anything is split or parsed
        raise _error(f"NIC {nic_id}: SECURITY_GROUPS lists more than {MAX_NIC_GROUPS} groups (netfw's cap)")
    ids = [decimal(s.strip(), f"NIC {nic_id}: security group") for s in text.split(",") if s.strip()]
    if not ids:  # an emptied list must not widen to group 0
        raise _error(f"NIC {nic_id}: SECURITY_GROUPS {text!r} lists no security group")
    return tuple(dict.fromkeys(ids))



def tap_of(nic: Element, vm: int, nic_id: int) -> str:
    """TARGET, which must be the tap OpenNebula creates for this NIC (absent: that tap)."""
    tap = names.tap(vm, nic_id)
    target = child_text(nic, "TARGET")
    if target is None or target == tap:
        return tap
    try:
        names.check_ifname(target, "tap")
    except InputError as e:
        raise _error(f"NIC {nic_id}: {e}") from None
    raise _error(f"NIC {nic_id}: TARGET {target!r} is not the NIC's tap {tap}")



def alias_owners(root: Element, nics: list[tuple[int, Element]], pci_ids: set[str]) -> dict[int, list[Element]]:
    """NIC_ID -> its NIC_ALIAS elements (by the NIC's ALIAS_IDS or the alias's PARENT_ID); InputError when an
    alias would belong to two NICs, or to none (its parent is neither a NIC nor a PCI NIC of the document)."""
    by_id: dict[str, Element] = {}
    by_parent: dict[str, list[Element]] = {}
    aliases = root.findall("TEMPLATE/NIC_ALIAS")
    for alias in aliases:
        alias_id = child_text(alias, "NIC_ID")
        if alias_id is not None:
            if alias_id in by_id:
                raise _error(f"NIC_ALIAS NIC_ID {alias_id} appears twice")
            by_id[alias_id] = alias
        by_parent.setdefault(child_text(alias, "PARENT_ID") or "", []).append(alias)
    owner: dict[int, int] = {}  # id(alias element) -> NIC_ID
    found: dict[int, list[Element]] = {}
    for nic_id, nic in nics:
        alias_ids = child_text(nic, "ALIAS_IDS") or ""
        if alias_ids.count(",") >= MAX_NIC_ALIASES:
            raise _error(f"NIC {nic_id}: ALIAS_IDS lists more than {MAX_NIC_ALIASES} aliases (netfw's cap)")
        listed = (by_id.get(a.strip()) for a in alias_ids.split(","))
        for alias in (*by_parent.get(str(nic_id), ()), *(a for a in listed if a is not None)):
            other = owner.get(id(alias))
            if other is None:
                owner[id(alias)] = nic_id
                mine = found.setdefault(nic_id, [])
                mine.append(alias)
                if len(mine) > MAX_NIC_ALIASES:
                    raise _error(f"NIC {nic_id} has more than {MAX_NIC_ALIASES} NIC_ALIASes (netfw's cap)")
            elif other != nic_id:
                raise _error(f"NIC_ALIAS {child_text(alias, 'NIC_ID')} belongs to NIC {other} and to NIC {nic_id}")
    for alias in aliases:
        parent = child_text(alias, "PARENT_ID")
        if id(alias) not in owner and parent not in pci_ids:
            raise _error(f"NIC_ALIAS {child_text(alias, 'NIC_ID') or '?'}: its parent NIC {parent or '(no PARENT_ID)'} "
                         "is not in the document")
    return found



def _rule_item(elem: Element, index: int) -> dict[str, str]:
    """One SECURITY_GROUP_RULE as {TAG: text}, empty fields left out."""
    item: dict[str, str] = {}
    for child in elem:
        text = (child.text or "").strip()
        if not text:
            continue
        if child.tag in item:
            raise _error(f"rule {index}: {child.tag} appears twice")
        item[child.tag] = text
    return item



def rule_groups(root: Element) -> dict[int, list[tuple[int, Element]]]:
    """Security group id -> its SECURITY_GROUP_RULE elements (under every TEMPLATE) with their 1-based document
    positions. Nothing parsed yet but the group ids, so that caps are checked on counts first."""
    elems = root.findall("TEMPLATE/SECURITY_GROUP_RULE")
    if len(elems) > MAX_DOCUMENT_RULES:
        raise _error(f"it has {len(elems)} SECURITY_GROUP_RULE elements, more than {MAX_DOCUMENT_RULES} "
                     "(netfw's cap)")
    groups: dict[int, list[tuple[int, Element]]] = {}
    for index, elem in enumerate(elems, start=1):
        sg = decimal(child_text(elem, "SECURITY_GROUP_ID"), f"rule {index}: SECURITY_GROUP_ID")
        groups.setdefault(sg, []).append((index, elem))
    return groups



def check_counts(groups: dict[int, list], listing: list[tuple[int, tuple[int, ...] | None]]) -> None:
    """The cap on rules per VM, on element counts, before any rule is parsed (NicSpec checks each NIC's Rules)."""
    total = sum(len(groups.get(sg, ())) for _, sg_ids in listing for sg in sg_ids or ())
    if total > MAX_VM_RULES:
        raise _error(f"its NICs have {total} security-group rules together, more than {MAX_VM_RULES} (netfw's cap)")



def parse_groups(groups: dict[int, list[tuple[int, Element]]], listed: set[int]) -> dict[int, list]:
    """Group id -> [(position, Rules of that rule element)], for the listed groups only (the others are ignored)."""
    parsed: dict[int, list] = {}
    for sg in listed & set(groups):
        out = parsed[sg] = []
        for index, elem in groups[sg]:
            item = _rule_item(elem, index)
            try:
                out.append((index, parse_rule(index, item, strict_keys=False)))
            except InputError as e:
                raise _error(str(e)) from None
    return parsed



def nic_rules(sg_ids: tuple[int, ...] | None, parsed: dict[int, list]) -> tuple[Rule, ...] | None:
    """The NIC's Rules in document order; None (group 0, allow all) when the NIC has no SECURITY_GROUPS."""
    if sg_ids is None:
        return None
    runs = [parsed.get(sg, []) for sg in sg_ids]
    return tuple(rule for _, rules in heapq.merge(*runs, key=lambda item: item[0]) for rule in rules)



def mtu_of(nic: Element, nic_id: int) -> int | None:
    """The NIC's MTU, or None when the document sets none."""
    text = child_text(nic, "MTU")
    return None if text is None else decimal(text, f"NIC {nic_id}: MTU")



def bandwidth_of(nic: Element, nic_id: int) -> Bandwidth | None:
    """The NIC's INBOUND_* / OUTBOUND_* limits (KB/s, KB), None when it has none."""
    given = {field: decimal(text, f"NIC {nic_id}: {key}") for key, field in BANDWIDTH_KEYS.items()
             if (text := child_text(nic, key)) is not None}
    if not given:
        return None
    try:
        return Bandwidth(**given)
    except InputError as e:
        raise _error(f"NIC {nic_id}: {e}") from None

