"""A fake command layer for unit tests: replaces netfw.runner._execute (the one `sh` choke point) and records argv.

It answers the read-only probes from a small table of facts and accepts every other command.
"""

from __future__ import annotations

import json

from netfw import probe, runner


class FakeHost:
    def __init__(self, mocker, links: dict[str | None, dict[str, dict]] | None = None,
                 saves: dict[tuple[str, str, str], str] | None = None, netns: set[str] | None = None,
                 fail: str | None = None):
        self.links = links or {}
        self.saves = saves or {}
        self.netns = netns or set()
        self.fail = fail  # a substring of a command line that fails with exit 99
        self.calls: list[tuple[list[str], str | None]] = []
        mocker.patch.object(runner, "_execute", side_effect=self._execute)
        mocker.patch.object(probe, "netns_exists", side_effect=lambda ns: ns in self.netns)

    def _ns(self, argv: list[str]) -> str | None:
        if argv[:2] == ["ip", "-n"]:
            return argv[2]
        if argv[0] == "nsenter":
            return argv[1].rsplit("/", 1)[1]
        return None

    def _execute(self, argv, stdin, timeout):
        self.calls.append((list(argv), stdin))
        line = " ".join(argv) + " " + (stdin or "")
        if self.fail and self.fail in line:
            return runner.Result(tuple(argv), 99, "", "injected failure")
        ns = self._ns(argv)
        if argv[0] == "ovs-vsctl":  # a host without Open vSwitch bridges: no bridge, no port
            if "br-exists" in argv:
                return runner.Result(tuple(argv), 2, "", "")
            lists = sum(1 for a in argv if a == "list")
            empty = "".join(json.dumps({"data": [], "headings": []}) + "\n" for _ in range(lists))
            return runner.Result(tuple(argv), 0, empty, "")
        if argv[:3] == ["ip", "netns", "add"]:
            self.netns.add(argv[3])
        if argv[:3] == ["ip", "netns", "del"]:
            self.netns.discard(argv[3])
        if "-j" in argv and "-batch" in argv:  # link probes
            found = [self.links.get(ns, {})[l.split()[-1]] for l in stdin.splitlines()
                     if l.split()[-1] in self.links.get(ns, {})]
            return runner.Result(tuple(argv), 0, "".join(json.dumps([f]) + "\n" for f in found), "")
        if argv[-3:-1] == ["link", "show"] or argv[-2:] == ["link", "show"]:
            return runner.Result(tuple(argv), 0, json.dumps(list(self.links.get(ns, {}).values())), "")
        if argv[-1].endswith("tables-save"):  # every table (a NIC's filter and raw parts in one save)
            return runner.Result(tuple(argv), 0, self.saves.get((ns, argv[-1][:-len("tables-save")], None), ""), "")
        if argv[-3].endswith("tables-save"):
            return runner.Result(tuple(argv), 0, self.saves.get((ns, argv[-3][:-len("tables-save")], argv[-1]), ""), "")
        if argv[-2:] == ["ipset", "save"]:
            return runner.Result(tuple(argv), 0, "", "")
        return runner.Result(tuple(argv), 0, "", "")

    def commands(self) -> list[str]:
        """Every command as one line, its stdin lines indented below it."""
        out = []
        for argv, stdin in self.calls:
            out.append(" ".join(argv))
            out += [f"  {l}" for l in (stdin or "").splitlines()]
        return out


def link(name: str, kind: str | None = None, master: str | None = None, mtu: int = 1500, up: bool = True,
         **extra) -> dict:
    data = {"ifname": name, "mtu": mtu, "flags": ["BROADCAST", "UP"] if up else ["BROADCAST"],
            "address": "02:00:00:00:00:01", **extra}
    if kind:
        data["linkinfo"] = {"info_kind": kind}
    if master:
        data["master"] = master
    return data
