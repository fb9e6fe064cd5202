"""OpenNebula VM documents (what a network driver reads on stdin) turned into one NicSpec per NIC.

Pure: nothing here touches the host. netfw.model.document reads the document (plain XML or base64, bounded, no DTD);
every problem raises InputError with one line.

Decisions (see docs/OPENNEBULA.md for the facts they rest on):
- Addresses of a NIC: IP, VROUTER_IP and every IP6* / VROUTER_IP6* field, plus those of its NIC_ALIAS elements,
  found like the legacy driver does (the NIC's ALIAS_IDS) and also by the alias's PARENT_ID; an alias that two
  NICs would own is refused. Addresses are canonical and carry no zone id (netfw.model.values).
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
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from netfw.model import names
from . import one_fields as el
from netfw.model.document import MAX_DOCUMENT, MAX_INPUT, error as _error, read as read_document  # noqa: F401 (API)
from netfw.model.spec import InputError, NicSpec

#: The VN_MAD drivers whose NICs netfw puts behind a firewall unless configured otherwise.
DEFAULT_VN_MADS = ("fw", "802.1Q", "vxlan", "bridge", "ovswitch", "ovswitch_vxlan")


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


def _vm_id(root: Element, vm: int | None) -> int:
    """The document's VM ID, checked against an explicit VM argument."""
    vm_id = el.decimal(el.child_text(root, "ID"), "the VM ID")
    try:
        names.check_ids(vm_id, 0)
    except ValueError as e:
        raise _error(str(e)) from None
    if vm is not None and vm != vm_id:
        raise _error(f"it describes VM {vm_id}, not VM {vm} as given")
    return vm_id


# --- NICs -----------------------------------------------------------------------------------------------------------


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


def _vm_nic(ctx: _Context, nic: Element, nic_id: int, sg_ids: tuple[int, ...] | None) -> VmNic:
    """One NIC element as a VmNic."""
    bridge = el.child_text(nic, "BRIDGE")
    if bridge is None:
        raise _error(f"NIC {nic_id}: BRIDGE is missing")
    el.tap_of(nic, ctx.vm, nic_id)  # NicSpec takes OpenNebula's tap name itself
    filter_mac = el.is_yes(nic, "FILTER_MAC_SPOOFING")
    aliases = ctx.aliases.get(nic_id, [])
    owners = [(f"NIC {nic_id}", nic)] + [(f"NIC {nic_id}: NIC_ALIAS {el.child_text(a, 'NIC_ID')}", a) for a in aliases]
    fields = dict(
        bridge=bridge,
        mtu=el.mtu_of(nic, nic_id),
        mac=el.mac_of(nic, nic_id, filter_mac),
        ips=el.addresses_of(owners, nic_id),
        filter_mac=filter_mac,
        filter_ip=el.is_yes(nic, "FILTER_IP_SPOOFING"),
        router=ctx.router or any(el.child_text(nic, k) for k in el.ADDRESS_KEYS if k.startswith("VROUTER_")),
        rules=el.nic_rules(sg_ids, ctx.rules),
        sg_ids=sg_ids or (),
        bandwidth=el.bandwidth_of(nic, nic_id),
    )
    spec = _spec(ctx.vm, nic_id, fields)
    detached = None
    if any(el.is_yes(a, "ATTACH") for a in aliases):  # clean re-applies the NIC without that alias
        kept = [(owner, elem) for owner, elem in owners if elem is nic or not el.is_yes(elem, "ATTACH")]
        detached = dataclasses.replace(spec, ips=el.addresses_of(kept, nic_id))
    network = el.child_text(nic, "NETWORK_ID")
    network_id = int(network) if network and el.NUMBER_RE.fullmatch(network) else None
    vhost_user = (el.child_text(nic, "BRIDGE_TYPE") or "").lower() == "openvswitch_dpdk"
    return VmNic(spec, el.child_text(nic, "VN_MAD") or "", el.is_yes(nic, "ATTACH"), network_id, detached, vhost_user)


def _nic_id(nic: Element, position: int) -> int:
    """The NIC_ID of the position-th NIC element (from 1), in range (names.NIC_MAX)."""
    nic_id = el.decimal(el.child_text(nic, "NIC_ID"), f"the NIC_ID of NIC element {position}")
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
        el.decimal((elem.text or "").strip() or None, "VROUTER_ID")
    return bool(found)


def _pci_nics(root: Element) -> list[Element]:
    """The PCI elements that are NICs (SR-IOV, passthrough): no tap, so netfw leaves them alone. A PCI element with
    a VN_MAD that is not a NIC is refused: the drivers would run for it, and netfw cannot say what it is."""
    found = []
    for position, pci in enumerate(root.findall("TEMPLATE/PCI"), start=1):
        if (el.child_text(pci, "TYPE") or "").upper() == "NIC":
            found.append(pci)
        elif el.child_text(pci, "VN_MAD") is not None:
            mad = el.child_text(pci, "VN_MAD")
            raise _error(f"PCI element {position} has VN_MAD {mad!r} but is not TYPE NIC: netfw "
                         "cannot classify it")
    return found


def _drivers(root: Element) -> tuple[str, ...]:
    """The VN_MADs of the NIC, NIC_ALIAS and PCI elements in order, once each: the network drivers oned runs."""
    found = (el.child_text(e, "VN_MAD") for kind in ("NIC", "NIC_ALIAS", "PCI")
             for e in root.findall(f"TEMPLATE/{kind}"))
    return tuple(dict.fromkeys(mad for mad in found if mad))


def _hotplug_of(root: Element, pci: list[Element]) -> str | None:
    """What carries ATTACH=YES: a NIC (or a PCI NIC) takes precedence over a NIC_ALIAS."""
    if any(el.is_yes(n, "ATTACH") for n in root.findall("TEMPLATE/NIC")):
        return "nic"
    if any(el.is_yes(p, "ATTACH") for p in pci):
        return "pci"
    if any(el.is_yes(a, "ATTACH") for a in root.findall("TEMPLATE/NIC_ALIAS")):
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
    listing = [(nic_id, el.sg_ids_of(nic, nic_id)) for nic_id, nic in elems]
    groups = el.rule_groups(root)
    el.check_counts(groups, listing)
    listed = {sg for _, sg_ids in listing for sg in sg_ids or ()}
    pci = _pci_nics(root)
    labels = tuple(str(el.decimal(el.child_text(p, "NIC_ID"), f"the NIC_ID of PCI NIC {i}"))
                   if el.child_text(p, "NIC_ID") else "?" for i, p in enumerate(pci, start=1))
    ctx = _Context(vm_id, _router(root), el.alias_owners(root, elems, set(labels)), el.parse_groups(groups, listed))
    nics = tuple(_vm_nic(ctx, nic, nic_id, sg_ids) for (nic_id, nic), (_, sg_ids) in zip(elems, listing))
    return VmDoc(vm_id, el.child_text(root, "DEPLOY_ID"), nics, labels, _hotplug_of(root, pci), _drivers(root))
