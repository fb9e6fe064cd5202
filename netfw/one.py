"""OpenNebula VM documents (what a network driver reads on stdin) turned into one NicSpec per NIC.

Pure: nothing here touches the host. A document is plain XML or its base64 (one line, or wrapped as `update_nic`
sends it). It is parsed with defusedxml and a size bound, so a DTD, an entity (the "billion laughs" XML bomb) or an
external reference is refused before anything expands. Every problem raises InputError with one line.

Decisions (see docs/OPENNEBULA.md for the facts they rest on):
- Addresses of a NIC: IP, VROUTER_IP and every IP6* / VROUTER_IP6* field, plus those of its NIC_ALIAS elements,
  found like the legacy driver does (the NIC's ALIAS_IDS) and also by the alias's PARENT_ID.
- router: the VM is a virtual router (TEMPLATE/VROUTER_ID) or the NIC carries a VROUTER_IP* address.
- Security groups: no SECURITY_GROUPS on the NIC means group 0, allow all (rules=None). Group 0 listed but without
  rules in the document also means allow all, since group 0 allows everything; when its rules are present they are
  ordinary rules. A listed group without rules in the document contributes nothing (the legacy driver does the same).
  So rules=() means "groups listed, nothing allowed" (only ESTABLISHED,RELATED), never allow-all.
- A NETWORK_ID rule arrives expanded (IP, IP6, IP6_GLOBAL, IP6_ULA sharing one SIZE, plus NETWORK_ID, AR_ID, TYPE,
  MAC...): its fields go to rules.parse_rules unchanged, which makes one Rule per address range.
- NIC_ALIAS with ATTACH=YES: its parent NIC is the one being (de)attached, as in the legacy driver.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as safe_et

from . import names
from .model import InputError, NicSpec, Rule
from .rules import parse_rules

#: Largest VM document accepted, in bytes after base64 decoding. Real ones are a few tens of KiB.
MAX_DOCUMENT = 4 * 1024 * 1024
#: Largest input accepted before decoding: base64 is 4/3 larger, plus its line breaks.
MAX_INPUT = 2 * MAX_DOCUMENT

#: The VN_MAD drivers whose NICs netfw puts behind a firewall unless configured otherwise.
DEFAULT_VN_MADS = ("fw", "802.1Q", "vxlan", "bridge")

IPV4_KEYS = ("IP", "VROUTER_IP")
IPV6_KEYS = (
    "IP6", "IP6_GLOBAL", "IP6_ULA", "IP6_LINK",
    "VROUTER_IP6", "VROUTER_IP6_GLOBAL", "VROUTER_IP6_ULA", "VROUTER_IP6_LINK",
)  # fmt: skip
#: The fields of a NIC (or NIC_ALIAS) that hold its own addresses, for the IP spoofing filter.
ADDRESS_KEYS = IPV4_KEYS + IPV6_KEYS

_NUMBER_RE = re.compile(r"[0-9]+")
_MAC_RE = re.compile(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}")


def _error(message: str) -> InputError:
    """An InputError about the VM document."""
    return InputError(f"VM document: {message}")


@dataclass(frozen=True)
class VmNic:
    """One NIC of the document: its spec, its driver, and whether it is being hot-(de)attached."""

    spec: NicSpec
    vn_mad: str  # "" when the document has no VN_MAD (documents older than OpenNebula 5)
    attach: bool  # the NIC, or one of its NIC_ALIASes, carries ATTACH=YES
    network_id: int | None = None  # NETWORK_ID: the virtual network (update_nic selects NICs by it)


@dataclass(frozen=True)
class VmDoc:
    """What netfw takes from a VM document: the VM id, its deploy id and every NIC."""

    vm: int
    deploy_id: str | None
    nics: tuple[VmNic, ...]

    def nic(self, nic_id: int) -> VmNic:
        """The NIC with this NIC_ID, else InputError."""
        for nic in self.nics:
            if nic.spec.nic == nic_id:
                return nic
        have = ", ".join(str(n.spec.nic) for n in self.nics) or "none"
        raise _error(f"it has no NIC with NIC_ID {nic_id} (its NIC_IDs: {have})")

    def handled(self, vn_mads: tuple[str, ...] = DEFAULT_VN_MADS) -> tuple[VmNic, ...]:
        """The NICs netfw acts on: those with a listed VN_MAD; with ATTACH=YES somewhere, only that NIC."""
        nics = tuple(n for n in self.nics if n.vn_mad in vn_mads)
        if any(n.attach for n in self.nics):
            return tuple(n for n in nics if n.attach)
        return nics


# --- reading the document -------------------------------------------------------------------------------------------


def _as_bytes(data: bytes | str) -> bytes:
    """The input as bytes, bounded, without a byte-order mark or surrounding whitespace."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_INPUT:
        raise _error(f"input is {len(raw)} bytes, more than {MAX_INPUT}")
    raw = raw.strip()
    return raw.removeprefix(b"\xef\xbb\xbf").strip()


