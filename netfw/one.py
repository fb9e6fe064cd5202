"""OpenNebula VM documents (what a network driver reads on stdin) turned into one NicSpec per NIC.

Pure: nothing here touches the host. netfw.document reads the document (plain XML or base64, bounded, no DTD);
every problem raises InputError with one line.

Decisions (see docs/OPENNEBULA.md for the facts they rest on):
- Addresses of a NIC: IP, VROUTER_IP and every IP6* / VROUTER_IP6* field, plus those of its NIC_ALIAS elements,
  found like the legacy driver does (the NIC's ALIAS_IDS) and also by the alias's PARENT_ID; an alias that two
  NICs would own is refused. Addresses are canonical and carry no zone id (netfw.values).
- TARGET: OpenNebula names a NIC's tap one-<VM>-<NIC>; a document naming any other link (the bridge's uplink, say)
  is refused, so that a document can never make root move a foreign link into a VM namespace.
- Shapes: oned sends `pre`, `post`, `clean` and `update_sg` a reduced document in which every copied element has a
  TEMPLATE parent of its own (`<VM><ID/><TEMPLATE><CONTEXT/></TEMPLATE><TEMPLATE><NIC/></TEMPLATE>...`), and
  `update_nic` the whole VM (one TEMPLATE, as `onevm show -x` prints it). Like OpenNebula's drivers (XPath
  `TEMPLATE/NIC`), netfw reads NIC, NIC_ALIAS, PCI, SECURITY_GROUP_RULE and VROUTER_ID under every TEMPLATE. A
  document of another shape (no or two IDs, a NIC or rule directly under VM) is refused, never read as "no NIC".
- router: the VM is a virtual router or the NIC carries a VROUTER_IP* address. oned copies a virtual router's
  VROUTER_ID into TEMPLATE/CONTEXT (the reduced document keeps CONTEXT, not TEMPLATE/VROUTER_ID): either counts.
- Security groups: a NIC without a SECURITY_GROUPS element is in group 0, allow all (rules=None), as OpenNebula
  defines it. An element that lists no id (empty, `,`) is an input error. Every listed group, group 0 included,
  contributes exactly its rules in the document, and a group without rules there contributes nothing (as the legacy
  driver does): rules=() means "groups listed, nothing allowed" (only ESTABLISHED,RELATED), never allow-all.
  Rules of groups the NIC does not list are ignored, whatever lists them (a PCI NIC, an alias), as the legacy
  driver does; only the rules of groups some NIC lists are parsed.
- A NETWORK_ID rule arrives expanded (IP, IP6, IP6_GLOBAL, IP6_ULA sharing one SIZE, plus NETWORK_ID, AR_ID, TYPE,
  MAC...): its fields go to rules.parse_rule unchanged, which makes one Rule per address range.
- PCI NICs (`PCI` with TYPE=NIC: SR-IOV, passthrough) have no tap: they are not handled, only named (pci_nics). A
  PCI element with a VN_MAD that is not TYPE=NIC, or a NIC_ALIAS whose parent NIC is not in the document, is refused.
- A handled NIC on BRIDGE_TYPE openvswitch_dpdk (a vhost-user port, no tap) is refused (VmDoc.handled); a NIC that
  is not handled is only classified (its VN_MAD), so leaving that VN_MAD out of the list works.
- ATTACH=YES (a hot attach or detach) on a NIC or a PCI NIC: post and clean concern that NIC alone; on a
  NIC_ALIAS: its parent NIC, re-applied with the alias's addresses (post) or without them (clean). update_sg and
  update_nic ignore ATTACH (see VmDoc.hotplug).
- Caps (model.MAX_*, MAX_DOCUMENT_RULES, MAX_VM_RULES, document.MAX_*) are checked on counts, before anything they
  bound is parsed or expanded.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from . import names, values
from .document import MAX_DOCUMENT, MAX_INPUT, error as _error, read as read_document  # noqa: F401 (API)
from .model import Bandwidth, MAX_ADDRESSES, InputError, NicSpec, Rule
from .rules import parse_rule

#: The VN_MAD drivers whose NICs netfw puts behind a firewall unless configured otherwise.
DEFAULT_VN_MADS = ("fw", "802.1Q", "vxlan", "bridge", "ovswitch", "ovswitch_vxlan")

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

_NUMBER_RE = re.compile(r"[0-9]{1,20}")  # bounded: int() of thousands of digits raises ValueError


@dataclass(frozen=True)
class VmNic:
    """One NIC of the document: its spec, its driver, and whether it or an alias of it is being hot-(de)attached."""

    spec: NicSpec
    vn_mad: str  # "" when the document has no VN_MAD (documents older than OpenNebula 5)
    attach: bool  # the NIC itself carries ATTACH=YES
    network_id: int | None = None  # NETWORK_ID: the virtual network (update_nic selects NICs by it)
    alias_detached: NicSpec | None = None  # an alias of it carries ATTACH=YES: the spec without that alias's addresses
    vhost_user: bool = False  # BRIDGE_TYPE openvswitch_dpdk: a vhost-user port, no tap to put behind a firewall

    def check_filterable(self) -> None:
        """InputError when netfw is asked to handle a NIC that has no tap (a vhost-user port)."""
        if self.vhost_user:
            raise _error(f"NIC {self.spec.nic}: BRIDGE_TYPE openvswitch_dpdk is a vhost-user port without a tap: "
                         f"netfw has nothing to put behind a firewall (leave VN_MAD {self.vn_mad} out of the handled "
                         "ones)")


@dataclass(frozen=True)
class VmDoc:
    """What netfw takes from a VM document: the VM id, its deploy id, every NIC, and the PCI NICs it leaves alone."""

    vm: int
    deploy_id: str | None
    nics: tuple[VmNic, ...]
    pci_nics: tuple[str, ...] = ()  # PCI NICs (no tap: not handled), by NIC_ID, for the log
    hotplug_of: str | None = None  # what carries ATTACH=YES: "nic", "pci", "alias", or None
    drivers: tuple[str, ...] = ()  # the VN_MADs of its NIC, NIC_ALIAS and PCI elements: the drivers oned runs for it

    def nic(self, nic_id: int) -> VmNic:
        """The NIC with this NIC_ID, else InputError."""
        for nic in self.nics:
            if nic.spec.nic == nic_id:
                nic.check_filterable()
                return nic
        have = ", ".join(str(n.spec.nic) for n in self.nics) or "none"
        raise _error(f"it has no NIC with NIC_ID {nic_id} (its NIC_IDs: {have})")

    def handled(self, vn_mads: tuple[str, ...] = DEFAULT_VN_MADS) -> tuple[VmNic, ...]:
        """Every NIC netfw acts on, ATTACH aside: those with a listed VN_MAD (update_sg, update_nic)."""
        nics = tuple(n for n in self.nics if n.vn_mad in vn_mads)
        for nic in nics:
            nic.check_filterable()
        return nics

    def not_handled(self, vn_mads: tuple[str, ...] = DEFAULT_VN_MADS) -> str:
        """What netfw leaves to other drivers, counted by VN_MAD, for the log: '2 NICs with VN_MAD dummy (3, 4),
        1 PCI NIC (1)'; "" when it handles every NIC."""
        by_mad: dict[str, list[str]] = {}
        for nic in self.nics:
            if nic.vn_mad not in vn_mads:
                by_mad.setdefault(nic.vn_mad, []).append(str(nic.spec.nic))
        parts = [f"{len(ids)} NIC{'s' if len(ids) > 1 else ''} "
                 f"{'with VN_MAD ' + mad if mad else 'without VN_MAD'} ({', '.join(ids)})"
                 for mad, ids in by_mad.items()]
        if self.pci_nics:
            n = len(self.pci_nics)
            parts.append(f"{n} PCI NIC{'s' if n > 1 else ''} ({', '.join(self.pci_nics)})")
        return ", ".join(parts)

    def hotplug(self, vn_mads: tuple[str, ...] = DEFAULT_VN_MADS) -> tuple[VmNic, ...]:
        """The handled NICs a post or clean concerns: with ATTACH=YES on a NIC, that NIC alone (none for a PCI NIC);
        on a NIC_ALIAS, its parent NIC (to re-apply); without ATTACH, every handled NIC."""
        nics = self.handled(vn_mads)
        if self.hotplug_of in ("nic", "pci"):
            return tuple(n for n in nics if n.attach)
        if self.hotplug_of == "alias":
            return tuple(n for n in nics if n.alias_detached is not None)
        return nics


