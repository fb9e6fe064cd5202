"""Security-group rules in OpenNebula's SECURITY_GROUP_RULE vocabulary, parsed and validated into model.Rule values.

Everything is checked before anything is touched: the first bad field raises model.InputError with one line that
names the rule (its 1-based position, its security group when known) and the field.

A rule has at most one peer range per Rule value. An OpenNebula rule that names a virtual network (NETWORK_ID)
arrives expanded into one rule per address range, which may carry an IPv4 range (IP) and IPv6 ranges of the same
SIZE (IP6, IP6_GLOBAL, IP6_ULA): such a rule becomes one Rule per range, which is the same allow-list since rules
are alternatives. A rule that can match no address (an Ethernet-only range, or NETWORK_ID with no address left)
becomes a Rule with size 0, which renders to nothing but keeps the NIC's rule list non-empty: an empty list would
read as security group 0 (allow all), and netfw fails closed.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from . import values
from .spec import (DIRECTIONS, ICMP_TYPE_MAX, MAX_MULTIPORT, MAX_PORT, MAX_RULE_BLOCKS, PORT_PROTOCOLS, PROTOCOLS,
                   InputError, Rule, check_rule_count)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The keys a user may write.
RULE_KEYS = frozenset(
    {"PROTOCOL", "RULE_TYPE", "RANGE", "ICMP_TYPE", "ICMPV6_TYPE", "IP", "SIZE", "SECURITY_GROUP_ID"}
)
#: The keys OpenNebula adds when it expands a NETWORK_ID rule into one rule per address range.
NETWORK_KEYS = frozenset(
    {"NETWORK_ID", "AR_ID", "TYPE", "MAC", "MAC_END", "IP_END", "IP6", "IP6_END", "IP6_GLOBAL", "IP6_GLOBAL_END",
     "IP6_ULA", "IP6_ULA_END", "IP6_LINK"}
)
#: Keys holding the first address of a peer range, in the order their Rules are emitted.
PEER_KEYS = ("IP", "IP6", "IP6_GLOBAL", "IP6_ULA")


class _FieldError(Exception):
    """A bad value; the caller adds which rule it belongs to."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")


def load_rules_json(text: str) -> tuple[Rule, ...]:
    """Parse a JSON list of rule objects for one NIC (an empty list gives (): nothing is allowed). Pure.

    The number of rule objects is checked against the cap before any of them is parsed.
    """
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"rules: invalid JSON: {e.msg} (line {e.lineno} column {e.colno})") from None
    except RecursionError:  # the C decoder recurses once per nesting level
        raise InputError("rules: invalid JSON: nested too deeply") from None
    except ValueError as e:  # a number of thousands of digits
        raise InputError(f"rules: invalid JSON: {e}") from None
    if not isinstance(items, list):
        raise InputError("rules: expected a JSON list of rule objects")
    try:
        check_rule_count(len(items))
    except InputError as e:
        raise InputError(f"rules: {e}") from None
    return parse_rules(items)


def parse_rules(items: list[dict], *, strict_keys: bool = True) -> tuple[Rule, ...]:
    """Validate rule objects (keys in any case, values strings or integers) in document order; pure."""
    rules: list[Rule] = []
    for position, item in enumerate(items, start=1):
        rules.extend(parse_rule(position, item, strict_keys=strict_keys))
    return tuple(rules)


def parse_rule(position: int, item: Any, *, strict_keys: bool = True) -> tuple[Rule, ...]:
    """The Rules of one rule object (one per peer range), or InputError naming it by its 1-based position; pure."""
    where = f"rule {position}"
    try:
        if not isinstance(item, Mapping):
            raise _FieldError("rule", "expected an object of KEY: value")
        fields = _fields(item, strict_keys)
        sg_id = _integer(fields, "SECURITY_GROUP_ID", minimum=0)
        if sg_id is not None:
            where += f" (security group {sg_id})"
        return _rules(fields, sg_id)
    except _FieldError as e:
        raise InputError(f"{where}: {e}") from None