def _decode(raw: bytes) -> bytes:
    """The XML text: raw itself if it looks like XML, else raw decoded from base64 (whitespace ignored)."""
    if not raw:
        raise _error("it is empty")
    if raw.startswith(b"<"):
        return raw
    try:
        xml = base64.b64decode(b"".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        raise _error("it is neither XML nor base64") from None
    xml = xml.strip().removeprefix(b"\xef\xbb\xbf").strip()
    if not xml.startswith(b"<"):
        raise _error("it is base64, but what it decodes to is not XML")
    return xml


def _parse(xml: bytes) -> Element:
    """Parse XML text with DTDs, entities and external references forbidden."""
    if len(xml) > MAX_DOCUMENT:
        raise _error(f"it is {len(xml)} bytes, more than {MAX_DOCUMENT}")
    try:
        return safe_et.fromstring(xml, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DTDForbidden:
        raise _error("a DTD is not allowed (entity expansion, XML bomb or external entity)") from None
    except defusedxml.EntitiesForbidden:
        raise _error("entity declarations are not allowed (XML bomb?)") from None
    except defusedxml.ExternalReferenceForbidden:
        raise _error("external references are not allowed") from None
    except ParseError as e:
        raise _error(f"it is not well-formed XML ({e})") from None


def _strip_namespaces(root: Element) -> None:
    """Drop `{namespace}` prefixes from tags, so that a document carrying the schema's xmlns reads the same."""
    for elem in root.iter():
        if isinstance(elem.tag, str) and elem.tag.startswith("{"):
            elem.tag = elem.tag.split("}", 1)[1]


def read_document(data: bytes | str) -> Element:
    """The <VM> root element of a document given as plain XML or base64; InputError for anything else."""
    root = _parse(_decode(_as_bytes(data)))
    _strip_namespaces(root)
    if root.tag != "VM":
        raise _error(f"the root element is <{root.tag}>, not <VM>")
    return root


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


def _address(text: str, what: str) -> str:
    """An IP address in its canonical form, else InputError."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise _error(f"{what} {text!r} is not an IP address") from None


def _addresses(nic: Element, aliases: list[Element], nic_id: int) -> tuple[str, ...]:
    """The addresses of a NIC, then of its aliases, without duplicates."""
    owners = [(f"NIC {nic_id}", nic)] + [(f"NIC {nic_id}: NIC_ALIAS {_text(a, 'NIC_ID')}", a) for a in aliases]
    found: dict[str, None] = {}
    for owner, elem in owners:
        for key in ADDRESS_KEYS:
            text = _text(elem, key)
            if text is not None:
                found[_address(text, f"{owner}: {key}")] = None
    return tuple(found)


def _aliases(template: Element, nic: Element, nic_id: int) -> list[Element]:
    """The NIC_ALIAS elements of a NIC: listed in its ALIAS_IDS or naming it as PARENT_ID."""
    alias_ids = {a.strip() for a in (_text(nic, "ALIAS_IDS") or "").split(",") if a.strip()}
    return [
        a
        for a in template.findall("NIC_ALIAS")
        if _text(a, "PARENT_ID") == str(nic_id) or _text(a, "NIC_ID") in alias_ids
    ]


def _mac(nic: Element, nic_id: int, filter_mac: bool) -> str | None:
    """The NIC's MAC in lower case; required when the MAC spoofing filter is on."""
    mac = _text(nic, "MAC")
    if mac is None:
        if filter_mac:
            raise _error(f"NIC {nic_id}: FILTER_MAC_SPOOFING is on but MAC is missing")
        return None
    if not _MAC_RE.fullmatch(mac):
        raise _error(f"NIC {nic_id}: MAC {mac!r} is not a MAC address")
    return mac.lower()


def _sg_ids(nic: Element, nic_id: int) -> tuple[int, ...] | None:
    """The NIC's SECURITY_GROUPS as ids in their order, or None when it lists none."""
    text = _text(nic, "SECURITY_GROUPS")
    if text is None:
        return None
    ids = [_number(s.strip(), f"NIC {nic_id}: security group") for s in text.split(",") if s.strip()]
    return tuple(dict.fromkeys(ids)) or None


def _flag(elem: Element, tag: str) -> bool:
    """True when the field, upper-cased, is YES."""
    return (_text(elem, tag) or "").upper() == "YES"


# --- security-group rules -------------------------------------------------------------------------------------------


def _rule_item(elem: Element, index: int) -> dict[str, str]:
    """One SECURITY_GROUP_RULE as {TAG: text}, empty fields left out; its SECURITY_GROUP_ID must be a number."""
    item: dict[str, str] = {}
    for child in elem:
        text = (child.text or "").strip()
        if not text:
            continue
        if child.tag in item:
            raise _error(f"rule {index}: {child.tag} appears twice")
        item[child.tag] = text
    _number(item.get("SECURITY_GROUP_ID"), f"rule {index}: SECURITY_GROUP_ID")
    return item


def _document_rules(template: Element) -> tuple[Rule, ...]:
    """Every SECURITY_GROUP_RULE of the document as Rules, in document order, each with its sg_id."""
    items = [_rule_item(elem, i) for i, elem in enumerate(template.findall("SECURITY_GROUP_RULE"), start=1)]
    try:
        return parse_rules(items, strict_keys=False)
    except InputError as e:
        raise _error(str(e)) from None


def _check_groups(rules: tuple[Rule, ...], nics: tuple[VmNic, ...]) -> None:
    """InputError for a rule whose security group no NIC lists (a NIC without SECURITY_GROUPS has group 0)."""
    listed = {sg for n in nics for sg in n.spec.sg_ids or (0,)}
    for rule in rules:
        if rule.sg_id not in listed:
            raise _error(f"a SECURITY_GROUP_RULE names security group {rule.sg_id}, which no NIC has")


def _nic_rules(sg_ids: tuple[int, ...] | None, rules: tuple[Rule, ...]) -> tuple[Rule, ...] | None:
    """The NIC's Rules in document order; None (allow all) without groups or for group 0 without rules."""
    if sg_ids is None:
        return None
    mine = tuple(rule for rule in rules if rule.sg_id in sg_ids)
    if 0 in sg_ids and not any(rule.sg_id == 0 for rule in mine):
        return None
    return mine


# --- NICs -----------------------------------------------------------------------------------------------------------


def _mtu(nic: Element, nic_id: int) -> int | None:
    """The NIC's MTU, or None when the document sets none."""
    text = _text(nic, "MTU")
    return None if text is None else _number(text, f"NIC {nic_id}: MTU")


def _spec(vm: int, nic_id: int, fields: dict) -> NicSpec:
    """A NicSpec, its validation errors (names, MTU) prefixed with the NIC."""
    try:
        return NicSpec(vm=vm, nic=nic_id, **fields)
    except InputError as e:
        raise _error(f"NIC {nic_id}: {e}") from None


def _vm_nic(vm: int, template: Element, nic: Element, rules: tuple[Rule, ...], router: bool, position: int) -> VmNic:
    """One NIC element (the position-th, from 1) as a VmNic."""
    nic_id = _number(_text(nic, "NIC_ID"), f"the NIC_ID of NIC element {position}")
    bridge = _text(nic, "BRIDGE")
    if bridge is None:
        raise _error(f"NIC {nic_id}: BRIDGE is missing")
    filter_mac = _flag(nic, "FILTER_MAC_SPOOFING")
    sg_ids = _sg_ids(nic, nic_id)
    aliases = _aliases(template, nic, nic_id)
    fields = dict(
        bridge=bridge,
        tap=_text(nic, "TARGET") or "",
        mtu=_mtu(nic, nic_id),
        mac=_mac(nic, nic_id, filter_mac),
        ips=_addresses(nic, aliases, nic_id),
        filter_mac=filter_mac,
        filter_ip=_flag(nic, "FILTER_IP_SPOOFING"),
        router=router or any(_text(nic, k) for k in ADDRESS_KEYS if k.startswith("VROUTER_")),
        rules=_nic_rules(sg_ids, rules),
        sg_ids=sg_ids or (),
    )
    attach = any(_flag(e, "ATTACH") for e in (nic, *aliases))  # an alias (de)attach concerns its parent NIC
    network = _text(nic, "NETWORK_ID")
    network_id = int(network) if network and network.isdigit() else None
    return VmNic(_spec(vm, nic_id, fields), _text(nic, "VN_MAD") or "", attach, network_id)


def _check_unique(nics: tuple[VmNic, ...]) -> None:
    """InputError when two NICs share a NIC_ID."""
    seen: set[int] = set()
    for n in nics:
        if n.spec.nic in seen:
            raise _error(f"NIC_ID {n.spec.nic} appears twice")
        seen.add(n.spec.nic)


def parse_vm(data: bytes | str, *, vm: int | None = None) -> VmDoc:
    """The VmDoc of a VM document (plain XML or base64); `vm`, when given, must be the document's ID."""
    root = read_document(data)
    vm_id = _vm_id(root, vm)
    template = root.find("TEMPLATE")
    if template is None:
        template = Element("TEMPLATE")
    rules = _document_rules(template)
    router = _text(template, "VROUTER_ID") is not None
    elems = template.findall("NIC")
    nics = tuple(_vm_nic(vm_id, template, nic, rules, router, p) for p, nic in enumerate(elems, start=1))
    _check_unique(nics)
    _check_groups(rules, nics)
    return VmDoc(vm=vm_id, deploy_id=_text(root, "DEPLOY_ID"), nics=nics)