# --- fields ---------------------------------------------------------------------------------------------------------


def _text(elem: Element | None, tag: str) -> str | None:
    """The stripped text of the first `tag` child (CDATA included), or None when absent or empty."""
    child = None if elem is None else elem.find(tag)
    text = (child.text or "").strip() if child is not None else ""
    return text or None


def _number(text: str | None, what: str) -> int:
    """A non-negative decimal integer, else InputError naming `what`."""
    if text is None:
        raise _error(f"{what} is missing")
    if not _NUMBER_RE.fullmatch(text):
        raise _error(f"{what} is not a number: {text!r}")
    return int(text)


def _vm_id(root: Element, vm: int | None) -> int:
    """The document's VM ID, checked against an explicit VM argument."""
    vm_id = _number(_text(root, "ID"), "the VM ID")
    try:
        names.check_ids(vm_id, 0)
    except ValueError as e:
        raise _error(str(e)) from None
    if vm is not None and vm != vm_id:
        raise _error(f"it describes VM {vm_id}, not VM {vm} as given")
    return vm_id


def _flag(elem: Element, tag: str) -> bool:
    """True when the field, upper-cased, is YES."""
    return (_text(elem, tag) or "").upper() == "YES"


def _addresses(owners: list[tuple[str, Element]], nic_id: int) -> tuple[str, ...]:
    """The canonical addresses of the owners (a NIC, then its aliases), without duplicates, within MAX_ADDRESSES."""
    found = [(owner, key, text) for owner, elem in owners for key in ADDRESS_KEYS
             if (text := _text(elem, key)) is not None]
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