def _fields(item: Mapping, strict_keys: bool) -> dict[str, str]:
    """Upper-cased keys → stripped string values; empty values count as absent (OpenNebula writes empty tags)."""
    fields: dict[str, str] = {}
    for raw_key, value in item.items():
        key = str(raw_key).strip().upper()
        if key not in RULE_KEYS and key not in NETWORK_KEYS:
            if strict_keys:
                raise _FieldError(str(raw_key), "unknown key")
            continue
        if key in fields:
            raise _FieldError(key, "given more than once (keys are case-insensitive)")
        if isinstance(value, bool) or not isinstance(value, (str, int, type(None))):
            raise _FieldError(key, f"{value!r} is not a string or an integer")
        text = "" if value is None else str(value).strip()
        if text:
            fields[key] = text
    return fields


def _rules(fields: dict[str, str], sg_id: int | None) -> tuple[Rule, ...]:
    protocol = _choice(fields, "PROTOCOL", PROTOCOLS)
    direction = _choice(fields, "RULE_TYPE", DIRECTIONS)
    ports = _ports(fields, protocol)
    icmp_type = _icmp_type(fields, protocol)
    base = dict(protocol=protocol, direction=direction, ports=ports, icmp_type=icmp_type, sg_id=sg_id)
    ranges = _peer_ranges(fields, protocol)
    if ranges is None:  # no address given: any peer
        return (Rule(**base),)
    if not ranges:  # addresses were asked for but none can match: fail closed
        return (Rule(**base, size=0),)
    return tuple(Rule(**base, ip=str(first), size=size) for first, size in ranges)


def _choice(fields: dict[str, str], key: str, allowed: tuple[str, ...]) -> str:
    if key not in fields:
        raise _FieldError(key, f"missing (one of {', '.join(allowed)})")
    value = fields[key].upper()
    if value not in allowed:
        raise _FieldError(key, f"{fields[key]!r} is not one of {', '.join(allowed)}")
    return value


def _integer(fields: dict[str, str], key: str, minimum: int, maximum: int | None = None) -> int | None:
    """The integer value of key, or None when absent."""
    if key not in fields:
        return None
    text = fields[key]
    if not text.isascii() or not text.lstrip("-").isdigit():
        raise _FieldError(key, f"{text!r} is not an integer")
    if len(text) > 40:  # 2**128 has 39 digits; int() of thousands of digits raises ValueError
        raise _FieldError(key, f"{text[:20]}... is too large")
    value = int(text)
    if value < minimum:
        raise _FieldError(key, f"{value} is below {minimum}")
    if maximum is not None and value > maximum:
        raise _FieldError(key, f"{value} is above {maximum}")
    return value


def _ports(fields: dict[str, str], protocol: str) -> str | None:
    """RANGE normalised to what iptables-save prints: no spaces, `p:p` written as `p`."""
    if "RANGE" not in fields:
        return None
    if protocol not in PORT_PROTOCOLS:
        raise _FieldError("RANGE", f"only for PROTOCOL TCP or UDP, not {protocol}")
    count = fields["RANGE"].count(",") + 1
    if count > MAX_MULTIPORT:  # before splitting: RANGE may be megabytes of "1,1,1..."
        raise _FieldError("RANGE", f"{count} ports is more than {MAX_MULTIPORT} (a range counts 2)")
    items, slots = [], 0
    for item in fields["RANGE"].split(","):
        lo, _, hi = (part.strip() for part in item.partition(":"))
        first, last = _port(lo, item), _port(hi, item) if hi else None
        if last is not None and first > last:
            raise _FieldError("RANGE", f"range {first}:{last} has its low port above its high port")
        if last is None or last == first:  # iptables refuses `p:p`
            items.append(str(first))
            slots += 1
        else:
            items.append(f"{first}:{last}")
            slots += 2
    if slots > MAX_MULTIPORT:
        raise _FieldError("RANGE", f"{slots} ports is more than {MAX_MULTIPORT} (a range counts 2)")
    return ",".join(items)


