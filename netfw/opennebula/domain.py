"""The domain XML libvirt gives its qemu hook on standard input, read as hostile input. Pure.

libvirt runs `/etc/libvirt/hooks/qemu.d/*` as root with the domain's XML on stdin; whoever can define a domain
writes it. So it is read like OpenNebula's documents (netfw.model.document.parse: bounded size and shape, no DTD, no
entities), and netfw takes from it only the interfaces whose `<target dev='...'/>` is OpenNebula's tap name of this
VM, `one-<VM>-<NIC>`, each with its MAC and the bridge libvirt put the tap on, all validated (names.check_ifname,
values.mac). Anything else in it is ignored; what is malformed in what netfw takes is refused (InputError: the
hook exits 2 and the domain does not start).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from xml.etree.ElementTree import Element

from netfw.model import document, names, values
from netfw.errors import InputError

#: OpenNebula names its domains one-<VM id>; any other domain is not OpenNebula's and is left alone at once.
DOMAIN_RE = re.compile(r"one-(0|[1-9][0-9]{0,9})")
#: The largest domain XML read: real ones are a few KiB (OpenNebula's deployment files, plus libvirt's live state).
MAX_XML = document.MAX_DOCUMENT
#: Interfaces of one domain (a NIC id is at most names.NIC_MAX): more is refused before any is read.
MAX_INTERFACES = 4096


def error(message: str) -> InputError:
    return InputError(f"domain XML: {message}")


@dataclass(frozen=True)
class Interface:
    """An interface of the domain that is OpenNebula's NIC `nic` of the VM: its tap, MAC and bridge (None: none)."""

    nic: int
    tap: str
    mac: str | None
    bridge: str | None
    kind: str  # the interface's type attribute (bridge, network, ethernet, ...), for messages


def vm_of(domain: str) -> int | None:
    """The VM id of an OpenNebula domain name, None for any other name."""
    found = DOMAIN_RE.fullmatch(domain)
    return int(found[1]) if found and int(found[1]) <= names.VM_MAX else None


def _attribute(elem: Element | None, name: str) -> str | None:
    return None if elem is None else elem.get(name)


def _nic_of(tap: str | None, vm: int) -> int | None:
    """NIC of `one-<vm>-<NIC>`, None for any other target name (or none)."""
    found = re.fullmatch(rf"one-{vm}-(0|[1-9][0-9]{{0,3}})", tap or "")
    return int(found[1]) if found and int(found[1]) <= names.NIC_MAX else None


def _interface(elem: Element, vm: int, position: int) -> Interface | None:
    tap = _attribute(elem.find("target"), "dev")
    nic = _nic_of(tap, vm)
    if nic is None:
        return None
    mac, bridge = _attribute(elem.find("mac"), "address"), _attribute(elem.find("source"), "bridge")
    try:
        mac = None if mac is None else values.mac(mac)
        if bridge is not None:
            names.check_ifname(bridge, "bridge")
    except (ValueError, InputError) as e:
        raise error(f"interface {position} ({tap}): {e}") from None
    kind = elem.get("type") or ""
    if not re.fullmatch(r"[a-z]{1,32}", kind):
        raise error(f"interface {position} ({tap}): type {kind!r} is not a libvirt interface type")
    return Interface(nic, tap, mac, bridge, kind)


def parse(xml: bytes, domain: str) -> tuple[list[Interface], int]:
    """(the domain's interfaces that are OpenNebula NICs of its VM, in document order; how many others it has).
    domain: the name libvirt passed, which the XML's <name> must be. InputError for anything malformed."""
    vm = vm_of(domain)
    if vm is None:
        raise error(f"domain {domain!r} is not an OpenNebula domain (one-<VM>)")
    if len(xml) > MAX_XML:
        raise error(f"it is larger than {MAX_XML} bytes")
    if not xml.strip():
        raise error("it is empty")
    root = document.parse(xml.strip(), fail=error)
    if root.tag != "domain":
        raise error(f"the root element is <{root.tag}>, not <domain>")
    found = [(e.text or "").strip() for e in root.findall("name")]
    if found != [domain]:
        raise error(f"its <name> is {found[0] if len(found) == 1 else found!r}, not {domain!r} as libvirt said")
    elems = root.findall("devices/interface")
    if len(elems) > MAX_INTERFACES:
        raise error(f"it has {len(elems)} interfaces, more than {MAX_INTERFACES} (netfw's cap)")
    ours = [i for p, e in enumerate(elems, start=1) if (i := _interface(e, vm, p)) is not None]
    twice = sorted(n for n, times in Counter(i.nic for i in ours).items() if times > 1)
    if twice:
        raise error(f"two interfaces have the target {names.tap(vm, twice[0])}")
    return ours, len(elems) - len(ours)