def _mac(nic: Element, nic_id: int, filter_mac: bool) -> str | None:
    """The NIC's MAC in lower case; required when the MAC spoofing filter is on."""
    mac = _text(nic, "MAC")
    if mac is None:
        if filter_mac:
            raise _error(f"NIC {nic_id}: FILTER_MAC_SPOOFING is on but MAC is missing")
        return None
    try:
        return values.mac(mac)
    except ValueError as e:
        raise _error(f"NIC {nic_id}: MAC {e}") from None


def _sg_ids(nic: Element, nic_id: int) -> tuple[int, ...] | None:
    """The NIC's SECURITY_GROUPS as ids in their order; None without the element (group 0, allow all)."""
    elem = nic.find("SECURITY_GROUPS")
    if elem is None:
        return None
    text = elem.text or ""
    if text.count(",") >= MAX_NIC_GROUPS:  # counted before anything is split or parsed
        raise _error(f"NIC {nic_id}: SECURITY_GROUPS lists more than {MAX_NIC_GROUPS} groups (netfw's cap)")
    ids = [_number(s.strip(), f"NIC {nic_id}: security group") for s in text.split(",") if s.strip()]
    if not ids:  # an emptied list must not widen to group 0
        raise _error(f"NIC {nic_id}: SECURITY_GROUPS {text!r} lists no security group")
    return tuple(dict.fromkeys(ids))


def _tap(nic: Element, vm: int, nic_id: int) -> str:
    """TARGET, which must be the tap OpenNebula creates for this NIC (absent: that tap)."""
    tap = names.tap(vm, nic_id)
    target = _text(nic, "TARGET")
    if target is None or target == tap:
        return tap
    try:
        names.check_ifname(target, "tap")
    except InputError as e:
        raise _error(f"NIC {nic_id}: {e}") from None
    raise _error(f"NIC {nic_id}: TARGET {target!r} is not the NIC's tap {tap}")


# --- NIC aliases (one pass over the document, so the lookup stays linear) -------------------------------------------


