"""Every name netfw gives a kernel object, computed from (VM, NIC) alone so that detach and verify need no state.

Linux limits interface names to 15 characters (IFNAMSIZ - 1), iptables chain names to 28 and ipset names to 31.
Where the readable name would be longer, a deterministic short name is derived from (VM, NIC, role) instead.
"""

from __future__ import annotations

import hashlib
import re

from netfw.errors import InputError

IFNAME_MAX = 15
CHAIN_MAX = 28
IPSET_MAX = 31
VM_MAX = 10**10 - 1  # up to 10 digits
NIC_MAX = 999  # up to 3 digits

#: What a tap or bridge name may look like: 1-15 characters, none of '/', ':', whitespace or NUL.
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.@+=-]{1,15}")  # fullmatch: `$` would let a trailing newline through

# Roles of the links netfw creates.
BRIDGE = "br"
VETH_HOST = "h"  # the veth end in the hypervisor namespace, on the VN bridge
VETH_FW = "f"  # the veth end in the VM namespace, on the firewall bridge

#: Prefix of every ifalias netfw writes; `netfw vm=7 nic=0 role=br`.
ALIAS_PREFIX = "netfw"


def check_ids(vm: int, nic: int) -> None:
    """Raise InputError unless vm and nic are in range."""
    if not 0 <= vm <= VM_MAX:
        raise InputError(f"VM id {vm} is out of range 0..{VM_MAX}")
    if not 0 <= nic <= NIC_MAX:
        raise InputError(f"NIC id {nic} is out of range 0..{NIC_MAX}")


def check_ifname(name: str, what: str = "interface name") -> str:
    """Return name if it is a valid Linux interface name, else raise InputError."""
    if not isinstance(name, str) or not _IFNAME_RE.fullmatch(name) or name in (".", ".."):
        raise InputError(
            f"{what} {name!r} is not a valid interface name (1-15 characters, no '/', ':' or whitespace)"
        )
    return name


def _short(vm: int, nic: int, role: str) -> str:
    digest = hashlib.sha256(f"{vm}/{nic}/{role}".encode()).hexdigest()
    prefix = f"nf{role}"
    return prefix + digest[: IFNAME_MAX - len(prefix)]


def _ifname(readable: str, vm: int, nic: int, role: str) -> str:
    check_ids(vm, nic)
    return readable if len(readable) <= IFNAME_MAX else _short(vm, nic, role)


#: A VM namespace's name (netns()), group 1 the VM id; fullmatch: `$` would let a trailing newline through.
NETNS_RE = re.compile(r"one-(0|[1-9][0-9]{0,9})")


def netns(vm: int) -> str:
    """The VM namespace, shared by all NICs of the VM."""
    check_ids(vm, 0)
    return f"one-{vm}"


def tap(vm: int, nic: int) -> str:
    """OpenNebula's default tap name (its TARGET)."""
    check_ids(vm, nic)
    return f"one-{vm}-{nic}"


def bridge(vm: int, nic: int) -> str:
    """The firewall bridge inside the VM namespace."""
    return _ifname(f"one-br-{vm}-{nic}", vm, nic, BRIDGE)


def bridge_mac(vm: int, nic: int) -> str:
    """The firewall bridge's own MAC: set, so that the bridge never takes a port's MAC (a Linux bridge takes its
    lowest port's otherwise, and the tap's MAC must not be local to the firewall bridge: see CutOver). Derived from
    (VM, NIC), locally administered and unicast; nothing else on the network carries it."""
    check_ids(vm, nic)
    digest = hashlib.sha256(f"{vm}/{nic}/{BRIDGE}/mac".encode()).digest()
    return ":".join(f"{b:02x}" for b in ((digest[0] & 0xFC) | 0x02, *digest[1:6]))


def veth_host(vm: int, nic: int) -> str:
    """The veth end that joins the VN bridge in the hypervisor namespace."""
    return _ifname(f"one-{vm}-{nic}-h", vm, nic, VETH_HOST)


def veth_fw(vm: int, nic: int) -> str:
    """The veth end enslaved to the firewall bridge in the VM namespace."""
    return _ifname(f"one-{vm}-{nic}-f", vm, nic, VETH_FW)


def chain(vm: int, nic: int, direction: str) -> str:
    """The per-NIC chain: direction 'i' (to the VM) or 'o' (from the VM). Always fits in 28 characters."""
    check_ids(vm, nic)
    if direction not in ("i", "o"):
        raise InputError(f"chain direction must be 'i' or 'o', not {direction!r}")
    return f"one-{vm}-{nic}-{direction}"


def ipset(vm: int, nic: int, direction: str, index: int, family: int, temporary: bool = False) -> str:
    """The ipset holding the peers of rule `index`; at most 31 characters (`one-4294967295-999-i1234-6t`)."""
    name = f"{chain(vm, nic, direction)}{index}-{family}" + ("t" if temporary else "")
    if len(name) > IPSET_MAX:  # only for absurd rule counts: keep it deterministic and short
        digest = hashlib.sha256(name.encode()).hexdigest()
        name = f"nf-{digest[: IPSET_MAX - 3]}"
    return name


def limit_name(vm: int, nic: int) -> str:
    """The hashlimit table that rate-limits the NIC's logging (one bucket per NIC and family); at most 15
    characters, the kernel's limit (`l9999999999-999`)."""
    check_ids(vm, nic)
    return f"l{vm}-{nic}"


def alias(vm: int, nic: int, role: str) -> str:
    """The ifalias that tags a link netfw created: which VM, NIC and role it serves."""
    return f"{ALIAS_PREFIX} vm={vm} nic={nic} role={role}"


def parse_alias(text: str | None) -> tuple[int, int, str] | None:
    """(vm, nic, role) from an ifalias written by alias(), or None for any other link."""
    m = re.fullmatch(rf"{ALIAS_PREFIX} vm=(\d+) nic=(\d+) role=(\w+)", text or "")
    return (int(m.group(1)), int(m.group(2)), m.group(3)) if m else None