def _port(text: str, item: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise _FieldError("RANGE", f"{item.strip()!r} is not a port or a range lo:hi")
    if len(text) > 5 or int(text) > MAX_PORT:  # the length first: int() of thousands of digits raises ValueError
        raise _FieldError("RANGE", f"port {text[:20]} is above {MAX_PORT}")
    return int(text)


def _icmp_type(fields: dict[str, str], protocol: str) -> int | None:
    """ICMP_TYPE (ICMP only) or ICMPV6_TYPE (ICMPV6 only): one type, all its codes."""
    found = None
    for key, owner in (("ICMP_TYPE", "ICMP"), ("ICMPV6_TYPE", "ICMPV6")):
        if key not in fields:
            continue
        if protocol != owner:
            raise _FieldError(key, f"only for PROTOCOL {owner}, not {protocol}")
        found = _integer(fields, key, minimum=0, maximum=ICMP_TYPE_MAX[owner])
    return found


def _peer_ranges(fields: dict[str, str], protocol: str) -> list[tuple[Address, int]] | None:
    """(first address, size) of each peer range; None for any peer, [] when nothing can match."""
    expanded = "NETWORK_ID" in fields or "AR_ID" in fields
    size = _integer(fields, "SIZE", minimum=1)
    starts = [key for key in PEER_KEYS if key in fields]
    if not starts:
        if expanded:  # an Ethernet-only address range, or a network with no address: matches nothing
            return []
        if size is not None:
            raise _FieldError("SIZE", "needs IP (the first address of the range)")
        return None
    ranges = []
    for key in starts:
        first = _address(fields, key)
        if key != "IP" and first.version != 6:
            raise _FieldError(key, f"{fields[key]!r} is not an IPv6 address")
        if not _family_allowed(protocol, first.version):
            if not expanded:
                raise _FieldError(key, f"an IPv{first.version} address never matches PROTOCOL {protocol}")
            continue  # the other family of a dual-stack range: nothing to match there
        ranges.append((first, _checked_size(key, first, size or 1)))
    return ranges


def _address(fields: dict[str, str], key: str) -> Address:
    try:
        return values.address(fields[key])
    except ValueError as e:
        raise _FieldError(key, str(e)) from None


def _checked_size(key: str, first: Address, size: int) -> int:
    """size, if the range fits in its family and its cover stays within MAX_RULE_BLOCKS (counted, not built)."""
    if int(first) + size - 1 >= 1 << first.max_prefixlen:
        raise _FieldError("SIZE", f"{size} addresses from {key} {first} run past the end of IPv{first.version}")
    blocks = values.block_count(first, size)
    if blocks > MAX_RULE_BLOCKS:
        raise _FieldError("SIZE", f"{size} addresses from {key} {first} need {blocks} CIDR blocks, more than "
                                  f"{MAX_RULE_BLOCKS} (netfw's cap per rule): split the range")
    return size


def _family_allowed(protocol: str, version: int) -> bool:
    """ICMP exists only in IPv4, ICMPV6 only in IPv6."""
    return {"ICMP": 4, "ICMPV6": 6}.get(protocol, version) == version


def peers(rule: Rule) -> tuple[Network, ...]:
    """The rule's peer range as the minimal list of CIDR blocks; () for any peer and for a rule matching nothing."""
    if rule.ip is None or rule.size == 0:
        return ()
    return _blocks(rule.ip, rule.size or 1)


@functools.lru_cache(maxsize=4096)  # every NIC of a security group has the same peers (render, status, metrics)
def _blocks(ip: str, size: int) -> tuple[Network, ...]:
    first = ipaddress.ip_address(ip)
    last = type(first)(int(first) + size - 1)  # not ip_address(): a small int would read as IPv4
    return tuple(ipaddress.summarize_address_range(first, last))


def matches_nothing(rule: Rule) -> bool:
    """True for a rule whose peer list is empty (size 0): it renders to no line at all."""
    return rule.size == 0