def _alias_owners(root: Element, nics: list[tuple[int, Element]], pci_ids: set[str]) -> dict[int, list[Element]]:
    """NIC_ID -> its NIC_ALIAS elements (by the NIC's ALIAS_IDS or the alias's PARENT_ID); InputError when an
    alias would belong to two NICs, or to none (its parent is neither a NIC nor a PCI NIC of the document)."""
    by_id: dict[str, Element] = {}
    by_parent: dict[str, list[Element]] = {}
    aliases = root.findall("TEMPLATE/NIC_ALIAS")
    for alias in aliases:
        alias_id = _text(alias, "NIC_ID")
        if alias_id is not None:
            if alias_id in by_id:
                raise _error(f"NIC_ALIAS NIC_ID {alias_id} appears twice")
            by_id[alias_id] = alias
        by_parent.setdefault(_text(alias, "PARENT_ID") or "", []).append(alias)
    owner: dict[int, int] = {}  # id(alias element) -> NIC_ID
    found: dict[int, list[Element]] = {}
    for nic_id, nic in nics:
        alias_ids = _text(nic, "ALIAS_IDS") or ""
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
                raise _error(f"NIC_ALIAS {_text(alias, 'NIC_ID')} belongs to NIC {other} and to NIC {nic_id}")
    for alias in aliases:
        parent = _text(alias, "PARENT_ID")
        if id(alias) not in owner and parent not in pci_ids:
            raise _error(f"NIC_ALIAS {_text(alias, 'NIC_ID') or '?'}: its parent NIC {parent or '(no PARENT_ID)'} "
                         "is not in the document")
    return found


# --- security-group rules -------------------------------------------------------------------------------------------


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


def _rule_groups(root: Element) -> dict[int, list[tuple[int, Element]]]:
    """Security group id -> its SECURITY_GROUP_RULE elements (under every TEMPLATE) with their 1-based document
    positions. Nothing parsed yet but the group ids, so that caps are checked on counts first."""
    elems = root.findall("TEMPLATE/SECURITY_GROUP_RULE")
    if len(elems) > MAX_DOCUMENT_RULES:
        raise _error(f"it has {len(elems)} SECURITY_GROUP_RULE elements, more than {MAX_DOCUMENT_RULES} "
                     "(netfw's cap)")
    groups: dict[int, list[tuple[int, Element]]] = {}
    for index, elem in enumerate(elems, start=1):
        sg = _number(_text(elem, "SECURITY_GROUP_ID"), f"rule {index}: SECURITY_GROUP_ID")
        groups.setdefault(sg, []).append((index, elem))
    return groups


def _check_counts(groups: dict[int, list], listing: list[tuple[int, tuple[int, ...] | None]]) -> None:
    """The cap on rules per VM, on element counts, before any rule is parsed (NicSpec checks each NIC's Rules)."""
    total = sum(len(groups.get(sg, ())) for _, sg_ids in listing for sg in sg_ids or ())
    if total > MAX_VM_RULES:
        raise _error(f"its NICs have {total} security-group rules together, more than {MAX_VM_RULES} (netfw's cap)")


def _parse_groups(groups: dict[int, list[tuple[int, Element]]], listed: set[int]) -> dict[int, list]:
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


def _nic_rules(sg_ids: tuple[int, ...] | None, parsed: dict[int, list]) -> tuple[Rule, ...] | None:
    """The NIC's Rules in document order; None (group 0, allow all) when the NIC has no SECURITY_GROUPS."""
    if sg_ids is None:
        return None
    runs = [parsed.get(sg, []) for sg in sg_ids]
    return tuple(rule for _, rules in heapq.merge(*runs, key=lambda item: item[0]) for rule in rules)


# --- NICs -----------------------------------------------------------------------------------------------------------


def _mtu(nic: Element, nic_id: int) -> int | None:
    """The NIC's MTU, or None when the document sets none."""
    text = _text(nic, "MTU")
    return None if text is None else _number(text, f"NIC {nic_id}: MTU")


def _spec(vm: int, nic_id: int, fields: dict) -> NicSpec:
    """A NicSpec, its validation errors (names, MTU, caps) prefixed with the NIC."""
    try:
        return NicSpec(vm=vm, nic=nic_id, **fields)
    except InputError as e:
        raise _error(f"NIC {nic_id}: {e}") from None


