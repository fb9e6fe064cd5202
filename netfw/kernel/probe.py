"""Read-only facts from the kernel, as JSON (`ip -j`) or iptables-save text. Safe to call at any time."""

from __future__ import annotations

import json
import os
import re

from . import cache, rtnl
from .cache import NETNS_DIR
from netfw import runner
from netfw.rules import script
from .backend import tool


#: The exact messages that mean "this object does not exist" (and nothing else): a failed command is read as
#: "absent" only when every line of its stderr is one of these, naming the object asked about. Anything else (a
#: permission problem, a busy kernel, a killed process) is a failure to see, and fails the operation.
_GONE_PATTERNS = (
    re.compile(r'Device "(?P<dev>[^"]+)" does not exist\.'),  # ip link show
    re.compile(r'Cannot find device "(?P<dev>[^"]+)"'),  # ip link set/del, tc
    re.compile(r'Cannot open network namespace "(?P<ns>[^"]+)": No such file or directory'),  # ip -n NS
    re.compile(r'Cannot remove namespace file "/run/netns/(?P<ns>[^"]+)": No such file or directory'),  # netns del
    re.compile(r"nsenter: cannot open /run/netns/(?P<ns>\S+): No such file or directory"),
    re.compile(r"Command failed -:\d+"),  # ip -batch's own line after a failed command (never alone)
)


def gone(error: runner.CommandError, devices: tuple[str, ...] | list[str] = (), ns: str | None = None) -> bool:
    """True when error says only that the named devices (or the namespace ns) do not exist.

    Exact messages, exact names: "Cannot find device" about another device, or any other line, is not "gone".
    """
    lines = [line.strip() for line in error.stderr.splitlines() if line.strip()]
    named = False
    for line in lines:
        m = next((m for p in _GONE_PATTERNS if (m := p.fullmatch(line))), None)
        if m is None:
            return False
        found = m.groupdict()
        if "dev" in found and found["dev"] not in devices:
            return False
        if "ns" in found and found["ns"] != ns:
            return False
        named = named or bool(found)
    return named


def ip(ns: str | None, *args: str) -> list[str]:
    """argv of `ip` in namespace ns (None: the namespace netfw runs in, i.e. the hypervisor's)."""
    return iproute(ns, "ip", *args)


def iproute(ns: str | None, tool: str, *args: str) -> list[str]:
    """argv of an iproute2 tool (ip, bridge, tc) in namespace ns (None: the hypervisor's).

    Through nsenter rather than the tools' own `-n NS`: that copies netfw's mount namespace to remount /sys, which
    costs a time that grows with the mounts (every /run/netns entry: 2.4 ms against 4.0 ms per call with 1,000
    namespaces), and what netfw asks of them (links, bridge ports, FDB, qdiscs) comes over netlink, not from /sys.
    """
    return in_netns(ns, tool, *args) if ns else [tool, *args]


def in_netns(ns: str, *argv: str) -> list[str]:
    """argv that runs a tool inside ns; nsenter rather than `ip netns exec`, which also remounts /sys."""
    return ["nsenter", f"--net={netns_path(ns)}", *argv]


def netns_path(ns: str) -> str:
    return os.path.join(NETNS_DIR, ns)


def netns_exists(ns: str) -> bool:
    """A usable namespace is a bind mount (an empty file left by a failed `ip netns add` is not one)."""
    return os.path.ismount(netns_path(ns))


def _decode_all(text: str) -> list:
    """Every JSON array in text (`ip -j -batch` prints one per command)."""
    decoder, pos, out = json.JSONDecoder(), 0, []
    text = text.strip()
    while pos < len(text):
        obj, end = decoder.raw_decode(text, pos)
        out.extend(obj)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def links(ns: str | None, names: list[str] | tuple[str, ...] | None = None) -> dict[str, dict]:
    """`ip -j -d link show` of ns as {ifname: link}, only `names` when given; {} when ns does not exist.

    Fails closed: only "Device X does not exist" for an asked name (or the namespace gone) reads as absent. Within
    cache.reads(), the namespace's links are read once, whole, and a name not among them is absent.
    """
    if ns and not netns_exists(ns):
        return {}
    reads = cache.active()
    if reads is None:
        return _links(ns, names)
    every = reads.memo(reads.links, ns, lambda: _links(ns, None))
    return {n: every[n] for n in names if n in every} if names else dict(every)


