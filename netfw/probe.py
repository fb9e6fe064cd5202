"""Read-only facts from the kernel, as JSON (`ip -j`) or iptables-save text. Safe to call at any time."""

from __future__ import annotations

import json
import os

from . import runner, script
from .backend import tool

NETNS_DIR = "/run/netns"

#: Messages of `ip` that mean "the thing is not there" (the only errors a probe or an undo may shrug off).
GONE = ("Cannot find device", "does not exist", "Cannot open network namespace", "No such file or directory")


def is_gone(error: runner.CommandError) -> bool:
    """True when a failed command failed only because its object is already gone."""
    return any(m in error.stderr for m in GONE)


def ip(ns: str | None, *args: str) -> list[str]:
    """argv of `ip` in namespace ns (None: the namespace netfw runs in, i.e. the hypervisor's)."""
    return ["ip", "-n", ns, *args] if ns else ["ip", *args]


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


def links(ns: str | None, names: list[str] | None = None) -> dict[str, dict]:
    """`ip -j -d link show` of ns as {ifname: link}, only `names` when given; {} when ns does not exist."""
    if ns and not netns_exists(ns):
        return {}
    if names:
        text = script.join(f"link show dev {n}" for n in names)
        res = runner.run(ip(ns, "-j", "-d", "-force", "-batch", "-"), stdin=text, ok=(0, 1, 255))
    else:
        res = runner.run(ip(ns, "-j", "-d", "link", "show"), ok=(0, 1, 255))
    return {link["ifname"]: link for link in _decode_all(res.stdout)}


def master(link: dict | None) -> str | None:
    return (link or {}).get("master")


def is_up(link: dict | None) -> bool:
    return "UP" in (link or {}).get("flags", [])


def kind(link: dict | None) -> str | None:
    return (link or {}).get("linkinfo", {}).get("info_kind")


def bridge_option(link: dict | None, key: str):
    return (link or {}).get("linkinfo", {}).get("info_data", {}).get(key)


def sysctls(ns: str, keys: list[str]) -> dict[str, str | None]:
    """Values of sysctl keys inside ns (None for a key that does not exist there)."""
    res = runner.run(in_netns(ns, "sysctl", "-e", *keys), ok=(0, 1, 255))
    found = {}
    for line in res.stdout.splitlines():
        key, _, value = line.partition(" = ")
        found[key.strip()] = value.strip()
    return {k: found.get(k) for k in keys}


def save(ns: str, family: str, table: str | None = "filter", backend: str = "auto") -> str:
    """`iptables-save -t TABLE` (family 'ip', 'ip6') or `ebtables-save -t TABLE` ('eb') inside ns; every table
    when table is None."""
    argv = in_netns(ns, tool(family, "save", backend), *(["-t", table] if table else []))
    return runner.run(argv).stdout


def ipset_list_argv(ns: str) -> list[str]:
    return in_netns(ns, "ipset", "save")


def ipsets(ns: str) -> dict[str, tuple[str, set[str]]]:
    """{name: (family, members)} of every ipset in ns, from `ipset save`."""
    found: dict[str, tuple[str, set[str]]] = {}
    for line in runner.run(ipset_list_argv(ns)).stdout.splitlines():
        words = line.split()
        if words[:1] == ["create"]:
            family = words[words.index("family") + 1] if "family" in words else "inet"
            found[words[1]] = (family, set())
        elif words[:1] == ["add"] and words[1] in found:
            found[words[1]][1].add(words[2])
    return found