@dataclass(frozen=True)
class _Context:
    """What every NIC of one document is read against."""

    vm: int
    router: bool  # the VM is a virtual router
    aliases: dict[int, list[Element]]
    rules: dict[int, list]  # parsed rules by security group


def _bandwidth(nic: Element, nic_id: int) -> Bandwidth | None:
    """The NIC's INBOUND_* / OUTBOUND_* limits (KB/s, KB), None when it has none."""
    given = {field: _number(text, f"NIC {nic_id}: {key}") for key, field in BANDWIDTH_KEYS.items()
             if (text := _text(nic, key)) is not None}
    if not given:
        return None
    try:
        return Bandwidth(**given)
    except InputError as e:
        raise _error(f"NIC {nic_id}: {e}") from None


def _vm_nic(ctx: _Context, nic: Element, nic_id: int, sg_ids: tuple[int, ...] | None) -> VmNic:
    """One NIC element as a VmNic."""
    bridge = _text(nic, "BRIDGE")
    if bridge is None:
        raise _error(f"NIC {nic_id}: BRIDGE is missing")
    _tap(nic, ctx.vm, nic_id)  # NicSpec takes OpenNebula's tap name itself
    filter_mac = _flag(nic, "FILTER_MAC_SPOOFING")
    aliases = ctx.aliases.get(nic_id, [])
    owners = [(f"NIC {nic_id}", nic)] + [(f"NIC {nic_id}: NIC_ALIAS {_text(a, 'NIC_ID')}", a) for a in aliases]
    fields = dict(
        bridge=bridge,
        mtu=_mtu(nic, nic_id),
        mac=_mac(nic, nic_id, filter_mac),
        ips=_addresses(owners, nic_id),
        filter_mac=filter_mac,
        filter_ip=_flag(nic, "FILTER_IP_SPOOFING"),
        router=ctx.router or any(_text(nic, k) for k in ADDRESS_KEYS if k.startswith("VROUTER_")),
        rules=_nic_rules(sg_ids, ctx.rules),
        sg_ids=sg_ids or (),
        bandwidth=_bandwidth(nic, nic_id),
    )
    spec = _spec(ctx.vm, nic_id, fields)
    detached = None
    if any(_flag(a, "ATTACH") for a in aliases):  # clean re-applies the NIC without that alias
        kept = [(owner, elem) for owner, elem in owners if elem is nic or not _flag(elem, "ATTACH")]
        detached = dataclasses.replace(spec, ips=_addresses(kept, nic_id))
    network = _text(nic, "NETWORK_ID")
    network_id = int(network) if network and _NUMBER_RE.fullmatch(network) else None
    vhost_user = (_text(nic, "BRIDGE_TYPE") or "").lower() == "openvswitch_dpdk"
    return VmNic(spec, _text(nic, "VN_MAD") or "", _flag(nic, "ATTACH"), network_id, detached, vhost_user)


def _nic_id(nic: Element, position: int) -> int:
    """The NIC_ID of the position-th NIC element (from 1), in range (names.NIC_MAX)."""
    nic_id = _number(_text(nic, "NIC_ID"), f"the NIC_ID of NIC element {position}")
    if nic_id > names.NIC_MAX:  # checked first: it also bounds how many NICs a document can have
        raise _error(f"NIC id {nic_id} is out of range 0..{names.NIC_MAX}")
    return nic_id


def _check_unique(nics: list[tuple[int, Element]]) -> None:
    """InputError when two NICs share a NIC_ID."""
    seen: set[int] = set()
    for nic_id, _ in nics:
        if nic_id in seen:
            raise _error(f"NIC_ID {nic_id} appears twice")
        seen.add(nic_id)


#: Elements that only ever stand under TEMPLATE; one directly under VM is a shape oned never sends.
_TEMPLATE_ONLY = ("NIC", "NIC_ALIAS", "PCI", "SECURITY_GROUP_RULE", "VROUTER_ID", "CONTEXT")


