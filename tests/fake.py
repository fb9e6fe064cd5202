"""A fake command layer for unit tests: replaces netfw.runner._execute (the one `sh` choke point) and records argv.

It answers the read-only probes from a small table of facts and accepts every other command.
"""

from __future__ import annotations

import json

from netfw.kernel import bulk, probe, rtnl
from netfw import runner


class FakeHost:
    def __init__(self, mocker, links: dict[str | None, dict[str, dict]] | None = None,
                 saves: dict[tuple[str, str, str], str] | None = None, netns: set[str] | None = None,
                 fail: str | None = None, ovs: dict[str, dict] | None = None,
                 answers: dict[str, str] | None = None):
        self.answers = answers or {}  # command line -> its standard output (checked first)
        self.links = links or {}
        # Open vSwitch ports by name: {"bridge": B, "port": {column: OVSDB JSON}, "iface": {column: OVSDB JSON}}
        self.ovs = ovs if ovs is not None else {}
        self.saves = saves or {}
        self.netns = netns or set()
        self.fail = fail  # a substring of a command line that fails with exit 99
        self.calls: list[tuple[list[str], str | None]] = []  # a bulk read's commands included, one by one
        self.bulks: list[list[str]] = []  # bulk.prefetch's processes
        mocker.patch.object(runner, "_execute", side_effect=self._execute)
        mocker.patch.object(probe, "netns_exists", side_effect=lambda ns: ns in self.netns)
        self.qdiscs: dict[str, list[dict]] = {}  # the hypervisor's qdiscs by device (netfw.kernel.rtnl, not a command)
        self.netlink: list[str] = []  # the devices whose qdiscs were read
        mocker.patch.object(rtnl, "qdiscs", side_effect=self._qdiscs)

    def _ns(self, argv: list[str]) -> str | None:
        if argv[:2] == ["ip", "-n"]:
            return argv[2]
        if argv[0] == "nsenter":  # ip, bridge and tc too (probe.iproute)
            return argv[1].rsplit("/", 1)[1]
        return None

    def _qdiscs(self, dev: str) -> list[dict]:
        self.netlink.append(dev)
        return self.qdiscs.get(dev, [])

    def _execute(self, argv, stdin, timeout):
        if argv[:3] == ["sh", "-c", bulk.OUTER]:
            return self._bulk(argv)
        return self._one(argv, stdin)

    def _bulk(self, argv: list[str]) -> runner.Result:
        """bulk.prefetch's loop, as its script prints it: each namespace's commands answered by _one (and recorded
        in calls, as the commands the loop runs), nsenter's failure for a namespace that does not exist."""
        self.bulks.append(list(argv))
        nonce, rest, out = argv[6], argv[7:], []
        for ns, spec in zip(rest[::2], rest[1::2]):
            out.append(f"\n{nonce} ns {ns}\n")
            if ns not in self.netns:
                out.append(f"\n{nonce} left 1\nnsenter: cannot open /run/netns/{ns}: No such file or directory\n"
                           f"{nonce} done\n")
                continue
            for i, word in enumerate(spec.split(",")):
                res = self._one(probe.in_netns(ns, *bulk.untoken(word)), None)
                out.append(f"\n{nonce} out {i}\n{res.stdout}\n{nonce} rc {i} {res.code}\n{res.stderr.rstrip()}\n"
                           f"{nonce} end\n")
            out.append(f"\n{nonce} left 0\n\n{nonce} done\n")
        return runner.Result(tuple(argv), 0, "".join(out), "")

    def _one(self, argv, stdin):
        self.calls.append((list(argv), stdin))
        line = " ".join(argv) + " " + (stdin or "")
        if self.fail and self.fail in line:
            return runner.Result(tuple(argv), 99, "", "injected failure")
        if " ".join(argv) in self.answers:
            return runner.Result(tuple(argv), 0, self.answers[" ".join(argv)], "")
        ns = self._ns(argv)
        if argv[0] == "ovs-vsctl":  # without `ovs`: a host without Open vSwitch bridges, no bridge, no port
            return self._vsctl(argv)
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
        if argv[-1] == "-c" and argv[-2].endswith("tables-save"):  # every table, counted (netfw.kernel.cache.reads())
            return runner.Result(tuple(argv), 0, self.saves.get((ns, argv[-2][:-len("tables-save")], None), ""), "")
        if len(argv) >= 3 and argv[-3].endswith("tables-save"):
            return runner.Result(tuple(argv), 0, self.saves.get((ns, argv[-3][:-len("tables-save")], argv[-1]), ""), "")
        if argv[-1] == "net.netfilter.nf_conntrack_count":
            return runner.Result(tuple(argv), 0, "0\n", "")
        if argv[-2:] == ["ipset", "save"]:
            return runner.Result(tuple(argv), 0, "", "")
        return runner.Result(tuple(argv), 0, "", "")

    def _vsctl(self, argv: list[str]) -> runner.Result:
        """ovs-vsctl on the ports of self.ovs: list (its JSON as ovs-vsctl prints it: compact, UTF-8 unescaped,
        one document per command), br-exists, del-port, add-port (ofport=N taken as the OpenFlow port)."""
        bridges = {p["bridge"] for p in self.ovs.values()}
        if "br-exists" in argv:
            return runner.Result(tuple(argv), 0 if argv[-1] in bridges else 2, "", "")
        out, commands, current, columns = [], [], [], []
        for arg in argv[1:] + ["--"]:
            if arg == "--":
                commands, current, columns = commands + [(current, columns)], [], []
            elif arg.startswith("--columns="):
                columns = arg.split("=", 1)[1].split(",")
            elif not arg.startswith("--"):
                current.append(arg)
        for cmd, columns in commands:
            if cmd[:1] == ["del-port"]:
                self.ovs.pop(cmd[-1], None)
            elif cmd[:1] == ["add-port"]:
                self.ovs[cmd[2]] = {"bridge": cmd[1], "port": {}, "iface": {}}
            elif cmd[:2] == ["set", "Interface"]:
                for setting in cmd[3:]:
                    if setting.startswith("ofport="):
                        self.ovs[cmd[2]]["iface"]["ofport"] = int(setting.split("=", 1)[1])
            elif cmd[:1] == ["list"]:
                out.append(self._list(cmd, columns))
        return runner.Result(tuple(argv), 0, "".join(json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
                                                     + "\n" for doc in out), "")

    def _list(self, cmd: list[str], columns: list[str]) -> dict:
        """One `list TABLE [NAME]` with the --columns= of its command."""
        table, name = cmd[1], cmd[2] if len(cmd) > 2 else None
        uuid = {n: f"00000000-0000-4000-8000-{i:012d}" for i, n in enumerate(sorted(self.ovs))}
        rows = []
        if table == "Bridge":
            for bridge in sorted({p["bridge"] for p in self.ovs.values()}):
                ports = ["set", [["uuid", uuid[n]] for n, p in sorted(self.ovs.items()) if p["bridge"] == bridge]]
                rows.append({"name": bridge, "ports": ports})
        elif name in self.ovs:
            record = self.ovs[name]["port" if table == "Port" else "iface"]
            rows.append({"_uuid": ["uuid", uuid[name]], "name": name, "type": "", "error": ["set", []],
                         "ofport": 1, **record})
        default = {"ingress_policing_rate": 0, "ingress_policing_burst": 0, "ingress_policing_kpkts_rate": 0,
                   "ingress_policing_kpkts_burst": 0, "other_config": ["map", []], "external_ids": ["map", []]}
        return {"data": [[row.get(c, default.get(c, ["set", []])) for c in columns] for row in rows],
                "headings": columns}

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
