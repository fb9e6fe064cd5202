"""Which iptables backend loads the rules: the system's default, nf_tables or legacy x_tables.

Measured (docs/benchmarks): in a VM namespace legacy loads a NIC's rules faster and has no batch-size limit inside a
user namespace; packets cost the same. The backend a NIC was attached with is recorded and used for all its later
operations, so that no NIC ever has rules in both.
"""

from __future__ import annotations

import os

from netfw.errors import InputError

BACKENDS = ("auto", "nft", "legacy")
FAMILIES = ("ip", "ip6", "eb")
ACTIONS = ("save", "restore")
ENV = "NETFW_IPTABLES_BACKEND"


def configured() -> str:
    """The backend for new attachments: $NETFW_IPTABLES_BACKEND (set by --backend), default auto."""
    value = os.environ.get(ENV) or "auto"
    if value not in BACKENDS:
        raise InputError(f"iptables backend {value!r} is not one of {', '.join(BACKENDS)}")
    return value


def tool(family: str, action: str, backend: str = "auto") -> str:
    """The program for family ('ip', 'ip6', 'eb') and action ('save', 'restore'): e.g. ip6tables-legacy-restore.

    ebtables always uses the system's default (its legacy flavour needs kernel modules a namespace cannot load).
    Anything else is refused, never spliced into a program name: the backend comes from a record root reads.
    """
    if family not in FAMILIES or action not in ACTIONS or backend not in BACKENDS:
        raise InputError(f"no iptables tool for family {family!r}, action {action!r}, backend {backend!r}")
    if family == "eb" or backend == "auto":
        return f"{family}tables-{action}"
    return f"{family}tables-{backend}-{action}"