def _check_shape(root: Element) -> None:
    """InputError for a document whose shape is none of oned's (the reduced one, the whole VM): one ID, at most one
    DEPLOY_ID, and NICs, aliases, PCI devices and rules only under TEMPLATE (where the drivers' XPath looks)."""
    for tag, most in (("ID", 1), ("DEPLOY_ID", 1)):
        if len(root.findall(tag)) > most:
            raise _error(f"it has {len(root.findall(tag))} <{tag}> elements under <VM>: not a shape oned sends")
    for child in root:
        if child.tag in _TEMPLATE_ONLY:
            raise _error(f"a <{child.tag}> element directly under <VM>: not a shape oned sends (it belongs under "
                         "<TEMPLATE>, where OpenNebula's drivers look)")


def _router(root: Element) -> bool:
    """Whether the VM is a virtual router: VROUTER_ID in TEMPLATE (the whole VM) or in TEMPLATE/CONTEXT (where oned
    copies it; the reduced document keeps CONTEXT only), a number."""
    found = [e for path in ("TEMPLATE/VROUTER_ID", "TEMPLATE/CONTEXT/VROUTER_ID") for e in root.findall(path)]
    for elem in found:
        _number((elem.text or "").strip() or None, "VROUTER_ID")
    return bool(found)


def _pci_nics(root: Element) -> list[Element]:
    """The PCI elements that are NICs (SR-IOV, passthrough): no tap, so netfw leaves them alone. A PCI element with
    a VN_MAD that is not a NIC is refused: the drivers would run for it, and netfw cannot say what it is."""
    found = []
    for position, pci in enumerate(root.findall("TEMPLATE/PCI"), start=1):
        if (_text(pci, "TYPE") or "").upper() == "NIC":
            found.append(pci)
        elif _text(pci, "VN_MAD") is not None:
            raise _error(f"PCI element {position} has VN_MAD {_text(pci, 'VN_MAD')!r} but is not TYPE NIC: netfw "
                         "cannot classify it")
    return found


def _drivers(root: Element) -> tuple[str, ...]:
    """The VN_MADs of the NIC, NIC_ALIAS and PCI elements in order, once each: the network drivers oned runs."""
    found = (_text(e, "VN_MAD") for kind in ("NIC", "NIC_ALIAS", "PCI") for e in root.findall(f"TEMPLATE/{kind}"))
    return tuple(dict.fromkeys(mad for mad in found if mad))


def _hotplug_of(root: Element, pci: list[Element]) -> str | None:
    """What carries ATTACH=YES: a NIC (or a PCI NIC) takes precedence over a NIC_ALIAS."""
    if any(_flag(n, "ATTACH") for n in root.findall("TEMPLATE/NIC")):
        return "nic"
    if any(_flag(p, "ATTACH") for p in pci):
        return "pci"
    if any(_flag(a, "ATTACH") for a in root.findall("TEMPLATE/NIC_ALIAS")):
        return "alias"
    return None


def parse_vm(data: bytes | str, *, vm: int | None = None) -> VmDoc:
    """The VmDoc of a VM document (plain XML or base64, any shape oned sends); `vm`, when given, must be the
    document's ID."""
    root = read_document(data)
    _check_shape(root)
    vm_id = _vm_id(root, vm)
    elems = [(_nic_id(nic, p), nic) for p, nic in enumerate(root.findall("TEMPLATE/NIC"), start=1)]
    _check_unique(elems)
    listing = [(nic_id, _sg_ids(nic, nic_id)) for nic_id, nic in elems]
    groups = _rule_groups(root)
    _check_counts(groups, listing)
    listed = {sg for _, sg_ids in listing for sg in sg_ids or ()}
    pci = _pci_nics(root)
    labels = tuple(str(_number(_text(p, "NIC_ID"), f"the NIC_ID of PCI NIC {i}")) if _text(p, "NIC_ID") else "?"
                   for i, p in enumerate(pci, start=1))
    ctx = _Context(vm_id, _router(root), _alias_owners(root, elems, set(labels)), _parse_groups(groups, listed))
    nics = tuple(_vm_nic(ctx, nic, nic_id, sg_ids) for (nic_id, nic), (_, sg_ids) in zip(elems, listing))
    return VmDoc(vm_id, _text(root, "DEPLOY_ID"), nics, labels, _hotplug_of(root, pci), _drivers(root))