def _links(ns: str | None, names: list[str] | tuple[str, ...] | None) -> dict[str, dict]:
    if names:
        text = script.join(f"link show dev {n}" for n in names)
        argv = ip(ns, "-j", "-d", "-force", "-batch", "-")
    else:
        text, argv = None, ip(ns, "-j", "-d", "link", "show")
    try:
        res = runner.read(argv, stdin=text) if text else cache.read(argv)
    except runner.CommandError as e:
        if e.code == 1 and ns and gone(e, ns=ns):  # the namespace went away meanwhile (nsenter's exit code)
            return {}
        if e.code != 1 or not gone(e, tuple(names or ())):
            raise
        res = e.result
    return {link["ifname"]: link for link in _decode_all(res.stdout)}


def slave_data(link: dict | None) -> dict:
    """A bridge port's settings as `ip -d -j link` prints them (info_slave_data), {} for a link on no bridge."""
    return (link or {}).get("linkinfo", {}).get("info_slave_data", {})


def alias_of(link: dict | None) -> tuple[int, int, str] | None:
    """(vm, nic, role) of a link netfw made (its ifalias), None for any other link."""
    from netfw.model.names import parse_alias

    return parse_alias((link or {}).get("ifalias"))


def master(link: dict | None) -> str | None:
    return (link or {}).get("master")


def is_up(link: dict | None) -> bool:
    return "UP" in (link or {}).get("flags", [])


def kind(link: dict | None) -> str | None:
    return (link or {}).get("linkinfo", {}).get("info_kind")


def bridge_option(link: dict | None, key: str):
    return (link or {}).get("linkinfo", {}).get("info_data", {}).get(key)


def local_macs(ns: str, bridge: str, port: str) -> set[str]:
    """The MACs that bridge (in ns) keeps for itself on port: the port's local (permanent) FDB entries, which the
    bridge delivers to its own device instead of forwarding (`bridge fdb show br B brport P`, `self` ones aside)."""
    found = json.loads(cache.read(fdb_argv(ns, bridge, port)).stdout or "[]")
    return {e["mac"] for e in found if e.get("state") == "permanent" and "self" not in e.get("flags", [])}


def fdb_argv(ns: str, bridge: str, port: str) -> list[str]:
    return iproute(ns, "bridge", "-j", "fdb", "show", "br", bridge, "brport", port)


def sysctls_argv(ns: str, keys: list[str]) -> list[str]:
    return in_netns(ns, "sysctl", "-e", *keys)


def sysctls(ns: str, keys: list[str]) -> dict[str, str | None]:
    """Values of sysctl keys inside ns (None for a key that does not exist there)."""
    res = cache.read(sysctls_argv(ns, keys))
    found = {}
    for line in res.stdout.splitlines():
        key, _, value = line.partition(" = ")
        found[key.strip()] = value.strip()
    return {k: found.get(k) for k in keys}


def save(ns: str, family: str, table: str | None = "filter", backend: str = "auto") -> str:
    """`iptables-save -t TABLE` (family 'ip', 'ip6') or `ebtables-save -t TABLE` ('eb') inside ns; every table
    when table is None. Within cache.reads(): every table (tables.parse_save picks one), from the namespace's one
    counted save (counted_save), its counters taken off."""
    if cache.active() is not None:
        return cache.uncounted(counted_save(ns, family, backend))
    argv = in_netns(ns, tool(family, "save", backend), *(["-t", table] if table else []))
    return runner.read(argv).stdout


def counted_save(ns: str, family: str, backend: str = "auto") -> str:
    """Every table of ns with counters (`*tables-save -c`), once per namespace and tool within cache.reads()."""
    name = tool(family, "save", backend)
    read = lambda: cache.read(in_netns(ns, name, "-c")).stdout  # noqa: E731
    reads = cache.active()
    return read() if reads is None else reads.memo(reads.saves, (ns, name), read)


def qdiscs(dev: str) -> list[dict]:
    """DEV's qdiscs in the hypervisor namespace as `tc -j qdisc show dev DEV` prints them (ingress included, which
    `ip link` does not show), asked of the kernel for DEV alone (rtnl.py: tc reads every link and qdisc of the
    namespace, 35 ms with 2,000 links)."""
    return rtnl.qdiscs(dev)


def ipset_list_argv(ns: str) -> list[str]:
    return in_netns(ns, "ipset", "save")


def ipsets(ns: str) -> dict[str, tuple[str, set[str]]]:
    """{name: (family, members)} of every ipset in ns, from `ipset save`."""
    found: dict[str, tuple[str, set[str]]] = {}
    for line in runner.read(ipset_list_argv(ns)).stdout.splitlines():
        words = line.split()
        if words[:1] == ["create"]:
            family = words[words.index("family") + 1] if "family" in words else "inet"
            found[words[1]] = (family, set())
        elif words[:1] == ["add"] and words[1] in found:
            found[words[1]][1].add(words[2])
    return found
